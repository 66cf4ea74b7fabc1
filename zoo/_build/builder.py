"""Declarations → nn.Module: resolve the whole tree first (zoo._language.resolve), then construct it; no I/O here."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._build import devices, initrules
from zoo._build.graph import compile_graph
from zoo._errors import BuildError, DeviceError
from zoo._language import names
from zoo._language.declarations import Entry, parse_declaration
from zoo._language.registry import USER, Origin, Provider, Registry
from zoo._language.resolve import Block, Graph, Init, Resolved, Use, declaration, resolve, too_deep
from zoo._language.signatures import children_style
from zoo._plugins import discovery

RegistryArg = str | Path | Iterable[str | Path] | Registry | None
KEY_MAP_ATTRIBUTE = "zoo_key_map"  # a model's own key map, set from its declaration; zoo.load_weights uses it


@dataclass(frozen=True)
class BuildInfo:
    """What zoo knows about a model it built; kept on the model as `model.zoo_info`."""

    name: str
    overrides: Mapping[str, Any]
    declaration: dict[str, Any]  # the resolved, inlined declaration: rebuilds with no registry
    provenance: dict[str, str]  # block type → "distribution version"
    input_shape: tuple[int, ...] | None
    input_dtype: str | None = None  # "int64" for token ids; None: the model's float dtype
    input_high: int | None = None  # integer example inputs are drawn from [0, input_high)
    transformers: Mapping[str, Any] | None = None  # transformers config.json keys, when the entry maps to them


def registry_for(registry: RegistryArg) -> Registry:
    """The process registry, plus user files when `registry=` names some."""
    if isinstance(registry, Registry):
        return registry
    if registry is None:
        return discovery.current()
    files = [registry] if isinstance(registry, (str, Path)) else list(registry)
    return discovery.with_files(files)


def build(name: str, overrides: Mapping[str, Any] | None = None, *, registry: RegistryArg = None) -> nn.Module:
    """Construct `name` (a declared entry or a Python block) with `overrides`.

    Raises the first problem `zoo check` would report, before constructing anything.
    """
    reg = registry_for(registry)
    return _build(reg, reg.resolve(name), name, overrides or {})


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
    resolution = resolve(reg, provider, overrides, name)
    if resolution.errors:
        raise resolution.errors[0]
    assert resolution.root is not None
    try:
        module = construct(resolution.root)
    except RecursionError:  # building takes a few more frames per level than resolving
        raise too_deep(provider) from None
    module.__dict__["zoo_info"] = BuildInfo(
        name,
        dict(overrides),
        declaration(resolution.root),
        resolution.provenance,
        resolution.input_shape,
        resolution.input_dtype,
        resolution.input_high,
        resolution.transformers,
    )
    if resolution.key_map is not None:
        module.__dict__[KEY_MAP_ATTRIBUTE] = resolution.key_map
    return module


def construct(tree: Resolved, made: dict[int, nn.Module] | None = None) -> nn.Module:
    """The module a resolved tree describes; a shared block is one module wherever it is used.

    `made`, when given, receives the module built for each node of the tree (by id of the node):
    the picture uses it to find the module behind each step.
    """
    return _Constructor(made if made is not None else {}).module(tree)


class _Constructor:
    def __init__(self, made: dict[int, nn.Module]) -> None:
        self.made = made  # id(tree node) → its module

    def module(self, tree: Resolved) -> nn.Module:
        made = self.made.get(id(tree))
        if made is not None:
            return made
        if isinstance(tree, Use):
            module = self.module(tree.target)
        else:
            module = self.block(tree) if isinstance(tree, Block) else compile_graph(tree, self.module)
            module.__dict__["zoo_where"] = tree.where  # for shape errors that name the declaration
            self.init(module, tree.init)
        self.made[id(tree)] = module
        return module

    def block(self, tree: Block) -> nn.Module:
        factory = tree.provider.factory
        assert factory is not None
        children = [self.module(child) for child in tree.children or ()]
        args: tuple[Any, ...] = ()
        if tree.child_names is not None:
            named = OrderedDict(zip(tree.child_names, children, strict=True))
            if factory is nn.Sequential and any(names.shadows(n, nn.Sequential) for n in named):
                return names.DeclaredSequential(named)  # `forward`, `training`: names Sequential itself would refuse
            args = (named,)
        elif tree.children is not None:
            args = tuple(children) if children_style(factory) == "varargs" else (children,)
        kwargs = {key: self.value(value) for key, value in tree.kwargs.items()}
        try:
            module = factory(*args, **kwargs)
        except Exception as err:
            refused = devices.allocation_refused(err)
            if refused is not None:  # said as what it is: a size the machine cannot hold, not a failed block
                raise DeviceError(
                    f"{tree.where}: {tree.type}(...) asked for a tensor of {refused}, and the allocator refused it; "
                    "use smaller sizes (zoo check finds a tensor larger than this machine's memory without building)"
                ) from err
            raise BuildError(f"{tree.where}: {tree.type}(...) raised {type(err).__name__}: {err}") from err
        if not isinstance(module, nn.Module):
            raise BuildError(f"{tree.where}: {tree.type} returned {type(module).__name__}, not an nn.Module.")
        return module

    def value(self, value: Any) -> Any:
        if isinstance(value, (Block, Graph, Use)):
            return self.module(value)
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        return value

    def init(self, module: nn.Module, rules: tuple[Init, ...]) -> None:
        if rules:
            initrules.apply(
                module,
                [initrules.BoundRule(r.pattern, r.fn, dict(r.kwargs), r.on, r.where, r.fn_name) for r in rules],
            )


def example_input(info: BuildInfo | None, shape: Sequence[int], *, seed: int | None = None) -> torch.Tensor:
    """A random input of `shape` for a built model: floats in [0, 1), or ids in [0, high) when the entry says so."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if info is not None and info.input_dtype is not None and not getattr(torch, info.input_dtype).is_floating_point:
        return torch.randint(
            0, info.input_high or 2, tuple(shape), dtype=getattr(torch, info.input_dtype), generator=generator
        )
    dtype = getattr(torch, info.input_dtype) if info is not None and info.input_dtype else None
    return torch.rand(tuple(shape), dtype=dtype, generator=generator)


def input_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's example input when its entry declares one (token ids: torch.int64)."""
    info = build_info(model)
    return getattr(torch, info.input_dtype) if info is not None and info.input_dtype else None


def build_info(model: nn.Module) -> BuildInfo | None:
    """What zoo recorded when it built `model`, or None for a model zoo did not build."""
    info = model.__dict__.get("zoo_info")
    return info if isinstance(info, BuildInfo) else None


def entry_of(name: str, registry: RegistryArg = None) -> Entry | None:
    """The declared entry behind `name`, or None for a Python block."""
    return registry_for(registry).resolve(name).entry
