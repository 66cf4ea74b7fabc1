"""Build cost: zoo.build(name) against the hand-written constructor, in one warm process.

The cold-start side (a fresh `import zoo; zoo.build("chimera")` with 0 and 20 plugins) is
bench_startup.py. Run alone: .venv/bin/python bench/bench_build.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from bench.common import arguments, interleaved, report  # noqa: E402
from tests import seed_twins  # noqa: E402


def _ready(make: Callable[[], nn.Module], lazy: bool) -> Callable[[], nn.Module]:
    """The hand-written way to a usable model: construct, and for a lazy one torch's own dry run."""
    if not lazy:
        return make

    def construct_and_dry_run() -> nn.Module:
        model = make()
        with torch.no_grad():
            model(torch.rand(2, 20))
        return model

    return construct_and_dry_run


def main() -> None:
    args = arguments(__doc__ or "")
    torch.manual_seed(0)
    zoo.build("mlp")  # plugin discovery happens once per process; keep it out of the per-build figure
    rows = []
    for name in ("mlp", "chimera", "tied_mlp"):
        twin = _ready(seed_twins.TWINS[name], lazy=name == "tied_mlp")
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
        "build: zoo.build(name) vs hand-written constructor (tied_mlp: zoo's meta pass vs torch's dry run)",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
