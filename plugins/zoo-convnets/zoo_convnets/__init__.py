"""zoo-convnets: d2l's convolutional blocks and the classic models built from them, as a zoo plugin.

Installed, it needs no import: `zoo.build("resnet18")` finds it through the `zoo` entry point.
Everything but `vgg_block` is declared in registry.toml (the residual block and the ResNet stage
as dataflow and repetition); `zoo.build("Residual", num_channels=64)` builds one.

`vgg_block` is registered by import path, so discovering this plugin (`zoo list`) imports
neither it nor torch; `from zoo_convnets import vgg_block` still works, importing it then.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zoo

if TYPE_CHECKING:
    from zoo_convnets.blocks import vgg_block

__version__ = "0.1.0"
__all__ = ["vgg_block", "zoo_blocks", "zoo_registries"]


@zoo.hookimpl
def zoo_blocks(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    register("vgg_block", "zoo_convnets.blocks:vgg_block")


@zoo.hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(Path(__file__).with_name("registry.toml"))


def __getattr__(name: str) -> Any:
    """vgg_block, imported (with torch) on first access rather than with the plugin."""
    if name != "vgg_block":
        raise AttributeError(f"module 'zoo_convnets' has no attribute '{name}'")
    from zoo_convnets import blocks

    return blocks.vgg_block
