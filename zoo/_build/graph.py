"""A resolved dataflow block → a torch.fx GraphModule.

Forward is straight-line code that torch.fx generates from the graph (`print(model.code)`),
so a declared ResNet block runs like a hand-written one and works with torch.compile and
torch.export. Children keep their declared names and order: the state-dict keys are exactly
the declaration's, whatever attributes they shadow (names.py): a child or parameter named
`forward`, `self` or `type` is kept in the module's dicts alone, and the generated code reaches
it through a property under a name that shadows nothing (`self.forward_(x)`).

Declared buffers are computed here, at build, by their ops (sized on the meta device first, so
an over-large one is refused before it is allocated); an optional input's default is an op that
runs only when the caller gives none; an op with a `training` parameter reads `self.training`.
"""

from __future__ import annotations

import contextvars
import copy
import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import fx, nn

from zoo._build import devices, ties
from zoo._build.meta import computing_buffers
from zoo._errors import BuildError, DeviceError, SpecError, ZooError
from zoo._language import names
from zoo._language.declarations import Const, Ref, Value
from zoo._language.resolve import Buffer, Graph, Resolved, Step

MAX_BUFFER_ELEMENTS = 2**28  # a buffer a declaration computes: 1 GiB of float32, above any a model needs


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

    def _recompile_submodules(self) -> list[tuple[str, Any]]:
        # fx recompiles every GraphModule child each time a parent is compiled: built bottom-up, a
        # 32-layer Llama recompiled each block once per level above it (716 compiles of 326 graphs,
        # most of its build on meta). Its children are new and compiled already; a later
        # recompile (a user's fx pass) still recompiles them, as fx's does.
        if _constructing.get():
            return []
        return super()._recompile_submodules()

    def recompile(self) -> Any:
        code = super().recompile()
        # fx wraps the class's __call__ to print the generated code's traceback on any error; zoo reports
        # errors in one line at the declaration's file:line instead (check, the CLI), so nn.Module's call.
        if "__call__" in vars(type(self)):
            delattr(type(self), "__call__")
        return code

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> DataflowModule:
        # .to(), .to_empty(), .half(): torch gives each place of a tied tensor its own copy when the
        # storage cannot be reused (CPU -> meta); a declared `tie` stays one Parameter (zoo._build.ties).
        with ties.kept(self):
            super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self


_constructing: contextvars.ContextVar[bool] = contextvars.ContextVar("zoo_constructing_graph", default=False)


def compile_graph(tree: Graph, build: Callable[[Resolved], nn.Module]) -> nn.Module:
    """The module for `tree`; `build` makes each child module."""
    children = {step.name: build(step.block) for step in tree.steps if step.block is not None}
    params = {name: _parameter(tree, name, shape) for name, shape in tree.params.items()}
    buffers: dict[str, torch.Tensor] = {}
    for buffer in tree.buffers:  # each may take the ones before it
        buffers[buffer.step.name] = _compute(buffer, buffers)
    # The names the generated code uses: the declared ones where they clash with nothing.
    declared = [*tree.inputs, *children, *params, *buffers]
    code: dict[str, str] = {}
    for name in declared:
        code[name] = names.code_name(name, DataflowModule, [*declared, *code.values()])

    graph = fx.Graph()
    values: dict[str, fx.Node] = {}
    attributes = {*params, *buffers}  # read where first used
    mode: list[fx.Node] = []  # `self.training`, read once where an op needs it

    def value(ref: Value) -> Any:
        if isinstance(ref, Const):
            return ref.value
        if ref.name not in values and ref.name in attributes:
            values[ref.name] = graph.get_attr(code[ref.name])
        node = values[ref.name]
        return node if ref.item is None else graph.call_function(operator.getitem, (node, ref.subscript()))

    def call(step: Step, given: tuple[fx.Node, ...] = ()) -> fx.Node:
        args = (*given, *(value(r) for r in step.args))
        kwargs: dict[str, Any] = {k: value(r) for k, r in step.kwargs.items()}
        kwargs.update(step.call)
        if step.mode:
            if not mode:
                mode.append(graph.get_attr("training"))
            kwargs["training"] = mode[0]
        if step.fn is None:
            return graph.call_module(code[step.name], args, kwargs)
        target = step.fn if not given else _unless_given(step.fn)
        return graph.call_function(target, args, {**step.op_kwargs, **kwargs})

    for name in tree.inputs:
        if name in tree.defaults:
            values[name] = call(tree.defaults[name], (graph.placeholder(code[name], default_value=None),))
        else:
            values[name] = graph.placeholder(code[name])
    for step in tree.steps:
        values[step.name] = call(step)
    graph.output(value(tree.out) if isinstance(tree.out, Ref) else tuple(value(r) for r in tree.out))
    parts: dict[str, Any] = {code[n]: part for n, part in {**children, **params, **buffers}.items()}
    if mode:
        parts["training"] = True  # fx copies what get_attr reads; a new module trains until eval()
    token = _constructing.set(True)
    try:
        module = DataflowModule(parts, graph, tree.name)
    finally:
        _constructing.reset(token)
    # The declared names, in declared order, and the very modules built: fx registered them under their
    # code names, in the order of first use, and every tensor it copied as a persistent buffer.
    module._modules.clear()
    module._modules.update(children)
    module._parameters.clear()
    module._parameters.update(params)
    module._buffers.clear()
    module._buffers.update(buffers)
    module._non_persistent_buffers_set.clear()
    module._non_persistent_buffers_set.update(b.step.name for b in tree.buffers if not b.persistent)
    impl = type(module)  # fx makes one class per instance: the code names live there
    for name in (*children, *params, *buffers):
        if code[name] != name:
            setattr(impl, code[name], property(partial(_part, name=name)))
    for alias, target in tree.tie.items():
        _tie(module, alias, target, tree.where)
    return module


