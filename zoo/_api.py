"""The public entry points: zoo.build, zoo.names, zoo.spec, zoo.register, zoo.load and zoo.load_weights.

Where weights come from is decided here, once: a folder, a file or a Hub address, resolved to
local files before anything below this module sees them. hub (fetching) is imported only for
hf:// sources, so that local loads never pay for huggingface_hub.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch
from torch import nn

from zoo._build import builder, devices, lazy
from zoo._build.builder import RegistryArg
from zoo._build.materialize import materialize
from zoo._build.meta import meta_build
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError, listing
from zoo._hub.address import is_hub_address
from zoo._language.keymap import KeyMap
from zoo._language.resolve import declaration, resolve
from zoo._plugins import discovery
from zoo._saved import folder
from zoo._scale import fsdp, placement
from zoo._weights import fit

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

F = TypeVar("F", bound=Callable[..., Any])


@fsdp.watched
def build(
    name: str,
    /,
    *,
    registry: RegistryArg = None,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    mesh: DeviceMesh | None = None,
    shard: fsdp.ShardPolicy = None,
    overrides: Mapping[str, Any] | None = None,
    **more_overrides: Any,
) -> nn.Module:
    """Build the block or declared entry `name`, ready to use.

    Args:
        name: a declared entry (`"chimera"`), a Python block (`"Linear"`), or `"DIST:name"`.
        registry: extra registry file(s) to declare names from, on top of the installed ones.
        input_shape: materialise lazy layers for this input shape (default: the entry's `input`).
        device: where the parameters live: None (where built: the CPU), "auto" (CUDA if
            present, else MPS, else CPU), "cpu", "cuda:N", or a torch.device.
        dtype: the precision of the floating parameters.
        mesh: shard the model over the ranks of this torch.distributed DeviceMesh with FSDP2: it is
            built on the meta device and each rank allocates and initialises only its rows
            (see "When one machine is not enough" in the README). Not together with `device`.
        shard: with `mesh`, which blocks become FSDP units: block type names or classes, or a
            function (path, module) -> bool. Default: every block that owns parameters itself.
        overrides: values for the entry's `args`, or keyword arguments of a Python block, as a
            mapping: the way to pass one whose name is also one of build's own (`device`, `dtype`,
            `registry`, `input_shape`, `mesh`, `shard`, `overrides`).
        **more_overrides: the same, as keywords (merged with `overrides`; a name in both is an error).

    Returns:
        The module; lazy layers stay uninitialised when no input shape is known.

    Raises:
        UnknownNameError, ArgumentError, SpecError, CycleError: before anything is constructed.
        DeviceError: `device` is not on this machine (the message lists the devices that are).

    Example:
        >>> zoo.build("mlp", hidden=512)
        >>> zoo.build("Linear", in_features=3, out_features=4)
        >>> zoo.build("Linear", overrides={"in_features": 3, "out_features": 4, "device": "meta"})
    """
    both = sorted(set(overrides or {}) & set(more_overrides))
    if both:
        raise ArgumentError(f"zoo.build('{name}'): {listing(both)} given both in overrides= and as keywords.")
    overrides = {**(overrides or {}), **more_overrides}
    sharded = mesh is not None or shard is not None
    if sharded:
        if device is not None:
            raise DeviceError(f"zoo.build('{name}'): pass device= or mesh=, not both (the mesh says where)")
        mesh = fsdp.check_mesh(mesh, f"zoo.build('{name}', mesh=...)")
    # A missing GPU fails before building; a sharded model is built on meta, then each rank allocates its rows.
    target = torch.device("meta") if sharded else devices.resolve(device) if device is not None else None
    devices.check_dtype(dtype)
    if input_shape is not None:
        input_shape = lazy.check_shape(input_shape)

    def construct() -> nn.Module:
        return builder.build(name, overrides, registry=registry)

    on_meta = sharded or (target is not None and target.type == "meta")  # built there: no memory, no values drawn
    with meta_build() if on_meta else contextlib.nullcontext():
        model = construct()
    info = builder.build_info(model)
    if sharded:
        fsdp.refuse_init_rules(name, info.declaration if info is not None else None)
    shape = input_shape if input_shape is not None else (info.input_shape if info else None)
    if shape is not None and lazy.is_lazy(model):
        # Placed first, then materialised: lazy tensors are allocated once, on the target device.
        materialize(model, input_shape=shape, device=target, dtype=dtype)
    elif sharded and lazy.is_lazy(model):
        raise NotMaterializedError(
            f"'{name}' has lazy layers and no input shape: pass input_shape= so that zoo.build(mesh=) knows "
            f"the shapes to shard"
        )
    elif target is not None or dtype is not None:
        lazy.place(model, target, dtype)  # not model.to: on meta that would turn lazy parameters into empty ones
    if mesh is not None:  # the sharding step: fully_shard, then each rank's rows initialised
        fsdp.initialise(model, mesh, shard, name=name, rebuild=construct, dtype=dtype)
    return model


def names(pattern: str | None = None, *, registry: RegistryArg = None) -> list[str]:
    """Every buildable name, sorted; `pattern` is a case-insensitive glob such as `"*mlp*"`."""
    return builder.registry_for(registry).names(pattern)


def plan(
    model: nn.Module | str,
    *,
    device_map: str | Mapping[str, devices.DeviceArg] = "auto",
    max_memory: devices.MemoryArg = None,
    dtype: torch.dtype | None = None,
    no_split: Iterable[str] = (),
    input_shape: Sequence[int] | None = None,
    reserve: int | str | None = None,
    registry: RegistryArg = None,
) -> placement.Plan:
    """Plan which device each block of `model` lives on, without allocating any weights.

    Args:
        model: a module (its tensors may be on the meta device), or a name to build on meta.
        device_map: "auto" (fill devices in order), "balanced" (even across accelerators), or
            {module path: device}, where a path covers everything below it ("" is the model).
        max_memory: {device: bytes or "4GiB"} budgets, e.g. made-up {"cuda:0": …, "cpu": …}.
            Default: the free memory of each device here (90% on accelerators).
        dtype: count floating tensors in this dtype (and cast them to it on dispatch).
        no_split: class names to keep whole, on top of the default rule (module docstring).
        input_shape: shape of one input batch, for the activation reserve and for lazy models
            (default: the entry's declared `input`).
        reserve: bytes (or "1GiB") kept free on every device for activations; default: measured
            by a forward on the meta device when it can run, else 0.
        registry: extra registry file(s), when `model` is a name.

    Returns:
        The Plan: placements in forward order, bytes per device, budgets.

    Raises:
        DeviceError: bad budgets or device names, an unknown path or class name, a path that
            cuts a whole block, or a model that does not fit (how many bytes are missing where).
        NotMaterializedError: lazy layers and no input shape to give them one.
    """
    if isinstance(model, str):
        with torch.device("meta"):  # every tensor is shape-only: a 400 GB model plans in milliseconds
            model = build(model, registry=registry, input_shape=input_shape)
    elif not isinstance(model, nn.Module):
        raise ArgumentError(f"plan() takes an nn.Module or a declared name, not {type(model).__name__}.")
    return placement.plan(
        model, device_map=device_map, max_memory=max_memory, dtype=dtype, no_split=no_split, input_shape=input_shape,
        reserve=reserve,
    )  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """What `zoo show` prints: a name's resolved declaration and where it came from."""

    name: str
    kind: str  # "entry" or "block"
    origin: str  # "zoo 0.1.0", "zoo-convnets 0.1.0", "user"
    source: str  # file:line for entries, module.Class for Python blocks
    doc: str
    params: Mapping[str, Any]  # overridable arguments and their defaults
    input_shape: tuple[int, ...] | None
    input_dtype: str | None  # "int64" when the example input is token ids
    declaration: dict[str, Any]  # entries inlined, arguments substituted


def spec(name: str, *, registry: RegistryArg = None, **overrides: Any) -> Spec:
    """Describe `name` without building it."""
    reg = builder.registry_for(registry)
    provider = reg.resolve(name)
    entry = provider.entry
    resolution = resolve(reg, provider, overrides, name) if entry is not None else None
    if resolution is not None and resolution.errors:
        raise resolution.errors[0]
    doc = entry.doc if entry else (getattr(provider.factory, "__doc__", None) or "").strip().split("\n")[0]
    return Spec(
        name=name,
        kind="entry" if entry else "block",
        origin=str(provider.origin),
        source=provider.where,
        doc=doc,
        params=dict(entry.params) if entry else {},
        input_shape=resolution.input_shape if resolution else None,
        input_dtype=resolution.input_dtype if resolution else None,
        declaration=declaration(resolution.root) if resolution and resolution.root else {"type": name, **overrides},
    )


@overload
def register(name: F) -> F: ...
@overload
def register(name: str | None = None) -> Callable[[F], F]: ...


def register(name: Any = None) -> Any:
    """Register a Python block in this process (for notebooks and tests).

    Example:
        >>> @zoo.register
        ... class Scale(nn.Module): ...
        >>> @zoo.register("my_scale")
        ... def make_scale(factor: float = 2.0) -> nn.Module: ...
    """
    if callable(name):
        discovery.register_local(name.__name__, name)
        return name

    def decorate(factory: F) -> F:
        discovery.register_local(name or factory.__name__, factory)
        return factory

    return decorate


@fsdp.watched
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
    return folder.write(model, path, max_shard_size=max_shard_size, dtype=dtype)


@fsdp.watched
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
    shard: fsdp.ShardPolicy = None,
    mmap: bool = True,
) -> nn.Module:
    """Rebuild the model saved in the folder `path` from its config.json and load its weights; in eval mode.

    The model is built on the meta device and given the memory-mapped tensors (no random
    initialisation, no copy); dtype and device conversions go tensor by tensor. Shared
    weights come back shared.

    Args:
        path: the folder; or a Hub repo, "hf://org/name" or "hf://org/name@revision", which
            zoo.pull fetches (settings from HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE).
        device: where the tensors go ("cpu" by default, "cuda:0", "auto"). A checkpoint saved on
            a GPU this machine lacks loads onto the CPU, with one line on the "zoo" logger.
        device_map: spread the model over devices instead: "auto", "balanced" or {module path:
            device} (see zoo.plan); each tensor is read from the file straight onto its device,
            and inputs follow the blocks by themselves. Not together with `device`.
        max_memory: per-device budgets for `device_map`, e.g. {"cuda:0": "10GiB", "cpu": "30GiB"}.
        dtype: convert floating-point tensors to this precision. Default: each keeps the dtype it
            was stored in (a bfloat16 checkpoint gives a bfloat16 model), and nothing is converted.
        strict: raise on any missing, unexpected or mismatched key (default). When False, the
            model is built normally (random initial values) and what fits is loaded. Either way
            the LoadReport is left on the model as `model.zoo_load_report`: what did not fit, and
            every tensor whose dtype the load changed (`report.converted`, `report.conversions()`).
        registry: extra registry files, as for zoo.build (blocks come from the installed plugins).
        mesh: shard the model over the ranks of this torch.distributed DeviceMesh with FSDP2: each
            rank allocates and reads from the files only its rows of each tensor. Strict; not
            together with `device` or `device_map`.
        shard: with `mesh`, which blocks become FSDP units, as for zoo.build.
        mmap: True (default): CPU tensors map the file (no copy; the file must not be rewritten in
            place while the model lives). False: copied into private memory.

    Raises:
        WeightsError: no such folder, no zoo save in it, a config.json another library wrote or
            none (weights only: the message shows the zoo.load_weights line to use), a corrupt
            or unsafe file, or weights that do not fit the declaration.
        UnknownNameError: a block the declaration needs is not installed (the message names
            the distribution and version that provided it).
        DeviceError: `device` is not on this machine.
        ArgumentError: `dtype` is not a floating-point torch.dtype (a string such as "float16").
        HubError: for a Hub address, as for zoo.pull.
    """
    if is_hub_address(path):  # resolved here, once: everything below reads a local folder
        return pull(
            str(path), device=device, device_map=device_map, max_memory=max_memory, dtype=dtype, strict=strict,
            registry=registry, mmap=mmap, mesh=mesh, shard=shard,
        )  # fmt: skip
    return folder.read(
        path, device=device, device_map=device_map, max_memory=max_memory, dtype=dtype, strict=strict,
        registry=registry, mesh=mesh, shard=shard, mmap=mmap,
    )  # fmt: skip


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    device: devices.DeviceArg = None,
    device_map: devices.DeviceMapArg | None = None,
    max_memory: devices.MemoryArg = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    strict: bool = True,
    registry: RegistryArg = None,
    mmap: bool = True,
    mesh: DeviceMesh | None = None,
    shard: fsdp.ShardPolicy = None,
) -> nn.Module:
    """Fetch a model's declaration and weights from a Hub repo and rebuild it with local blocks.

    Only config.json, the shard index and the safetensors files it names are fetched, shards
    in parallel, into huggingface_hub's cache; a file already cached at that commit is not
    fetched again. The model is rebuilt from the declaration (no code comes from the repo),
    loaded through zoo.load (strict by default), and returned in eval mode, with
    `model.zoo_source` (a HubSource) recording the commit the revision resolved to.

    Args:
        repo_id: `"org/name"`, `"org/name@revision"` or `"hf://org/name@revision"`.
        revision: a branch, tag or full commit id; default main.
        device: where the tensors go, as for zoo.load ("cpu" by default, "cuda:0", "auto").
        device_map: spread the model over devices instead: "auto", "balanced" or
            {module path: device}, as for zoo.plan; not together with `device`. Each tensor is
            read from the cache straight onto its device.
        max_memory: per-device budgets for `device_map`.
        dtype: convert floating-point tensors to this precision (default: as stored), as for zoo.load.
        cache_dir: default HF_HUB_CACHE (~/.cache/huggingface/hub).
        local_files_only: use the cache only and send no request (as HF_HUB_OFFLINE=1 does).
        token: for private repos; default HF_TOKEN or the stored login.
        endpoint: a Hub-compatible server; default HF_ENDPOINT.
        strict, registry, mmap, mesh, shard: as for zoo.load (mmap=False copies the weights out of the
            cache; with a mesh, rank 0 fetches first and the other ranks then find the files cached).

    Raises:
        HubError: repo, revision or file not found (with what exists), not cached while
            offline, pickle-only weights, a file over its size limit, the server unreachable.
        UnknownNameError: the declaration names a block that is not installed; the message
            names the distribution and version that provided it.
        WeightsError: the weights do not fit the declared model.
        DeviceError: a device or device map that this machine cannot satisfy.

    Example:
        >>> model = zoo.pull("me/chimera", revision="v1.0")
        >>> model.zoo_source.commit
        '3f2a…'
    """
    from zoo._hub import client  # huggingface_hub costs ~0.4 s to import: paid by Hub calls only

    devices.check_dtype(dtype)  # before any request
    if device is not None and device_map is not None:
        raise DeviceError(f"pull {repo_id}: pass device= or device_map=, not both.")

    reg = builder.registry_for(registry)  # a transformers repo is checked against it before weights are fetched

    def fetch() -> client.Snapshot:
        return client.fetch(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
            endpoint=endpoint, registry=reg,
        )  # fmt: skip

    sharded = mesh is not None or shard is not None
    if sharded:
        fsdp.check_mesh(mesh, f"zoo.load('{repo_id}', mesh=...)")
    snapshot = fsdp.on_rank0_first(fetch) if sharded else fetch()
    model = folder.read(
        snapshot.folder, device=device, device_map=device_map, max_memory=max_memory, dtype=dtype, strict=strict,
        registry=reg, mesh=mesh, shard=shard, mmap=mmap, shown_as=client.address(snapshot.repo_id, snapshot.revision),
    )  # fmt: skip
    model.__dict__["zoo_source"] = client.HubSource(
        snapshot.repo_id, snapshot.revision, snapshot.commit, snapshot.endpoint
    )
    return model


