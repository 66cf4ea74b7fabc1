"""FSDP2 across processes: the sharding layer under zoo.build(mesh=), zoo.load(mesh=), zoo.save and checkpoints.

    shard / initialise        fully_shard the blocks a policy picks, then (build) each rank's rows
                              initialised from rank 0's random state, one layer at a time
    read_rows / load_into     each rank reads only its rows of each stored tensor
    write_state               every rank gathers the tensors one at a time, keeps those it writes, and
                              writes its own shard file; atomic_dir_on_ranks publishes the folder once
                              every rank has written (rank 0 swaps it in: a rank killed mid-save leaves
                              the previous save)
    optimizer_state / load_optimizer…   the optimizer's tensors by parameter name, written the same way

It knows tensors, ranks and local folders; what a saved folder holds (config.json) is
zoo._saved's, where weights come from zoo._api's.

FSDP units: `fully_shard` is applied to each block that the policy picks, innermost first, then
to the whole model. The default picks every block that owns parameters itself (a Linear, a
Conv2d): only one layer is ever gathered in full. `shard=` replaces the policy with a set of
block types (`{"TransformerBlock"}`, or classes) or a function `(path, module) -> bool`.

torch.distributed.tensor and fsdp take seconds to import: they are imported on first use, never
by `import zoo`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import distributed_c10d

from zoo._build import ties
from zoo._build.meta import fill_buffers
from zoo._errors import (
    ArgumentError,
    DistributedError,
    UnknownNameError,
    WeightsError,
    ZooError,
    did_you_mean,
    listing,
)
from zoo._files import fsio
from zoo._weights import fit, layout, reader, writer

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

ShardPolicy = Collection[str | type[nn.Module]] | Callable[[str, nn.Module], bool] | None

T = TypeVar("T")


# --- where this process stands ------------------------------------------------------------------


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of `model` is a DTensor (sharded by fully_shard)."""
    tensor_module = sys.modules.get("torch.distributed.tensor")
    if tensor_module is None:  # nothing can be a DTensor before torch.distributed.tensor is imported
        return False
    return any(isinstance(p, tensor_module.DTensor) for p in model.parameters())


def rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def check_mesh(mesh: Any, action: str) -> DeviceMesh:
    """The mesh, checked: a process group exists, this rank is in the mesh, and the mesh spans every rank.

    Raises:
        DistributedError: no process group, or a mesh that does not fit it.
        ArgumentError: `mesh` is not a DeviceMesh.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            f"{action} needs a process group, and torch.distributed is not initialised in this process. "
            f"Start the script with torchrun (torchrun --nproc-per-node 2 train.py), then call "
            f"torch.distributed.init_process_group('gloo') ('nccl' on GPUs) and "
            f"mesh = torch.distributed.device_mesh.init_device_mesh('cpu', (world_size,))."
        )
    from torch.distributed.device_mesh import DeviceMesh

    if not isinstance(mesh, DeviceMesh):
        raise ArgumentError(
            f"{action}: mesh must be a torch.distributed.device_mesh.DeviceMesh "
            f"(init_device_mesh('cpu', (world_size,))), got {type(mesh).__name__}"
        )
    world = dist.get_world_size()
    if mesh.get_coordinate() is None or mesh.size() != world:
        raise DistributedError(
            f"rank {rank()}: {action}: the mesh holds ranks {mesh.mesh.flatten().tolist()}, the process group "
            f"{world} ranks; zoo gathers and saves over every rank, so the mesh must span them all: "
            f"init_device_mesh('{mesh.device_type}', ({world},))"
        )
    return mesh


def mesh_device(mesh: DeviceMesh) -> torch.device:
    if mesh.device_type == "cpu":
        return torch.device("cpu")
    return torch.device(mesh.device_type, torch.get_device_module(mesh.device_type).current_device())


def _comm_device() -> torch.device:
    # gloo moves CPU tensors; nccl only device tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- a peer that is gone ---------------------------------------------------------------------------
# When a rank's process ends mid-load, the others' next collective fails (gloo: "Connection closed by
# peer", and only on the ranks wired to it) or waits (nccl) with nothing to say which rank it was.
# So each rank beats a pulse in the process group's store once a second while a zoo call runs
# (@watched: build, load, save, checkpoints), and zoo's collectives wait watching the pulses: a rank
# whose pulse stops for PEER_WAIT seconds is gone, and every rank left raises an error naming it. A
# rank alive but stuck keeps its pulse: the others wait for it up to the process group's own timeout.
PEER_WAIT = float(os.environ.get("ZOO_PEER_WAIT", "10"))  # seconds without a pulse before a rank counts as gone
_PULSE_EVERY = 1.0  # seconds between a rank's beats
_VERDICT = "zoo/gone"  # the ranks the first rank to see it found gone


class _Pulses:
    """This process's beat in the process group's store while a zoo call runs, and what it saw of the others'."""

    def __init__(self) -> None:
        self.depth = 0  # zoo calls running in this process (a load calls read): it beats while > 0
        self.stop: threading.Event | None = None
        self.store: Any = None
        self.seen: dict[int, tuple[bytes, float]] = {}  # rank → (its last beat, when this rank saw it change)

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """Beat while the body runs, when there are other ranks to hear it."""
        if self.depth == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.store, self.seen, self.stop = distributed_c10d._get_default_store(), {}, threading.Event()
            threading.Thread(target=self._beat, args=(self.store, rank(), self.stop), daemon=True).start()
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0 and self.stop is not None:
                self.stop.set()
                self.store = self.stop = None

    @staticmethod
    def _beat(store: Any, me: int, stop: threading.Event) -> None:
        count = 0
        while not stop.is_set():
            try:
                store.set(f"zoo/pulse/{me}", str(count))
            except Exception:  # noqa: BLE001  (the store is gone: its process group ended)
                return
            count += 1
            stop.wait(_PULSE_EVERY)

    def gone(self) -> list[int] | None:
        """The ranks whose pulse has not changed for PEER_WAIT seconds; None when the store itself is gone."""
        if self.store is None:
            return []
        try:  # another rank's verdict first: the ranks left then name the same ones, at once
            if self.store.check([_VERDICT]):
                return [int(r) for r in self.store.get(_VERDICT).decode().split(",")]
        except Exception:  # noqa: BLE001  (the store went with the rank that hosted it)
            return None
        now, found = time.monotonic(), []
        for other in range(dist.get_world_size()):
            if other == rank():
                continue
            key = f"zoo/pulse/{other}"
            try:
                beat = self.store.get(key) if self.store.check([key]) else b""
            except Exception:  # noqa: BLE001  (the store went with the rank that hosted it)
                return None
            last = self.seen.get(other)
            if last is None or last[0] != beat:
                self.seen[other] = (beat, now)
            elif now - last[1] > PEER_WAIT:
                found.append(other)
        if found:
            with contextlib.suppress(Exception):
                self.store.set(_VERDICT, ",".join(map(str, found)))
        return found


_PULSES = _Pulses()
F = TypeVar("F", bound=Callable[..., Any])


