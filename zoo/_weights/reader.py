"""Reading safetensors files and folders: every header checked before any tensor is mapped."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from zoo._errors import WeightsError, did_you_mean, listing
from zoo._files import fsio, jsonio
from zoo._language.keymap import KeyMap
from zoo._weights.layout import (
    ALIASES_KEY,
    ALIGNMENT,
    DTYPES,
    INDEX_FILE,
    MODEL_FILE,
    PICKLE_SUFFIXES,
    SAVE_ID_KEY,
)

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
    _raw: dict[Path, BinaryIO] = field(default_factory=dict, repr=False)  # the same files, for reads by offset
    _starts: dict[Path, dict[str, int]] = field(default_factory=dict, repr=False)  # read when first needed

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

    def read_into(self, key: str, index: tuple[slice, ...], out: torch.Tensor) -> None:
        """Copy the part `index` of the tensor stored for `key` into `out`, converting to out's dtype and device.

        A block of whole rows (a rank's shard: the first index cuts, the others take everything)
        is read from the file straight into `out`, or through a bounded buffer when it needs
        converting, so nothing of the file stays mapped: the process's memory grows by `out`
        alone. Any other part goes through the memory map (`part`).
        """
        info = self.info(key)
        rows, rest = (index[0], index[1:]) if index else (slice(0, 1), ())
        whole_rows = all(
            (s.start or 0) == 0 and s.stop in (None, n) and s.step in (None, 1)
            for s, n in zip(rest, info.shape[1:], strict=True)
        )
        if not info.shape or not whole_rows or rows.step not in (None, 1) or info.file not in self._raw:
            out.copy_(self.part(key, index))
            return
        row_bytes = math.prod(info.shape[1:]) * info.dtype.itemsize
        first, count = rows.start or 0, (rows.stop if rows.stop is not None else info.shape[0]) - (rows.start or 0)
        if count <= 0:
            return
        begin = self._start(info) + first * row_bytes
        direct = out.dtype == info.dtype and out.device.type == "cpu" and out.is_contiguous()
        if direct:
            _pread(self._raw[info.file], out, begin, count * row_bytes, info.file)
            return
        per = max(1, _READ_CHUNK // max(row_bytes, 1))  # rows per buffer: one bounded copy at a time
        for at in range(0, count, per):
            n = min(per, count - at)
            buffer = torch.empty((n, *info.shape[1:]), dtype=info.dtype)
            _pread(self._raw[info.file], buffer, begin + at * row_bytes, n * row_bytes, info.file)
            out[at : at + n].copy_(buffer)

    def _start(self, info: TensorInfo) -> int:
        """Where the bytes of `info` begin in its file (the header is parsed once per file, when first needed)."""
        if info.file not in self._starts:
            self._starts[info.file] = _data_starts(info.file, self._raw[info.file])
        if info.key not in self._starts[info.file]:
            raise WeightsError(f"{info.file}: '{info.key}' is not in the header it was opened with")
        return self._starts[info.file][info.key]

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
        return StoredTensors(self.where, infos, aliases, self.headers, self._handles, foreign, self._raw, self._starts)

    @property
    def save_id(self) -> str | None:
        """The id of the save that wrote these files (checked to be one), if it recorded one."""
        return self.headers[0].metadata.get(SAVE_ID_KEY) if self.headers else None


_READ_CHUNK = 64 << 20  # bytes per buffer when a read converts dtypes or devices


def _pread(f: BinaryIO, out: torch.Tensor, offset: int, nbytes: int, file: Path) -> None:
    """Read `nbytes` at `offset` of `f` into the memory of the contiguous CPU tensor `out`."""
    if nbytes == 0:
        return
    view = memoryview((ctypes.c_ubyte * nbytes).from_address(out.data_ptr())).cast("B")
    done = 0
    try:
        while done < nbytes:
            got = os.preadv(f.fileno(), [view[done:]], offset + done)
            if got <= 0:
                raise WeightsError(f"{file} ends before the bytes its header promises (truncated while it was read?)")
            done += got
    except OSError as err:
        raise WeightsError(f"cannot read {file}: {err}") from err
    finally:
        del view  # the ctypes view must not outlive the tensor it points into


@contextlib.contextmanager
def open_stored(path: str | Path, *, shown_as: str | None = None) -> Iterator[StoredTensors]:
    """Open a safetensors file, or a model folder (one file or shards with an index), and check it all.

    `shown_as` is what messages about the tensors call the source (`where`; a Hub address for a
    snapshot in huggingface_hub's cache); default the path.

    Raises:
        WeightsError: naming the file, for anything missing, unreadable, truncated, inconsistent,
            or pickled (zoo never unpickles).
    """
    path = Path(path)

    # zoo.save and save_tensors replace `path` whole while another process may be opening it;
    # safetensors reads a header and maps the data in two steps, so a replacement in between
    # could pair one save's header with another's bytes: fsio.read_consistently opens it again.
    def attempt() -> tuple[StoredTensors, contextlib.ExitStack]:
        stack = contextlib.ExitStack()
        try:
            return _open_all(path, stack), stack
        except BaseException:
            stack.close()
            raise

    try:
        stored, stack = fsio.read_consistently(
            path, attempt, retry=(WeightsError,), discard=lambda opened: opened[1].close()
        )
    except WeightsError as err:
        if shown_as is None:
            raise
        # A Hub snapshot: its files by the address (hf://org/name/model.safetensors), not by the cache's path.
        raise WeightsError(
            str(err).replace(str(path), shown_as), cli=err.for_cli().replace(str(path), shown_as)
        ) from None
    if shown_as is not None:
        stored.where = shown_as
    with stack:
        yield stored


def _open_all(path: Path, stack: contextlib.ExitStack) -> StoredTensors:
    files, weight_map, index_metadata = _folder_files(path) if path.is_dir() else ([path], None, {})
    handles: dict[Path, Any] = {}
    raw: dict[Path, BinaryIO] = {}
    infos: dict[str, TensorInfo] = {}
    aliases: dict[str, str] = {}
    headers = []
    for file in files:
        handle, raw[file] = stack.enter_context(_open_file(file))
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
    return StoredTensors(str(path), infos, {**aliases, **foreign}, headers, handles, frozenset(foreign), raw)


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
def _open_file(file: Path) -> Iterator[tuple[Any, BinaryIO]]:
    if not file.exists():
        siblings = [p.name for p in file.parent.iterdir()] if file.parent.is_dir() else []
        raise WeightsError(f"no such weights file: {file}.{did_you_mean(file.name, siblings)}")
    if not file.is_file():
        raise WeightsError(f"{file} is not a file")
    try:
        raw = open(file, "rb")  # noqa: SIM115  (closed below, with the handle)
    except OSError as err:
        raise WeightsError(_unreadable(file, err)) from None
    with raw:
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:  # RuntimeError: torch could not map it
            raise WeightsError(_unreadable(file, err)) from None
        with handle:
            # Both opened the same file unless it was replaced in between (zoo.save swaps folders whole):
            # then the reads by offset would not match the header, and the caller opens it all again.
            if not os.path.samestat(os.fstat(raw.fileno()), os.stat(file)):
                raise WeightsError(f"{file} was replaced while it was opened")
            yield handle, raw


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
        if code not in DTYPES:
            raise WeightsError(f"{file}: '{key}' has dtype {code}, which this torch cannot hold")
        tensors.append(TensorInfo(key, file, DTYPES[code], tuple(view.get_shape())))
    return FileHeader(file, tuple(tensors), dict(handle.metadata() or {}))


_MAX_HEADER = 100_000_000  # safetensors' own limit, which its parser checked already


def _data_starts(file: Path, raw: BinaryIO) -> dict[str, int]:
    """Where each tensor's bytes begin in the file, from the header (which safetensors has checked)."""
    head = os.pread(raw.fileno(), 8, 0)
    size = struct.unpack("<Q", head)[0] if len(head) == 8 else _MAX_HEADER + 1
    if size > _MAX_HEADER:
        raise WeightsError(f"{file} changed after it was opened: its header is gone")
    try:
        header = jsonio.loads(os.pread(raw.fileno(), size, 8), f"{file}: header", max_bytes=_MAX_HEADER)
    except WeightsError as err:
        raise WeightsError(f"{file} changed after it was opened: its header no longer reads ({err})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{file} changed after it was opened: its header is gone")
    starts = {}
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) and key != "__metadata__" else None
        if isinstance(offsets, list) and offsets and isinstance(offsets[0], int):
            starts[key] = 8 + size + offsets[0]
    return starts


def _aliases(file: Path, header: FileHeader) -> dict[str, str]:
    text = header.metadata.get(ALIASES_KEY)
    if text is None:
        return {}
    aliases = jsonio.loads(text, f"{file}: `{ALIASES_KEY}`")
    if not isinstance(aliases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
        raise WeightsError(f"{file}: `{ALIASES_KEY}` must map key names to key names")
    return aliases
