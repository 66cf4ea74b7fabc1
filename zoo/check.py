"""Validate declarations against the registry and the blocks' signatures, building nothing.

Every problem is collected (for `zoo check`); `build` raises the first one before it
constructs anything.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.declarations import ArgRef, Entry, InitRule, Node, SharedRef
from zoo.errors import ArgumentError, CycleError, SpecError, ZooError, did_you_mean, listing, nearest
from zoo.registry import Provider, Registry


@dataclass
class _Context:
    registry: Registry
    params: Mapping[str, Any]  # the entry's overridable arguments, with values
    scopes: tuple[frozenset[str], ...] = ()  # names declared under `shared`, innermost last
    stack: tuple[str, ...] = ()  # entries being checked, for cycles
    errors: list[ZooError] = field(default_factory=list)


def check_provider(
    registry: Registry, provider: Provider, overrides: Mapping[str, Any], stack: tuple[str, ...] = ()
) -> list[ZooError]:
    """Everything wrong with building `provider` with `overrides`."""
    ctx = _Context(registry, {}, stack=stack)
    if provider.factory is not None:
        _check_call(ctx, provider, provider.name, overrides, n_layers=0, where=provider.name, key_locs={})
    else:
        assert provider.entry is not None
        _check_entry(ctx, provider.entry, overrides, where=provider.name)
    return ctx.errors


def check_registry(registry: Registry, origins: set[str] | None = None) -> list[ZooError]:
    """Check every declared entry (only those from `origins`, when given) and every clash."""
    errors: list[ZooError] = []
    for name in registry.names():
        providers = registry.providers(name)
        if origins is not None and not any(p.origin.dist in origins for p in providers):
            continue
        try:
            chosen = registry.resolve(name)
        except ZooError as err:
            errors.append(err)
            continue
        if chosen.entry is not None:
            errors.extend(check_provider(registry, chosen, {}))
    unique: dict[str, ZooError] = {}  # a cycle a -> b -> a is found from a and from b: report it once
    for problem in errors:
        unique.setdefault(_cycle_key(problem), problem)
    return list(unique.values())


def _cycle_key(err: ZooError) -> str:
    if not isinstance(err, CycleError):
        return str(err)
    chain = str(err).rsplit("loop: ", 1)[-1].rstrip(".").split(" -> ")[:-1]
    return "cycle:" + ",".join(sorted(chain))


def split_overrides(entry: Entry, overrides: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides → (values of declared `args`, replacements of the entry's own keyword arguments)."""
    params = dict(entry.params)
    direct = {}
    for key, value in overrides.items():
        if key in entry.params:
            params[key] = value
        elif key in entry.node.kwargs:
            direct[key] = value
        else:
            known = [*entry.params, *entry.node.kwargs]
            raise ArgumentError(
                f"{entry.loc}: {where}: '{entry.name}' has no argument '{key}' to override."
                f"{did_you_mean(key, known)} Overridable: {listing(known)}."
            )
    return params, direct


def _check_entry(ctx: _Context, entry: Entry, overrides: Mapping[str, Any], where: str) -> None:
    if entry.name in ctx.stack:
        chain = " -> ".join((*ctx.stack[ctx.stack.index(entry.name) :], entry.name))
        ctx.errors.append(CycleError(f"{entry.loc}: entries refer to each other in a loop: {chain}."))
        return
    try:
        params, direct = split_overrides(entry, overrides, where)
    except ZooError as err:
        ctx.errors.append(err)
        return
    inner = _Context(ctx.registry, params, stack=(*ctx.stack, entry.name), errors=ctx.errors)
    _check_node(inner, entry.node, direct)


def _check_node(ctx: _Context, node: Node, direct: Mapping[str, Any] | None = None) -> None:
    where = f"{node.loc}: {node.path}"
    try:
        provider = ctx.registry.resolve(node.type, where=where)
    except ZooError as err:
        ctx.errors.append(err)
        return
    scope = frozenset(node.shared)
    ctx_shared = _Context(ctx.registry, ctx.params, (*ctx.scopes, scope), ctx.stack, ctx.errors)
    for shared in node.shared.values():
        _check_node(ctx, shared)
    for child in node.layers or ():
        if isinstance(child, SharedRef):
            _check_shared_ref(ctx_shared, child)
        else:
            _check_node(ctx_shared, child)
    kwargs: dict[str, Any] = {}
    for key, value in node.kwargs.items():
        kwargs[key] = _value(ctx_shared, value, f"{node.key_locs.get(key, node.loc)}: {node.path} -> {key}")
    kwargs.update(direct or {})
    if provider.entry is not None:
        if node.layers is not None:
            ctx.errors.append(SpecError(f"{where}: '{node.type}' is a declared entry; it takes no `layers`."))
        _check_entry(ctx, provider.entry, kwargs, where=node.path)
    else:
        _check_call(ctx, provider, node.type, kwargs, len(node.layers or ()), node.path, dict(node.key_locs), node)
    for rule in node.init:
        _check_init(ctx, rule)


def _check_shared_ref(ctx: _Context, ref: SharedRef) -> None:
    if not any(ref.name in scope for scope in ctx.scopes):
        known = [n for scope in ctx.scopes for n in scope]
        ctx.errors.append(
            SpecError(
                f"{ref.loc}: {ref.path}: '@{ref.name}' names no shared block.{did_you_mean(ref.name, known)} "
                f"Declare it under `shared` of this entry (declared here: {listing(known)})."
            )
        )


