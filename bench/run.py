"""make bench: run every benchmark script, print one report, write BENCHMARKS.md and the load plot.

Each bench_*.py is a plain script a reader can run alone; here each runs in its own process
(so one's memory does not colour the next) with --json, and the results are gathered.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, table  # noqa: E402

# In reading order; a script missing from the tree is skipped with a note.
SCRIPTS = [
    ("forward", "bench_forward.py"),
    ("build", "bench_build.py"),
    ("references", "bench_references.py"),
    ("startup", "bench_startup.py"),
    ("load", "bench_load.py"),
    ("materialise", "bench_materialize.py"),
    ("hub", "bench_hub.py"),
    ("gpu", "bench_gpu.py"),
    ("distributed", "bench_distributed.py"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke run)")
    parser.add_argument("--only", nargs="*", help="section names to run")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    notes: dict[str, str] = {}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for section, script in SCRIPTS:
            if args.only and section not in args.only:
                continue
            path = ROOT / "bench" / script
            if not path.exists():
                notes[section] = f"{script} not present"
                continue
            out = Path(tmp) / f"{section}.json"
            command = [sys.executable, str(path), "--json", str(out)] + (["--quick"] if args.quick else [])
            print(f"== {section}: {' '.join(command[1:2])}", flush=True)
            t0, load_before = time.time(), os.getloadavg()[0]
            done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
            print(done.stdout, end="")
            print(f"== {section}: {time.time() - t0:.0f} s (load average {load_before:.1f} before, "
                  f"{os.getloadavg()[0]:.1f} after)", flush=True)  # fmt: skip
            if done.returncode != 0:
                notes[section] = f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
                print(done.stderr, file=sys.stderr)
                continue
            if out.exists():
                results[section] = json.loads(out.read_text())
                results[section]["seconds"] = round(time.time() - t0, 1)
                results[section]["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            else:
                notes[section] = (done.stdout.strip().splitlines() or ["no output"])[-1]
    total = time.time() - started
    print("\nsummary")
    print(table(summary(results)))
    print(f"\ntime per section ({total / 60:.1f} min in all; the 1-minute load average shows a shared machine)")
    print(table(_timings(results, notes)))
    args.out.write_text(_markdown(results, notes, total, quick=args.quick))
    plot = _plot(results.get("load"), args.out.with_name("bench_load.png"))
    print(f"\nwrote {args.out}" + (f" and {plot}" if plot else ""))
    return 1 if any(n.startswith("failed") for n in notes.values()) else 0


def _timings(results: dict[str, dict], notes: dict[str, str]) -> list[dict[str, Any]]:
    """Seconds per section, in running order, with the load average before and after (a failed one says so)."""
    return [
        {
            "section": section,
            "seconds": ran.get("seconds", "-"),
            "load average": " → ".join(map(str, ran.get("load_average", []))),
            "note": notes.get(section, ""),
        }
        for section, _ in SCRIPTS
        for ran in [results.get(section, {})]
        if section in results or section in notes
    ]


def summary(results: dict[str, dict]) -> list[dict[str, Any]]:
    """The goals of the suite, each against its measured ratio: one table for the whole run."""
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, goal: str, met: bool | None) -> None:
        if value is not None:
            rows.append(
                {"measure": what, "ratio": value, "goal": goal, "met": {True: "yes", False: "NO"}.get(met, "-")}
            )

    for row in results.get("forward", {}).get("rows", []):
        add(f"forward {row['model']} {row['input']}: zoo / hand-written", row["ratio"], "<= 1.02", row["ratio"] <= 1.02)
    for row in results.get("build", {}).get("rows", []):
        add(f"build {row['model']}: zoo / hand-written", row["ratio"], "", None)
    for row in results.get("references", {}).get("rows", []):
        goal = float(row["goal"].removeprefix("<= "))
        add(f"{row['measure']} {row['model']}: zoo / reference", row["ratio"], row["goal"], row["ratio"] <= goal)
    startup = results.get("startup", {})
    for row in startup.get("rows", []):
        if row["goal"]:
            goal = float(row["goal"].removeprefix("<= "))
            add(
                f"startup: {row['command']} / import torch",
                row["vs_import_torch"],
                row["goal"],
                row["vs_import_torch"] <= goal,
            )
    for rows_ in startup.get("tables", {}).values():
        for row in rows_:
            if row["case"] == "zoo, 20 plugins":
                add("cold start, 20 plugins / none", row["wall_vs_no_plugins"], "", None)
                add("cold start, 20 plugins / torch + hand-written", row["wall_vs_hand"], "", None)
    load = results.get("load", {}).get("rows", [])
    for row in load:
        if row["method"] == "zoo.load+touch":  # every byte read: the fair comparison with a copy
            size = row["size_gb"]
            add(f"load {size} GB: zoo.load (all read) / copy floor", row["vs_floor"], "<= 1.5", row["vs_floor"] <= 1.5)
            add(
                f"load {size} GB: eager / zoo.load (all read)",
                row["eager_over_this"],
                ">= 5",
                row["eager_over_this"] >= 5,
            )
    for row in load:  # against what an expert writes instead: meta twin + load_file + load_state_dict(assign)
        if row["method"] in ("zoo.load", "zoo.load+touch"):
            read = "all read" if row["method"].endswith("+touch") else "untouched"
            ok = row["vs_expert"] <= 1.05
            add(f"load {row['size_gb']} GB: zoo.load / expert ({read})", row["vs_expert"], "<= 1.05", ok)
        if row["method"] == "hub: zoo.load_weights":
            add(
                f"load {row['size_gb']} GB from a Hub: zoo.load_weights / snapshot_download + expert",
                row["vs_expert"],
                "",
                None,
            )
    for row in results.get("materialise", {}).get("rows", []):
        if row["case"].startswith("zoo meta pass @ batch 2,000,000"):
            add("materialise: batch 2,000,000 / batch 2", row["time / zoo@2"], "about 1", row["time / zoo@2"] < 1.2)
    for row in results.get("hub", {}).get("rows", []):
        if row["case"] in ("zoo.pull, empty cache", "zoo.pull, cached (online)"):
            add(f"hub: {row['case']} / snapshot_download + zoo.load", row["vs snapshot_download + zoo.load"], "", None)
    ratios = results.get("distributed", {}).get("ratios", {})
    if ratios:
        for n, goal in ((1, 1.1), (2, 0.6), (4, 0.35)):
            rss = ratios[f"load_peak_{n}"]
            add(f"sharded load, {n} rank(s): peak memory per rank / model bytes", rss, f"<= {goal}", rss <= goal)
        for n in (2, 4):
            bound = ratios[f"save_bound_{n}"]
            what = f"sharded save, {n} ranks: rank 0's peak / (share + one shard in flight)"
            add(what, bound, "<= 1.1", bound <= 1.1)
        add("sharded load: time, 2 ranks / 1", ratios["load_2_vs_1"], "", None)
        add("sharded save: time, 2 ranks / 1", ratios["save_2_vs_1"], "", None)
        add("sharded load, 2 ranks / unsharded zoo.load (all read)", ratios["load_2_vs_unsharded"], "", None)
        add("save, 2 ranks / unsharded", ratios["save_2_vs_unsharded"], "", None)
    return rows


def _markdown(results: dict[str, dict], notes: dict[str, str], seconds: float, quick: bool) -> str:
    info = machine()
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.date.today().isoformat()} by `make bench`{' (--quick)' if quick else ''} "
        f"in {seconds / 60:.1f} min on: {info['cores']} cores ({info['cpu']}), torch {info['torch']} "
        f"({info['threads']} threads), Python {info['python']}, no GPU unless the gpu section says so.",
        "Every figure is the median of several interleaved repeats in one run; ratios compare cases of the same run.",
        "",
        "Time per section, with the machine's 1-minute load average before and after it (the machine is shared):",
        "",
        table(_timings(results, notes)),
        "",
        "## Summary",
        "",
        table(summary(results)),
        "",
    ]
    for section, _ in SCRIPTS:
        if section in results:
            data = results[section]
            lines += [f"## {section}", "", data["title"], "", table(data["rows"]) if data["rows"] else "(no rows)", ""]
            for title, rows in data.get("tables", {}).items():
                lines += [title, "", table(rows), ""]
            for note in data.get("notes", []):
                lines.append(f"- {note}")
            lines.append("")
        elif section in notes:
            lines += [f"## {section}", "", f"- {notes[section]}", ""]
    if (Path(__file__).parent.parent / "bench_load.png").exists() or "load" in results:
        lines += ["![load time against model size](bench_load.png)", ""]
    return "\n".join(lines)


def _plot(load: dict | None, path: Path) -> Path | None:
    """Load time against model size, one line per method (needs bench_load's rows)."""
    if not load:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install '.[bench]')")
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    for row in load["rows"]:
        size, method, seconds = row.get("size_gb"), row.get("method"), row.get("seconds")
        if isinstance(size, (int, float)) and isinstance(seconds, (int, float)) and method:
            series.setdefault(str(method), []).append((float(size), float(seconds)))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel("model size (GB)")
    ax.set_ylabel("seconds (median, log scale)")
    ax.set_yscale("log")  # zoo.load is two orders of magnitude below the eager path
    ax.set_title("Load time against model size")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    sys.exit(main())
