"""Parse registry TOML into frozen declarations, with a file:line for every key.

No torch here: this stage only reads text. Everything downstream takes `Entry` and `Node`
objects, never raw dicts.

The language, one top-level table per entry:

    [name]
    type = "Linear"            # a registered block, or another entry (default: Sequential with layers)
    doc = "one line"           # shown by `zoo list`
    input = [2, 20]            # an example input shape, batch first
    args = { hidden = 256 }    # overridable arguments with defaults, used as "${hidden}"
    layers = [...]             # children: an array (named 0, 1, …) or a table (named children)
    shared = { tied = {...} }  # one instance, used as "@tied" at several places below
    init = { "*.weight" = { fn = "normal", std = 0.01 } }   # glob over parameter names → init
    replace = true             # explicitly redefine a name declared elsewhere
    in_features = 20           # any other key is a keyword argument of `type`
"""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from zoo.errors import RegistryFileError, SpecError, nearest

ENTRY_KEYS = ("type", "doc", "input", "args", "layers", "shared", "init", "replace")
NODE_KEYS = ("type", "layers", "shared", "init")  # reserved keys allowed on a nested block
_ARG_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")  # what a bare string in `layers` and `DIST:name` can say
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Location:
    """Where a declaration or key was written."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class ArgRef:
    """`"${name}"`: the value of an overridable argument of the enclosing entry."""

    name: str


@dataclass(frozen=True)
class SharedRef:
    """`"@name"`: the one instance declared under `shared` in an enclosing block."""

    name: str
    path: str  # entry path, for messages
    loc: Location


@dataclass(frozen=True)
class InitRule:
    """Parameters whose names match `pattern` are initialised by `fn(tensor, **kwargs)`."""

    pattern: str
    fn: str
    kwargs: Mapping[str, Any]
    path: str
    loc: Location


@dataclass(frozen=True)
class Node:
    """One block to construct: a type, its keyword arguments and its children."""

    type: str
    kwargs: Mapping[str, Any]  # scalars, tuples, nested Node, ArgRef, or plain mappings
    path: str  # `chimera -> layers[2]`, for messages
    loc: Location
    layers: tuple[Child, ...] | None = None  # positional children
    layer_names: tuple[str, ...] | None = None  # set when `layers` was a table
    shared: Mapping[str, Node] = field(default_factory=lambda: _EMPTY)
    init: tuple[InitRule, ...] = ()
    key_locs: Mapping[str, Location] = field(default_factory=lambda: _EMPTY, compare=False)


Child = Node | SharedRef


@dataclass(frozen=True)
class Entry:
    """A named declaration from a registry file."""

    name: str
    node: Node
    doc: str  # one line for `zoo list`
    input_shape: tuple[int, ...] | None  # example input, batch first
    params: Mapping[str, Any]  # overridable arguments and their defaults
    replace: bool  # may redefine a name declared by an earlier source
    loc: Location
    origin: str  # who declared it: a distribution name, or "user" for a user file


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
    lines = _locate_keys(text)
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
    return _Parser(file, {}, origin).entry(name, dict(body))


def parse_value(text: str) -> Any:
    """A `--set k=v` value: TOML syntax when it parses (3, 1e-3, true, [2, 3]), else a string."""
    try:
        return _freeze(tomllib.loads(f"v = {text}")["v"])
    except tomllib.TOMLDecodeError:
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
        if shape is not None and not (
            isinstance(shape, list) and shape and all(type(d) is int and d > 0 for d in shape)
        ):
            raise self.fail(keys + ("input",), name, f"`input` must be a shape such as [2, 20], got {shape!r}")
        params = body.get("args", {})
        if not isinstance(params, dict):
            raise self.fail(keys + ("args",), name, "`args` must be a table of argument = default")
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise self.fail(keys + ("replace",), name, "`replace` must be true or false")
        node_body = {k: v for k, v in body.items() if k not in ("doc", "input", "args", "replace")}
        return Entry(
            name=name,
            node=self.node(node_body, keys, name),
            doc=doc.strip().splitlines()[0] if doc.strip() else "",
            input_shape=tuple(shape) if shape else None,
            params=MappingProxyType({k: _freeze(v) for k, v in params.items()}),
            replace=replace,
            loc=self.loc(keys),
            origin=self.origin,
        )

    def child(self, value: Any, keys: tuple[Any, ...], path: str) -> Child:
        """A block where one is expected: "Name", "@shared", or a table with `type`."""
        if isinstance(value, str):
            if value.startswith("@"):
                return SharedRef(value[1:], path, self.loc(keys))
            if value.startswith("${"):
                raise self.fail(
                    keys,
                    path,
                    f"'{value}' is an argument reference where a block is expected; "
                    'arguments give values to keyword arguments, e.g. { type = "Linear", out_features = "${hidden}" }',
                )
            return Node(type=value, kwargs=_EMPTY, path=path, loc=self.loc(keys))
        if isinstance(value, dict):
            return self.node(value, keys, path)
        raise self.fail(keys, path, f"expected a block (a name or a table with `type`), got {_kind(value)}")

    def node(self, body: dict[str, Any], keys: tuple[Any, ...], path: str) -> Node:
        layers, layer_names = self.layers(body.get("layers"), keys + ("layers",), path)
        type_ = body.get("type", "Sequential" if layers is not None else None)
        if not isinstance(type_, str) or not type_:
            found = "no `type`" if type_ is None else f"type = {type_!r}"
            typo = nearest("type", [k for k in body if k not in ENTRY_KEYS])
            hint = f" Is '{typo}' a misspelt `type`?" if typo else ""
            raise self.fail(keys, path, f'{found}: say what to build, e.g. type = "Linear".{hint}')
        shared_body = body.get("shared", {})
        if not isinstance(shared_body, dict):
            raise self.fail(keys + ("shared",), path, "`shared` must be a table of name = block")
        shared = {}
        for name, value in shared_body.items():
            child = self.child(value, keys + ("shared", name), f"{path} -> shared.{name}")
            if isinstance(child, SharedRef):
                raise self.fail(keys + ("shared", name), path, "a shared block cannot itself be a reference")
            shared[name] = child
        kwargs = {}
        key_locs = {}
        for key, value in body.items():
            if key in NODE_KEYS:
                continue
            if key in ENTRY_KEYS:
                raise self.fail(keys + (key,), path, f"`{key}` is allowed only on a top-level entry")
            kwargs[key] = self.argument(value, keys + (key,), f"{path} -> {key}")
            key_locs[key] = self.loc(keys + (key,))
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
        )

    def layers(
        self, value: Any, keys: tuple[Any, ...], path: str
    ) -> tuple[tuple[Child, ...] | None, tuple[str, ...] | None]:
        if value is None:
            return None, None
        if isinstance(value, list):
            return tuple(self.child(v, keys + (i,), f"{path} -> layers[{i}]") for i, v in enumerate(value)), None
        if isinstance(value, dict):
            children = tuple(self.child(v, keys + (k,), f"{path} -> layers.{k}") for k, v in value.items())
            return children, tuple(value)
        raise self.fail(keys, path, f"`layers` must be an array or a table of blocks, got {_kind(value)}")

    def argument(self, value: Any, keys: tuple[Any, ...], path: str) -> Any:
        if isinstance(value, str) and (match := _ARG_REF.match(value)):
            return ArgRef(match.group(1))
        if isinstance(value, dict):
            if "type" in value:  # a nested block passed as an argument
                return self.node(value, keys, path)
            return MappingProxyType({k: self.argument(v, keys + (k,), path) for k, v in value.items()})
        if isinstance(value, list):
            return tuple(self.argument(v, keys + (i,), path) for i, v in enumerate(value))
        return value

    def init_rules(self, value: Any, keys: tuple[Any, ...], path: str) -> tuple[InitRule, ...]:
        if not isinstance(value, dict):
            raise self.fail(keys, path, '`init` must be a table of "glob" = "fn" or { fn = "...", ... }')
        rules = []
        for pattern, rule in value.items():
            here = keys + (pattern,)
            if isinstance(rule, str):
                fn, kwargs = rule, {}
            elif isinstance(rule, dict) and isinstance(rule.get("fn"), str):
                fn, kwargs = rule["fn"], {k: _freeze(v) for k, v in rule.items() if k != "fn"}
            else:
                raise self.fail(
                    here, path, f'init rule for "{pattern}" needs `fn`, e.g. {{ fn = "normal", std = 0.01 }}'
                )
            rules.append(InitRule(pattern, fn, MappingProxyType(kwargs), f"{path} -> init.{pattern}", self.loc(here)))
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


# --- key → line map ----------------------------------------------------------------------
# tomllib keeps no positions, so a small scanner walks the (already valid) text once and
# records the line of every key, array element and table header.


def _locate_keys(text: str) -> dict[tuple[Any, ...], int]:
    scanner = _Scanner(text)
    try:
        scanner.document()
    except IndexError:  # valid TOML never gets here; positions are a courtesy, not a contract
        pass
    return scanner.lines


class _Scanner:
    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[tuple[Any, ...], int] = {}
        self.array_tables: dict[tuple[Any, ...], int] = {}

    def line(self) -> int:
        return bisect.bisect_left(self.newlines, self.i) + 1

    def peek(self, n: int = 1) -> str:
        return self.t[self.i : self.i + n]

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
            if self.peek() == "[":
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
                self.pair(table)

    def key(self) -> tuple[Any, ...]:
        parts = []
        while True:
            self.skip(newlines=False)
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                start = self.i
                while self.i < len(self.t) and (self.t[self.i].isalnum() or self.t[self.i] in "_-"):
                    self.i += 1
                parts.append(self.t[start : self.i])
            self.skip(newlines=False)
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def pair(self, table: tuple[Any, ...]) -> None:
        line = self.line()
        keys = table + self.key()
        self.lines.setdefault(keys, line)
        self.skip(newlines=False)
        self.i += 1  # '='
        self.skip(newlines=False)
        self.value(keys)

    def value(self, keys: tuple[Any, ...]) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.lines.setdefault(keys + (index,), self.line())
                self.value(keys + (index,))
                self.skip(newlines=True)
                if self.peek() == ",":
                    self.i += 1
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip(newlines=True)
                if self.peek() == "}":
                    self.i += 1
                    return
                self.pair(keys)
                self.skip(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        else:
            while self.i < len(self.t) and self.t[self.i] not in ",]}\n#":
                self.i += 1

    def string(self) -> str:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            end = self.t.index(quote * 3, self.i + 3)
            while self.t[end + 3 : end + 4] == quote:  # """a""""  ends on the last three quotes
                end += 1
            raw, self.i = self.t[self.i + 3 : end], end + 3
            return raw
        j = self.i + 1
        while self.t[j] != quote:
            j += 2 if (quote == '"' and self.t[j] == "\\") else 1
        raw, self.i = self.t[self.i + 1 : j], j + 1
        return tomllib.loads(f"k = {quote}{raw}{quote}")["k"] if quote == '"' else raw


# --- writing -----------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dump_entry(name: str, declaration: Mapping[str, Any]) -> str:
    """A declaration as registry TOML (one `[name]` table, nested blocks inline)."""
    lines = [f"[{_key(name)}]"]
    lines += [f"{_key(k)} = {_toml(v)}" for k, v in declaration.items()]
    return "\n".join(lines) + "\n"


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
    raise SpecError(f"cannot write {type(value).__name__} {value!r} as TOML")
