"""Build cost: zoo.build(name) against the hand-written constructor, in one warm process.

The cold-start side (a fresh `import zoo; zoo.build("chimera")` with 0 and 20 plugins) is
bench_startup.py. Run alone: .venv/bin/python bench/bench_build.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from bench.common import arguments, interleaved, report  # noqa: E402
from tests import seed_twins  # noqa: E402


def main() -> None:
    args = arguments(__doc__ or "")
    torch.manual_seed(0)
    zoo.build("mlp")  # plugin discovery happens once per process; keep it out of the per-build figure
    rows = []
    for name in ("mlp", "chimera", "tied_mlp"):
        twin = seed_twins.TWINS[name]
        t = interleaved(
            {"zoo": lambda n=name: zoo.build(n), "hand-written": twin},
            repeats=5 if args.quick else 21,
            inner=3 if args.quick else 10,
        )
        rows.append(
            {
                "model": name,
                "zoo_ms": t["zoo"] * 1e3,
                "hand_ms": t["hand-written"] * 1e3,
                "ratio": t["zoo"] / t["hand-written"],
                "zoo_overhead_ms": (t["zoo"] - t["hand-written"]) * 1e3,
            }
        )
    report(
        "build: zoo.build(name) vs hand-written constructor (tied_mlp: zoo materialises, the twin stays lazy)",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
