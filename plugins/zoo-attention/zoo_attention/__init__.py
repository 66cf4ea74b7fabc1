"""zoo-attention: d2l's attention blocks and small transformers, as a zoo plugin.

Its declarations cross plugin boundaries: `hybrid_vit_tiny` uses zoo-convnets' Residual block
and zoo's built-in layers beside this plugin's own blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import zoo
from zoo_attention.blocks import (
    BLOCKS,
    AddNorm,
    ClassHead,
    ClassToken,
    LazyLearnedPositions,
    LearnedPositions,
    MultiHeadAttention,
    PositionWiseFFN,
    TransformerEncoderBlock,
    ViTBlock,
    ViTMLP,
)

__version__ = "0.1.0"
__all__ = [
    "AddNorm",
    "ClassHead",
    "ClassToken",
    "LazyLearnedPositions",
    "LearnedPositions",
    "MultiHeadAttention",
    "PositionWiseFFN",
    "TransformerEncoderBlock",
    "ViTBlock",
    "ViTMLP",
    "zoo_blocks",
    "zoo_registries",
]


@zoo.hookimpl
def zoo_blocks(register: Callable[[str, Callable[..., Any]], None]) -> None:
    for block in BLOCKS:
        register(block.__name__, block)


@zoo.hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(Path(__file__).with_name("registry.toml"))
