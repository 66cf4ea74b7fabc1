"""1/N memory: a sharded load allocates and reads only each rank's rows; a sharded save holds a rank's share and
one other rank's rows of one tensor. Measured as peak resident memory per rank (memory_worker.py) on 1, 2
and 4 gloo ranks for a 48 MiB model; the assertions are ratios to the model's bytes, with margins for the
allocator and the process (no times)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from tests.scale.conftest import run_ranks

WORKER = Path(__file__).parent / "memory_worker.py"
LAYERS, ROWS, COLUMNS = 6, 2048, 1024  # Linear(1024, 2048): 8 MiB each, rows that split evenly over 4 ranks
MARGIN = 3 * 2**20  # the process's own allocations during a load or save (measured: about 1 MiB)


def run(world: int, folder: Path, out: Path) -> list[dict[str, int]]:
    results = []
    for done in run_ranks(WORKER, world, folder, out, timeout=300):
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return sorted(results, key=lambda r: r["rank"])


@pytest.fixture(scope="module")
def peaks(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, int]]]:
    work = tmp_path_factory.mktemp("memory")
    line = f'{{ type = "Linear", in_features = {COLUMNS}, out_features = {ROWS}, bias = false }}'
    registry = work / "stack.toml"
    registry.write_text(f"[stack]\nlayers = [{', '.join([line] * LAYERS)}]\n")
    zoo.save(zoo.build("stack", registry=registry), work / "saved")
    return {world: run(world, work / "saved", work / f"saved-on-{world}") for world in (1, 2, 4)}


MODEL = LAYERS * ROWS * COLUMNS * torch.float32.itemsize
LARGEST = ROWS * COLUMNS * torch.float32.itemsize


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_rank_of_a_sharded_load_holds_its_share_and_nothing_else(
    peaks: dict[int, list[dict[str, int]]], world: int
) -> None:
    for result in peaks[world]:
        assert result["share"] == MODEL // world
        assert result["load"] <= MODEL / world + MARGIN, (world, result)  # no mapped file pages, no copy


@pytest.mark.slow
def test_load_memory_per_rank_falls_as_one_over_the_ranks(peaks: dict[int, list[dict[str, int]]]) -> None:
    peak = {world: max(r["load"] for r in results) for world, results in peaks.items()}
    assert peak[2] <= 0.6 * MODEL  # the bar for 2 ranks
    assert peak[4] < peak[2] < peak[1]
    assert peak[2] / peak[1] <= 0.6 and peak[4] / peak[1] <= 0.35


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2, 4])
def test_a_sharded_save_holds_a_share_plus_one_ranks_rows_of_one_tensor(
    peaks: dict[int, list[dict[str, int]]], world: int
) -> None:
    for result in peaks[world]:  # every rank writes what it owns; the others' rows arrive one rank at a time
        in_flight = LARGEST // world if world > 1 else 0
        assert result["save"] <= in_flight + MARGIN, (world, result)
