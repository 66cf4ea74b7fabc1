"""`zoo check`: every declaration resolved, and run on its declared input on the meta device.

Resolving (zoo._language.resolve) finds every problem knowable from the text and the blocks' signatures;
a declared `input` is then pushed through a model built on the meta device, so a Linear(20, 30)
followed by a Linear(31, 5) is reported with both layers' file:line, at no cost in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from zoo._build import builder, initrules
from zoo._errors import CycleError, ShapeError, ZooError, meta_limit
from zoo._language.registry import Provider, Registry
from zoo._language.resolve import Resolution, resolve


def check_registry(
    registry: Registry, origins: set[str] | None = None, warnings: list[str] | None = None
) -> list[ZooError]:
    """Check every declared entry (only those from `origins`, when given) and every clash.

    Entries that declare an `input` are also run on it on the meta device. Advice that is not an
    error (an argument declared but never used) is appended to `warnings`.
    """
    errors: list[ZooError] = []
    for name in registry.names():
        providers = registry.providers(name)
        if origins is not None and not any(p.origin.dist in origins for p in providers):
            continue
        try:
            chosen = registry.resolve(name)
        except ZooError as err:
            errors.append(err)
            continue
        if chosen.entry is None:
            continue
        resolution = resolve(registry, chosen, {}, name)
        errors.extend(resolution.errors)
        if not resolution.errors and resolution.root is not None:  # init rules tried on their parameters' shapes (meta)
            errors.extend(initrules.check_on_meta(partial(builder.construct, resolution.root)))
        if warnings is not None:
            warnings.extend(w for w in resolution.warnings if w not in warnings)
        if not resolution.errors and resolution.input_shape is not None:
            mismatch = check_input(resolution, name)
            if mismatch is not None:
                errors.append(mismatch)
    unique: dict[str, ZooError] = {}  # a cycle a -> b -> a is found from a and from b: report it once
    for problem in errors:
        unique.setdefault(_cycle_key(problem), problem)
    return list(unique.values())


def _cycle_key(err: ZooError) -> str:
    if not isinstance(err, CycleError):
        return str(err)
    chain = str(err).rsplit("loop: ", 1)[-1].rstrip(".").split(" -> ")[:-1]
    return "cycle:" + ",".join(sorted(chain))


def check_input(resolution: Resolution, name: str) -> ShapeError | None:
    """Run the declared input through the model built on the meta device; None when it fits.

    A block that cannot run on meta at all (a loop on a tensor's value) cannot be judged
    without data, so it passes here and is checked by the real shape pass at build.
    """
    assert resolution.root is not None and resolution.input_shape is not None
    with torch.device("meta"):
        try:
            model = builder.construct(resolution.root)
        except (ZooError, RecursionError):
            return None  # a constructor that cannot run on meta: the real build reports it
        dtype = getattr(torch, resolution.input_dtype) if resolution.input_dtype else None
        x = torch.empty(resolution.input_shape, dtype=dtype)
    return run_on_meta(model, x, name)


def run_on_meta(model: nn.Module, x: torch.Tensor, name: str) -> ShapeError | None:
    """One watched forward on meta tensors; a shape mismatch names the layer and the one before it."""
    running: list[tuple[str, nn.Module, str]] = []
    done: list[tuple[str, nn.Module, str]] = []
    handles = []
    for child_name, module in model.named_modules():

        def enter(module: nn.Module, args: tuple[Any, ...], child_name: str = child_name) -> None:
            running.append((child_name, module, _shapes(args)))

        def leave(module: nn.Module, _args: Any, output: Any) -> None:
            entered = running.pop()
            if not any(True for _ in module.children()):
                done.append((entered[0], module, _shapes(output)))

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad():
            model(x)
        return None
    except Exception as err:  # a user's declaration failing inside torch: reported, never raised raw
        if meta_limit(err):
            return None
        failed, module, inputs = running[-1] if running else ("", model, _shapes((x,)))
        message = (
            f"{_where(module, failed, name)}: with the declared input {list(x.shape)}, {type(module).__name__} "
            f"got {inputs} and raised: {str(err).splitlines()[0]}"
        )
        if done:
            before, previous, shape = done[-1]
            message += f". It follows {_where(previous, before, name)} ({type(previous).__name__}), which gave {shape}."
        return ShapeError(message)
    finally:
        for handle in handles:
            handle.remove()


def _where(module: nn.Module, name: str, entry: str) -> str:
    where = module.__dict__.get("zoo_where")
    return str(where) if where else f"{entry} -> {name or '(model)'}"


def _shapes(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return ", ".join(_shapes(v) for v in value)
    return type(value).__name__
