"""zoo.checkpoint: save and resume training state (model, optimizer, step, extra), rotation, crashes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import zoo
from zoo import checkpoint
from zoo._errors import ArgumentError, NotMaterializedError, WeightsError


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = zoo.build("mlp", hidden=16)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    x = torch.rand(4, 20, generator=torch.Generator().manual_seed(step))  # the data depends on the step only
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, straight_opt = setup()
    for step in range(6):
        train_step(straight, straight_opt, step)

    model, optimizer = setup()
    for step in range(3):
        train_step(model, optimizer, step)
    path = checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=2)
    assert path == tmp_path / "step-00000002"
    assert set(load_file(path / "model.safetensors")) == set(model.state_dict())

    model, optimizer = setup(seed=123)  # a new process would start from other values
    state = checkpoint.resume(tmp_path, model, optimizer)
    assert state is not None and state.step == 2 and state.path == path and state.extra == {}
    for step in range(state.step + 1, 6):
        train_step(model, optimizer, step)
    assert same_tensors(model.state_dict(), straight.state_dict())
    assert same_tensors(optimizer_tensors(optimizer), optimizer_tensors(straight_opt))


def test_extra_state_comes_back(tmp_path: Path) -> None:
    model, optimizer = setup()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    train_step(model, optimizer, 0)
    scheduler.step()
    extra = {"rng": torch.get_rng_state(), "scheduler": scheduler.state_dict(), "best": 0.25, "note": "warm-up"}
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=7, extra=extra)
    fresh, fresh_opt = setup(seed=5)
    state = checkpoint.resume(tmp_path, fresh, fresh_opt)
    assert state is not None
    assert torch.equal(state.extra["rng"], extra["rng"]) and state.extra["best"] == 0.25
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=9)
    fresh_scheduler.load_state_dict(state.extra["scheduler"])
    assert fresh_scheduler.state_dict() == scheduler.state_dict()


def test_keep_last_rotates_old_checkpoints(tmp_path: Path) -> None:
    model, optimizer = setup()
    for step in (1, 2, 9, 10, 11):
        checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=step, keep_last=3)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-00000009", "step-00000010", "step-00000011"]
    assert checkpoint.latest(tmp_path) == tmp_path / "step-00000011"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000009", "step-00000010", "step-00000011"]


def test_keep_last_never_deletes_the_checkpoint_just_written(tmp_path: Path) -> None:
    model, optimizer = setup()
    for step in (100, 101, 102):
        checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=step, keep_last=3)
    path = checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0, keep_last=3)  # a run started over
    assert path.is_dir() and zoo.load(path) is not None
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "step-00000000",
        "step-00000100",
        "step-00000101",
        "step-00000102",
    ]
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=103, keep_last=3)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["step-00000101", "step-00000102", "step-00000103"]


def test_resume_without_checkpoints_returns_none_and_changes_nothing(tmp_path: Path) -> None:
    model, optimizer = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint.resume(tmp_path / "never-written", model, optimizer) is None
    (tmp_path / "empty").mkdir()
    assert checkpoint.resume(tmp_path / "empty", model, optimizer) is None
    assert same_tensors(model.state_dict(), before) and checkpoint.latest(tmp_path) is None


def test_a_checkpoint_that_does_not_fit_changes_neither_model_nor_optimizer(tmp_path: Path) -> None:
    model, optimizer = setup()
    train_step(model, optimizer, 0)
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0)
    other = zoo.build("mlp", hidden=8)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.01)
    train_step(other, other_opt, 0)
    before, before_opt = {k: v.clone() for k, v in other.state_dict().items()}, optimizer_tensors(other_opt)
    with pytest.raises(WeightsError, match="shape"):
        checkpoint.resume(tmp_path, other, other_opt)
    assert same_tensors(other.state_dict(), before) and same_tensors(optimizer_tensors(other_opt), before_opt)


def test_an_optimizer_over_other_parameters_is_refused_before_the_model_changes(tmp_path: Path) -> None:
    model, optimizer = setup()
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0)
    fresh, _ = setup(seed=9)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    partial = torch.optim.Adam([fresh.hidden.weight], lr=0.01)
    with pytest.raises(WeightsError, match=r"hold \[1\] parameters, the checkpoint's \[4\]"):
        checkpoint.resume(tmp_path, fresh, partial)
    assert same_tensors(fresh.state_dict(), before)


def test_an_optimizer_of_another_class_is_refused_before_anything_changes(tmp_path: Path) -> None:
    model, optimizer = setup()
    train_step(model, optimizer, 0)
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0)
    fresh, _ = setup(seed=9)
    sgd = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    train_step(fresh, sgd, 1)
    before, before_opt = {k: v.clone() for k, v in fresh.state_dict().items()}, optimizer_tensors(sgd)
    with pytest.raises(WeightsError, match=r"state of a torch\.optim\.adam\.Adam, .* is a torch\.optim\.sgd\.SGD"):
        checkpoint.resume(tmp_path, fresh, sgd)
    assert same_tensors(fresh.state_dict(), before) and same_tensors(optimizer_tensors(sgd), before_opt)
    assert sgd.param_groups[0]["momentum"] == 0.9
    train_step(fresh, sgd, 2)  # the optimizer still works


def test_param_groups_missing_a_hyper_parameter_are_refused(tmp_path: Path) -> None:
    model, optimizer = setup()
    for group in optimizer.param_groups:  # as an Adam of another torch version might have saved it
        del group["eps"]
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0)
    fresh, fresh_opt = setup(seed=9)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(WeightsError, match=r"parameter group 0 of the checkpoint lacks eps, which this Adam needs"):
        checkpoint.resume(tmp_path, fresh, fresh_opt)
    assert same_tensors(fresh.state_dict(), before) and "eps" in fresh_opt.param_groups[0]


def test_a_scheduler_built_before_resuming_is_no_misfit(tmp_path: Path) -> None:
    model, optimizer = setup()
    train_step(model, optimizer, 0)
    checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=0)
    fresh, fresh_opt = setup(seed=9)
    torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2)  # adds `initial_lr` to the groups
    assert checkpoint.resume(tmp_path, fresh, fresh_opt) is not None
    train_step(fresh, fresh_opt, 1)


def test_a_checkpoint_without_optimizer_state(tmp_path: Path) -> None:
    model, optimizer = setup()
    checkpoint.save(tmp_path, model=model, step=3)
    with pytest.raises(WeightsError, match="holds no optimizer state"):
        checkpoint.resume(tmp_path, model, optimizer)
    state = checkpoint.resume(tmp_path, model)
    assert state is not None and state.step == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1}, "step"),
        ({"step": "3"}, "step"),
        ({"step": True}, "step"),
        ({"step": 1, "keep_last": 0}, "keep_last"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    model, _ = setup()
    with pytest.raises(ArgumentError, match=match):
        checkpoint.save(tmp_path, model=model, **kwargs)  # type: ignore[arg-type]


def test_extra_that_cannot_be_stored_writes_nothing(tmp_path: Path) -> None:
    model, optimizer = setup()
    with pytest.raises(ArgumentError, match=r"obj\['extra'\]\['loader'\] is a object"):
        checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=1, extra={"loader": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_lazy_model_cannot_be_checkpointed(tmp_path: Path) -> None:
    with pytest.raises(NotMaterializedError, match="save a checkpoint of"):
        checkpoint.save(tmp_path, model=zoo.build("lazy_mlp"), step=0)


def test_zoo_load_opens_a_checkpoint_of_a_zoo_model(tmp_path: Path) -> None:
    model, optimizer = setup()
    path = checkpoint.save(tmp_path, model=model, optimizer=optimizer, step=4)
    loaded = zoo.load(path)
    assert same_tensors(loaded.state_dict(), model.state_dict())


_TRAIN = textwrap.dedent(
    """
    import sys, torch, zoo
    torch.set_num_threads(1)
    directory, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.manual_seed(0)
    model = zoo.build("mlp", hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    state = zoo.checkpoint.resume(directory, model, optimizer)
    start = state.step + 1 if state else 0
    print("start", start, flush=True)
    for step in range(start, steps):
        x = torch.rand(8, 20, generator=torch.Generator().manual_seed(step))
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        zoo.checkpoint.save(directory, model=model, optimizer=optimizer, step=step, keep_last=2)
        print("step", step, flush=True)
    zoo.save_tensors(model.state_dict(), out)
    """
)


@pytest.mark.slow
def test_a_training_loop_killed_mid_run_resumes_from_the_last_complete_checkpoint(tmp_path: Path) -> None:
    steps = 16

    def command(name: str) -> list[str]:
        return [sys.executable, "-c", _TRAIN, str(tmp_path / name), str(steps), str(tmp_path / f"{name}.out")]

    reference = subprocess.run(command("ref"), capture_output=True, text=True, timeout=120)
    assert reference.returncode == 0, reference.stderr
    run = subprocess.Popen(command("run"), stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    for line in run.stdout:  # the power goes out somewhere after step 5
        if line.split() == ["step", "5"]:
            run.send_signal(signal.SIGKILL)
            break
    run.stdout.close()
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL and not (tmp_path / "run.out").exists()
    resumed = subprocess.run(command("run"), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    start = int(resumed.stdout.split()[1])
    assert 6 <= start < steps  # it did not start over
    assert same_tensors(zoo.load_tensors(tmp_path / "run.out"), zoo.load_tensors(tmp_path / "ref.out"))
    assert len(checkpoint.checkpoints(tmp_path / "run")) == 2
