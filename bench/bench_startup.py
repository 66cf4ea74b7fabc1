"""Start-up: the `zoo` command against `import torch`, and a cold `zoo.build('chimera')` with 20 plugins vs none.

The command line (goals of issue 20): `zoo --help`, `zoo --version`, an unknown command and
`zoo list` import no torch (goal <= 0.3x `python -c "import torch"`), and `zoo check` of a
one-entry file takes at most 1.3x it. Run as a user runs them: the installed `zoo` script of
this environment, with the example plugins installed.

Cold start: plugins are discovered on first use, so their cost lands on the first build, not
on `import zoo`. Twenty dummy plugin packages (two blocks and a registry file of two models
each) are built as real wheels and pip-installed into a scratch environment; a second one
holds no plugin. Baseline: `import torch` and the seed's chimera written by hand.

Every case is a fresh interpreter, all cases interleaved, median of the repeats.
Run alone: .venv/bin/python bench/bench_startup.py [--quick] [--json out.json]  (about two minutes)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import arguments, report  # noqa: E402
from tests.fixtures.scratch_env import ScratchEnv, build_wheels  # noqa: E402

N_PLUGINS = 20

# The command-line cases: argv of the installed `zoo` script, its goal over `import torch`, its exit status.
# ONE_ENTRY is the README's first example, the smallest file `zoo check` is run on.
ONE_ENTRY = """[my_mlp]
doc = "The seed's MLP class"
input = [2, 20]
args = { hidden = 256 }
[my_mlp.layers]
hidden = { type = "Linear", in_features = 20, out_features = "${hidden}" }
act = "ReLU"
out = { type = "Linear", in_features = "${hidden}", out_features = 10 }
"""
COMMANDS: dict[str, tuple[list[str], float, int]] = {
    "zoo --help": (["--help"], 0.3, 0),
    "zoo --version": (["--version"], 0.3, 0),
    "zoo frobnicate (unknown command)": (["frobnicate"], 0.3, 2),
    "zoo list": (["list"], 0.3, 0),
    "zoo check one-entry.toml": (["check", "ONE_ENTRY"], 1.3, 0),
}
TORCH_CASE = 'python -c "import torch"'

# A command in a fresh interpreter, telling afterwards (last line of stderr) whether torch was imported.
PROBE = """
import sys
from zoo.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("torch" in sys.modules, file=sys.stderr)
"""

DUMMY_MODULE = '''"""Dummy zoo plugin {n} for bench_startup.py: two blocks and two declared models."""

from torch import nn

import zoo


class Dummy{n}Scale(nn.Module):
    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, X):
        return X * self.factor


class Dummy{n}Shift(nn.Module):
    def forward(self, X):
        return X + 1


@zoo.hookimpl
def zoo_blocks(register):
    register("Dummy{n}Scale", Dummy{n}Scale)
    register("Dummy{n}Shift", Dummy{n}Shift)


@zoo.hookimpl
def zoo_registries(register):
    register("registry.toml")
'''

DUMMY_TOML = """[dummy{n}_mlp]
doc = "Linear, Dummy{n}Scale, Linear"
input = [2, 8]
layers = [
  {{ type = "Linear", in_features = 8, out_features = 16 }},
  "Dummy{n}Scale",
  {{ type = "Linear", in_features = 16, out_features = 2 }},
]

[dummy{n}_shifted]
doc = "dummy{n}_mlp then Dummy{n}Shift"
layers = ["dummy{n}_mlp", "Dummy{n}Shift"]
"""

DUMMY_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-dummy{n}"
version = "0.0.{n}"

[project.entry-points.zoo]
dummy{n} = "zoo_dummy{n}"

[tool.setuptools]
packages = ["zoo_dummy{n}"]

[tool.setuptools.package-data]
zoo_dummy{n} = ["registry.toml"]
"""

# Each child prints its own split: seconds to `import zoo` and to the first build (discovery included).
ZOO_CHILD = """
import time
t0 = time.perf_counter()
import zoo
t1 = time.perf_counter()
zoo.build("chimera")
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, len(zoo.names()))
"""

HAND_CHILD = """
import time
t0 = time.perf_counter()
import torch
from torch import nn
from torch.nn import functional as F
t1 = time.perf_counter()

class NestMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.linear = nn.Linear(32, 16)

    def forward(self, X):
        return self.linear(self.net(X))

class FixedHiddenMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("rand_weight", torch.randn(20, 20))
        self.linear = nn.Linear(20, 20)

    def forward(self, X):
        X = self.linear(X)
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        X = self.linear(X)
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()

chimera = nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, 0)
"""


def write_dummies(root: Path) -> list[Path]:
    projects = []
    for n in range(N_PLUGINS):
        project = root / f"zoo-dummy{n}"
        package = project / f"zoo_dummy{n}"
        package.mkdir(parents=True)
        (project / "pyproject.toml").write_text(DUMMY_PYPROJECT.format(n=n))
        (package / "__init__.py").write_text(DUMMY_MODULE.format(n=n))
        (package / "registry.toml").write_text(DUMMY_TOML.format(n=n))
        projects.append(project)
    return projects


