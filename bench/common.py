"""Timing helpers shared by the benchmark scripts: interleaved repeats, medians, JSON output.

These machines are noisy, so every figure is a ratio of cases measured side by side in one
run, each the median of several repeats, with the cases interleaved so drift hits them all.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, inner: int = 1) -> dict[str, float]:
    """Median seconds per call of each case, running the cases round-robin `repeats` times."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up: first calls pay for allocation and dispatch caches
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    return parser.parse_args()


def machine() -> dict[str, Any]:
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def report(
    title: str,
    rows: list[dict[str, Any]],
    out: Path | None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    **extra: Any,
) -> None:
    """Print `rows` (and more `tables`, by title) and write {title, rows, tables, machine, ...} as JSON when asked."""
    print(f"\n{title}")
    print(table(rows))
    for name, more in (tables or {}).items():
        print(f"\n{name}")
        print(table(more))
    if out is not None:
        data = {"title": title, "rows": rows, "tables": tables or {}, "machine": machine(), **extra}
        out.write_text(json.dumps(data, indent=2))


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    headers = list(rows[0])
    cells = [[_fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) + " |" for cell in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)
