"""Devices: find them, pick one, and move tensors to them.

The seed's GPU section, made automatic so that a user never juggles `.to()`:

- `try_gpu`, `try_all_gpus`: the seed's helpers. `resolve` turns what a user writes (None,
  "auto", "cpu", "cuda:1", a torch.device) into a device that is really on this machine.

Where each block of a model goes is zoo._scale.placement's job.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from zoo._errors import ArgumentError, DeviceError, ZooError, did_you_mean, listing

DeviceArg = str | int | torch.device | None
MemoryArg = Mapping[str | int | torch.device, int | str] | None
DeviceMapArg = str | Mapping[str, DeviceArg]  # "auto", "balanced", or {module path: device}

logger = logging.getLogger("zoo")

_DEVICE_WORDS = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps", "meta")


# ---------------------------------------------------------------- finding devices


def try_gpu(i: int = 0) -> torch.device:
    """GPU `i` if this machine has it, else the CPU (the seed's helper)."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Every GPU, or `[cpu]` when there is none (the seed's helper)."""
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return devices if devices else [torch.device("cpu")]


def available() -> list[torch.device]:
    """The devices this machine has, best first: cuda:0, cuda:1, …, mps, cpu."""
    found = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append(torch.device("mps"))
    return [*found, torch.device("cpu")]


def resolve(device: DeviceArg) -> torch.device:
    """The device `device` names, checked to be on this machine.

    Args:
        device: None (the CPU), "auto" (CUDA if present, else MPS, else CPU), "cpu",
            "cuda" (the current GPU), "cuda:N", "mps", "meta", an int N (cuda:N), a torch.device.

    Raises:
        DeviceError: the text is not a device, or the device is not on this machine; the
            message lists the devices that are.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        return available()[0]
    wanted = parse_device(device)
    if wanted.type in ("cpu", "meta"):
        return torch.device(wanted.type)
    if wanted.type == "cuda" and wanted.index is None and torch.cuda.device_count() > 0:
        wanted = torch.device("cuda", torch.cuda.current_device())
    here = available()
    if wanted in here or (wanted.type == "mps" and torch.device("mps") in here):
        return torch.device("mps") if wanted.type == "mps" else wanted
    names = [str(d) for d in here]
    hint = ""
    if wanted.type == "cuda" and torch.cuda.device_count() == 0:
        hint = " torch sees no CUDA device (torch.cuda.is_available() is False)."
    said = f"device '{device}' is not on this machine, which has {listing(names)}.{did_you_mean(str(wanted), names)}{hint}"
    raise DeviceError(
        f"{said} Pass device='auto' to take the best device present.",
        cli=f"{said} Pass --device auto to take the best device present.",
    )


def parse_device(device: str | int | torch.device) -> torch.device:
    """`device` as a torch.device, without checking that it is here ("cuda" keeps no index).

    Raises:
        DeviceError: not a device name, a negative index, or a value of another type.
    """
    if isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise DeviceError(f"{device!r} ({type(device).__name__}) is not a device; write 'cpu', 'cuda:0' or 'auto'.")
    if isinstance(device, int):
        if device < 0:
            raise DeviceError(f"device index {device} is negative; GPUs are numbered from 0 (cuda:0).")
        return torch.device("cuda", device)
    try:
        return torch.device(device.strip().lower())
    except RuntimeError:
        raise DeviceError(
            f"'{device}' is not a device name.{did_you_mean(device, _DEVICE_WORDS)} "
            "Write 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'."
        ) from None


def for_checkpoint(requested: DeviceArg, saved_on: str | None, *, source: str) -> torch.device:
    """Where a checkpoint's tensors go: `requested` when given, else the CPU.

    safetensors records no device, so a checkpoint saved on a GPU always loads; unlike
    torch.load, nothing fails on a machine without that GPU. When the checkpoint says it was
    saved on a device this machine lacks and the caller asked for nothing, one line on the
    "zoo" logger says where it went instead. Asking for a missing device by name is an error.

    Args:
        requested: what the caller passed as `device=` (None: the CPU).
        saved_on: the device recorded in the checkpoint's metadata, if any (e.g. "cuda:0").
        source: the file or repository, for the notice.

    Raises:
        DeviceError: `requested` names a device that is not here.
    """
    if requested is not None:
        return resolve(requested)
    if saved_on:
        try:
            resolve(saved_on)
        except DeviceError:
            logger.warning("%s was saved on %s, which this machine lacks; loading it onto the cpu.", source, saved_on)
    return torch.device("cpu")


@dataclass(frozen=True)
class DeviceInfo:
    """One device of this machine, as `zoo devices` lists it."""

    device: str  # "cpu", "cuda:0", "mps"
    name: str  # the hardware's own name
    total: int | None  # bytes of memory; None where the platform does not say
    free: int | None  # bytes free now (for the CPU: available without swapping)


