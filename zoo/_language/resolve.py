"""Declarations → one resolved tree, the form that check, build, config.json and `zoo show` read.

Resolving looks up every name, evaluates every `${...}`, inlines entries used as types,
expands `repeat`, applies `when`, wires dataflow references and checks every constructor call
against its signature — collecting every problem, building nothing. Nothing downstream walks
declarations again: the builder turns a tree into modules, `declaration()` turns it into the
TOML-shaped data saved in config.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from zoo._errors import ArgumentError, CycleError, SpecError, ZooError, did_you_mean, listing
from zoo._language.declarations import (
    DEFAULT_INPUTS,
    LANGUAGE_KEYS,
    MAX_NESTING,
    Child,
    Const,
    Entry,
    Group,
    InitRule,
    Location,
    Node,
    Ref,
    SharedRef,
    Value,
    Wiring,
)
from zoo._language.expressions import Expr, names_in
from zoo._language.hfconfig import TransformersMap
from zoo._language.keymap import KeyMap
from zoo._language.names import is_argument_name, refusal
from zoo._language.registry import Provider, Registry
from zoo._language.signatures import (
    UNRESOLVED,
    check_call,
    check_init_kwargs,
    check_op_call,
    takes_mode,
    takes_tensors,
)

# --- the resolved tree ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Init:
    """An init rule with its function found and its arguments evaluated."""

    pattern: str
    fn_name: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any]
    on: tuple[str, ...]
    where: str  # file:line: path, for messages


@dataclass(frozen=True, eq=False)
class Block:
    """A registered Python block to call: `provider.factory(*children, **kwargs)`."""

    type: str  # as written (qualified `dist:Name` where a plugin's entry says so)
    provider: Provider
    kwargs: Mapping[str, Any]  # plain values, or resolved blocks passed as arguments
    children: tuple[Resolved, ...] | None
    child_names: tuple[str, ...] | None  # set when the children are named (an OrderedDict)
    init: tuple[Init, ...]
    shared: Mapping[str, Resolved]  # declared on this block, for writing the declaration back
    where: str


@dataclass(frozen=True, eq=False)
class Step:
    """One node of a dataflow block: a child block or an op, and the values it takes."""

    name: str
    block: Resolved | None  # a child module, or None for an op
    op: str | None
    fn: Callable[..., Any] | None
    op_kwargs: Mapping[str, Any]
    args: tuple[Value, ...]  # references, or numbers written in `in`
    kwargs: Mapping[str, Value]
    call: Mapping[str, Any]
    where: str
    mode: bool = False  # the op takes the block's training mode as `training`


@dataclass(frozen=True, eq=False)
class Buffer:
    """A tensor a dataflow block computes at build (an op on constants and earlier buffers) and keeps."""

    step: Step  # the op call that computes it; step.name is the buffer's name
    persistent: bool  # has a state-dict key (saved); otherwise recomputed wherever the model is built
    init: Init | None  # an init function that then fills it in place


@dataclass(frozen=True, eq=False)
class Graph:
    """A dataflow block: named inputs, steps in order, outputs; compiled to a torch.fx GraphModule."""

    name: str  # the class name of the compiled module
    inputs: tuple[str, ...]
    steps: tuple[Step, ...]
    out: tuple[Ref, ...] | Ref
    params: Mapping[str, tuple[int, ...]]
    tie: Mapping[str, str]
    init: tuple[Init, ...]
    shared: Mapping[str, Resolved]
    where: str
    buffers: tuple[Buffer, ...] = ()
    defaults: Mapping[str, Step] = field(
        default_factory=dict
    )  # optional input → the op that computes it when not given


@dataclass(frozen=True, eq=False)
class Use:
    """`"@name"`: the very block resolved under `shared` (built once, used at each Use)."""

    name: str
    target: Resolved
    where: str


Resolved = Block | Graph | Use


@dataclass
class Resolution:
    """The tree, or every problem found on the way."""

    root: Resolved | None
    errors: list[ZooError]
    input_shape: tuple[int, ...] | None = None
    provenance: dict[str, str] = field(default_factory=dict)  # block type → "distribution version"
    key_map: KeyMap | None = None  # `weights = {...}`: how a foreign checkpoint's keys map onto the model's
    warnings: list[str] = field(default_factory=list)
    input_dtype: str | None = None  # an example input of integers (token ids) says so
    input_high: int | None = None
    transformers: dict[str, Any] | None = None  # the transformers config.json keys of this build, when it maps


# The expansion budget: how large one entry's resolved tree may grow. Each block, op and shared-block
# use the resolution visits counts one (every repeat copy, kept or left out by `when`), and so does
# each value of their arguments (a string one per 64 characters). tv_densenet121 counts 3,713, GPT-2
# small 3,068, and the largest real architecture declared, Llama at transformers' default size (32
# layers), about 9,400: the default is a hundred times that, and resolving that much takes seconds.
MAX_NODES_ENV = "ZOO_MAX_NODES"
DEFAULT_MAX_NODES = 1_000_000


def max_nodes() -> int:
    """The expansion budget per entry: $ZOO_MAX_NODES, else DEFAULT_MAX_NODES."""
    text = os.environ.get(MAX_NODES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_NODES
    if not text.isdigit() or int(text) < 1:
        raise SpecError(f"{MAX_NODES_ENV} must be a positive whole number of nodes, got {text!r}.")
    return int(text)


def resolve(registry: Registry, provider: Provider, overrides: Mapping[str, Any], name: str) -> Resolution:
    """Resolve `provider` (a Python block or a declared entry) with `overrides`."""
    try:
        return _resolve(registry, provider, overrides, name, max_nodes())
    except RecursionError:  # each level is bounded, but entries inside entries and blocks inside blocks add up
        return Resolution(None, [too_deep(provider)])


def too_deep(provider: Provider) -> SpecError:
    """The error for a declaration whose blocks and entries, together, nest deeper than Python can follow."""
    where = provider.entry.loc if provider.entry is not None else provider.where
    return SpecError(
        f"{where}: {provider.name}: blocks inside blocks and entries inside entries nest too deeply, all together, "
        "for zoo to follow; declare fewer levels"
    )


def _resolve(
    registry: Registry, provider: Provider, overrides: Mapping[str, Any], name: str, budget: int
) -> Resolution:
    resolver = _Resolver(registry, budget)
    input_shape = None
    key_map = None
    dtype, high = None, None
    hf = None
    if provider.factory is not None:
        try:
            root: Resolved | None = resolver.call(
                provider, provider.name, dict(overrides), None, None, None, (), {}, name, Location(name)
            )
        except _Broken:
            root = None
    else:
        assert provider.entry is not None
        try:
            root, input_shape = resolver.entry(provider.entry, overrides, name)
        except _OverBudget as over:
            where = over.where or str(provider.entry.loc)
            resolver.errors.append(
                SpecError(
                    f"{where}: {name} expands to more than {budget:,} nodes (blocks, ops, repeat copies and the "
                    f"values of their arguments; a hundred times a Llama's). Is a `repeat` "
                    f"inside a `repeat` meant? To allow more, set {MAX_NODES_ENV}."
                )
            )
            return Resolution(None, resolver.errors)
        if provider.entry.key_map is not None:
            where = f"{provider.entry.key_map_loc or provider.entry.loc}: {name} -> weights"
            try:
                key_map = KeyMap.from_table(provider.entry.key_map, where=where)
            except ZooError as err:
                resolver.errors.append(err)
        dtype, high = resolver.input_dtype(provider.entry, overrides, name)
        hf = resolver.transformers(provider.entry, overrides, name)
    return Resolution(
        root, resolver.errors, input_shape, resolver.provenance, key_map, resolver.warnings, dtype, high, hf
    )


class _Broken(Exception):
    """A part that could not be resolved; its error is already in the list."""


# The value of a dataflow step that failed to resolve: what takes it fails quietly, since the step's own
# error is in the list already, and "'conv' is no earlier child" about a declared conv would be false.
_BROKEN = Ref("<broken>")


class _OverBudget(Exception):
    """The entry expands past the budget: resolution stops at once, with one error."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


