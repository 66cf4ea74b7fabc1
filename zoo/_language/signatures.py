"""Constructor calls, op calls and init-rule arguments, checked against signatures and annotations.

The resolver (zoo._language.resolve) calls these for every block it meets; nothing is constructed.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo._errors import ArgumentError, ZooError, did_you_mean, listing, nearest, shown
from zoo._language.declarations import BLOCK_NODE_KEYS, OP_NODE_KEYS, Location, Node

UNRESOLVED = object()  # an argument whose value is a block or a broken expression: not type-checked


@dataclass(frozen=True)
class Between:
    """`Annotated[float, Between(0, 1)]`: a number from low to high, inclusive (a probability)."""

    low: float
    high: float


def check_call(
    errors: list[ZooError],
    provider: Any,
    type_name: str,
    kwargs: Mapping[str, Any],
    n_layers: int,
    where: str,
    node: Node | None = None,
) -> None:
    """Append to `errors` what is wrong with calling the block `provider.factory` with these arguments."""
    assert provider.factory is not None
    at: Location | str = node.loc if node is not None else provider.where
    key_locs: Mapping[str, Location] = node.key_locs if node is not None else {}
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
        errors.append(
            ArgumentError(f"{at}: {where}: {type_name} takes no child blocks, but `layers` gives {n_layers}.")
        )
    hints = type_hints(provider.factory)
    misspelt = set()  # a missing name that an unknown key misspells is one mistake, reported once
    for key, value in kwargs.items():
        key_at = key_locs.get(key, at)
        if key not in named and not takes_varkw:
            misspelt.add(nearest(key, named))
            errors.append(
                ArgumentError(
                    f"{key_at}: {where}: {type_name} has no argument '{key}'."
                    f"{_nearest_key(key, named, BLOCK_NODE_KEYS)} {type_name} takes: {listing(named, limit=20)}."
                )
            )
            continue
        expected = hints.get(key)
        if value is not UNRESOLVED and expected is not None and fits(value, expected) is False:
            errors.append(
                ArgumentError(
                    f"{key_at}: {where} -> {key}: {type_name} expects {describe_type(expected)}, "
                    f"got {_describe(value)}."
                )
            )
    for name, param in named.items():
        if param.default is param.empty and name not in kwargs and name not in filled_by_layers | misspelt:
            errors.append(ArgumentError(f"{at}: {where}: {type_name} is missing required argument '{name}'."))


def check_op_call(
    errors: list[ZooError],
    op: str,
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    kwargs: Mapping[str, Any],
    loc: Location,
    path: str,
    key_locs: Mapping[str, Location],
) -> None:
    """Append what is wrong with calling op `fn` on `inputs` with keyword arguments `kwargs`.

    `inputs` are the values `in` gives: UNRESOLVED for a tensor (a reference), the number itself
    for one written in place, which must fit the parameter it lands on. Messages name `loc` (the
    op's file:line), or the key's own line from `key_locs`, then `path`.
    """
    where = f"{loc}: {path}"
    sig = _signature(fn)
    if sig is None:
        return
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    n_inputs = len(inputs) + sum(1 for p in positional if p.name in kwargs)  # tensors by name: in = { q = "q" }
    required = [p for p in positional if p.default is p.empty]
    if n_inputs < len(required) or (varargs is None and n_inputs > len(positional)):
        takes = (
            f"{len(required)} or more"
            if varargs
            else (str(len(required)) if len(required) == len(positional) else f"{len(required)} to {len(positional)}")
        )
        names = ", ".join(p.name for p in positional) + (", ..." if varargs else "")
        errors.append(ArgumentError(f"{where}: op '{op}' takes {takes} inputs ({names}), but `in` gives {n_inputs}."))
    named = {p.name: p for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    hints = type_hints(fn)
    for index, value in enumerate(inputs):
        param = positional[index] if index < len(positional) else varargs
        if param is None or value is UNRESOLVED:
            continue
        expected = hints.get(param.name)
        if expected is not None and fits(value, expected) is not True:
            errors.append(
                ArgumentError(
                    f"{where}: op '{op}' takes {describe_type(expected)} as '{param.name}' "
                    f"(input {index + 1} of `in`), not the number {value!r}."
                )
            )
    for key, value in kwargs.items():
        if key not in named:
            errors.append(
                ArgumentError(
                    f"{key_locs.get(key, loc)}: {path}: op '{op}' has no argument '{key}'."
                    f"{_nearest_key(key, named, OP_NODE_KEYS)} It takes: {listing(named)}."
                )
            )
            continue
        expected = hints.get(key)
        if value is not UNRESOLVED and expected is not None and fits(value, expected) is False:
            errors.append(
                ArgumentError(
                    f"{key_locs.get(key, loc)}: {path} -> {key}: op '{op}' expects {describe_type(expected)}, "
                    f"got {_describe(value)}."
                )
            )
    for p in params:
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in kwargs:
            errors.append(ArgumentError(f"{where}: op '{op}' is missing required argument '{p.name}'."))


def _nearest_key(key: str, arguments: Iterable[str], language: Iterable[str]) -> str:
    """' Did you mean ...?': the nearest argument, else the nearest language key (`layerz` → `layers`)."""
    hint = did_you_mean(key, arguments)
    if hint:
        return hint
    match = nearest(key, language)
    return f" Did you mean the language key `{match}`?" if match else ""


def takes_tensors(fn: Callable[..., Any]) -> bool:
    """Whether op `fn` takes any value from `in` (ops that take none make tensors from constants)."""
    sig = _signature(fn)
    return sig is None or any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in sig.parameters.values()
    )


def takes_mode(fn: Callable[..., Any]) -> bool:
    """Whether op `fn` has a `training` parameter, which zoo fills with the block's mode."""
    sig = _signature(fn)
    return sig is not None and "training" in sig.parameters


def check_init_kwargs(
    errors: list[ZooError], name: str, fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str
) -> None:
    """Append what is wrong with the keyword arguments of init function `name`."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the tensor
    except (TypeError, ValueError):
        return
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    for key in kwargs:
        if key not in names:
            errors.append(
                ArgumentError(
                    f"{where}: init function '{name}' has no argument '{key}'.{did_you_mean(key, names)} "
                    f"It takes: {listing(names)}."
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
    hint = type_hints(factory).get(positional[0].name)
    blocks: tuple[Any, ...] = ([], {})  # what `layers` would pass: a list or an OrderedDict
    scalar = hint is not None and all(fits(v, hint) is not True for v in blocks)
    return None if scalar else "one"  # a first argument typed bool/int/str cannot take blocks


# --- argument types ------------------------------------------------------------------------


@functools.cache
def type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target, include_extras=True)  # extras: Annotated[float, Between(0, 1)]
    except Exception:  # unresolvable forward references: check only what is plain
        try:
            return {
                n: p.annotation
                for n, p in inspect.signature(factory).parameters.items()
                if p.annotation is not p.empty and not isinstance(p.annotation, str)
            }
        except (TypeError, ValueError):
            return {}


def fits(value: Any, expected: Any) -> bool | None:
    """Whether a TOML value fits an annotation: True, False, or None when zoo cannot tell."""
    origin = typing.get_origin(expected)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(expected)
        fit = fits(value, base)
        bounds = [e for e in extras if isinstance(e, Between)]
        if fit is not True or not bounds:
            return fit
        return all(b.low <= value <= b.high for b in bounds)
    if origin is typing.Union or origin is types.UnionType:
        results = [fits(value, arg) for arg in typing.get_args(expected)]
        return True if any(r is not False for r in results) else False
    if origin is typing.Literal:
        return value in typing.get_args(expected)
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
            return all(fits(v, args[0]) is not False for v in value)
        if origin is tuple:
            return len(args) == len(value) and all(fits(v, a) is not False for v, a in zip(value, args, strict=True))
        return all(fits(v, args[0]) is not False for v in value)
    return None  # a class zoo cannot build from TOML (torch.dtype, nn.Module, ...): don't guess


def _describe(value: Any) -> str:
    """A TOML value as the user wrote it: 'a table { a = 1 }', 'str 'sixteen'', 'an array [1, 2]'."""
    if isinstance(value, Mapping):
        return "a table {" + ", ".join(f" {k} = {shown(v)}" for k, v in value.items()) + " }"
    if isinstance(value, tuple):
        return f"an array {shown(list(value))}"
    return f"{type(value).__name__} {shown(value)}"


def describe_type(expected: Any) -> str:
    """An annotation as a user reads it: "int or None", "one of 'fan_in', 'fan_out'"."""
    origin = typing.get_origin(expected)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(expected)
        bounds = "".join(f" from {b.low:g} to {b.high:g}" for b in extras if isinstance(b, Between))
        return describe_type(base) + bounds
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(expected))
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(describe_type(a) for a in typing.get_args(expected))
    if expected is type(None):
        return "None"
    return getattr(expected, "__name__", str(expected))
