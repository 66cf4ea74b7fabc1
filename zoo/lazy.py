"""Deferred initialisation: shape passes and materialisation of lazy models.

First version: shapes by a forward pass of a copy on the meta device; materialisation by a
real forward on a batch of 2. (zoo.materialize's meta path replaces the latter.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from zoo import initrules


def is_lazy(model: nn.Module) -> bool:
    """Whether any parameter or buffer still waits for its shape."""
    return any(isinstance(t, (UninitializedParameter, UninitializedBuffer)) for t in (*model.parameters(), *model.buffers()))


def trace_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Output shape of every module (by dotted name) for an input of `input_shape`; the model is untouched."""
    probe = copy.deepcopy(model)
    shapes: dict[str, Any] = {}
    handles = []
    for name, module in probe.named_modules(remove_duplicate=False):
        handles.append(module.register_forward_hook(_recorder(shapes, name)))
    try:
        with torch.no_grad():
            probe(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _recorder(shapes: dict[str, Any], name: str) -> Any:
    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        shapes[name] = _shape_of(output)

    return hook


def _shape_of(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.shape
    if isinstance(output, (tuple, list)):
        return tuple(_shape_of(o) for o in output)
    return None


def materialize(model: nn.Module, *example_inputs: torch.Tensor, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Give every lazy parameter its shape, by one forward pass."""
    if not example_inputs:
        if input_shape is None:
            raise ValueError("materialize needs example inputs or input_shape")
        example_inputs = (torch.zeros(tuple(input_shape)),)
    with torch.no_grad():
        model(*example_inputs)
    initrules.run_deferred(model)
    return model
