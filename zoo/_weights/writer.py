"""Writing safetensors files and shard folders, one tensor at a time, 64-byte aligned (see format)."""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from zoo._build import devices
from zoo._errors import ArgumentError, WeightsError
from zoo._weights.layout import ALIASES_KEY, ALIGNMENT, CODES, INDEX_FILE, MODEL_FILE, SHARD_NAME
from zoo._weights.progress import progress

_CHUNK = 64 << 20  # bytes per write call, so the bar moves within a large tensor


# --- writing -------------------------------------------------------------------------------


def dedupe(named: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split tensors into those to store and aliases: a tensor that is the same memory as an earlier one
    (same storage, offset, shape, strides, dtype) becomes an alias of it.

    Tensors that merely overlap (different views of one storage) are stored as separate copies.
    """
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    for key, tensor in named.items():
        identity = storage_identity(tensor)
        if identity is not None and identity in first:
            aliases[key] = first[identity]
            continue
        if identity is not None:
            first[identity] = key
        stored[key] = tensor
    return stored, aliases


def storage_identity(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    if tensor.numel() == 0 or tensor.is_meta:
        return None
    storage = tensor.untyped_storage().data_ptr()
    return (tensor.device, storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def write_model_files(
    folder: Path,
    named: Mapping[str, torch.Tensor],
    *,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write a state dict into `folder` as model.safetensors, or as shards with a transformers-style index.

    Shared tensors are stored once (see `dedupe`). `metadata` goes into every file's header.
    Returns the names of the files written. Call it on a fresh folder from fsio.atomic_dir:
    files here are not replaced one by one.
    """
    check_storable(named, dtype)
    tensors, aliases = dedupe(named)
    limit = devices.parse_size(max_shard_size, "max_shard_size") if max_shard_size is not None else None
    shards = _plan_shards(tensors, dtype, limit)
    names = [MODEL_FILE] if len(shards) == 1 else [SHARD_NAME.format(i + 1, len(shards)) for i in range(len(shards))]
    total = sum(_stored_nbytes(t, dtype) for t in tensors.values())
    with progress(total, f"saving {folder.name}") as bar:
        for name, keys in zip(names, shards, strict=True):
            shard_aliases = {alias: target for alias, target in aliases.items() if target in keys}
            header = {"format": "pt", **(metadata or {})}
            if shard_aliases:
                header[ALIASES_KEY] = json.dumps(shard_aliases)
            with open(folder / name, "xb") as f:
                write_file(f, {key: tensors[key] for key in keys}, header, dtype, bar)
    if len(shards) > 1:
        weight_map = {key: name for name, keys in zip(names, shards, strict=True) for key in keys}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        names.append(INDEX_FILE)
    return names


def _plan_shards(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None, limit: int | None) -> list[list[str]]:
    """Keys per shard, in order; a tensor larger than the limit gets a shard of its own (as in transformers)."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, tensor in tensors.items():
        nbytes = _stored_nbytes(tensor, dtype)
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def check_storable(named: Mapping[str, Any], dtype: torch.dtype | None) -> None:
    devices.check_dtype(dtype)
    if dtype is not None and dtype not in CODES:
        raise ArgumentError(f"dtype {dtype} cannot be stored in safetensors; use torch.float16, bfloat16 or float32")
    problems = []
    for key, value in named.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"'{key}' is a {type(value).__name__}, not a tensor (a module's get_extra_state?)")
        elif value.is_meta:
            problems.append(f"'{key}' is on the meta device and holds no values")
        elif value.layout != torch.strided:
            problems.append(f"'{key}' is a {value.layout} tensor; store it dense (.to_dense())")
        elif value.dtype not in CODES:
            problems.append(f"'{key}' has dtype {value.dtype}, which safetensors cannot hold")
    if problems:
        raise WeightsError("cannot store these tensors: " + "; ".join(problems))


def _stored_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def _stored_nbytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
    return tensor.numel() * _stored_dtype(tensor, dtype).itemsize


@dataclass(frozen=True)
class FilePlan:
    """Where everything goes in one safetensors file, before any tensor's bytes are at hand."""

    header: bytes  # the 8-byte length and the JSON header, padded so that the data starts ALIGNMENT-aligned
    order: tuple[str, ...]  # the keys in the order their bytes follow the header
    offsets: Mapping[str, int]  # key → where its bytes start in the file


def plan_file(specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], metadata: Mapping[str, str]) -> FilePlan:
    """The header and the place of every tensor of a file, from each key's (stored dtype, shape)."""
    if sys.byteorder != "little":
        raise WeightsError("zoo writes safetensors (little-endian) on little-endian machines only")
    nbytes = {key: math.prod(shape) * dtype.itemsize for key, (dtype, shape) in specs.items()}
    order = _write_order({key: (specs[key][0].itemsize, nbytes[key]) for key in specs})
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    starts = {}
    for key in order:
        dtype, shape = specs[key]
        header[key] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes[key]]}
        starts[key] = offset
        offset += nbytes[key]
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Trailing spaces (JSON whitespace, which every safetensors reader accepts) put the data buffer
    # at a multiple of ALIGNMENT in the file, so mapped tensors start aligned in memory.
    raw += b" " * (-(8 + len(raw)) % ALIGNMENT)
    data = 8 + len(raw)
    return FilePlan(struct.pack("<Q", len(raw)) + raw, tuple(order), {key: data + at for key, at in starts.items()})


