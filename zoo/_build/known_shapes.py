"""Lazy layers given their shapes from known shapes (a checkpoint's header): no forward pass.

Each lazy layer becomes its concrete class with its size attributes set as its own
`initialize_parameters` would set them, found by running that method on a meta copy of the
layer for an input an input rule derives from the stored shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _LazyNormBase
from torch.nn.modules.conv import _LazyConvXdMixin
from torch.nn.modules.lazy import LazyModuleMixin

from zoo._build import devices, initrules
from zoo._build.devices import DeviceArg
from zoo._build.lazy import (
    block_in,
    check_device,
    how_to_materialize,
    is_pending,
    label,
    lazy_owners,
    own_lazy_tensors,
    place,
)
from zoo._build.shape_pass import rng_kept, twin_of
from zoo._language import names
from zoo._errors import NotMaterializedError, WeightsError, did_you_mean, listing
from zoo._plugins.blocks import LazyMyLinear

InputRule = Callable[[nn.Module, Mapping[str, tuple[int, ...]]], tuple[int, ...]]


# --- materialisation from known shapes (weights loading) -------------------------------------


_INPUT_RULES: dict[type, InputRule] = {}


def register_input_rule(cls: type, rule: InputRule) -> None:
    """Teach `materialize_from_shapes` a lazy layer class (and its subclasses).

    Args:
        cls: a LazyModuleMixin class. (A class may instead define a static method
            `zoo_input_shape(shapes) -> input shape`, used when no rule is registered.)
        rule: `rule(layer, shapes) -> input shape`: given the layer and the shapes of its lazy
            tensors by local name ({"weight": (256, 20), "bias": (256,)}), the shape of an input
            (batch first) from which the layer's own `initialize_parameters` gives those shapes.
            Raise BadShape(local name, message) for shapes the layer cannot have.

    Example:
        >>> zoo.register_input_rule(LazyScale, lambda layer, shapes: (1, shapes["scale"][0]))
    """
    _INPUT_RULES[cls] = rule


class BadShape(ValueError):
    """Raised by an input rule: the shape given for local tensor `key` is one the layer cannot have."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _dims(shapes: Mapping[str, tuple[int, ...]], key: str, rank: int, layout: str) -> tuple[int, ...]:
    shape = shapes.get(key)
    if shape is None:
        raise BadShape(key, "no shape given")
    if len(shape) != rank:
        raise BadShape(key, f"has shape {shape}, but the layer's {key} has {rank} dimension(s), {layout}")
    return shape


