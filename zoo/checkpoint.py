"""Training checkpoints: model, optimizer, step and extra state, one folder per step, no pickle.

    DIR/step-00000100/model.safetensors           the model's weights (and config.json when zoo built it,
                                                  so zoo.load works on a checkpoint too)
    DIR/step-00000100/trainer_state.safetensors   step, the optimizer's class and state_dict and
                                                  `extra`, in zoo.save_tensors' format
    DIR/step-00000100/optimizer/                  a sharded model's optimizer tensors, by parameter name,
                                                  one file per rank (zoo.distributed); trainer_state then
                                                  holds the rest of its state_dict

Each step folder is written beside its final name and swapped in whole (zoo._files.fsio), so a
process killed at any moment leaves every earlier checkpoint complete, and `resume` takes
the newest one. The seed's reason for checkpoints, the power going out, is the case handled.

Example:
    state = zoo.checkpoint.resume("runs/a", model, optimizer)
    start = state.step + 1 if state else 0
    for step in range(start, steps):
        ...
        if step % 100 == 0:
            zoo.checkpoint.save("runs/a", model=model, optimizer=optimizer, step=step, keep_last=3)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo._build import lazy
from zoo._errors import ArgumentError, WeightsError, listing
from zoo._files import fsio
from zoo._saved import folder
from zoo._saved.config import config_text, new_save_id
from zoo._scale import fsdp
from zoo._weights import fit, nested

STATE_FILE = "trainer_state.safetensors"
_STEP_DIR = "step-{:08d}"
_STEP = re.compile(r"^step-(\d{8,})$")


@dataclass(frozen=True)
class Checkpoint:
    """What `resume` restored."""

    path: Path  # the step folder
    step: int
    extra: dict[str, Any]  # what was passed to save as `extra`


@fsdp.watched
def save(
    directory: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    step: int,
    extra: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write a checkpoint for `step` under `directory`; it appears complete or not at all.

    Args:
        model: its weights are saved as zoo.save would (tied weights once).
        optimizer: its state_dict, tensors and hyper-parameters, in safetensors.
        step: the training step (an int >= 0); names the folder, `resume` returns it.
        extra: anything else to restore: tensors (torch.get_rng_state()), numbers, strings,
            lists and dicts of them (a scheduler's state_dict).
        keep_last: afterwards, delete all but the newest `keep_last` checkpoints (by step) and
            the one just written, which an older step (a run restarted at 0) would leave out.

    Returns:
        The new step folder.

    Raises:
        ArgumentError: a bad step or keep_last, or an `extra` value that cannot be stored.
        NotMaterializedError: the model still has lazy layers.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ArgumentError(f"step must be an int >= 0, got {step!r}")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise ArgumentError(f"keep_last must be None or an int >= 1, got {keep_last!r}")
    lazy.require_materialized(model, "save a checkpoint of")
    sharded = fsdp.is_sharded(model)  # then every rank calls save, and each writes its part
    optimizer_state: Any = None
    optimizer_tensors = None  # a sharded model's: by parameter name, written like the model by every rank
    if optimizer is not None and sharded:
        optimizer_state, optimizer_tensors = fsdp.optimizer_state(model, optimizer)
    elif optimizer is not None:
        optimizer_state = optimizer.state_dict()
    state = {
        "step": step,
        "optimizer": optimizer_state,
        "optimizer_class": _qualified_name(optimizer) if optimizer is not None else None,
        "extra": dict(extra) if extra is not None else {},
        **({"optimizer_files": fsdp.OPTIMIZER_DIR} if optimizer_tensors is not None else {}),
    }
    save_id = fsdp.same_on_all_ranks(new_save_id()) if sharded else new_save_id()
    config = config_text(model, save_id)
    root = Path(directory)
    target = root / _STEP_DIR.format(step)
    # What killed saves left goes before this save adds its own, so kills cannot pile up (one rank clears).
    if root.is_dir() and (not sharded or fsdp.rank() == 0):
        fsio.remove_stale(root)
        _rotate(root, keep_last, target)
    try:
        if sharded:
            with fsdp.atomic_dir_on_ranks(target) as temp:
                # The collective writes first: a rank failing alone (a bad `extra`) cannot leave the others waiting.
                folder.write_shard_files(temp, model, config, save_id)
                if optimizer_tensors is not None:
                    fsdp.write_state(temp / fsdp.OPTIMIZER_DIR, optimizer_tensors, save_id)
                if fsdp.rank() == 0:
                    nested.save_tensors(state, temp / STATE_FILE)
        else:
            with fsio.atomic_dir(target) as temp:
                # First: a value it cannot store fails before the weights are written.
                nested.save_tensors(state, temp / STATE_FILE)
                folder.write_files(temp, model, config, save_id, card=False)
    except OSError as err:  # a full disk, no permission: earlier checkpoints are untouched
        raise WeightsError(f"cannot save a checkpoint to {target}: {err}") from err
    if sharded and fsdp.rank() != 0:
        fsdp.agree(True)  # returns once rank 0 has rotated the old checkpoints
        return target
    fsio.remove_stale(root)
    _rotate(root, keep_last, target)
    if sharded:
        fsdp.agree(True)
    return target


def _rotate(root: Path, keep_last: int | None, target: Path) -> None:
    """Delete all but the newest `keep_last` checkpoints, never `target` (the one this save writes)."""
    if keep_last is not None:
        for old in checkpoints(root)[:-keep_last]:
            if old.name != target.name:
                fsio.remove_dir(old)


def checkpoints(directory: str | Path) -> list[Path]:
    """The step folders under `directory`, oldest first (none when it does not exist)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found)]


