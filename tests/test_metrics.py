"""zoo.metrics: the accumulator that syncs to the host once per N steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import zoo
from zoo._errors import ArgumentError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------- the accumulator


def test_the_accumulator_syncs_once_per_n_steps() -> None:
    acc = zoo.Accumulator(sync_every=10)
    logs = []
    for step in range(95):
        out = acc.add(loss=torch.tensor(float(step)), correct=torch.tensor([True, step % 2 == 0]))
        if out is not None:
            logs.append((step, out))
    assert acc.syncs == 95 // 10
    assert [step for step, _ in logs] == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    assert logs[0][1] == {"loss": sum(range(10)) / 10, "correct": 15 / 20}
    assert acc.mean() == {"loss": sum(range(95)) / 95, "correct": (95 + 48) / 190}
    assert acc.value() == {"loss": float(sum(range(95))), "correct": 95.0 + 48}
    assert acc.syncs == 10  # mean() synced once; value() after it had nothing new to fetch


def test_the_accumulator_takes_numbers_and_resets() -> None:
    acc = zoo.Accumulator(sync_every=3)
    acc.add(loss=0.5, n=4)
    acc.add(loss=1.5, n=4)
    assert acc.mean() == {"loss": 1.0, "n": 4.0}
    acc.reset()
    acc.add(loss=2.0)
    assert acc.value() == {"loss": 2.0} and acc.steps == 1


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: zoo.Accumulator(sync_every=0), "≥ 1"),
        (lambda: zoo.Accumulator(sync_every=True), "≥ 1"),
        (lambda: zoo.Accumulator().add(), "at least one metric"),
        (lambda: zoo.Accumulator().add(loss="low"), "a str is not a tensor or a number"),
    ],
)
def test_bad_accumulator_input_is_an_error(make: Callable[[], Any], fragment: str) -> None:
    with pytest.raises(ArgumentError, match=fragment):
        make()


def test_a_metric_stays_on_one_device() -> None:
    acc = zoo.Accumulator()
    acc.add(loss=torch.ones(()))
    with pytest.raises(ArgumentError, match="accumulates on cpu"):
        acc.add(loss=torch.ones((), device="meta"))


# ---------------------------------------------------------------- the command line


@pytest.mark.gpu
@needs_cuda
def test_gpu_accumulator_does_not_sync_between_syncs() -> None:
    acc = zoo.Accumulator(sync_every=5)
    losses = torch.rand(20, device="cuda")
    torch.cuda.set_sync_debug_mode("error")  # any device → host wait raises
    try:
        for i in range(4):
            assert acc.add(loss=losses[i], correct=losses[i] > 0.5) is None
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert acc.add(loss=losses[4], correct=losses[4] > 0.5) is not None and acc.syncs == 1
    assert acc.mean()["loss"] == pytest.approx(losses[:5].mean().item())
