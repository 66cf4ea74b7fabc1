"""Saved model folders, laid out like a Hub model repository: zoo.save and zoo.load.

    model.safetensors           the weights (or model-0000k-of-0000n.safetensors + model.safetensors.index.json)
    config.json                 the resolved, inlined declaration, provenance and zoo version
    README.md                   a model card: library_name: zoo, parameter count, how to load it

config.json rebuilds the model with no registry file and no user code: only the installed
blocks are needed, and a missing one is named with the distribution that provided it.

A save fills a folder beside the target and swaps it in whole (zoo._files.fsio), so a crash at any
moment leaves the previous save. A load builds the model on the meta device (no memory, no
random initialisation), checks everything against the headers, then hands the model the
memory-mapped tensors: no copy at all, unless a dtype or device asks for one.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from zoo._build import builder, devices, lazy
from zoo._build.builder import RegistryArg
from zoo._build.known_shapes import materialize_from_shapes
from zoo._build.materialize import materialize
from zoo._build.meta import meta_build, parameters_on_meta
from zoo._errors import (
    ArgumentError,
    DeviceError,
    NotMaterializedError,
    UnknownNameError,
    WeightsError,
    ZooError,
    did_you_mean,
    listing,
)
from zoo._files import fsio, jsonio
from zoo._language.registry import Registry
from zoo._scale import fsdp
from zoo._scale.placement import Plan, dispatch
from zoo._scale.placement import plan as plan_placement
from zoo._weights import fit, layout, reader, writer

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from zoo._scale.fsdp import ShardPolicy

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
CONFIG_FORMAT = 1  # layout of config.json; a newer one is refused with a message
_CARD_MARK = "<!-- written by zoo.save: saving again replaces this file unless you delete this line -->"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


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


# --- saving ----------------------------------------------------------------------------------


def save(
    model: nn.Module,
    path: str | Path,
    *,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save `model` to the folder `path`, ready for zoo.load (or zoo.load_weights for a model zoo did not build).

    The folder appears complete or not at all: it is written beside `path` and swapped in,
    with fsync, so a crash leaves the previous save; files in it that zoo did not write are kept,
    and so are its mode and owner. A symlink is followed and kept. The swap puts a new folder
    under the name: another process whose current directory is in the old one (a shell cd'd
    into it) is left in a deleted folder and must cd again; this process is moved for you.

    Args:
        max_shard_size: split the weights into shards of at most this size (bytes, or "2GB",
            "500MiB"), with a transformers-compatible index. Default: one model.safetensors.
        dtype: store floating-point tensors in this precision (say torch.float16); others stay.

    Returns:
        The folder.

    Raises:
        NotMaterializedError: the model still has lazy layers.
        WeightsError: `path` is a file, or the model holds something safetensors cannot store.
        ArgumentError: a bad `max_shard_size` or `dtype`.

    Example:
        >>> zoo.save(zoo.build("chimera"), "chimera")
        >>> model = zoo.load("chimera")
    """
    lazy.require_materialized(model, "save")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise WeightsError(f"{target} is a file; zoo.save writes a folder (model.safetensors, config.json, README.md)")
    if fsdp.is_sharded(model):  # every rank calls save and writes its part; no model card
        if max_shard_size is not None or dtype is not None:
            raise ArgumentError(
                "a sharded model is saved one shard file per rank: max_shard_size= and dtype= do not apply"
            )
        save_id = fsdp.same_on_all_ranks(new_save_id())
        config = config_text(model, save_id)
        with fsdp.atomic_dir(target, keep=lambda name: _not_ours(target, name)) as folder:
            fsdp.write_model(folder, model, config, save_id)
        return target
    save_id = new_save_id()
    config = config_text(model, save_id)  # before anything is written: a declaration JSON cannot hold fails here
    try:
        with fsio.atomic_dir(target, keep=lambda name: _not_ours(target, name)) as folder:
            write_model(folder, model, config, save_id, max_shard_size=max_shard_size, dtype=dtype)
    except OSError as err:  # a full disk, no permission: the previous save, if any, is still whole
        raise WeightsError(f"cannot save to {target}: {err}") from err
    return target


