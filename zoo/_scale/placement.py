"""Placement: plan which device each block of a model lives on, and dispatch it there.

- `plan`: module → device and bytes per device, from shapes alone (a model built on the meta
  device costs no memory), so it runs anywhere with made-up budgets.
- `dispatch`: moves each block to its planned device and hooks it so that its inputs follow.

Planning rules (tests hold the code to each):

- The unit of placement is a *block*: a leaf module, or a module kept whole. Only plain
  containers (nn.Sequential, nn.ModuleList, nn.ModuleDict, zoo's MySequential) are split; any
  other module with children stays whole, because its forward may combine what its children
  return (a residual `x + f(x)` fails when `f` sits on another device). `no_split=` adds class
  names to keep whole.
- Blocks are placed in registration order, which for containers is forward order. A device is
  filled before the next one is used and never revisited, so activations cross each device
  boundary once. Accelerators come first (cuda:0, cuda:1, …, mps), the CPU last.
- A tensor shared by several blocks is counted once and lives with its first user; every block
  sharing it goes to that device too (a tensor lives on one device). A module used twice (d2l's
  tied layers) is one block; its later paths map to the same device.
- Blocks without tensors stay on the device in use.
- Activations: when a forward on the meta device at `input_shape` works (zero memory, zero
  FLOPs), each device keeps room for the largest input + output of a block placed on it (one
  inference forward; training keeps every activation, so pass `reserve=` for that). When it
  cannot run (data-dependent control flow, no input shape), activations are not counted and
  the plan says so in its note.
- "balanced" fills each accelerator until it holds about total / n, then moves on, so two
  accelerators differ by at most one block; the CPU takes what the accelerators cannot hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from zoo._build import lazy, ties
from zoo._build.devices import (
    DeviceArg,
    MemoryArg,
    human_bytes,
    inventory,
    parse_device,
    parse_size,
    resolve,
    to_device,
)
from zoo._errors import DeviceError, NotMaterializedError, did_you_mean, listing

# Containers whose forward only chains (or does not call) their children: safe to split.
# Default budget of an accelerator: its free memory less a margin for the CUDA context, the
# caching allocator's fragmentation and library workspaces, which the plan cannot see.
_ACCELERATOR_SHARE = 0.9

# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Placement:
    """One block of a plan and the device it goes to."""

    name: str  # module path; "" is the whole model
    type: str  # class name
    device: str  # "cuda:0", "cpu", …
    bytes: int  # its parameters and buffers, less tensors an earlier block already holds
    whole: bool  # a module with children kept whole by the no-split rule
    shares_with: str = ""  # the earlier block whose module or tensors this one uses, if any
    activation_bytes: int | None = None  # input + output of one forward at the plan's input shape


@dataclass(frozen=True)
class Plan:
    """Where each block of a model goes; `str(plan)` is a table. Made by `zoo.plan`."""

    model: str  # the entry name or the model's class
    mode: str  # "auto", "balanced" or "explicit"
    placements: tuple[Placement, ...]  # in registration (forward) order
    budgets: dict[str, int | None]  # max_memory per device in fill order; None: no limit given
    used: dict[str, int]  # bytes of tensors per device
    reserve: dict[str, int]  # bytes kept free per device for activations
    dtype: torch.dtype | None  # floating tensors counted (and dispatched) in this dtype
    input_shape: tuple[int, ...] | None
    note: str = ""  # what the plan could not count

    @property
    def devices(self) -> list[str]:
        """The devices that hold at least one block, in fill order."""
        held = {p.device for p in self.placements}
        return [d for d in self.budgets if d in held] + sorted(held - set(self.budgets))

    @property
    def total_bytes(self) -> int:
        """Bytes of every parameter and buffer, shared ones once."""
        return sum(self.used.values())

    @cached_property
    def _lookup(self) -> dict[str, str]:
        return {p.name: p.device for p in self.placements}

    def device_for(self, key: str) -> torch.device:
        """The device of the tensor `key` (a state_dict key such as "0.net.0.weight").

        Raises:
            DeviceError: no block of the plan holds `key`.
        """
        parts = key.split(".")
        for cut in range(len(parts), -1, -1):
            device = self._lookup.get(".".join(parts[:cut]))
            if device is not None:
                return torch.device(device)
        names = [p.name for p in self.placements]
        raise DeviceError(
            f"no block of the plan for '{self.model}' holds '{key}'; blocks: {listing(names)}."
            f"{did_you_mean(key, names)}"
        )

    def device_map(self) -> dict[str, str]:
        """{module path: device}: give it back as `device_map=` to get this plan again."""
        return {p.name: p.device for p in self.placements}

    def remap(self, devices: Mapping[str, str | int | torch.device]) -> Plan:
        """The same placement with devices renamed, e.g. {"cuda:1": "cpu"} to run a plan made
        for other hardware here. Budgets are dropped: they were the other hardware's."""
        renamed = {str(parse_device(k)): str(parse_device(v)) for k, v in devices.items()}
        unknown = sorted(set(renamed) - set(self.used))
        if unknown:
            raise DeviceError(
                f"the plan for '{self.model}' has no device {listing(unknown)}; it uses {listing(self.used)}."
                f"{did_you_mean(unknown[0], self.used)}"
            )
        placements = tuple(replace(p, device=renamed.get(p.device, p.device)) for p in self.placements)
        order = list(dict.fromkeys(renamed.get(d, d) for d in self.budgets))
        used = {d: 0 for d in order}
        reserve = {d: 0 for d in order}
        for old, n in self.used.items():
            used[renamed.get(old, old)] += n
            reserve[renamed.get(old, old)] = max(reserve[renamed.get(old, old)], self.reserve.get(old, 0))
        note = "; ".join(filter(None, [self.note, "remapped " + ", ".join(f"{k} → {v}" for k, v in renamed.items())]))
        return replace(self, placements=placements, budgets=dict.fromkeys(order), used=used, reserve=reserve, note=note)

    def __str__(self) -> str:
        dtype = f", {str(self.dtype).removeprefix('torch.')}" if self.dtype is not None else ""
        shape = f", activations for input {self.input_shape}" if self.input_shape and any(self.reserve.values()) else ""
        lines = [f"Plan for '{self.model}' ({self.mode}{dtype}{shape})"]
        rows = [("Module", "Type", "Device", "Bytes", "")]
        for p in self.placements:
            remark = f"shares {p.shares_with or '(model)'}" if p.shares_with else "whole" if p.whole else ""
            rows.append((p.name or "(model)", p.type, p.device, human_bytes(p.bytes), remark))
        lines += _table(rows)
        lines.append("")
        rows = [("Device", "Weights", "Activations", "Budget", "Free")]
        for device in self.devices:
            budget = self.budgets.get(device)
            used, reserve = self.used.get(device, 0), self.reserve.get(device, 0)
            free = "" if budget is None else human_bytes(budget - used - reserve)
            rows.append(
                (device, human_bytes(used), human_bytes(reserve), "-" if budget is None else human_bytes(budget), free)
            )
        lines += _table(rows)
        lines.append(
            f"Total: {human_bytes(self.total_bytes)} in {len(self.placements)} blocks on {len(self.devices)} device(s)"
        )
        if self.note:
            lines.append(f"Note: {self.note}")
        return "\n".join(lines)