def push(
    model_or_dir: nn.Module | str | Path,
    repo_id: str,
    *,
    branch: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = None,
    endpoint: str | None = None,
) -> str:
    """Save a model (or take a folder zoo.save wrote) and upload it to a Hub repo.

    The repo is created if needed (private or public as asked; an existing repo keeps its
    visibility). Files the repo already holds with the same bytes are not sent again, and a
    push that changes nothing makes no commit. Weights of an earlier push that this one does
    not have (a single file replaced by shards, or the reverse) are deleted in the same commit.

    Args:
        model_or_dir: a model built by zoo, or a folder written by `zoo.save`.
        repo_id: `"org/name"`.
        branch: the branch to commit to (created from main if missing); default main.
        private: create the repo private.
        token: a Hub token; default HF_TOKEN or the stored login.
        commit_message: default "Upload <model name> with zoo".
        create_pr: open a pull request against main instead of committing to it.
        max_shard_size: passed to zoo.save when `model_or_dir` is a model.
        endpoint: a Hub-compatible server; default HF_ENDPOINT (huggingface.co).

    Returns:
        The URL of the commit (of the current head when nothing changed).

    Raises:
        HubError: offline, bad repo id, refused by the server, or the server cannot be reached.
        WeightsError: the folder is not a model folder zoo wrote.

    Example:
        >>> zoo.push(zoo.build("chimera"), "me/chimera")
        'https://huggingface.co/me/chimera/commit/3f2a…'
    """
    from zoo._hub import client  # huggingface_hub costs ~0.4 s to import: paid by Hub calls only

    return client.upload(
        model_or_dir, repo_id, branch=branch, private=private, token=token, commit_message=commit_message,
        create_pr=create_pr, max_shard_size=max_shard_size, endpoint=endpoint,
    )  # fmt: skip


