"""A resolved dataflow block → a torch.fx GraphModule.

Forward is straight-line code that torch.fx generates from the graph (`print(model.code)`),
so a declared ResNet block runs like a hand-written one and works with torch.compile and
torch.export. Children keep their declared names and order: the state-dict keys are exactly
the declaration's.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from zoo._errors import BuildError
from zoo._language.declarations import Ref
from zoo._language.resolve import Graph, Resolved


class DataflowModule(fx.GraphModule):
    """A GraphModule that keeps its children in declared order and its extra attributes on copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> DataflowModule:
        # fx's own deepcopy rebuilds the module from the graph, which reorders the children and drops
        # attributes such as zoo_info; copying the instance dict keeps both.
        # A subclass of this instance's own class: it inherits the generated forward, and a later
        # recompile of the clone changes the clone alone.
        impl = type(type(self).__name__, (type(self),), {})
        clone: DataflowModule = nn.Module.__new__(impl)
        memo[id(self)] = clone
        clone.__dict__ = copy.deepcopy(self.__dict__, memo)
        return clone


def compile_graph(tree: Graph, build: Callable[[Resolved], nn.Module]) -> nn.Module:
    """The module for `tree`; `build` makes each child module."""
    root = nn.Module()
    for step in tree.steps:
        if step.block is not None:
            root.add_module(step.name, build(step.block))
    for name, shape in tree.params.items():
        root.register_parameter(name, nn.Parameter(torch.zeros(shape)))
    for alias, target in tree.tie.items():
        _tie(root, alias, target, tree.where)

    graph = fx.Graph()
    values: dict[str, fx.Node] = {name: graph.placeholder(name) for name in tree.inputs}
    values.update({name: graph.get_attr(name) for name in tree.params})

    def value(ref: Ref) -> fx.Node:
        node = values[ref.name]
        return node if ref.item is None else graph.call_function(operator.getitem, (node, ref.item))

    for step in tree.steps:
        args = tuple(value(r) for r in step.args)
        kwargs: dict[str, Any] = {k: value(r) for k, r in step.kwargs.items()}
        kwargs.update(step.call)
        if step.fn is not None:
            values[step.name] = graph.call_function(step.fn, args, {**step.op_kwargs, **kwargs})
        else:
            values[step.name] = graph.call_module(step.name, args, kwargs)
    graph.output(value(tree.out) if isinstance(tree.out, Ref) else tuple(value(r) for r in tree.out))
    module = DataflowModule(root, graph, class_name=tree.name)
    # Declared order, and the very modules built (fx copies attributes in the order of first use).
    module._modules.clear()
    module._modules.update(root._modules)
    module._parameters.clear()
    module._parameters.update(root._parameters)
    return module


def _tie(root: nn.Module, alias: str, target: str, where: str) -> None:
    """`alias` becomes the very Parameter at `target` (transformers' tied embeddings)."""
    try:
        param = root.get_parameter(target)
        owner_path, _, name = alias.rpartition(".")
        owner = root.get_submodule(owner_path)
        old = owner.get_parameter(name)
    except AttributeError as err:
        raise BuildError(f"{where} -> tie: '{alias}' = '{target}': {err}") from None
    if old.shape != param.shape:
        raise BuildError(
            f"{where} -> tie: '{alias}' has shape {tuple(old.shape)} but '{target}' has {tuple(param.shape)}; "
            "tied parameters must have the same shape."
        )
    setattr(owner, name, param)
