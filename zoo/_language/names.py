"""Declared names against Python's and nn.Module's own: the one place that knows which clash.

A declaration's names are state-dict keys, and state-dict keys are the declaration's whatever
attributes they shadow: BERT's `attention.self.query`, a child called `forward`, `training`
or `type`, a block input called `class`. torch keeps a module's children, parameters and
buffers in dicts (`_modules`, `_parameters`, `_buffers`), and state_dict, load_state_dict,
named_modules and parameters() read only those, so any key works there. What can clash:

- attribute access: `module.forward` is the method, not a child named `forward`, and torch's
  own `self.training = mode` would land on a child named `training`. zoo's dataflow modules and
  Sequential chains are `DeclaredParts`: parts in the dicts alone, attributes where they were,
  and zoo finds parts through the dicts (`submodule`, `parameter`), never through getattr;
- code: torch.fx writes `self.<target>(...)` and `def forward(self, <inputs>)`, so a target
  or input that is a keyword, `self`, or an attribute of the module is given another name in
  the generated code only (`code_name`);
- a Python block that registers children as attributes itself (ModuleDict, MySequential, a
  plugin's container) cannot take a name it has as an attribute: that is refused at file:line
  (`refusal`), as is a keyword argument named `class` or `self`, which no call can pass.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

ZOO_ATTRIBUTE_PREFIX = "zoo_"  # zoo keeps its facts on a module as zoo_info, zoo_where, zoo_source, …


def is_argument_name(name: str) -> bool:
    """Whether Python code can call with `name=` or take `name` as a parameter: not a keyword, not `self`."""
    return name.isidentifier() and not keyword.iskeyword(name) and name != "self"


@functools.cache
def _instance_attributes() -> frozenset[str]:
    """What every module holds in its own __dict__ from the start (`training`, `_parameters`, …)."""
    graph = torch.fx.Graph()
    graph.output(graph.placeholder("x"))
    return frozenset(vars(nn.Module())) | frozenset(vars(torch.fx.GraphModule(nn.Module(), graph)))


def shadows(name: str, owner: type) -> bool:
    """Whether an instance of `owner` already has an attribute `name` (a method, a property, a flag)."""
    return hasattr(owner, name) or name in _instance_attributes() or name.startswith(ZOO_ATTRIBUTE_PREFIX)


def code_name(name: str, owner: type, taken: Iterable[str]) -> str:
    """`name` as generated code can write it on an `owner` (`self.<name>`, or a parameter): itself when it
    clashes with nothing, else `_name` (with more `_` before it until it is free of `taken` too). The
    leading `_` also turns `0` into an identifier and `class` or `zoo_info` into a name that clashes less."""
    if is_argument_name(name) and not shadows(name, owner):
        return name
    used = set(taken)
    alias = f"_{name}"
    while not is_argument_name(alias) or shadows(alias, owner) or alias in used:
        alias = f"_{alias}"
    return alias


def refusal(name: str, owner: type, what: str) -> str | None:
    """Why `name` cannot name a child of the Python block `owner` (which registers children as
    attributes), or None when it can. `what` names the block for the message."""
    if not (isinstance(owner, type) and issubclass(owner, nn.Module)) or not shadows(name, owner):
        return None
    kind = "a method" if callable(getattr(owner, name, None)) else "an attribute"
    return (
        f"'{name}' cannot name a child of {what}: {what} registers its children as attributes, and '{name}' is "
        f"{kind} of every {what}. Rename the child, or declare the block as a Sequential or a dataflow block "
        "(children with `in`), where any name works."
    )


def submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at the dotted state-dict `path` under `root`, found through `_modules`, so a child named
    like an attribute (`forward`, `type`) is found (`nn.Module.get_submodule` would return the method).

    Raises:
        AttributeError: as get_submodule does, naming the part that is missing.
    """
    module = root
    for part in path.split(".") if path else ():
        child = module._modules.get(part)
        if child is None:
            raise AttributeError(f"{type(module).__name__} has no child `{part}`")
        module = child
    return module


def parameter(root: nn.Module, path: str) -> nn.Parameter:
    """The parameter at the dotted state-dict `path` under `root`, through the dicts (see `submodule`).

    Raises:
        AttributeError: the owner or the parameter is missing, or `path` names a buffer or a child.
    """
    owner_path, _, name = path.rpartition(".")
    owner = submodule(root, owner_path)
    param = owner._parameters.get(name)
    if param is None:
        if name in owner._buffers:
            raise AttributeError(f"`{path}` is a buffer, not a parameter")
        if name in owner._modules:
            raise AttributeError(f"`{path}` is a block, not a parameter")
        raise AttributeError(f"{type(owner).__name__} has no parameter `{name}`")
    return param


class DeclaredParts(nn.Module):
    """A module whose children and parameters may be named like its own attributes (`training`, `forward`).

    The parts live in the dicts as usual, so state dicts and named_modules give the declared keys;
    an attribute the module sets for itself (`self.training = False` in eval()) stays an attribute
    instead of hitting the part of that name; get_submodule and get_parameter find the parts.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        parts = (self.__dict__.get(d, {}) for d in ("_parameters", "_buffers", "_modules"))
        if isinstance(value, (nn.Module, torch.Tensor)) or not any(name in p for p in parts):
            super().__setattr__(name, value)
        else:  # the module's own attribute, not the part its name shadows
            object.__setattr__(self, name, value)

    def get_submodule(self, target: str) -> nn.Module:
        """The child at the dotted state-dict path `target`, whatever attribute its name shadows."""
        return submodule(self, target)

    def get_parameter(self, target: str) -> nn.Parameter:
        """The parameter at the dotted state-dict path `target`, whatever attribute its name shadows."""
        return parameter(self, target)


class DeclaredSequential(DeclaredParts, nn.Sequential):
    """nn.Sequential with declared child names that shadow its attributes; zoo fills it (no add_module)."""

    def __init__(self, children: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self._modules.update(children)

    def _get_name(self) -> str:
        return "Sequential"  # what was declared, in print(model)