def load_weights(
    model: nn.Module,
    source: str | Path,
    *,
    strict: bool = True,
    rename: KeyMap | Mapping[str, Any] | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> fit.LoadReport:
    """Load safetensors weights into `model`, in place: from a file, a folder, or any Hub repo.

    Whoever wrote them: zoo.save, transformers' save_pretrained, huggingface_hub's
    save_torch_model or PyTorchModelHubMixin, accelerate, plain safetensors. A key the file
    omits because the model ties it to a stored one (`lm_head.weight`, tied to the embedding)
    loads through that key, and huggingface_hub's record of removed shared names is honoured.
    All or nothing: every key, shape and dtype is checked before the model changes. Lazy
    models get their shapes from the file; meta-device models get the mapped tensors (no copy).

    Args:
        source: a safetensors file; a folder with model.safetensors or shards and
            model.safetensors.index.json; or "hf://org/name[@revision]", of which only those
            files are fetched (no config.json needed), into huggingface_hub's cache.
        strict: raise on any missing, unexpected or mismatched key (default); when False, load
            what fits and return the rest in the report.
        rename: how the file's keys map onto the model's: a zoo.KeyMap or its table,
            `{"strip_prefix": "module.", "add_prefix": "", "rename": [[regex, replacement], ...]}`.
            Default: the model's own `zoo_key_map`, when its declaration gives one.
        revision, cache_dir, local_files_only, token, endpoint: for a Hub address, as for
            zoo.pull (a branch, tag or commit; offline use sends no request).

    Returns:
        A LoadReport: what did not fit (empty after a strict load), the keys loaded through ties,
        and the tensors converted to the model's dtypes (`converted`; a model built on meta takes
        the stored dtypes and converts nothing; build it with dtype= to choose).

    Raises:
        WeightsError: unreadable, unsafe (a pickle) or (strict) not fitting, with every misfit
            and the nearest names on both sides.
        SpecError: a malformed `rename`.
        HubError: the repo, revision or weights cannot be had (offline and not cached, say).
        ArgumentError: Hub options with a local source.

    Example:
        >>> model = zoo.build("tied_mlp")
        >>> zoo.load_weights(model, "hf://me/tied-mlp-weights@v1")
    """
    keymap = KeyMap.of(rename if rename is not None else getattr(model, builder.KEY_MAP_ATTRIBUTE, None))
    if not is_hub_address(source):
        hub_only = {"revision": revision, "cache_dir": cache_dir, "token": token, "endpoint": endpoint}
        given = [f"{name}=" for name, value in hub_only.items() if value is not None]
        if local_files_only:
            given.append("local_files_only=")
        if given:
            raise ArgumentError(f"{', '.join(given)} only apply to hf:// sources; '{source}' is a local path")
        return fit.load_local_weights(model, Path(source), strict=strict, rename=keymap)
    from zoo._hub import client  # huggingface_hub costs ~0.4 s to import: paid by Hub calls only

    snapshot = client.fetch(
        str(source),
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        endpoint=endpoint,
        weights_only=True,
    )
    shown_as = client.address(snapshot.repo_id, snapshot.revision)
    report = fit.load_local_weights(model, snapshot.folder, strict=strict, rename=keymap, shown_as=shown_as)
    model.__dict__["zoo_source"] = client.HubSource(
        snapshot.repo_id, snapshot.revision, snapshot.commit, snapshot.endpoint
    )
    return report
