"""Declarations → nn.Module. Validates the whole tree first, then constructs; no I/O here."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import initrules, plugins
from zoo.check import check_provider, children_style, split_overrides
from zoo.declarations import ArgRef, Entry, Node, SharedRef, parse_declaration
from zoo.errors import BuildError
from zoo.registry import USER, Origin, Provider, Registry

RegistryArg = str | Path | Iterable[str | Path] | Registry | None


@dataclass(frozen=True)
class BuildInfo:
    """What zoo knows about a model it built; kept on the model as `model.zoo_info`."""

    name: str
    overrides: Mapping[str, Any]
    declaration: dict[str, Any]  # the resolved, inlined declaration: rebuilds with no registry
    provenance: dict[str, str]  # block type → "distribution version"
    input_shape: tuple[int, ...] | None


def registry_for(registry: RegistryArg) -> Registry:
    """The process registry, plus user files when `registry=` names some."""
    if isinstance(registry, Registry):
        return registry
    if registry is None:
        return plugins.current()
    files = [registry] if isinstance(registry, (str, Path)) else list(registry)
    return plugins.with_files(files)


def build(name: str, *, registry: RegistryArg = None, **overrides: Any) -> nn.Module:
    """Construct `name` (a declared entry or a Python block) with `overrides`.

    Raises the first problem `zoo check` would report, before constructing anything.
    """
    reg = registry_for(registry)
    return _build(reg, reg.resolve(name), name, overrides)


def build_declaration(
    name: str, declaration: Mapping[str, Any], *, file: str = "<declaration>", registry: RegistryArg = None
) -> nn.Module:
    """Construct a resolved declaration (BuildInfo.declaration, as saved in config.json) with the installed blocks.

    Args:
        name: the model's name, for messages and `zoo_info`.
        declaration: TOML-shaped data; an `input` key gives `zoo_info.input_shape`.
        file: where the declaration was read from, for messages.
    """
    reg = registry_for(registry)
    provider = Provider(name, Origin(USER), entry=parse_declaration(name, declaration, file))
    return _build(reg, provider, name, {})


def _build(reg: Registry, provider: Provider, name: str, overrides: Mapping[str, Any]) -> nn.Module:
    errors = check_provider(reg, provider, overrides)
    if errors:
        raise errors[0]
    constructor = _Constructor(reg)
    module = constructor.provider(provider, overrides, where=name)
    declaration = Declarer(reg).provider(provider, overrides)
    input_shape = provider.entry.input_shape if provider.entry is not None else None
    module.__dict__["zoo_info"] = BuildInfo(name, dict(overrides), declaration, constructor.provenance, input_shape)
    return module


class _Constructor:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.provenance: dict[str, str] = {}

    def provider(self, provider: Provider, overrides: Mapping[str, Any], where: str) -> nn.Module:
        if provider.factory is not None:
            return self.call(provider, (), dict(overrides), where)
        assert provider.entry is not None
        params, direct = split_overrides(provider.entry, overrides, where)
        return self.node(provider.entry.node, params, (), direct)

    def node(
        self,
        node: Node,
        params: Mapping[str, Any],
        scopes: tuple[dict[str, nn.Module], ...],
        direct: Mapping[str, Any] = {},
    ) -> nn.Module:
        scope = {name: self.node(shared, params, scopes) for name, shared in node.shared.items()}
        scopes = (*scopes, scope)
        kwargs = {key: self.value(value, params, scopes) for key, value in node.kwargs.items()}
        kwargs.update(direct)
        provider = self.registry.resolve(node.type, where=f"{node.loc}: {node.path}")
        if provider.entry is not None:
            module = self.provider(provider, kwargs, node.path)
        else:
            children = [self.child(child, params, scopes) for child in node.layers or ()]
            args: tuple[Any, ...] = ()
            if node.layer_names is not None:
                args = (OrderedDict(zip(node.layer_names, children, strict=True)),)
            elif node.layers is not None:
                varargs = children_style(provider.factory) == "varargs"
                args = tuple(children) if varargs else (children,)
            module = self.call(provider, args, kwargs, f"{node.loc}: {node.path}")
        rules = []
        for rule in node.init:
            fn = self.registry.init_fn(rule.fn, where=f"{rule.loc}: {rule.path}").fn
            rules.append(initrules.BoundRule(rule.pattern, fn, dict(rule.kwargs)))
        initrules.apply(module, rules)
        return module

    def child(
        self, child: Node | SharedRef, params: Mapping[str, Any], scopes: tuple[dict[str, nn.Module], ...]
    ) -> nn.Module:
        if isinstance(child, SharedRef):
            for scope in reversed(scopes):
                if child.name in scope:
                    return scope[child.name]
            raise AssertionError(f"unchecked shared reference {child}")  # check_provider rules this out
        return self.node(child, params, scopes)

    def value(self, value: Any, params: Mapping[str, Any], scopes: tuple[dict[str, nn.Module], ...]) -> Any:
        if isinstance(value, ArgRef):
            return params[value.name]
        if isinstance(value, Node):
            return self.node(value, params, scopes)
        if isinstance(value, tuple):
            return tuple(self.value(v, params, scopes) for v in value)
        if isinstance(value, Mapping):
            return {k: self.value(v, params, scopes) for k, v in value.items()}
        return value

    def call(self, provider: Provider, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> nn.Module:
        assert provider.factory is not None
        self.provenance[provider.name] = str(provider.origin)
        try:
            module = provider.factory(*args, **kwargs)
        except Exception as err:
            raise BuildError(f"{where}: {provider.name}(...) raised {type(err).__name__}: {err}") from err
        if not isinstance(module, nn.Module):
            raise BuildError(f"{where}: {provider.name} returned {type(module).__name__}, not an nn.Module.")
        return module


class Declarer:
    """The resolved declaration as plain TOML-shaped data: entries inlined, arguments substituted.

    Saved in config.json, it rebuilds the model with no registry file. Block types are
    qualified (`dist:Name`) only where a plugin provides them, so a missing one names the
    distribution to install.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def provider(self, provider: Provider, overrides: Mapping[str, Any]) -> dict[str, Any]:
        if provider.factory is not None:
            return {"type": provider.name, **{k: _plain(v) for k, v in overrides.items()}}
        assert provider.entry is not None
        params, direct = split_overrides(provider.entry, overrides, provider.name)
        return self.node(provider.entry.node, params, direct)

    def node(self, node: Node, params: Mapping[str, Any], direct: Mapping[str, Any] = {}) -> dict[str, Any]:
        kwargs = {key: self.value(value, params) for key, value in node.kwargs.items()}
        kwargs.update({k: _plain(v) for k, v in direct.items()})
        provider = self.registry.resolve(node.type)
        if provider.entry is not None:
            out = self.provider(provider, kwargs)
        else:
            out = {"type": node.type, **kwargs}
            if node.layers is not None:
                children = [self.child(c, params) for c in node.layers]
                out["layers"] = dict(zip(node.layer_names, children, strict=True)) if node.layer_names else children
        if node.shared:
            # Shared blocks of an inlined entry keep their scope: they live on the node that declared them.
            out["shared"] = {name: self.node(shared, params) for name, shared in node.shared.items()}
        if node.init:
            out["init"] = {r.pattern: {"fn": r.fn, **dict(r.kwargs)} for r in node.init}
        return out

    def child(self, child: Node | SharedRef, params: Mapping[str, Any]) -> Any:
        if isinstance(child, SharedRef):
            return f"@{child.name}"
        return self.node(child, params)

    def value(self, value: Any, params: Mapping[str, Any]) -> Any:
        if isinstance(value, ArgRef):
            return _plain(params[value.name])
        if isinstance(value, Node):
            return self.node(value, params)
        if isinstance(value, tuple):
            return [self.value(v, params) for v in value]
        if isinstance(value, Mapping):
            return {k: self.value(v, params) for k, v in value.items()}
        return value


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return value


def build_info(model: nn.Module) -> BuildInfo | None:
    """What zoo recorded when it built `model`, or None for a model zoo did not build."""
    info = model.__dict__.get("zoo_info")
    return info if isinstance(info, BuildInfo) else None


def entry_of(name: str, registry: RegistryArg = None) -> Entry | None:
    """The declared entry behind `name`, or None for a Python block."""
    return registry_for(registry).resolve(name).entry
