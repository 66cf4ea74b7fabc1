"""Shape passes: a twin of the model (the same module tree over meta, shared or copied tensors)
runs forward on inputs that are shapes only, watched for each lazy layer's first call and each
module's output shape. No FLOPs and no activation memory, whatever the batch size.

A block whose forward cannot run on meta (`while x.abs().sum() > 1` needs a value) makes the pass
fall back to a real forward of a twin, with a notice naming the block; the random state is
restored after it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from zoo._build import devices, initrules
from zoo._build.builder import build_info, input_dtype
from zoo._build.lazy import (
    MetaFallbackWarning,
    block_in,
    check_shape,
    is_pending,
    label,
    lazy_owners,
    model_device,
    model_float_dtype,
    where,
)
from zoo._errors import ArgumentError, NotMaterializedError, ShapeError, listing

# torch's stubs give these the constructor of Parameter; the real one takes device and dtype.
_UninitializedParameter = cast(Any, UninitializedParameter)
_UninitializedBuffer = cast(Any, UninitializedBuffer)


# --- inputs of a shape pass ------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """A tensor argument reduced to what lazy layers read from it."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def zeros(self, device: torch.device) -> torch.Tensor:
        # One real zero, expanded: the full shape with no memory behind it.
        return torch.zeros((), dtype=self.dtype, device=device).expand(self.shape)


def _spec(tensor: torch.Tensor) -> TensorSpec:
    return TensorSpec(tuple(tensor.shape), tensor.dtype)


def map_tensors(value: Any, fn: Callable[[Any], Any]) -> Any:
    """`value` with `fn` applied to every tensor (and TensorSpec) inside tuples, lists and dicts."""
    return devices.map_tensors(value, fn, leaves=(torch.Tensor, TensorSpec))


@dataclass(frozen=True)
class Probe:
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
        return tuple(map_tensors(self.inputs, lambda x: torch.empty_like(x, device="meta")))

    def real(self, device: torch.device, dtype: torch.dtype, batch: int | None) -> tuple[Any, ...]:
        """Real inputs on `device`; with `batch`, cut to that many samples along dim 0."""
        if self.shape is not None:
            shape = (min(self.shape[0], batch), *self.shape[1:]) if batch else self.shape
            devices.check_allocation(shape, self.dtype or dtype, device, "the input of a real shape pass")
            return (torch.zeros(shape, dtype=self.dtype or dtype, device=device),)

        def cut(x: torch.Tensor) -> torch.Tensor:
            return (x[:batch] if batch and x.dim() > 0 else x).to(device)

        return tuple(map_tensors(self.inputs, cut))


def probe_for(model: nn.Module, example_inputs: tuple[Any, ...], input_shape: Sequence[int] | None) -> Probe:
    if example_inputs and input_shape is not None:
        raise ArgumentError("pass example inputs or input_shape, not both")
    if example_inputs:
        return Probe(tuple(example_inputs), None)
    if input_shape is not None:
        return Probe((), check_shape(input_shape), input_dtype(model))
    info = build_info(model)
    if info is not None and info.input_shape:
        return Probe((), check_shape(info.input_shape, f"the `input` of '{info.name}'"), input_dtype(model))
    raise ArgumentError(
        f"{label(model)} has lazy layers ({listing(lazy_owners(model))}) whose input sizes zoo cannot guess: "
        "pass example inputs, or input_shape=(batch, ...) such as input_shape=(2, 20)"
    )


# --- twins: the same module tree over other tensors ----------------------------------------


def twin_of(model: nn.Module, tensors: Literal["meta", "shared", "copied"]) -> nn.Module:
    """A deep copy of `model` for a shape pass; the user's model is never run.

    tensors: "meta" puts every parameter and buffer on the meta device (no storage); "shared"
    lets the twin use the model's real tensors (no copy; for a forward under no_grad in eval
    mode); "copied" copies them. In every case lazy tensors become fresh lazy tensors, so the
    twin's initialisation never touches the model's, and deferred init rules are left out.
    """
    memo: dict[int, Any] = {}
    for param in model.parameters():
        if is_pending(param):
            place = "meta" if tensors == "meta" else param.data.device
            memo[id(param)] = _UninitializedParameter(param.requires_grad, device=place, dtype=param.dtype)
        elif tensors == "meta":
            memo[id(param)] = nn.Parameter(torch.empty_like(param, device="meta"), param.requires_grad)
        elif tensors == "shared":
            memo[id(param)] = param
    for buffer in model.buffers():
        if is_pending(buffer):
            place = "meta" if tensors == "meta" else buffer.data.device
            memo[id(buffer)] = _UninitializedBuffer(False, device=place, dtype=buffer.dtype)
        elif tensors == "meta":
            memo[id(buffer)] = torch.empty_like(buffer, device="meta")
        elif tensors == "shared":
            memo[id(buffer)] = buffer
    for module in model.modules():
        # The twin's layers must not run the user's init rules: a rule written for real
        # tensors may fail on meta, and would then be blamed on the wrong block.
        pending_rules = initrules.deferred(module)
        if pending_rules is not None:
            memo[id(pending_rules)] = []
    try:
        return copy.deepcopy(model, memo)
    except Exception as err:
        raise NotMaterializedError(
            f"cannot copy {label(model)} for a shape pass ({type(err).__name__}: {err}); "
            "run one forward on a small batch yourself to materialise it"
        ) from err