def latest(directory: str | Path) -> Path | None:
    """The newest step folder under `directory`, or None."""
    found = checkpoints(directory)
    return found[-1] if found else None


@fsdp.watched
def resume(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> Checkpoint | None:
    """Load the newest checkpoint under `directory` into `model` (and `optimizer`); None when there is none.

    Everything is checked before the model or the optimizer changes: a checkpoint that does
    not fit leaves both as they were.

    Raises:
        WeightsError: the checkpoint does not fit the model or the optimizer (another class,
            other parameters, missing hyper-parameters), or is corrupt.
    """
    path = latest(directory)
    if path is None:
        return None

    def checked() -> tuple[int, Any, dict[str, Any], Path | None]:
        state = nested.load_tensors(path / STATE_FILE)
        step, saved_optimizer, extra = _unpack(state, path / STATE_FILE)
        if optimizer is not None:
            _check_optimizer(optimizer, saved_optimizer, state.get("optimizer_class"), path / STATE_FILE)
        files = path / fsdp.OPTIMIZER_DIR if state.get("optimizer_files") == fsdp.OPTIMIZER_DIR else None
        if optimizer is not None and files is not None:  # written by the ranks of a sharded save
            fsdp.check_optimizer_files(model, optimizer, files)
        return step, saved_optimizer, extra, files

    if fsdp.is_sharded(model):  # a rank whose copy fails a check fails every rank, before any changes
        step, saved_optimizer, extra, optimizer_files = fsdp.together(checked, f"zoo.checkpoint.resume('{path}')")
    else:
        step, saved_optimizer, extra, optimizer_files = checked()
    if fsdp.is_sharded(model):
        fsdp.load_into(model, path)  # each rank reads its rows
    else:
        fit.load_local_weights(model, path)
    if optimizer is not None:
        if optimizer_files is not None:
            fsdp.load_optimizer_files(model, optimizer, saved_optimizer, optimizer_files)
        elif fsdp.is_sharded(model):  # saved by one process, resumed on several
            fsdp.load_optimizer(model, optimizer, saved_optimizer)
        else:
            optimizer.load_state_dict(saved_optimizer)
    return Checkpoint(path, step, extra)


def _unpack(state: Any, file: Path) -> tuple[int, Any, dict[str, Any]]:
    if not (
        isinstance(state, dict)
        and isinstance(state.get("step"), int)
        and isinstance(state.get("extra"), dict)
        and isinstance(state.get("optimizer_class"), (str, type(None)))  # absent in checkpoints of older zoo versions
    ):
        raise WeightsError(f"{file} is not a zoo training state (step, optimizer, extra)")
    return state["step"], state.get("optimizer"), state["extra"]


def _qualified_name(optimizer: torch.optim.Optimizer) -> str:
    return f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"


def _check_optimizer(optimizer: torch.optim.Optimizer, saved: Any, saved_class: Any, file: Path) -> None:
    """Refuse a saved state this optimizer would accept and then fail on at its first step (an Adam's into an SGD)."""
    if saved is None:
        raise WeightsError(f"{file} holds no optimizer state (the checkpoint was saved without optimizer=)")
    if saved_class is not None and saved_class != _qualified_name(optimizer):
        raise WeightsError(
            f"{file} holds the state of a {saved_class}, and the optimizer to resume is a "
            f"{_qualified_name(optimizer)}; build a {saved_class.rpartition('.')[2]} as when it was saved"
        )
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise WeightsError(f"{file}: the optimizer state has no valid param_groups")
    have = [len(g["params"]) for g in optimizer.param_groups]
    stored = [len(g["params"]) for g in groups]
    if have != stored:
        raise WeightsError(
            f"{file}: the optimizer's parameter groups hold {have} parameters, the checkpoint's {stored}; "
            f"build the optimizer over the same parameters as when it was saved"
        )
    # A loaded group replaces the optimizer's own, so each must hold every hyper-parameter step() reads.
    # More keys are harmless: an LR scheduler adds `initial_lr`, whether built before saving or before resuming.
    for i, group in enumerate(groups):
        lacking = optimizer.defaults.keys() - group.keys()
        if lacking:
            raise WeightsError(
                f"{file}: parameter group {i} of the checkpoint lacks {listing(lacking)}, which this "
                f"{type(optimizer).__name__} needs (it holds {listing(k for k in group if k != 'params')}); "
                f"resume with the optimizer class and torch version it was saved with"
            )