def watched(fn: F) -> F:
    """A zoo call that may run collectives: this rank's pulse beats while it runs (a peer that is gone, above)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _PULSES.beating():
            return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


def _collective(what: str, start: Callable[[], Any], after: str = "") -> None:
    """Run the collective `start()` begins (async_op=True) to its end, watching the other ranks' pulses.

    Raises:
        DistributedError: a rank is gone, named (`after`: what that means, said after "failed").
    """
    try:
        work = start()
        pause = 1e-4
        while not work.is_completed():
            gone = _PULSES.gone()
            if gone != []:
                raise DistributedError(f"rank {rank()}: {what} failed{after}: {_said(gone)}")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)  # a collective that ends at once costs microseconds
        work.wait()
    except ZooError:
        raise
    except RuntimeError as err:  # gloo and nccl raise their transport's failures as RuntimeError subclasses
        raise _lost(what, err, after) from err


def _lost(what: str, err: BaseException, after: str = "") -> DistributedError:
    """`what` failed because the process group did: which rank is gone, once its pulse has stopped long enough."""
    if _PULSES.store is None:  # outside a zoo call no pulses beat: nothing to say which rank
        return DistributedError(f"rank {rank()}: {what} failed{after}: the process group failed; {_first_line(err)}")
    deadline = time.monotonic() + PEER_WAIT + 2 * _PULSE_EVERY
    gone = _PULSES.gone()
    while gone == [] and time.monotonic() < deadline:
        time.sleep(0.1)
        gone = _PULSES.gone()
    return DistributedError(f"rank {rank()}: {what} failed{after}: {_said(gone)}; {_first_line(err)}")


def _said(gone: list[int] | None) -> str:
    if gone is None:
        return "rank 0 is gone: the process group's store, which it hosts (unless torchrun's agent does), is gone too"
    if not gone:
        return f"every rank's pulse still beats after {PEER_WAIT:g} s, so the process group itself failed"
    ranks = ", ".join(map(str, gone))
    return (
        f"rank{'s' if len(gone) > 1 else ''} {ranks} {'are' if len(gone) > 1 else 'is'} gone: no pulse for "
        f"{PEER_WAIT:g} s (the process ended or was killed; see its log)"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def agree(ok: bool, what: str = "agreeing across ranks", after: str = "") -> bool:
    """Every rank says whether its part succeeded; True on every rank only when all did."""
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=_comm_device())
    _collective(what, lambda: dist.all_reduce(flag, op=dist.ReduceOp.MIN, async_op=True), after)
    return bool(flag.item())


def _broadcast_text(text: str, src: int = 0, what: str = "sharing a value across ranks") -> str:
    """Rank `src`'s `text` on every rank (as bytes in tensors: no pickle)."""
    device = _comm_device()
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    _collective(what, lambda: dist.broadcast(size, src=src, async_op=True))
    if rank() != src:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    _collective(what, lambda: dist.broadcast(data, src=src, async_op=True))
    return bytes(data.cpu().tolist()).decode("utf-8")


def together(step: Callable[[], T], what: str) -> T:
    """`step()` on every rank; if it fails on any, every rank raises: its own error or one naming that rank.

    A step that fails on one rank only (its copy of a file is corrupt, its disk is full) would
    otherwise return on the others, which then wait for it in their next collective until the
    process group's timeout. `step` itself must not call collectives: a rank that failed in it
    would never reach them.
    """
    failure: Exception | None = None
    result: T | None = None
    try:
        result = step()
    except (ZooError, OSError, ValueError, RuntimeError) as err:  # what reading and building raise
        failure = err
    world = dist.get_world_size()
    first = torch.tensor([rank() if failure is not None else world], dtype=torch.int64, device=_comm_device())
    _collective(what, lambda: dist.all_reduce(first, op=dist.ReduceOp.MIN, async_op=True))
    failed = int(first.item())
    if failed == world:
        return result  # type: ignore[return-value]  # no rank failed, so step() returned
    said = _broadcast_text(str(failure) if rank() == failed else "", src=failed, what=what)
    if failure is not None:
        raise failure  # its own error on a rank that failed (it names that rank where it matters)
    raise DistributedError(f"rank {rank()}: {what} failed on rank {failed}: {said}")


def on_rank0_first(fetch: Callable[[], T]) -> T:
    """`fetch()` on rank 0, then on the others once it is done (they find what it fetched in a cache)."""
    first = fetch() if rank() == 0 else None
    _collective("waiting for rank 0 to fetch", lambda: dist.barrier(async_op=True))
    return first if first is not None else fetch()


def same_on_all_ranks(text: str) -> str:
    """Rank 0's value of `text` (a save id drawn on each rank) everywhere."""
    return _broadcast_text(text)


# --- sharding --------------------------------------------------------------------------------------


def shard(model: nn.Module, mesh: DeviceMesh, policy: ShardPolicy = None, *, name: str = "the model") -> None:
    """Apply fully_shard to the blocks `policy` picks (innermost first), then to `model` itself.

    Tied parameters (one Parameter at several places) are gathered by one FSDP unit: the default
    policy leaves the blocks that hold a tie out and makes the smallest block holding all of
    them a unit instead (for GPT-2's embedding and head: the model itself, as torchtitan and
    transformers group them); a policy of the caller's that would split a tie is refused.

    Raises:
        UnknownNameError: `policy` names a block type that `model` does not contain.
        ArgumentError: `policy` puts the places of a tied parameter in different units (naming both keys).
    """
    from torch.distributed.fsdp import fully_shard

    for module in reversed(units(model, policy, name)):  # children before their parents
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def units(model: nn.Module, policy: ShardPolicy = None, name: str = "the model") -> list[nn.Module]:
    """The blocks that become FSDP units below the model itself, in module order; checked against the ties.

    Raises:
        UnknownNameError, ArgumentError: as for `shard`.
    """
    paths = {id(module): path for path, module in model.named_modules()}
    tied = [[(paths[id(module)], key) for module, key in places] for places in ties.groups(model)]
    picks = _default_policy(tied) if policy is None else _policy(model, policy, name)
    chosen = [module for path, module in model.named_modules() if path and picks(path, module)]
    _refuse_split_ties(model, tied, {id(module) for module in chosen}, name)
    return chosen


