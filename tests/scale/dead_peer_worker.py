"""One rank of three in tests/scale/test_dead_peer.py: the last rank's process ends in the middle of a sharded load.

Usage: python dead_peer_worker.py RANK WORLD PORT WORK. Each rank left writes what zoo.load raised to
WORK/rankN.txt. The process group's timeout is far above the test's: a survivor that waited for it fails the test.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import zoo
from zoo._scale import fsdp


def main(rank: int, world: int, port: int, work: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=600)
    )
    mesh = init_device_mesh("cpu", (world,))
    if rank == world - 1:

        def die(*_args: object, **_kwargs: object) -> None:
            os._exit(3)  # killed while reading its rows: no error, no goodbye to the others

        fsdp._read_rows = die  # type: ignore[assignment]
    try:
        zoo.load(work / "saved", mesh=mesh)
        outcome = "returned"
    except zoo.ZooError as err:
        outcome = f"{type(err).__name__}: {err}"
    (work / f"rank{rank}.txt").write_text(outcome)
    time.sleep(1)  # as a failing script takes a moment to end: rank 0 hosts the store the others read
    os._exit(0)  # a rank is gone: tearing the process group down would wait for it


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