@dataclass(frozen=True)
class FirstCall:
    """A lazy layer's first call: torch initialises the layer from these arguments."""

    name: str
    args: tuple[Any, ...]  # tensors as TensorSpec
    kwargs: dict[str, Any]


class _BlockFailed(Exception):
    """A twin's forward raised; `name` is the innermost module that was running."""

    def __init__(self, name: str, module: nn.Module, error: Exception) -> None:
        super().__init__(name)
        self.name, self.module, self.error = name, module, error


class Watch:
    """One forward of a twin, watched: lazy layers' first calls, output shapes, where it fails."""

    def __init__(self, twin: nn.Module) -> None:
        self.twin = twin
        self.calls: list[FirstCall] = []
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
                self.calls.append(FirstCall(name, map_tensors(args, _spec), map_tensors(kwargs, _spec)))

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
def rng_kept(device: torch.device | None) -> Iterator[None]:
    """Restore the random state afterwards: a shape pass must not shift the user's random stream."""
    if device is not None and device.type not in ("cpu", "meta"):
        index = device.index if device.index is not None else 0
        with torch.random.fork_rng(devices=[index], device_type=device.type):
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            yield


def watched_pass(
    model: nn.Module,
    probe: Probe,
    *,
    device: torch.device,
    dtype: torch.dtype,
    fallback: Literal["shared", "copied"],
    batch: int | None,
) -> tuple[Watch, str | None]:
    """Run the shape pass on a meta twin, or on a real twin when meta cannot run the model.

    Returns the watch and, after a fallback, the notice that names the block.
    Raises ShapeError when the real run fails too.
    """
    watch = Watch(twin_of(model, "meta"))
    try:
        with rng_kept(None):
            watch.run(probe.on_meta(dtype))
        return watch, None
    except _BlockFailed as on_meta:
        meta_failure = on_meta
    twin = twin_of(model, fallback)
    twin.eval()  # no batch-norm statistics updated, no dropout drawn by a pass that only wants shapes
    watch = Watch(twin)
    try:
        with rng_kept(device):
            watch.run(probe.real(device, dtype, batch))
    except _BlockFailed as real:
        raise ShapeError(
            f"{probe.describe()} does not fit {label(model)}: {where(real.name, real.module)} raised "
            f"{type(real.error).__name__}: {real.error}"
        ) from real.error
    size = f"a batch of {batch}" if batch else probe.describe()
    notice = (
        f"{block_in(model, meta_failure.name, meta_failure.module)} cannot run on the meta device "
        f"({type(meta_failure.error).__name__}: {meta_failure.error}); a real forward on {size} was used instead"
    )
    return watch, notice


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
    probe = Probe((), check_shape(input_shape), input_dtype(model))
    watch, notice = watched_pass(
        model, probe, device=model_device(model), dtype=model_float_dtype(model), fallback="copied", batch=None
    )
    # The twin mirrors the model's tree, so its module paths are the model's.
    shapes = {
        name: watch.outputs[id(module)]
        for name, module in watch.twin.named_modules(remove_duplicate=False)
        if id(module) in watch.outputs
    }
    unique = list(watch.twin.parameters())
    count = None if any(is_pending(p) for p in unique) else sum(p.numel() for p in unique)
    return ShapeTrace(shapes, count, notice)


def trace_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Output shape of every module (by dotted name) for an input of `input_shape`; the model is untouched.

    Warns with MetaFallbackWarning when a block cannot run on meta and a real forward was used.
    """
    found = trace(model, input_shape)
    if found.notice:
        warnings.warn(found.notice, MetaFallbackWarning, stacklevel=2)
    return found.shapes
