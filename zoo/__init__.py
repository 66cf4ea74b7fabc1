"""zoo: a declarative model-zoo plugin registry for PyTorch.

    import zoo
    model = zoo.build("chimera")          # a ready nn.Module, from names declared in TOML
    print(zoo.summary(model, input_shape=(2, 20)))
"""

from zoo.api import build, names, register, spec
from zoo.errors import (
    AmbiguousNameError,
    ArgumentError,
    BuildError,
    CycleError,
    DeviceError,
    DuplicateNameError,
    HubError,
    NotMaterializedError,
    RegistryFileError,
    SpecError,
    UnknownNameError,
    WeightsError,
    ZooError,
)
from zoo.hookspecs import hookimpl
from zoo.lazy import materialize
from zoo.plugins import isolated as isolated_registry
from zoo.summary import summary

__version__ = "0.1.0"

__all__ = [
    "AmbiguousNameError",
    "ArgumentError",
    "BuildError",
    "CycleError",
    "DeviceError",
    "DuplicateNameError",
    "HubError",
    "NotMaterializedError",
    "RegistryFileError",
    "SpecError",
    "UnknownNameError",
    "WeightsError",
    "ZooError",
    "__version__",
    "build",
    "hookimpl",
    "isolated_registry",
    "materialize",
    "names",
    "register",
    "spec",
    "summary",
]
