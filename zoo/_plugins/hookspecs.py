"""The plugin contract: pluggy project `zoo`, entry-point group `zoo`, four hooks.

A plugin is a module listed under `[project.entry-points.zoo]` whose functions are marked
with `@zoo.hookimpl`. Each hook receives a `register` callback; zoo's own blocks arrive
through the same hooks (zoo._plugins.builtin). Registrations are all or nothing: a plugin that raises
in any hook is skipped whole.

A callable may be registered by its import path instead, `register("Residual",
"zoo_convnets.blocks:Residual")`, as an entry point names its object: zoo imports it where it is
first used, so discovery (and `zoo list`) need not import the plugin's blocks, or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "zoo"
ENTRY_POINT_GROUP = "zoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_blocks(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    """Call `register(name, factory)` for each nn.Module class or factory the plugin provides (or its import path)."""


@hookspec
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    """Call `register(path)` for each TOML file of declarations the plugin ships (relative to the plugin's module)."""


@hookspec
def zoo_initializers(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    """Call `register(name, fn)` for each init function `fn(tensor, **kwargs)` (used by `init` rules)."""


@hookspec
def zoo_ops(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    """Call `register(name, fn)` for each tensor function a dataflow block may use as `op = "name"`.

    `fn`'s positional parameters are the tensors it takes (`in`); its keyword-only parameters are
    the arguments a declaration writes. It must not have parameters of its own.
    """
