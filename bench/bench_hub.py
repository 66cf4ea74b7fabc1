"""Pulling from a Hub: zoo.pull against huggingface_hub's snapshot_download of the same files.

A Hub-compatible server (tests/hubserver.py) runs in its own process on 127.0.0.1 and holds
a ~128 MiB model pushed with zoo.push in 32 MiB shards. Each case is the median of a few
repeats, interleaved:

- zoo.pull into an empty cache (listing, config, index, shards in parallel, rebuild, load);
- snapshot_download of the same files into an empty cache, then zoo.load of that snapshot
  (what a user would write by hand), and snapshot_download alone (the transfer floor);
- zoo.pull again with the cache warm (online: it checks the revision), and offline;
- zoo.load of a local folder (the load floor), and the server's listing alone (its own cost).

Run alone: .venv/bin/python bench/bench_hub.py [--quick] [--json out.json]
"""

from __future__ import annotations

import os

# huggingface_hub reads its settings at import: no telemetry call, no progress bars in timings.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from huggingface_hub import HfApi, snapshot_download  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from bench.common import arguments, interleaved, report  # noqa: E402

REPO = "bench/wide-mlp"
WIDTH = 2048  # each Linear(2048, 2048) is 16 MiB in float32


def registry_text(layers: int) -> str:
    linear = f'{{ type = "Linear", in_features = {WIDTH}, out_features = {WIDTH} }}'
    body = ", ".join([linear, '"ReLU"'] * layers)
    doc = "A stack of wide Linear layers, for timing transfers"
    return f'[wide_mlp]\ndoc = "{doc}"\ninput = [2, {WIDTH}]\nlayers = [{body}]\n'


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "hubserver.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def main() -> None:
    args = arguments(__doc__ or "")
    layers, repeats = (2, 1) if args.quick else (8, 5)
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-hub-"))
    server, url = start_server()
    try:
        registry = work / "bench.toml"
        registry.write_text(registry_text(layers))
        torch.manual_seed(0)
        model = zoo.build("wide_mlp", registry=registry)
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        zoo.push(model, REPO, endpoint=url, token="bench", max_shard_size="32MB")
        local = work / "local"
        zoo.save(model, local, max_shard_size="32MB")
        files = sorted(p.name for p in local.iterdir() if p.name != "README.md")
        shards = [f for f in files if f.endswith(".safetensors")]
        counter = iter(range(10**6))
        warm = work / "warm-cache"

        def fresh_cache() -> Path:
            return work / f"cache-{next(counter)}"

        def zoo_pull() -> None:
            cache = fresh_cache()
            zoo.pull(REPO, endpoint=url, cache_dir=cache)
            shutil.rmtree(cache)

        def snapshot_then_load() -> None:
            cache = fresh_cache()
            folder = snapshot_download(REPO, cache_dir=cache, endpoint=url, allow_patterns=files)
            zoo.load(folder)
            shutil.rmtree(cache)

        def snapshot_only() -> None:
            cache = fresh_cache()
            snapshot_download(REPO, cache_dir=cache, endpoint=url, allow_patterns=files)
            shutil.rmtree(cache)

        zoo.pull(REPO, endpoint=url, cache_dir=warm)
        t = interleaved(
            {
                "zoo.pull, empty cache": zoo_pull,
                "snapshot_download + zoo.load": snapshot_then_load,
                "snapshot_download only": snapshot_only,
                "zoo.pull, cached (online)": lambda: zoo.pull(REPO, endpoint=url, cache_dir=warm),
                "zoo.pull, cached (offline)": lambda: zoo.pull(REPO, cache_dir=warm, local_files_only=True),
                "zoo.load, local folder": lambda: zoo.load(local),
                "the server's listing alone": lambda: HfApi(endpoint=url).model_info(REPO, files_metadata=True),
            },
            repeats=repeats,
        )
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    baseline = t["snapshot_download + zoo.load"]
    rows = [
        {
            "case": case,
            "seconds": seconds,
            "MiB/s": size_mb / seconds if "listing" not in case else None,
            "vs snapshot_download + zoo.load": seconds / baseline,
        }
        for case, seconds in t.items()
    ]
    report(
        f"hub: pull a {size_mb:.0f} MiB model ({len(shards)} shards) from a local Hub server, median of {repeats}",
        rows,
        args.json,
        notes=[
            "The server is tests/hubserver.py in its own process on 127.0.0.1, in pure Python: the figures are "
            "client-side costs plus that server's, not a network's.",
            "zoo.pull lists the repo (1 request), fetches config.json and the index (or the single file) side by side, "
            "then the shards in parallel; snapshot_download asks for the revision and the tree, then every file.",
            "Cached and online, zoo.pull sends two requests: the listing and config.json's HEAD (to follow the "
            "branch); most of that time is this server hashing every file to answer the listing (the last row). "
            "Offline it sends none.",
            "zoo.load memory-maps the weights: the load rows do not read the bytes, the first forward does.",
        ],
    )


if __name__ == "__main__":
    main()
