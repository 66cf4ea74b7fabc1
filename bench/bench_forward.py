"""Forward speed: zoo-built models against hand-written twins with the same weights (goal ≤ 1.02×).

Run alone: .venv/bin/python bench/bench_forward.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from bench.common import arguments, interleaved, report  # noqa: E402
from tests import seed_twins  # noqa: E402


def _resnet18_twin() -> nn.Module | None:
    """d2l's ResNet-18, hand-written (the twin zoo-convnets' own tests hold), when the plugin is installed."""
    if "resnet18" not in zoo.names():
        return None
    import importlib.util

    path = ROOT / "plugins" / "zoo-convnets" / "tests" / "test_zoo_convnets.py"
    spec = importlib.util.spec_from_file_location("zoo_convnets_twins", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    twin: nn.Module = module.d2l_resnet18()
    return twin


def main() -> None:
    args = arguments(__doc__ or "")
    torch.manual_seed(0)
    # mlp at two batches: at 64 rows the forward is ~40 µs of Python dispatch, where zoo's extra
    # ReLU module call (the seed calls F.relu) shows; at 4096 rows the arithmetic dominates.
    cases = [
        ("mlp", seed_twins.MLP(), (64, 20)),
        ("mlp", seed_twins.MLP(), (4096, 20)),
        ("chimera", seed_twins.chimera(), (64, 20)),
    ]
    twin = _resnet18_twin()
    if twin is not None:
        cases.append(("resnet18", twin, (8, 1, 96, 96)))
    rows = []
    for name, twin, shape in cases:
        X = torch.rand(shape)
        model = zoo.build(name, input_shape=shape)
        state = dict(twin.state_dict())
        if name == "chimera":
            state["2.rand_weight"] = twin[2].rand_weight
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in twin.parameters()):
            with torch.no_grad():
                twin(X)
            state = dict(twin.state_dict())
        model.load_state_dict(state)
        model.eval()
        twin.eval()
        with torch.no_grad():
            assert torch.equal(model(X), twin(X)), f"{name}: outputs differ"
            repeats, inner = (5, 5) if args.quick else (21, 20 if name != "resnet18" else 3)

            def run_zoo(m: nn.Module = model, x: torch.Tensor = X) -> object:
                return m(x)

            def run_twin(m: nn.Module = twin, x: torch.Tensor = X) -> object:
                return m(x)

            t = interleaved({"zoo": run_zoo, "hand-written": run_twin}, repeats=repeats, inner=inner)
        rows.append(
            {
                "model": name,
                "input": "x".join(map(str, shape)),
                "zoo_ms": t["zoo"] * 1e3,
                "hand_ms": t["hand-written"] * 1e3,
                "ratio": t["zoo"] / t["hand-written"],
            }
        )
    report("forward: zoo-built vs hand-written, same weights (goal ratio <= 1.02)", rows, args.json)


if __name__ == "__main__":
    main()