def _linear_input(layer: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    return (1, _dims(shapes, "weight", 2, "(out_features, in_features)")[1])


def _conv_input(layer: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    conv = cast(Any, layer)
    spatial = conv._get_num_spatial_dims()
    if conv.transposed:  # weight: (in_channels, out_channels / groups, *kernel)
        channels = _dims(shapes, "weight", 2 + spatial, "(in_channels, out_channels/groups, *kernel_size)")[0]
    else:  # weight: (out_channels, in_channels / groups, *kernel)
        channels = _dims(shapes, "weight", 2 + spatial, "(out_channels, in_channels/groups, *kernel_size)")[1]
        channels *= conv.groups
    return (1, channels, *([1] * spatial))


def _norm_input(layer: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    key = next((k for k in ("weight", "running_mean", "bias", "running_var") if k in shapes), "weight")
    return (1, _dims(shapes, key, 1, "(num_features,)")[0])


def _my_linear_input(layer: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    return (1, _dims(shapes, "weight", 2, "(in_units, units)")[0])


register_input_rule(nn.LazyLinear, _linear_input)
register_input_rule(_LazyConvXdMixin, _conv_input)  # every LazyConvNd and LazyConvTransposeNd
register_input_rule(_LazyNormBase, _norm_input)  # LazyBatchNormNd and LazyInstanceNormNd
register_input_rule(LazyMyLinear, _my_linear_input)


def _input_rule(cls: type) -> InputRule | None:
    for base in cls.__mro__:
        if base in _INPUT_RULES:
            return _INPUT_RULES[base]
    own = getattr(cls, "zoo_input_shape", None)  # a lazy layer may answer for itself: no registration needed
    if callable(own):
        return lambda layer, shapes: own(shapes)
    return None


@dataclass
class _Plan:
    """How one lazy layer becomes concrete: its tensors' shapes and the attributes to set."""

    layer: nn.Module
    shapes: dict[str, tuple[int, ...]]  # local tensor name → shape
    attrs: dict[str, Any]  # size attributes the layer's own initialize_parameters sets


def materialize_from_shapes(
    model: nn.Module,
    shapes: Mapping[str, Sequence[int]],
    *,
    device: DeviceArg = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Give every lazy parameter and buffer of `model` the shape listed in `shapes`, without a forward pass.

    For loading weights into a lazy model: `shapes` maps state-dict keys to shapes, as a
    safetensors header gives them. Each lazy layer becomes its concrete class with its size
    attributes set as its own `initialize_parameters` would set them (LazyLinear →
    Linear(in_features=…), LazyConv2d → Conv2d(in_channels=…), LazyBatchNorm2d →
    BatchNorm2d(num_features=…), LazyMyLinear → MyLinear(in_units=…)): zoo runs that method on
    a meta copy of the layer and checks the shapes it gives against `shapes`.

    The new tensors are allocated with torch.empty: their values are garbage until the caller
    copies the weights in. (Deferred `init` rules run on them, so none is left to run later
    and overwrite the loaded weights.)

    Args:
        shapes: state-dict key → shape. Keys for non-lazy tensors, or extra keys, are ignored.
        device, dtype: where and in what precision the whole model's tensors live afterwards.

    Returns:
        `model` itself.

    Raises:
        NotMaterializedError: lazy keys missing from `shapes` (all listed), a non-persistent lazy
            buffer (no file holds one), or a lazy layer class zoo has no input rule for.
        WeightsError: a shape the layer cannot have (the message names the key).
        DeviceError: `device` is not available. Nothing is changed when any of these is raised.
    """
    target = check_device(device)
    devices.check_dtype(dtype)
    owners = lazy_owners(model)
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    missing: list[str] = []
    for first, paths in owners.items():
        found[first] = _layer_shapes(model, first, paths, shapes, missing)
    if missing:
        model_keys = set(model.state_dict())
        unused = [key for key in shapes if key not in model_keys]  # likely misspelt or renamed
        hints = "".join(f" For `{key}`:{did_you_mean(key, unused)}" for key in missing if did_you_mean(key, unused))
        raise NotMaterializedError(
            f"no shape for lazy {listing(missing)} of {label(model)} among the {len(shapes)} key(s) given."
            f"{hints} Keys given: {listing(shapes)}."
        )
    plans = []  # every layer checked before any is changed
    for first, local in found.items():
        layer = names.submodule(model, first)
        attrs = _attrs_for(model, first, layer, local) if isinstance(layer, LazyModuleMixin) else {}
        plans.append(_Plan(layer, local, attrs))
    place(model, target, dtype)
    with torch.no_grad():
        for plan in plans:
            _apply(plan)
    return model


def _layer_shapes(
    model: nn.Module, first: str, paths: list[str], shapes: Mapping[str, Sequence[int]], missing: list[str]
) -> dict[str, tuple[int, ...]]:
    """The shapes given for one layer's lazy tensors, by local name; absent keys go to `missing`."""
    layer = names.submodule(model, first)
    local: dict[str, tuple[int, ...]] = {}
    for name, tensor in {**layer._parameters, **layer._buffers}.items():
        if not is_pending(tensor):
            continue
        key = f"{first}.{name}" if first else name
        if name in layer._non_persistent_buffers_set:
            said = f"{block_in(model, first, layer)} has a non-persistent lazy buffer `{key}`: no weights file holds it. "
            raise NotMaterializedError(
                said + how_to_materialize(model), cli=said + how_to_materialize(model, cli=True)
            )
        given = {}
        for path in paths:  # a shared layer may be saved under any of its paths
            full = f"{path}.{name}" if path else name
            if full in shapes:
                given[full] = _shape_value(full, shapes[full])
        if not given:
            missing.append(key)
        elif len(set(given.values())) > 1:
            raise WeightsError(f"the shapes given for one shared lazy tensor disagree: {given}")
        else:
            local[name] = next(iter(given.values()))
    return local


def _shape_value(key: str, shape: Sequence[int]) -> tuple[int, ...]:
    try:
        sizes = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise WeightsError(f"`{key}`: a shape must be a sequence of sizes, got {shape!r}") from None
    if any(d < 0 for d in sizes):
        raise WeightsError(f"`{key}`: a shape cannot have a negative size, got {sizes}")
    return sizes


def _attrs_for(model: nn.Module, name: str, layer: nn.Module, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Run the layer's own initialize_parameters on a meta copy; check its shapes; return what it set."""
    rule = _input_rule(type(layer))
    if rule is None:
        said = f"zoo does not know which input gives {block_in(model, name, layer)} the shapes it was given. "
        more = (
            f" Or give {type(layer).__name__} a static method zoo_input_shape(shapes), or register one with "
            f"zoo.register_input_rule({type(layer).__name__}, rule)."
        )
        raise NotMaterializedError(
            said + how_to_materialize(model) + more, cli=said + how_to_materialize(model, cli=True) + more
        )
    prefix = f"{name}." if name else ""
    try:
        input_shape = rule(layer, shapes)
    except BadShape as err:
        raise WeightsError(f"`{prefix}{err.key}` {err} ({block_in(model, name, layer)})") from err
    except (ValueError, IndexError, KeyError) as err:
        raise WeightsError(
            f"{block_in(model, name, layer)} cannot take the shapes given for "
            f"{listing(prefix + k for k in shapes)}: {err}"
        ) from err
    twin = twin_of(layer, "meta")
    dtype = own_lazy_tensors(layer)[0].dtype
    try:
        with rng_kept(None), torch.no_grad():
            cast(Any, twin).initialize_parameters(torch.empty(input_shape, dtype=dtype, device="meta"))
    except Exception as err:
        raise WeightsError(
            f"{block_in(model, name, layer)} cannot be built for the shapes {shapes}: {type(err).__name__}: {err}"
        ) from err
    for local, shape in shapes.items():
        expected = tuple(getattr(twin, local).shape)
        if expected != shape:
            raise WeightsError(
                f"`{prefix}{local}` has shape {shape}, but {block_in(model, name, layer)} built for an input of shape "
                f"{input_shape} has {local} of shape {expected}; the weights do not fit this model"
            )
    return {
        key: value
        for key, value in vars(twin).items()
        if not key.startswith("_")
        and not isinstance(value, (torch.Tensor, nn.Module))
        and vars(layer).get(key) != value
    }


def _apply(plan: _Plan) -> None:
    layer = plan.layer
    for name, shape in plan.shapes.items():
        tensor = getattr(layer, name)
        tensor.materialize(shape)  # torch.empty on the tensor's own device and dtype
    for key, value in plan.attrs.items():
        setattr(layer, key, value)
    if isinstance(layer, LazyModuleMixin):
        # What torch's pre-forward hook does once shapes are known, minus the initialisation.
        lazy = cast(Any, layer)
        lazy._initialize_hook.remove()
        lazy._load_hook.remove()
        del lazy._initialize_hook, lazy._load_hook
        if lazy.cls_to_become is not None:
            layer.__class__ = lazy.cls_to_become
    initrules.run_deferred(layer)
