"""TOML-declared architectures against their references: torchvision's resnet18, transformers' GPT-2, Llama and BERT.

Forward with the same weights (goal ≤ 1.02×) and build time against the reference constructor
(goal ≤ 1.5×), both with random initialisation, measured side by side in one run. The references
come from tests/references.py (torchvision's model files from the wheel `make setup` downloads;
transformers from the test extra). Llama is measured at GPT-2 small's size (LlamaConfig's defaults
are Llama 2 7B's, 27 GB), with grouped-query attention; BERT at BertConfig's defaults (BERT-base), its
last_hidden_state compared.

Run alone: .venv/bin/python bench/bench_references.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from bench.common import arguments, interleaved, report  # noqa: E402
from tests import references  # noqa: E402


def _logits(output: Any) -> torch.Tensor:
    """The tensor to compare: transformers' .logits or .last_hidden_state, zoo's first output of a tuple."""
    for name in ("logits", "last_hidden_state"):
        if hasattr(output, name):
            return getattr(output, name)  # type: ignore[no-any-return]
    return output[0] if isinstance(output, tuple) else output


# Llama at GPT-2 small's size: 12 layers of width 768, 12 query heads sharing 4 key/value heads.
LLAMA = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
}


def main() -> None:
    args = arguments(__doc__ or "")
    torch.manual_seed(0)
    zoo.build("mlp")  # plugin discovery happens once per process; keep it out of the per-build figure
    # (name, reference constructor, zoo overrides, forward input, build repeats: GPT-2 small takes ~3 s a
    # build on 2 cores, resnet18 ~0.2 s, whose median of 5 moved from 0.9x to 1.55x between runs here)
    cases: list[tuple[str, Callable[[], nn.Module], dict[str, int], torch.Tensor, int]] = [
        ("tv_resnet18", references.tv_resnet18, {}, torch.randn(8, 3, 112, 112), 21),
        ("hf_gpt2", references.hf_gpt2, {}, torch.randint(0, 50257, (2, 32)), 5),
        ("hf_llama", lambda: references.hf_llama(**LLAMA), LLAMA, torch.randint(0, 32000, (2, 32)), 5),
        ("hf_bert", references.hf_bert, {}, torch.randint(0, 30522, (2, 32)), 5),
    ]
    rows = []
    for name, make_reference, overrides, X, build_repeats in cases:
        reference = make_reference().eval()
        model = zoo.build(name, **overrides)
        model.load_state_dict(reference.state_dict(), strict=True)
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(_logits(model(X)), _logits(reference(X)), atol=1e-4, rtol=1e-4)

            def run_zoo(m: nn.Module = model, x: torch.Tensor = X) -> object:
                return m(x)

            def run_reference(m: nn.Module = reference, x: torch.Tensor = X) -> object:
                return m(x)

            forward = interleaved(  # 25 rounds: single forwards of BERT-base here move by 10% between rounds
                {"zoo": run_zoo, "reference": run_reference},
                repeats=3 if args.quick else 25,
                inner=1 if args.quick else 3,
            )
        del model, reference
        build = interleaved(
            {"zoo": lambda n=name, o=overrides: zoo.build(n, **o), "reference": make_reference},
            repeats=2 if args.quick else build_repeats,
        )
        shape = "x".join(map(str, X.shape))
        for what, t, goal in (("forward " + shape, forward, 1.02), ("build", build, 1.5)):
            rows.append(
                {
                    "model": name,
                    "measure": what,
                    "zoo_ms": t["zoo"] * 1e3,
                    "reference_ms": t["reference"] * 1e3,
                    "ratio": t["zoo"] / t["reference"],
                    "goal": f"<= {goal}",
                }
            )
    report(
        "references: TOML-declared models vs torchvision's resnet18 and transformers' GPT2LMHeadModel and "
        "LlamaForCausalLM and BertModel "
        "(forward with the same weights; build with random initialisation)",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
