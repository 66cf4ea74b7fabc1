"""`zoo check`: every declaration resolved, built on the meta device, and run on its declared input there.

The promise: an entry with a declared `input` that `zoo check` passes is built by `zoo build`.
So check does what the build does, at no cost in memory:

1. resolve (zoo.resolve): every problem knowable from the text and the blocks' signatures;
2. construct the tree on the meta device, which runs each constructor's own argument checks
   (`Linear(4, -5)`), the ties (shapes, a target that is a buffer), and every init rule on the
   shapes of the parameters it matches; a tensor larger than this machine's memory is refused;
3. push the declared `input` through the model: a Linear(20, 30) before a Linear(31, 5)
   is reported with both layers' file:line, an op or a tuple item with its own.

A small model (SMALL_BYTES of parameters and buffers, a declared input of at most SMALL_INPUT
elements) is built again on the CPU for step 3 and given a random input as zoo build's shape pass
is: its C++ kernels answer in microseconds, where meta's shape functions are Python that costs
torch's first-use imports (torch._dynamo and sympy, about a second and a half of each `zoo
check`), and real data checks what meta cannot (a loop on a value). A larger model runs on meta;
a block that cannot run there at all cannot be judged without data: it passes here and is
checked by the real shape pass at build.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from zoo._build import builder, devices, lazy
from zoo._build.graph import DataflowModule, StepError, run_steps
from zoo._errors import BuildError, CycleError, DeviceError, ShapeError, ZooError, meta_limit
from zoo._language.registry import Provider, Registry
from zoo._language.resolve import Graph, Resolution, graphs, resolve, too_deep


def check_registry(
    registry: Registry, origins: set[str] | None = None, warnings: list[str] | None = None
) -> list[ZooError]:
    """Check every declared entry (only those from `origins`, when given) and every clash.

    Advice that is not an error (an argument declared but never used) is appended to `warnings`.
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
        if warnings is not None:
            warnings.extend(w for w in resolution.warnings if w not in warnings)
        if not resolution.errors:
            errors.extend(check_resolved(resolution, chosen, name))
    unique: dict[str, ZooError] = {}  # a cycle a -> b -> a is found from a and from b: report it once
    for problem in errors:
        unique.setdefault(_cycle_key(problem), problem)
    return list(unique.values())


SMALL_BYTES = 16 * 2**20  # parameters and buffers of a model whose check forward runs on the CPU
SMALL_INPUT = 2**20  # elements of its declared input


def check_resolved(resolution: Resolution, provider: Provider, name: str) -> list[ZooError]:
    """Steps 2 and 3 of the module docstring for a resolution without errors."""
    assert resolution.root is not None
    made: dict[int, nn.Module] = {}  # tree node → its module, to run dataflow blocks step by step
    try:
        with torch.device("meta"):
            model = builder.construct(resolution.root, made)
    except RecursionError:  # building takes a few more frames per level than resolving
        return [too_deep(provider)]
    except BuildError as err:
        return [] if meta_limit(err.__cause__ or err) else [err]  # a constructor that needs real tensors: build says
    except ZooError as err:  # an init rule that cannot run on its parameter's shape
        return [err]
    problems: list[ZooError] = [*_too_large(model, name)]
    if resolution.input_shape is None or problems:
        return problems
    shape = resolution.input_shape
    dtype = getattr(torch, resolution.input_dtype) if resolution.input_dtype else None
    if _is_small(model, shape):
        made = {}
        try:
            with torch.device("cpu"):
                model = builder.construct(resolution.root, made)
        except RecursionError:
            return [too_deep(provider)]
        except ZooError as err:
            return [err]
        generator = torch.Generator().manual_seed(0)
        if dtype is not None and not dtype.is_floating_point:  # token ids, as zoo build's shape pass draws them
            x = torch.randint(0, resolution.input_high or 2, shape, dtype=dtype, generator=generator)
        else:
            x = torch.rand(shape, dtype=dtype, generator=generator)
    else:
        x = torch.empty(shape, dtype=dtype, device="meta")
    mismatch = run_watched(model, x, name, {id(made[id(g)]): g for g in graphs(resolution.root)})
    return [mismatch] if mismatch is not None else []


