"""Load speed and memory: zoo.load beside the eager path and the memory-copy floor, ~0.13, 0.5 and 2 GB models.

Cases, each in a fresh process (so one's memory and caches do not colour the next), median of 3
(up to 9 for the cases the 1.05x goal compares, while the runs leave it open), interleaved:
- floor: memory-map model.safetensors and copy its bytes into a fresh buffer (one memory copy);
- zoo.load: build on the meta device and take the memory-mapped tensors (no copy until written);
- zoo.load+touch: the same, then read every parameter once, so all the bytes are paged in;
- eager: build normally (random init) + torch.load(weights_only=True) of a .pt + load_state_dict;
- safetensors: build normally + safetensors.torch.load_file + load_state_dict;
- expert (and +touch): what an expert writes instead of zoo.load: the model class built on the
  meta device + safetensors.torch.load_file + load_state_dict(assign=True) (no init, no copy);
- zoo.load_weights: the same meta twin, given the weights by zoo.load_weights (assigned, no copy);
- hf load_torch_model: huggingface_hub's loader into the model built normally (it copies);
- accelerate: init_empty_weights + load_checkpoint_and_dispatch(device_map={"": "cpu"}).
The model is a stack of Linear(4096, 4096) declared in a registry TOML (64 MiB each); the
twin is the same stack written in plain torch.

Then, from a Hub server on 127.0.0.1 (tests/hubserver.py, its own process) holding the weights
alone (no config.json), into an empty cache each time: zoo.load_weights("hf://...") into the
meta twin, against snapshot_download + the expert's load.
Times cover the load only (not the interpreter start); peak RSS is the child's ru_maxrss,
and "added" subtracts the RSS the child had before loading (Python + torch).

By default the page cache is warm (both files are read once before timing): the floor is then
a memory copy. --cold drops the page cache before every run (needs root; said when refused).

Run alone: .venv/bin/python bench/bench_load.py [--quick] [--cold] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYER_BYTES = 4096 * 4096 * 4 + 4096 * 4
CASES = [
    "floor",
    "zoo.load",
    "zoo.load+touch",
    "expert",
    "expert+touch",
    "zoo.load_weights",
    "hf load_torch_model",
    "accelerate",
    "eager",
    "safetensors",
]
HUB_CASES = ["hub: zoo.load_weights", "hub: snapshot_download + expert"]
HUB_REPO = "bench/weights-only"
REPEATS = 3
# The pairs the 1.05x goal compares take milliseconds to a few hundred: a shared, noisy machine
# moves single runs by 30%, so a pair gets more runs (up to CLOSE_RUNS, interleaved) for as long
# as its runs leave the goal open: until even the quartiles' worst ratio meets it, or their best misses it.
CLOSE_PAIRS = {"zoo.load": "expert", "zoo.load+touch": "expert+touch"}
CLOSE_GOAL = 1.05
CLOSE_RUNS = 9


def _open(zoo: list[float], expert: list[float], goal: float = CLOSE_GOAL) -> bool:
    """Whether runs of a pair leave `zoo / expert <= goal` undecided: the goal lies between the quartiles' ratios."""
    zq1, _, zq3 = statistics.quantiles(zoo, n=4, method="inclusive")
    eq1, _, eq3 = statistics.quantiles(expert, n=4, method="inclusive")
    return zq1 / eq3 <= goal < zq3 / eq1


# --- the child: one case, one measurement ---------------------------------------------------------


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _twin(layers: int) -> Any:
    """The model written by hand in plain torch, as an expert would (same keys as bench_big)."""
    from torch import nn

    return nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(layers)])