def _default_policy(tied: list[list[tuple[str, str]]]) -> Callable[[str, nn.Module], bool]:
    """Every block that owns parameters, but a tie goes to the smallest block holding all of its places."""
    holders = {path for places in tied for path, _ in places}
    common = {_common_block([path for path, _ in places]) for places in tied}

    def picks(path: str, module: nn.Module) -> bool:
        owns = any(p is not None for p in module._parameters.values())
        return path in common or (owns and path not in holders)

    return picks


def _common_block(paths: list[str]) -> str:
    """The innermost module path that holds every one of `paths` ("" is the model)."""
    parts = [path.split(".") if path else [] for path in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _refuse_split_ties(model: nn.Module, tied: list[list[tuple[str, str]]], chosen: set[int], name: str) -> None:
    """Every place of a tied parameter must be gathered by the same unit: FSDP manages a parameter in one."""

    def unit_of(path: str) -> str:
        parts = path.split(".") if path else []
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if id(model.get_submodule(prefix)) in chosen:
                return prefix
        return ""

    for places in tied:
        first_path, first_key = places[0]
        for path, key in places[1:]:
            a, b = unit_of(first_path), unit_of(path)
            if a != b:
                full = [f"{p}.{k}" if p else k for p, k in ((first_path, first_key), (path, key))]
                both = _common_block([first_path, path])
                raise ArgumentError(
                    f"rank {rank()}: in {name}, shard= puts '{full[0]}' in {_unit_name(a)} and '{full[1]}', the same "
                    f"Parameter (tied), in {_unit_name(b)}; FSDP gathers a parameter with one unit, so a tie must "
                    f"stay in one. Shard a block that holds both ({f'{both!r}' if both else 'the model itself'}) "
                    f"instead of those below it, or leave shard= out: zoo's default keeps each tie in one unit. "
                    f"Nothing was loaded."
                )


def _unit_name(path: str) -> str:
    return f"the FSDP unit '{path}'" if path else "the model's own FSDP unit"


def _policy(
    model: nn.Module, policy: Collection[str | type[nn.Module]] | Callable[[str, nn.Module], bool], name: str
) -> Callable[[str, nn.Module], bool]:
    if callable(policy):
        return policy
    if isinstance(policy, str):
        policy = {policy}
    present = {type(module).__name__ for module in model.modules()}
    names = {p for p in policy if isinstance(p, str)}
    classes = tuple(p for p in policy if isinstance(p, type))
    unknown = sorted(names - present)
    if unknown:
        raise UnknownNameError(
            f"shard= names {listing(unknown)}, which {name} does not contain (its blocks: {listing(present)})."
            f"{did_you_mean(unknown[0], present)}"
        )
    return lambda _path, module: type(module).__name__ in names or isinstance(module, classes)


# --- building --------------------------------------------------------------------------------------


def refuse_init_rules(name: str, declaration: Mapping[str, Any] | None) -> None:
    """zoo.build(mesh=) cannot run `init` rules shard by shard: say so, with the way round."""
    if declaration is not None and _has_init_rules(declaration):
        raise DistributedError(
            f"rank {rank()}: '{name}' declares `init` rules, which zoo.build(mesh=) cannot run shard by shard. "
            f"Build it once without mesh=, zoo.save it, then zoo.load(path, mesh=mesh)."
        )


def initialise(
    model: nn.Module,
    mesh: DeviceMesh,
    policy: ShardPolicy,
    *,
    name: str,
    rebuild: Callable[[], nn.Module],
    dtype: torch.dtype | None,
) -> None:
    """Shard a model built on meta, then give each rank's rows their initial values (zoo.build's sharding step).

    Each layer is initialised by its own reset_parameters on a full-size temporary that holds
    one layer at a time, with rank 0's random state on every rank; this rank keeps its rows.
    A model of Linear layers (mlp) gets the values an unsharded zoo.build gives after the same
    torch.manual_seed. Buffers get what their constructors compute (from `rebuild()`).
    """
    _check_initialisable(model, name)
    shard(model, mesh, policy, name=f"'{name}'")
    allocate(model, mesh)
    _use_rank0_random_state()
    _initialise(model)
    every = [key for key, _ in model.named_buffers(remove_duplicate=False)]
    missing = fill_buffers(model, rebuild, every, dtype=dtype)
    if missing:
        raise WeightsError(f"rank {rank()}: buffer '{missing[0]}' got no value from its constructor")


def _has_init_rules(node: Any) -> bool:
    if isinstance(node, Mapping):
        return "init" in node or any(_has_init_rules(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_init_rules(v) for v in node)
    return False


def _check_initialisable(model: nn.Module, name: str) -> None:
    lacking = sorted(
        f"{path or '(model)'} ({type(module).__name__})"
        for path, module in model.named_modules()
        if any(p is not None for p in module._parameters.values()) and not hasattr(module, "reset_parameters")
    )
    if lacking:
        raise DistributedError(
            f"rank {rank()}: in '{name}', {listing(lacking)} hold parameters but have no reset_parameters(), so "
            f"zoo cannot initialise them shard by shard. Build the model once without mesh=, zoo.save it, then "
            f"zoo.load(path, mesh=mesh)."
        )


def _use_rank0_random_state() -> None:
    """Every rank draws what rank 0 draws, so the rows of one layer come from one full tensor."""
    state = torch.random.get_rng_state().to(_comm_device())
    _collective("sharing rank 0's random state", lambda: dist.broadcast(state, src=0, async_op=True))
    torch.random.set_rng_state(state.cpu())


def allocate(model: nn.Module, mesh: DeviceMesh) -> None:
    """Give a sharded model built on meta its local rows on the mesh's device (uninitialised), ties kept."""
    with ties.kept(model):
        model.to_empty(device=mesh_device(mesh))


def _initialise(model: nn.Module) -> None:
    seen: set[int] = set()  # a tied parameter keeps the values of its first owner, as the tie in a build does
    for _path, module in model.named_modules():
        own = {n: p for n, p in module._parameters.items() if p is not None}
        if not own:
            continue
        full = {n: nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=_local(p).device)) for n, p in own.items()}
        module._parameters.update(full)
        try:
            module.reset_parameters()
        finally:
            module._parameters.update(own)
        with torch.no_grad():
            for n, p in own.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    _copy_rows(p, full[n].__getitem__)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    to_local = getattr(tensor, "to_local", None)  # a DTensor: this rank's rows
    return to_local() if to_local is not None else tensor