_UNRESOLVED = object()  # an argument whose value is a block or a broken reference


def _value(ctx: _Context, value: Any, where: str) -> Any:
    if isinstance(value, ArgRef):
        if value.name not in ctx.params:
            ctx.errors.append(
                SpecError(
                    f"{where}: '${{{value.name}}}' refers to no declared argument."
                    f"{did_you_mean(value.name, ctx.params)} "
                    f"Declare it in the entry's `args` table (declared: {listing(ctx.params)})."
                )
            )
            return _UNRESOLVED
        return ctx.params[value.name]
    if isinstance(value, Node):
        _check_node(ctx, value)
        return _UNRESOLVED
    if isinstance(value, tuple):
        return tuple(_value(ctx, v, where) for v in value)
    return value


def _check_call(
    ctx: _Context,
    provider: Provider,
    type_name: str,
    kwargs: Mapping[str, Any],
    n_layers: int,
    where: str,
    key_locs: Mapping[str, Any],
    node: Node | None = None,
) -> None:
    assert provider.factory is not None
    at = node.loc if node is not None else provider.where
    sig = _signature(provider.factory)
    if sig is None:
        return  # builtins without a signature: nothing to check against
    params = sig.parameters
    takes_varkw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    style = children_style(provider.factory)
    filled_by_layers = {positional[0].name} if n_layers and style == "one" else set()
    if n_layers and style is None:
        ctx.errors.append(
            ArgumentError(f"{at}: {where}: {type_name} takes no child blocks, but `layers` gives {n_layers}.")
        )
    hints = _type_hints(provider.factory)
    misspelt = set()  # a missing name that an unknown key misspells is one mistake, reported once
    for key, value in kwargs.items():
        key_at = key_locs.get(key, at)
        if key not in named and not takes_varkw:
            misspelt.add(nearest(key, named))
            ctx.errors.append(
                ArgumentError(
                    f"{key_at}: {where}: {type_name} has no argument '{key}'.{did_you_mean(key, named)} "
                    f"{type_name} takes: {listing(named, limit=20)}."
                )
            )
            continue
        expected = hints.get(key)
        if value is not _UNRESOLVED and expected is not None and _matches(value, expected) is False:
            ctx.errors.append(
                ArgumentError(
                    f"{key_at}: {where} -> {key}: {type_name} expects {_type_name(expected)}, got {_describe(value)}."
                )
            )
    for name, param in named.items():
        if param.default is param.empty and name not in kwargs and name not in filled_by_layers | misspelt:
            ctx.errors.append(ArgumentError(f"{at}: {where}: {type_name} is missing required argument '{name}'."))


def _check_init(ctx: _Context, rule: InitRule) -> None:
    try:
        init = ctx.registry.init_fn(rule.fn, where=f"{rule.loc}: {rule.path}")
    except ZooError as err:
        ctx.errors.append(err)
        return
    try:
        params = list(inspect.signature(init.fn).parameters.values())[1:]  # the first is the tensor
    except (TypeError, ValueError):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    for key in rule.kwargs:
        if key not in names:
            ctx.errors.append(
                ArgumentError(
                    f"{rule.loc}: {rule.path}: init function '{rule.fn}' has no argument '{key}'."
                    f"{did_you_mean(key, names)} It takes: {listing(names)}."
                )
            )


@functools.cache  # signatures never change, and inspect is most of a build's own cost
def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


@functools.cache
def children_style(factory: Callable[..., Any]) -> str | None:
    """How `layers` reach a factory: "varargs" (Sequential(*blocks)), "one" (ModuleList([blocks])), or None."""
    sig = _signature(factory)
    if sig is None:
        return "varargs"
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return "varargs"
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        return None
    hint = _type_hints(factory).get(positional[0].name)
    blocks: tuple[Any, ...] = ([], {})  # what `layers` would pass: a list or an OrderedDict
    scalar = hint is not None and all(_matches(v, hint) is not True for v in blocks)
    return None if scalar else "one"  # a first argument typed bool/int/str cannot take blocks


# --- argument types ------------------------------------------------------------------------


@functools.cache
def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: check only what is plain
        try:
            return {
                n: p.annotation
                for n, p in inspect.signature(factory).parameters.items()
                if p.annotation is not p.empty and not isinstance(p.annotation, str)
            }
        except (TypeError, ValueError):
            return {}


def _matches(value: Any, expected: Any) -> bool | None:
    """Whether a TOML value fits an annotation: True, False, or None when zoo cannot tell."""
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        results = [_matches(value, arg) for arg in typing.get_args(expected)]
        return True if any(r is not False for r in results) else False
    if expected is typing.Any:
        return True
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin in (tuple, list) or expected in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(expected)
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) is not False for v in value)
        if origin is tuple:
            return len(args) == len(value) and all(
                _matches(v, a) is not False for v, a in zip(value, args, strict=True)
            )
        return all(_matches(v, args[0]) is not False for v in value)
    return None  # a class zoo cannot build from TOML (torch.dtype, nn.Module, ...): don't guess


def _describe(value: Any) -> str:
    """A TOML value as the user wrote it: 'a table { a = 1 }', 'str 'sixteen'', 'an array [1, 2]'."""
    if isinstance(value, Mapping):
        return "a table {" + ", ".join(f" {k} = {v!r}" for k, v in value.items()) + " }"
    if isinstance(value, tuple):
        return f"an array {list(value)!r}"
    return f"{type(value).__name__} {value!r}"


def _type_name(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "None"
    return getattr(expected, "__name__", str(expected))
