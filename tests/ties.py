"""The registry entries with a tie, found by looking, so that an entry added later is tested too.

An entry has a tie when its declaration says `tie` anywhere (a conditional one too) or when the
model built from it holds one tensor at two places (a `shared` block used twice). Each is built
with SMALL's overrides where the tests need real memory (a mesh, a save): a tie that depends on
an argument (hf_llama's tie_word_embeddings) is switched on there, and big defaults are shrunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any

import torch
from torch import nn

import zoo
from zoo._build import builder, ties
from zoo._language.declarations import Node

# Sizes for tests that allocate, and the arguments that switch a conditional tie on.
SMALL: Mapping[str, Mapping[str, Any]] = {
    "hf_gpt2": {"vocab_size": 96, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4},
    "hf_llama": {
        "vocab_size": 96,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32,
        "tie_word_embeddings": True,
    },
    "hf_bert": {
        "vocab_size": 96,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
    },
}
MAX_BYTES_WITHOUT_SMALL = 8 * 2**20  # an entry this small at its defaults needs no SMALL line


def _declares_tie(value: Any) -> bool:
    """Whether a parsed declaration says `tie` anywhere below it."""
    if isinstance(value, Node):
        if value.tie:
            return True
        return any(_declares_tie(getattr(value, f.name)) for f in fields(value) if f.name != "tie")
    if isinstance(value, Mapping):
        return any(_declares_tie(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return any(_declares_tie(v) for v in value)
    return is_dataclass(value) and not isinstance(value, type) and _declares_tie(vars(value))


@cache
def tied_entries() -> tuple[str, ...]:
    """Every entry (not an internal template) whose model has a tie, with SMALL's overrides."""
    found = []
    for name in zoo.names():
        entry = builder.entry_of(name)
        if entry is None or entry.internal:
            continue
        if _declares_tie(entry.node) or ties.keys(zoo.build(name, device="meta", **SMALL.get(name, {}))):
            found.append(name)
    return tuple(found)


def small(name: str) -> dict[str, Any]:
    """The overrides to build `name` with in tests that allocate."""
    return dict(SMALL.get(name, {}))


def forward_backward(model: nn.Module) -> dict[str, torch.Tensor]:
    """The output and every gradient (full tensors) of one eval-mode forward and backward on the entry's input.

    The same on a sharded model (gathering its gradients is a collective: every rank calls it).
    """
    info = builder.build_info(model)
    assert info is not None and info.input_shape is not None
    x = builder.example_input(info, info.input_shape, seed=0)
    model.eval()  # no dropout: sharded and unsharded runs draw nothing
    model.zero_grad(set_to_none=True)
    output = model(x)
    weights = torch.rand(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype)
    (output * weights).sum().backward()
    result = {"output": _full(output).detach().clone()}
    for key, param in model.named_parameters():  # a tied parameter once, under its first key
        assert param.grad is not None, key
        result[f"grad.{key}"] = _full(param.grad).detach().clone()
    return result


def _full(tensor: torch.Tensor) -> torch.Tensor:
    full_tensor = getattr(tensor, "full_tensor", None)  # a DTensor: all ranks' rows
    return full_tensor() if full_tensor is not None else tensor
