"""Where weights come from: a folder, a file or a Hub address, resolved to local files in this one place.

    zoo.load(source)                 a zoo save: folder.load, or hub.pull for "hf://org/name@rev"
    zoo.load_weights(model, source)  any safetensors weights: a file, a folder, or a Hub repo

Data flows one way: this module → hub (fetching, imported only for hf:// sources so that local
loads never pay for huggingface_hub) → folder → weights. Neither folder nor weights knows that
the Hub exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from zoo import devices, folder, weights
from zoo.builder import RegistryArg
from zoo.errors import ArgumentError
from zoo.keymap import KeyMap

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from zoo.distributed import ShardPolicy

URI_SCHEME = "hf://"
KEY_MAP_ATTRIBUTE = "zoo_key_map"  # a model's own key map, set by its declaration; used when rename= is None


def is_hub_address(source: object) -> bool:
    """Whether `source` names a Hub repo ("hf://org/name" or "hf://org/name@revision")."""
    return isinstance(source, str) and source.startswith(URI_SCHEME)


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
        dtype: convert floating-point tensors to this precision.
        strict: raise on any missing, unexpected or mismatched key (default). When False, the
            model is built normally (random initial values), what fits is loaded, and the
            LoadReport is left on the model as `model.zoo_load_report`.
        registry: extra registry files, as for zoo.build (blocks come from the installed plugins).
        mesh: shard the model over the ranks of this torch.distributed DeviceMesh with FSDP2: each
            rank allocates and reads from the files only its rows of each tensor. Strict; not
            together with `device` or `device_map`.
        shard: with `mesh`, which blocks become FSDP units, as for zoo.build.
        mmap: True (default): CPU tensors map the file (no copy; the file must not be rewritten in
            place while the model lives). False: copied into private memory (see folder.load).

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
    if is_hub_address(path) and mesh is None and shard is None:  # sharded: zoo.distributed fetches on rank 0 first
        from zoo import hub

        devices.check_dtype(dtype)  # before any request
        return hub.pull(
            str(path), device=device, device_map=device_map, max_memory=max_memory, dtype=dtype, strict=strict,
            registry=registry, mmap=mmap,
        )  # fmt: skip
    return folder.load(
        path, device=device, device_map=device_map, max_memory=max_memory, dtype=dtype, strict=strict,
        registry=registry, mesh=mesh, shard=shard, mmap=mmap,
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
) -> weights.LoadReport:
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
        rename: how the file's keys map onto the model's: a zoo.keymap.KeyMap or its table,
            `{"strip_prefix": "module.", "add_prefix": "", "rename": [[regex, replacement], ...]}`.
            Default: the model's own `zoo_key_map`, when its declaration gives one.
        revision, cache_dir, local_files_only, token, endpoint: for a Hub address, as for
            zoo.pull (a branch, tag or commit; offline use sends no request).

    Returns:
        A LoadReport: what did not fit (empty after a strict load) and the keys loaded through ties.

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
    keymap = KeyMap.of(rename if rename is not None else getattr(model, KEY_MAP_ATTRIBUTE, None))
    if not is_hub_address(source):
        hub_only = {"revision": revision, "cache_dir": cache_dir, "token": token, "endpoint": endpoint}
        given = [f"{name}=" for name, value in hub_only.items() if value is not None]
        if local_files_only:
            given.append("local_files_only=")
        if given:
            raise ArgumentError(f"{', '.join(given)} only apply to hf:// sources; '{source}' is a local path")
        return weights.load_weights(model, Path(source), strict=strict, rename=keymap)
    from zoo import hub

    snapshot = hub.fetch(
        str(source),
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        endpoint=endpoint,
        weights_only=True,
    )
    report = weights.load_weights(model, snapshot.folder, strict=strict, rename=keymap)
    model.__dict__["zoo_source"] = hub.HubSource(
        snapshot.repo_id, snapshot.revision, snapshot.commit, snapshot.endpoint
    )
    return report
