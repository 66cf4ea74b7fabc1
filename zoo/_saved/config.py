"""config.json: the resolved declaration of a saved model, read back to rebuild it with no code.

zoo's record:

    {"zoo_format": 1, "zoo_version", "save_id", "name", "declaration", "input_shape",
     "input_dtype"/"input_high" (token ids), "provenance" (block -> "distribution version"),
     "saved_on" (the parameters' device), "overrides"}

A model whose entry maps to a transformers config (`[entry.transformers]`) is saved with
transformers' keys at the top, so that `from_pretrained` reads the file, and zoo's record
under one key of its own, `"zoo"`, which transformers keeps as an attribute and ignores:

    {"model_type": "gpt2", "architectures": [...], "n_embd": 768, ..., "dtype": "float32", "zoo": {record}}

A config.json with a `model_type` and no `zoo` record is transformers' own: read here as a
TransformersConfig, which zoo._saved.foreign turns into the entry that builds it. Any other
config.json another library wrote is refused with the zoo.load_weights line to use instead.
The file is read through zoo._files.jsonio, bounded: a hostile folder cannot hang or exhaust the reader.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._build import builder
from zoo._errors import UnknownNameError, WeightsError, did_you_mean, shown
from zoo._files import jsonio
from zoo._language.registry import Registry
from zoo._version import __version__

CONFIG_FILE = "config.json"
CONFIG_FORMAT = 1  # layout of zoo's record; a newer one is refused with a message
RECORD_KEY = "zoo"  # in a config.json with transformers' keys at the top: zoo's record
_DTYPE_KEYS = ("dtype", "torch_dtype")  # transformers' name for the weights' dtype (torch_dtype before 4.56)


@dataclass(frozen=True)
class TransformersConfig:
    """A config.json's transformers part: `model_type`, `architectures` and the rest of its keys."""

    data: Mapping[str, Any]  # every top-level key but zoo's record
    file: Path

    @property
    def model_type(self) -> str:
        return str(self.data["model_type"])

    @property
    def architectures(self) -> tuple[str, ...]:
        found = self.data.get("architectures")
        return tuple(a for a in found if isinstance(a, str)) if isinstance(found, list) else ()

    def keys_to_keep(self) -> dict[str, Any]:
        """What a later zoo.save writes again at the top (the weights' dtype is said anew then)."""
        return {k: v for k, v in self.data.items() if k not in _DTYPE_KEYS}


@dataclass(frozen=True)
class SavedConfig:
    """What config.json says about a saved model."""

    name: str
    declaration: dict[str, Any]  # resolved and inlined: rebuilds with no registry file
    input_shape: tuple[int, ...] | None
    provenance: dict[str, str]  # block type → "distribution version" that provided it
    zoo_version: str
    save_id: str | None  # the same id is in every weights file of the save
    saved_on: str | None = None  # the device the parameters were on ("cuda:0"), for a notice on load
    input: dict[str, Any] | None = None  # the example input as a declaration's `input` (a table for token ids)
    transformers: TransformersConfig | None = None  # the file's transformers keys, when the entry maps to them
    entry: str | None = None  # build this registry entry with `overrides` instead of `declaration` (foreign.py)
    overrides: Mapping[str, Any] = field(default_factory=dict)


def new_save_id() -> str:
    """A random id shared by config.json and every weights file of one save."""
    return secrets.token_hex(8)


def config_text(model: nn.Module, save_id: str, dtype: torch.dtype | None = None) -> str | None:
    """config.json's text for a model zoo built; None for any other model.

    `dtype` is the one the floating tensors are stored in, when the save converts them.

    Raises:
        WeightsError: the declaration holds a value JSON cannot (an object passed as an argument).
    """
    info = builder.build_info(model)
    if info is None:
        return None
    record = {
        "zoo_format": CONFIG_FORMAT,
        "zoo_version": __version__,
        "save_id": save_id,
        "name": info.name,
        "declaration": info.declaration,
        "input_shape": list(info.input_shape) if info.input_shape else None,
        **({"input_dtype": info.input_dtype, "input_high": info.input_high} if info.input_dtype else {}),
        "provenance": info.provenance,
        "saved_on": _saved_on(model),
        "overrides": {k: v if isinstance(v, (bool, int, float, str)) else repr(v) for k, v in info.overrides.items()},
    }
    config: dict[str, Any] = record
    if info.transformers is not None:  # transformers' keys at the top, zoo's record beside them
        stored = dtype or next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        config = {**info.transformers, "dtype": str(stored).removeprefix("torch."), RECORD_KEY: record}
    try:
        return json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise WeightsError(
            f"'{info.name}' cannot be saved with its declaration: {err} (an argument that is no TOML value?). "
            f"Declare it with plain values, or save the weights alone: zoo.save_tensors(model.state_dict(), path)"
        ) from err


def _saved_on(model: nn.Module) -> str | None:
    first = next(iter(model.parameters()), None)
    return str(first.device) if first is not None else None


