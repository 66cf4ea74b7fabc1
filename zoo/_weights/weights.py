"""Tensors to and from safetensors files, without pickle; the only module importing safetensors.

Reading goes through safetensors itself: its parser checks every header (sizes, offsets and
dtypes agree, the data covers the file exactly) and memory-maps the data, so a loaded tensor
is a view of the page cache until someone writes to it (copy-on-write; the file never changes).

Writing streams the format (8-byte little-endian header length, JSON header, raw bytes) one
tensor at a time, so a dtype conversion or a copy off the GPU never holds more than one
tensor, and a progress bar can follow the bytes. `safetensors.torch.load_file` reads the result.
The data buffer and nearly every tensor start 64-byte aligned (`_write_order`), as torch allocates.

What zoo adds in the header's `__metadata__` (plain strings, ignored by other readers):
- `zoo.aliases`: tensors that share memory (tied weights) are stored once; this maps every
  other key to the stored one, and loading ties them again.
- `zoo.structure`: for save_tensors, the list/tuple/dict nesting around the stored tensors.

What zoo reads from other writers: huggingface_hub's `save_torch_model` (and so
`PyTorchModelHubMixin`) drops all but one name of shared tensors and records `{removed: kept}`
in the file's metadata (one file) or the index's (shards); those names become aliases as
zoo's own do. transformers and accelerate drop tied names without a record: a load accepts a
missing key when the model ties it to a key the file has, as `safetensors.torch.load_model` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import struct
import sys
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from tqdm import tqdm  # type: ignore[import-untyped]

from zoo._build import devices, lazy
from zoo._build.known_shapes import materialize_from_shapes
from zoo._errors import ArgumentError, WeightsError, did_you_mean, listing, nearest
from zoo._files import fsio, jsonio
from zoo._language.keymap import KeyMap

MODEL_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ALIASES_KEY = "zoo.aliases"
STRUCTURE_KEY = "zoo.structure"
SAVE_ID_KEY = "zoo.save_id"  # one random id per save, in every shard: a mix of two saves is detected
PROGRESS_MIN_BYTES = 1 << 30  # smaller saves and loads finish before a bar would be worth reading
_CHUNK = 64 << 20  # bytes per write call, so the bar moves within a large tensor
_SHARD_NAME = "model-{:05d}-of-{:05d}.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ALIGNMENT = 64  # bytes: torch's CPU allocator aligns every tensor so; mapped tensors must match (see tensor())

_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.complex64: "C64",
}
for _name, _code in [
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
]:  # newer torch only
    if hasattr(torch, _name):
        _CODES[getattr(torch, _name)] = _code
_DTYPES = {code: dtype for dtype, code in _CODES.items()}


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor as its file's header describes it."""

    key: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class FileHeader:
    """What `zoo inspect` shows for one file: its tensors and metadata, from the header alone."""

    file: Path
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]