def plan(
    model: nn.Module,
    *,
    device_map: str | Mapping[str, DeviceArg] = "auto",
    max_memory: MemoryArg = None,
    dtype: torch.dtype | None = None,
    no_split: Iterable[str] = (),
    input_shape: Sequence[int] | None = None,
    reserve: int | str | None = None,
) -> Plan:
    """Plan which device each block of `model` lives on, without allocating any weights (zoo.plan)."""
    info = getattr(model, "zoo_info", None)
    label = info.name if info is not None else type(model).__name__
    if lazy.is_lazy(model):
        said = f"'{label}' has lazy layers whose sizes are unknown; pass"
        raise NotMaterializedError(
            f"{said} input_shape= (e.g. input_shape=(2, 20)).", cli=f"{said} --input-shape (e.g. --input-shape 2,20)."
        )
    shape = tuple(input_shape) if input_shape is not None else getattr(info, "input_shape", None)
    blocks = _blocks(model, _check_no_split(model, no_split, label))
    _size_blocks(blocks, dtype)
    note = ""
    if reserve is None:
        note = _trace_activations(model, blocks, shape, dtype)
    else:
        fixed = _bytes(reserve, "reserve")
        for b in blocks:
            b.activation_bytes = fixed
    if isinstance(device_map, str):
        mode = device_map.strip().lower()
        if mode not in ("auto", "balanced"):
            raise DeviceError(
                f"device_map='{device_map}' is not a strategy; use 'auto', 'balanced' or a dict "
                f"{{module path: device}}.{did_you_mean(device_map, ['auto', 'balanced'])}"
            )
        budgets = _budgets(max_memory)
        used, reserved = _fill(label, blocks, budgets, balanced=mode == "balanced")
    else:
        mode = "explicit"
        budgets = _budgets(max_memory) if max_memory is not None else {}
        used, reserved = _explicit(label, model, blocks, device_map, budgets)
        budgets = {**budgets, **{d: None for d in used if d not in budgets}}
    placements = tuple(
        Placement(b.name, b.type, b.device, b.bytes, b.whole, b.shares_with, b.activation_bytes) for b in blocks
    )
    return Plan(label, mode, placements, budgets, used, reserved, dtype, shape, note)


