"""zoo: a declarative model-zoo plugin registry for PyTorch.

import zoo
model = zoo.build("chimera")          # a ready nn.Module, from names declared in TOML
print(zoo.summary(model, input_shape=(2, 20)))
"""

from typing import TYPE_CHECKING, Any

from zoo import checkpoint, distributed
from zoo.api import build, names, register, spec
from zoo.devices import try_all_gpus, try_gpu
from zoo.errors import (
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
from zoo.folder import save
from zoo.hookspecs import hookimpl
from zoo.lazy import MetaFallbackWarning, materialize
from zoo.metrics import Accumulator
from zoo.picture import draw
from zoo.placement import Plan, dispatch, plan
from zoo.plugins import ZooPluginWarning
from zoo.plugins import isolated as isolated_registry
from zoo.sources import load, load_weights
from zoo.summary import summary
from zoo.weights import load_tensors, save_tensors

if TYPE_CHECKING:
    from zoo.hub import pull, push

__version__ = "0.1.0"

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
    "save",
    "save_tensors",
    "spec",
    "summary",
    "try_all_gpus",
    "try_gpu",
]


def __getattr__(name: str) -> Any:
    # push and pull live in zoo.hub, which imports huggingface_hub (~0.4 s): paid on first use, not at `import zoo`
    if name in ("pull", "push"):
        from zoo import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'zoo' has no attribute '{name}'")