def _unless_given(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` as an optional input's default: the input itself when the caller gave one, else fn's value."""

    def default(given: Any, *args: Any, **kwargs: Any) -> Any:
        return given if given is not None else fn(*args, **kwargs)

    default.__name__ = default.__qualname__ = f"{getattr(fn, '__name__', 'default')}_unless_given"
    return default


def _compute(buffer: Buffer, earlier: dict[str, torch.Tensor]) -> torch.Tensor:
    """A buffer's value: its op on constants and earlier buffers, sized on the meta device first.

    The meta pass costs nothing and sees the shape, so a declaration cannot make zoo allocate
    more than MAX_BUFFER_ELEMENTS (`arange(10**12)` is refused before any memory is taken).
    """
    step = buffer.step
    assert step.fn is not None

    def value(ref: Value, place: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        if isinstance(ref, Const):
            return ref.value
        tensor = place(earlier[ref.name])
        return tensor if ref.item is None else tensor[ref.subscript()]

    def run(place: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        kwargs = {k: value(v, place) for k, v in step.kwargs.items()}
        return step.fn(*(value(v, place) for v in step.args), **{**step.op_kwargs, **kwargs})  # type: ignore[misc]

    try:
        with torch.no_grad():
            with torch.device("meta"):
                probe = run(lambda t: t.to("meta"))
            if not isinstance(probe, torch.Tensor):
                raise SpecError(f"{step.where}: op '{step.op}' gives {type(probe).__name__}, not a tensor to keep")
            if probe.numel() > MAX_BUFFER_ELEMENTS:
                raise SpecError(
                    f"{step.where}: buffer '{step.name}' would hold {probe.numel():,} elements of shape "
                    f"{list(probe.shape)}; a declared buffer holds at most {MAX_BUFFER_ELEMENTS:,}"
                )
            tensor: torch.Tensor
            if not (probe.is_meta and torch.empty(0).is_meta):
                tensor = run(lambda t: t)
            elif computing_buffers() and not buffer.persistent and not _takes_meta(step, earlier):
                with torch.device("cpu"):  # a load's meta build keeps what no file holds
                    tensor = run(lambda t: t)
            else:  # built on meta: the probe is the buffer
                tensor = probe
            if buffer.init is not None:
                buffer.init.fn(tensor, **buffer.init.kwargs)
    except ZooError:
        raise
    except Exception as err:  # the op refused its declared arguments
        raise SpecError(f"{step.where}: op '{step.op}' raised {type(err).__name__}: {err}") from err
    return tensor


def _takes_meta(step: Step, earlier: dict[str, torch.Tensor]) -> bool:
    """Whether a buffer's op takes an earlier buffer that is on meta (so its own value must be too)."""
    return any(isinstance(r, Ref) and earlier[r.name].is_meta for r in (*step.args, *step.kwargs.values()))


def _part(module: nn.Module, name: str) -> Any:
    """The child, parameter or buffer declared as `name`, for the property that generated code reads instead."""
    for table in (module._modules, module._parameters, module._buffers):
        if name in table:
            return table[name]
    raise AttributeError(name)


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
    values: dict[str, Any] = {name: None for name in tree.inputs}
    values.update(zip(tree.inputs, args, strict=False))
    values.update(kwargs)
    values.update({name: module._parameters[name] for name in tree.params})
    values.update({b.step.name: module._buffers[b.step.name] for b in tree.buffers})

    def value(ref: Value, where: str, step: Step | None) -> Any:
        if isinstance(ref, Const):
            return ref.value
        got = values[ref.name]
        if ref.item is None:
            return got
        if isinstance(ref.item, tuple):  # a tensor index: x[:, 0]
            try:
                return got[ref.subscript()]
            except (IndexError, TypeError) as err:
                raise StepError(where, f"'{ref}' cannot index '{ref.name}' ({_shape(got)}): {err}", step) from err
        if not isinstance(got, (tuple, list, torch.Tensor)):
            raise StepError(where, f"'{ref}' picks an item of '{ref.name}', which gives one value, not a tuple.", step)
        if not -len(got) <= ref.item < len(got):
            raise StepError(
                where,
                f"'{ref}' picks item {ref.item} of '{ref.name}', which gives {len(got)} (items 0 to {len(got) - 1}).",
                step,
            )
        return got[ref.item]

    def run(step: Step) -> Any:
        step_args = [value(r, step.where, step) for r in step.args]
        step_kwargs = {k: value(r, step.where, step) for k, r in step.kwargs.items()}
        step_kwargs.update(step.call)
        if step.mode:
            step_kwargs["training"] = module.training
        fn = step.fn
        if fn is None:
            child = module._modules[step.name]
            assert child is not None  # compile_graph registered every child
            return child(*step_args, **step_kwargs)
        try:
            return fn(*step_args, **{**step.op_kwargs, **step_kwargs})
        except Exception as err:  # the op's own error, said at the step's line
            taken = ", ".join(_shape(v) for v in (*step_args, *step_kwargs.values()))
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise StepError(step.where, f"op '{step.op}' got {taken} and raised: {reason}", step) from err

    for name, default in tree.defaults.items():
        if values[name] is None:
            values[name] = run(default)
    for step in tree.steps:
        values[step.name] = result = run(step)
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