def _touch(model: Any) -> None:
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def child(case: str, folder: Path, registry: Path, endpoint: str | None = None) -> dict[str, Any]:
    import torch

    import zoo

    torch.set_num_threads(os.cpu_count() or 1)
    zoo.names()  # plugin discovery is start-up cost, not load cost
    layers = int(folder.name.rsplit("_", 1)[1])
    if case.startswith("hub:"):  # import the Hub client before timing, as the local cases import theirs
        import huggingface_hub  # noqa: F401

        from zoo._hub import client  # noqa: F401
    if case == "accelerate":
        import accelerate  # noqa: F401
    before = _rss_now()
    start = time.perf_counter()
    if case == "floor":
        with open(folder / "model.safetensors", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            buffer = torch.empty(len(mapped), dtype=torch.uint8)
            buffer.copy_(torch.frombuffer(mapped, dtype=torch.uint8))
            del mapped
    elif case.startswith("zoo.load"):
        model = zoo.load(folder)
        if case.endswith("+touch"):
            with torch.no_grad():
                for p in model.parameters():
                    p.sum()
    elif case == "eager":
        model = zoo.build("bench_big", registry=registry)
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))  # the comparison baseline
    elif case == "safetensors":
        from safetensors.torch import load_file

        model = zoo.build("bench_big", registry=registry)
        model.load_state_dict(load_file(folder / "model.safetensors"))
    elif case.startswith("expert"):
        from safetensors.torch import load_file

        with torch.device("meta"):
            model = _twin(layers)
        model.load_state_dict(load_file(folder / "model.safetensors"), assign=True)
        if case.endswith("+touch"):
            _touch(model)
    elif case == "zoo.load_weights":
        with torch.device("meta"):
            model = _twin(layers)
        zoo.load_weights(model, folder)
    elif case == "hf load_torch_model":
        from huggingface_hub import load_torch_model

        model = _twin(layers)
        load_torch_model(model, folder)
    elif case == "accelerate":
        from accelerate import init_empty_weights, load_checkpoint_and_dispatch

        with init_empty_weights():
            model = _twin(layers)
        model = load_checkpoint_and_dispatch(model, str(folder), device_map={"": "cpu"})
    elif case == "hub: zoo.load_weights":
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=folder.parent))
        with torch.device("meta"):
            model = _twin(layers)
        zoo.load_weights(model, f"hf://{HUB_REPO}", endpoint=endpoint, cache_dir=cache)
    elif case == "hub: snapshot_download + expert":
        from huggingface_hub import snapshot_download
        from safetensors.torch import load_file

        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=folder.parent))
        local = Path(snapshot_download(HUB_REPO, cache_dir=cache, endpoint=endpoint, allow_patterns=["*.safetensors"]))
        with torch.device("meta"):
            model = _twin(layers)
        model.load_state_dict(load_file(local / "model.safetensors"), assign=True)
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": seconds, "peak_rss": peak, "base_rss": before}


# --- the parent -----------------------------------------------------------------------------------


def _seconds(results: dict[str, list[dict[str, Any]]], *cases: str) -> list[list[float]]:
    return [[r["seconds"] for r in results[case]] for case in cases]


def _rows(results: dict[str, list[dict[str, Any]]], size_gb: float, hub: bool = False) -> list[dict[str, Any]]:
    def median(case: str) -> float:
        return statistics.median(r["seconds"] for r in results[case]) if case in results else math.nan

    floor, eager = median("floor"), median("eager")
    rows = []
    for case, runs in results.items():
        seconds = median(case)
        expert = median("hub: snapshot_download + expert" if hub else "expert+touch" if "touch" in case else "expert")
        rows.append(
            {
                "size_gb": round(size_gb, 2),
                "method": case,
                "runs": len(runs),
                "seconds": seconds,
                "vs_expert": seconds / expert,
                "vs_floor": seconds / floor,
                "eager_over_this": eager / seconds,
                "peak_rss_gb": max(r["peak_rss"] for r in runs) / 1e9,
                "added_rss_gb": statistics.median(r["peak_rss"] - r["base_rss"] for r in runs) / 1e9,
            }
        )
    return rows


