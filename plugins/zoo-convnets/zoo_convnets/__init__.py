"""zoo-convnets: d2l's convolutional blocks and the classic models built from them, as a zoo plugin.

Installed, it needs no import: `zoo.build("resnet18")` finds it through the `zoo` entry point.
Everything but `vgg_block` is declared in registry.toml (the residual block and the ResNet stage
as dataflow and repetition); `zoo.build("Residual", num_channels=64)` builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import zoo
from zoo_convnets.blocks import BLOCKS, vgg_block

__version__ = "0.1.0"
__all__ = ["vgg_block", "zoo_blocks", "zoo_registries"]


@zoo.hookimpl
def zoo_blocks(register: Callable[[str, Callable[..., Any]], None]) -> None:
    for block in BLOCKS:
        register(block.__name__, block)


@zoo.hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(Path(__file__).with_name("registry.toml"))
