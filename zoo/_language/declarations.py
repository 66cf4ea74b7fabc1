"""Parse registry TOML into frozen declarations, with a file:line for every key.

No torch here: this stage only reads text. Everything downstream takes `Entry` and `Node`
objects, never raw dicts.

The language, one top-level table per entry (the README teaches it with a ResNet block):

    [name]
    type = "Linear"            # a registered block, or another entry (default: a block of `layers`)
    doc = "one line"           # shown by `zoo list`
    input = [2, 20]            # an example input shape, batch first
    args = { hidden = 256 }    # overridable arguments with defaults, used as "${hidden}" or "${4 * hidden}"
    layers = [...]             # children: an array (named 0, 1, …) or a table (named children)
    shared = { tied = {...} }  # one instance, used as "@tied" at several places below
    init = { "*.weight" = { fn = "normal", std = 0.01 } }   # glob over parameter names → init
    kwargs = { init = 0.1 }    # constructor arguments whose names are language keys
    replace = true             # explicitly redefine a name declared elsewhere
    internal = true            # a helper template: hidden from `zoo list`
    in_features = 20           # any other key is a keyword argument of `type`

Dataflow: a block whose children say what they take (`in`), or that has ops (`op`), bare
`params`, `buffers`, `inputs`, `out` or `tie`, is a graph of named children rather than a chain.
Children may be repeated (`repeat`, one child or a `group` of them) and left out (`when`, with
`else` naming what stands in for them).
"""

from __future__ import annotations

import ast
import bisect
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType, MappingProxyType
from typing import Any

from zoo._errors import RegistryFileError, SpecError, did_you_mean, nearest, shown
from zoo._language.expressions import Expr, has_template
from zoo._language.expressions import parse as parse_expr

