"""Stored tensors fitted onto a model: keys, shapes and dtypes checked first, then loaded all or nothing."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from zoo._build import lazy
from zoo._build.known_shapes import materialize_from_shapes
from zoo._build.meta import device_for
from zoo._errors import WeightsError, listing, nearest
from zoo._language.keymap import KeyMap
from zoo._weights.progress import progress
from zoo._weights.reader import StoredTensors, open_stored

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
    converted: Mapping[str, str] = field(default_factory=dict)  # loaded in another dtype: "bfloat16 → float32"

    def __bool__(self) -> bool:  # what did not fit; a conversion is no misfit, but it is said (conversions())
        return bool(self.missing or self.unexpected or self.mismatched)

    def conversions(self) -> str:
        """One line per dtype change the load made, with how many tensors and the first keys; "" when none."""
        by_change: dict[str, list[str]] = {}
        for key, change in self.converted.items():
            by_change.setdefault(change, []).append(key)
        return "\n".join(
            f"converted {len(keys)} tensor(s) {change.replace(' → ', ' to ')}: {listing(keys, limit=5)}"
            for change, keys in by_change.items()
        )

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
    The dtype changes a load makes are known once it is made: `with_conversions`.
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


def with_conversions(report: LoadReport, model: nn.Module, stored: StoredTensors) -> LoadReport:
    """`report` with the dtype changes the load made: every loaded key whose tensor's dtype is not the stored one.

    Copying into a model's own tensors converts to their dtype; zoo.load(dtype=) converts on the
    way; a meta-device model takes the stored dtypes as they are, and then nothing is converted.
    """
    converted = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key in stored and key not in report.mismatched and isinstance(tensor, torch.Tensor):
            was = stored.info(key).dtype
            if tensor.dtype != was:
                converted[key] = f"{_name(was)} → {_name(tensor.dtype)}"
    return replace(report, converted=converted)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def take_stored_dtypes(model: nn.Module, stored: StoredTensors) -> None:
    """Give the meta tensors of `model` the floating dtypes the file stores them in (ties kept), before allocating.

    A sharded load allocates each rank's rows in the model's dtypes: with this, it keeps the
    stored ones, as an unsharded zoo.load does (a bfloat16 checkpoint gives a bfloat16 model).
    """
    places = _places(model)
    wanted: dict[int, torch.dtype] = {}  # by tensor: a tie takes the dtype its stored key has
    for key, (container, name) in places.items():
        old = container[name]
        if old.is_meta and old.is_floating_point() and key in stored and stored.info(key).dtype.is_floating_point:
            wanted.setdefault(id(old), stored.info(key).dtype)
    fresh: dict[int, torch.Tensor] = {}
    for container, name in places.values():
        old = container[name]
        want = wanted.get(id(old))
        if want is None or want == old.dtype:
            continue
        if id(old) not in fresh:
            new = torch.empty_like(old, dtype=want)
            fresh[id(old)] = nn.Parameter(new, old.requires_grad) if isinstance(old, nn.Parameter) else new
        container[name] = fresh[id(old)]


def _kind(dtype: torch.dtype) -> str:
    # Within a kind a load converts (float16 file → float32 model); across kinds it refuses.
    if dtype == torch.bool:
        return "boolean"
    if dtype.is_complex:
        return "complex"
    return "floating-point" if dtype.is_floating_point else "integer"


def misfit_error(report: LoadReport, where: str, model: str = "the model", *, strict_hint: bool = True) -> WeightsError:
    """The error of a strict load that does not fit: every problem listed at once (and how to load what fits)."""
    said = f"{where} does not fit {model}, so nothing was loaded:\n{report.describe()}"
    if not strict_hint:
        return WeightsError(said)
    return WeightsError(
        f"{said}\nPass strict=False to load the keys that fit and get this report back.",
        cli=f"{said}\nPass --non-strict to load the keys that fit and list the rest.",
    )


def load_local_weights(
    model: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    rename: KeyMap | None = None,
    shown_as: str | None = None,
) -> LoadReport:
    """Load a local safetensors file or model folder into `model`, in place; lazy models included.

    zoo.load_weights (zoo._api) is the public form, which also takes Hub addresses.
    Every key, shape and dtype (and each header) is checked before any tensor of the model is
    touched: a failed load leaves the model as it was. Values are copied into the model's own
    tensors (converted to their dtype and device), so an optimizer built on it stays valid; on
    a meta-device model they are assigned instead (the mapped tensors, no copy).
    Tensors stored as tied are tied again: both places hold the same Parameter afterwards.

    Args:
        strict: raise on any missing, unexpected or mismatched key (default). When False, load
            what fits and return the rest in the report.
        rename: how the file's keys map onto the model's.
        shown_as: what messages call the source (a Hub address for a snapshot in the cache).

    Returns:
        A LoadReport, empty when everything fitted.

    Raises:
        WeightsError: the file is unreadable, unsafe (a pickle), or (strict) does not fit.
    """
    with open_stored(path, shown_as=shown_as) as opened:
        stored = opened.renamed(rename) if rename else opened
        report = check_fit(model.state_dict(keep_vars=True), stored)
        if strict and report:
            where = f"{stored.where} (keys mapped by {rename.describe()})" if rename else stored.where
            raise misfit_error(report, where)
        if lazy.is_lazy(model):
            materialize_from_shapes(model, stored.shapes())
        apply_stored(model, stored, report)
        return with_conversions(report, model, stored)


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
    with progress(total, f"loading {Path(stored.where).name}") as bar:
        for key, current in wanted.items():
            target = stored.aliases.get(key, key)
            if target not in converted:
                tensor = stored.tensor(target)
                mapped = tensor.untyped_storage().data_ptr()
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                where = device_for(device, key)  # a tied tensor goes with its first user
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