_NUMBERS = frozenset((int, float, bool, type(None)))


def _tree_size(value: Any) -> int:
    """What a resolved argument value adds to the tree: one per value, a string one per 64 characters."""
    if type(value) in _NUMBERS:  # the common case first: Mapping's isinstance is an ABC check
        return 1
    if isinstance(value, str):
        return 1 + len(value) // 64
    if isinstance(value, (tuple, list)):
        return 1 + sum(_tree_size(v) for v in value)
    if isinstance(value, Mapping):
        return 1 + sum(_tree_size(v) for v in value.values())
    return 0 if isinstance(value, (Block, Graph, Use)) else 1  # blocks are counted where they are resolved


class _Args(Mapping[str, Any]):
    """An entry's arguments: overrides, else defaults, evaluated on first use (defaults may use each other)."""

    def __init__(self, entry: Entry, given: Mapping[str, Any], where: str) -> None:
        self.raw = {**entry.params, **given}
        self.entry = entry
        self.where = where
        self.done: dict[str, Any] = {}
        self.busy: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self.done:
            return self.done[name]
        if name not in self.raw:
            raise KeyError(name)
        if name in self.busy:
            chain = " -> ".join((*self.busy[self.busy.index(name) :], name))
            raise SpecError(f"{self.entry.loc}: {self.where}: arguments refer to each other in a loop: {chain}.")
        self.busy.append(name)
        try:
            value = evaluate(self.raw[name], self, f"{self.entry.loc}: {self.where} -> args.{name}")
        finally:
            self.busy.pop()
        self.done[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class _Index(Mapping[str, Any]):
    """A scope with a repeat's index added (`i` in `denselayer${i + 1}`)."""

    def __init__(self, parent: Mapping[str, Any], name: str, value: int) -> None:
        self.parent, self.name, self.value = parent, name, value

    def __getitem__(self, name: str) -> Any:
        return self.value if name == self.name else self.parent[name]

    def __iter__(self) -> Iterator[str]:
        yield self.name
        yield from (n for n in self.parent if n != self.name)

    def __len__(self) -> int:
        return len(set(self))


def evaluate(value: Any, scope: Mapping[str, Any], where: str) -> Any:
    """`value` with every `${...}` inside it evaluated (nested arrays and tables too)."""
    if isinstance(value, Expr):
        return value.evaluate(scope, where)
    if isinstance(value, tuple):
        return tuple(evaluate(v, scope, where) for v in value)
    if isinstance(value, Mapping):
        return {k: evaluate(v, scope, where) for k, v in value.items()}
    return value


def _at(loc: Location, path: str) -> str:
    return f"{loc}: {path}"


class _Resolver:
    def __init__(self, registry: Registry, budget: int) -> None:
        self.registry = registry
        self.budget = budget  # nodes left to expand (see DEFAULT_MAX_NODES)
        self.errors: list[ZooError] = []
        self.warnings: list[str] = []
        self.provenance: dict[str, str] = {}
        self.entries: tuple[str, ...] = ()  # entries being resolved, for cycles
        self.shared: list[dict[str, Resolved | None]] = []  # `shared` scopes, innermost last
        self.values: Mapping[str, Ref] = {}  # the values of the dataflow block being resolved, for hints
        self.unnamed_broken = False  # a step of that block whose names are unknown (an expression) failed

    def fail(self, err: ZooError) -> _Broken:
        self.errors.append(err)
        return _Broken()

    def spend(self, nodes: int, where: str) -> None:
        """Count `nodes` against the expansion budget; past it, stop resolving this entry."""
        self.budget -= nodes
        if self.budget < 0:
            raise _OverBudget(where)

    def attempt(self, fn: Callable[[], Any]) -> Any:
        """fn(), with a ZooError recorded instead of raised (the caller gets _Broken)."""
        try:
            return fn()
        except ZooError as err:
            raise self.fail(err) from None

    # --- entries ------------------------------------------------------------------------------

    def entry(
        self, entry: Entry, overrides: Mapping[str, Any], where: str
    ) -> tuple[Resolved | None, tuple[int, ...] | None]:
        if entry.name in self.entries:
            chain = " -> ".join((*self.entries[self.entries.index(entry.name) :], entry.name))
            self.errors.append(CycleError(f"{entry.loc}: entries refer to each other in a loop: {chain}."))
            return None, None
        if len(self.entries) >= MAX_NESTING:  # resolving and building recurse once per entry in the chain
            chain = f"{' -> '.join(self.entries[:3])} -> … -> {entry.name}"
            self.errors.append(
                SpecError(f"{entry.loc}: entries refer to entries more than {MAX_NESTING} deep: {chain}.")
            )
            return None, None
        try:
            params, direct = split_overrides(entry, overrides, where)
        except ZooError as err:
            self.errors.append(err)
            return None, None
        args = _Args(entry, params, where)
        outer, self.entries = self.entries, (*self.entries, entry.name)
        try:
            self.require(entry, args, where)
            root = self.node(entry.node, args, direct, graph_name=entry.name)
        except _Broken:
            root = None
        finally:
            self.entries = outer
        shape = self.input_shape(entry, args, where)
        if shape is None and root is not None and isinstance(entry.node.type, str):
            # An entry used as a type (`type = "mlp"`) takes that entry's example input.
            inner = self.registry.providers(entry.node.type.split(":")[-1])
            if inner and inner[-1].entry is not None and inner[-1].entry.input_shape is not None:
                shape = self.input_shape(inner[-1].entry, _Args(inner[-1].entry, {}, where), where)
        self.warn_unused(entry, args)
        return root, shape

    def require(self, entry: Entry, args: Mapping[str, Any], where: str) -> None:
        """Every `require` condition holds, or the entry is not resolved further (its errors would follow from it)."""
        failed = False
        for check, loc in entry.require:
            at = f"{loc}: {where} -> require"
            try:
                holds = evaluate(check, args, at)
            except ZooError as err:
                self.errors.append(err)
                failed = True
                continue
            if holds is True:
                continue
            failed = True
            text = check.text if isinstance(check, Expr) else repr(check)
            if not isinstance(holds, bool):
                self.errors.append(SpecError(f"{at}: '{text}' must be true or false, got {holds!r}."))
                continue
            names = sorted(check.names) if isinstance(check, Expr) else []
            given = ", ".join(f"{n} = {_shown(args.get(n))}" for n in names)
            self.errors.append(
                SpecError(
                    f"{at}: '{text}' does not hold" + (f" with {given}." if given else ".") + " Change the arguments."
                )
            )
        if failed:
            raise _Broken()

    def input_shape(self, entry: Entry, args: Mapping[str, Any], where: str) -> tuple[int, ...] | None:
        if entry.input_shape is None:
            return None
        try:
            shape = evaluate(entry.input_shape, args, f"{entry.loc}: {where} -> input")
        except ZooError as err:
            self.errors.append(err)
            return None
        if not all(type(d) is int and d > 0 for d in shape):
            self.errors.append(SpecError(f"{entry.loc}: {where}: `input` must be positive sizes, got {list(shape)}."))
            return None
        return tuple(shape)

    def input_dtype(self, entry: Entry, overrides: Mapping[str, Any], where: str) -> tuple[str | None, int | None]:
        if entry.input_dtype is None:
            return None, None
        try:
            params, _ = split_overrides(entry, overrides, where)
            high = evaluate(entry.input_high, _Args(entry, params, where), f"{entry.loc}: {where} -> input.high")
        except ZooError as err:
            self.errors.append(err)
            return None, None
        if high is not None and (type(high) is not int or high < 1):
            self.errors.append(SpecError(f"{entry.loc}: {where}: `input.high` must be a positive int, got {high!r}."))
            return None, None
        return entry.input_dtype, high

    def transformers(self, entry: Entry, overrides: Mapping[str, Any], where: str) -> dict[str, Any] | None:
        """The transformers config keys of this build (`[entry.transformers]`, with the arguments' values)."""
        if entry.transformers is None:
            return None
        at = f"{entry.transformers_loc or entry.loc}: {where} -> transformers"
        try:
            mapping = TransformersMap.from_table(entry.name, entry.transformers, entry.params, at)
            params, _ = split_overrides(entry, overrides, where)
            args = _Args(entry, params, where)
            return mapping.config({arg: args[arg] for arg in mapping.args})
        except ZooError as err:
            self.errors.append(err)
            return None

    def warn_unused(self, entry: Entry, args: _Args) -> None:
        if not entry.params:
            return  # nothing to warn of (config.json's declarations): the walk below is a tenth of a resolve
        used = set(names_in(entry.params)) | set(names_in(entry.input_shape)) | set(_names_in_node(entry.node))
        used |= set(names_in(entry.input_high)) | set(names_in([check for check, _ in entry.require]))
        for name in entry.params:
            if name not in used:
                self.warnings.append(
                    f"{entry.loc}: {entry.name}: argument '{name}' is declared in `args` but never used as ${{{name}}}."
                )

    # --- blocks -------------------------------------------------------------------------------

    def node(
        self, node: Node, scope: Mapping[str, Any], direct: Mapping[str, Any] = {}, graph_name: str = "Dataflow"
    ) -> Resolved:
        where = _at(node.loc, node.path)
        assert node.type is not None  # op nodes are steps, resolved by graph()
        type_name = self.attempt(lambda: evaluate(node.type, scope, f"{where} -> type"))
        if not isinstance(type_name, str) or not type_name:
            raise self.fail(SpecError(f"{where}: `type` must name a block or entry, got {type_name!r}."))
        provider = self.attempt(lambda: self.registry.resolve(type_name, where=where))
        kwargs = self.kwargs(node, scope)
        kwargs.update(direct)
        self.spend(1 + _tree_size(kwargs), where)
        if provider.entry is not None:
            return self.inline(node, provider.entry, kwargs, scope)
        self.shared.append({})
        try:
            shared = self.declare_shared(node, scope)
            if node.graph:
                return self.graph(node, scope, shared, graph_name)
            names, children = self.children(node, scope)
            if node.layer_names is not None and provider.factory is not nn.Sequential:  # zoo fills a Sequential
                self.attribute_names(node, provider, type_name, names)
            if calls_children(provider):
                for kid in children:
                    self.callable_child(kid)
            kids = tuple(children) if node.layers is not None else None
            labels = tuple(names) if node.layer_names is not None else None
            return self.call(
                provider,
                type_name,
                kwargs,
                kids,
                labels,
                node,
                self.init(node.init, scope),
                shared,
                node.path,
                node.loc,
            )
        finally:
            self.shared.pop()

    def inline(self, node: Node, entry: Entry, kwargs: dict[str, Any], scope: Mapping[str, Any]) -> Resolved:
        """An entry used as a type: its tree, with this node's keys as overrides and its init rules after."""
        where = _at(node.loc, node.path)
        if node.layers is not None:
            raise self.fail(SpecError(f"{where}: '{entry.name}' is a declared entry; it takes no `layers`."))
        for key, value in kwargs.items():
            if isinstance(value, (Block, Graph, Use)):
                raise self.fail(SpecError(f"{where} -> {key}: an entry's arguments are values, not blocks."))
        root, _ = self.entry(entry, kwargs, node.path)
        if root is None:
            raise _Broken()
        rules = self.init(node.init, scope)
        if not rules:
            return root
        if isinstance(root, Use):
            raise self.fail(SpecError(f"{where}: init rules cannot apply to a shared block used as an entry."))
        return replace(root, init=(*root.init, *rules))

    def declare_shared(self, node: Node, scope: Mapping[str, Any]) -> dict[str, Resolved]:
        shared: dict[str, Resolved] = {}
        for name, block in node.shared.items():
            try:
                shared[name] = self.node(block, scope)
            except _Broken:
                self.shared[-1][name] = None  # declared, but broken: uses stay quiet
                continue
            self.shared[-1][name] = shared[name]
        return shared

    def kwargs(self, node: Node, scope: Mapping[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for key, value in node.kwargs.items():
            at = f"{node.key_locs.get(key, node.loc)}: {node.path} -> {key}"
            try:
                kwargs[key] = self.value(value, scope, at)
            except ZooError as err:
                self.errors.append(err)
                kwargs[key] = UNRESOLVED
            except _Broken:
                kwargs[key] = UNRESOLVED
        return kwargs

    def value(self, value: Any, scope: Mapping[str, Any], where: str) -> Any:
        if isinstance(value, Node):
            return self.node(value, scope)
        if isinstance(value, tuple):
            return tuple(self.value(v, scope, where) for v in value)
        if isinstance(value, Mapping):
            return {k: self.value(v, scope, where) for k, v in value.items()}
        return evaluate(value, scope, where)

    def call(
        self,
        provider: Provider,
        type_name: str,
        kwargs: dict[str, Any],
        children: tuple[Resolved, ...] | None,
        names: tuple[str, ...] | None,
        node: Node | None,
        init: tuple[Init, ...],
        shared: Mapping[str, Resolved],
        path: str,
        loc: Location,
    ) -> Block:
        checked = {k: UNRESOLVED if isinstance(v, (Block, Graph, Use)) else v for k, v in kwargs.items()}
        before = len(self.errors)
        check_call(self.errors, provider, type_name, checked, len(children or ()), path, node)
        if len(self.errors) > before or any(v is UNRESOLVED for v in kwargs.values()):
            raise _Broken()
        assert provider.factory is not None
        self.provenance[provider.name] = str(provider.origin)
        return Block(type_name, provider, kwargs, children, names, init, shared, _at(loc, path))

    # --- children: repeat, when, names ------------------------------------------------------------

    def copies(
        self, child: Child, label: str | Expr | None, scope: Mapping[str, Any]
    ) -> Iterator[tuple[str | None, Mapping[str, Any], bool]]:
        """(name, scope, splice) for each copy of a child that `when` keeps.

        A plain-named repeat (`layer1 = { repeat = 2, ... }`) is not spliced: its copies form one container.
        """
        where = _at(child.loc, child.path)
        repeat = child.repeat
        if repeat is None:
            self.spend(1, where)
            if self.kept(child, scope, where):
                yield self.label(label, scope, where), scope, True
            return
        count = self.attempt(lambda: evaluate(repeat.count, scope, f"{where} -> repeat"))
        if type(count) is not int or not 0 <= count <= 10_000:
            raise self.fail(SpecError(f"{where}: `repeat` must be a count from 0 to 10000, got {count!r}."))
        splice = label is None or isinstance(label, Expr)
        for i in range(count):
            self.spend(1, where)  # before `when`: copies left out cost their test
            inner = _Index(scope, repeat.index, i)
            if self.kept(child, inner, where):
                yield self.label(label, inner, where) if splice else None, inner, splice

    def kept(self, child: Child, scope: Mapping[str, Any], where: str) -> bool:
        return child.when is None or self.kept_when(child.when, scope, f"{where} -> when")

    def kept_when(self, when: Any, scope: Mapping[str, Any], where: str) -> bool:
        keep = self.attempt(lambda: evaluate(when, scope, where))
        if not isinstance(keep, bool):
            raise self.fail(SpecError(f"{where}: `when` must be true or false, got {keep!r}."))
        return keep

    def label(self, label: str | Expr | None, scope: Mapping[str, Any], where: str) -> str | None:
        if not isinstance(label, Expr):
            return label
        name = self.attempt(lambda: label.evaluate(scope, f"{where} (its name)"))
        if not isinstance(name, str) or not name.replace("_", "a").isalnum():
            raise self.fail(
                SpecError(f"{where}: the name '{label.text}' gives {name!r}, not a name of letters, digits and '_'.")
            )
        return name

    def child(self, child: Node | SharedRef, scope: Mapping[str, Any]) -> Resolved:
        if isinstance(child, SharedRef):
            for declared in reversed(self.shared):
                if child.name in declared:
                    target = declared[child.name]
                    if target is None:
                        raise _Broken()
                    return Use(child.name, target, _at(child.loc, child.path))
            known = [n for declared in self.shared for n in declared]
            if child.name in self.values:
                raise self.fail(
                    SpecError(
                        f"{child.loc}: {child.path}: '@{child.name}' would share a block's weights, but "
                        f"'{child.name}' is a value of this block. To take its output, write in = \"{child.name}\"."
                    )
                )
            raise self.fail(
                SpecError(
                    f"{child.loc}: {child.path}: '@{child.name}' names no shared block."
                    f"{did_you_mean(child.name, known)} "
                    f"Declare it under `shared` of this entry (declared here: {listing(known)})."
                )
            )
        return self.node(child, scope)

    def children(self, node: Node, scope: Mapping[str, Any]) -> tuple[list[str], list[Resolved]]:
        """A chain's children with repeats expanded and left-out ones dropped; errors collected."""
        names: list[str] = []
        children: list[Resolved] = []
        outer, self.values = self.values, {n: Ref(n) for n in node.layer_names or () if isinstance(n, str)}
        self.chain(node.layers or (), node.layer_names, scope, names, children)
        self.values = outer
        self.unique(node, names)
        return names, children

    def chain(
        self,
        layers: tuple[Child, ...],
        labels: tuple[str | Expr, ...] | None,
        scope: Mapping[str, Any],
        names: list[str],
        children: list[Resolved],
    ) -> None:
        """Append each child of a chain (a group's copies spliced in place) to `names` and `children`."""
        for index, child in enumerate(layers):
            label = labels[index] if labels is not None else None
            try:
                for name, inner, splice in self.copies(child, label, scope):
                    if not splice:  # `layer1 = { repeat = 2, ... }`: a Sequential of the copies
                        names.append(str(label))
                        if isinstance(child, Group):
                            children.append(self.group_container(child, scope))
                        else:
                            children.append(self.container(child, inner, scope))
                        break
                    if isinstance(child, Group):
                        self.chain(child.children, child.names, inner, names, children)
                        continue
                    children.append(self.child(child, inner))
                    names.append(name if name is not None else str(len(children) - 1))
            except _Broken:
                continue

    def container(
        self, child: Node | SharedRef, first: Mapping[str, Any], scope: Mapping[str, Any], chain: bool = False
    ) -> Block:
        """The copies of a plain-named repeat in one container: a Sequential, or a Chain when they take several values.

        A Chain passes its first input through the copies and the other inputs to each.
        """
        assert child.repeat is not None
        copies = [self.child(child, inner) for _, inner, _ in self.copies(child, None, scope)]
        kind = "Chain" if chain else "Sequential"
        provider = self.registry.resolve(kind)
        return self.call(provider, kind, {}, tuple(copies), None, None, (), {}, f"{child.path} (repeat)", child.loc)

    def group_container(self, group: Group, scope: Mapping[str, Any]) -> Block:
        """The copies of a plain-named group, spliced flat into one Sequential (`stage.0`, `stage.1`, …)."""
        names: list[str] = []
        children: list[Resolved] = []
        for _, inner, _ in self.copies(group, None, scope):
            self.chain(group.children, group.names, inner, names, children)
        where = _at(group.loc, group.path)
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise self.fail(SpecError(f"{where}: two children are named '{name}' (after `repeat`)."))
            seen.add(name)
        labels = tuple(names) if group.names is not None else None
        provider = self.registry.resolve("Sequential")
        return self.call(
            provider, "Sequential", {}, tuple(children), labels, None, (), {}, f"{group.path} (group)", group.loc
        )

    def callable_child(self, child: Resolved) -> None:
        """A container that holds blocks but has no forward (ModuleList) cannot be a layer of a chain or graph."""
        block = child.target if isinstance(child, Use) else child
        if isinstance(block, Block) and not _has_forward(block.provider):
            self.errors.append(
                SpecError(
                    f"{block.where}: {block.type} holds blocks but cannot be called, so it cannot be a layer here. "
                    'Use "Sequential" to chain its children, or a dataflow block to wire them.'
                )
            )

    def attribute_names(self, node: Node, provider: Provider, type_name: str, names: list[str]) -> None:
        """A Python block that registers its children as attributes cannot take a name it has as one."""
        declared = {label: child.loc for label, child in zip(node.layer_names or (), node.layers or (), strict=True)}
        for name in names:
            problem = refusal(name, provider.factory, type_name) if isinstance(provider.factory, type) else None
            if problem:
                self.errors.append(
                    SpecError(f"{declared.get(name, node.loc)}: {node.path} -> layers.{name}: {problem}")
                )

    def unique(self, node: Node, names: list[str]) -> None:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise self.fail(
                    SpecError(f"{_at(node.loc, node.path)}: two children are named '{name}' (after `repeat`).")
                )
            seen.add(name)

    # --- dataflow -------------------------------------------------------------------------------

    def graph(self, node: Node, scope: Mapping[str, Any], shared: Mapping[str, Resolved], name: str) -> Graph:
        where = _at(node.loc, node.path)
        params: dict[str, tuple[int, ...]] = {}
        for pname, dims in node.params.items():
            try:
                shape = evaluate(dims, scope, f"{where} -> params.{pname}")
            except ZooError as err:
                self.errors.append(err)
                continue
            self.spend(_tree_size(shape), where)
            if not all(type(d) is int and d >= 0 for d in shape):
                self.errors.append(SpecError(f"{where} -> params.{pname}: a shape holds sizes, got {list(shape)}."))
            params[pname] = shape
        known: dict[str, Ref] = {n: Ref(n) for n in params}  # name → the value it means
        buffers = self.buffers(node, scope, known)
        defaults: dict[str, Step] = {}
        for input_name in node.inputs:
            if input_name in known:
                self.errors.append(SpecError(f"{where}: '{input_name}' is both an input and a parameter or buffer."))
            default = node.defaults.get(input_name)
            if default is not None:  # computed from the inputs before it, parameters and buffers
                try:
                    defaults[input_name] = self.default(input_name, default, scope, known)
                except _Broken:
                    pass
            known[input_name] = Ref(input_name)
        previous = Ref(node.inputs[0])
        steps: list[Step] = []
        outer, self.values = self.values, known
        outer_unnamed, self.unnamed_broken = self.unnamed_broken, False
        for index, child in enumerate(node.layers or ()):
            label = node.layer_names[index] if node.layer_names is not None else None
            try:
                previous = self.step(node, child, label, scope, known, steps, previous)
            except _Broken:
                if isinstance(label, str):
                    known.setdefault(label, _BROKEN)
                else:
                    self.unnamed_broken = True
                previous = _BROKEN
        self.values, self.unnamed_broken = outer, outer_unnamed
        out = self.out(node, known, previous)
        self.check_inplace(steps, out, node)
        graph = Graph(
            name,
            node.inputs,
            tuple(steps),
            out,
            params,
            self.ties(node, scope),
            self.init(node.init, scope),
            shared,
            where,
            tuple(buffers),
            defaults,
        )
        self.check_ties(graph, node)
        return graph

    def buffers(self, node: Node, scope: Mapping[str, Any], known: dict[str, Ref]) -> list[Buffer]:
        """Each buffer's op, taking constants and the buffers declared before it."""
        found = []
        for buffer in node.buffers:
            decl = buffer.node
            where = _at(decl.loc, decl.path)
            before = {n: r for n, r in known.items() if n not in node.params}
            try:
                if buffer.name in known:
                    raise self.fail(SpecError(f"{where}: '{buffer.name}' names a parameter and a buffer."))
                wiring = decl.wiring
                args, kwargs = (
                    self.wire(wiring, before, None, where, scope) if wiring and wiring.args is not None else ((), {})
                )
                step = self.op_step(buffer.name, decl, scope, args, kwargs, {}, where, in_forward=False)
            except _Broken:
                known.setdefault(buffer.name, _BROKEN)  # what takes it stays quiet
                continue
            init = self.init((buffer.init,), scope)[0] if buffer.init is not None else None
            found.append(Buffer(step, buffer.persistent, init))
            known[buffer.name] = Ref(buffer.name)
        return found

    def default(self, name: str, default: Node, scope: Mapping[str, Any], known: Mapping[str, Ref]) -> Step:
        """The op that computes an optional input when the caller does not give it."""
        at = _at(default.loc, default.path)
        args, kwargs = self.wire(default.wiring, known, None, at, scope)
        return self.op_step(name, default, scope, args, kwargs, {}, at)

    def op_step(
        self,
        name: str,
        child: Node,
        scope: Mapping[str, Any],
        args: tuple[Value, ...],
        kwargs: Mapping[str, Value],
        call: Mapping[str, Any],
        where: str,
        in_forward: bool = True,
    ) -> Step:
        """An op call, checked against the op's signature: its arguments, the values `in` gives, its mode."""
        op = self.attempt(lambda: evaluate(child.op, scope, f"{where} -> op"))
        if not isinstance(op, str) or not op:
            raise self.fail(SpecError(f'{where}: `op` must name a tensor function such as "add", got {op!r}.'))
        fn = self.attempt(lambda: self.registry.op(op, where=where)).fn
        op_kwargs = self.kwargs(child, scope)
        if any(v is UNRESOLVED for v in op_kwargs.values()):
            raise _Broken()
        mode = takes_mode(fn)
        if mode and "training" in {**op_kwargs, **kwargs, **call}:
            raise self.fail(
                SpecError(
                    f"{where}: op '{op}' takes the block's mode as `training` (model.train() / model.eval()); "
                    "a declaration does not set it."
                )
            )
        if in_forward and not takes_tensors(fn):
            raise self.fail(
                SpecError(
                    f"{where}: op '{op}' makes a tensor from constants alone; declare it under `buffers`, computed "
                    "once at build and moved with the model, or make it from a value (zeros_like, positions)."
                )
            )
        given = {k: v.value if isinstance(v, Const) else UNRESOLVED for k, v in kwargs.items()}
        inputs = [a.value if isinstance(a, Const) else UNRESOLVED for a in args]
        before = len(self.errors)
        check_op_call(
            self.errors, op, fn, inputs, {**op_kwargs, **given, **call}, child.loc, child.path, child.key_locs
        )
        if len(self.errors) > before:
            raise _Broken()
        if _BROKEN in args or _BROKEN in kwargs.values():
            raise _Broken()  # checked itself, but it takes a value whose step failed
        return Step(name, None, op, fn, op_kwargs, args, kwargs, call, where, mode)

    def step(
        self,
        node: Node,
        child: Child,
        label: str | Expr | None,
        scope: Mapping[str, Any],
        known: dict[str, Ref],
        steps: list[Step],
        previous: Ref,
    ) -> Ref:
        """Add the steps for one declared child (several with `repeat`); return what the next child takes.

        Copies of a repeated child are chained: each after the first takes the previous copy's
        output in place of its first input, and the same other inputs.
        """
        where = _at(child.loc, child.path)
        wiring = child.wiring if isinstance(child, Node) else None
        kept = False
        for copy, (name, inner, splice) in enumerate(self.copies(child, label, scope)):
            kept = True
            if isinstance(child, Group):
                if not splice:  # `stage = { repeat = 2, group = [...] }`: one Sequential of the flat copies
                    block: Resolved | None = self.group_container(child, scope)
                    steps.append(Step(str(label), block, None, None, {}, (previous,), {}, {}, where))
                    known[str(label)] = previous = Ref(str(label))
                    break
                for index, inner_child in enumerate(child.children):
                    inner_label = child.names[index] if child.names is not None else None
                    try:
                        previous = self.step(node, inner_child, inner_label, inner, known, steps, previous)
                    except _Broken:
                        continue
                continue
            if name is None:
                name = str(len(steps)) if splice else str(label)
            args, kwargs = self.wire(wiring, known, previous, where, inner)
            if copy > 0 and child.repeat is not None and wiring is not None and wiring.args is not None:
                if not args:
                    raise self.fail(
                        SpecError(
                            f"{where}: a repeated child's copies are chained through their first input, but this one "
                            "takes its values by name; give `in` as an array, the chained value first."
                        )
                    )
                args = (previous, *args[1:])
            try:
                call = evaluate(wiring.call if wiring else {}, inner, f"{where} -> call")
            except ZooError as err:
                raise self.fail(err) from None
            spoken = [k for k in (*kwargs, *call) if not is_argument_name(k)]
            if spoken and not (isinstance(child, Node) and child.op is not None):
                raise self.fail(
                    SpecError(
                        f"{where}: `in` or `call` passes '{spoken[0]}' by name, which no Python call can (it is a "
                        "keyword, or `self`); pass the value by position: in = [...] in the order of the inputs."
                    )
                )
            if not splice:
                block = self.container(child, inner, scope, chain=len(args) > 1 or bool(kwargs))
                step = Step(name, block, None, None, {}, args, kwargs, call, where)
            elif isinstance(child, Node) and child.op is not None:
                step = self.op_step(name, child, inner, args, kwargs, call, where)
            else:
                block = self.child(child, inner)
                step = Step(name, block, None, None, {}, args, kwargs, call, where)
            if name in known:
                raise self.fail(
                    SpecError(
                        f"{where}: '{name}' names two values of this block "
                        "(inputs, params, buffers and children share one namespace)."
                    )
                )
            self.spend(len(args) + len(kwargs) + _tree_size(call) + _tree_size(step.op_kwargs), where)
            if _BROKEN in args or _BROKEN in kwargs.values():
                raise _Broken()  # checked itself, but it takes a value whose step failed
            if step.block is not None:
                self.callable_child(step.block)
            steps.append(step)
            known[name] = Ref(name)
            previous = Ref(name)
            if not splice:
                break
        if not kept and isinstance(label, str):
            # Left out by `when`: a reference to it means what stands in for it (torchvision's
            # `if self.downsample is not None`): `else`, or the one value it takes.
            if wiring is not None and wiring.otherwise is not None:
                stand_in = self.ref(wiring.otherwise, known, f"{where} -> else")
            elif isinstance(child, Group):
                stand_in = previous
            else:
                args, kwargs = self.wire(wiring, known, previous, where, scope)
                if len(args) != 1 or kwargs or isinstance(args[0], Const):
                    taken = ", ".join(str(v) for v in (*args, *kwargs.values()))
                    raise self.fail(
                        SpecError(
                            f"{where}: a child left out by `when` stands for the value it takes, but this one takes "
                            f'{len(args) + len(kwargs)} ({taken}); say which stands in with else = "...".'
                        )
                    )
                stand_in = args[0]
            known[label] = stand_in
            return stand_in
        return previous

    def wire(
        self,
        wiring: Wiring | None,
        known: Mapping[str, Ref],
        previous: Ref | None,
        where: str,
        scope: Mapping[str, Any],
    ) -> tuple[tuple[Value, ...], dict[str, Value]]:
        if wiring is None or (wiring.args is None and not wiring.kwargs):
            return ((previous,) if previous is not None else ()), {}
        args = tuple(self.in_value(r, known, where, scope) for r in wiring.args or ())
        kwargs = {k: self.in_value(r, known, where, scope) for k, r in wiring.kwargs.items()}
        return args, kwargs

    def in_value(self, value: Value, known: Mapping[str, Ref], where: str, scope: Mapping[str, Any]) -> Value:
        """A value of `in`: a reference checked against what is known here, or a number (expressions evaluated)."""
        if isinstance(value, Ref):
            return self.ref(value, known, where)
        number = self.attempt(lambda: evaluate(value.value, scope, f"{where} -> in"))
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise self.fail(SpecError(f"{where}: `in` holds {number!r}; a value written in `in` is a number."))
        return Const(number)

    def ref(self, ref: Ref, known: Mapping[str, Ref], where: str) -> Ref:
        if known.get(ref.name) is _BROKEN or (ref.name not in known and self.unnamed_broken):
            return _BROKEN  # the step it names failed, and said so
        if ref.name not in known:
            raise self.fail(
                SpecError(
                    f"{where}: `in` refers to '{ref.name}', which is no input, parameter or earlier child."
                    f"{did_you_mean(ref.name, known)} Known here: {listing(known)}. A child takes only values "
                    "declared before it."
                )
            )
        target = known[ref.name]
        if ref.item is None:
            return target
        if target.item is not None:
            raise self.fail(SpecError(f"{where}: '{ref}' picks an item of an item; name the tuple's child directly."))
        return Ref(target.name, ref.item)

    def out(self, node: Node, known: Mapping[str, Ref], previous: Ref) -> tuple[Ref, ...] | Ref:
        where = _at(node.loc, node.path)
        if node.out is None:
            return previous
        try:
            if isinstance(node.out, Ref):
                return self.ref(node.out, known, f"{where} -> out")
            return tuple(self.ref(r, known, f"{where} -> out") for r in node.out)
        except _Broken:
            return previous

    def check_inplace(self, steps: list[Step], out: tuple[Ref, ...] | Ref, node: Node) -> None:
        """An op that overwrites its first input may do so only where no other step (and no output) takes it."""
        takers: dict[str, int] = {}
        for ref in (
            *(r for s in steps for r in (*s.args, *s.kwargs.values())),
            *(out if isinstance(out, tuple) else (out,)),
        ):
            if isinstance(ref, Ref):
                takers[ref.name] = takers.get(ref.name, 0) + 1
        for step in steps:
            if step.op_kwargs.get("inplace") is True and step.args and isinstance(step.args[0], Ref):
                first = step.args[0].name
                if (
                    first in node.inputs
                    or first in node.params
                    or any(b.name == first for b in node.buffers)
                    or takers.get(first, 0) > 1
                ):
                    self.errors.append(
                        SpecError(
                            f"{step.where}: inplace = true would overwrite '{first}', which "
                            + (
                                "is an input, parameter or buffer of the block"
                                if takers.get(first, 0) <= 1
                                else "other children also take"
                            )
                            + "; drop inplace, or overwrite a value nothing else uses."
                        )
                    )

    def ties(self, node: Node, scope: Mapping[str, Any]) -> dict[str, str]:
        """The `tie` entries whose `when` holds."""
        kept = {}
        where = _at(node.loc, node.path)
        for alias, tie in node.tie.items():
            try:
                if tie.when is None or self.kept_when(tie.when, scope, f"{where} -> tie.{alias}"):
                    kept[alias] = tie.target
            except _Broken:
                continue
        return kept

    def check_ties(self, graph: Graph, node: Node) -> None:
        names = {s.name for s in graph.steps} | set(graph.params)
        for alias, target in graph.tie.items():
            for path in (alias, target):
                head = path.split(".")[0]
                if head not in names:
                    self.errors.append(
                        SpecError(
                            f"{graph.where} -> tie: '{path}' starts with '{head}', which is no child or parameter of "
                            f"this block.{did_you_mean(head, names)} Children: {listing(names)}."
                        )
                    )

    # --- init rules -------------------------------------------------------------------------------

    def init(self, rules: tuple[InitRule, ...], scope: Mapping[str, Any]) -> tuple[Init, ...]:
        resolved = []
        for rule in rules:
            where = _at(rule.loc, rule.path)
            try:
                if rule.when is not None and not self.kept_when(rule.when, scope, f"{where} -> when"):
                    continue  # `when` leaves the rule out: it applies to nothing, and that is no error
            except _Broken:
                continue
            try:
                fn = self.registry.init_fn(rule.fn, where=where)
                kwargs = evaluate(rule.kwargs, scope, where)
            except ZooError as err:
                self.errors.append(err)
                continue
            self.spend(1 + _tree_size(kwargs), where)
            for block in rule.on:
                if block not in self.registry:
                    self.errors.append(
                        ArgumentError(
                            f"{where}: `on` names '{block}', which is no block."
                            f"{did_you_mean(block, self.registry.names())}"
                        )
                    )
            check_init_kwargs(self.errors, rule.fn, fn.fn, kwargs, where)
            resolved.append(Init(rule.pattern, rule.fn, fn.fn, kwargs, rule.on, where))
        return tuple(resolved)


def _shown(value: Any) -> str:
    """An argument's value as TOML writes it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return repr(value)


def calls_children(provider: Provider) -> bool:
    """Whether a block calls its children in a chain: a Sequential, or a class that says `chains_children = True`."""
    factory = provider.factory
    return isinstance(factory, type) and (
        issubclass(factory, nn.Sequential) or getattr(factory, "chains_children", False)
    )


def _has_forward(provider: Provider) -> bool:
    factory = provider.factory
    return not (isinstance(factory, type) and issubclass(factory, nn.Module) and factory.forward is nn.Module.forward)


def split_overrides(entry: Entry, overrides: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides → (values of declared `args`, replacements of the entry's own keyword arguments)."""
    params: dict[str, Any] = {}
    direct = {}
    for key, value in overrides.items():
        if key in entry.params:
            params[key] = value
        elif key in entry.node.kwargs:
            direct[key] = value
        else:
            known = [*entry.params, *entry.node.kwargs]
            raise ArgumentError(
                f"{entry.loc}: {where}: '{entry.name}' has no argument '{key}' to override."
                f"{did_you_mean(key, known)} Overridable: {listing(known)}."
            )
    return params, direct


def _names_in_node(node: Child) -> Iterator[str]:
    if isinstance(node, Group):
        yield from names_in(node.when)
        if node.repeat is not None:
            yield from names_in(node.repeat.count)
        for label in node.names or ():
            yield from names_in(label)
        for child in node.children:
            yield from _names_in_node(child)
        return
    if isinstance(node, SharedRef):
        yield from names_in(node.when)
        if node.repeat is not None:
            yield from names_in(node.repeat.count)
        return
    yield from names_in((node.type, node.op))
    yield from names_in(node.kwargs)
    yield from names_in(node.when)
    yield from names_in(tuple(node.params.values()))
    for buffer in node.buffers:
        yield from _names_in_node(buffer.node)
        if buffer.init is not None:
            yield from names_in(buffer.init.kwargs)
    for default in node.defaults.values():
        yield from _names_in_node(default)
    for tie in node.tie.values():
        yield from names_in(tie.when)
    if node.wiring is not None:
        yield from names_in(
            tuple(v.value for v in (*(node.wiring.args or ()), *node.wiring.kwargs.values()) if isinstance(v, Const))
        )
    if node.repeat is not None:
        yield from names_in(node.repeat.count)
    if node.wiring is not None:
        yield from names_in(node.wiring.call)
    for rule in node.init:
        yield from names_in(rule.kwargs)
        yield from names_in(rule.when)
    for label in node.layer_names or ():
        yield from names_in(label)
    for child in (*(node.layers or ()), *node.shared.values()):
        yield from _names_in_node(child)
    for value in node.kwargs.values():
        if isinstance(value, Node):
            yield from _names_in_node(value)


# --- the resolved tree as a declaration (config.json, `zoo show`) ------------------------------


def declaration(tree: Resolved) -> Any:
    """The tree as TOML-shaped data: entries inlined, expressions evaluated, repeats expanded.

    Parsed again (declarations.parse_declaration), it resolves to the same tree.
    """
    if isinstance(tree, Use):
        return f"@{tree.name}"
    out: dict[str, Any] = {}
    if isinstance(tree, Block):
        out["type"] = tree.type
        _put_kwargs(out, tree.kwargs)
        if tree.children is not None:
            kids = [declaration(c) for c in tree.children]
            out["layers"] = dict(zip(tree.child_names, kids, strict=True)) if tree.child_names is not None else kids
    else:
        previous = Ref(tree.inputs[0])
        layers = {}
        for step in tree.steps:
            layers[step.name] = _step(step, previous)
            previous = Ref(step.name)
        if (
            tree.inputs != DEFAULT_INPUTS
            or tree.defaults
            or not any("in" in body or "op" in body for body in layers.values())
            and not (tree.params or tree.tie or tree.buffers)
        ):
            out["inputs"] = [  # also what marks a chain with nothing else as a graph
                {"name": n, "default": _step(tree.defaults[n], None)} if n in tree.defaults else n for n in tree.inputs
            ]
        out["layers"] = layers
        if tree.out != previous:
            out["out"] = str(tree.out) if not isinstance(tree.out, tuple) else [str(r) for r in tree.out]
        if tree.params:
            out["params"] = {n: list(s) for n, s in tree.params.items()}
        if tree.buffers:
            out["buffers"] = {b.step.name: _buffer(b) for b in tree.buffers}
        if tree.tie:
            out["tie"] = dict(tree.tie)
    if tree.shared:
        out["shared"] = {n: declaration(s) for n, s in tree.shared.items()}
    if tree.init:
        rules: dict[str, Any] = {}
        for rule in tree.init:
            rules.pop(rule.pattern, None)  # the same glob again: the later rule wins for every match
            body: dict[str, Any] = {"fn": rule.fn_name, **{k: _plain(v) for k, v in rule.kwargs.items()}}
            if rule.on:
                body["on"] = list(rule.on)
            rules[rule.pattern] = body
        out["init"] = rules
    return out


def _step(step: Step, previous: Ref | None) -> Any:
    """A step as a child's table; `previous` is what it would take without `in` (None: nothing)."""
    if step.block is not None:
        body = declaration(step.block)
        body = {"use": body} if isinstance(body, str) else body
    else:
        body = {"op": step.op}
        _put_kwargs(body, step.op_kwargs)
    if step.kwargs:
        body["in"] = {k: _in(r) for k, r in step.kwargs.items()}
    elif step.args != ((previous,) if previous is not None else ()):  # else it takes the previous value
        body["in"] = _in(step.args[0]) if len(step.args) == 1 else [_in(r) for r in step.args]
    if step.call:
        body["call"] = {k: _plain(v) for k, v in step.call.items()}
    return body


def _in(value: Value) -> Any:
    return value.value if isinstance(value, Const) else str(value)


def _buffer(buffer: Buffer) -> dict[str, Any]:
    body: dict[str, Any] = _step(buffer.step, None)
    if not buffer.persistent:
        body["persistent"] = False
    if buffer.init is not None:
        body["init"] = {"fn": buffer.init.fn_name, **{k: _plain(v) for k, v in buffer.init.kwargs.items()}}
    return body


def _put_kwargs(out: dict[str, Any], kwargs: Mapping[str, Any]) -> None:
    for key, value in kwargs.items():
        plain = declaration(value) if isinstance(value, (Block, Graph, Use)) else _plain(value)
        if key in LANGUAGE_KEYS:
            out.setdefault("kwargs", {})[key] = plain
        else:
            out[key] = plain


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if type(value).__module__.startswith("torch"):  # torch.float16, torch.device("cpu")
        return str(value)
    return value


def graphs(tree: Resolved) -> Iterator[Graph]:
    """Every dataflow block in the tree, once (a shared one is one module)."""
    return (node for node in _parts(tree) if isinstance(node, Graph))


def _parts(tree: Resolved) -> Iterator[Block | Graph]:
    seen: set[int] = set()

    def walk(node: Resolved) -> Iterator[Block | Graph]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, Use):
            yield from walk(node.target)
            return
        for value in node.kwargs.values() if isinstance(node, Block) else ():
            if isinstance(value, (Block, Graph, Use)):
                yield from walk(value)
        yield node
        if isinstance(node, Block):
            for child in node.children or ():
                yield from walk(child)
        else:
            for step in node.steps:
                if step.block is not None:
                    yield from walk(step.block)
        for shared in node.shared.values():
            yield from walk(shared)

    yield from walk(tree)
