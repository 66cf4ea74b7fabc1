"""Builds on the meta device for tensors that will be replaced (zoo.load, sharded loads), and the buffers they need."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch.utils._device import DeviceContext

from zoo._language import names

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


# Set while a meta build keeps the values of the buffers a dataflow block declares without a
# state-dict key (RoPE's inv_freq, a causal mask): computed on the CPU at build, they need no
# second build to get values after a load (fill_buffers), which for a 32-layer Llama was half of it.
_computed_buffers: contextvars.ContextVar[bool] = contextvars.ContextVar("zoo_computed_buffers", default=False)


def computing_buffers() -> bool:
    """Whether the meta build under way computes declared non-persistent buffers for real (on the CPU)."""
    return _computed_buffers.get()


class _MetaBuild(DeviceContext):
    """torch.device("meta") that skips drawing initial values into meta tensors."""

    def __init__(self, computed_buffers: bool) -> None:
        super().__init__("meta")
        self.computed_buffers = computed_buffers
        self.tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> Any:
        self.tokens.append(_computed_buffers.set(self.computed_buffers))
        return super().__enter__()  # type: ignore[no-untyped-call]

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)  # type: ignore[no-untyped-call]
        finally:
            _computed_buffers.reset(self.tokens.pop())

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _INITIALISERS:
            tensor = args[0] if args else (kwargs or {}).get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return super().__torch_function__(func, types, args, kwargs)  # type: ignore[no-untyped-call]


def meta_build(*, computed_buffers: bool = False) -> DeviceContext:
    """Build on the meta device for tensors that will be replaced: shapes only, no initial values drawn.

    zoo.load builds this way: the model is the same as under torch.device("meta"), in less time.
    With `computed_buffers`, the non-persistent buffers a dataflow block declares get their values
    on the CPU (no file holds them; place_computed_buffers moves them where the model goes).
    """
    return _MetaBuild(computed_buffers)


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


def fill_buffers(
    model: nn.Module,
    rebuild: Callable[[], nn.Module],
    keys: Sequence[str],
    *,
    device: torch.device | Callable[[str], torch.device] | None = None,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Give the buffers `keys` of `model` the values their constructors compute; return the keys that got none.

    The values come from `rebuild()`, a second build whose parameters go to the meta device as
    they are registered: it costs the buffers and no parameter memory. A buffer still on meta is
    replaced by the value (on `device`, or `device(key)`); one with storage (a sharded model's,
    after to_empty) is copied into. A lazy layer's buffer with no value of the same shape is
    left alone: its own reset_parameters gave it one.
    """
    if not keys:
        return []
    with parameters_on_meta():
        computed = dict(rebuild().named_buffers(remove_duplicate=False))
    missing = []
    for key in keys:
        owner, name = _owner(model, key)
        value, current = computed.get(key), owner._buffers[name]
        if value is None or current is None or isinstance(value, UninitializedBuffer) or value.shape != current.shape:
            if not hasattr(owner, "reset_parameters"):
                missing.append(key)
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        if current.is_meta:
            where = device_for(device, key)
            owner._buffers[name] = value.to(where) if where is not None else value
        else:
            with torch.no_grad():
                current.copy_(value)
    return missing


def place_computed_buffers(
    model: nn.Module,
    keys: Sequence[str],
    *,
    device: torch.device | Callable[[str], torch.device] | None = None,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Move the buffers `keys` that have values (computed at build) to `device` (or `device(key)`) and `dtype`.

    Returns the keys left on meta: fill_buffers computes those by a second build.
    """
    left = []
    for key in keys:
        owner, name = _owner(model, key)
        value = owner._buffers[name]
        if value is None or value.is_meta:
            left.append(key)
            continue
        owner._buffers[name] = value.to(
            device=device_for(device, key), dtype=dtype if dtype is not None and value.is_floating_point() else None
        )
    return left


def device_for(
    device: torch.device | str | Callable[[str], torch.device] | None, key: str
) -> torch.device | str | None:
    """Where the tensor `key` goes: `device`, or `device(key)` for a device map's placement."""
    return device(key) if callable(device) else device


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The module holding the tensor `key`, and its name there (a child may be named like an attribute)."""
    prefix, _, name = key.rpartition(".")
    return names.submodule(model, prefix), name


def buffers_no_file_holds(model: nn.Module) -> list[str]:
    """Keys of the buffers a state dict leaves out (non-persistent ones): a load must compute them."""
    stored = set(model.state_dict(keep_vars=True))
    return [key for key, _ in model.named_buffers(remove_duplicate=False) if key not in stored]
