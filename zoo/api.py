"""The public entry points behind `zoo.build`, `zoo.names`, `zoo.spec` and `zoo.register`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch
from torch import nn

from zoo import builder, devices, distributed, lazy, plugins
from zoo.builder import RegistryArg
from zoo.errors import ArgumentError, DeviceError, listing
from zoo.resolve import declaration, resolve

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from zoo.distributed import ShardPolicy

F = TypeVar("F", bound=Callable[..., Any])


def build(
    name: str,
    /,
    *,
    registry: RegistryArg = None,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    mesh: DeviceMesh | None = None,
    shard: ShardPolicy = None,
    overrides: Mapping[str, Any] | None = None,
    **more_overrides: Any,
) -> nn.Module:
    """Build the block or declared entry `name`, ready to use.

    Args:
        name: a declared entry (`"chimera"`), a Python block (`"Linear"`), or `"DIST:name"`.
        registry: extra registry file(s) to declare names from, on top of the installed ones.
        input_shape: materialise lazy layers for this input shape (default: the entry's `input`).
        device: where the parameters live: None (where built: the CPU), "auto" (CUDA if
            present, else MPS, else CPU), "cpu", "cuda:N", or a torch.device.
        dtype: the precision of the floating parameters.
        mesh: shard the model over the ranks of this torch.distributed DeviceMesh with FSDP2: it is
            built on the meta device and each rank allocates and initialises only its rows
            (see "When one machine is not enough" in the README). Not together with `device`.
        shard: with `mesh`, which blocks become FSDP units: block type names or classes, or a
            function (path, module) -> bool. Default: every block that owns parameters itself.
        overrides: values for the entry's `args`, or keyword arguments of a Python block, as a
            mapping: the way to pass one whose name is also one of build's own (`device`, `dtype`,
            `registry`, `input_shape`, `mesh`, `shard`, `overrides`).
        **more_overrides: the same, as keywords (merged with `overrides`; a name in both is an error).

    Returns:
        The module; lazy layers stay uninitialised when no input shape is known.

    Raises:
        UnknownNameError, ArgumentError, SpecError, CycleError: before anything is constructed.
        DeviceError: `device` is not on this machine (the message lists the devices that are).

    Example:
        >>> zoo.build("mlp", hidden=512)
        >>> zoo.build("Linear", in_features=3, out_features=4)
        >>> zoo.build("Linear", overrides={"in_features": 3, "out_features": 4, "device": "meta"})
    """
    both = sorted(set(overrides or {}) & set(more_overrides))
    if both:
        raise ArgumentError(f"zoo.build('{name}'): {listing(both)} given both in overrides= and as keywords.")
    overrides = {**(overrides or {}), **more_overrides}
    if mesh is not None or shard is not None:
        if device is not None:
            raise DeviceError(f"zoo.build('{name}'): pass device= or mesh=, not both (the mesh says where)")
        shape = lazy.check_shape(input_shape) if input_shape is not None else None
        devices.check_dtype(dtype)
        return distributed.build(
            name, mesh=mesh, shard_policy=shard, registry=registry, input_shape=shape, dtype=dtype, overrides=overrides
        )
    target = devices.resolve(device) if device is not None else None  # a missing GPU fails before building
    devices.check_dtype(dtype)
    if input_shape is not None:
        input_shape = lazy.check_shape(input_shape)
    model = builder.build(name, overrides, registry=registry)
    info = builder.build_info(model)
    shape = input_shape if input_shape is not None else (info.input_shape if info else None)
    if shape is not None and lazy.is_lazy(model):
        # Placed first, then materialised: lazy tensors are allocated once, on the target device.
        lazy.materialize(model, input_shape=shape, device=target, dtype=dtype)
    elif target is not None or dtype is not None:
        lazy.place(model, target, dtype)  # not model.to: on meta that would turn lazy parameters into empty ones
    return model


def names(pattern: str | None = None, *, registry: RegistryArg = None) -> list[str]:
    """Every buildable name, sorted; `pattern` is a case-insensitive glob such as `"*mlp*"`."""
    return builder.registry_for(registry).names(pattern)


@dataclass(frozen=True)
class Spec:
    """What `zoo show` prints: a name's resolved declaration and where it came from."""

    name: str
    kind: str  # "entry" or "block"
    origin: str  # "zoo 0.1.0", "zoo-convnets 0.1.0", "user"
    source: str  # file:line for entries, module.Class for Python blocks
    doc: str
    params: Mapping[str, Any]  # overridable arguments and their defaults
    input_shape: tuple[int, ...] | None
    input_dtype: str | None  # "int64" when the example input is token ids
    declaration: dict[str, Any]  # entries inlined, arguments substituted


def spec(name: str, *, registry: RegistryArg = None, **overrides: Any) -> Spec:
    """Describe `name` without building it."""
    reg = builder.registry_for(registry)
    provider = reg.resolve(name)
    entry = provider.entry
    resolution = resolve(reg, provider, overrides, name) if entry is not None else None
    if resolution is not None and resolution.errors:
        raise resolution.errors[0]
    doc = entry.doc if entry else (getattr(provider.factory, "__doc__", None) or "").strip().split("\n")[0]
    return Spec(
        name=name,
        kind="entry" if entry else "block",
        origin=str(provider.origin),
        source=provider.where,
        doc=doc,
        params=dict(entry.params) if entry else {},
        input_shape=resolution.input_shape if resolution else None,
        input_dtype=resolution.input_dtype if resolution else None,
        declaration=declaration(resolution.root) if resolution and resolution.root else {"type": name, **overrides},
    )


@overload
def register(name: F) -> F: ...
@overload
def register(name: str | None = None) -> Callable[[F], F]: ...


def register(name: Any = None) -> Any:
    """Register a Python block in this process (for notebooks and tests).

    Example:
        >>> @zoo.register
        ... class Scale(nn.Module): ...
        >>> @zoo.register("my_scale")
        ... def make_scale(factor: float = 2.0) -> nn.Module: ...
    """
    if callable(name):
        plugins.register_local(name.__name__, name)
        return name

    def decorate(factory: F) -> F:
        plugins.register_local(name or factory.__name__, factory)
        return factory

    return decorate