def new_save_id() -> str:
    """A random id shared by config.json and every weights file of one save."""
    return secrets.token_hex(8)


def write_model(
    folder: Path,
    model: nn.Module,
    config: str | None,
    save_id: str,
    *,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    card: bool = True,
) -> list[str]:
    """Write the weights, config.json (for models zoo built) and the card into a fresh folder; return the names."""
    names = writer.write_model_files(
        folder, model.state_dict(), max_shard_size=max_shard_size, dtype=dtype, metadata={layout.SAVE_ID_KEY: save_id}
    )
    if config is not None:
        (folder / CONFIG_FILE).write_text(config, encoding="utf-8")
        names.append(CONFIG_FILE)
    if card and not (folder / CARD_FILE).exists():  # a card of the user's own was carried over: keep it
        (folder / CARD_FILE).write_text(_card(model, folder, names), encoding="utf-8")
        names.append(CARD_FILE)
    return names


def config_text(model: nn.Module, save_id: str) -> str | None:
    """config.json's text for a model zoo built; None for any other model.

    Raises:
        WeightsError: the declaration holds a value JSON cannot (an object passed as an argument).
    """
    from zoo import __version__

    info = builder.build_info(model)
    if info is None:
        return None
    config = {
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


def _not_ours(folder: Path, name: str) -> bool:
    """Files of a previous save that zoo did not write, to carry over into the new one (a card the user wrote too)."""
    if name == CARD_FILE:
        try:
            return _CARD_MARK not in (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return True
    return name not in (layout.MODEL_FILE, layout.INDEX_FILE, CONFIG_FILE) and not _SHARD.match(name)


def _card(model: nn.Module, folder: Path, files: list[str]) -> str:
    info = builder.build_info(model)
    name = info.name if info is not None else type(model).__name__
    params = sum(p.numel() for p in model.parameters())  # each shared Parameter counted once
    stored = sum((folder / f).stat().st_size for f in files if f.endswith(".safetensors"))
    lines = [
        "---",
        "library_name: zoo",
        "tags:",
        "- zoo",
        "- pytorch",
        "- safetensors",
        "---",
        _CARD_MARK,
        "",
        f"# {name}",
        "",
    ]
    doc = _doc(name) if info is not None else ""
    if doc:
        lines += [doc, ""]
    weight_files = [f for f in files if f.endswith(".safetensors")]
    lines += [
        f"- Parameters: {params:,} (a shared parameter counted once)",
        f"- Weights: {len(weight_files)} safetensors file(s), {devices.human_bytes(stored)}",
    ]
    if info is not None:
        blocks = ", ".join(f"{block} ({origin})" for block, origin in sorted(info.provenance.items()))
        lines.append(f"- Blocks: {blocks}")
        if info.input_shape:
            lines.append(f"- Example input shape: {list(info.input_shape)}")
        lines += [
            "",
            "## Load it",
            "",
            "```python",
            "import zoo",
            "",
            'model = zoo.load("path/to/this/folder")  # rebuilt from config.json: no code of yours needed',
            "```",
        ]
    else:
        lines += [
            "",
            "## Load it",
            "",
            "The folder holds weights only (the model was not built by zoo): build the architecture in code, then",
            "",
            "```python",
            "import zoo",
            "",
            f"model = {name}(...)",
            'zoo.load_weights(model, "path/to/this/folder")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def _doc(name: str) -> str:
    try:
        entry = builder.entry_of(name)
    except ZooError:  # a name this process does not know: no doc line, the card is complete without it
        return ""
    return entry.doc if entry is not None else ""


# --- loading ---------------------------------------------------------------------------------


def load(
    path: str | Path,
    *,
    device: devices.DeviceArg = None,
    device_map: devices.DeviceMapArg | None = None,
    max_memory: devices.MemoryArg = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    registry: RegistryArg = None,
    mesh: DeviceMesh | None = None,
    shard: ShardPolicy = None,
    mmap: bool = True,
) -> nn.Module:
    """Rebuild the model saved in the local folder `path` from its config.json and load its weights; in eval mode.

    zoo.load (zoo._api) is the public form, which also takes Hub addresses.
    The model is built on the meta device and given the memory-mapped tensors (no random
    initialisation, no copy); dtype and device conversions go tensor by tensor. Shared
    weights come back shared.

    A mapped tensor reads the file itself: zoo's own saves replace files by rename and never
    touch a mapped one, but truncating the file in place (`truncate`, a partial copy) makes
    the next forward die with SIGBUS, and `cp` over it silently changes the live weights.
    Pass mmap=False where another program may rewrite the files in place.

    Args:
        path: the folder.
        device: where the tensors go ("cpu" by default, "cuda:0", "auto"). A checkpoint saved on
            a GPU this machine lacks loads onto the CPU, with one line on the "zoo" logger.
        device_map: spread the model over devices instead: "auto", "balanced" or {module path:
            device} (see zoo.plan); each tensor is read from the file straight onto its device,
            and inputs follow the blocks by themselves. Not together with `device`.
        max_memory: per-device budgets for `device_map`, e.g. {"cuda:0": "10GiB", "cpu": "30GiB"}.
        dtype: convert floating-point tensors to this precision.
        strict: raise on any missing, unexpected or mismatched key (default). When False, the
            model is built normally (random initial values), what fits is loaded, and the
            LoadReport is left on the model as `model.zoo_load_report`.
        registry: extra registry files, as for zoo.build (blocks come from the installed plugins).
        mesh: shard the model over the ranks of this torch.distributed DeviceMesh with FSDP2: each
            rank allocates and reads from the files only its rows of each tensor. Strict; not
            together with `device` or `device_map`.
        shard: with `mesh`, which blocks become FSDP units, as for zoo.build.
        mmap: True (default): CPU tensors map the file, so loading costs no copy and the OS shares
            the pages between processes. False: every tensor is copied into this process's
            own memory, and nothing done to the files afterwards reaches the model.

    Raises:
        WeightsError: no such folder, no zoo save in it, a foreign config.json or none (weights
            only: the message shows the zoo.load_weights line), a corrupt or unsafe file, or
            weights that do not fit the declaration.
        UnknownNameError: a block the declaration needs is not installed (the message names
            the distribution and version that provided it).
        DeviceError: `device` is not on this machine.
        ArgumentError: `dtype` is not a floating-point torch.dtype (a string such as "float16").
    """
    devices.check_dtype(dtype)  # a dtype given as a string ("float16") would reach torch as a device
    if mesh is not None or shard is not None:
        if device is not None or device_map is not None or not strict:
            raise DeviceError(
                f"load {path}: mesh= places the shards itself; it takes no device=, device_map= or strict=False"
            )
        return fsdp.load(path, mesh=mesh, shard_policy=shard, dtype=dtype, registry=registry)
    if device is not None and device_map is not None:
        raise DeviceError(f"load {path}: pass device= or device_map=, not both.")
    folder = Path(path)
    fsio.recover(folder)
    target = devices.resolve(device) if device is not None else None  # a missing device fails before reading
    placement = _Placement(target, device_map, max_memory, dtype)
    # Another process may replace the folder while this one reads it (zoo.save swaps the whole
    # folder in). A read that mixes two saves fails on their save ids and a file may vanish
    # under it; when the folder's identity changed meanwhile, that is the cause: read again.
    for attempt in range(_ATTEMPTS):
        before = fsio.identity(folder)
        try:
            return _load_once(folder, placement, dtype, strict, registry, mmap)
        except (WeightsError, FileNotFoundError) as err:
            if fsio.identity(folder) == before or attempt == _ATTEMPTS - 1:
                if isinstance(err, FileNotFoundError):
                    raise WeightsError(f"{folder} changed while it was read: {err}") from err
                raise
    raise AssertionError("unreachable")


_ATTEMPTS = 5  # reads interrupted by another process's save, before giving up


@dataclass(frozen=True)
class _Placement:
    """Where a load puts each tensor: one device, or a device map planned once the model's shapes are known."""

    device: torch.device | None
    device_map: devices.DeviceMapArg | None
    max_memory: devices.MemoryArg
    dtype: torch.dtype | None

    def plan(self, model: nn.Module) -> Plan | None:
        if self.device_map is None:
            return None
        return plan_placement(model, device_map=self.device_map, max_memory=self.max_memory, dtype=self.dtype)

    def target(self, config: SavedConfig, folder: Path) -> torch.device | None:
        if self.device is None and config.saved_on is not None:  # a GPU checkpoint on a CPU-only machine: say so
            devices.for_checkpoint(None, config.saved_on, source=str(folder))
        return self.device


def _load_once(
    folder: Path, placement: _Placement, dtype: torch.dtype | None, strict: bool, registry: RegistryArg, mmap: bool
) -> nn.Module:
    config = read_config(folder)
    if config is None and not any((folder / name).is_file() for name in (layout.MODEL_FILE, layout.INDEX_FILE)):
        present = [p.name for p in folder.iterdir()]
        raise WeightsError(
            f"{folder} holds no zoo save (no {CONFIG_FILE}, {layout.MODEL_FILE} or {layout.INDEX_FILE}); "
            f"it holds: {listing(present)}. Write one with zoo.save(model, '{folder}')."
        )
    if config is None:
        raise WeightsError(
            f"{folder} holds weights only (no {CONFIG_FILE}: the model was not built by zoo). "
            + load_weights_hint(str(folder))
        )
    reg = builder.registry_for(registry)
    _require_blocks(config, reg, folder / CONFIG_FILE)
    with reader.open_stored(folder) as stored:
        if config.save_id is not None and stored.save_id is not None and config.save_id != stored.save_id:
            raise WeightsError(
                f"{folder}: {CONFIG_FILE} (save {config.save_id}) and the weights (save {stored.save_id}) come from "
                f"different saves; save the model again"
            )
        target = placement.target(config, folder)
        model = _load_fast(config, reg, folder, stored, placement, target, dtype, mmap) if strict else None
        if model is None:
            model = _load_slow(config, reg, folder, stored, strict)
            plan = placement.plan(model)
            if plan is not None:
                dispatch(model, plan)  # moves each block once, to its device
            elif target is not None or dtype is not None:
                model.to(device=target, dtype=dtype)
    return model.eval()


def _load_fast(
    config: SavedConfig,
    reg: Registry,
    folder: Path,
    stored: reader.StoredTensors,
    placement: _Placement,
    device: torch.device | None,
    dtype: torch.dtype | None,
    mmap: bool = True,
) -> nn.Module | None:
    """Build on the meta device and hand over the mapped tensors; None when a lazy layer needs a forward pass."""
    with meta_build():
        model = _build(config, reg, folder)
    report = fit.check_fit(model.state_dict(keep_vars=True), stored)
    if report:
        raise fit.misfit_error(report, stored.where, f"the model its {CONFIG_FILE} declares")
    if not _size_from_headers(model, stored, config):
        return None  # a lazy layer zoo cannot size from shapes alone: the slow path materialises it by a forward
    plan = placement.plan(model)  # shapes are known now; nothing is allocated yet
    where = plan.device_for if plan is not None else device
    fit.apply_stored(model, stored, report, device=where, dtype=dtype, private=not mmap)
    _compute_buffers(model, config, reg, folder, where, dtype)
    if plan is not None:
        dispatch(model, plan)  # every tensor is in place: this only installs the input hooks
    return model


def _size_from_headers(model: nn.Module, stored: reader.StoredTensors, config: SavedConfig) -> bool:
    """Give lazy layers their shapes from the stored tensors; False when one needs a forward (and can have one)."""
    if not lazy.is_lazy(model):
        return True
    try:
        materialize_from_shapes(model, stored.shapes())
    except NotMaterializedError:
        if config.input_shape is None:
            raise
        return False
    return True


def _load_slow(
    config: SavedConfig, reg: Registry, folder: Path, stored: reader.StoredTensors, strict: bool
) -> nn.Module:
    """Build normally (initial values drawn), materialise, copy in what fits; keep a non-strict load's report."""
    model = _build(config, reg, folder)
    if not _size_from_headers(model, stored, config):
        assert config.input_shape is not None  # _size_from_headers raised otherwise
        materialize(model, input_shape=config.input_shape)
    report = fit.check_fit(model.state_dict(keep_vars=True), stored)
    if strict and report:
        raise fit.misfit_error(report, stored.where, f"the model its {CONFIG_FILE} declares")
    fit.apply_stored(model, stored, report)
    if not strict:
        model.__dict__["zoo_load_report"] = report
    return model


def read_config(folder: str | Path, shown_as: str | None = None) -> SavedConfig | None:
    """The folder's config.json, checked; None when there is none (a weights-only save).

    `shown_as` is how to name the source in a message that says to load the weights with
    zoo.load_weights (a Hub address for a repo's snapshot); default the folder.

    Raises:
        WeightsError: no such folder, or a config.json that is not what zoo.save writes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise WeightsError(
                f"{folder} is a file; zoo.load takes the folder zoo.save wrote "
                f"(to load one file into a model you built: zoo.load_weights(model, '{folder}'))"
            )
        siblings = [p.name for p in folder.parent.iterdir()] if folder.parent.is_dir() else []
        raise WeightsError(f"no such folder: {folder}.{did_you_mean(folder.name, siblings)}")
    file = folder / CONFIG_FILE
    if not file.exists() and not file.is_symlink():
        return None
    data = jsonio.read(file)  # bounded: a hostile folder cannot hang or exhaust this process
    if not isinstance(data, dict) or "declaration" not in data:
        raise WeightsError(
            f"{file} is not a zoo config (no `declaration`). {foreign_config_hint(data, shown_as or str(folder))}"
        )
    version = data.get("zoo_format")
    if not isinstance(version, int) or version > CONFIG_FORMAT:
        raise WeightsError(
            f"{file} has zoo_format {version!r}, written by zoo {data.get('zoo_version', '?')}; this zoo reads "
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
    )


def foreign_config_hint(data: Any, source: str) -> str:
    """What to do with a config.json another library wrote (transformers': model_type, architectures)."""
    said = ""
    if isinstance(data, dict):
        facts = [f"{key} {data[key]!r}" for key in ("model_type", "architectures") if key in data]
        said = (
            f"It was written by another library ({', '.join(facts)}): "
            if facts
            else "It was written by another library: "
        )
    return said + load_weights_hint(source)


def load_weights_hint(source: str) -> str:
    """How to use weights without a zoo declaration: build the architecture with zoo, load the weights into it."""
    return (
        f"zoo cannot tell which model to build from it. Build the architecture with zoo (an entry declared "
        f'for it) and load the weights into that: zoo.load_weights(zoo.build("NAME"), "{source}")'
    )


def _build(config: SavedConfig, reg: Registry, folder: Path) -> nn.Module:
    example: Any = config.input or (list(config.input_shape) if config.input_shape else None)
    declaration = {**config.declaration, **({"input": example} if example else {})}
    return builder.build_declaration(config.name, declaration, file=str(folder / CONFIG_FILE), registry=reg)


def _require_blocks(config: SavedConfig, reg: Registry, file: Path) -> None:
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


def _compute_buffers(
    model: nn.Module,
    config: SavedConfig,
    reg: Registry,
    folder: Path,
    device: torch.device | Callable[[str], torch.device] | None,
    dtype: torch.dtype | None,
) -> None:
    """Give real values to buffers no file holds (non-persistent ones, computed by constructors).

    They come from a second build whose parameters go to the meta device as they are
    registered, so it costs the buffers and no parameter memory.
    """
    pending = [key for key, buffer in model.named_buffers(remove_duplicate=False) if buffer.is_meta]
    if pending:
        with parameters_on_meta():
            computed = dict(_build(config, reg, folder).named_buffers(remove_duplicate=False))
        for key in pending:
            prefix, _, name = key.rpartition(".")
            value = computed[key]
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            where = device(key) if callable(device) else device
            model.get_submodule(prefix)._buffers[name] = value.to(where) if where is not None else value

    def meant_for_meta(key: str) -> bool:  # a device map may place blocks on meta on purpose
        where = device(key) if callable(device) else device
        return where is not None and torch.device(where).type == "meta"

    tensors = (*model.named_parameters(), *model.named_buffers())
    left = [key for key, t in tensors if t.is_meta and not meant_for_meta(key)]
    if left:  # strict loading rules this out; a block that creates tensors in forward could still get here
        raise WeightsError(f"{folder}: these tensors got no values: {listing(left)}")
