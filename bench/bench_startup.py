"""Cold start: a new `python -c "import zoo; zoo.build('chimera')"` with 20 installed plugins vs none.

Plugins are discovered on first use, so their cost lands on the first build, not on `import
zoo`. Twenty dummy plugin packages (two blocks and a registry file of two models each) are
built as real wheels and pip-installed into a scratch environment; a second one holds no
plugin. Every case is a fresh interpreter, the cases interleaved, median of the repeats.
Baseline: `import torch` and the seed's chimera written by hand.

Run alone: .venv/bin/python bench/bench_startup.py [--quick] [--json out.json]  (about a minute)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import arguments, report  # noqa: E402
from tests.fixtures.scratch_env import ScratchEnv, build_wheels  # noqa: E402

N_PLUGINS = 20

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
        cases = {
            "torch + hand-written chimera": (bare, HAND_CHILD),
            "zoo, no plugins": (bare, ZOO_CHILD),
            f"zoo, {N_PLUGINS} plugins": (loaded, ZOO_CHILD),
        }
        samples: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in cases}
        for env, code in cases.values():  # warm-up: the first start pays for the file cache
            run_child(env, code)
        for _ in range(repeats):
            for name, (env, code) in cases.items():
                samples[name].append(run_child(env, code))
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
    report(
        f"startup: fresh `import zoo; zoo.build('chimera')`, {N_PLUGINS} installed plugins vs none "
        f"(median of {repeats}, interleaved; first_build includes plugin discovery)",
        rows,
        args.json,
        repeats=repeats,
        setup_seconds=round(setup_s, 1),
    )
    print(f"set-up: {N_PLUGINS} wheels built and pip-installed, two scratch environments, in {setup_s:.1f} s")


if __name__ == "__main__":
    main()
