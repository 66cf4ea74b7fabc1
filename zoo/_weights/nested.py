"""zoo.save_tensors / zoo.load_tensors: any nesting of dicts, lists and tuples of tensors, without pickle."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo._errors import ArgumentError, WeightsError
from zoo._files import fsio, jsonio
from zoo._weights.layout import STRUCTURE_KEY
from zoo._weights.progress import progress
from zoo._weights.reader import StoredTensors, open_stored
from zoo._weights.writer import check_storable, storage_identity, write_file

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
    check_storable(tensors, None)
    metadata = {"format": "pt", STRUCTURE_KEY: json.dumps(structure, allow_nan=False)}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if path.is_dir():
        raise WeightsError(f"{path} is a folder; save_tensors writes one file")
    if not path.parent.is_dir():
        raise WeightsError(f"cannot save to {path}: the folder {path.parent} does not exist")
    try:
        with fsio.atomic_file(path) as f, progress(total, f"saving {path.name}") as bar:
            write_file(f, tensors, metadata, None, bar)
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
        identity = storage_identity(obj)
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