def read_config(folder: str | Path, shown_as: str | None = None) -> SavedConfig | TransformersConfig | None:
    """The folder's config.json, checked: zoo's record, transformers' config alone, or None (a weights-only save).

    `shown_as` is how to name the source in a message that says to load the weights with
    zoo.load_weights (a Hub address for a repo's snapshot); default the folder.

    Raises:
        WeightsError: no such folder, or a config.json that is neither zoo's nor transformers'.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            said = f"{folder} is a file; zoo.load takes the folder zoo.save wrote"
            raise WeightsError(
                f"{said} (to load one file into a model you built: zoo.load_weights(model, '{folder}'))",
                cli=f"{said} (to build a model and load one file into it: zoo load-weights NAME {folder})",
            )
        siblings = [p.name for p in folder.parent.iterdir()] if folder.parent.is_dir() else []
        raise WeightsError(f"no such folder: {folder}.{did_you_mean(folder.name, siblings)}")
    file = folder / CONFIG_FILE
    if not file.exists() and not file.is_symlink():
        return None
    data = jsonio.read(file)  # bounded: a hostile folder cannot hang or exhaust this process
    hf = None
    if isinstance(data, dict) and isinstance(data.get("model_type"), str):
        hf = TransformersConfig({k: v for k, v in data.items() if k != RECORD_KEY}, file)
        if not isinstance(data.get(RECORD_KEY), dict):
            return hf  # transformers wrote it: zoo._saved.foreign finds the entry that builds it
        data = data[RECORD_KEY]
    if not isinstance(data, dict) or "declaration" not in data:
        said, source = f"{file} is not a zoo config (no `declaration`). ", shown_as or str(folder)
        raise WeightsError(
            said + foreign_config_hint(data, source), cli=said + foreign_config_hint(data, source, cli=True)
        )
    version = data.get("zoo_format")
    if not isinstance(version, int) or version > CONFIG_FORMAT:
        raise WeightsError(
            f"{file} has zoo_format {shown(version)}, written by zoo {data.get('zoo_version', '?')}; this zoo reads "
            f"format {CONFIG_FORMAT} and older. Upgrade zoo (pip install -U zoo)."
        )
    shape = data.get("input_shape")
    provenance = data.get("provenance", {})
    checks = [
        (isinstance(data.get("name"), str) and data["name"], "`name` must be a non-empty string"),
        (isinstance(data["declaration"], dict), "`declaration` must be a table"),
        (
            shape is None or (isinstance(shape, list) and all(type(d) is int and d > 0 for d in shape)),
            "`input_shape` must be null or a list of positive sizes",
        ),
        (
            isinstance(provenance, dict) and all(isinstance(v, str) for v in provenance.values()),
            "`provenance` must map block names to 'distribution version'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise WeightsError(f"{file}: {message}")
    save_id, saved_on = data.get("save_id"), data.get("saved_on")
    example: dict[str, Any] | None = None
    if shape and data.get("input_dtype") is not None:
        example = {"shape": shape, "dtype": data["input_dtype"]}
        if data.get("input_high") is not None:
            example["high"] = data["input_high"]
    return SavedConfig(
        data["name"],
        data["declaration"],
        tuple(shape) if shape else None,
        provenance,
        str(data.get("zoo_version", "?")),
        save_id if isinstance(save_id, str) else None,
        saved_on if isinstance(saved_on, str) else None,
        example,
        hf,
    )


def foreign_config_hint(data: Any, source: str, *, cli: bool = False) -> str:
    """What to do with a config.json another library wrote (a Mixin's: no model_type zoo can read)."""
    said = ""
    if isinstance(data, dict):
        facts = [f"{key} {shown(data[key])}" for key in ("model_type", "architectures") if key in data]
        said = (
            f"It was written by another library ({', '.join(facts)}): "
            if facts
            else "It was written by another library: "
        )
    return said + load_weights_hint(source, cli=cli)


def load_weights_hint(source: str, *, cli: bool = False) -> str:
    """How to use weights without a zoo declaration: build the architecture with zoo, load the weights into it.

    `cli`: in the command line's words (`zoo load-weights NAME SOURCE`) instead of Python's.
    """
    load = f"zoo load-weights NAME {source}" if cli else f'zoo.load_weights(zoo.build("NAME"), "{source}")'
    return (
        "zoo cannot tell which model to build from it. Build the architecture with zoo (an entry declared "
        f"for it) and load the weights into that: {load}"
    )


def rebuild(config: SavedConfig, reg: Registry, folder: Path) -> nn.Module:
    """The model config.json declares, built with the blocks installed here (on whatever device context is active).

    Transformers' keys of the file stay with the model (`zoo_info.transformers`), so a later
    zoo.save writes them again.
    """
    if config.entry is not None:  # a transformers config: the registry entry that builds it
        return builder.build(config.entry, config.overrides, registry=reg)
    example: Any = config.input or (list(config.input_shape) if config.input_shape else None)
    declaration = {**config.declaration, **({"input": example} if example else {})}
    model = builder.build_declaration(config.name, declaration, file=str(folder / CONFIG_FILE), registry=reg)
    info = builder.build_info(model)
    if config.transformers is not None and info is not None:
        model.__dict__["zoo_info"] = replace(info, transformers=config.transformers.keys_to_keep())
    return model


def require_blocks(config: SavedConfig, reg: Registry, file: Path) -> None:
    """Name every block the declaration needs that is not installed, with what provided it at save time."""
    missing = []
    for block in sorted(set(_block_types(config.declaration))):
        try:
            reg.resolve(block)
        except UnknownNameError:
            base = block.split(":", 1)[-1]
            missing.append(f"'{block}'{did_you_mean(base, reg.names())} ({_how_to_get(config.provenance.get(base))})")
    if missing:
        raise UnknownNameError(
            f"{file}: '{config.name}' needs block(s) that are not installed here: {'; '.join(missing)}"
        )


def _how_to_get(origin: str | None) -> str:
    if origin is None:
        return "config.json does not say who provided it"
    dist, _, version = origin.partition(" ")
    if not version:  # registered in Python with zoo.register, not installed from a distribution
        return f"registered in Python by module '{dist}' with zoo.register: register it again before zoo.load"
    return f"saved with {dist} {version}: pip install '{dist}=={version}'"


def _block_types(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if isinstance(node.get("type"), str):
            yield node["type"]
        for value in node.values():
            yield from _block_types(value)
    elif isinstance(node, list):
        for value in node:
            yield from _block_types(value)
