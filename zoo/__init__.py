"""zoo: a declarative model-zoo plugin registry for PyTorch.

import zoo
model = zoo.build("chimera")          # a ready nn.Module, from names declared in TOML
print(zoo.summary(model, input_shape=(2, 20)))

This file is the table of contents: every public name, and the private module that defines it.
Nothing behind a name is imported before the name is first used, so `import zoo` (and with it
`zoo --help`) costs no torch (~1.5 s) and no huggingface_hub (~0.4 s) until something needs them.
"""

import importlib
from typing import TYPE_CHECKING, Any

from zoo._errors import (
    AmbiguousNameError,
    ArgumentError,
    BuildError,
    CycleError,
    DeviceError,
    DistributedError,
    DuplicateNameError,
    HubError,
    MissingDependencyError,
    NotMaterializedError,
    PluginError,
    RegistryFileError,
    ShapeError,
    SpecError,
    UnknownNameError,
    WeightsError,
    ZooError,
)
from zoo._version import __version__

if TYPE_CHECKING:
    from zoo import checkpoint, distributed
    from zoo._api import build, load, load_weights, names, plan, pull, push, register, save, spec
    from zoo._build.devices import try_all_gpus, try_gpu
    from zoo._build.known_shapes import register_input_rule
    from zoo._build.lazy import MetaFallbackWarning
    from zoo._build.materialize import materialize
    from zoo._language.keymap import KeyMap
    from zoo._metrics import Accumulator
    from zoo._plugins.discovery import ZooPluginWarning
    from zoo._plugins.discovery import isolated as isolated_registry
    from zoo._plugins.hookspecs import hookimpl
    from zoo._scale.placement import Plan, dispatch
    from zoo._show.picture import draw
    from zoo._show.summary import summary
    from zoo._weights.nested import load_tensors, save_tensors


# public name -> (module, attribute); attribute None: the name is the module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "Accumulator": ("zoo._metrics", "Accumulator"),
    "KeyMap": ("zoo._language.keymap", "KeyMap"),
    "MetaFallbackWarning": ("zoo._build.lazy", "MetaFallbackWarning"),
    "Plan": ("zoo._scale.placement", "Plan"),
    "ZooPluginWarning": ("zoo._plugins.discovery", "ZooPluginWarning"),
    "build": ("zoo._api", "build"),
    "checkpoint": ("zoo.checkpoint", None),
    "dispatch": ("zoo._scale.placement", "dispatch"),
    "distributed": ("zoo.distributed", None),
    "draw": ("zoo._show.picture", "draw"),
    "hookimpl": ("zoo._plugins.hookspecs", "hookimpl"),
    "isolated_registry": ("zoo._plugins.discovery", "isolated"),
    "load": ("zoo._api", "load"),
    "load_tensors": ("zoo._weights.nested", "load_tensors"),
    "load_weights": ("zoo._api", "load_weights"),
    "materialize": ("zoo._build.materialize", "materialize"),
    "names": ("zoo._api", "names"),
    "plan": ("zoo._api", "plan"),
    "pull": ("zoo._api", "pull"),
    "push": ("zoo._api", "push"),
    "register": ("zoo._api", "register"),
    "register_input_rule": ("zoo._build.known_shapes", "register_input_rule"),
    "save": ("zoo._api", "save"),
    "save_tensors": ("zoo._weights.nested", "save_tensors"),
    "spec": ("zoo._api", "spec"),
    "summary": ("zoo._show.summary", "summary"),
    "try_all_gpus": ("zoo._build.devices", "try_all_gpus"),
    "try_gpu": ("zoo._build.devices", "try_gpu"),
}

__all__ = [
    "Accumulator",
    "AmbiguousNameError",
    "ArgumentError",
    "BuildError",
    "CycleError",
    "DeviceError",
    "DistributedError",
    "DuplicateNameError",
    "HubError",
    "KeyMap",
    "MetaFallbackWarning",
    "MissingDependencyError",
    "NotMaterializedError",
    "Plan",
    "PluginError",
    "RegistryFileError",
    "ShapeError",
    "SpecError",
    "UnknownNameError",
    "WeightsError",
    "ZooError",
    "ZooPluginWarning",
    "__version__",
    "build",
    "checkpoint",
    "dispatch",
    "distributed",
    "draw",
    "hookimpl",
    "isolated_registry",
    "load",
    "load_tensors",
    "load_weights",
    "materialize",
    "names",
    "plan",
    "pull",
    "push",
    "register",
    "register_input_rule",
    "save",
    "save_tensors",
    "spec",
    "summary",
    "try_all_gpus",
    "try_gpu",
]


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'zoo' has no attribute '{name}'")
    module, attribute = where
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return list(__all__)