def _hub_results(work: Path, folder: Path, registry: Path, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """The Hub cases: a server in its own process, holding the weights alone (no config.json)."""
    from huggingface_hub import HfApi

    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hubserver.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        api = HfApi(endpoint=url, token="bench")
        api.create_repo(HUB_REPO, exist_ok=True)
        weights = folder / "model.safetensors"
        api.upload_file(path_or_fileobj=weights, path_in_repo=weights.name, repo_id=HUB_REPO)
        results: dict[str, list[dict[str, Any]]] = {case: [] for case in HUB_CASES}
        for repeat in range(repeats):
            for case in HUB_CASES[repeat % 2 :] + HUB_CASES[: repeat % 2]:
                results[case].append(_run(case, folder, registry, False, url))
                for cache in work.glob("cache-*"):
                    shutil.rmtree(cache)
        return results
    finally:
        server.terminate()
        server.wait()


def _registry(path: Path, layers: int) -> Path:
    body = ", ".join(['{ type = "Linear", in_features = 4096, out_features = 4096 }'] * layers)
    path.write_text(f'[bench_big]\ndoc = "{layers} x Linear(4096, 4096), for bench_load"\nlayers = [{body}]\n')
    return path


def _prepare(work: Path, layers: int) -> tuple[Path, Path]:
    import torch

    import zoo

    registry = _registry(work / "bench.toml", layers)
    folder = work / f"model_{layers}"
    torch.manual_seed(0)
    model = zoo.build("bench_big", registry=registry)
    zoo.save(model, folder)
    torch.save(model.state_dict(), folder / "model.pt")
    return folder, registry


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def _warm(folder: Path) -> None:
    for name in ("model.safetensors", "model.pt"):
        with open(folder / name, "rb") as f:
            while f.read(64 << 20):
                pass


def _run(case: str, folder: Path, registry: Path, cold: bool, endpoint: str | None = None) -> dict[str, Any]:
    if cold:
        _drop_caches()
    command = [sys.executable, __file__, "--child", case, "--dir", str(folder), "--registry", str(registry)]
    command += ["--endpoint", endpoint] if endpoint else []
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="small models (~64 and ~256 MB), one repeat: a smoke run")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every run (root only)")
    parser.add_argument("--cases", help="comma-separated cases to run (default all, the Hub ones too)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--registry", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.registry, args.endpoint)))
        return

    from bench.common import report

    # layers of 64 MiB: ~0.13, 0.5 and 2.1 GB, four times apart, for the plot (1.1 GB, between, told nothing more)
    sizes = [1, 4] if args.quick else [2, 8, 32]
    cases = args.cases.split(",") if args.cases else CASES
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; the cases are {CASES}")
    # The Hub cases at one size (the transfer through a pure-Python server dominates), and not with --cases.
    hub_layers = None if args.cases else sizes[1]
    repeats = 1 if args.quick else REPEATS
    cold = args.cold and _drop_caches()
    notes = [
        "page cache: "
        + (
            "dropped before every run (cold)"
            if cold
            else "warm (both files read once before timing)" + (" — --cold was refused: not root?" if args.cold else "")
        ),
        f"median of {repeats} runs per case, each in a fresh process, cases interleaved; the pairs the 1.05x goal "
        f"compares ({', '.join(f'{a} / {b}' for a, b in CLOSE_PAIRS.items())}) ran again, side by side, until their "
        f"quartiles' ratios were both below or both above 1.05, or {CLOSE_RUNS} runs (the runs column says how many)",
        "goal: zoo.load within 1.5x the floor and at least 5x faster than eager; "
        "zoo.load (and +touch) within 1.05x the expert's (and +touch)",
        "vs_expert: this case's time over the expert baseline's (meta twin + load_file + assign); the +touch rows "
        "over expert+touch; the hub rows over snapshot_download + expert",
    ]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_load_", dir=os.environ.get("BENCH_TMP")))
    try:
        for layers in sizes:
            folder, registry = _prepare(work, layers)
            size_gb = (folder / "model.safetensors").stat().st_size / 1e9
            if not cold:
                _warm(folder)  # 23 GB of RAM or so keeps both files cached from here on
            results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
            for repeat in range(repeats):
                for case in cases[repeat % len(cases) :] + cases[: repeat % len(cases)]:
                    results[case].append(_run(case, folder, registry, cold))
            for repeat in range(repeats, CLOSE_RUNS if not args.quick else repeats):
                pending = [p for p in CLOSE_PAIRS.items() if set(p) <= set(cases) and _open(*_seconds(results, *p))]
                for pair in pending:
                    for case in pair if repeat % 2 else pair[::-1]:
                        results[case].append(_run(case, folder, registry, cold))
            rows += _rows(results, size_gb)
            if layers == hub_layers:
                rows += _rows(_hub_results(work, folder, registry, repeats), size_gb, hub=True)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(
        "load: zoo.load vs eager (build + torch.load + load_state_dict) vs the memory-copy floor",
        rows,
        args.json,
        notes=notes,
    )
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