def run_child(env: ScratchEnv, code: str) -> tuple[float, float, float, int]:
    """(wall seconds, import seconds, first-build seconds, names) of one fresh interpreter."""
    start = time.perf_counter()
    done = env.run(code)
    wall = time.perf_counter() - start
    if done.returncode != 0 or done.stderr:
        raise RuntimeError(f"child failed:\n{done.stderr}")
    imported, built, names = done.stdout.split()
    return wall, float(imported), float(built), int(names)


def run_command(command: list[str], status: int = 0) -> float:
    """Wall seconds of one command in a fresh process, which must exit with `status` (2: a usage error)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_environ())
    seconds = time.perf_counter() - start
    if done.returncode != status:
        raise RuntimeError(f"{command} exited {done.returncode}, not {status}:\n{done.stderr}")
    return seconds


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}  # the plugins a user has installed


def imports_torch(argv: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=_environ())
    return done.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    args = arguments(__doc__ or "")
    repeats = 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        wheels = build_wheels(write_dummies(tmp / "src"), tmp / "wheels")
        bare = ScratchEnv.create(tmp / "bare")
        loaded = ScratchEnv.create(tmp / "loaded")
        loaded.install(*wheels.values())
        setup_s = time.perf_counter() - t0
        one_entry = tmp / "one-entry.toml"
        one_entry.write_text(ONE_ENTRY, encoding="utf-8")
        script = str(Path(sys.executable).with_name("zoo"))
        argvs = {
            name: [str(one_entry) if a == "ONE_ENTRY" else a for a in argv] for name, (argv, *_) in COMMANDS.items()
        }
        commands: dict[str, Callable[[], float]] = {
            TORCH_CASE: lambda: run_command([sys.executable, "-c", "import torch"])
        }
        for name, argv in argvs.items():
            commands[name] = lambda a=argv, status=COMMANDS[name][2]: run_command([script, *a], status)
        cases = {
            "torch + hand-written chimera": (bare, HAND_CHILD),
            "zoo, no plugins": (bare, ZOO_CHILD),
            f"zoo, {N_PLUGINS} plugins": (loaded, ZOO_CHILD),
        }
        samples: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in cases}
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for env, code in cases.values():  # warm-up: the first start pays for the file cache
            run_child(env, code)
        torch_imported = {name: imports_torch(argv) for name, argv in argvs.items()}  # also a warm-up
        for _ in range(repeats):  # every case of both tables in one round: drift hits them all
            for name, (env, code) in cases.items():
                samples[name].append(run_child(env, code))
            for name, command in commands.items():
                walls[name].append(command())
    torch_s = statistics.median(walls[TORCH_CASE])
    command_rows = []
    for name, seconds in walls.items():
        wall = statistics.median(seconds)
        goal = COMMANDS[name][1] if name in COMMANDS else None
        command_rows.append(
            {
                "command": name,
                "wall_ms": wall * 1e3,
                "vs_import_torch": wall / torch_s,
                "goal": f"<= {goal}" if goal else "",
                "imports_torch": {True: "yes", False: "no"}.get(torch_imported.get(name, True), ""),
            }
        )
    baseline = statistics.median(s[0] for s in samples["torch + hand-written chimera"])
    none = statistics.median(s[0] for s in samples["zoo, no plugins"])
    none_build = statistics.median(s[2] for s in samples["zoo, no plugins"])
    rows = []
    for name, runs in samples.items():
        wall, imported, built = (statistics.median(r[i] for r in runs) for i in range(3))
        rows.append(
            {
                "case": name,
                "names": runs[0][3] or "-",
                "wall_ms": wall * 1e3,
                "import_ms": imported * 1e3,
                "first_build_ms": built * 1e3,
                "wall_vs_hand": wall / baseline,
                "wall_vs_no_plugins": wall / none,
                "build_vs_no_plugins": built / none_build if name.startswith("zoo") else None,
            }
        )
    title = (
        f'startup: the `zoo` command against `python -c "import torch"` ({torch_s * 1e3:.0f} ms), median of '
        f"{repeats} fresh processes each, interleaved with the cold-start cases below"
    )
    cold = (
        f"cold start: fresh `import zoo; zoo.build('chimera')`, {N_PLUGINS} installed plugins vs none "
        f"(median of {repeats}, interleaved; first_build includes plugin discovery)"
    )
    notes = [
        "commands: this environment's installed `zoo` script, with the example plugins installed; "
        "imports_torch from one more run of each, which also warms the file cache",
    ]
    report(title, command_rows, args.json, tables={cold: rows}, notes=notes, repeats=repeats,
           setup_seconds=round(setup_s, 1))  # fmt: skip
    print(f"set-up: {N_PLUGINS} wheels built and pip-installed, two scratch environments, in {setup_s:.1f} s")


if __name__ == "__main__":
    main()
