"""One rank of the 2-process gloo run that test_distributed.py starts (python tests/scale/distributed_worker.py).

Each step records what a user relies on into OUT/rank<r>.json and, on rank 0, gathered tensors
into OUT/*.safetensors; the test process compares them with unsharded models.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: `tests` from the checkout

import zoo
from tests.ties import forward_backward
from zoo._weights import writer

BATCH = 8


def gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full tensors (a collective), cloned so that they outlive the step that follows."""
    return {
        key: (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()
        for key, value in model.state_dict().items()
    }


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    generator = torch.Generator().manual_seed(100 + step)  # the same batch on every rank and in the test
    x = torch.randn(BATCH, 20, generator=generator)
    y = torch.randint(0, 10, (BATCH,), generator=generator)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def main(rank: int, world: int, port: int, work: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    mesh = init_device_mesh("cpu", (world,))
    out = work / "out"
    record: dict[str, object] = {}

    # 0. A mesh that leaves a rank out is refused on every rank, before anything is built.
    try:
        zoo.build("mlp", mesh=DeviceMesh("cpu", [0]))
        record["partial_mesh"] = "built"
    except zoo.ZooError as err:
        record["partial_mesh"] = f"{type(err).__name__}: {err}"

    # 1. Load a saved folder sharded: each rank holds its rows, the outputs are the unsharded ones.
    model = zoo.load(work / "saved", mesh=mesh)
    record["load"] = {
        key: {"local": list(p.to_local().shape), "offsets": list(p.__create_chunk_list__()[0].offsets)}
        for key, p in model.named_parameters()
    }
    x = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(x)

    # 2. One optimizer step, then a checkpoint that every rank writes its part of.
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, optimizer, 1)
    after_1 = gathered(model)
    zoo.checkpoint.save(work / "run", model=model, optimizer=optimizer, step=1, extra={"rank": rank})
    record["files"] = sorted(p.name for p in (work / "run" / "step-00000001").iterdir())

    # 3. The run goes on; a fresh model resumed from the checkpoint takes the same step to the same weights.
    train_step(model, optimizer, 2)
    after_2 = gathered(model)
    fresh = zoo.build("mlp", hidden=64, mesh=mesh)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state = zoo.checkpoint.resume(work / "run", fresh, fresh_optimizer)
    assert state is not None
    record["resumed_step"] = state.step
    train_step(fresh, fresh_optimizer, 2)
    resumed_2 = gathered(fresh)

    # 4. A checkpoint of a single process (optimizer state by position) resumed on 2 ranks.
    from_single = zoo.build("mlp", hidden=64, mesh=mesh)
    from_single_optimizer = torch.optim.Adam(from_single.parameters(), lr=0.01)
    zoo.checkpoint.resume(work / "single", from_single, from_single_optimizer)
    train_step(from_single, from_single_optimizer, 2)
    from_single_2 = gathered(from_single)

    # 5. Built sharded: each rank allocates only its rows, initialised as an unsharded build would be.
    torch.manual_seed(7)
    big = zoo.build("mlp", hidden=4096, mesh=mesh)
    record["build"] = {
        key: {"local_numel": p.to_local().numel(), "bytes": p.to_local().untyped_storage().nbytes(), "numel": p.numel()}
        for key, p in big.named_parameters()
    }
    big_full = gathered(big)

    # 6. Rows that do not split evenly (7 = 4 + 3) save to the same folder.
    odd = zoo.build("mlp", hidden=7, mesh=mesh)
    zoo.save(odd, work / "odd")
    odd_full = gathered(odd)

    # 7. Every registry entry with a tie (tests/ties.py), loaded sharded: forward and backward on 2 ranks.
    tied = {folder.name: forward_backward(zoo.load(folder, mesh=mesh)) for folder in sorted((work / "tied").iterdir())}
    record["tied"] = sorted(tied)

    # 8. torch.distributed.checkpoint reads a one-process zoo checkpoint onto 2 ranks, through its safetensors reader.
    by_dcp = zoo.build("mlp", hidden=64, mesh=mesh)
    single = zoo.checkpoint.latest(work / "single")
    dcp.load(by_dcp.state_dict(), storage_reader=HuggingFaceStorageReader(str(single)))
    by_dcp_full = gathered(by_dcp)

    # 9. A corrupt copy on one rank (each rank reads its own copy, as on a node's local disk) fails every rank.
    own = work / f"copy-{rank}"
    shutil.copytree(work / "saved", own / "saved")
    shutil.copytree(zoo.checkpoint.latest(work / "single"), own / "single" / "step-00000001")
    if rank == 1:
        for file in (*(own / "saved").glob("*.safetensors"), *(own / "single").glob("*/model*.safetensors")):
            file.write_bytes(b"\xff" * 64 + file.read_bytes()[64:])  # the header's length, then garbage
    try:
        zoo.load(own / "saved", mesh=mesh)
        record["corrupt_load"] = "loaded"
    except zoo.ZooError as err:
        record["corrupt_load"] = f"{type(err).__name__}: {err}"
    resumed = zoo.build("mlp", hidden=64, mesh=mesh)
    before = gathered(resumed)
    try:
        zoo.checkpoint.resume(own / "single", resumed, torch.optim.Adam(resumed.parameters(), lr=0.01))
        record["corrupt_resume"] = "resumed"
    except zoo.ZooError as err:
        record["corrupt_resume"] = f"{type(err).__name__}: {err}"
    record["corrupt_resume_unchanged"] = all(torch.equal(v, before[k]) for k, v in gathered(resumed).items())

    if rank == 0:
        for name, results in tied.items():
            zoo.save_tensors(results, out / f"tied-{name}.safetensors")
        zoo.save_tensors(
            {
                "output": output,
                "after_1": after_1,
                "after_2": after_2,
                "resumed_2": resumed_2,
                "from_single_2": from_single_2,
                "big": big_full,
                "odd": odd_full,
                "by_dcp": by_dcp_full,
            },
            out / "tensors.safetensors",
        )
    (out / f"rank{rank}.json").write_text(json.dumps(record))

    # 10. A rank killed in the middle of a save leaves the previous checkpoint whole.
    if rank == 1:

        def die(*_args: object, **_kwargs: object) -> None:
            os._exit(3)

        writer.write_at = die  # type: ignore[assignment]
    try:
        zoo.checkpoint.save(work / "run", model=model, optimizer=optimizer, step=2)
        outcome = "returned"
    except zoo.ZooError as err:
        outcome = f"{type(err).__name__}: {err}"
    (out / "killed_save.txt").write_text(outcome)
    os._exit(0)  # rank 1 is gone: tearing the process group down would wait for it


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