@dataclass
class StoredTensors:
    """The tensors of one safetensors file or a model folder: every header checked, data mapped.

    Keys are state-dict keys; `aliases` maps the keys of tied tensors to the stored key.
    """

    where: str  # the file or folder, for messages
    infos: dict[str, TensorInfo]  # stored keys
    aliases: dict[str, str]  # alias key → stored key
    headers: list[FileHeader]
    _handles: dict[Path, Any] = field(repr=False)
    # Aliases read from another writer's metadata ({removed: kept}): a model without such a key is
    # not told it is unexpected, since the file stores no data under it.
    foreign: frozenset[str] = frozenset()

    def keys(self) -> list[str]:
        """Every key, stored or alias."""
        return [*self.infos, *self.aliases]

    def __contains__(self, key: object) -> bool:
        return key in self.infos or key in self.aliases

    def info(self, key: str) -> TensorInfo:
        return self.infos[self.aliases.get(key, key)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key → shape for every key, stored or alias (what lazy layers need to materialise)."""
        return {key: self.info(key).shape for key in self.keys()}

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor stored for `key`: memory-mapped (no copy) where it starts ALIGNMENT-aligned, else copied.

        Math libraries pick their kernels by the address of their inputs (MKL rounds differently
        for unaligned ones on AVX-512 CPUs), so a mapped tensor off the alignment that torch's own
        allocator gives would compute other bits than the model that was saved. zoo's own files
        put almost every tensor on it (see `_write_order`); the few others are small.
        """
        info = self.info(key)
        tensor: torch.Tensor = self._handles[info.file].get_tensor(info.key)
        return tensor.clone() if tensor.data_ptr() % ALIGNMENT else tensor

    def part(self, key: str, index: tuple[slice, ...]) -> torch.Tensor:
        """The part `index` of the tensor stored for `key`, reading only its bytes (a rank's shard)."""
        info = self.info(key)
        return self._handles[info.file].get_slice(info.key)[index]  # type: ignore[no-any-return]

    def renamed(self, keymap: KeyMap) -> StoredTensors:
        """The same tensors under the keys `keymap` gives (their place in the files stays as it is).

        Raises:
            WeightsError: two keys of the file map to one key.
        """
        new: dict[str, str] = {}
        for key in self.keys():
            mapped = keymap(key)
            if mapped in new:
                raise WeightsError(
                    f"{self.where}: the key map {keymap.describe()} maps both '{new[mapped]}' and '{key}' to '{mapped}'"
                )
            new[mapped] = key
        old_to_new = {old: mapped for mapped, old in new.items()}
        infos = {old_to_new[key]: info for key, info in self.infos.items()}
        aliases = {old_to_new[alias]: old_to_new[target] for alias, target in self.aliases.items()}
        foreign = frozenset(old_to_new[key] for key in self.foreign)
        return StoredTensors(self.where, infos, aliases, self.headers, self._handles, foreign)

    @property
    def save_id(self) -> str | None:
        """The id of the save that wrote these files (checked to be one), if it recorded one."""
        return self.headers[0].metadata.get(SAVE_ID_KEY) if self.headers else None


@contextlib.contextmanager
def open_stored(path: str | Path) -> Iterator[StoredTensors]:
    """Open a safetensors file, or a model folder (one file or shards with an index), and check it all.

    Raises:
        WeightsError: naming the file, for anything missing, unreadable, truncated, inconsistent,
            or pickled (zoo never unpickles).
    """
    path = Path(path)
    # zoo.save and save_tensors replace `path` whole while another process may be opening it;
    # safetensors reads a header and maps the data in two steps, so a replacement in between
    # could pair one save's header with another's bytes. A changed identity means: open again.
    for attempt in range(1, _ATTEMPTS + 1):
        before = fsio.identity(path)
        stack = contextlib.ExitStack()
        try:
            stored = _open_all(path, stack)
        except WeightsError:
            stack.close()
            if fsio.identity(path) != before and attempt < _ATTEMPTS:
                continue
            raise
        if fsio.identity(path) != before and attempt < _ATTEMPTS:
            stack.close()
            continue
        with stack:
            yield stored
        return


_ATTEMPTS = 5  # opens interrupted by another process replacing the file or folder, before giving up


def _open_all(path: Path, stack: contextlib.ExitStack) -> StoredTensors:
    files, weight_map, index_metadata = _folder_files(path) if path.is_dir() else ([path], None, {})
    handles: dict[Path, Any] = {}
    infos: dict[str, TensorInfo] = {}
    aliases: dict[str, str] = {}
    headers = []
    for file in files:
        handle = stack.enter_context(_open_file(file))
        handles[file] = handle
        header = _header(file, handle)
        headers.append(header)
        for info in header.tensors:
            if info.key in infos:
                raise WeightsError(f"{file}: key '{info.key}' is stored in {infos[info.key].file.name} too")
            infos[info.key] = info
        aliases.update(_aliases(file, header))
    if weight_map is not None:
        _check_index(path / INDEX_FILE, weight_map, infos)
    saves = {h.file.name: h.metadata.get(SAVE_ID_KEY) for h in headers}
    if len(set(saves.values())) > 1:
        raise WeightsError(
            f"the files in {path} come from different saves ({', '.join(f'{k}: {v}' for k, v in saves.items())}); "
            f"a shard was replaced by hand? Save the model again."
        )
    for alias, target in aliases.items():
        if target not in infos or alias in infos:
            problem = f"'{target}' is not stored" if target not in infos else f"'{alias}' is stored too"
            raise WeightsError(f"{path}: `{ALIASES_KEY}` maps '{alias}' to '{target}', but {problem}")
    foreign = _removed_names([index_metadata, *(h.metadata for h in headers)], infos, aliases)
    return StoredTensors(str(path), infos, {**aliases, **foreign}, headers, handles, frozenset(foreign))


def _removed_names(
    metadata: list[Mapping[str, Any]], infos: Mapping[str, TensorInfo], aliases: Mapping[str, str]
) -> dict[str, str]:
    """huggingface_hub's record of the shared tensors it did not store: metadata entries {removed: kept}.

    Only entries that can be nothing else count: the kept name is stored, the removed one is not.
    Other metadata ("format": "pt", "total_size": 123, a user's own strings) is left alone.
    """
    removed: dict[str, str] = {}
    for table in metadata:
        for key, value in table.items():
            if isinstance(value, str) and value in infos and key not in infos and key not in aliases:
                removed.setdefault(key, value)
    return removed


def inspect(path: str | Path) -> list[FileHeader]:
    """The headers of a safetensors file or of every file of a model folder, reading no tensor data."""
    with open_stored(path) as stored:
        return list(stored.headers)


def _folder_files(folder: Path) -> tuple[list[Path], dict[str, str] | None, dict[str, Any]]:
    """The weights files of a model folder, and the shard index's weight map and metadata when there is one."""
    if (folder / MODEL_FILE).is_file():  # transformers' order: the single file wins over an index
        return [folder / MODEL_FILE], None, {}
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map, metadata = _read_index(index)
        return sorted({folder / name for name in weight_map.values()}), weight_map, metadata
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    pickles = [name for name in present if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise WeightsError(
            f"{folder} holds no {MODEL_FILE}, only {listing(pickles)}: pickle files, which zoo never opens because "
            f"unpickling runs code from the file. {_convert_hint(folder / pickles[0])}"
        )
    raise WeightsError(f"{folder} holds neither {MODEL_FILE} nor {INDEX_FILE}; it holds: {listing(present)}")


def _read_index(index: Path) -> tuple[dict[str, str], dict[str, Any]]:
    data = jsonio.read(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f'{index}: not a shard index (expected {{"weight_map": {{key: file name}}}})')
    for name in set(weight_map.values()):
        # No way out of the folder, and nothing the file system refuses to look up (ENAMETOOLONG, NUL).
        if Path(name).name != name or name in ("", ".", "..") or "\0" in name or len(name.encode()) > 255:
            raise WeightsError(f"{index}: shard '{name[:80]}' is not a file name inside {index.parent}")
        if not (index.parent / name).is_file():
            raise WeightsError(f"{index}: lists shard '{name}', which is not in {index.parent}")
    metadata = data.get("metadata")
    return weight_map, metadata if isinstance(metadata, dict) else {}


def _check_index(index: Path, weight_map: Mapping[str, str], infos: Mapping[str, TensorInfo]) -> None:
    wrong = [key for key, name in weight_map.items() if key not in infos or infos[key].file.name != name]
    unlisted = [key for key in infos if key not in weight_map]
    if wrong or unlisted:
        raise WeightsError(
            f"{index} does not match its shards: listed but not in the named shard: {listing(wrong)}; "
            f"in a shard but not listed: {listing(unlisted)}"
        )


@contextlib.contextmanager
def _open_file(file: Path) -> Iterator[Any]:
    if not file.exists():
        siblings = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
        raise WeightsError(f"no such weights file: {file}.{did_you_mean(file.name, siblings)}")
    if not file.is_file():
        raise WeightsError(f"{file} is not a file")
    try:
        handle = safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # RuntimeError: torch could not map it
        raise WeightsError(_unreadable(file, err)) from None
    with handle:
        yield handle


def _unreadable(file: Path, err: Exception) -> str:
    try:
        with open(file, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    zipped = head.startswith(b"PK\x03\x04")  # torch.save's default format: a zip around a pickle
    pickled = zipped or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    if pickled or file.suffix in PICKLE_SUFFIXES:
        return (
            f"{file} is not a safetensors file but {'a pickle' if pickled else 'probably a pickle'} "
            f"(torch.save writes these); zoo never unpickles, because unpickling runs code from the file. "
            f"{_convert_hint(file)}"
        )
    return f"{file} is not a valid safetensors file (truncated, corrupted or another format): {err}"


def _convert_hint(file: Path) -> str:
    return (
        f"If you trust it, convert it once: load it with torch's loader and weights_only=True, then write it with "
        f"zoo.save_tensors(tensors, '{file.with_suffix('.safetensors')}')."
    )


def _header(file: Path, handle: Any) -> FileHeader:
    tensors = []
    for key in handle.keys():
        view = handle.get_slice(key)
        code = view.get_dtype()
        if code not in _DTYPES:
            raise WeightsError(f"{file}: '{key}' has dtype {code}, which this torch cannot hold")
        tensors.append(TensorInfo(key, file, _DTYPES[code], tuple(view.get_shape())))
    return FileHeader(file, tuple(tensors), dict(handle.metadata() or {}))


def _aliases(file: Path, header: FileHeader) -> dict[str, str]:
    text = header.metadata.get(ALIASES_KEY)
    if text is None:
        return {}
    aliases = jsonio.loads(text, f"{file}: `{ALIASES_KEY}`")
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise WeightsError(f"{file}: `{ALIASES_KEY}` must map key names to key names")
    return aliases


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
        identity = _identity(tensor)
        if identity is not None and identity in first:
            aliases[key] = first[identity]
            continue
        if identity is not None:
            first[identity] = key
        stored[key] = tensor
    return stored, aliases


def _identity(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    if tensor.numel() == 0 or tensor.is_meta:
        return None
    storage = tensor.untyped_storage().data_ptr()
    return (tensor.device, storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def parse_size(size: int | str) -> int:
    """A shard size in bytes: an int, or text such as "500MB", "2GB" (powers of 1000) or "1GiB" (of 1024).

    Raises:
        ArgumentError: anything else, or a size under one byte.
    """
    return devices.parse_size(size, "max_shard_size")


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
    _check_storable(named, dtype)
    tensors, aliases = dedupe(named)
    limit = parse_size(max_shard_size) if max_shard_size is not None else None
    shards = _plan_shards(tensors, dtype, limit)
    names = [MODEL_FILE] if len(shards) == 1 else [_SHARD_NAME.format(i + 1, len(shards)) for i in range(len(shards))]
    total = sum(_stored_nbytes(t, dtype) for t in tensors.values())
    with _progress(total, f"saving {folder.name}") as bar:
        for name, keys in zip(names, shards, strict=True):
            shard_aliases = {alias: target for alias, target in aliases.items() if target in keys}
            header = {"format": "pt", **(metadata or {})}
            if shard_aliases:
                header[ALIASES_KEY] = json.dumps(shard_aliases)
            with open(folder / name, "xb") as f:
                _write(f, {key: tensors[key] for key in keys}, header, dtype, bar)
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


def _check_storable(named: Mapping[str, Any], dtype: torch.dtype | None) -> None:
    devices.check_dtype(dtype)
    if dtype is not None and dtype not in _CODES:
        raise ArgumentError(f"dtype {dtype} cannot be stored in safetensors; use torch.float16, bfloat16 or float32")
    problems = []
    for key, value in named.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"'{key}' is a {type(value).__name__}, not a tensor (a module's get_extra_state?)")
        elif value.is_meta:
            problems.append(f"'{key}' is on the meta device and holds no values")
        elif value.layout != torch.strided:
            problems.append(f"'{key}' is a {value.layout} tensor; store it dense (.to_dense())")
        elif value.dtype not in _CODES:
            problems.append(f"'{key}' has dtype {value.dtype}, which safetensors cannot hold")
    if problems:
        raise WeightsError("cannot store these tensors: " + "; ".join(problems))


def _stored_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def _stored_nbytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
    return tensor.numel() * _stored_dtype(tensor, dtype).itemsize


def _write(
    f: BinaryIO, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], dtype: torch.dtype | None, bar: Any
) -> None:
    """One safetensors file: header, then each tensor's bytes, converted and copied to the host one at a time."""
    if sys.byteorder != "little":
        raise WeightsError("zoo writes safetensors (little-endian) on little-endian machines only")
    sizes = {key: (_stored_dtype(t, dtype).itemsize, _stored_nbytes(t, dtype)) for key, t in tensors.items()}
    order = _write_order(sizes)
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in order:
        nbytes = _stored_nbytes(tensors[key], dtype)
        header[key] = {
            "dtype": _CODES[_stored_dtype(tensors[key], dtype)],
            "shape": list(tensors[key].shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Trailing spaces (JSON whitespace, which every safetensors reader accepts) put the data buffer
    # at a multiple of ALIGNMENT in the file, so mapped tensors start aligned in memory.
    raw += b" " * (-(8 + len(raw)) % ALIGNMENT)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for key in order:
        host = tensors[key].detach().to(device="cpu", dtype=_stored_dtype(tensors[key], dtype)).contiguous()
        nbytes = host.numel() * host.element_size()
        if nbytes == 0:
            continue
        data = memoryview((ctypes.c_ubyte * nbytes).from_address(host.data_ptr())).cast("B")
        for start in range(0, nbytes, _CHUNK):
            f.write(data[start : start + _CHUNK])
            bar.update(min(_CHUNK, nbytes - start))
        del data, host  # the ctypes view must not outlive the tensor it points into


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


def _progress(total: int, desc: str) -> Any:
    """A progress bar for a transfer of `total` bytes, shown only where someone can watch it.

    Otherwise no tqdm at all: even disabled, one costs about a millisecond to set up (a lock
    and a monitor thread), as much as a whole small load.
    """
    if total < PROGRESS_MIN_BYTES or not _on_terminal():
        return _NO_BAR
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


def _on_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


_NO_BAR = _NoBar()


# --- fitting stored tensors to a model ------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What did not fit in a load: keys the file lacks, keys the model lacks, and keys that differ.

    A strict load raises instead of returning a non-empty report; a non-strict one loads the rest.
    """

    missing: tuple[str, ...] = ()  # in the model, not in the file: they keep their values
    unexpected: tuple[str, ...] = ()  # in the file, not in the model: ignored
    mismatched: Mapping[str, str] = field(default_factory=dict)  # key → what differs: not loaded
    tied: Mapping[str, str] = field(default_factory=dict)  # not in the file, tied in the model to this key: loaded

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"  missing from the file ({len(self.missing)}): {listing(self.missing, limit=20)}")
        if self.unexpected:
            lines.append(f"  not in the model ({len(self.unexpected)}): {listing(self.unexpected, limit=20)}")
        if self.missing and self.unexpected:
            lines.append(
                "  nearest names, file → model (names that differ in a pattern map with rename=): "
                + _nearest_pairs(self.unexpected, self.missing)
            )
        if self.mismatched:
            shown = [f"'{key}': {why}" for key, why in list(self.mismatched.items())[:20]]
            more = f"; … ({len(self.mismatched) - 20} more)" if len(self.mismatched) > 20 else ""
            lines.append(f"  mismatched ({len(self.mismatched)}): " + "; ".join(shown) + more)
        return "\n".join(lines)


def _nearest_pairs(unexpected: Sequence[str], missing: Sequence[str], limit: int = 6) -> str:
    """'file key' → 'model key' for the first file keys, then model keys left unpaired ← their nearest file key."""
    pairs: list[str] = []
    paired: set[str] = set()
    for key in unexpected[: limit // 2 + 1]:
        match = _nearest_key(key, missing)
        if match is not None:
            pairs.append(f"'{key}' → '{match}'")
            paired.add(match)
    for key in missing:
        if len(pairs) >= limit:
            break
        if key not in paired:
            match = _nearest_key(key, unexpected)
            if match is not None:
                pairs.append(f"'{match}' → '{key}'")
                paired.add(key)
    return "; ".join(pairs) if pairs else "none alike"


def _nearest_key(key: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ends in the most of `key`'s dotted parts (prefixes differ between writers), else the
    closest spelling."""
    parts = key.split(".")

    def shared_tail(other: str) -> int:
        n = 0
        for a, b in zip(reversed(parts), reversed(other.split(".")), strict=False):
            if a != b:
                break
            n += 1
        return n

    best = max(candidates, key=lambda c: (shared_tail(c), -abs(len(c) - len(key))), default=None)
    if best is not None and shared_tail(best) > 0:
        return best
    return nearest(key, candidates)


def check_fit(expected: Mapping[str, Any], stored: StoredTensors) -> LoadReport:
    """Compare a model's state dict (values may be meta or lazy tensors) with what is stored.

    A key the file lacks is not missing when the model ties it (one tensor at both places) to
    a key the file has: loading that key fills both. A name the file records as removed
    (huggingface_hub's metadata) is not unexpected when the model has no such key.
    """
    keys = stored.keys()
    present = set(keys)
    holders: dict[int, list[str]] = {}  # keys by tensor: the model's ties
    for key, tensor in expected.items():
        holders.setdefault(id(tensor), []).append(key)
    tied = {}
    for key, tensor in expected.items():
        if key not in present:
            loaded = next((other for other in holders[id(tensor)] if other in present), None)
            if loaded is not None:
                tied[key] = loaded
    missing = tuple(key for key in expected if key not in present and key not in tied)
    unexpected = tuple(key for key in keys if key not in expected and key not in stored.foreign)
    mismatched = {}
    for key, tensor in expected.items():
        if key not in present or not isinstance(tensor, torch.Tensor):
            continue
        info = stored.info(key)
        if not isinstance(tensor, (UninitializedParameter, UninitializedBuffer)) and tuple(tensor.shape) != info.shape:
            mismatched[key] = f"shape {tuple(tensor.shape)} in the model, {info.shape} in the file"
        elif _kind(tensor.dtype) != _kind(info.dtype):
            mismatched[key] = f"{tensor.dtype} in the model, {info.dtype} in the file"
    return LoadReport(missing, unexpected, mismatched, tied)


def _kind(dtype: torch.dtype) -> str:
    # Within a kind a load converts (float16 file → float32 model); across kinds it refuses.
    if dtype == torch.bool:
        return "boolean"
    if dtype.is_complex:
        return "complex"
    return "floating-point" if dtype.is_floating_point else "integer"


def misfit_error(report: LoadReport, where: str, model: str = "the model") -> WeightsError:
    """The error of a strict load that does not fit: every problem listed at once."""
    return WeightsError(
        f"{where} does not fit {model}, so nothing was loaded:\n{report.describe()}\n"
        f"Pass strict=False to load the keys that fit and get this report back."
    )


def load_weights(
    model: nn.Module, path: str | Path, *, strict: bool = True, rename: KeyMap | None = None
) -> LoadReport:
    """Load a local safetensors file or model folder into `model`, in place; lazy models included.

    zoo.load_weights (zoo.sources) is the public form, which also takes Hub addresses.
    Every key, shape and dtype (and each header) is checked before any tensor of the model is
    touched: a failed load leaves the model as it was. Values are copied into the model's own
    tensors (converted to their dtype and device), so an optimizer built on it stays valid; on
    a meta-device model they are assigned instead (the mapped tensors, no copy).
    Tensors stored as tied are tied again: both places hold the same Parameter afterwards.

    Args:
        strict: raise on any missing, unexpected or mismatched key (default). When False, load
            what fits and return the rest in the report.
        rename: how the file's keys map onto the model's.

    Returns:
        A LoadReport, empty when everything fitted.

    Raises:
        WeightsError: the file is unreadable, unsafe (a pickle), or (strict) does not fit.
    """
    with open_stored(path) as opened:
        stored = opened.renamed(rename) if rename else opened
        report = check_fit(model.state_dict(keep_vars=True), stored)
        if strict and report:
            where = f"{stored.where} (keys mapped by {rename.describe()})" if rename else stored.where
            raise misfit_error(report, where)
        if lazy.is_lazy(model):
            materialize_from_shapes(model, stored.shapes())
        apply_stored(model, stored, report)
    return report


def apply_stored(
    model: nn.Module,
    stored: StoredTensors,
    report: LoadReport,
    *,
    device: str | torch.device | Callable[[str], torch.device] | None = None,
    dtype: torch.dtype | None = None,
    private: bool = False,
) -> None:
    """Put the stored tensors that fit into `model`: copied into real tensors, assigned (no copy) to meta ones.

    With `private`, a tensor that would still map the file is copied first, so that the model
    owns all its memory and a later write to the file cannot reach it.

    `device` is one device for every tensor, or a function of the state-dict key (a device
    map's `Plan.device_for`): each tensor is read from the file straight onto its device.
    Ties are kept: places that held one tensor before hold one after, and so do stored aliases.
    """
    places = _places(model)
    groups = _tie_groups(places, stored.aliases)
    wanted = {k: t for k, t in model.state_dict(keep_vars=True).items() if k in stored and k not in report.mismatched}
    assign: dict[str, torch.Tensor] = {}
    copy: dict[str, torch.Tensor] = {}
    converted: dict[str, torch.Tensor] = {}
    total = sum(stored.infos[target].nbytes for target in {stored.aliases.get(k, k) for k in wanted})
    with _progress(total, f"loading {Path(stored.where).name}") as bar:
        for key, current in wanted.items():
            target = stored.aliases.get(key, key)
            if target not in converted:
                tensor = stored.tensor(target)
                mapped = tensor.untyped_storage().data_ptr()
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                where = device(key) if callable(device) else device  # a tied tensor goes with its first user
                converted[target] = tensor.to(where) if where is not None else tensor
                if private and current.is_meta and converted[target].untyped_storage().data_ptr() == mapped:
                    converted[target] = converted[target].clone()
                bar.update(stored.infos[target].nbytes)
            (assign if current.is_meta else copy)[key] = converted[target]
        with torch.no_grad():
            if copy:
                model.load_state_dict(copy, strict=False)
            if assign and not _assign_directly(model, places, assign):
                model.load_state_dict(assign, strict=False, assign=True)
    _retie(places, groups, wanted)


def _assign_directly(
    model: nn.Module, places: Mapping[str, tuple[dict[str, Any], str]], assign: Mapping[str, torch.Tensor]
) -> bool:
    """Give meta tensors their stored values as load_state_dict(assign=True) would, without its walk.

    The fit is checked already, so what is left of torch's walk is a call per module and per
    key (about as long as the rest of a small load). Only where the outcome is the same: no
    module loads its own way (its own _load_from_state_dict or load_state_dict hooks; batch
    norm's only adds a missing num_batches_tracked), and every parameter is a plain Parameter.
    False, with nothing changed, otherwise.
    """
    for prefix, module in model.named_modules(remove_duplicate=False):
        if module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks:
            return False
        loader = type(module)._load_from_state_dict
        counted = f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked"
        if loader is not nn.Module._load_from_state_dict and not (loader is _NORM_LOADER and counted in assign):
            return False
    old = {key: places[key][0][places[key][1]] for key in assign}
    if any(isinstance(t, nn.Parameter) and type(t) is not nn.Parameter for t in old.values()):
        return False
    for key, tensor in assign.items():
        container, name = places[key]
        if isinstance(old[key], nn.Parameter) and not isinstance(tensor, nn.Parameter):
            tensor = nn.Parameter(tensor, requires_grad=old[key].requires_grad)
        container[name] = tensor
    return True


_NORM_LOADER = _NormBase._load_from_state_dict


def _places(model: nn.Module) -> dict[str, tuple[dict[str, Any], str]]:
    """Every parameter and buffer by key, shared ones under each of their names: (container, name)."""
    places = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for container in (module._parameters, module._buffers):
            for name, tensor in container.items():
                if tensor is not None:
                    places[f"{prefix}.{name}" if prefix else name] = (container, name)
    return places


def _tie_groups(places: Mapping[str, tuple[dict[str, Any], str]], aliases: Mapping[str, str]) -> list[list[str]]:
    """Keys that must hold one tensor: those that share one now, plus the stored aliases."""
    by_tensor: dict[int, list[str]] = {}
    for key, (container, name) in places.items():
        by_tensor.setdefault(id(container[name]), []).append(key)
    groups = [keys for keys in by_tensor.values() if len(keys) > 1]
    for alias, target in aliases.items():
        if alias in places and target in places and _same_kind_of_place(places[alias], places[target]):
            groups.append([target, alias])
    return groups


def _same_kind_of_place(a: tuple[dict[str, Any], str], b: tuple[dict[str, Any], str]) -> bool:
    return isinstance(a[0][a[1]], nn.Parameter) == isinstance(b[0][b[1]], nn.Parameter)


def _retie(places: Mapping[str, tuple[dict[str, Any], str]], groups: list[list[str]], loaded: Container[str]) -> None:
    for keys in groups:
        # The tensor a loaded key holds now; a tied key the file lacked takes it (it may come first).
        source = next((key for key in keys if key in loaded), keys[0])
        container, name = places[source]
        first = container[name]
        for key in keys:
            other, other_name = places[key]
            if other[other_name] is not first and other[other_name].shape == first.shape:
                other[other_name] = first


# --- any nesting of tensors: save_tensors / load_tensors ---------------------------------------


def save_tensors(obj: Any, path: str | Path) -> None:
    """Write a tensor, a list or tuple of them, or a (nested) dict of them to one safetensors file.

    No pickle: the nesting is written as JSON in the header (`zoo.structure`), and plain
    values inside (numbers, strings, booleans, None) travel with it, which is what an
    optimizer's state_dict holds. A tensor that appears twice is stored once and comes back
    as one tensor. The file replaces `path` only once it is complete.

    Raises:
        ArgumentError: a value that is none of these (the message gives its place).

    Example:
        >>> zoo.save_tensors({"x": torch.arange(4), "y": torch.zeros(4)}, "mydict")
        >>> zoo.load_tensors("mydict")["x"]
        tensor([0, 1, 2, 3])
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(obj, (), tensors, {})
    _check_storable(tensors, None)
    metadata = {"format": "pt", STRUCTURE_KEY: json.dumps(structure, allow_nan=False)}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; save_tensors writes one file")
    if not path.parent.is_dir():
        raise WeightsError(f"cannot save to {path}: the folder {path.parent} does not exist")
    try:
        with fsio.atomic_file(path) as f, _progress(total, f"saving {path.name}") as bar:
            _write(f, tensors, metadata, None, bar)
    except OSError as err:  # a full disk, no permission: the previous file, if any, is still whole
        raise WeightsError(f"cannot save to {path}: {err}") from err


def load_tensors(path: str | Path, device: str | torch.device | None = None) -> Any:
    """Read what save_tensors wrote, with the same nesting and container types (mappings as dict).

    A safetensors file written by another tool comes back as a dict of its tensors.

    Raises:
        WeightsError: the file is missing, not safetensors, a pickle, or its structure is corrupt.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; load_tensors reads one file (for a model folder use zoo.load)")
    with open_stored(path) as stored:
        text = stored.headers[0].metadata.get(STRUCTURE_KEY)
        cache: dict[str, torch.Tensor] = {}

        def tensor(key: str) -> torch.Tensor:
            if key not in cache:
                loaded = stored.tensor(key)
                cache[key] = loaded.to(device) if device is not None else loaded
            return cache[key]

        if text is None:
            return {key: tensor(stored.aliases.get(key, key)) for key in stored.keys()}
        structure = jsonio.loads(text, f"{path}: `{STRUCTURE_KEY}`")
        return _decode(structure, stored, tensor, path)


def _encode(
    obj: Any, where: tuple[Any, ...], tensors: dict[str, torch.Tensor], seen: dict[tuple[Any, ...], str]
) -> Any:
    if isinstance(obj, torch.Tensor):
        identity = _identity(obj)
        if identity is not None and identity in seen:
            return {"tensor": seen[identity]}
        key = ".".join(str(part) for part in where) or "tensor"
        base, n = key, 1
        while key in tensors:  # {"a.b": x, "a": {"b": y}} would otherwise collide
            key, n = f"{base}#{n}", n + 1
        tensors[key] = obj
        if identity is not None:
            seen[identity] = key
        return {"tensor": key}
    if isinstance(obj, Mapping):
        items = []
        for k, value in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise ArgumentError(f"{_place(where)}: dict keys must be str or int to be stored, got {k!r}")
            items.append([k, _encode(value, (*where, k), tensors, seen)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(value, (*where, i), tensors, seen) for i, value in enumerate(obj)]}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"float": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ArgumentError(
        f"{_place(where)} is a {type(obj).__name__}, which zoo does not store: save_tensors takes tensors in lists, "
        f"tuples and dicts (str or int keys), with numbers, strings, booleans and None beside them"
    )


def _decode(node: Any, stored: StoredTensors, tensor: Any, path: Path) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((kind, value),) = node.items()
        if kind == "tensor" and isinstance(value, str) and value in stored:
            return tensor(stored.aliases.get(value, value))
        if kind in ("list", "tuple") and isinstance(value, list):
            items = [_decode(v, stored, tensor, path) for v in value]
            return items if kind == "list" else tuple(items)
        if kind == "dict" and isinstance(value, list) and all(isinstance(i, list) and len(i) == 2 for i in value):
            return {k: _decode(v, stored, tensor, path) for k, v in value}
        if kind == "float" and value in ("nan", "inf", "-inf"):
            return float(value)
    raise WeightsError(f"{path}: `{STRUCTURE_KEY}` in the header is corrupt near {json.dumps(node)[:80]}")


def _place(where: tuple[Any, ...]) -> str:
    return "obj" + "".join(f"[{part!r}]" for part in where)
