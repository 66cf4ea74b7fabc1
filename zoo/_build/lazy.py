"""Deferred initialisation: shape passes on the meta device, and materialisation of lazy models.

The lazy lifecycle, stated once (torch's nn/modules/lazy.py):

    construct → place (device, dtype) → shape pass → materialise → nothing lazy left → weights I/O

How `materialize` does the shape pass and the materialisation:

1. A *meta twin* of the model (the same module tree, every parameter and buffer replaced by a
   tensor on the meta device, which has shapes but no storage) runs forward on meta inputs. It
   records, for each lazy layer, the arguments of its first call, in the order torch would
   initialise the layers. No FLOPs and no activation memory, whatever the batch size.
2. The real model's lazy layers are then initialised in that order by torch's own hook body
   (`initialize_parameters`, then `reset_parameters`), fed zero tensors expanded to the
   recorded shapes (stride 0: no memory). The random draws are those of torch's first forward,
   so the same `torch.manual_seed` gives the same parameters. Deferred `init` rules run right
   after their layer, as they do under torch's first forward.
3. A block whose forward cannot run on meta (`while x.abs().sum() > 1` needs a value) makes
   the shape pass fall back to a real dry run of a twin on a batch of 2, with a
   `MetaFallbackWarning` naming the block. The random state is restored after it.

`materialize_from_shapes` skips the forward pass altogether: shapes come from a checkpoint's
header, and each layer's size attributes from its own `initialize_parameters` run on meta.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _LazyNormBase
from torch.nn.modules.conv import _LazyConvXdMixin
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch.utils._device import DeviceContext

from zoo._build import devices
from zoo._build import initrules
from zoo._plugins.blocks import LazyMyLinear
from zoo._build.builder import build_info, input_dtype
from zoo._build.devices import DeviceArg
from zoo._errors import (
    ArgumentError,
    DeviceError,
    NotMaterializedError,
    ShapeError,
    WeightsError,
    did_you_mean,
    listing,
)

TINY_BATCH = 2  # the fallback dry run's batch: 2, not 1, so batch-norm in training mode still works

# torch's stubs give these the constructor of Parameter; the real one takes device and dtype.
_UninitializedParameter = cast(Any, UninitializedParameter)
_UninitializedBuffer = cast(Any, UninitializedBuffer)

InputRule = Callable[[nn.Module, Mapping[str, tuple[int, ...]]], tuple[int, ...]]


class MetaFallbackWarning(UserWarning):
    """A block could not run on the meta device; zoo ran a real forward instead (the message names it)."""


# --- what is lazy ------------------------------------------------------------------------


def is_lazy(model: nn.Module) -> bool:
    """Whether any parameter or buffer of `model` still waits for its shape."""
    return any(_pending(t) for t in (*model.parameters(), *model.buffers()))


def lazy_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the parameters and buffers that still wait for their shapes."""
    named = (*model.named_parameters(), *model.named_buffers())
    return [name for name, tensor in named if _pending(tensor)]


def require_materialized(model: nn.Module, action: str) -> None:
    """Raise unless every parameter and buffer of `model` has its shape.

    Args:
        action: what needs concrete tensors, for the message ("save", "count parameters").

    Raises:
        NotMaterializedError: naming the lazy keys and how to materialise them.
    """
    keys = lazy_keys(model)
    if keys:
        raise NotMaterializedError(
            f"cannot {action}: {_label(model)} has {len(keys)} lazy parameter(s)/buffer(s) whose shapes are not "
            f"known yet ({listing(keys)}). {_how_to_materialize(model)}"
        )


def _pending(tensor: object) -> bool:
    return isinstance(tensor, (UninitializedParameter, UninitializedBuffer))


def _label(model: nn.Module) -> str:
    info = build_info(model)
    return f"'{info.name}'" if info is not None else f"the {type(model).__name__}"


def _how_to_materialize(model: nn.Module) -> str:
    info = build_info(model)
    shape = tuple(info.input_shape) if info is not None and info.input_shape else None
    example = f"input_shape={shape}" if shape else "input_shape=(batch, ...)"
    return f"Call zoo.materialize(model, {example}) or load weights into it (zoo.load_weights) first."


def _where(name: str, module: nn.Module) -> str:
    """`0.net.2` (LazyLinear), for messages."""
    return f"`{name}` ({type(module).__name__})" if name else f"the model itself ({type(module).__name__})"


