"""`init` rules: glob patterns over parameter names → init functions, now or after materialisation.

A rule that matches a lazy (uninitialised) parameter is deferred to the owning layer and runs
right after that layer gets its shape, whether by zoo.materialize or torch's first forward.

A rule that cannot run (xavier_uniform on a 1-D bias, std = -1, a missing argument) is a
SpecError naming the rule's file:line. `zoo check` finds it without building: it constructs the
model on the meta device, where `apply` tries each rule on the parameter's real shape instead of
running it (and on a small CPU copy, whose kernels also check values).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from zoo._errors import SpecError, meta_limit
from zoo._language.signatures import describe_type, fits, type_hints


@dataclass(frozen=True)
class BoundRule:
    """An init rule with its function resolved."""

    pattern: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    on: tuple[str, ...] = ()  # only parameters of blocks of these types (or their subclasses)
    where: str = ""  # file:line: path, for the error when the rule matches nothing or cannot run
    name: str = ""  # the function's name as the rule wrote it

    def selects(self, name: str, owner: nn.Module) -> bool:
        """Whether the rule applies to parameter `name` (relative to the rule's block) of `owner`."""
        if not fnmatch.fnmatchcase(name, self.pattern):
            return False
        return not self.on or any(cls.__name__ in self.on for cls in type(owner).__mro__)


_DEFERRED = "_zoo_deferred_init"  # attribute on a layer: [(param name, fn, kwargs)]


def apply(module: nn.Module, rules: Iterable[BoundRule]) -> None:
    """Run each rule, in order, on the parameters of `module` whose names match (later wins)."""
    rules = list(rules)
    if not rules:
        return
    owners = {}
    for owner_name, owner in module.named_modules(remove_duplicate=False):
        for param_name, _ in owner.named_parameters(recurse=False, remove_duplicate=False):
            owners[f"{owner_name}.{param_name}" if owner_name else param_name] = (owner, param_name)
    used = [False] * len(rules)
    for name, (owner, param_name) in owners.items():
        for index, rule in enumerate(rules):
            if rule.selects(name, owner):
                used[index] = True
                param = owner._parameters[param_name]  # not getattr: a parameter may be named `forward`
                if isinstance(param, UninitializedParameter):
                    check_rule(rule, name, None)  # what can be known before the shape: arguments and their types
                    _defer(owner, param_name, rule)
                elif param.device.type == "meta":
                    check_rule(rule, name, tuple(param.shape), param.dtype)
                else:
                    _run(rule, name, param)
                    _keep_padding_row(owner, param_name)
    for rule, hit in zip(rules, used, strict=True):
        if not hit:
            on = f" on {' or '.join(rule.on)} blocks" if rule.on else ""
            near = difflib.get_close_matches(rule.pattern, list(owners), n=3, cutoff=0.5) or list(owners)[:3]
            raise SpecError(
                f"{rule.where}: init rule '{rule.pattern}'{on} matches no parameter; a misspelt glob would "
                f"silently leave the default initialisation. Nearest parameter names: {', '.join(near) or '(none)'}."
            )


def _keep_padding_row(owner: nn.Module, param_name: str) -> None:
    """An Embedding's padding row stays zero under any init rule, as its own reset_parameters and
    transformers' _init_weights keep it (its gradient is zero too, so a nonzero row would stay)."""
    if isinstance(owner, nn.Embedding) and param_name == "weight" and owner.padding_idx is not None:
        with torch.no_grad():
            owner.weight[owner.padding_idx].zero_()


def _defer(owner: nn.Module, param_name: str, rule: BoundRule) -> None:
    pending = owner.__dict__.setdefault(_DEFERRED, [])
    if not pending:
        # Registered after the lazy layer's own shape hook, so it runs once shapes are known.
        owner.__dict__["_zoo_deferred_handle"] = owner.register_forward_pre_hook(_run_deferred_hook)
    pending.append((param_name, rule))


def deferred(module: nn.Module) -> list[tuple[str, BoundRule]] | None:
    """The rules waiting for `module`'s lazy parameters to get their shapes (the list itself), or None."""
    pending: list[tuple[str, BoundRule]] | None = module.__dict__.get(_DEFERRED)
    return pending


def _run_deferred_hook(owner: nn.Module, _inputs: Any) -> None:
    run_deferred(owner)


def run_deferred(module: nn.Module) -> None:
    """Apply the deferred rules of every layer under `module` whose parameters now have shapes."""
    for owner in module.modules():
        pending = owner.__dict__.get(_DEFERRED)
        if not pending:
            continue
        if any(isinstance(owner._parameters[name], UninitializedParameter) for name, _ in pending):
            continue
        for name, rule in pending:
            param = owner._parameters[name]
            assert param is not None  # a pending rule's parameter is registered
            _run(rule, name, param)
        del owner.__dict__[_DEFERRED]
        owner.__dict__.pop("_zoo_deferred_handle").remove()


# --- rules that cannot run --------------------------------------------------------------------

_CPU_TRY_LIMIT = 1 << 16  # elements: a CPU copy this small costs nothing and runs the value checks too


def check_rule(rule: BoundRule, param: str, shape: tuple[int, ...] | None, dtype: torch.dtype | None = None) -> None:
    """Raise SpecError if `rule` cannot run on the parameter `param` of `shape` (None: not known yet).

    Without a shape, only the arguments are checked: that they bind to the function's
    signature and fit its annotations. With one, the function also runs on a meta tensor of
    that shape (shape and rank checks), then on a CPU tensor when that is small (value checks
    that only real kernels make), with the random state restored afterwards.
    """
    signature = _signature(rule.fn)
    if signature is not None:
        try:
            signature.bind(torch.empty(0, device="meta"), **rule.kwargs)
        except TypeError as err:
            raise _cannot(rule, param, f"{err}") from None
        hints = type_hints(rule.fn)
        for key, value in rule.kwargs.items():
            if key in hints and fits(value, hints[key]) is False:
                raise _cannot(
                    rule, param, f"`{key}` must be {describe_type(hints[key])}, got {type(value).__name__} {value!r}"
                )
    if shape is None:
        return
    dtype = dtype or torch.get_default_dtype()
    small = math.prod(shape) <= _CPU_TRY_LIMIT
    try:
        _try(rule, torch.empty(shape, dtype=dtype, device="meta"))
    except Exception as err:
        if not meta_limit(err):
            raise _cannot(rule, param, f"{type(err).__name__}: {err}", shape) from None
        if not small:
            return  # meta cannot run it and a real tensor that large costs too much: the build will tell
    if small:
        with torch.random.fork_rng(devices=[]):
            try:
                _try(rule, torch.empty(shape, dtype=dtype, device="cpu"))  # explicit: a meta default may be set
            except Exception as err:
                raise _cannot(rule, param, f"{type(err).__name__}: {err}", shape) from None


def _run(rule: BoundRule, param: str, tensor: torch.Tensor) -> None:
    check_rule(rule, param, None)  # the same message for a wrong argument as zoo check gives
    try:
        _try(rule, tensor)
    except Exception as err:
        raise _cannot(rule, param, f"{type(err).__name__}: {err}", tuple(tensor.shape)) from err


def _try(rule: BoundRule, tensor: torch.Tensor) -> None:
    with torch.no_grad():
        rule.fn(tensor, **rule.kwargs)


def _cannot(rule: BoundRule, param: str, why: str, shape: tuple[int, ...] | None = None) -> SpecError:
    at = f"{rule.where}: " if rule.where else ""
    fn = rule.name or getattr(rule.fn, "__name__", "the init function")
    of = f"'{param}' of shape {list(shape)}" if shape is not None else f"'{param}'"
    return SpecError(f"{at}{fn} cannot initialise {of}: {why}")


@functools.cache  # rules run once per matching parameter; a function's signature never changes
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None
