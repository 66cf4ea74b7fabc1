"""zoo.materialize: every lazy layer of a model given its shape by a shape pass, and its values.

1. A meta twin of the model runs forward (shape_pass). It records, for each lazy layer, the
   arguments of its first call, in the order torch would initialise the layers.
2. The real model's lazy layers are then initialised in that order by torch's own hook body
   (`initialize_parameters`, then `reset_parameters`), fed zero tensors expanded to the
   recorded shapes (stride 0: no memory). The random draws are those of torch's first forward,
   so the same `torch.manual_seed` gives the same parameters. Deferred `init` rules run right
   after their layer, as they do under torch's first forward.
3. A block that cannot run on meta makes the pass fall back to a real dry run of a twin on a
   batch of 2, with a `MetaFallbackWarning` naming the block.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from zoo._build import devices, initrules
from zoo._build.devices import DeviceArg
from zoo._build.lazy import (
    MetaFallbackWarning,
    block_in,
    check_device,
    is_lazy,
    label,
    lazy_owners,
    model_device,
    model_float_dtype,
    own_lazy_tensors,
    place,
)
from zoo._build.shape_pass import FirstCall, Probe, TensorSpec, map_tensors, probe_for, watched_pass
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError, listing

TINY_BATCH = 2  # the fallback dry run's batch: 2, not 1, so batch-norm in training mode still works


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
    target = check_device(device)
    devices.check_dtype(dtype)
    if not is_lazy(model):
        if example_inputs and input_shape is not None:
            raise ArgumentError("pass example inputs or input_shape, not both")
        place(model, target, dtype)
        return model
    probe = probe_for(model, example_inputs, input_shape)
    place(model, target, dtype)
    watch, notice = watched_pass(
        model, probe, device=model_device(model), dtype=model_float_dtype(model), fallback="shared", batch=TINY_BATCH
    )
    _check_all_reached(model, watch.calls, probe)
    _initialize_in_order(model, watch.calls)
    if notice:
        warnings.warn(notice, MetaFallbackWarning, stacklevel=2)
    return model


def _check_all_reached(model: nn.Module, calls: list[FirstCall], probe: Probe) -> None:
    reached = {call.name for call in calls}
    missed = [name for name in lazy_owners(model) if name not in reached]
    if missed:
        raise NotMaterializedError(
            f"the forward pass of {label(model)} on {probe.describe()} never reached lazy layer(s) "
            f"{listing(missed)}, so their input sizes are unknown. Pass inputs that use them, or load weights "
            "into the model (zoo.load_weights) to take the shapes from the file."
        )


def _initialize_in_order(model: nn.Module, calls: list[FirstCall]) -> None:
    """Torch's first-forward initialisation of each lazy layer, in `calls` order; all or nothing."""
    modules = dict(model.named_modules())
    undo = [_Undo(modules[call.name]) for call in calls]
    here: torch.device | None = None
    try:
        with torch.no_grad():
            for call in calls:
                layer = modules[call.name]
                here = _lazy_device(layer)
                args = map_tensors(call.args, partial(TensorSpec.zeros, device=here))
                kwargs = map_tensors(call.kwargs, partial(TensorSpec.zeros, device=here))
                # The body of torch's own pre-forward hook: initialize_parameters, reset_parameters,
                # remove the hooks, become cls_to_become.
                cast(Any, layer)._infer_parameters(layer, args, kwargs)
                initrules.run_deferred(layer)  # now, as under torch's first forward: same random draws
    except Exception as err:
        for step in reversed(undo):
            step.restore()
        if isinstance(err, torch.OutOfMemoryError):
            raise DeviceError(f"{label(model)} does not fit in memory on {here}: {err}") from err
        raise NotMaterializedError(
            f"initialising {block_in(model, call.name, layer)} failed ({type(err).__name__}: {err}); "
            "the model is left as it was, lazy"
        ) from err


def _lazy_device(module: nn.Module) -> torch.device:
    return next((t.data.device for t in own_lazy_tensors(module)), model_device(module))


class _Undo:
    """A lazy layer's state, kept to put it back if materialising the model fails half-way."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.cls = type(module)
        self.attrs = dict(module.__dict__)
        # Hook, parameter and buffer tables are edited in place: keep their contents too.
        self.tables = {k: copy.copy(v) for k, v in self.attrs.items() if isinstance(v, (dict, set, list))}
        self.tensors = [(t, type(t), t.data) for t in own_lazy_tensors(module)]

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