def _index(target: torch.Tensor) -> tuple[slice, ...]:
    """This rank's place in the full tensor: the slices its local rows cover."""
    chunks = target.__create_chunk_list__() if hasattr(target, "__create_chunk_list__") else None
    if chunks is None:
        return tuple(slice(0, n) for n in target.shape)
    (chunk,) = chunks
    return tuple(slice(o, o + n) for o, n in zip(chunk.offsets, chunk.sizes, strict=True))


def _copy_rows(target: torch.Tensor, read: Callable[[tuple[slice, ...]], torch.Tensor]) -> None:
    """Fill this rank's part of `target` with `read(index)`, `index` its place in the full tensor."""
    local = _local(target)
    if local.numel() == 0:  # fewer rows than ranks: this rank holds none
        return
    local.copy_(read(_index(target)))


def _read_rows(target: torch.Tensor, stored: reader.StoredTensors, key: str) -> None:
    """Read this rank's part of `target` from the file straight into its memory (nothing else is allocated)."""
    local = _local(target)
    if local.numel() == 0:
        return
    stored.read_into(key, _index(target), local)


# --- loading ---------------------------------------------------------------------------------------


def require_fit(model: nn.Module, stored: reader.StoredTensors, what: str) -> fit.LoadReport:
    """The fit of the stored tensors to `model`'s full shapes; raise, naming this rank and every key, on a misfit."""
    report = fit.check_fit(model.state_dict(keep_vars=True), stored)
    if report:  # a sharded load is strict: misfit_error's hint about strict=False does not apply
        raise fit.misfit_error(report, f"rank {rank()}: {stored.where}", what, strict_hint=False)
    return report


