"""The lazy lifecycle, stated once (torch's nn/modules/lazy.py), and what is lazy in a model.

    construct → place (device, dtype) → shape pass → materialise → nothing lazy left → weights I/O

builder constructs; `place` (here) moves a model keeping lazy tensors lazy; a shape pass
(shape_pass) runs a twin of the model on the meta device; materialize gives every lazy layer its
shape and values from that pass; known_shapes does the same from a checkpoint's header with no
pass at all; `require_materialized` (here) guards everything that reads or writes weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from zoo._build import devices, ties
from zoo._build.builder import build_info
from zoo._build.devices import DeviceArg
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError, listing


class MetaFallbackWarning(UserWarning):
    """A block could not run on the meta device; zoo ran a real forward instead (the message names it)."""


# --- what is lazy ------------------------------------------------------------------------


def is_lazy(model: nn.Module) -> bool:
    """Whether any parameter or buffer of `model` still waits for its shape."""
    return any(is_pending(t) for t in (*model.parameters(), *model.buffers()))


def lazy_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the parameters and buffers that still wait for their shapes."""
    named = (*model.named_parameters(), *model.named_buffers())
    return [name for name, tensor in named if is_pending(tensor)]


def require_materialized(model: nn.Module, action: str) -> None:
    """Raise unless every parameter and buffer of `model` has its shape.

    Args:
        action: what needs concrete tensors, for the message ("save", "count parameters").

    Raises:
        NotMaterializedError: naming the lazy keys and how to materialise them.
    """
    keys = lazy_keys(model)
    if keys:
        said = (
            f"cannot {action}: {label(model)} has {len(keys)} lazy parameter(s)/buffer(s) whose shapes are not "
            f"known yet ({listing(keys)}). "
        )
        raise NotMaterializedError(said + how_to_materialize(model), cli=said + how_to_materialize(model, cli=True))


def is_pending(tensor: object) -> bool:
    return isinstance(tensor, (UninitializedParameter, UninitializedBuffer))


def label(model: nn.Module) -> str:
    info = build_info(model)
    return f"'{info.name}'" if info is not None else f"the {type(model).__name__}"


def how_to_materialize(model: nn.Module, *, cli: bool = False) -> str:
    """What to do about lazy layers: in Python's words, or (`cli`) in the command line's."""
    info = build_info(model)
    shape = tuple(info.input_shape) if info is not None and info.input_shape else None
    if cli:
        example = ",".join(map(str, shape)) if shape else "2,20"
        return f"Pass --input-shape {example} (one input batch's shape), or load weights into it (zoo load-weights)."
    example = f"input_shape={shape}" if shape else "input_shape=(batch, ...)"
    return f"Call zoo.materialize(model, {example}) or load weights into it (zoo.load_weights) first."


def where(name: str, module: nn.Module) -> str:
    """`0.net.2` (LazyLinear), for messages."""
    return f"`{name}` ({type(module).__name__})" if name else f"the model itself ({type(module).__name__})"


def block_in(model: nn.Module, name: str, module: nn.Module) -> str:
    """`0.net.2` (LazyLinear) in 'lazy_mlp', for messages."""
    return f"{where(name, module)} in {label(model)}"


# --- arguments ---------------------------------------------------------------------------


def check_device(device: DeviceArg) -> torch.device | None:
    return devices.resolve(device) if device is not None else None


_MAX_ELEMENTS = (2**63 - 1) // 16  # torch counts bytes in int64: the widest dtype (complex128) must fit


def check_shape(shape: Sequence[int], what: str = "input_shape") -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise ArgumentError(f"{what} must be a sequence of sizes such as (2, 20), got {shape!r}")
    sizes = tuple(shape)
    if not sizes or any(type(d) is not int or d <= 0 for d in sizes):
        raise ArgumentError(f"{what} must be positive integer sizes such as (2, 20), got {shape!r}")
    if math.prod(sizes) > _MAX_ELEMENTS:
        raise ArgumentError(
            f"{what} {sizes} has {math.prod(sizes):,} elements, more than a tensor can hold ({_MAX_ELEMENTS:,})"
        )
    return sizes


def model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.data.device
    return torch.device("cpu")


def model_float_dtype(model: nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype.is_floating_point:
            return tensor.dtype
    return torch.get_default_dtype()


def place(model: nn.Module, device: torch.device | None, dtype: torch.dtype | None) -> None:
    """model.to(device, dtype), keeping lazy layers lazy (on meta too) and tied tensors tied."""
    if device is None and dtype is None:
        return
    pending = _uninitialized_places(model)
    try:
        with ties.kept(model):
            model.to(device=device, dtype=dtype)
    except torch.OutOfMemoryError as err:
        raise DeviceError(f"{label(model)} does not fit on {device}: {err}") from err
    # Module.to keeps an uninitialised tensor's class only where the new tensor can share its
    # implementation (CPU → CUDA); on meta it became a plain empty tensor, whose shape a lazy layer
    # then refuses. Give every one back as uninitialised, on its new device and dtype, ties kept.
    fresh: dict[int, Any] = {}
    for (container, name), old in pending:
        if id(old) not in fresh:
            fresh[id(old)] = cast(Any, type(old))(
                requires_grad=old.requires_grad,
                device=device if device is not None else old.device,
                dtype=dtype if dtype is not None and old.is_floating_point() else old.dtype,
            )
        container[name] = fresh[id(old)]


def _uninitialized_places(model: nn.Module) -> list[tuple[tuple[dict[str, Any], str], torch.Tensor]]:
    """(container, name) and tensor of every uninitialised parameter and buffer, shared ones at each place."""
    places: list[tuple[tuple[dict[str, Any], str], torch.Tensor]] = []
    for module in model.modules():
        for container in (module._parameters, module._buffers):
            for name, tensor in container.items():
                if isinstance(tensor, (UninitializedParameter, UninitializedBuffer)):
                    places.append(((container, name), tensor))
    return places


def own_lazy_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The lazy parameters and buffers `module` holds itself (not its children's)."""
    return [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None and is_pending(t)]


def lazy_owners(model: nn.Module) -> dict[str, list[str]]:
    """Modules that hold lazy tensors themselves: first path → every path of that module."""
    owners: dict[int, list[str]] = {}
    first: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if own_lazy_tensors(module):
            first.setdefault(id(module), name)
            owners.setdefault(id(module), []).append(name)
    return {first[key]: paths for key, paths in owners.items()}
