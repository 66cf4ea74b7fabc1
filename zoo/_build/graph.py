"""A resolved dataflow block → a torch.fx GraphModule.

Forward is straight-line code that torch.fx generates from the graph (`print(model.code)`),
so a declared ResNet block runs like a hand-written one and works with torch.compile and
torch.export. Children keep their declared names and order: the state-dict keys are exactly
the declaration's, whatever attributes they shadow (names.py): a child or parameter named
`forward`, `self` or `type` is kept in the module's dicts alone, and the generated code reaches
it through a property under a name that shadows nothing (`self.forward_(x)`).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import fx, nn

from zoo._build import devices
from zoo._errors import BuildError, DeviceError
from zoo._language import names
from zoo._language.declarations import Ref
from zoo._language.resolve import Graph, Resolved, Step


class DataflowModule(names.DeclaredParts, fx.GraphModule):
    """A GraphModule that keeps its children in declared order and its extra attributes on copy.

    Its parts may be named like its attributes (names.DeclaredParts), and its errors are raised as
    they are: fx's own call wrapper, which prints the generated code's traceback to stderr first,
    is taken off.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> DataflowModule:
        # fx's own deepcopy rebuilds the module from the graph, which reorders the children and drops
        # attributes such as zoo_info; copying the instance dict keeps both.
        # A subclass of this instance's own class: it inherits the generated forward (and the properties
        # behind code names), and a later recompile of the clone changes the clone alone.
        impl = type(type(self).__name__, (type(self),), {})
        clone: DataflowModule = nn.Module.__new__(impl)
        memo[id(self)] = clone
        clone.__dict__ = copy.deepcopy(self.__dict__, memo)
        return clone

    def recompile(self) -> Any:
        code = super().recompile()
        # fx wraps the class's __call__ to print the generated code's traceback on any error; zoo reports
        # errors in one line at the declaration's file:line instead (check, the CLI), so nn.Module's call.
        if "__call__" in vars(type(self)):
            delattr(type(self), "__call__")
        return code


def compile_graph(tree: Graph, build: Callable[[Resolved], nn.Module]) -> nn.Module:
    """The module for `tree`; `build` makes each child module."""
    children = {step.name: build(step.block) for step in tree.steps if step.block is not None}
    params = {name: _parameter(tree, name, shape) for name, shape in tree.params.items()}
    # The names the generated code uses: the declared ones where they clash with nothing.
    declared = [*tree.inputs, *children, *params]
    code: dict[str, str] = {}
    for name in declared:
        code[name] = names.code_name(name, DataflowModule, [*declared, *code.values()])

    graph = fx.Graph()
    values: dict[str, fx.Node] = {name: graph.placeholder(code[name]) for name in tree.inputs}
    values.update({name: graph.get_attr(code[name]) for name in params})

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
            values[step.name] = graph.call_module(code[step.name], args, kwargs)
    graph.output(value(tree.out) if isinstance(tree.out, Ref) else tuple(value(r) for r in tree.out))
    module = DataflowModule({code[n]: part for n, part in {**children, **params}.items()}, graph, tree.name)
    # The declared names, in declared order, and the very modules built: fx registered them under their
    # code names, in the order of first use.
    module._modules.clear()
    module._modules.update(children)
    module._parameters.clear()
    module._parameters.update(params)
    impl = type(module)  # fx makes one class per instance: the code names live there
    for name in (*children, *params):
        if code[name] != name:
            setattr(impl, code[name], property(partial(_part, name=name)))
    for alias, target in tree.tie.items():
        _tie(module, alias, target, tree.where)
    return module


def _part(module: nn.Module, name: str) -> Any:
    """The child or parameter declared as `name`, for the property that generated code reads instead."""
    return module._modules[name] if name in module._modules else module._parameters[name]


def _parameter(tree: Graph, name: str, shape: tuple[int, ...]) -> nn.Parameter:
    """A bare parameter, zeros until an init rule sets it; refused before allocating when it cannot fit."""
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    what = f"{tree.where} -> params.{name}"
    devices.check_allocation(tuple(shape), dtype, device, what)
    try:
        return nn.Parameter(torch.zeros(shape))
    except RuntimeError as err:  # free memory is a snapshot: the allocator may refuse all the same
        refused = devices.allocation_refused(err)
        if refused is None:
            raise
        raise DeviceError(f"{what}: the allocator refused {refused}; use a smaller shape") from err


def _tie(root: nn.Module, alias: str, target: str, where: str) -> None:
    """`alias` becomes the very Parameter at `target` (transformers' tied embeddings)."""
    try:
        param = names.parameter(root, target)
        old = names.parameter(root, alias)
    except AttributeError as err:
        raise BuildError(f"{where} -> tie: '{alias}' = '{target}': {err}") from None
    if old.shape != param.shape:
        raise BuildError(
            f"{where} -> tie: '{alias}' has shape {tuple(old.shape)} but '{target}' has {tuple(param.shape)}; "
            "tied parameters must have the same shape."
        )
    owner_path, _, name = alias.rpartition(".")
    names.submodule(root, owner_path)._parameters[name] = param


class StepError(Exception):
    """A step of a dataflow block failed when run by `run_steps`: an op raised, or an item is not there.

    `where` is the step's file:line and path, `message` says what happened (the op's error is the cause).
    """

    def __init__(self, where: str, message: str, step: Step | None = None) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
        self.step = step  # None: the block's `out`


def run_steps(
    tree: Graph,
    module: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    seen: Callable[[Step, Any], None] | None = None,
) -> Any:
    """What the compiled forward of `tree` computes, one step at a time, for `zoo check` and the picture.

    `seen` is told each step's output; an op that raises or an item that is not there (`qkv[5]` of a
    pair) raises StepError naming the step, which the compiled code cannot.
    """
    values: dict[str, Any] = dict(zip(tree.inputs, args, strict=False))
    values.update(kwargs)
    values.update({name: module._parameters[name] for name in tree.params})

    def value(ref: Ref, where: str, step: Step | None) -> Any:
        got = values[ref.name]
        if ref.item is None:
            return got
        if not isinstance(got, (tuple, list)):
            raise StepError(where, f"'{ref}' picks an item of '{ref.name}', which gives one value, not a tuple.", step)
        if not -len(got) <= ref.item < len(got):
            raise StepError(
                where,
                f"'{ref}' picks item {ref.item} of '{ref.name}', which gives {len(got)} (items 0 to {len(got) - 1}).",
                step,
            )
        return got[ref.item]

    for step in tree.steps:
        step_args = [value(r, step.where, step) for r in step.args]
        step_kwargs = {k: value(r, step.where, step) for k, r in step.kwargs.items()}
        step_kwargs.update(step.call)
        fn = step.fn
        if fn is not None:
            try:
                result = fn(*step_args, **{**step.op_kwargs, **step_kwargs})
            except Exception as err:  # the op's own error, said at the step's line
                taken = ", ".join(_shape(v) for v in (*step_args, *step_kwargs.values()))
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise StepError(step.where, f"op '{step.op}' got {taken} and raised: {reason}", step) from err
        else:
            child = module._modules[step.name]
            assert child is not None  # compile_graph registered every child
            result = child(*step_args, **step_kwargs)
        values[step.name] = result
        if seen is not None:
            seen(step, result)
    out = f"{tree.where} -> out"
    return value(tree.out, out, None) if isinstance(tree.out, Ref) else tuple(value(r, out, None) for r in tree.out)


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return type(value).__name__