def _is_small(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether the check forward runs on the CPU (the module docstring): few bytes, a small input, nothing lazy."""
    if math.prod(input_shape) > SMALL_INPUT:
        return False
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        if lazy.is_pending(tensor):  # its size is known only after the forward
            return False
        total += tensor.numel() * tensor.element_size()
    return total <= SMALL_BYTES


def _too_large(model: nn.Module, name: str) -> Iterator[DeviceError]:
    """Every tensor no memory here can hold (zoo build allocates on the CPU): said before anything allocates."""
    total = devices.host_memory()[0]
    if total is None:
        return
    owners = {id(t): (path, module) for path, module in model.named_modules() for t in module._parameters.values()}
    owners.update({id(t): (path, module) for path, module in model.named_modules() for t in module._buffers.values()})
    seen: set[int] = set()
    for key, tensor in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        if id(tensor) in seen or lazy.is_pending(tensor):
            continue
        seen.add(id(tensor))
        needed = tensor.numel() * tensor.element_size()
        if needed > total:
            path, owner = owners.get(id(tensor), ("", model))
            local = key[len(path) + 1 :] if path else key
            local = f"params.{local}" if isinstance(owner, DataflowModule) and local in owner._parameters else local
            yield DeviceError(
                f"{_where(owner, path, name)} -> {local}: a tensor of shape {tuple(tensor.shape)} ({tensor.dtype}) "
                f"needs {needed:,} bytes ({devices.human_bytes(needed)}), more than this machine's memory "
                f"({devices.human_bytes(total)}) in all, so zoo build cannot allocate it; use a smaller shape"
            )


def _cycle_key(err: ZooError) -> str:
    if not isinstance(err, CycleError):
        return str(err)
    chain = str(err).rsplit("loop: ", 1)[-1].rstrip(".").split(" -> ")[:-1]
    return "cycle:" + ",".join(sorted(chain))


def run_watched(
    model: nn.Module, x: torch.Tensor, name: str, graphs: dict[int, Graph] | None = None
) -> ShapeError | None:
    """One watched forward (on meta tensors or small real ones); a shape mismatch names the layer and the one before it.

    On meta, an error that says only that meta tensors have no data is no mismatch.

    `graphs` maps dataflow modules (by id) to their trees: those run step by step, so a failing op or
    a missing tuple item is named at its own line.
    """
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
    stepped = [m for m in model.modules() if id(m) in (graphs or {})]
    for module in stepped:
        assert graphs is not None
        module.__dict__["forward"] = functools.partial(_stepwise, graphs[id(module)], module)
    try:
        with torch.no_grad():
            model(x)
        return None
    except StepError as err:  # an op or an item of a dataflow block: its own line says it
        cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
        if x.is_meta and meta_limit(cause):
            return None
        return ShapeError(f"{err.where}: with the declared input {list(x.shape)}, {err.message}")
    except Exception as err:  # a user's declaration failing inside torch: reported, never raised raw
        if x.is_meta and meta_limit(err):
            return None
        failed, module, inputs = running[-1] if running else ("", model, _shapes((x,)))
        message = (
            f"{_where(module, failed, name)}: with the declared input {list(x.shape)}, {type(module).__name__} "
            f"got {inputs} and raised: {str(err).splitlines()[0].rstrip('.') if str(err) else type(err).__name__}"
        )
        if done:
            before, previous, shape = done[-1]
            message += f". It follows {_where(previous, before, name)} ({type(previous).__name__}), which gave {shape}."
        return ShapeError(message)
    finally:
        for handle in handles:
            handle.remove()
        for module in stepped:
            module.__dict__.pop("forward", None)


def _stepwise(graph: Graph, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return run_steps(graph, module, args, kwargs)


def _where(module: nn.Module, name: str, entry: str) -> str:
    where = module.__dict__.get("zoo_where")
    return str(where) if where else f"{entry} -> {name or '(model)'}"


def _shapes(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return ", ".join(_shapes(v) for v in value)
    return type(value).__name__
