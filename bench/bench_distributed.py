"""Sharded loads and saves (zoo.load(mesh=), zoo.save of the sharded model) on 1, 2 and 4 gloo ranks, on the CPU.

The model is transformers' GPT-2 with 3 layers, hf_gpt2 (231 MiB in float32, the token embedding
tied to the head; --quick: 1 layer). Cases, each a fresh set of processes, in turn:
- N ranks (1, 2, 4): zoo.load(folder, mesh=) on each rank, then zoo.save of the sharded model
  (each rank writes the tensors it owns; the rows of the others arrive one rank at a time);
- unsharded: zoo.load(folder) with every parameter read once (so its bytes are in memory), then
  zoo.save, in one process without a process group.
Memory is the peak resident size a step adds on a rank: VmHWM after it less VmRSS before it,
the peak reset in between (/proc/self/clear_refs), after start-up (imports, the process group,
FSDP's first call) is paid. Load figures are the largest rank's; save figures rank 0's (it
writes the embedding, the largest tensor). The bound for a save is a rank's share plus one
other rank's rows of the largest tensor. Times are the slower rank's, medians of the repeats.

Run alone: .venv/bin/python bench/bench_distributed.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
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

WORLDS = (1, 2, 4)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    return _status("VmRSS")


def child(rank: int, world: int, port: int, folder: Path, out: Path) -> dict[str, Any]:
    """One rank (world >= 1) or, with world 0, the unsharded case: load, then save."""
    import torch
    import torch.distributed as dist

    import zoo

    zoo.names()  # plugin discovery is start-up cost, not load cost
    mesh = None
    if world:
        from torch.distributed.device_mesh import init_device_mesh

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        mesh = init_device_mesh("cpu", (world,))
        zoo.build("mlp", mesh=mesh)  # FSDP's and DTensor's imports and first-call set-up are start-up too
        dist.barrier()
    before = _reset_peak()
    start = time.perf_counter()
    model = zoo.load(folder, mesh=mesh) if mesh is not None else zoo.load(folder)
    if mesh is None:
        with torch.no_grad():
            for p in model.parameters():
                p.sum()  # page every byte in, as the sharded load reads its rows
    load_s = time.perf_counter() - start
    load_peak = _status("VmHWM") - before
    share = sum((p.to_local() if mesh is not None else p).numel() * p.element_size() for p in model.parameters())
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    if mesh is not None:
        dist.barrier()
    before = _reset_peak()
    start = time.perf_counter()
    zoo.save(model, out)
    save_s = time.perf_counter() - start
    save_peak = _status("VmHWM") - before
    if mesh is not None:
        dist.destroy_process_group()
    return {
        "rank": rank,
        "load_s": load_s,
        "save_s": save_s,
        "load_peak": load_peak,
        "save_peak": save_peak,
        "share": share,
        "largest": largest,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_case(world: int, folder: Path, out: Path) -> list[dict[str, Any]]:
    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(r), str(world), str(port), str(folder), str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(max(world, 1))
    ]
    results = []
    for p in processes:
        stdout, _ = p.communicate(timeout=1200)
        if p.returncode != 0:
            raise RuntimeError(f"a rank failed (exit {p.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return sorted(results, key=lambda r: r["rank"])


def main() -> None:
    args = arguments(__doc__.split("\n")[0])
    layers = 1 if args.quick else 3
    repeats = 1 if args.quick else 2
    cases = {f"{w} rank{'s' if w > 1 else ''}": w for w in WORLDS} | {"unsharded": 0}
    runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-dist-") as tmp:
        work = Path(tmp)
        import torch

        import zoo

        torch.manual_seed(0)
        model = zoo.build("hf_gpt2", n_layer=layers)
        size = sum(p.numel() * p.element_size() for p in model.parameters())  # the tie counted once
        zoo.save(model, work / "saved")
        del model
        for i in range(repeats):
            for name, world in cases.items():  # interleaved, so drift hits every case
                runs[name].append(run_case(world, work / "saved", work / f"saved-{world}-{i}"))
    rows, per_rank = [], {}
    for name, world in cases.items():
        ranks = len(runs[name][0])

        def median(field: str, pick: Any, rs: list[list[dict[str, Any]]] = runs[name]) -> float:
            return statistics.median(pick(r[field] for r in run) for run in rs)

        load_peak = median("load_peak", max)
        save_peak = statistics.median(run[0]["save_peak"] for run in runs[name])
        share = runs[name][0][0]["share"]
        bound = share + (runs[name][0][0]["largest"] // ranks if world > 1 else 0)
        per_rank[name] = [statistics.median(run[r]["load_peak"] for run in runs[name]) for r in range(ranks)]
        rows.append(
            {
                "case": name,
                "load s": median("load_s", max),
                "save s": median("save_s", max),
                "load peak per rank MiB": load_peak / 2**20,
                "load peak / model": load_peak / size,
                "save peak rank 0 MiB": save_peak / 2**20,
                "save peak rank 0 / model": save_peak / size,
                "save peak / bound": (save_peak + share) / bound if world else None,
            }
        )
    by_case = {row["case"]: row for row in rows}
    ratios = {
        "load_peak_1": by_case["1 rank"]["load peak / model"],
        "load_peak_2": by_case["2 ranks"]["load peak / model"],
        "load_peak_4": by_case["4 ranks"]["load peak / model"],
        "save_peak_2": by_case["2 ranks"]["save peak rank 0 / model"],
        "save_bound_2": by_case["2 ranks"]["save peak / bound"],
        "save_bound_4": by_case["4 ranks"]["save peak / bound"],
        "load_2_vs_1": by_case["2 ranks"]["load s"] / by_case["1 rank"]["load s"],
        "save_2_vs_1": by_case["2 ranks"]["save s"] / by_case["1 rank"]["save s"],
        "load_2_vs_unsharded": by_case["2 ranks"]["load s"] / by_case["unsharded"]["load s"],
        "save_2_vs_unsharded": by_case["2 ranks"]["save s"] / by_case["unsharded"]["save s"],
    }
    report(
        f"Sharded load and save of hf_gpt2 with {layers} layer(s), {size / 2**20:.0f} MiB (tied), gloo on CPU",
        rows,
        args.json,
        ratios=ratios,
        model_bytes=size,
        load_peak_per_rank_mib={name: [p / 2**20 for p in peaks] for name, peaks in per_rank.items()},
        goal="load peak per rank <= 0.6x the model on 2 ranks, about 1/N on N; save: share + one shard in flight",
        notes=[
            "load peak per rank, MiB, rank by rank: "
            + "; ".join(f"{name}: {', '.join(f'{p / 2**20:.0f}' for p in peaks)}" for name, peaks in per_rank.items()),
            "save peak / bound: (rank 0's share + what its save added) over (its share + one rank's rows of the "
            "largest tensor); 1 means exactly the bound",
        ],
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rank, world, port = (int(a) for a in sys.argv[2:5])
        print(json.dumps(child(rank, world, port, Path(sys.argv[5]), Path(sys.argv[6]))))
    else:
        main()
