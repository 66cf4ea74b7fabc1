"""Loading weights onto a GPU: straight to cuda vs to the CPU then .to(), against the copy floor.

Run alone:  python bench/bench_gpu.py [--size-mib 1024] [--repeats 5]

Measured in one run, median of `--repeats`, with the file warm in the page cache (what a
second load of the same checkpoint sees):

- floor (pinned):  one pinned host buffer of the same bytes copied to the GPU: the bus limit.
- floor (pageable): the same from ordinary memory, which the driver stages through a pinned buffer.
- safetensors → cuda: `safetensors.torch.load_file(path, device="cuda:0")`.
- safetensors → cpu → .to(): load on the CPU, then move every tensor.
- zoo.load(device=…): zoo's own loader, straight to cuda and via the CPU, when this zoo has one.

Then the seed's warning about syncing every batch: a loop that calls `.item()` on each step's
loss against zoo.Accumulator syncing once per 100 steps.

Prints "skipped: no CUDA device" and exits 0 where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEVICE = "cuda:0"


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `fn` after one warm-up call, the GPU drained before each clock read."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del result
    return statistics.median(times)


def make_model(size_mib: int, folder: Path) -> nn.Module:
    """A stack of Linear(2048, 2048) of about `size_mib`, built by zoo so that zoo.load can rebuild it."""
    import zoo

    layer_bytes = (2048 * 2048 + 2048) * 4
    n = max(1, size_mib * 2**20 // layer_bytes)
    toml = folder / "bench.toml"
    layer = '{ type = "Linear", in_features = 2048, out_features = 2048 }'
    toml.write_text(f"[bench_stack]\nlayers = [{', '.join([layer] * n)}]\n", encoding="utf-8")
    return zoo.build("bench_stack", registry=toml)


def zoo_loaders(model: nn.Module, folder: Path) -> dict[str, Callable[[], Any]]:
    """zoo.save / zoo.load, if this zoo has them and they take these arguments."""
    import zoo

    save, load = getattr(zoo, "save", None), getattr(zoo, "load", None)
    if save is None or load is None:
        print("note: this zoo has no zoo.save / zoo.load yet; their rows are left out")
        return {}
    target = folder / "zoo-model"
    try:
        save(model, target)
        load(target, device=DEVICE)
    except Exception as err:  # a bench should report, not crash, when another engineer's API differs
        print(f"note: zoo.save/zoo.load failed here ({type(err).__name__}: {err}); their rows are left out")
        return {}
    return {
        f"zoo.load(device='{DEVICE}')": lambda: load(target, device=DEVICE),
        "zoo.load(device='cpu') → .to()": lambda: load(target, device="cpu").to(DEVICE),
    }


def bench_loading(size_mib: int, repeats: int) -> list[dict[str, Any]]:
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(size_mib, Path(tmp))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        path = Path(tmp) / "model.safetensors"
        save_file(state, str(path))
        pinned = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
        pageable = torch.empty(nbytes, dtype=torch.uint8)
        cases: dict[str, Callable[[], Any]] = {
            "floor: pinned host → cuda": lambda: pinned.to(DEVICE, non_blocking=True),
            "floor: pageable host → cuda": lambda: pageable.to(DEVICE),
            "safetensors → cuda": lambda: load_file(str(path), device=DEVICE),
            "safetensors → cpu → .to()": lambda: {k: v.to(DEVICE) for k, v in load_file(str(path)).items()},
        }
        cases.update(zoo_loaders(model, Path(tmp)))
        results = {name: median_seconds(fn, repeats) for name, fn in cases.items()}
    floor = results["floor: pinned host → cuda"]
    print(f"\nLoading {nbytes / 2**20:,.0f} MiB onto {torch.cuda.get_device_name(0)} (median of {repeats}, warm cache)")
    print(f"{'method':34} {'seconds':>9} {'GB/s':>8} {'× floor':>8}")
    for name, seconds in results.items():
        print(f"{name:34} {seconds:9.4f} {nbytes / seconds / 1e9:8.2f} {seconds / floor:8.2f}")
    return [
        {"case": name, "mib": round(nbytes / 2**20), "seconds": s, "gb_per_s": nbytes / s / 1e9, "vs_floor": s / floor}
        for name, s in results.items()
    ]


def bench_syncs(steps: int, repeats: int) -> list[dict[str, Any]]:
    import zoo

    x = torch.randn(256, 256, device=DEVICE)
    w = torch.randn(256, 256, device=DEVICE)

    def every_step() -> float:
        total = 0.0
        for _ in range(steps):
            total += (x @ w).relu().mean().item()  # waits for the GPU each step
        return total

    def accumulated() -> dict[str, float]:
        acc = zoo.Accumulator(sync_every=100)
        for _ in range(steps):
            acc.add(loss=(x @ w).relu().mean())
        return acc.mean()

    item_s = median_seconds(every_step, repeats)
    acc_s = median_seconds(accumulated, repeats)
    print(f"\n{steps} steps of a 256×256 matmul (median of {repeats})")
    print(f"{'method':34} {'seconds':>9} {'× accumulator':>14}")
    print(f"{'.item() every step':34} {item_s:9.4f} {item_s / acc_s:14.2f}")
    print(f"{'Accumulator(sync_every=100)':34} {acc_s:9.4f} {1.0:14.2f}")
    return [
        {"case": f".item() every step ({steps} steps)", "seconds": item_s, "vs_floor": item_s / acc_s},
        {"case": f"Accumulator(sync_every=100) ({steps} steps)", "seconds": acc_s, "vs_floor": 1.0},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="checkpoint size (default 1024)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000, help="steps of the sync benchmark")
    parser.add_argument("--json", type=Path, help="write the results here (make bench collects them)")
    parser.add_argument("--quick", action="store_true", help="a 128 MiB checkpoint and 2 repeats")
    args = parser.parse_args(argv)
    title = "GPU: load straight to cuda vs load then .to() vs the host-to-device floor; syncs per step"
    if args.quick:
        args.size_mib, args.repeats, args.steps = 128, 2, 200
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        if args.json:
            args.json.write_text(
                json.dumps({"title": title, "rows": [], "notes": ["skipped: no CUDA device on this machine"]})
            )
        return 0
    rows = bench_loading(args.size_mib, args.repeats) + bench_syncs(args.steps, args.repeats)
    if args.json:
        args.json.write_text(json.dumps({"title": title, "rows": rows, "device": torch.cuda.get_device_name(0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
