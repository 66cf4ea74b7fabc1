"""Tied tensors: one Parameter (or buffer) at several places, kept one through every change of device.

torch's Module._apply, behind .to(), .to_empty(), .cuda() and .half(), gives each place its
own new Parameter whenever the new tensor cannot take over the old one's storage in place
(CPU → meta, meta → CPU, a dtype change on meta): a tie becomes two Parameters, a model
counts the tied embedding twice, and FSDP sees two tensors where the checkpoint has one.
`kept` wraps such a change and puts the tie back: every place that held one tensor before
holds one tensor after (the first place's). zoo's own paths (build, load, materialise,
dispatch, sharding) go through it, and so does a dataflow block's own `_apply`
(zoo._build.graph), so a user's `model.to("meta")` keeps the ties of the models zoo builds.

A module used at several places (`shared`, `"@name"`) is one module: its tensors are one
place each and never come apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

Place = tuple[nn.Module, str]  # (module, name in its _parameters or _buffers)

_busy: ContextVar[bool] = ContextVar("zoo_ties_busy", default=False)  # an outer `kept` covers the inner ones


def groups(model: nn.Module) -> list[list[Place]]:
    """The places that hold one tensor, for every tensor held at more than one place (in module order)."""
    by_tensor: dict[int, list[Place]] = {}
    for module in model.modules():  # each module once: a shared module's tensors are one place
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is not None:
                    by_tensor.setdefault(id(tensor), []).append((module, name))
    return [places for places in by_tensor.values() if len(places) > 1]


def keys(model: nn.Module) -> list[list[str]]:
    """The state-dict keys of each tie: ["transformer.wte.weight", "lm_head.weight"] for GPT-2."""
    paths: dict[int, list[str]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is not None:
                    paths.setdefault(id(tensor), []).append(f"{prefix}.{name}" if prefix else name)
    return [found for found in paths.values() if len(found) > 1]


def retie(ties: list[list[Place]]) -> None:
    """Make every place of each group hold the tensor at its first place again."""
    for places in ties:
        module, name = places[0]
        first = _get(module, name)
        if first is None:
            continue
        for other, other_name in places[1:]:
            current = _get(other, other_name)
            if current is not first and current is not None and current.shape == first.shape:
                _table(other, other_name)[other_name] = first


@contextmanager
def kept(model: nn.Module) -> Iterator[None]:
    """Within it, change devices and dtypes freely: the ties of `model` are put back afterwards."""
    if _busy.get():
        yield
        return
    ties = groups(model)
    token = _busy.set(True)
    try:
        yield
    finally:
        _busy.reset(token)
        retie(ties)


def _table(module: nn.Module, name: str) -> dict[str, torch.Tensor | None]:
    return module._parameters if name in module._parameters else module._buffers  # type: ignore[return-value]


def _get(module: nn.Module, name: str) -> torch.Tensor | None:
    return _table(module, name).get(name)