def write_file(
    f: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], dtype: torch.dtype | None, bar: Any
) -> None:
    """One safetensors file: header, then each tensor's bytes, converted and copied to the host one at a time."""
    plan = plan_file({key: (_stored_dtype(t, dtype), tuple(t.shape)) for key, t in tensors.items()}, metadata)
    f.write(plan.header)
    for key in plan.order:
        host = tensors[key].detach().to(device="cpu", dtype=_stored_dtype(tensors[key], dtype)).contiguous()
        for chunk in _chunks(host):
            f.write(chunk)
            bar.update(len(chunk))


def write_at(f: BinaryIO, tensor: torch.Tensor, offset: int) -> None:
    """Write the bytes of `tensor` (copied to the host, as it is) at `offset` of the open file `f`."""
    host = tensor.detach().to("cpu").contiguous()
    for chunk in _chunks(host):
        written = 0
        while written < len(chunk):
            written += os.pwrite(f.fileno(), chunk[written:], offset + written)
        offset += len(chunk)


def _chunks(host: torch.Tensor) -> Iterator[memoryview]:
    """The memory of a contiguous CPU tensor in pieces of at most _CHUNK bytes, without a copy."""
    nbytes = host.numel() * host.element_size()
    if nbytes == 0:
        return
    data = memoryview((ctypes.c_ubyte * nbytes).from_address(host.data_ptr())).cast("B")
    try:
        for start in range(0, nbytes, _CHUNK):
            yield data[start : start + _CHUNK]
    finally:
        del data  # the ctypes view must not outlive the tensor it points into


def _write_order(sizes: Mapping[str, tuple[int, int]]) -> list[str]:
    """The order to write tensors in, from key → (element size, bytes), so that most start ALIGNMENT-aligned.

    safetensors stores tensors back to back (no gaps), so a tensor starts aligned exactly when the
    bytes before it add up to a multiple of ALIGNMENT. Tensors of whole multiples come first,
    widest dtype and largest first: all of them start aligned. The rest follow by element size,
    widest first (as safetensors orders them, so each starts aligned to its element), and within
    each size the largest goes wherever the offset is aligned and the smallest fill in where it
    is not: what ends up off the alignment is small, and loading copies it (StoredTensors.tensor).
    """
    whole = sorted((k for k, (_, n) in sizes.items() if n % ALIGNMENT == 0), key=lambda k: (-sizes[k][0], -sizes[k][1]))
    order = list(whole)
    offset = 0
    for itemsize in sorted({size for size, n in sizes.values() if n % ALIGNMENT}, reverse=True):
        left = sorted((k for k, (s, n) in sizes.items() if s == itemsize and n % ALIGNMENT), key=lambda k: sizes[k][1])
        while left:
            if offset % ALIGNMENT == 0:
                key = left.pop()  # the largest, aligned
            else:  # the smallest that brings the offset back to alignment, else the smallest
                closing = [k for k in left if (offset + sizes[k][1]) % ALIGNMENT == 0]
                key = closing[0] if closing else left[0]
                left.remove(key)
            order.append(key)
            offset += sizes[key][1]
    return order
