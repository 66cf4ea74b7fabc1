"""A rank whose process ends in the middle of a sharded zoo.load: every rank left ends with an error naming it.

gloo tells only the ranks wired to the dead one, and nothing says which rank it was; zoo's pulses
(zoo._scale.fsdp, a peer that is gone) do. Three ranks, so that one survivor hears of it only from the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from tests.scale.conftest import run_ranks

WORKER = Path(__file__).parent / "dead_peer_worker.py"
BOUND = 120  # seconds for all three ranks; the process group's own timeout is 600


@pytest.mark.slow
def test_a_rank_killed_mid_load_is_named_by_every_rank_left(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp", hidden=64), tmp_path / "saved")
    ranks = run_ranks(WORKER, 3, tmp_path, timeout=BOUND, env={"ZOO_PEER_WAIT": "3"})  # no wait for the group's timeout
    assert [r.returncode for r in ranks] == [0, 0, 3], [r.stderr[-3000:] for r in ranks]
    for survivor in (0, 1):
        said = (tmp_path / f"rank{survivor}.txt").read_text()
        load = f"zoo.load('{tmp_path / 'saved'}', mesh=...)"
        assert said.startswith(f"DistributedError: rank {survivor}: {load} failed: "), said
        assert "rank 2 is gone: no pulse for 3 s (the process ended or was killed; see its log)" in said, said
    assert not (tmp_path / "rank2.txt").exists()
