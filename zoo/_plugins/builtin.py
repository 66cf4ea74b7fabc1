"""zoo's default plugin: torch.nn's layers, the seed's blocks, registry.toml, architectures/ and init functions.

It goes through the same hooks as any third-party plugin. Its hooks import torch and the
blocks when they run (discovery, on the first name zoo needs), not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo._plugins.hookspecs import hookimpl

REGISTRY_TOML = Path(__file__).parent.parent / "registry.toml"  # the repository's, shipped in the wheel
ARCHITECTURES = (
    Path(__file__).parent.parent / "architectures"
)  # one file per family: hf_llama.toml, tv_vit_b_16.toml, …

# torch.nn.init's in-place initialisers, by the name used in `init` rules.
_TORCH_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@hookimpl
def zoo_blocks(register: Callable[[str, Callable[..., Any]], None]) -> None:
    from torch import nn

    from zoo._plugins import blocks

    for name in sorted(dir(nn)):
        obj = getattr(nn, name)
        if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module:
            register(name, obj)
    for block in (*blocks.SEED_BLOCKS, *blocks.ZOO_BLOCKS):
        register(block.__name__, block)


@hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(REGISTRY_TOML)
    for path in sorted(ARCHITECTURES.glob("*.toml")):
        register(path)


@hookimpl
def zoo_initializers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    from torch.nn import init

    from zoo._plugins import blocks

    for name in _TORCH_INITS:
        register(name.rstrip("_"), getattr(init, name))
    register("my_init", blocks.my_init)


@hookimpl
def zoo_ops(register: Callable[[str, Callable[..., Any]], None]) -> None:
    from zoo._plugins import ops

    for name, fn in ops.BUILTIN_OPS.items():
        register(name, fn)
