"""Saved model folders, laid out like a Hub model repository: what zoo.save writes and zoo.load reads.

    model.safetensors           the weights (or model-0000k-of-0000n.safetensors + model.safetensors.index.json)
    config.json                 the resolved, inlined declaration, provenance and zoo version (config.py)
    README.md                   a model card: library_name: zoo, parameter count, how to load it (card.py)

config.json rebuilds the model with no registry file and no user code: only the installed
blocks are needed, and a missing one is named with the distribution that provided it.

`write` fills a folder beside the target and swaps it in whole (zoo._files.fsio; across ranks
for a sharded model), so a crash at any moment leaves the previous save. `read` builds the
model on the meta device (no memory, no random initialisation), checks everything against the
headers, then places the stored tensors: memory-mapped on one device, read straight onto
their devices for a device map, or each rank's rows of a sharded model. Local paths only:
where a folder came from (a Hub repo's snapshot) is zoo._api's business.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from zoo._build import builder, devices, lazy, ties
from zoo._build.builder import RegistryArg
from zoo._build.known_shapes import materialize_from_shapes
from zoo._build.materialize import materialize
from zoo._build.meta import (
    buffers_no_file_holds,
    device_for,
    fill_buffers,
    meta_build,
    place_computed_buffers,
)
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError, WeightsError, listing
from zoo._files import fsio
from zoo._language.registry import Registry
from zoo._saved import foreign
from zoo._saved.card import CARD_FILE, card_text, not_ours
from zoo._saved.config import (
    CONFIG_FILE,
    SavedConfig,
    TransformersConfig,
    config_text,
    load_weights_hint,
    new_save_id,
    read_config,
    rebuild,
    require_blocks,
)
from zoo._scale import fsdp, placement
from zoo._weights import fit, layout, reader, writer

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


# --- writing ---------------------------------------------------------------------------------


def write(
    model: nn.Module, path: str | Path, *, max_shard_size: int | str | None = None, dtype: torch.dtype | None = None
) -> Path:
    """zoo.save: the model's folder at `path`, complete or not at all; a sharded model is written by every rank."""
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
        with fsdp.atomic_dir_on_ranks(target, keep=lambda name: not_ours(target, name)) as folder:
            write_shard_files(folder, model, config, save_id)
        return target
    save_id = new_save_id()
    config = config_text(model, save_id, dtype)  # before anything is written: a declaration JSON cannot hold fails here
    try:
        with fsio.atomic_dir(target, keep=lambda name: not_ours(target, name)) as folder:
            write_files(folder, model, config, save_id, max_shard_size=max_shard_size, dtype=dtype)
    except OSError as err:  # a full disk, no permission: the previous save, if any, is still whole
        raise WeightsError(f"cannot save to {target}: {err}") from err
    return target