def inventory() -> list[DeviceInfo]:
    """Every device here with its name and its total and free memory, best first."""
    infos = []
    for device in available():
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            infos.append(DeviceInfo(str(device), torch.cuda.get_device_name(device), total, free))
        elif device.type == "mps":
            total = int(torch.mps.recommended_max_memory())
            infos.append(DeviceInfo("mps", "Apple GPU (MPS)", total, total - int(torch.mps.driver_allocated_memory())))
        else:
            host_total, host_free = host_memory()
            infos.append(DeviceInfo("cpu", _cpu_name(), host_total, host_free))
    return infos


def check_allocation(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, what: str) -> None:
    """Refuse, before allocating, a tensor of `shape` that cannot fit in the memory `device` has free now.

    Raises:
        DeviceError: naming `what`, the bytes it needs and the bytes free.
    """
    needed = math.prod(shape) * dtype.itemsize
    if device.type == "meta":
        return
    if device.type == "cuda":
        free: int | None = torch.cuda.mem_get_info(device)[0]
    elif device.type == "cpu":
        free = host_memory()[1]
    else:
        return  # no way to ask: the allocator answers
    if free is not None and needed > free:
        raise DeviceError(
            f"{what} of shape {shape} ({dtype}) needs {needed:,} bytes ({human_bytes(needed)}), and {device} has "
            f"{free:,} bytes ({human_bytes(free)}) free; use a smaller shape"
        )


_CPU_REFUSAL = re.compile(r"tried to allocate (\d+) bytes")
_CUDA_REFUSAL = re.compile(r"Tried to allocate ([\d.]+ ?[KMGTP]?i?B)")


def allocation_refused(err: BaseException) -> str | None:
    """What the allocator refused, when `err` is its out-of-memory error ("40,000,000,000,000 bytes (36.4 TiB)")."""
    text = str(err)
    cpu = _CPU_REFUSAL.search(text)
    if cpu:
        return f"{int(cpu.group(1)):,} bytes ({human_bytes(int(cpu.group(1)))})"
    cuda = _CUDA_REFUSAL.search(text)
    if isinstance(err, torch.OutOfMemoryError) or cuda:
        return cuda.group(1) if cuda else "more than the device has"
    return None


def host_memory() -> tuple[int | None, int | None]:
    """Total and available host memory in bytes (None where it cannot be told): /proc/meminfo on Linux, sysconf
    elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f) if v.strip()}
        return fields.get("MemTotal"), fields.get("MemAvailable", fields.get("MemFree"))
    except (OSError, ValueError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None, None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.partition(':')[2].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine() or 'CPU'} ({os.cpu_count()} cores)"


def map_tensors(value: Any, fn: Callable[[Any], Any], leaves: tuple[type, ...] = (torch.Tensor,)) -> Any:
    """`value` with `fn` applied to every leaf (a tensor) inside tuples, lists and dicts; others as they are."""
    if isinstance(value, leaves):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple takes its fields positionally
        return type(value)(*(map_tensors(v, fn, leaves) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn, leaves) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn, leaves) for k, v in value.items()}
    return value


def to_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor in it (through tuples, lists, dicts) on `device`; others as they are."""
    return map_tensors(value, lambda tensor: tensor.to(device))  # no copy when it is there already


# ---------------------------------------------------------------- text


def human_bytes(n: int | None) -> str:
    """Bytes for people: "812 B", "21.0 KiB", "1.5 GiB"."""
    if n is None:
        return "?"
    if abs(n) < 1024:
        return f"{n:,} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


# ---------------------------------------------------------------- sizes and precisions

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: int | str, what: str, *, error: type[ZooError] = ArgumentError, zero: bool = False) -> int:
    """Bytes from an int or text such as "4GiB", "500 MB", "1.5GB" (powers of 1000 or of 1024).

    Args:
        what: what the size is for, to start the message ("max_shard_size", "max_memory['cuda:0']").
        error: the ZooError class to raise.
        zero: whether 0 bytes is allowed (a budget may be empty; a shard may not).
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise error(f"{what}: {value!r} is not a size; give bytes (an int) or text such as '4GiB'.")
    if isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            close = did_you_mean(unit, [u for u in _UNITS if u]) if match else ""
            raise error(
                f"{what}: '{value}' is not a size.{close} Write bytes or a number with a unit: "
                "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)."
            )
        size = int(float(match.group(1)) * _UNITS[unit])
    else:
        size = value
    if size < 0:
        raise error(f"{what}: {value!r} is negative.")
    if size == 0 and not zero:
        raise error(f"{what}: {value!r} is 0 bytes; it must be at least 1 byte.")
    return size


def check_dtype(dtype: torch.dtype | None, what: str = "dtype") -> None:
    """Refuse anything but None or a floating-point torch.dtype (say, the text "float16")."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype.is_complex)):
        hint = (
            f" (pass torch.{dtype})"
            if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)
            else ""
        )
        raise ArgumentError(f"{what} must be a floating-point torch.dtype such as torch.float16, got {dtype!r}{hint}")