MAX_NESTING = 100  # tables and arrays inside each other; parsing, checking and building recurse per level
ENTRY_ONLY_KEYS = ("doc", "input", "args", "replace", "internal", "weights", "require", "transformers")
BLOCK_KEYS = ("type", "layers", "shared", "init", "kwargs", "inputs", "out", "params", "buffers", "tie")
CHILD_KEYS = ("in", "call", "op", "when", "else", "repeat", "group")  # how a parent wires and repeats a child
LANGUAGE_KEYS = frozenset((*ENTRY_ONLY_KEYS, *BLOCK_KEYS, *CHILD_KEYS))
DATAFLOW_KEYS = ("inputs", "out", "params", "buffers", "tie")  # block keys that make a block a graph
# Which language keys each kind of table takes, read by the unknown-key checks (a key added to the tuples
# above lands here too). A block with a constructor passes any other key to it, so an unknown key is an
# argument its signature refuses, said with the nearest language key; a dataflow block has no constructor,
# so any other key is an error at its line.
BLOCK_NODE_KEYS = tuple(sorted(LANGUAGE_KEYS))  # a block with a `type` (or a chain): hints for a refused argument
OP_NODE_KEYS = (*CHILD_KEYS, "kwargs")  # an op node: hints for a refused argument
GRAPH_NODE_KEYS = tuple(k for k in BLOCK_KEYS if k not in ("type", "kwargs"))  # a dataflow block: all it takes
DEFAULT_INPUTS = ("x",)
INPUT_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")  # an example input's dtype
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")  # what a bare string in `layers` and `DIST:name` can say
_CHILD_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # a child's name: one attribute, one state-dict key part
_REF = re.compile(r"^([A-Za-z0-9_]+)(?:\[(-?\d+)\])?$")  # "name" or "name[0]"
_INDEXED = re.compile(r"^([A-Za-z0-9_]+)(\[.*\])$")  # "x[:, 0]", "ids[:, None, None, :]": a tensor index
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Location:
    """Where a declaration or key was written."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class SharedRef:
    """`"@name"`: the one instance declared under `shared` in an enclosing block."""

    name: str
    path: str  # entry path, for messages
    loc: Location
    repeat: Repeat | None = None
    when: Any = None


@dataclass(frozen=True)
class InitRule:
    """Parameters whose names match `pattern` (and whose owner is one of `on`) get `fn(tensor, **kwargs)`."""

    pattern: str
    fn: str
    kwargs: Mapping[str, Any]  # values may hold Expr
    path: str
    loc: Location
    on: tuple[str, ...] = ()  # block type names; empty: any owner
    when: Any = None  # None (always), a bool, or an Expr: a rule for biases only when there are biases


@dataclass(frozen=True)
class Span:
    """`start:stop:step` inside a tensor index; a bound left out is None."""

    start: int | None
    stop: int | None
    step: int | None

    def __str__(self) -> str:
        text = f"{_bound(self.start)}:{_bound(self.stop)}"
        return text + (f":{self.step}" if self.step is not None else "")


IndexPart = int | Span | None | EllipsisType  # None: a new dim of size 1; Ellipsis: `...`


@dataclass(frozen=True)
class Ref:
    """A value inside a dataflow block: an input, a child's output, a bare parameter or a buffer.

    `[k]` picks a tuple's item (or a tensor's row); a longer index such as `[:, 0]` or
    `[:, None, :]` indexes a tensor, as Python does.
    """

    name: str
    item: int | tuple[IndexPart, ...] | None = None

    def __str__(self) -> str:
        if self.item is None:
            return self.name
        if isinstance(self.item, int):
            return f"{self.name}[{self.item}]"
        return f"{self.name}[{', '.join(_part_text(p) for p in self.item)}]"

    def subscript(self) -> Any:
        """The index as Python writes it after `[`: an int, or a tuple of ints, slices, None and Ellipsis."""
        if isinstance(self.item, tuple):
            return tuple(slice(p.start, p.stop, p.step) if isinstance(p, Span) else p for p in self.item)
        return self.item


@dataclass(frozen=True)
class Const:
    """A number written in `in` (`in = [1.0, "x"]`, `in = ["x", "${eps}"]`): passed to the op as it is."""

    value: Any  # int, float, bool, or an Expr giving one

    def __str__(self) -> str:
        return self.value.text if isinstance(self.value, Expr) else repr(self.value)


Value = Ref | Const  # what `in` can name


@dataclass(frozen=True)
class Wiring:
    """What a child of a dataflow block is called with: `in` (values) and `call` (constants)."""

    args: tuple[Value, ...] | None  # None: the previous child's output
    kwargs: Mapping[str, Value] = field(default_factory=lambda: _EMPTY)
    call: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    otherwise: Ref | None = None  # `else`: what the child's name means when `when` leaves it out


@dataclass(frozen=True)
class Repeat:
    """`repeat = N`: N copies, `index` (default `i`) counting from 0 in their values and names."""

    count: Any  # int or Expr
    index: str = "i"


@dataclass(frozen=True)
class Tie:
    """One entry of `tie`: the parameter it is, and (`{ to = ..., when = ... }`) whether it is tied at all."""

    target: str
    when: Any = None  # None (always), a bool, or an Expr


@dataclass(frozen=True)
class BufferDecl:
    """One entry of `buffers`: a tensor computed at build by an op (its `in` may name earlier buffers).

    Persistent buffers have a state-dict key; the others are recomputed wherever the model is
    built (zoo.load too) and never saved, as torch's register_buffer(persistent=False).
    """

    name: str
    node: Node  # an op node: op, arguments, `in`
    persistent: bool
    init: InitRule | None  # then an init function fills it in place (`{ shape = [4], init = "normal" }`)


@dataclass(frozen=True)
class Node:
    """One block to construct (or, with `op`, one tensor function to call): type, arguments, children."""

    type: str | Expr | None  # None for an op node; an Expr such as "${act}" is evaluated when resolved
    kwargs: Mapping[str, Any]  # scalars, tuples, mappings, nested Node, Expr
    path: str  # `chimera -> layers[2]`, for messages
    loc: Location
    layers: tuple[Child, ...] | None = None  # children, in document order
    layer_names: tuple[str | Expr, ...] | None = None  # set when `layers` was a table
    shared: Mapping[str, Node] = field(default_factory=lambda: _EMPTY)
    init: tuple[InitRule, ...] = ()
    key_locs: Mapping[str, Location] = field(default_factory=lambda: _EMPTY, compare=False)
    # a dataflow block (a graph of its children) rather than a chain
    graph: bool = False
    inputs: tuple[str, ...] = DEFAULT_INPUTS
    out: tuple[Ref, ...] | Ref | None = None  # None: the last child
    params: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: _EMPTY)  # name → shape
    buffers: tuple[BufferDecl, ...] = ()  # in declared order: each may take the ones before
    defaults: Mapping[str, Node] = field(default_factory=lambda: _EMPTY)  # optional input → the op computing it
    tie: Mapping[str, Tie] = field(default_factory=lambda: _EMPTY)  # parameter path → the one it is
    # how the parent wires, repeats or leaves out this node
    op: str | Expr | None = None  # an Expr such as "${act}" is evaluated when resolved
    wiring: Wiring | None = None
    when: Any = None  # None (always), a bool, or an Expr
    repeat: Repeat | None = None


@dataclass(frozen=True)
class Group:
    """`{ repeat = N, group = [...] }`: several children repeated together, their copies spliced flat.

    In an array, or under a name with `${...}`, the copies join the parent's children in place
    (d2l's vgg_block: conv, ReLU, conv, ReLU, … as `0`, `1`, `2`, …); under a plain name they
    form one Sequential of that name.
    """

    children: tuple[Child, ...]
    names: tuple[str | Expr, ...] | None  # set when `group` is a table: names (with `${i}`) per copy
    path: str
    loc: Location
    repeat: Repeat | None = None
    when: Any = None


Child = Node | SharedRef | Group


@dataclass(frozen=True)
class Entry:
    """A named declaration from a registry file."""

    name: str
    node: Node
    doc: str  # one line for `zoo list`
    input_shape: tuple[Any, ...] | None  # example input, batch first (dims may be Expr over args)
    params: Mapping[str, Any]  # overridable arguments and their defaults (may be Expr over other args)
    replace: bool  # may redefine a name declared by an earlier source
    loc: Location
    origin: str  # who declared it: a distribution name, or "user" for a user file
    internal: bool = False  # a helper template, hidden from `zoo list`
    key_map: Mapping[str, Any] | None = None  # `weights = {...}`: how foreign checkpoint keys map onto ours
    key_map_loc: Location | None = None  # where `weights` was written
    input_dtype: str | None = None  # the example input's dtype (None: the model's float dtype)
    input_high: Any = None  # integer inputs are drawn from [0, high): a vocabulary size
    require: tuple[tuple[Any, Location], ...] = ()  # `require = ["${n_embd % n_head == 0}"]`: checks, where written
    transformers: Mapping[str, Any] | None = None  # `transformers = {...}`: how it maps to a transformers config
    transformers_loc: Location | None = None  # where `transformers` was written


def parse_file(path: str | Path, origin: str = "user") -> dict[str, Entry]:
    """Read one registry file. Raises RegistryFileError or SpecError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryFileError(f"registry file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RegistryFileError(f"cannot read registry file {path}: {err}") from err
    return parse_text(text, str(path), origin)


def parse_text(text: str, file: str = "<string>", origin: str = "user") -> dict[str, Entry]:
    """Parse registry TOML given as a string; `file` is used in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RegistryFileError(f"{file}: invalid TOML: {err}") from None
    except ValueError as err:  # an integer longer than Python converts (4,300 digits)
        long_number = re.search(r"\d{4300}", text)
        line = text.count("\n", 0, long_number.start()) + 1 if long_number else None
        raise RegistryFileError(f"{Location(file, line)}: a value TOML allows but Python refuses: {err}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        where = Location(file, _Scanner.deepest_line(text))
        raise SpecError(f"{where}: values nested more than {MAX_NESTING} levels deep; zoo reads at most that") from None
    lines = _locate_keys(text)
    _check_nesting(data, file, lines)
    entries = {}
    for name, body in data.items():
        entries[name] = _Parser(file, lines, origin).entry(name, body)
    return entries


def parse_declaration(name: str, body: Mapping[str, Any], file: str = "<declaration>", origin: str = "user") -> Entry:
    """An entry from TOML-shaped data, such as a saved model's resolved declaration (config.json).

    Messages name `file` (no line numbers: the data did not come from TOML text).
    """
    if not isinstance(body, Mapping):
        raise SpecError(f"{file}: {name}: a declaration must be a table, got {_kind(body)}")
    _check_nesting({name: body}, file, {})
    return _Parser(file, {}, origin).entry(name, dict(body))


def parse_value(text: str) -> Any:
    """A `--set k=v` value: TOML syntax when it parses (3, 1e-3, true, [2, 3]), else a string."""
    try:
        return _freeze(tomllib.loads(f"v = {text}")["v"])
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError is a ValueError), too long, too deep
        return text


class _Parser:
    def __init__(self, file: str, lines: dict[tuple[Any, ...], int], origin: str) -> None:
        self.file = file
        self.lines = lines
        self.origin = origin

    def loc(self, keys: tuple[Any, ...]) -> Location:
        # The deepest key recorded; inline values share the line of their key.
        for end in range(len(keys), 0, -1):
            if keys[:end] in self.lines:
                return Location(self.file, self.lines[keys[:end]])
        return Location(self.file)

    def fail(self, keys: tuple[Any, ...], path: str, message: str) -> SpecError:
        return SpecError(f"{self.loc(keys)}: {path}: {message}")

    def entry(self, name: str, body: Any) -> Entry:
        keys: tuple[Any, ...] = (name,)
        if not _NAME.match(name):
            raise self.fail(
                keys,
                repr(name),
                "an entry name must start with a letter or _ and hold only letters, digits, "
                "'_', '-' and '.' (':' qualifies names, '@' and '${' are references, and globs match names)",
            )
        if not isinstance(body, dict):
            raise self.fail(keys, name, f"an entry must be a table ([{name}]), got {_kind(body)}")
        doc = body.get("doc", "")
        if not isinstance(doc, str):
            raise self.fail(keys + ("doc",), name, "`doc` must be a string")
        shape = body.get("input")
        input_dtype, input_high = None, None
        if isinstance(shape, dict):  # { shape = [2, 8], dtype = "int64", high = 50257 }: token ids
            extra = sorted(set(shape) - {"shape", "dtype", "high"})
            input_dtype, input_high = shape.get("dtype"), shape.get("high")
            if extra or input_dtype not in INPUT_DTYPES:
                raise self.fail(
                    keys + ("input",),
                    name,
                    '`input` is a shape such as [2, 20], or { shape = [2, 8], dtype = "int64", high = 50257 } '
                    f"with dtype one of {', '.join(INPUT_DTYPES)}; got {shown(shape)}",
                )
            input_high = self.argument(input_high, keys + ("input", "high"), f"{name} -> input.high")
            shape = shape.get("shape")
        if shape is not None:
            shape = self.argument(shape, keys + ("input",), f"{name} -> input")
            if not (
                isinstance(shape, tuple)
                and shape
                and all(isinstance(d, Expr) or (type(d) is int and d > 0) for d in shape)
            ):
                raise self.fail(keys + ("input",), name, f"`input` must be a shape such as [2, 20], got {shown(shape)}")
        params = body.get("args", {})
        if not isinstance(params, dict):
            raise self.fail(keys + ("args",), name, "`args` must be a table of argument = default")
        for flag in ("replace", "internal"):
            if not isinstance(body.get(flag, False), bool):
                raise self.fail(keys + (flag,), name, f"`{flag}` must be true or false")
        key_map = body.get("weights")
        if key_map is not None and not isinstance(key_map, dict):
            raise self.fail(
                keys + ("weights",),
                name,
                '`weights` must be a table such as { strip_prefix = "module.", rename = [["^old", "new"]] }',
            )
        hf = body.get("transformers")
        if hf is not None and not isinstance(hf, dict):
            raise self.fail(
                keys + ("transformers",),
                name,
                '`transformers` must be a table such as { model_type = "gpt2", architectures = ["GPT2LMHeadModel"] }',
            )
        node_body = {k: v for k, v in body.items() if k not in ENTRY_ONLY_KEYS}
        require = self.require(body.get("require", ()), keys + ("require",), name)
        return Entry(
            name=name,
            node=self.node(node_body, keys, name),
            doc=doc.strip().splitlines()[0] if doc.strip() else "",
            input_shape=shape,
            params=MappingProxyType(
                {k: self.argument(v, keys + ("args", k), f"{name} -> args.{k}") for k, v in params.items()}
            ),
            replace=body.get("replace", False),
            loc=self.loc(keys),
            origin=self.origin,
            internal=body.get("internal", False),
            key_map=MappingProxyType(_freeze(key_map)) if key_map is not None else None,
            key_map_loc=self.loc(keys + ("weights",)) if key_map is not None else None,
            input_dtype=input_dtype,
            input_high=input_high,
            require=require,
            transformers=MappingProxyType(_freeze(hf)) if hf is not None else None,
            transformers_loc=self.loc(keys + ("transformers",)) if hf is not None else None,
        )

    def require(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[tuple[Any, Location], ...]:
        """`require = ["${n_embd % n_head == 0}", ...]`: conditions on the arguments, each with its line."""
        if not isinstance(value, (list, tuple)):
            value = [value]
        checks = []
        for index, check in enumerate(value):
            here = keys + (index,)
            parsed = self.argument(check, here, f"{path} -> require")
            if not (isinstance(parsed, bool) or (isinstance(parsed, Expr) and parsed.whole)):
                raise self.fail(
                    here,
                    path,
                    "`require` lists conditions on the arguments, each one expression such as "
                    f'"${{n_embd % n_head == 0}}"; got {shown(check)}',
                )
            checks.append((parsed, self.loc(here)))
        return tuple(checks)

    def child(self, value: Any, keys: tuple[Any, ...], path: str) -> Child:
        """A block where one is expected: "Name", "@shared", or a table with `type` (or `op`, or `layers`)."""
        if isinstance(value, str):
            if value.startswith("@"):
                return SharedRef(value[1:], path, self.loc(keys))
            if has_template(value):
                raise self.fail(
                    keys,
                    path,
                    f"'{value}' is an expression where a block is expected; expressions give values to "
                    'keyword arguments, e.g. { type = "Linear", out_features = "${hidden}" }',
                )
            return Node(type=value, kwargs=_EMPTY, path=path, loc=self.loc(keys))
        if isinstance(value, dict):
            if isinstance(value.get("use"), str) and value["use"].startswith(
                "@"
            ):  # a shared block, repeated or optional
                extra = sorted(set(value) - {"use", "repeat", "when"})
                if extra:
                    raise self.fail(
                        keys, path, f"a `use` of a shared block takes only `repeat` and `when`, not {extra}"
                    )
                ref = SharedRef(value["use"][1:], path, self.loc(keys))
                return SharedRef(
                    ref.name, path, ref.loc, self.repeat(value.get("repeat"), keys, path), self.when(value, keys, path)
                )
            if "group" in value:
                return self.group(value, keys, path)
            return self.node(value, keys, path, as_child=True)
        raise self.fail(keys, path, f"expected a block (a name or a table with `type`), got {_kind(value)}")

    def group(self, value: dict[str, Any], keys: tuple[Any, ...], path: str) -> Group:
        """`{ repeat = 2, group = [conv, "ReLU"] }`: children repeated (or left out) together."""
        extra = sorted(set(value) - {"group", "repeat", "when"})
        if extra:
            raise self.fail(keys, path, f"a `group` takes only `repeat` and `when` beside it, not {extra}")
        body = value["group"]
        if not isinstance(body, (list, dict)) or not body:
            raise self.fail(
                keys + ("group",),
                path,
                f'`group` is an array or a table of children, e.g. [conv, "ReLU"]; got {shown(body)}',
            )
        children, names = self.layers(body, keys + ("group",), f"{path} -> group")
        assert children is not None
        return Group(
            children,
            names,
            path,
            self.loc(keys),
            self.repeat(value.get("repeat"), keys, path),
            self.when(value, keys, path),
        )

    def node(self, body: dict[str, Any], keys: tuple[Any, ...], path: str, as_child: bool = False) -> Node:
        for key in CHILD_KEYS:
            if key in body and not as_child:
                raise self.fail(
                    keys + (key,),
                    path,
                    f"`{key}` says how a parent's `layers` use a child; it means nothing here. "
                    f"To pass a constructor argument named '{key}', write kwargs = {{ {key} = ... }}",
                )
        op = body.get("op")
        if op is not None:
            return self.op_node(body, keys, path)
        layers, layer_names = self.layers(body.get("layers"), keys + ("layers",), path)
        graph = any(k in body for k in DATAFLOW_KEYS) or any(_wired(c) for c in layers or ())
        if graph and "type" in body:
            key = next((k for k in DATAFLOW_KEYS if k in body), "layers")
            raise self.fail(
                keys + (key,),
                path,
                f"a dataflow block (one with `in`, `op`, {', '.join(f'`{k}`' for k in DATAFLOW_KEYS)}) "
                f"is declared by its `layers` alone; remove type = {shown(body['type'])}, or to pass a constructor "
                f"argument named '{key}', write kwargs = {{ {key} = ... }}",
            )
        if graph:
            self.graph_keys(body, keys, path, as_child)
        type_ = body.get("type", "Sequential" if layers is not None else None)
        if isinstance(type_, str) and has_template(type_):
            type_ = parse_expr(type_, f"{self.loc(keys + ('type',))}: {path} -> type")
        elif not isinstance(type_, str) or not type_:
            found = "no `type`" if type_ is None else f"type = {shown(type_)}"
            typo = nearest("type", [k for k in body if k not in LANGUAGE_KEYS])
            hint = f" Is '{typo}' a misspelt `type`?" if typo else ""
            raise self.fail(keys, path, f'{found}: say what to build, e.g. type = "Linear".{hint}')
        shared_body = body.get("shared", {})
        if not isinstance(shared_body, dict):
            raise self.fail(keys + ("shared",), path, "`shared` must be a table of name = block")
        shared = {}
        for name, value in shared_body.items():
            child = self.child(value, keys + ("shared", name), f"{path} -> shared.{name}")
            if not isinstance(child, Node) or child.op is not None:
                raise self.fail(keys + ("shared", name), path, "a shared block must be a block, not a reference or op")
            shared[name] = child
        kwargs, key_locs = self.kwargs(body, keys, path)
        inputs, defaults = self.inputs(body.get("inputs"), keys + ("inputs",), path)
        return Node(
            type=type_,
            kwargs=MappingProxyType(kwargs),
            path=path,
            loc=self.loc(keys),
            layers=layers,
            layer_names=layer_names,
            shared=MappingProxyType(shared),
            init=self.init_rules(body.get("init", {}), keys + ("init",), path),
            key_locs=MappingProxyType(key_locs),
            graph=graph,
            inputs=inputs,
            defaults=MappingProxyType(defaults),
            out=self.outs(body["out"], keys + ("out",), path) if "out" in body else None,
            params=self.params(body.get("params", {}), keys + ("params",), path),
            buffers=self.buffers(body.get("buffers", {}), keys + ("buffers",), path),
            tie=self.tie(body.get("tie", {}), keys + ("tie",), path),
            wiring=self.wiring(body, keys, path),
            when=self.when(body, keys, path),
            repeat=self.repeat(body.get("repeat"), keys, path),
        )

    def graph_keys(self, body: dict[str, Any], keys: tuple[Any, ...], path: str, as_child: bool) -> None:
        """A dataflow block has no constructor: a key it does not take is a mistake, not an argument."""
        takes = (*GRAPH_NODE_KEYS, *(CHILD_KEYS if as_child else ()))
        for key in body:
            if key not in takes and key not in ENTRY_ONLY_KEYS:  # entry keys are checked (and taken) by entry()
                hint = did_you_mean(key, takes)
                what = (
                    "`kwargs` passes constructor arguments, and a dataflow block has no constructor"
                    if key == "kwargs"
                    else f"`{key}` is no key of a dataflow block.{hint}"
                )
                raise self.fail(keys + (key,), path, f"{what} A dataflow block takes: {', '.join(takes)}.")

    def op_node(self, body: dict[str, Any], keys: tuple[Any, ...], path: str) -> Node:
        op = body["op"]
        if isinstance(op, str) and has_template(op):  # chosen by the entry's arguments, as `type` may be
            op = parse_expr(op, f"{self.loc(keys + ('op',))}: {path} -> op")
        elif not isinstance(op, str) or not _CHILD_NAME.match(op):
            raise self.fail(
                keys + ("op",), path, f'`op` names a tensor function such as "add" or "cat", got {shown(op)}'
            )
        for key in ("type", "layers", "shared", "init", *DATAFLOW_KEYS):
            if key in body:
                raise self.fail(
                    keys + (key,),
                    path,
                    f"an op node (op = {shown(op)}) has no `{key}`: ops are functions without parameters or children. "
                    f"To pass the op an argument named '{key}', write kwargs = {{ {key} = ... }}",
                )
        kwargs, key_locs = self.kwargs(body, keys, path)
        return Node(
            type=None,
            kwargs=MappingProxyType(kwargs),
            path=path,
            loc=self.loc(keys),
            key_locs=MappingProxyType(key_locs),
            op=op,
            wiring=self.wiring(body, keys, path) or Wiring(None),
            when=self.when(body, keys, path),
            repeat=self.repeat(body.get("repeat"), keys, path),
        )

    def kwargs(
        self, body: dict[str, Any], keys: tuple[Any, ...], path: str
    ) -> tuple[dict[str, Any], dict[str, Location]]:
        kwargs: dict[str, Any] = {}
        key_locs: dict[str, Location] = {}
        for key, value in body.items():
            if key in ENTRY_ONLY_KEYS:
                raise self.fail(
                    keys + (key,),
                    path,
                    f"`{key}` is allowed only on a top-level entry. "
                    f"To pass a constructor argument named '{key}', write kwargs = {{ {key} = ... }}",
                )
            if key not in LANGUAGE_KEYS:
                kwargs[key] = self.argument(value, keys + (key,), f"{path} -> {key}")
                key_locs[key] = self.loc(keys + (key,))
        escaped = body.get("kwargs", {})
        if not isinstance(escaped, dict):
            raise self.fail(keys + ("kwargs",), path, "`kwargs` must be a table of constructor arguments")
        for key, value in escaped.items():
            if key in kwargs:
                raise self.fail(
                    keys + ("kwargs", key), path, f"'{key}' is given twice: once directly, once in `kwargs`"
                )
            kwargs[key] = self.argument(value, keys + ("kwargs", key), f"{path} -> kwargs.{key}")
            key_locs[key] = self.loc(keys + ("kwargs", key))
        return kwargs, key_locs

    def layers(
        self, value: Any, keys: tuple[Any, ...], path: str
    ) -> tuple[tuple[Child, ...] | None, tuple[str | Expr, ...] | None]:
        if value is None:
            return None, None
        if isinstance(value, list):
            return tuple(self.child(v, keys + (i,), f"{path} -> layers[{i}]") for i, v in enumerate(value)), None
        if isinstance(value, dict):
            names: list[str | Expr] = []
            for name in value:
                here = f"{path} -> layers.{name}"
                if has_template(name):
                    names.append(parse_expr(name, f"{self.loc(keys + (name,))}: {here}"))
                elif _CHILD_NAME.match(name):
                    names.append(name)
                else:
                    raise self.fail(
                        keys + (name,),
                        path,
                        f"child name '{name}' must hold only letters, digits and '_' (it is an attribute and a "
                        "state-dict key part; nest blocks to get dotted keys)",
                    )
            children = tuple(self.child(v, keys + (k,), f"{path} -> layers.{k}") for k, v in value.items())
            return children, tuple(names)
        raise self.fail(keys, path, f"`layers` must be an array or a table of blocks, got {_kind(value)}")

    def argument(self, value: Any, keys: tuple[Any, ...], path: str) -> Any:
        if isinstance(value, str) and has_template(value):
            return parse_expr(value, f"{self.loc(keys)}: {path}")
        if isinstance(value, dict):
            if "type" in value:  # a nested block passed as an argument
                return self.node(value, keys, path)
            return MappingProxyType({k: self.argument(v, keys + (k,), path) for k, v in value.items()})
        if isinstance(value, list):
            return tuple(self.argument(v, keys + (i,), path) for i, v in enumerate(value))
        return value

    def inputs(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[tuple[str, ...], dict[str, Node]]:
        """`inputs = ["input_ids", { name = "attention_mask", default = {...} }]`: names, and defaults by name."""
        if value is None:
            return DEFAULT_INPUTS, {}
        items = [value] if isinstance(value, str) else value
        wrong = f'`inputs` names the block\'s forward arguments, e.g. ["x", "mask"]; got {shown(value)}'
        if not isinstance(items, list) or not items:
            raise self.fail(keys, path, wrong)
        names: list[str] = []
        defaults: dict[str, Node] = {}
        for index, item in enumerate(items):
            here = keys + (index,)
            if isinstance(item, dict):
                extra = sorted(set(item) - {"name", "default"})
                name = item.get("name")
                if extra or not isinstance(name, str) or "default" not in item:
                    raise self.fail(
                        here,
                        path,
                        'an optional input is { name = "attention_mask", default = ... }, its default a value '
                        f'("position_ids") or an op ({{ op = "ones_like", in = "input_ids" }}); got {shown(item)}',
                    )
                defaults[name] = self.default(item["default"], here + ("default",), f"{path} -> inputs.{name}")
                item = name
            elif defaults:
                raise self.fail(
                    here, path, f"input '{item}' comes after an optional one; optional inputs come last, as in Python"
                )
            if not isinstance(item, str) or not _CHILD_NAME.match(item):
                raise self.fail(here, path, wrong)
            names.append(item)
        if len(set(names)) != len(names):
            raise self.fail(keys, path, f"`inputs` names an argument twice: {names}")
        return tuple(names), defaults

    def default(self, value: Any, keys: tuple[Any, ...], path: str) -> Node:
        if isinstance(value, dict) and "op" in value:
            return self.op_node(value, keys, path)
        if isinstance(value, str) and not has_template(value):  # a value: its identity, at this line
            return Node(
                None,
                _EMPTY,
                path,
                self.loc(keys),
                op="identity",
                wiring=Wiring((self.ref(value, keys, path, "default"),)),
            )
        raise self.fail(
            keys,
            path,
            'a default is a value of the block ("position_ids") or an op computing it '
            f'({{ op = "ones_like", in = "input_ids" }}); got {shown(value)}',
        )

    def outs(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[Ref, ...] | Ref:
        refs = self.refs(value, keys, path, "out")
        if any(isinstance(r, Const) for r in (refs if isinstance(refs, tuple) else (refs,))):
            raise self.fail(keys, path, f"`out` names values of the block, not numbers; got {shown(value)}")
        return refs  # type: ignore[return-value]  # no Const, just checked

    def refs(self, value: Any, keys: tuple[Any, ...], path: str, what: str) -> tuple[Value, ...] | Value:
        if isinstance(value, list) and value:
            return tuple(self.value_ref(v, keys + (i,), path, what) for i, v in enumerate(value))
        if not isinstance(value, list):
            return self.value_ref(value, keys, path, what)
        raise self.fail(
            keys, path, f'`{what}` names values of the block, e.g. "conv1" or ["bn2", "x"]; got {shown(value)}'
        )

    def value_ref(self, value: Any, keys: tuple[Any, ...], path: str, what: str) -> Value:
        """A name ("conv1", "qkv[0]", "x[:, 0]"), or a number written in place (1.0, "${eps}")."""
        if isinstance(value, (int, float)) or (isinstance(value, str) and has_template(value)):
            return Const(self.argument(value, keys, f"{path} -> {what}"))
        return self.ref(value, keys, path, what)

    def ref(self, value: Any, keys: tuple[Any, ...], path: str, what: str) -> Ref:
        match = _REF.match(value) if isinstance(value, str) else None
        if match is not None:
            return Ref(match.group(1), int(match.group(2)) if match.group(2) is not None else None)
        indexed = _INDEXED.match(value) if isinstance(value, str) else None
        index = _parse_index(indexed.group(2)) if indexed is not None else None
        if indexed is None or index is None:
            hint = (
                " ('@name' shares a block's weights; a value is named without '@')"
                if str(value).startswith("@")
                else ""
            )
            if indexed is not None:
                hint = (
                    " (an index holds ints, slices such as 1:3 or :, None and ...; "
                    'for an index from a tensor, use op = "index_select" or "gather")'
                )
            raise self.fail(
                keys,
                path,
                f'`{what}` refers to an input or an earlier child by name ("x", "conv1", "qkv[0]", "x[:, 0]"); '
                f"got {shown(value)}{hint}",
            )
        huge = [n for n in index if type(n) is int and not -(2**63) <= n < 2**63]  # slices clamp, as Python's do
        if huge:  # torch's own words for it name no place: "Overflow when unpacking long long"
            raise self.fail(
                keys, path, f"`{what}` indexes with {huge[0]}, which is no tensor index: indices fit in 64 bits"
            )
        return Ref(indexed.group(1), index)

    def wiring(self, body: dict[str, Any], keys: tuple[Any, ...], path: str) -> Wiring | None:
        if "in" not in body and "call" not in body and "else" not in body:
            return None
        args: tuple[Value, ...] | None = None
        kwargs: dict[str, Value] = {}
        value = body.get("in")
        if isinstance(value, dict):
            kwargs = {k: self.value_ref(v, keys + ("in", k), path, "in") for k, v in value.items()}
            args = ()
        elif value is not None:
            refs = self.refs(value, keys + ("in",), path, "in")
            args = refs if isinstance(refs, tuple) else (refs,)
        call = body.get("call", {})
        if not isinstance(call, dict):
            raise self.fail(keys + ("call",), path, "`call` must be a table of keyword arguments given at call time")
        frozen = {k: self.argument(v, keys + ("call", k), f"{path} -> call.{k}") for k, v in call.items()}
        otherwise = None
        if "else" in body:
            if "when" not in body:
                raise self.fail(
                    keys + ("else",), path, "`else` names what stands in for a child that `when` leaves out; add `when`"
                )
            otherwise = self.ref(body["else"], keys + ("else",), path, "else")
        return Wiring(args, MappingProxyType(kwargs), MappingProxyType(frozen), otherwise)

    def when(self, body: dict[str, Any], keys: tuple[Any, ...], path: str) -> Any:
        value = body.get("when")
        if value is None:
            return None
        value = self.argument(value, keys + ("when",), f"{path} -> when")
        if not isinstance(value, (bool, Expr)):
            raise self.fail(
                keys + ("when",),
                path,
                f'`when` must be true, false or an expression such as "${{stride != 1}}"; got {shown(value)}',
            )
        return value

    def repeat(self, value: Any, keys: tuple[Any, ...], path: str) -> Repeat | None:
        if value is None:
            return None
        here = keys + ("repeat",)
        index = "i"
        if isinstance(value, dict):
            extra = sorted(set(value) - {"n", "index"})
            index = value.get("index", "i")
            if extra or "n" not in value or not isinstance(index, str) or not _CHILD_NAME.match(index):
                raise self.fail(here, path, f'`repeat` is a count, or {{ n = 3, index = "j" }}; got {shown(value)}')
            value = value["n"]
        count = self.argument(value, here, f"{path} -> repeat")
        if not (isinstance(count, Expr) or (type(count) is int and count >= 0)):
            raise self.fail(here, path, f"`repeat` must be a count (0 or more) or an expression; got {shown(count)}")
        return Repeat(count, index)

    def params(self, value: Any, keys: tuple[Any, ...], path: str) -> Mapping[str, tuple[Any, ...]]:
        if not isinstance(value, dict):
            raise self.fail(keys, path, "`params` must be a table of name = shape, e.g. { weight = [768, 2304] }")
        shapes = {}
        for name, shape in value.items():
            here = keys + (name,)
            if not _CHILD_NAME.match(name):
                raise self.fail(here, path, f"parameter name '{name}' must hold only letters, digits and '_'")
            dims = self.argument(shape, here, f"{path} -> params.{name}")
            if not isinstance(dims, tuple) or not all(isinstance(d, Expr) or (type(d) is int and d >= 0) for d in dims):
                raise self.fail(
                    here, path, f"a parameter's shape is an array of sizes such as [768, 2304]; got {shown(shape)}"
                )
            shapes[name] = dims
        return MappingProxyType(shapes)

    def tie(self, value: Any, keys: tuple[Any, ...], path: str) -> Mapping[str, Tie]:
        wrong = (
            '`tie` must be a table of "parameter" = "the parameter it is", e.g. { "lm_head.weight" = "wte.weight" }, '
            'or = { to = "wte.weight", when = "${tie_word_embeddings}" } to tie only when true'
        )
        if not isinstance(value, dict):
            raise self.fail(keys, path, wrong)
        ties = {}
        for alias, target in value.items():
            here = keys + (alias,)
            if isinstance(target, str):
                ties[alias] = Tie(target)
            elif isinstance(target, dict) and isinstance(target.get("to"), str) and set(target) <= {"to", "when"}:
                ties[alias] = Tie(target["to"], self.when(target, here, f"{path} -> tie.{alias}"))
            else:
                raise self.fail(here, path, wrong)
        return MappingProxyType(ties)

    def buffers(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[BufferDecl, ...]:
        """`buffers = { inv_freq = { op = "pow", in = [...], persistent = false }, mask = "${[1, 0]}" }`."""
        if not isinstance(value, dict):
            raise self.fail(
                keys,
                path,
                '`buffers` must be a table of name = value, e.g. { position_ids = { op = "arange", end = 512 } }',
            )
        found = []
        for name, body in value.items():
            here = keys + (name,)
            where = f"{path} -> buffers.{name}"
            if not _CHILD_NAME.match(name):
                raise self.fail(here, path, f"buffer name '{name}' must hold only letters, digits and '_'")
            if not isinstance(body, dict):  # "${[1, 2]}", 3.0, [1, 2]: a constant tensor
                body = {"op": "tensor", "data": body}
            body = dict(body)
            persistent = body.pop("persistent", True)
            if not isinstance(persistent, bool):
                raise self.fail(here + ("persistent",), path, "`persistent` must be true or false")
            rule = body.pop("init", None)
            if "op" not in body:
                if "shape" not in body:
                    raise self.fail(
                        here,
                        path,
                        'a buffer is a value ("${[1, 0]}"), an op ({ op = "arange", end = 512 }) or a shape with an '
                        f'init function ({{ shape = [4], init = "zeros" }}); got {shown(value[name])}',
                    )
                body = {"op": "zeros", **body}
            init = None
            if rule is not None:
                (init,) = self.init_rules({name: rule}, keys, where)
            if any(k in body for k in ("when", "repeat", "group", "else")):
                raise self.fail(
                    here, path, "a buffer is computed once, at build: it takes no `when`, `repeat` or `else`"
                )
            found.append(BufferDecl(name, self.op_node(body, here, where), persistent, init))
        return tuple(found)

    def init_rules(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[InitRule, ...]:
        if not isinstance(value, dict):
            raise self.fail(
                keys,
                path,
                '`init` is the language\'s key for init rules: a table of "glob" = "fn" or { fn = "...", ... }. '
                f"To pass a constructor argument named 'init', write kwargs = {{ init = {shown(value)} }}",
            )
        rules = []
        for pattern, rule in value.items():
            here = keys + (pattern,)
            on: Any = ()
            when = None
            if isinstance(rule, str):
                fn, kwargs = rule, {}
            elif isinstance(rule, dict) and isinstance(rule.get("fn"), str):
                fn = rule["fn"]
                on = rule.get("on", ())
                on = (on,) if isinstance(on, str) else on
                if not isinstance(on, (list, tuple)) or not all(isinstance(t, str) for t in on):
                    raise self.fail(
                        here, path, f'`on` names block types, e.g. on = "Conv2d" or on = ["Linear"]; got {shown(on)}'
                    )
                when = self.when(rule, here, f"{path} -> init.{pattern}")
                kwargs = {
                    k: self.argument(v, here + (k,), f"{path} -> init.{pattern}.{k}")
                    for k, v in rule.items()
                    if k not in ("fn", "on", "when")
                }
            else:
                raise self.fail(
                    here, path, f'init rule for "{pattern}" needs `fn`, e.g. {{ fn = "normal", std = 0.01 }}'
                )
            rules.append(
                InitRule(
                    pattern, fn, MappingProxyType(kwargs), f"{path} -> init.{pattern}", self.loc(here), tuple(on), when
                )
            )
        return tuple(rules)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _wired(child: Child) -> bool:
    """Whether a child says what it takes (or is an op): its parent is then a dataflow graph."""
    if isinstance(child, Group):
        return any(_wired(c) for c in child.children)
    return isinstance(child, Node) and (child.op is not None or child.wiring is not None)


def _bound(value: int | None) -> str:
    return "" if value is None else str(value)


def _part_text(part: IndexPart) -> str:
    return "..." if part is Ellipsis else str(part)


def _parse_index(text: str) -> tuple[IndexPart, ...] | None:
    """`[:, 0]` → (Span(None, None, None), 0); None when it is not a plain index (ints, slices, None, ...)."""
    try:
        tree = ast.parse(f"_{text}", mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.Subscript) or not isinstance(tree.value, ast.Name):  # one index, not x[0][1]
        return None
    parts = tree.slice.elts if isinstance(tree.slice, ast.Tuple) else [tree.slice]

    def number(node: ast.expr | None) -> tuple[bool, int | None]:
        if node is None:
            return True, None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            ok, value = number(node.operand)
            return ok and value is not None, -value if value is not None else None
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return True, node.value
        return False, None

    index: list[IndexPart] = []
    for part in parts:
        if isinstance(part, ast.Slice):
            bounds = [number(part.lower), number(part.upper), number(part.step)]
            if not all(ok for ok, _ in bounds):
                return None
            index.append(Span(bounds[0][1], bounds[1][1], bounds[2][1]))
        elif isinstance(part, ast.Constant) and (part.value is None or part.value is Ellipsis):
            index.append(part.value)
        else:
            ok, value = number(part)
            if not ok or value is None:
                return None
            index.append(value)
    return tuple(index)


# --- key → line map ----------------------------------------------------------------------
# tomllib keeps no positions, so a small scanner walks the (already valid) text once and
# records the line of every key, array element and table header.


def _check_nesting(data: Mapping[str, Any], file: str, lines: Mapping[tuple[Any, ...], int]) -> None:
    """Refuse data nested deeper than MAX_NESTING before anything recurses over it, naming where."""
    todo: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while todo:  # a loop, not recursion: the depth is what is being checked
        value, keys = todo.pop()
        if len(keys) > MAX_NESTING:
            # A dotted table header records only its full name: take the first line that names this path.
            line = min((n for k, n in lines.items() if k[: len(keys)] == keys), default=None)
            path = ".".join(str(k) for k in keys[:3])
            raise SpecError(
                f"{Location(file, line)}: {path}…: nested more than {MAX_NESTING} levels deep; "
                "zoo reads at most that (a real model needs a few dozen at most)"
            )
        if isinstance(value, Mapping):
            todo.extend((v, (*keys, k)) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            todo.extend((v, (*keys, i)) for i, v in enumerate(value))


def _locate_keys(text: str) -> dict[tuple[Any, ...], int]:
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Lost, IndexError, ValueError):  # positions are a courtesy, not a contract: keep what was found
        pass
    return scanner.lines


class _Lost(Exception):
    """The scanner cannot follow the text (too deep, or not the TOML it expects); it stops there."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[tuple[Any, ...], int] = {}
        self.array_tables: dict[tuple[Any, ...], int] = {}
        self.stopped_line: int | None = None  # where the scanner gave up, when it did

    @classmethod
    def deepest_line(cls, text: str) -> int | None:
        """The line where values first nest deeper than MAX_NESTING (the scanner stops there)."""
        scanner = cls(text)
        try:
            scanner.document()
        except (_Lost, IndexError, ValueError):
            pass
        return scanner.stopped_line

    def line(self) -> int:
        return bisect.bisect_left(self.newlines, self.i) + 1

    def peek(self, n: int = 1) -> str:
        return self.t[self.i : self.i + n]

    def at(self, chars: str) -> bool:
        """Whether the next character is one of `chars` (never at the end of the text)."""
        return self.i < len(self.t) and self.t[self.i] in chars

    def skip(self, newlines: bool) -> None:
        while self.i < len(self.t):
            c = self.t[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                while self.i < len(self.t) and self.t[self.i] != "\n":
                    self.i += 1
            else:
                return

    def document(self) -> None:
        table: tuple[Any, ...] = ()
        while True:
            self.skip(newlines=True)
            if self.i >= len(self.t):
                return
            start = self.i
            if self.at("["):
                array = self.peek(2) == "[["
                self.i += 2 if array else 1
                line = self.line()
                table = self.key()
                if array:
                    index = self.array_tables.get(table, -1) + 1
                    self.array_tables[table] = index
                    table = table + (index,)
                self.lines.setdefault(table, line)
                self.i = self.t.index("\n", self.i) if "\n" in self.t[self.i :] else len(self.t)
            else:
                self.pair(table, depth=len(table))
            self.progressed(start)

    def progressed(self, start: int) -> None:
        if self.i <= start:  # valid TOML always moves on; anything else would loop forever
            raise _Lost(self.line())

    def key(self) -> tuple[Any, ...]:
        parts = []
        while True:
            self.skip(newlines=False)
            if self.at("\"'"):
                parts.append(self.string())
            else:
                start = self.i
                while self.i < len(self.t) and (self.t[self.i].isalnum() or self.t[self.i] in "_-"):
                    self.i += 1
                parts.append(self.t[start : self.i])
            self.skip(newlines=False)
            if not self.at("."):
                return tuple(parts)
            self.i += 1

    def pair(self, table: tuple[Any, ...], depth: int) -> None:
        line = self.line()
        keys = table + self.key()
        self.lines.setdefault(keys, line)
        self.skip(newlines=False)
        if not self.at("="):
            raise _Lost(line)
        self.i += 1
        self.skip(newlines=False)
        self.value(keys, depth + 1)

    def value(self, keys: tuple[Any, ...], depth: int) -> None:
        if depth > MAX_NESTING and self.at("[{"):
            self.stopped_line = self.line()
            raise _Lost(self.stopped_line)
        if self.at("\"'"):
            self.string()
        elif self.at("["):
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.at("]"):
                    self.i += 1
                    return
                start = self.i
                self.lines.setdefault(keys + (index,), self.line())
                self.value(keys + (index,), depth + 1)
                self.skip(newlines=True)
                if self.at(","):
                    self.i += 1
                self.progressed(start)
                index += 1
        elif self.at("{"):
            self.i += 1
            while True:
                self.skip(newlines=True)
                if self.at("}"):
                    self.i += 1
                    return
                start = self.i
                self.pair(keys, depth)
                self.skip(newlines=True)
                if self.at(","):
                    self.i += 1
                self.progressed(start)
        else:
            while self.i < len(self.t) and self.t[self.i] not in ",]}\n#":
                self.i += 1

    def string(self) -> str:
        quote = self.t[self.i]
        escapes = quote == '"'  # basic strings have backslash escapes; literal ('') ones have none
        if self.peek(3) == quote * 3:
            j = self.i + 3
            while self.t[j : j + 3] != quote * 3:
                if j >= len(self.t):
                    raise _Lost(self.line())
                j += 2 if (escapes and self.t[j] == "\\") else 1
            end = j
            while self.t[end + 3 : end + 4] == quote and end - j < 2:  # """a""""  ends on the last three quotes
                end += 1
            raw, self.i = self.t[self.i + 3 : end], end + 3
            return raw
        j = self.i + 1
        while self.t[j] != quote:
            if self.t[j] == "\n":
                raise _Lost(self.line())
            j += 2 if (escapes and self.t[j] == "\\") else 1
        raw, self.i = self.t[self.i + 1 : j], j + 1
        return tomllib.loads(f"k = {quote}{raw}{quote}")["k"] if escapes else raw


# --- writing -----------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


_WIDTH = 100  # a value longer than this is written on several lines
_ORDERED = ("layers", "init")  # tables whose order is meaning: dataflow order, rule order


def dump_entry(name: str, declaration: Mapping[str, Any]) -> str:
    """A declaration as readable registry TOML: short values inline, long tables as [sub.tables].

    Parsing the text gives the same declaration back.
    """
    lines: list[str] = []
    _dump_table(lines, (name,), declaration)
    return "\n".join(lines) + "\n"


def _dump_table(lines: list[str], path: tuple[str, ...], body: Mapping[str, Any], array: bool = False) -> None:
    def too_long(key: str, value: Any) -> bool:
        return len(key) + len(_toml(value)) > _WIDTH

    tables = [k for k, v in body.items() if isinstance(v, Mapping) and v and too_long(k, v)]
    arrays = [
        k
        for k, v in body.items()
        if isinstance(v, (list, tuple))
        and v
        and all(isinstance(x, (Mapping, str)) for x in v)
        and too_long(k, v)
        and any(isinstance(x, Mapping) for x in v)
    ]
    ordered = path[-1] in _ORDERED and len(path) > 1 and not array
    if tables and ordered and all(isinstance(v, (Mapping, str)) for v in body.values()):
        tables = list(body)  # all as sub-tables, or TOML would put the inline ones first
    if lines:
        lines.append("")
    header = ".".join(_key(p) for p in path)
    lines.append(f"[[{header}]]" if array else f"[{header}]")
    for key, value in body.items():
        if key in tables or key in arrays:
            continue
        text = f"{_key(key)} = {_toml(value)}"
        if len(text) > _WIDTH and isinstance(value, (list, tuple)) and value:
            text = f"{_key(key)} = [\n" + "".join(f"  {_toml(v)},\n" for v in value) + "]"
        lines.append(text)
    for key in tables:
        _dump_table(lines, (*path, key), _as_table(body[key]))
    for key in arrays:
        for item in body[key]:
            _dump_table(lines, (*path, key), _as_table(item), array=True)


def _as_table(value: Any) -> Mapping[str, Any]:
    """A bare block name or "@shared" as a table of its own, where a table is needed."""
    if isinstance(value, str):
        return {"use": value} if value.startswith("@") else {"type": value}
    assert isinstance(value, Mapping)
    return value


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise SpecError(f"cannot write {type(value).__name__} {shown(value)} as TOML")
