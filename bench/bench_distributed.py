"""Sharded loads and saves (zoo.load(mesh=), zoo.checkpoint.save) on 2 gloo ranks beside 1, on the CPU.

The model is a stack of Linear(8192, 8192) declared in a registry TOML (256 MiB each; 4 of them
by default, 1 GiB; --quick: 2 of 4096). Cases, each a fresh set of processes, in turn:
- 1 rank: zoo.load(folder, mesh=) in a process group of one, then zoo.checkpoint.save;
- 2 ranks: the same on two processes (each rank reads and allocates its half; each writes one shard);
- unsharded: zoo.load(folder) with every parameter read once (so the bytes are in memory), then
  zoo.checkpoint.save, in one process without a process group.
Peak RSS per rank is ru_maxrss after the load, less the RSS before it (Python, torch, the
process group, and a small sharded build that pays FSDP's first-call set-up); for 2 ranks the
larger of the two. File pages a rank reads count in its RSS, as they do for any mapped file.
Times are the slower rank's, median of the repeats.

Run alone: .venv/bin/python bench/bench_distributed.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import arguments, report  # noqa: E402


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(rank: int, world: int, port: int, folder: Path, out: Path) -> dict[str, Any]:
    """One rank (world >= 1) or, with world 0, the unsharded case: load, then save a checkpoint."""
    import torch
    import torch.distributed as dist

    import zoo

    zoo.names()  # plugin discovery is start-up cost, not load cost
    import torch.distributed.checkpoint.state_dict  # noqa: F401  (imports, seconds, are start-up too)
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.tensor  # noqa: F401

    mesh = None
    if world:
        from torch.distributed.device_mesh import init_device_mesh

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        mesh = init_device_mesh("cpu", (world,))
        zoo.build("mlp", mesh=mesh)  # FSDP's and DTensor's first-call set-up (~2 s here) is start-up cost too
        dist.barrier()
    before = _rss_now()
    start = time.perf_counter()
    if mesh is not None:
        model = zoo.load(folder, mesh=mesh)
    else:
        model = zoo.load(folder)
        with torch.no_grad():
            for p in model.parameters():
                p.sum()  # page every byte in, as the sharded load does with its half
    load = time.perf_counter() - start
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    if mesh is not None:
        dist.barrier()
    start = time.perf_counter()
    zoo.checkpoint.save(out, model=model, step=0)
    save = time.perf_counter() - start
    if mesh is not None:
        dist.destroy_process_group()
    return {"load_s": load, "save_s": save, "added_rss": added}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_case(world: int, folder: Path, out: Path) -> dict[str, Any]:
    port = _free_port()
    ranks = max(world, 1)
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(r), str(world), str(port), str(folder), str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(ranks)
    ]
    results = []
    for p in processes:
        stdout, _ = p.communicate(timeout=1200)
        if p.returncode != 0:
            raise RuntimeError(f"a rank failed (exit {p.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return {key: max(r[key] for r in results) for key in results[0]}


def main() -> None:
    args = arguments(__doc__.split("\n")[0])
    width, layers = (4096, 2) if args.quick else (8192, 4)
    repeats = 1 if args.quick else 2
    with tempfile.TemporaryDirectory(prefix="zoo-bench-dist-") as tmp:
        work = Path(tmp)
        registry = work / "wide.toml"
        line = f'{{ type = "Linear", in_features = {width}, out_features = {width} }}'
        registry.write_text(f"[wide]\nlayers = [{', '.join([line] * layers)}]\n")
        import torch

        import zoo

        model = zoo.build("wide", registry=registry)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        zoo.save(model, work / "saved")
        del model
        cases = {"1 rank": 1, "2 ranks": 2, "unsharded": 0}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for i in range(repeats):
            for name, world in cases.items():  # interleaved, so drift hits every case
                runs[name].append(run_case(world, work / "saved", work / f"ckpt-{world}-{i}"))
        torch.set_num_threads(1)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    rows = [
        {
            "case": name,
            "load s": med[name]["load_s"],
            "save s": med[name]["save_s"],
            "peak RSS added per rank MiB": med[name]["added_rss"] / 2**20,
        }
        for name in cases
    ]
    ratios = {
        "rss_2_vs_1": med["2 ranks"]["added_rss"] / med["1 rank"]["added_rss"],
        "load_2_vs_1": med["2 ranks"]["load_s"] / med["1 rank"]["load_s"],
        "save_2_vs_1": med["2 ranks"]["save_s"] / med["1 rank"]["save_s"],
        "load_2_vs_unsharded": med["2 ranks"]["load_s"] / med["unsharded"]["load_s"],
        "save_2_vs_unsharded": med["2 ranks"]["save_s"] / med["unsharded"]["save_s"],
    }
    rows += [{"case": f"ratio {k}", "load s": v} for k, v in ratios.items()]
    report(
        f"Sharded load and save, {size / 2**30:.2f} GiB model ({layers} x Linear({width}, {width})), gloo on CPU",
        rows,
        args.json,
        ratios=ratios,
        model_bytes=size,
        goal="peak RSS per rank on 2 ranks <= 0.6x that on 1",
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rank, world, port = (int(a) for a in sys.argv[2:5])
        print(json.dumps(child(rank, world, port, Path(sys.argv[5]), Path(sys.argv[6]))))
    else:
        main()