def _block(model: nn.Module, name: str, module: nn.Module) -> str:
    """`0.net.2` (LazyLinear) in 'lazy_mlp', for messages."""
    return f"{_where(name, module)} in {_label(model)}"


# --- arguments ---------------------------------------------------------------------------


def _check_device(device: DeviceArg) -> torch.device | None:
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


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.data.device
    return torch.device("cpu")


def _model_float_dtype(model: nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype.is_floating_point:
            return tensor.dtype
    return torch.get_default_dtype()


def place(model: nn.Module, device: torch.device | None, dtype: torch.dtype | None) -> None:
    """model.to(device, dtype), keeping lazy layers lazy (on meta too)."""
    if device is None and dtype is None:
        return
    pending = _uninitialized_places(model)
    try:
        model.to(device=device, dtype=dtype)
    except torch.OutOfMemoryError as err:
        raise DeviceError(f"{_label(model)} does not fit on {device}: {err}") from err
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


# --- inputs of a shape pass ------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorSpec:
    """A tensor argument reduced to what lazy layers read from it."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def zeros(self, device: torch.device) -> torch.Tensor:
        # One real zero, expanded: the full shape with no memory behind it.
        return torch.zeros((), dtype=self.dtype, device=device).expand(self.shape)


def _spec(tensor: torch.Tensor) -> _TensorSpec:
    return _TensorSpec(tuple(tensor.shape), tensor.dtype)


def _map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    """`value` with `fn` applied to every tensor (and _TensorSpec) inside tuples, lists and dicts."""
    return devices.map_tensors(value, fn, leaves=(torch.Tensor, _TensorSpec))


@dataclass(frozen=True)
class _Probe:
    """What to feed a shape pass: the user's example inputs, or an input shape."""

    inputs: tuple[Any, ...]  # example inputs as given; empty when `shape` is set
    shape: tuple[int, ...] | None
    dtype: torch.dtype | None = None  # of a shape's input when the entry declares one (token ids)

    def describe(self) -> str:
        if self.shape is not None:
            return f"an input of shape {self.shape}"
        shapes = [tuple(x.shape) for x in self.inputs if isinstance(x, torch.Tensor)]
        return f"example inputs of shape(s) {', '.join(map(str, shapes)) or '(none)'}"

    def on_meta(self, dtype: torch.dtype) -> tuple[Any, ...]:
        if self.shape is not None:
            return (torch.empty(self.shape, dtype=self.dtype or dtype, device="meta"),)
        return tuple(_map_tensors(self.inputs, lambda x: torch.empty_like(x, device="meta")))

    def real(self, device: torch.device, dtype: torch.dtype, batch: int | None) -> tuple[Any, ...]:
        """Real inputs on `device`; with `batch`, cut to that many samples along dim 0."""
        if self.shape is not None:
            shape = (min(self.shape[0], batch), *self.shape[1:]) if batch else self.shape
            devices.check_allocation(shape, self.dtype or dtype, device, "the input of a real shape pass")
            return (torch.zeros(shape, dtype=self.dtype or dtype, device=device),)

        def cut(x: torch.Tensor) -> torch.Tensor:
            return (x[:batch] if batch and x.dim() > 0 else x).to(device)

        return tuple(_map_tensors(self.inputs, cut))


def _probe(model: nn.Module, example_inputs: tuple[Any, ...], input_shape: Sequence[int] | None) -> _Probe:
    if example_inputs and input_shape is not None:
        raise ArgumentError("pass example inputs or input_shape, not both")
    if example_inputs:
        return _Probe(tuple(example_inputs), None)
    if input_shape is not None:
        return _Probe((), check_shape(input_shape), input_dtype(model))
    info = build_info(model)
    if info is not None and info.input_shape:
        return _Probe((), check_shape(info.input_shape, f"the `input` of '{info.name}'"), input_dtype(model))
    raise ArgumentError(
        f"{_label(model)} has lazy layers ({listing(_lazy_owners(model))}) whose input sizes zoo cannot guess: "
        "pass example inputs, or input_shape=(batch, ...) such as input_shape=(2, 20)"
    )


# --- twins: the same module tree over other tensors ----------------------------------------


def _twin(model: nn.Module, tensors: Literal["meta", "shared", "copied"]) -> nn.Module:
    """A deep copy of `model` for a shape pass; the user's model is never run.

    tensors: "meta" puts every parameter and buffer on the meta device (no storage); "shared"
    lets the twin use the model's real tensors (no copy; for a forward under no_grad in eval
    mode); "copied" copies them. In every case lazy tensors become fresh lazy tensors, so the
    twin's initialisation never touches the model's, and deferred init rules are left out.
    """
    memo: dict[int, Any] = {}
    for param in model.parameters():
        if _pending(param):
            place = "meta" if tensors == "meta" else param.data.device
            memo[id(param)] = _UninitializedParameter(param.requires_grad, device=place, dtype=param.dtype)
        elif tensors == "meta":
            memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), param.requires_grad)
        elif tensors == "shared":
            memo[id(param)] = param
    for buffer in model.buffers():
        if _pending(buffer):
            place = "meta" if tensors == "meta" else buffer.data.device
            memo[id(buffer)] = _UninitializedBuffer(False, device=place, dtype=buffer.dtype)
        elif tensors == "meta":
            memo[id(buffer)] = torch.empty_like(buffer, device="meta")
        elif tensors == "shared":
            memo[id(buffer)] = buffer
    for module in model.modules():
        # The twin's layers must not run the user's init rules: a rule written for real
        # tensors may fail on meta, and would then be blamed on the wrong block.
        pending_rules = module.__dict__.get(initrules._DEFERRED)
        if pending_rules is not None:
            memo[id(pending_rules)] = []
    try:
        return copy.deepcopy(model, memo)
    except Exception as err:
        raise NotMaterializedError(
            f"cannot copy {_label(model)} for a shape pass ({type(err).__name__}: {err}); "
            "run one forward on a small batch yourself to materialise it"
        ) from err