@dataclass(eq=False)
class _Block:
    """A block while planning: mutable, unlike the Placement it becomes."""

    name: str
    module: nn.Module
    whole: bool
    alias_of: int | None = None  # index of the block holding the same module object
    group: int = 0  # blocks sharing tensors share a group (union-find root)
    bytes: int = 0
    shares_with: str = ""
    activation_bytes: int | None = None
    device: str = ""

    @property
    def type(self) -> str:
        return type(self.module).__name__


def _check_no_split(model: nn.Module, names: Iterable[str], label: str) -> frozenset[str]:
    if isinstance(names, str):
        names = [names]
    wanted = frozenset(n.__name__ if isinstance(n, type) else n for n in names)
    present = {type(m).__name__ for m in model.modules()}
    for name in sorted(wanted - present):
        raise DeviceError(
            f"no_split names '{name}', but '{label}' has no module of that class; it has {listing(present)}."
            f"{did_you_mean(name, present)}"
        )
    return wanted


def _splittable(module: nn.Module, no_split: frozenset[str]) -> bool:
    name = type(module).__name__
    if name in no_split or any(t is not None for t in (*module._parameters.values(), *module._buffers.values())):
        return False  # tensors of its own are used by its forward, next to its children
    # Containers whose children run one after another (a block that chains them says so, as MySequential does).
    return type(module) in (nn.Sequential, nn.ModuleList, nn.ModuleDict) or getattr(module, "chains_children", False)


def _blocks(model: nn.Module, no_split: frozenset[str]) -> list[_Block]:
    """The model cut into blocks, in registration order; a module seen twice is an alias."""
    blocks: list[_Block] = []
    first: dict[int, int] = {}

    def visit(name: str, module: nn.Module) -> None:
        children = [(k, m) for k, m in module._modules.items() if m is not None]  # keeps repeats, unlike named_children
        if children and _splittable(module, no_split):
            for key, child in children:
                visit(f"{name}.{key}" if name else key, child)
            return
        block = _Block(name, module, whole=bool(children))
        if id(module) in first:
            block.alias_of = first[id(module)]
            block.shares_with = blocks[block.alias_of].name
        else:
            first[id(module)] = len(blocks)
        blocks.append(block)

    visit("", model)
    return blocks