def read_rows(model: nn.Module, stored: reader.StoredTensors) -> None:
    """Copy this rank's rows of every stored tensor into `model`, reading only their bytes."""
    seen: set[int] = set()
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if id(tensor) in seen:  # tied: one tensor under two keys
                continue
            seen.add(id(tensor))
            _read_rows(tensor, stored, key)


def load_into(model: nn.Module, path: Path) -> None:
    """Read a saved folder into a sharded model in place (checkpoint.resume); everything checked first."""
    with contextlib.ExitStack() as stack:
        # Checked on every rank before any rank changes the model: a misfit or a bad file on one fails all unchanged.
        stored = together(lambda: _checked(stack, model, path), f"reading {path}")
        together(
            lambda: read_rows(model, stored), f"reading {path}"
        )  # a file that fails mid-read: the model is partly read


def _checked(stack: contextlib.ExitStack, model: nn.Module, path: Path) -> reader.StoredTensors:
    stored = stack.enter_context(reader.open_stored(path))
    require_fit(model, stored, "the sharded model")
    return stored


# --- saving ----------------------------------------------------------------------------------------


NOTHING_SAVED = ", and nothing was saved"


@contextlib.contextmanager
def atomic_dir_on_ranks(target: Path, keep: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """fsio.atomic_dir across ranks: one temporary folder, which every rank fills and rank 0 publishes.

    It is published only once every rank has written its part; a rank that fails or dies
    leaves the previous folder under `target` untouched, and every rank raises. `keep`: as for
    fsio.atomic_dir, names in the previous folder to carry over.
    """
    me = rank()
    writer = fsio.atomic_dir(target, keep=keep) if me == 0 else None
    temp = ""
    if writer is not None:
        try:
            temp = str(writer.__enter__())
        finally:
            temp = _broadcast_text(temp)  # empty: rank 0 failed, and raises its own error
    else:
        temp = _broadcast_text(temp)
    if not temp:
        raise DistributedError(f"rank {me}: rank 0 could not create a folder to save {target}; see its error")
    try:
        yield Path(temp)
    except RuntimeError as err:  # from a collective: a rank died or hung (ZooErrors are RuntimeErrors too)
        if isinstance(err, ZooError):
            _abandon(writer, err)
            raise
        _abandon(writer, err, tell=False)  # the process group is broken: no collective reaches the others now
        raise _lost(f"saving {target}", err, NOTHING_SAVED) from err
    except BaseException as err:
        _abandon(writer, err)
        raise
    try:
        everyone = agree(True, f"saving {target}", NOTHING_SAVED)
    except DistributedError as err:  # a rank died: the roll call names it
        _abandon(writer, err)
        raise
    if not everyone:
        failed = DistributedError(f"rank {me}: another rank failed to write its part of {target}; nothing was saved")
        _abandon(writer, failed)
        raise failed
    published: BaseException | None = None
    if writer is not None:
        try:
            writer.__exit__(None, None, None)
        except BaseException as err:
            published = err
    if not agree(published is None):
        if published is not None:
            raise published
        raise DistributedError(f"rank {me}: rank 0 could not publish {target}; see its error")


def _abandon(writer: contextlib.AbstractContextManager[Path] | None, err: BaseException, tell: bool = True) -> None:
    """Tell the other ranks (when they can still hear) and, on rank 0, delete the temporary folder."""
    if tell and not isinstance(err, DistributedError):
        with contextlib.suppress(Exception):  # a dead peer: the collective fails, the folder must still go
            agree(False)
    if writer is not None:
        writer.__exit__(type(err), err, err.__traceback__)


def write_state(temp: Path, state: Mapping[str, torch.Tensor], save_id: str) -> None:
    """Every rank: write the tensors this rank owns as one shard file, receiving their rows from the other ranks.

    `temp` becomes a zoo weights folder (model.safetensors, or shards and their index, which
    rank 0 writes). A tensor under several keys (tied) is stored once. Each file's header is
    written first, from the shapes, and every rank's rows of a tensor go straight to their place
    in it, one rank's rows at a time: a rank holds its own shards and one other rank's rows of one
    tensor, never a gathered model. Collective: every rank calls it, with the same state.
    """
    temp.mkdir(exist_ok=True)
    me, world = rank(), dist.get_world_size()
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in state.items():
        if id(tensor) in first:
            aliases[key] = first[id(tensor)]
        else:
            first[id(tensor)] = key
    unique = list(first.values())
    writer.check_storable({key: state[key] for key in unique}, None)  # the same verdict on every rank, before any I/O
    owner = _owners(unique, state, world)
    files = sorted(set(owner.values()))
    names = {
        o: layout.MODEL_FILE if len(files) == 1 else layout.SHARD_NAME.format(i + 1, len(files))
        for i, o in enumerate(files)
    }
    mine = [key for key in unique if owner[key] == me]
    plan = None
    if mine:
        metadata = {"format": "pt", layout.SAVE_ID_KEY: save_id}
        own_aliases = {alias: key for alias, key in aliases.items() if owner[key] == me}
        if own_aliases:
            metadata[layout.ALIASES_KEY] = json.dumps(own_aliases)
        plan = writer.plan_file({key: (state[key].dtype, tuple(state[key].shape)) for key in mine}, metadata)
    with open(temp / names[me], "xb") if plan is not None else contextlib.nullcontext() as f:
        if f is not None and plan is not None:
            f.write(plan.header)
            f.flush()
        inbox = _Inbox()
        with torch.no_grad():
            for key in unique:
                at = plan.offsets[key] if plan is not None and owner[key] == me else None
                _stream(state[key], owner[key], f, at, inbox)
        if f is not None:
            os.fsync(f.fileno())
    if me == 0 and len(files) > 1:
        index = {
            "metadata": {"total_size": sum(_nbytes(state[k]) for k in unique)},
            "weight_map": {key: names[owner[key]] for key in unique},
        }
        (temp / layout.INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


class _Inbox:
    """One receive buffer for a whole save, grown to the largest part: rows in flight never pile up."""

    def __init__(self) -> None:
        self.memory: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        if self.memory is None or self.memory.numel() < nbytes or self.memory.device != device:
            self.memory = None  # the old buffer goes before the new one comes
            self.memory = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return self.memory[:nbytes].view(dtype).view(shape)


def _stream(tensor: torch.Tensor, owner: int, f: Any, offset: int | None, inbox: _Inbox) -> None:
    """Get every rank's rows of `tensor` to `owner`, which writes them at `offset` of `f`. Collective.

    A tensor fully_shard cut into rows (Shard(0) on a 1-D mesh) goes rank by rank: each rank
    sends its rows, the owner writes them where they belong, so only one rank's rows are ever in
    flight. Anything else (replicated buffers, other placements) is gathered whole first.
    """
    from torch.distributed.tensor import DTensor, Shard

    me = rank()
    rows_cut = (
        isinstance(tensor, DTensor)
        and tensor.device_mesh.ndim == 1
        and tuple(tensor.placements) == (Shard(0),)
        and tensor.dim() > 0
        and tensor.shape[0] > 0
    )
    if not rows_cut:
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor.detach()
        if offset is not None:
            writer.write_at(f, full, offset)
        return
    assert isinstance(tensor, DTensor)
    world, rows = dist.get_world_size(), tensor.shape[0]
    per = -(-rows // world)  # fully_shard cuts dim 0 as torch.chunk does: ceil(rows / world) rows per rank
    row_bytes = math.prod(tensor.shape[1:]) * tensor.dtype.itemsize
    local = tensor.to_local()
    if offset is None:  # not the owner: send this rank's rows, if it holds any
        if local.shape[0] > 0:
            dist.send(local.contiguous(), dst=owner)
        return
    for r in range(world):
        count = max(0, min(per, rows - r * per))
        if count == 0:
            continue
        if r == me:
            part = local
        else:
            part = inbox.take((count, *tensor.shape[1:]), tensor.dtype, local.device)
            dist.recv(part, src=r)
        writer.write_at(f, part, offset + r * per * row_bytes)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _owners(keys: list[str], state: Mapping[str, torch.Tensor], world: int) -> dict[str, int]:
    """Which rank writes each tensor: consecutive keys, about the same number of bytes per rank."""
    total = sum(_nbytes(state[k]) for k in keys) or 1
    owner, done = {}, 0
    for key in keys:
        owner[key] = min(world - 1, done * world // total)
        done += _nbytes(state[key])
    return owner


# --- optimizers ------------------------------------------------------------------------------------


OPTIMIZER_DIR = "optimizer"  # in a sharded checkpoint's step folder: the optimizer's tensors, a zoo weights folder


def optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The optimizer's state by parameter name: (everything but the tensors, the tensors by flat key). Collective.

    The tensors are this rank's shards (DTensors), written by write_state; the rest goes into
    trainer_state.safetensors.
    """
    state, tensors = _optimizer_tensors(model, optimizer)
    rest = {
        "param_groups": state["param_groups"],
        "state": {
            name: {field: value for field, value in fields.items() if not isinstance(value, torch.Tensor)}
            for name, fields in state["state"].items()
        },
    }
    return rest, tensors


def _optimizer_key(name: str, field: str) -> str:
    return f"state.{name}.{field}"


def _optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, dict[str, torch.Tensor]]:
    """The optimizer's state (DCP creates it, zeros, when the optimizer has not stepped yet) and its tensors by key."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    try:
        state: Any = get_optimizer_state_dict(model, optimizer)
    except (KeyError, RuntimeError, ValueError) as err:
        raise DistributedError(
            f"rank {rank()}: cannot read the optimizer's state by parameter name ({type(err).__name__}: {err}); "
            f"build the optimizer over model.parameters() after zoo.build/zoo.load(mesh=)"
        ) from err
    tensors = {
        _optimizer_key(name, field): value
        for name, fields in state["state"].items()
        for field, value in fields.items()
        if isinstance(value, torch.Tensor)
    }
    return state, tensors


def check_optimizer_files(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Raise, naming this rank and the keys, when the optimizer tensors in `folder` do not fit `optimizer`."""
    _state, expected = _optimizer_tensors(model, optimizer)
    with reader.open_stored(folder) as stored:
        report = fit.check_fit(expected, stored)
    if report:
        raise WeightsError(
            f"rank {rank()}: the optimizer state in {folder} does not fit this optimizer, so nothing was "
            f"loaded:\n{report.describe()}\nResume with the optimizer built as when it was saved."
        )


def load_optimizer_files(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any], folder: Path
) -> None:
    """Put a state written by optimizer_state + write_state into `optimizer`, each rank reading its rows.

    The optimizer's own state gives each tensor its shape and layout. Call check_optimizer_files first.
    """
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state, expected = _optimizer_tensors(model, optimizer)
    with reader.open_stored(folder) as stored, torch.no_grad():
        for key, tensor in expected.items():
            if tensor.dim() == 0:  # a step count
                tensor.copy_(stored.tensor(key))
            else:
                _read_rows(tensor, stored, key)
    for name, fields in saved.get("state", {}).items():
        if name in state["state"]:
            state["state"][name].update(fields)  # values that are no tensors (rare; a step count as an int)
    state["param_groups"] = saved["param_groups"]
    set_optimizer_state_dict(model, optimizer, state)


def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Put the state of an unsharded save (parameters by position) into a sharded model's `optimizer`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    try:
        set_optimizer_state_dict(
            model, optimizer, _named(model, optimizer, saved), options=StateDictOptions(full_state_dict=True)
        )
    except (KeyError, RuntimeError, ValueError) as err:
        raise DistributedError(
            f"rank {rank()}: the checkpoint's optimizer state does not fit this optimizer "
            f"({type(err).__name__}: {err}); resume with the optimizer built as when it was saved"
        ) from err


def _named(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """An unsharded optimizer state (parameters by position) keyed by this model's parameter names."""
    names = {id(p): n for n, p in model.named_parameters()}
    position = [names.get(id(p)) for group in optimizer.param_groups for p in group["params"]]
    if None in position:
        raise DistributedError(f"rank {rank()}: the optimizer holds parameters that are not the model's")
    ids = [i for group in saved["param_groups"] for i in group["params"]]
    to_name = dict(zip(ids, position, strict=True))
    return {
        "state": {to_name[i]: value for i, value in saved["state"].items()},
        "param_groups": [{**g, "params": [to_name[i] for i in g["params"]]} for g in saved["param_groups"]],
    }