@dataclass(frozen=True)
class _FirstCall:
    """A lazy layer's first call: torch initialises the layer from these arguments."""

    name: str
    args: tuple[Any, ...]  # tensors as _TensorSpec
    kwargs: dict[str, Any]


class _BlockFailed(Exception):
    """A twin's forward raised; `name` is the innermost module that was running."""

    def __init__(self, name: str, module: nn.Module, error: Exception) -> None:
        super().__init__(name)
        self.name, self.module, self.error = name, module, error


class _Watch:
    """One forward of a twin, watched: lazy layers' first calls, output shapes, where it fails."""

    def __init__(self, twin: nn.Module) -> None:
        self.twin = twin
        self.calls: list[_FirstCall] = []
        self.outputs: dict[int, Any] = {}  # id(module) → shape of its last output
        self.running: list[tuple[str, nn.Module]] = []  # modules inside forward, innermost last
        for name, module in twin.named_modules():
            # Prepended, so they see a lazy layer's arguments before torch's own hook does.
            module.register_forward_pre_hook(self._enter(name), prepend=True, with_kwargs=True)
            module.register_forward_hook(self._leave)

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.running.append((name, module))
            if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
                self.calls.append(_FirstCall(name, _map_tensors(args, _spec), _map_tensors(kwargs, _spec)))

        return hook

    def _leave(self, module: nn.Module, _args: Any, output: Any) -> None:
        self.running.pop()
        self.outputs[id(module)] = _shape_of(output)

    def run(self, inputs: tuple[Any, ...]) -> None:
        try:
            with torch.no_grad():
                self.twin(*inputs)
        except Exception as err:
            name, module = self.running[-1] if self.running else ("", self.twin)
            raise _BlockFailed(name, module, err) from err


