"""`init` rules: glob patterns over parameter names → init functions, now or after materialisation.

A rule that matches a lazy (uninitialised) parameter is deferred to the owning layer and runs
right after that layer gets its shape, whether by zoo.materialize or torch's first forward.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from zoo.errors import SpecError


@dataclass(frozen=True)
class BoundRule:
    """An init rule with its function resolved."""

    pattern: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    on: tuple[str, ...] = ()  # only parameters of blocks of these types (or their subclasses)
    where: str = ""  # file:line: path, for the error when the rule matches nothing

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
                param = getattr(owner, param_name)
                if isinstance(param, UninitializedParameter):
                    _defer(owner, param_name, rule)
                else:
                    with torch.no_grad():
                        rule.fn(param, **rule.kwargs)
    for rule, hit in zip(rules, used, strict=True):
        if not hit:
            on = f" on {' or '.join(rule.on)} blocks" if rule.on else ""
            near = difflib.get_close_matches(rule.pattern, list(owners), n=3, cutoff=0.5) or list(owners)[:3]
            raise SpecError(
                f"{rule.where}: init rule '{rule.pattern}'{on} matches no parameter; a misspelt glob would "
                f"silently leave the default initialisation. Nearest parameter names: {', '.join(near) or '(none)'}."
            )


def _defer(owner: nn.Module, param_name: str, rule: BoundRule) -> None:
    pending = owner.__dict__.setdefault(_DEFERRED, [])
    if not pending:
        # Registered after the lazy layer's own shape hook, so it runs once shapes are known.
        owner.__dict__["_zoo_deferred_handle"] = owner.register_forward_pre_hook(_run_deferred_hook)
    pending.append((param_name, rule))


def _run_deferred_hook(owner: nn.Module, _inputs: Any) -> None:
    run_deferred(owner)


def run_deferred(module: nn.Module) -> None:
    """Apply the deferred rules of every layer under `module` whose parameters now have shapes."""
    for owner in module.modules():
        pending = owner.__dict__.get(_DEFERRED)
        if not pending:
            continue
        if any(isinstance(getattr(owner, name), UninitializedParameter) for name, _ in pending):
            continue
        with torch.no_grad():
            for name, rule in pending:
                rule.fn(getattr(owner, name), **rule.kwargs)
        del owner.__dict__[_DEFERRED]
        owner.__dict__.pop("_zoo_deferred_handle").remove()