def _size_blocks(blocks: list[_Block], dtype: torch.dtype | None) -> None:
    """Bytes per block, each tensor counted at its first user; blocks sharing tensors get one group."""
    parent = list(range(len(blocks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for i, block in enumerate(blocks):
        if block.alias_of is not None:
            parent[root(i)] = root(block.alias_of)
            continue
        tensors = {id(t): t for t in (*block.module.parameters(), *block.module.buffers())}
        for key, tensor in tensors.items():
            if key in owner:
                if not block.shares_with:
                    block.shares_with = blocks[owner[key]].name
                parent[root(i)] = root(owner[key])
            else:
                owner[key] = i
                block.bytes += _tensor_bytes(tensor, dtype)
    for i, block in enumerate(blocks):
        block.group = root(i)


def _tensor_bytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
    if dtype is not None and tensor.is_floating_point():
        return tensor.numel() * dtype.itemsize  # as nn.Module.to(dtype) does: floating tensors only
    return tensor.numel() * tensor.element_size()


def _trace_activations(
    model: nn.Module, blocks: list[_Block], shape: tuple[int, ...] | None, dtype: torch.dtype | None
) -> str:
    """Fill each block's input + output bytes from one forward on the meta device; say what failed."""
    if shape is None:
        return "activations not counted: no input shape (pass input_shape= or reserve=)"
    found: dict[int, int] = {}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        found[id(module)] = max(found.get(id(module), 0), _nested_bytes(inputs) + _nested_bytes(output))

    handles = [b.module.register_forward_hook(record) for b in blocks if b.alias_of is None]
    try:
        with _on_meta(model, dtype), torch.device("meta"), torch.no_grad():
            model(torch.zeros(shape, dtype=dtype or torch.float32))
    except Exception as err:  # any user forward may fail on meta (`if x.sum() > 0`); the plan goes on without
        first_line = str(err).strip().split("\n")[0]
        return f"activations not counted: a forward on the meta device failed ({type(err).__name__}: {first_line})"
    finally:
        for handle in handles:
            handle.remove()
    for block in blocks:
        block.activation_bytes = found.get(id(block.module), 0)
    return ""


@contextmanager
def _on_meta(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Swap every parameter and buffer for a shape-only twin, and put the originals back after.

    torch.func.functional_call would do this, but it restores a module reached by two paths
    (d2l's tied layers) with the twin instead of the original.
    """
    twins: dict[int, torch.Tensor] = {}  # one twin per tensor, so tied tensors stay tied
    saved: list[tuple[dict[str, Any], str, torch.Tensor]] = []

    def twin(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in twins:
            meta = torch.empty_like(
                t, device="meta", dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype
            )
            twins[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
        return twins[id(t)]

    try:
        for module in model.modules():
            tables: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for table in tables:
                for name, tensor in table.items():
                    if tensor is not None:
                        saved.append((table, name, tensor))
                        table[name] = twin(tensor)
        yield
    finally:
        for table, name, tensor in reversed(saved):
            table[name] = tensor


def _nested_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nested_bytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_nested_bytes(v) for v in value.values())
    return 0


def _budgets(max_memory: MemoryArg) -> dict[str, int | None]:
    """{device: bytes} in fill order: accelerators by index, the CPU last."""
    if max_memory is None:
        budgets: dict[str, int | None] = {}
        for info in inventory():
            free = info.free if info.free is not None else 0
            budgets[info.device] = free if info.device == "cpu" else int(free * _ACCELERATOR_SHARE)
        return budgets
    if not isinstance(max_memory, Mapping):
        raise DeviceError(f"max_memory must be a dict {{device: bytes}}, not {type(max_memory).__name__}.")
    parsed: dict[torch.device, int] = {}
    for key, value in max_memory.items():
        if isinstance(key, str) and key.strip().lower() == "disk":
            raise DeviceError("max_memory: offloading to 'disk' is not supported; give 'cpu' a budget instead.")
        device = parse_device(key)
        if device.type == "meta":
            raise DeviceError("max_memory: 'meta' holds no data and cannot take blocks; use 'cpu' or a GPU.")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", 0)
        if device.type in ("cpu", "mps"):
            device = torch.device(device.type)
        if device in parsed:
            raise DeviceError(f"max_memory names {device} twice (as {key!r} and another spelling).")
        parsed[device] = _bytes(value, f"max_memory[{key!r}]")
    order = sorted(parsed, key=lambda d: (d.type == "cpu", d.type, d.index or 0))
    return {str(d): parsed[d] for d in order}


def _bytes(value: int | str, where: str) -> int:
    """A budget in bytes: an int, or text such as "4GiB", "500 MB", "1.5GB" (0 leaves a device out)."""
    return parse_size(value, where, error=DeviceError, zero=True)


def _fill(
    label: str, blocks: list[_Block], budgets: dict[str, int | None], balanced: bool
) -> tuple[dict[str, int], dict[str, int]]:
    """Place groups in order, filling each device before the next; the CPU comes last."""
    order = list(budgets)
    if not order:
        raise DeviceError("max_memory is empty: give at least one device a budget, e.g. {'cpu': '8GiB'}.")
    used = dict.fromkeys(order, 0)
    reserve = dict.fromkeys(order, 0)
    groups: dict[int, list[_Block]] = {}
    for block in blocks:
        groups.setdefault(block.group, []).append(block)
    accelerators = [d for d in order if d != "cpu"]
    target = math.ceil(sum(b.bytes for b in blocks) / len(accelerators)) if balanced and accelerators else None

    def fits(device: str, need: int, act: int) -> bool:
        budget = budgets[device]
        if budget is not None and used[device] + need + max(reserve[device], act) > budget:
            return False
        # balanced: an accelerator takes blocks until it holds its share; the last one takes the rest
        return target is None or device == "cpu" or device == accelerators[-1] or used[device] < target

    cursor = 0
    for index, block in enumerate(blocks):
        if block.device:
            continue  # placed with an earlier member of its group
        members = groups[block.group]
        need = sum(b.bytes for b in members)
        act = max((b.activation_bytes or 0) for b in members)
        while cursor < len(order) and not fits(order[cursor], need, act):
            cursor += 1
        if cursor == len(order):
            raise _does_not_fit(label, blocks, index, budgets, used, reserve)
        device = order[cursor]
        used[device] += need
        reserve[device] = max(reserve[device], act)
        for member in members:
            member.device = device
    return used, reserve


def _does_not_fit(
    label: str,
    blocks: list[_Block],
    index: int,
    budgets: dict[str, int | None],
    used: dict[str, int],
    reserve: dict[str, int],
) -> DeviceError:
    block = blocks[index]
    rest = [b for b in blocks[index:] if not b.device]
    rest_bytes = sum(b.bytes for b in rest)
    rest_act = max((b.activation_bytes or 0) for b in rest)
    last = list(budgets)[-1]
    budget = budgets[last] or 0
    short = used[last] + rest_bytes + max(reserve[last], rest_act) - budget
    kind = f"{block.type}, kept whole" if block.whole else block.type
    act = f" + {human_bytes(block.activation_bytes)} of activations" if block.activation_bytes else ""
    group = sum(b.bytes for b in blocks if b.group == block.group)
    tied = f" (with the blocks sharing its tensors: {human_bytes(group)})" if group != block.bytes else ""
    per_device = ", ".join(
        f"{d} {human_bytes(used[d] + reserve[d])} of {human_bytes(budgets[d] or 0)}" for d in budgets
    )
    total_budget = sum(b or 0 for b in budgets.values())
    total_need = sum(b.bytes for b in blocks) + max((b.activation_bytes or 0) for b in blocks)
    overall = (
        f" In all, '{label}' needs {_amount(total_need)} and the budgets hold {_amount(total_budget)}:"
        f" {_amount(total_need - total_budget)} missing."
        if total_need > total_budget
        else ""
    )
    said = (
        f"'{label}' does not fit: block '{block.name or '(model)'}' ({kind}) needs {_amount(block.bytes)}{tied}{act}"
        f" and no device has room left (used of budget: {per_device}).{overall} The blocks from"
        f" '{block.name or '(model)'}' on need {_amount(rest_bytes)}: {last} is {_amount(short)} short."
    )
    return DeviceError(
        f"{said} Raise a budget in max_memory, add a device (e.g. 'cpu'), or pass a smaller dtype.",
        cli=f"{said} Raise a --max-memory budget, or add a device (e.g. --max-memory cpu=16GiB).",
    )


def _explicit(
    label: str,
    model: nn.Module,
    blocks: list[_Block],
    device_map: Mapping[str, DeviceArg],
    budgets: dict[str, int | None],
) -> tuple[dict[str, int], dict[str, int]]:
    """Place blocks by the longest matching path of `device_map`; check paths, ties and budgets."""
    if not isinstance(device_map, Mapping) or not device_map:
        raise DeviceError("device_map must be 'auto', 'balanced' or a non-empty dict {module path: device}.")
    modules = {name for name, _ in model.named_modules(remove_duplicate=False)}
    targets: dict[str, str] = {}
    for path, device in device_map.items():
        if not isinstance(path, str) or path not in modules:
            raise DeviceError(
                f"device_map: '{path}' is not a module of '{label}'.{did_you_mean(str(path), modules)}"
                f" Modules: {listing(m or '(model)' for m in modules)} ('' is the whole model)."
            )
        if device is None:
            raise DeviceError(f"device_map['{path}'] is None; name a device such as 'cpu' or 'cuda:0'.")
        parsed = parse_device(device)
        if parsed.type == "cuda" and parsed.index is None:
            parsed = torch.device("cuda", 0)
        targets[path] = str(torch.device(parsed.type) if parsed.type in ("cpu", "mps", "meta") else parsed)
        for block in blocks:
            inside = path != block.name and (not block.name or path.startswith(f"{block.name}."))
            if block.whole and inside:
                raise DeviceError(
                    f"device_map: '{path}' is inside '{block.name or '(model)'}' ({block.type}), which stays whole"
                    f" because its forward uses its children together; map '{block.name}' as one."
                )
    unmapped: list[str] = []
    for block in blocks:
        parts = block.name.split(".") if block.name else []
        cover = next(
            (".".join(parts[:cut]) for cut in range(len(parts), -1, -1) if ".".join(parts[:cut]) in targets), None
        )
        if cover is None:
            unmapped.append(block.name)
        else:
            block.device = targets[cover]
    if unmapped:
        raise DeviceError(
            f"device_map leaves {len(unmapped)} block(s) of '{label}' without a device: {listing(unmapped)}."
            " Add them, or a path above them ('' maps the whole model)."
        )
    for block in blocks:
        first = next(b for b in blocks if b.group == block.group)
        if block.device != first.device:
            raise DeviceError(
                f"device_map puts '{block.name}' on {block.device}, but it shares tensors with '{first.name}' on"
                f" {first.device}; a tensor lives on one device, so map both to the same one."
            )
    order = list(dict.fromkeys([*budgets, *(b.device for b in blocks)]))
    used = dict.fromkeys(order, 0)
    reserve = dict.fromkeys(order, 0)
    for block in blocks:
        used[block.device] += block.bytes
        reserve[block.device] = max(reserve[block.device], block.activation_bytes or 0)
    over = [
        f"{d} needs {_amount(need)} of its {_amount(budget)} budget: {_amount(need - budget)} missing"
        for d, budget in budgets.items()
        if budget is not None and (need := used[d] + reserve[d]) > budget
    ]
    if over:
        raise DeviceError(f"device_map does not fit '{label}': {'; '.join(over)}.")
    return used, reserve


# ---------------------------------------------------------------- dispatch


def dispatch(model: nn.Module, plan: Plan) -> nn.Module:
    """Move each block of `model` to its planned device and make inputs follow by themselves.

    Every block gets a forward pre-hook that moves the tensors in its arguments (nested in
    tuples, lists and dicts too) to its device: activations move only at block boundaries,
    and the model's inputs move to the first block's device. The output stays on the last
    block's device. Dispatching again replaces the earlier hooks.

    Args:
        model: the model the plan was made for, with concrete tensors.
        plan: from `zoo.plan`; `plan.remap({...})` runs a plan made for other hardware.

    Returns:
        `model`, moved in place; `model.zoo_plan` is the plan.

    Raises:
        DeviceError: the plan names a module the model lacks, or a device that is not here.
        NotMaterializedError: a tensor is still on the meta device (load the weights first).
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    targets = {}
    for placement in plan.placements:
        if placement.name not in modules:
            raise DeviceError(
                f"the plan for '{plan.model}' places '{placement.name}', which this model does not have;"
                f" make the plan from this model.{did_you_mean(placement.name, modules)}"
            )
        if placement.device not in targets:
            targets[placement.device] = resolve(placement.device)
    moving = {placement.name: targets[placement.device] for placement in plan.placements}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_meta and _target_of(name, moving).type != "meta":
            raise NotMaterializedError(
                f"'{name}' of '{plan.model}' is on the meta device and has no values yet; load its weights"
                " first (zoo.load with device_map=), then dispatch."
            )
    for handle in model.__dict__.pop("_zoo_dispatch_hooks", []):
        handle.remove()
    handles: list[RemovableHandle] = []
    hooked: set[int] = set()
    with ties.kept(model):  # the plan put tied blocks on one device; the tie stays one tensor there
        for placement in plan.placements:
            module = modules[placement.name]
            device = moving[placement.name]
            if id(module) in hooked:
                continue  # a module used twice moves and hooks once
            hooked.add(id(module))
            if plan.dtype is not None:
                module.to(device=device, dtype=plan.dtype)  # floating tensors only, as the plan counted them
            else:
                module.to(device)
            handles.append(module.register_forward_pre_hook(_mover(device), with_kwargs=True))
    model.__dict__["_zoo_dispatch_hooks"] = handles
    model.__dict__["zoo_plan"] = plan
    return model


def _target_of(key: str, moving: Mapping[str, torch.device]) -> torch.device:
    parts = key.split(".")
    for cut in range(len(parts), -1, -1):
        device = moving.get(".".join(parts[:cut]))
        if device is not None:
            return device
    return torch.device("cpu")


def _mover(device: torch.device) -> Any:
    def move_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        return to_device(args, device), to_device(kwargs, device)

    return move_inputs


# ---------------------------------------------------------------- text


def _amount(n: int) -> str:
    """Exact bytes for messages, with the readable size beside: "10,132 B (9.9 KiB)"."""
    return f"{n:,} B" if abs(n) < 1024 else f"{n:,} B ({human_bytes(n)})"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return [rule, lines[0], rule, *lines[1:], rule]