def _shape_of(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.shape
    if isinstance(output, (tuple, list)):
        return tuple(_shape_of(o) for o in output)
    return None


@contextmanager
def _rng_kept(device: torch.device | None) -> Iterator[None]:
    """Restore the random state afterwards: a shape pass must not shift the user's random stream."""
    if device is not None and device.type not in ("cpu", "meta"):
        index = device.index if device.index is not None else 0
        with torch.random.fork_rng(devices=[index], device_type=device.type):
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            yield


def _watched_pass(
    model: nn.Module,
    probe: _Probe,
    *,
    device: torch.device,
    dtype: torch.dtype,
    fallback: Literal["shared", "copied"],
    batch: int | None,
) -> tuple[_Watch, str | None]:
    """Run the shape pass on a meta twin, or on a real twin when meta cannot run the model.

    Returns the watch and, after a fallback, the notice that names the block.
    Raises ShapeError when the real run fails too.
    """
    watch = _Watch(_twin(model, "meta"))
    try:
        with _rng_kept(None):
            watch.run(probe.on_meta(dtype))
        return watch, None
    except _BlockFailed as on_meta:
        meta_failure = on_meta
    twin = _twin(model, fallback)
    twin.eval()  # no batch-norm statistics updated, no dropout drawn by a pass that only wants shapes
    watch = _Watch(twin)
    try:
        with _rng_kept(device):
            watch.run(probe.real(device, dtype, batch))
    except _BlockFailed as real:
        raise ShapeError(
            f"{probe.describe()} does not fit {_label(model)}: {_where(real.name, real.module)} raised "
            f"{type(real.error).__name__}: {real.error}"
        ) from real.error
    size = f"a batch of {batch}" if batch else probe.describe()
    notice = (
        f"{_block(model, meta_failure.name, meta_failure.module)} cannot run on the meta device "
        f"({type(meta_failure.error).__name__}: {meta_failure.error}); a real forward on {size} was used instead"
    )
    return watch, notice


# --- materialisation by a shape pass --------------------------------------------------------


def materialize(
    model: nn.Module,
    *example_inputs: Any,
    input_shape: Sequence[int] | None = None,
    device: DeviceArg = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Give every lazy parameter and buffer of `model` its shape and initial values, in place.

    Shapes come from a forward pass on the meta device: no FLOPs and no activation memory, so
    a batch of 2,000,000 costs what a batch of 2 costs. Values come from each layer's own
    initialiser and the entry's `init` rules, in the order torch's first forward would use:
    the same `torch.manual_seed` gives the same parameters as `model(x)` would. A block that
    cannot run on meta makes zoo use a real forward on a batch of 2 instead, with a
    MetaFallbackWarning naming it. Layers become their concrete class (LazyLinear → Linear).

    Args:
        model: a model with lazy layers (a model without any is only moved).
        *example_inputs: inputs as for `model(...)`; only their shapes and dtypes are used.
        input_shape: instead of example inputs, the shape of a single zero input
            (default: the entry's declared `input`).
        device, dtype: where and in what precision the whole model's tensors live afterwards.

    Returns:
        `model` itself.

    Raises:
        ArgumentError: no input is known, both kinds were given, or a bad shape or dtype.
        DeviceError: `device` is not available, or the model does not fit on it.
        ShapeError: the forward pass rejects the input (the message names the block).
        NotMaterializedError: a lazy layer that the forward pass never reaches.
        On any error the lazy layers stay as they were (the model may already sit on `device`).

    Example:
        >>> model = zoo.build("lazy_mlp")
        >>> zoo.materialize(model, input_shape=(2, 20), dtype=torch.float64)
    """
    target = _check_device(device)
    devices.check_dtype(dtype)
    if not is_lazy(model):
        if example_inputs and input_shape is not None:
            raise ArgumentError("pass example inputs or input_shape, not both")
        place(model, target, dtype)
        return model
    probe = _probe(model, example_inputs, input_shape)
    place(model, target, dtype)
    watch, notice = _watched_pass(
        model, probe, device=_model_device(model), dtype=_model_float_dtype(model), fallback="shared", batch=TINY_BATCH
    )
    _check_all_reached(model, watch.calls, probe)
    _initialize_in_order(model, watch.calls)
    if notice:
        warnings.warn(notice, MetaFallbackWarning, stacklevel=2)
    return model


def _check_all_reached(model: nn.Module, calls: list[_FirstCall], probe: _Probe) -> None:
    reached = {call.name for call in calls}
    missed = [name for name in _lazy_owners(model) if name not in reached]
    if missed:
        raise NotMaterializedError(
            f"the forward pass of {_label(model)} on {probe.describe()} never reached lazy layer(s) "
            f"{listing(missed)}, so their input sizes are unknown. Pass inputs that use them, or load weights "
            "into the model (zoo.load_weights) to take the shapes from the file."
        )


def _initialize_in_order(model: nn.Module, calls: list[_FirstCall]) -> None:
    """Torch's first-forward initialisation of each lazy layer, in `calls` order; all or nothing."""
    modules = dict(model.named_modules())
    undo = [_Undo(modules[call.name]) for call in calls]
    here: torch.device | None = None
    try:
        with torch.no_grad():
            for call in calls:
                layer = modules[call.name]
                here = _lazy_device(layer)
                args = _map_tensors(call.args, partial(_TensorSpec.zeros, device=here))
                kwargs = _map_tensors(call.kwargs, partial(_TensorSpec.zeros, device=here))
                # The body of torch's own pre-forward hook: initialize_parameters, reset_parameters,
                # remove the hooks, become cls_to_become.
                cast(Any, layer)._infer_parameters(layer, args, kwargs)
                initrules.run_deferred(layer)  # now, as under torch's first forward: same random draws
    except Exception as err:
        for step in reversed(undo):
            step.restore()
        if isinstance(err, torch.OutOfMemoryError):
            raise DeviceError(f"{_label(model)} does not fit in memory on {here}: {err}") from err
        raise NotMaterializedError(
            f"initialising {_block(model, call.name, layer)} failed ({type(err).__name__}: {err}); "
            "the model is left as it was, lazy"
        ) from err


def _lazy_device(module: nn.Module) -> torch.device:
    return next((t.data.device for t in _own_lazy_tensors(module)), _model_device(module))


def _own_lazy_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The lazy parameters and buffers `module` holds itself (not its children's)."""
    return [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None and _pending(t)]


class _Undo:
    """A lazy layer's state, kept to put it back if materialising the model fails half-way."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.cls = type(module)
        self.attrs = dict(module.__dict__)
        # Hook, parameter and buffer tables are edited in place: keep their contents too.
        self.tables = {k: copy.copy(v) for k, v in self.attrs.items() if isinstance(v, (dict, set, list))}
        self.tensors = [(t, type(t), t.data) for t in _own_lazy_tensors(module)]

    def restore(self) -> None:
        for tensor, cls, data in self.tensors:
            tensor.data = data
            tensor.__class__ = cls
        for key, saved in self.tables.items():
            live = self.attrs[key]
            if isinstance(live, list):
                live[:] = saved
            else:
                live.clear()
                live.update(saved)
        self.module.__dict__.clear()
        self.module.__dict__.update(self.attrs)
        self.module.__class__ = self.cls


def _lazy_owners(model: nn.Module) -> dict[str, list[str]]:
    """Modules that hold lazy tensors themselves: first path → every path of that module."""
    owners: dict[int, list[str]] = {}
    first: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if _own_lazy_tensors(module):
            first.setdefault(id(module), name)
            owners.setdefault(id(module), []).append(name)
    return {first[key]: paths for key, paths in owners.items()}


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
    target = _check_device(device)
    devices.check_dtype(dtype)
    owners = _lazy_owners(model)
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    missing: list[str] = []
    for first, paths in owners.items():
        found[first] = _layer_shapes(model, first, paths, shapes, missing)
    if missing:
        model_keys = set(model.state_dict())
        unused = [key for key in shapes if key not in model_keys]  # likely misspelt or renamed
        hints = "".join(f" For `{key}`:{did_you_mean(key, unused)}" for key in missing if did_you_mean(key, unused))
        raise NotMaterializedError(
            f"no shape for lazy {listing(missing)} of {_label(model)} among the {len(shapes)} key(s) given."
            f"{hints} Keys given: {listing(shapes)}."
        )
    plans = []  # every layer checked before any is changed
    for first, local in found.items():
        layer = model.get_submodule(first)
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
    layer = model.get_submodule(first)
    local: dict[str, tuple[int, ...]] = {}
    for name, tensor in {**layer._parameters, **layer._buffers}.items():
        if not _pending(tensor):
            continue
        key = f"{first}.{name}" if first else name
        if name in layer._non_persistent_buffers_set:
            raise NotMaterializedError(
                f"{_block(model, first, layer)} has a non-persistent lazy buffer `{key}`: no weights file holds it. "
                f"{_how_to_materialize(model)}"
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
        raise NotMaterializedError(
            f"zoo does not know which input gives {_block(model, name, layer)} the shapes it was given. "
            f"{_how_to_materialize(model)} "
            f"Or give {type(layer).__name__} a static method zoo_input_shape(shapes), or register one with "
            f"zoo.register_input_rule({type(layer).__name__}, rule)."
        )
    prefix = f"{name}." if name else ""
    try:
        input_shape = rule(layer, shapes)
    except BadShape as err:
        raise WeightsError(f"`{prefix}{err.key}` {err} ({_block(model, name, layer)})") from err
    except (ValueError, IndexError, KeyError) as err:
        raise WeightsError(
            f"{_block(model, name, layer)} cannot take the shapes given for "
            f"{listing(prefix + k for k in shapes)}: {err}"
        ) from err
    twin = _twin(layer, "meta")
    dtype = _own_lazy_tensors(layer)[0].dtype
    try:
        with _rng_kept(None), torch.no_grad():
            cast(Any, twin).initialize_parameters(torch.empty(input_shape, dtype=dtype, device="meta"))
    except Exception as err:
        raise WeightsError(
            f"{_block(model, name, layer)} cannot be built for the shapes {shapes}: {type(err).__name__}: {err}"
        ) from err
    for local, shape in shapes.items():
        expected = tuple(getattr(twin, local).shape)
        if expected != shape:
            raise WeightsError(
                f"`{prefix}{local}` has shape {shape}, but {_block(model, name, layer)} built for an input of shape "
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


# --- shapes for zoo.summary ------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeTrace:
    """What one shape pass found, for zoo.summary."""

    shapes: dict[str, Any]  # module dotted name → output shape (torch.Size, tuple of them, or None)
    param_count: int | None  # parameters once materialised for this input; None if some stay unknown
    notice: str | None  # set when a block could not run on meta and a real forward was used


def trace(model: nn.Module, input_shape: Sequence[int]) -> ShapeTrace:
    """Run a shape pass for a zero input of `input_shape` without changing `model` or the random state.

    On the meta device where the model allows it; otherwise a real forward of a copy of the
    model on the full `input_shape` (so every shape is exact), with `notice` saying why.

    Raises:
        ArgumentError: a bad shape. ShapeError: the model rejects the input.
    """
    probe = _Probe((), check_shape(input_shape), input_dtype(model))
    watch, notice = _watched_pass(
        model, probe, device=_model_device(model), dtype=_model_float_dtype(model), fallback="copied", batch=None
    )
    # The twin mirrors the model's tree, so its module paths are the model's.
    shapes = {
        name: watch.outputs[id(module)]
        for name, module in watch.twin.named_modules(remove_duplicate=False)
        if id(module) in watch.outputs
    }
    unique = list(watch.twin.parameters())
    count = None if any(_pending(p) for p in unique) else sum(p.numel() for p in unique)
    return ShapeTrace(shapes, count, notice)


def trace_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Output shape of every module (by dotted name) for an input of `input_shape`; the model is untouched.

    Warns with MetaFallbackWarning when a block cannot run on meta and a real forward was used.
    """
    found = trace(model, input_shape)
    if found.notice:
        warnings.warn(found.notice, MetaFallbackWarning, stacklevel=2)
    return found.shapes


# What a constructor calls to draw initial values. On meta tensors they compute nothing, yet each
# costs ~0.1 ms of Python (random ops reach meta through decompositions): for a load that
# replaces every value anyway, that was most of building the model.
_INITIALISERS = frozenset(
    {
        nn.init.uniform_,
        nn.init.normal_,
        nn.init.constant_,
        nn.init.kaiming_uniform_,
        nn.init.kaiming_normal_,
        nn.init.trunc_normal_,
        torch.Tensor.uniform_,
        torch.Tensor.normal_,
        torch.Tensor.random_,
        torch.Tensor.bernoulli_,
        torch.Tensor.exponential_,
        torch.Tensor.log_normal_,
        torch.Tensor.cauchy_,
        torch.Tensor.geometric_,
    }
)


class _MetaBuild(DeviceContext):
    """torch.device("meta") that skips drawing initial values into meta tensors."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _INITIALISERS:
            tensor = args[0] if args else (kwargs or {}).get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return super().__torch_function__(func, types, args, kwargs)  # type: ignore[no-untyped-call]


def meta_build() -> DeviceContext:
    """Build on the meta device for tensors that will be replaced: shapes only, no initial values drawn.

    zoo.load builds this way: the model is the same as under torch.device("meta"), in less time.
    """
    return _MetaBuild("meta")


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within it, every parameter a module registers lands on the meta device (no memory, no init values).

    zoo.load and sharded loads build this way, then hand the model the stored tensors.
    """

    def to_meta(_module: nn.Module, _name: str, param: Any) -> Any:
        if param is None or isinstance(param, UninitializedParameter) or param.is_meta:
            return None
        return nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)

    handle = nn.modules.module.register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()
