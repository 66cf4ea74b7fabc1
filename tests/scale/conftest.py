"""Fixtures of the sharding tests: a free port, worker scripts run as ranks, and a process group of one rank here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(
    worker: Path, world: int, *args: object, timeout: float, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """`python worker RANK WORLD PORT *args` for every rank at once, each finished (stdout, stderr apart).

    A rank still running after `timeout` seconds (all ranks together) is killed, and the test fails
    with subprocess.TimeoutExpired instead of stalling the suite.
    """
    port = free_port()
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, str(worker)]
    ranks = [
        subprocess.Popen(
            [*command, str(r), str(world), str(port), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            text=True,
        )
        for r in range(world)
    ]
    finished = []
    try:
        for process in ranks:
            stdout, stderr = process.communicate(timeout=timeout)
            finished.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    return finished


@pytest.fixture
def mesh() -> Iterator[object]:
    """A gloo process group of one rank in this process, and its mesh; torn down afterwards."""
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()