def write_files(
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
        (folder / CARD_FILE).write_text(card_text(model, folder, names), encoding="utf-8")
        names.append(CARD_FILE)
    return names


def write_shard_files(folder: Path, model: nn.Module, config: str | None, save_id: str) -> None:
    """Every rank: write the part of a sharded model this rank owns (fsdp.write_state); rank 0 adds config.json.

    The files together are what zoo.save writes: model.safetensors, or model-0000k-of-0000n
    shards (one per rank, by size) and the index. Collective: every rank calls it, with the same model.
    """
    fsdp.write_state(folder, model.state_dict(keep_vars=True), save_id)
    if fsdp.rank() == 0 and config is not None:
        (folder / CONFIG_FILE).write_text(config, encoding="utf-8")


def write_reproducible(model: nn.Module, folder: Path, max_shard_size: int | str | None) -> None:
    """What `write` puts in a folder, with a save id derived from the content instead of a random one.

    The same model then gives the same bytes, so pushing it again uploads nothing.
    """
    lazy.require_materialized(model, "push")
    save_id = _content_id(model)
    write_files(folder, model, config_text(model, save_id), save_id, max_shard_size=max_shard_size)


def _content_id(model: nn.Module) -> str:
    """A digest of the declaration and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256((config_text(model, "") or "").encode())
    for key, tensor in model.state_dict().items():
        host = tensor.detach().to("cpu").contiguous()
        digest.update(f"\0{key}\0{host.dtype}\0{tuple(host.shape)}\0".encode())
        nbytes = host.numel() * host.element_size()
        if nbytes:  # the tensor's memory as a buffer, without a copy (and without numpy)
            digest.update((ctypes.c_ubyte * nbytes).from_address(host.data_ptr()))
    return digest.hexdigest()[:16]


# --- reading ---------------------------------------------------------------------------------

LOAD_REPORT = "zoo_load_report"  # the model's attribute: what a zoo.load did not fit, and the dtypes it converted


@dataclass(frozen=True)
class _Placement:
    """Where a read puts each tensor: one device, a device map planned once the shapes are known, or a mesh."""

    device: torch.device | None
    device_map: devices.DeviceMapArg | None
    max_memory: devices.MemoryArg
    dtype: torch.dtype | None
    mesh: DeviceMesh | None
    shard: fsdp.ShardPolicy

    def plan(self, model: nn.Module) -> placement.Plan | None:
        if self.device_map is None:
            return None
        return placement.plan(model, device_map=self.device_map, max_memory=self.max_memory, dtype=self.dtype)

    def target(self, config: SavedConfig, folder: Path) -> torch.device | None:
        # A GPU checkpoint on a CPU-only machine: say so.
        if self.device is None and self.mesh is None and config.saved_on is not None:
            devices.for_checkpoint(None, config.saved_on, source=str(folder))
        return self.device


def read(
    path: str | Path,
    *,
    device: devices.DeviceArg = None,
    device_map: devices.DeviceMapArg | None = None,
    max_memory: devices.MemoryArg = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    registry: RegistryArg = None,
    mesh: DeviceMesh | None = None,
    shard: fsdp.ShardPolicy = None,
    mmap: bool = True,
    shown_as: str | None = None,
) -> nn.Module:
    """zoo.load of a local folder: rebuild the model from config.json, place the stored tensors; in eval mode.

    `shown_as` names the folder in messages (a Hub address for a repo's snapshot in the cache).
    A config.json transformers wrote builds the entry that declares its model_type (zoo._saved.foreign).

    A mapped tensor reads the file itself: zoo's own saves replace files by rename and never
    touch a mapped one, but truncating the file in place (`truncate`, a partial copy) makes
    the next forward die with SIGBUS, and `cp` over it silently changes the live weights;
    mmap=False copies every tensor into this process's memory instead.
    """
    devices.check_dtype(dtype)  # a dtype given as a string ("float16") would reach torch as a device
    sharded = mesh is not None or shard is not None
    if sharded:
        if device is not None or device_map is not None or not strict:
            raise DeviceError(
                f"load {path}: mesh= places the shards itself; it takes no device=, device_map= or strict=False"
            )
        mesh = fsdp.check_mesh(mesh, f"zoo.load('{path}', mesh=...)")
    if device is not None and device_map is not None:
        raise DeviceError(f"load {path}: pass device= or device_map=, not both.")
    folder = Path(path)
    fsio.recover(folder)
    target = devices.resolve(device) if device is not None else None  # a missing device fails before reading
    where = _Placement(target, device_map, max_memory, dtype, mesh, shard)

    def read_once() -> nn.Module:
        return _read_once(folder, where, strict, registry, mmap, shown_as or str(folder))

    if sharded:  # every rank reads once: ranks that retried apart could pair different saves
        return fsdp.together(read_once, f"zoo.load('{path}', mesh=...)")  # one rank's bad copy fails every rank
    # Another process may replace the folder while this one reads it (zoo.save swaps the whole
    # folder in): a read that mixed two saves fails on their save ids, or a file vanishes under it.
    try:
        return fsio.read_consistently(folder, read_once, retry=(WeightsError, FileNotFoundError))
    except FileNotFoundError as err:
        raise WeightsError(f"{folder} changed while it was read: {err}") from err


def _read_once(
    folder: Path, where: _Placement, strict: bool, registry: RegistryArg, mmap: bool, shown_as: str
) -> nn.Module:
    found = _config_of(folder, shown_as, sharded=where.mesh is not None)
    reg = builder.registry_for(registry)
    with reader.open_stored(folder, shown_as=shown_as) as stored:
        config = foreign.settle(found, stored.save_id, reg, shown_as)  # zoo's record, or the entry for transformers'
        require_blocks(config, reg, folder / CONFIG_FILE)
        if config.save_id is not None and stored.save_id is not None and config.save_id != stored.save_id:
            raise WeightsError(
                f"{folder}: {CONFIG_FILE} (save {config.save_id}) and the weights (save {stored.save_id}) come from "
                f"different saves; save the model again"
            )
        target = where.target(config, folder)
        model = _read_fast(config, reg, folder, stored, where, target, mmap) if strict else None
        if model is None:
            model = _read_slow(config, reg, folder, stored, strict)
            plan = where.plan(model)
            if plan is not None:
                placement.dispatch(model, plan)  # moves each block once, to its device
            elif target is not None or where.dtype is not None:
                with ties.kept(model):
                    model.to(device=target, dtype=where.dtype)
            model.__dict__[LOAD_REPORT] = fit.with_conversions(model.__dict__[LOAD_REPORT], model, stored)
    return model.eval()


def _config_of(folder: Path, shown_as: str, *, sharded: bool) -> SavedConfig | TransformersConfig:
    """The folder's config.json, or an error that says what the folder holds and what to do with it."""
    config = read_config(folder, shown_as)
    if config is not None:
        return config
    if not any((folder / name).is_file() for name in (layout.MODEL_FILE, layout.INDEX_FILE)):
        present = [p.name for p in folder.iterdir()]
        said = (
            f"{shown_as} holds no zoo save (no {CONFIG_FILE}, {layout.MODEL_FILE} or {layout.INDEX_FILE}); "
            f"it holds: {listing(present)}."
        )
        raise WeightsError(
            f"{said} Write one with zoo.save(model, '{folder}').", cli=f"{said} Write one with zoo save NAME {folder}."
        )
    if sharded:
        raise WeightsError(
            f"{folder} holds no {CONFIG_FILE}, so zoo.load cannot rebuild the model. Build it in code on the "
            f"meta device, shard it with zoo.distributed.shard(model, mesh), allocate it with "
            f"model.to_empty(device='cpu'), then read each rank's rows with zoo.distributed.load_into(model, path)."
        )
    said = f"{shown_as} holds weights only (no {CONFIG_FILE}: the model was not built by zoo). "
    raise WeightsError(said + load_weights_hint(shown_as), cli=said + load_weights_hint(shown_as, cli=True))


def _read_fast(
    config: SavedConfig,
    reg: Registry,
    folder: Path,
    stored: reader.StoredTensors,
    where: _Placement,
    target: torch.device | None,
    mmap: bool,
) -> nn.Module | None:
    """Build on meta and place the stored tensors; None when a lazy layer needs a forward pass (the slow path)."""

    def build() -> nn.Module:
        return rebuild(config, reg, folder)

    with meta_build(computed_buffers=where.mesh is None):  # on a mesh, to_empty would drop their values
        model = build()
    declared = f"the model its {CONFIG_FILE} declares"
    if where.mesh is not None:
        report = fsdp.require_fit(model, stored, declared)
        if lazy.is_lazy(model):
            materialize_from_shapes(model, stored.shapes())  # no forward pass on a mesh: the headers must do
        if where.dtype is not None:
            lazy.place(model, None, where.dtype)
        else:
            fit.take_stored_dtypes(model, stored)  # each rank's rows in the stored dtypes, as without a mesh
        fsdp.shard(model, where.mesh, where.shard, name=f"'{config.name}'")
        fsdp.allocate(model, where.mesh)
        fsdp.read_rows(model, stored)
        _fill_computed_buffers(model, build, folder, None, where.dtype)
        model.__dict__[LOAD_REPORT] = fit.with_conversions(report, model, stored)
        return model
    report = fit.check_fit(model.state_dict(keep_vars=True), stored)
    if report:
        raise fit.misfit_error(report, stored.where, declared)
    if not _size_from_headers(model, stored, config):
        return None  # a lazy layer zoo cannot size from shapes alone: the slow path materialises it by a forward
    plan = where.plan(model)  # shapes are known now; nothing is allocated yet
    device = plan.device_for if plan is not None else target
    fit.apply_stored(model, stored, report, device=device, dtype=where.dtype, private=not mmap)
    _fill_computed_buffers(model, build, folder, device, where.dtype, computed_at_build=True)
    if plan is not None:
        placement.dispatch(model, plan)  # every tensor is in place: this only installs the input hooks
    model.__dict__[LOAD_REPORT] = fit.with_conversions(report, model, stored)
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


def _read_slow(
    config: SavedConfig, reg: Registry, folder: Path, stored: reader.StoredTensors, strict: bool
) -> nn.Module:
    """Build normally (initial values drawn), materialise, copy in what fits; the report goes on the model."""
    model = rebuild(config, reg, folder)
    if not _size_from_headers(model, stored, config):
        assert config.input_shape is not None  # _size_from_headers raised otherwise
        materialize(model, input_shape=config.input_shape)
    report = fit.check_fit(model.state_dict(keep_vars=True), stored)
    if strict and report:
        raise fit.misfit_error(report, stored.where, f"the model its {CONFIG_FILE} declares")
    fit.apply_stored(model, stored, report)
    model.__dict__[LOAD_REPORT] = report
    return model


def _fill_computed_buffers(
    model: nn.Module,
    build: Any,
    folder: Path,
    device: torch.device | Any | None,
    dtype: torch.dtype | None,
    *,
    computed_at_build: bool = False,
) -> None:
    """Give values to the buffers no file holds (non-persistent ones, computed by constructors); check none is left.

    With `computed_at_build`, those the build gave values (meta_build(computed_buffers=True)) are
    moved into place, and only the rest take a second build.
    """
    keys = buffers_no_file_holds(model)
    if computed_at_build:
        keys = place_computed_buffers(model, keys, device=device, dtype=dtype)
    missing = fill_buffers(model, build, keys, device=device, dtype=dtype)

    def meant_for_meta(key: str) -> bool:  # a device map may place blocks on meta on purpose
        where = device_for(device, key)
        return where is not None and torch.device(where).type == "meta"

    tensors = (*model.named_parameters(), *model.named_buffers())
    left = [*missing, *(key for key, t in tensors if t.is_meta and not meant_for_meta(key))]
    if left:  # strict loading rules this out; a block that creates tensors in forward could still get here
        raise WeightsError(f"{folder}: these tensors got no values: {listing(dict.fromkeys(left))}")
