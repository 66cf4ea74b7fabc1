"""zoo-attention: d2l's attention blocks and small transformers, as a zoo plugin.

Its declarations cross plugin boundaries: `hybrid_vit_tiny` uses zoo-convnets' Residual block
and zoo's built-in layers beside this plugin's own blocks.

The blocks are registered by import path, so discovering this plugin (`zoo list`) imports
neither them nor torch; `from zoo_attention import ViTBlock` still works, importing them then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zoo

if TYPE_CHECKING:
    from zoo_attention.blocks import (
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
BLOCKS = (  # the classes of zoo_attention.blocks this plugin registers, by name
    "MultiHeadAttention",
    "PositionWiseFFN",
    "AddNorm",
    "TransformerEncoderBlock",
    "ViTMLP",
    "ViTBlock",
    "ClassToken",
    "LearnedPositions",
    "LazyLearnedPositions",
    "ClassHead",
)
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
def zoo_blocks(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    for name in BLOCKS:
        register(name, f"zoo_attention.blocks:{name}")


@zoo.hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(Path(__file__).with_name("registry.toml"))


def __getattr__(name: str) -> Any:
    """The blocks, imported (with torch) on first access rather than with the plugin."""
    if name not in BLOCKS:
        raise AttributeError(f"module 'zoo_attention' has no attribute '{name}'")
    from zoo_attention import blocks

    return getattr(blocks, name)
