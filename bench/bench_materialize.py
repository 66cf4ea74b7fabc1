"""Materialising a lazy model of ~100 M parameters: zoo's meta pass against torch's own dry run.

Cases, each in a fresh process so that its peak RSS (ru_maxrss) is its own:
  construct       build the lazy model only (the baseline every other case includes)
  zoo@2           zoo.materialize(model, input_shape=(2, F)): shapes from a pass on meta
  zoo@2000000     the same with a batch of 2,000,000: should cost what batch 2 costs
  torch@2         torch's dry run: model(torch.zeros(2, F)) under no_grad
  torch@BIG       torch's dry run on a bigger batch (default 2,000; a real forward of the whole
                  batch through every layer)
torch@2000000 is not run: its activations alone would need far more memory than the machine
has; the table prints how much, from zoo's shape pass.

Time is the median of --repeats materialisations of freshly built models (construction not
timed), after one on a tiny model that pays the process's one-time costs ("first-use s").
Run alone: .venv/bin/python bench/bench_materialize.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from bench.common import machine, report  # noqa: E402
from zoo._build.shape_pass import trace_shapes

HUGE_BATCH = 2_000_000


def lazy_model(width: int, depth: int) -> nn.Module:
    """LazyLinear(width) x depth with ReLUs, then LazyLinear(10): every input size inferred."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.LazyLinear(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.LazyLinear(10))


def materialise(case: str, model: nn.Module, batch: int, features: int) -> None:
    if case == "zoo":
        zoo.materialize(model, input_shape=(batch, features))
    elif case == "torch":
        with torch.no_grad():
            model(torch.zeros(batch, features))


def run_case(case: str, batch: int, features: int, width: int, depth: int, repeats: int) -> dict[str, Any]:
    """Time one case in this process; return seconds (median), peak RSS and the parameter count.

    A first call on a tiny model pays the process's one-time costs (for meta tensors, torch
    imports its meta kernels and torch._dynamo: about 1.5 s); it is timed apart.
    """
    start = time.perf_counter()
    materialise(case, lazy_model(8, 1), 2, features)
    first_use = time.perf_counter() - start
    times = []
    params = 0
    for _ in range(repeats):
        torch.manual_seed(0)
        model = lazy_model(width, depth)
        start = time.perf_counter()
        materialise(case, model, batch, features)
        times.append(time.perf_counter() - start)
        if case != "construct":
            params = sum(p.numel() for p in model.parameters())
        del model
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "seconds": statistics.median(times),
        "first_use": first_use,
        "peak_rss_mb": peak_kib / 1024,
        "params": params,
    }


def in_fresh_process(case: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--case", case, "--batch", str(batch), "--features", str(args.features),
        "--width", str(args.width), "--depth", str(args.depth), "--repeats", str(args.repeats),
    ]  # fmt: skip
    done = subprocess.run(command, text=True, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {case}@{batch} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dry_run_activation_bytes(args: argparse.Namespace, batch: int) -> int:
    """Bytes torch's dry run needs at its peak under no_grad: the largest input + output of one layer.

    From zoo's shape pass, so it costs nothing to compute for any batch.
    """
    model = lazy_model(args.width, args.depth)
    shapes = trace_shapes(model, (batch, args.features))
    sizes = [batch * args.features] + [
        int(torch.Size(shapes[str(i)]).numel()) for i in range(len(model)) if isinstance(model[i], nn.Linear)
    ]
    return 4 * max(a + b for a, b in zip(sizes, sizes[1:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="a small model and one repeat, for a smoke run")
    parser.add_argument("--features", type=int, default=256, help="input features")
    parser.add_argument("--width", type=int, default=4096, help="hidden width")
    parser.add_argument("--depth", type=int, default=7, help="hidden LazyLinear layers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-batch", type=int, default=2_000, help="batch of torch's bigger dry run")
    parser.add_argument("--case", choices=("construct", "zoo", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: one case, one JSON line
        result = run_case(args.case, args.batch, args.features, args.width, args.depth, args.repeats)
        print(json.dumps(result))
        return
    if args.quick:
        args.width, args.depth, args.repeats, args.big_batch = 512, 3, 1, 500

    cases = [
        ("construct", 0),
        ("zoo", 2),
        ("zoo", HUGE_BATCH),
        ("torch", 2),
        ("torch", args.big_batch),
    ]
    results = {(case, batch): in_fresh_process(case, batch, args) for case, batch in cases}
    base = results[("construct", 0)]["peak_rss_mb"]
    zoo_small = results[("zoo", 2)]["seconds"]
    rows = []
    for (case, batch), r in results.items():
        if case == "construct":
            continue
        rows.append(
            {
                "case": f"{'zoo meta pass' if case == 'zoo' else 'torch dry run'} @ batch {batch:,}",
                "seconds": r["seconds"],
                "time / zoo@2": r["seconds"] / zoo_small,
                "first-use s": r["first_use"],
                "peak RSS MB": r["peak_rss_mb"],
                "RSS over construct MB": r["peak_rss_mb"] - base,
                "params": f"{r['params']:,}",
            }
        )
    need = dry_run_activation_bytes(args, HUGE_BATCH)
    total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rows.append(
        {
            "case": f"torch dry run @ batch {HUGE_BATCH:,}",
            "seconds": None,
            "time / zoo@2": None,
            "first-use s": None,
            "peak RSS MB": None,
            "RSS over construct MB": f"not run: needs >= {need / 2**30:.1f} GiB of activations, "
            f"the machine has {total_ram / 2**30:.1f} GiB",
            "params": "",
        }
    )
    zoo_huge = results[("zoo", HUGE_BATCH)]
    report(
        f"Materialise a lazy {args.depth}x{args.width} MLP (construct-only peak RSS {base:.0f} MB); "
        f"zoo@{HUGE_BATCH:,} / zoo@2 time: {zoo_huge['seconds'] / zoo_small:.2f}x",
        rows,
        args.json,
        config={k: v for k, v in vars(args).items() if k not in ("json", "case", "batch")},
        machine=machine(),
    )


if __name__ == "__main__":
    main()
