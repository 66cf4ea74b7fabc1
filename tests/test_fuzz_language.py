"""Fuzzing the language's surfaces (issue 21): expressions, expansion, names, ties, key maps, check.

Each generator aims at one surface, and each input runs under the suite's bounds
(tests/fuzzing.py: a deadline and an address-space limit). The properties:

- expressions: parsing and evaluating end in a value within the bounds or a SpecError, and a
  value zoo computes is the one Python computes for the same text;
- expansion: repeats of repeats and `when` end within the expansion budget, fast;
- check against build: for generated dataflow declarations (names that are attributes and
  keywords, edges to values that are there or not, tuple items, ties, sizes, ops), whatever
  `zoo check` passes, `zoo build` builds and runs;
- key maps: any pattern is refused or matched in linear time, as re.sub would;
- config.json: the same hostile declarations through zoo.load.

Each test counts its inputs and says how many held (pytest -s shows the lines); it also
asserts that the generator reached both sides of its property, so a generator that drifted
into only refusals (or only passes) fails instead of testing nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from zoo._errors import SpecError, ZooError
from zoo._language import declarations, expressions
from zoo._language.keymap import MAX_KEY, KeyMap
from zoo._language.resolve import MAX_NODES_ENV

from .fuzzing import FUZZ, bounded, holds_cli, zoo_cli


def report(name: str, counts: Counter[str]) -> None:
    """One line for the closing note: inputs tried and how they ended."""
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "tried")
    print(f"\nfuzz {name}: {counts['tried']} inputs tried, all held ({parts})")


@contextmanager
def budget(nodes: int) -> Iterator[None]:
    """A smaller expansion budget, so an input that hits it does so in milliseconds."""
    before = os.environ.get(MAX_NODES_ENV)
    os.environ[MAX_NODES_ENV] = str(nodes)
    try:
        yield
    finally:
        if before is None:
            del os.environ[MAX_NODES_ENV]
        else:
            os.environ[MAX_NODES_ENV] = before


# --- expressions ------------------------------------------------------------------------------------

SCOPE = {"a": 3, "b": -2, "c": 0.5, "s": "ab", "t": True}
LEAVES = ["1", "0", "-7", "2.5", "a", "b", "c", "s", "t", "'x'", "''", "[1, 2]", "[]", "True", str(2**200)]
UNARY = ["-", "+", "not "]
BINARY = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", " and ", " or "]


@st.composite
def expression(draw: st.DrawFn, depth: int = 0) -> str:
    """A random expression of the language's grammar (and a little outside it)."""
    if depth > 5 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(LEAVES))
    kind = draw(st.sampled_from(["unary", "binary", "binary", "if", "call", "list", "repeat", "paren"]))
    sub = lambda: draw(expression(depth + 1))  # noqa: E731 - a short helper for the branches below
    if kind == "unary":
        return f"{draw(st.sampled_from(UNARY))}{sub()}"
    if kind == "binary":
        return f"{sub()} {draw(st.sampled_from(BINARY))} {sub()}"
    if kind == "if":
        return f"{sub()} if {sub()} else {sub()}"
    if kind == "call":
        return f"{draw(st.sampled_from(['min', 'max']))}({', '.join(sub() for _ in range(draw(st.integers(0, 3))))})"
    if kind == "list":
        return "[" + ", ".join(sub() for _ in range(draw(st.integers(0, 3)))) + "]"
    if kind == "repeat":
        return f"[{sub()}] * {draw(st.sampled_from(['3', '4096', '100000', '-1', 'a']))}"
    return f"({sub()})"


@st.composite
def hostile_expression(draw: st.DrawFn) -> str:
    """Deep or large on purpose: a chain of one operator, nested brackets, repeated repeats."""
    n = draw(st.integers(1, 600))
    kind = draw(st.sampled_from(["unary", "sum", "brackets", "lists", "repeats", "power", "text"]))
    if kind == "unary":
        return draw(st.sampled_from(UNARY)) * n + "1"
    if kind == "sum":
        return " + ".join(["a"] * n)
    if kind == "brackets":
        return "(" * n + "1" + ")" * n
    if kind == "lists":
        return "[" * n + "1" + "]" * n
    if kind == "repeats":
        return "[1]" + " * 64" * min(n, 40) if draw(st.booleans()) else "[" * 4 + "1" + "] * 64" * 4
    if kind == "power":
        return " ** ".join(["2"] * min(n, 30))
    return "'" + "a" * n + "' * " + str(draw(st.integers(0, 10**6)))


def _python(text: str) -> Any:
    """What Python's own evaluation gives, lists for tuples (the oracle of a value zoo computed)."""
    value = eval(text, {"__builtins__": {"min": min, "max": max, "True": True}}, dict(SCOPE))  # noqa: S307 - test oracle
    return list(value) if isinstance(value, tuple) else value


def _bounded_value(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() <= 256
    if isinstance(value, str):
        return len(value) <= expressions.MAX_SIZE
    if isinstance(value, list):
        return sum(1 for _ in _leaves(value)) <= expressions.MAX_SIZE
    return True


def _leaves(value: Any) -> Iterator[Any]:
    for item in value:
        if isinstance(item, list):
            yield item
            yield from _leaves(item)
        else:
            yield item


def test_generated_expressions_end_in_a_bounded_value_or_a_spec_error() -> None:
    counts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=400)
    @given(st.one_of(expression(), hostile_expression()))
    def holds(text: str) -> None:
        counts["tried"] += 1
        with bounded():
            try:
                value = expressions.parse("${" + text + "}", "f.toml:1: m").evaluate(SCOPE, "f.toml:1: m")
            except SpecError as err:
                assert str(err).startswith("f.toml:1: m") and len(str(err)) < 1000, str(err)[:300]
                counts["refused"] += 1
                return
            assert _bounded_value(value), text
            # Python agrees with a value zoo computed (Python may go further: zoo refuses bool arithmetic)
            expected = _python(text)
            assert value == expected or (isinstance(value, float) and math.isnan(value) and math.isnan(expected))
            counts["evaluated"] += 1

    holds()
    report("expressions", counts)
    assert counts["evaluated"] > 40 and counts["refused"] > 40


# --- expansion: repeat and when ------------------------------------------------------------------------


@st.composite
def nested_repeats(draw: st.DrawFn) -> str:
    """Repeats inside repeats, spliced or in containers, kept or left out by `when`, in a registry file."""
    inner: dict[str, Any] = {"type": draw(st.sampled_from(["Identity", "ReLU"]))}
    for _ in range(draw(st.integers(1, 4))):
        count = draw(st.sampled_from([0, 1, 2, 3, 100, 10000, "${n}", "${n * n}", -1]))
        when = draw(st.sampled_from([None, True, False, "${i % 2 == 0}", "${n > 2}"]))
        block: dict[str, Any] = {"repeat": count, **({"when": when} if when is not None else {})}
        if draw(st.booleans()):
            block["layers"] = [inner]
        else:
            block["layers"] = {draw(st.sampled_from(["blk", "b${i}", "b${i + 1}"])): inner}
        inner = block
    n = draw(st.sampled_from([2, 50, 1000]))
    return declarations.dump_entry("m", {"args": {"n": n}, "input": [2, 3], "layers": [inner]})


def test_generated_repeats_of_repeats_end_within_the_budget(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    path = tmp_path / "repeats.toml"

    @settings(FUZZ, max_examples=120)
    @given(nested_repeats())
    def holds(text: str) -> None:
        counts["tried"] += 1
        path.write_text(text)
        with bounded(), budget(20_000):
            started = time.perf_counter()
            code, err = zoo_cli("check", str(path))
            holds_cli(code, err, f"zoo check of\n{text}")
            assert time.perf_counter() - started < 20, text  # the budget of 20,000 is hit in well under a second
            if code == 0:
                model = zoo.build("m", registry=[path])
                assert sum(1 for _ in model.modules()) <= 20_000
                counts["built"] += 1
            else:
                counts["over budget" if "expands to more than" in err else "refused"] += 1

    holds()
    report("repeat/when nesting", counts)
    assert counts["built"] > 10 and counts["over budget"] > 10


# --- check passes => build succeeds -----------------------------------------------------------------------

NAMES = ["h", "g", "self", "forward", "training", "type", "parameters", "class", "out", "_modules", "zoo_info", "0"]


@st.composite
def dataflow_declaration(draw: st.DrawFn) -> str:
    """A dataflow entry with a declared input: children, ops, params, ties and edges, right or wrong."""
    width = draw(st.sampled_from([3, 4]))
    inputs = draw(st.sampled_from([["x"], ["x"], ["self"], ["class"]]))
    widths: dict[str, int | None] = {inputs[0]: width}  # known values → their last dimension (None: a tuple)
    body: dict[str, Any] = {"input": [2, width]}
    if inputs != ["x"]:
        body["inputs"] = inputs
    params: dict[str, Any] = {}
    if draw(st.booleans()):
        shape = draw(
            st.sampled_from([[width]] * 3 + [[width, width], [2, width], [-1], ["${2 - 5}"], [10**6, 10**6, 10**3]])
        )
        params[draw(st.sampled_from(["w", "forward", "type"]))] = shape
        body["params"] = params
        widths.update({p: width for p in params})
    layers: dict[str, Any] = {}
    linears: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from([*NAMES, f"s{len(layers)}"]))
        known = [v for v in widths if widths[v] is not None] or [inputs[0]]
        items = [f"{v}[0]" for v in widths if widths[v] is None]
        source = draw(st.sampled_from([*known, *known, *known, *items, "nothere"]))
        got = widths.get(source.split("[")[0]) if "[" not in source else width // 2
        kind = draw(st.sampled_from(["linear", "linear", "relu", "add", "chunk", "cat", "norm", "dropout", "mul"]))
        if kind == "linear":
            in_features = draw(st.sampled_from([got or width] * 4 + [width + 1, "${a}"]))
            out = draw(st.sampled_from([width] * 4 + [2, 0, "${-5}", "${a - 1}"]))
            step: dict[str, Any] = {"type": "Linear", "in_features": in_features, "out_features": out}
            linears.append(name)
            new: int | None = out if isinstance(out, int) else None
        elif kind == "relu":
            step, new = {"op": "relu"}, got
        elif kind == "add":
            other = draw(st.sampled_from([*known, *known, "nothere"]))
            step, new = {"op": "add", "in": [source, other]}, got
        elif kind == "chunk":
            step, new = {"op": "chunk", "chunks": 2, "dim": draw(st.sampled_from([1, 1, -1, 5]))}, None
        elif kind == "cat":
            step, new = {"op": "cat", "in": [source, draw(st.sampled_from(known))], "dim": 1}, None
            new = 2 * (got or 0) or None
        elif kind == "norm":
            step = {
                "type": "LayerNorm",
                "normalized_shape": draw(st.sampled_from([got or width] * 3 + [width + 1, -1])),
            }
            new = got
        elif kind == "dropout":
            step, new = {"type": "Dropout", "p": draw(st.sampled_from([0.1, 0.5, 1.5, -0.2]))}, got
        else:
            step, new = {"op": "mul", "in": [source, draw(st.sampled_from([*known, *params]))]}, got
        if "in" not in step:
            step["in"] = source
        if draw(st.integers(0, 5)) == 0:
            step["when"] = draw(st.sampled_from([True, False, "${a > 2}"]))
        if draw(st.integers(0, 12)) == 0:
            step[draw(st.sampled_from(["whem", "paramz", "bogus"]))] = 1
        layers[name] = step
        widths[name] = new if kind != "chunk" else None
    body["layers"] = layers
    body["args"] = {"a": draw(st.sampled_from([3, 4, -1]))}
    if len(linears) >= 2 and draw(st.booleans()):
        first, second = draw(st.sampled_from(linears)), draw(st.sampled_from(linears))
        part = draw(st.sampled_from(["weight", "bias", "__class__", "training"]))
        body["tie"] = {f"{first}.{part}": f"{second}.weight"}
    return declarations.dump_entry("m", body)


def check_then_build(path: Path, text: str, counts: Counter[str]) -> None:
    """The property for one generated entry `m`: whatever `zoo check` passes, `zoo build` builds and runs."""
    counts["tried"] += 1
    path.write_text(text)
    with bounded():
        code, err = zoo_cli("check", str(path))
        holds_cli(code, err, f"zoo check of\n{text}")
        if code != 0:
            counts["refused by check"] += 1
            return
        code, err = zoo_cli("build", "m", "--registry", str(path))  # builds, then runs the input through it
        assert code == 0, f"zoo check passed, zoo build refused:\n{text}\n{err}"
        counts["checked and built"] += 1


def test_check_passes_implies_build_succeeds(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=300)
    @given(dataflow_declaration())
    def holds(text: str) -> None:
        check_then_build(tmp_path / "dataflow.toml", text, counts)

    holds()
    report("check passes => build succeeds", counts)
    assert counts["checked and built"] > 30 and counts["refused by check"] > 30


# The version-3 surfaces: buffers, optional inputs with defaults, tensor indices, the newer ops.
BUFFERS = [
    {"op": "ones", "shape": ["${w}"]},
    {"op": "arange", "end": "${w}", "dtype": "float32"},
    {"op": "arange", "end": 10**12},
    {"op": "full", "shape": [2, "${w}"], "fill_value": 0.5},
    {"op": "full", "shape": [-1], "fill_value": 1.0},
    {"op": "tensor", "data": [1.0, 2.0, 3.0, 4.0]},
    {"op": "tensor", "data": [[1.0, 2.0], [3.0]]},
    {"op": "tensor", "data": []},
    {"op": "div", "in": [1.0, "b0"]},
    {"op": "pow", "in": [10000.0, "b0"], "persistent": False},
]
V3_SOURCES = [
    "x",
    "x",
    "x",
    "x",
    "x",
    "x[:, 0]",
    "x[:, None]",
    "x[0]",
    "x[:, 99]",
    "x[..., ::2]",
    "b0",
    "b1",
    "mask",
    "nothere",
]


@st.composite
def version3_declaration(draw: st.DrawFn) -> str:
    """A dataflow entry using buffers, an optional input, indices and the newer ops, right or wrong."""
    width = draw(st.sampled_from([3, 4]))
    body: dict[str, Any] = {"input": [2, width], "args": {"w": draw(st.sampled_from([width] * 6 + [2, 0, -1]))}}
    body["inputs"] = ["x"]
    if draw(st.booleans()):
        default = draw(
            st.sampled_from(
                [
                    {"op": "ones_like", "in": "x"},
                    {"op": "ones_like", "in": "x"},
                    {"op": "zeros_like", "in": "x[:, 0]"},
                    {"op": "ones_like", "in": "nothere"},
                    "x",
                    1,
                ]
            )
        )
        body["inputs"].append({"name": "mask", "default": default})
    buffers = {f"b{i}": draw(st.sampled_from(BUFFERS)) for i in range(draw(st.integers(0, 2)))}
    if buffers:
        body["buffers"] = buffers
    layers: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 3))):
        known = [*V3_SOURCES, *layers]
        source = draw(st.sampled_from(known))
        kind = draw(
            st.sampled_from(
                ["add", "mul", "select", "expand", "masked_fill", "where", "to", "sdpa", "linear", "rms", "drop_path"]
            )
        )
        other = draw(st.sampled_from(known))
        step: dict[str, Any]
        if kind in ("add", "mul"):
            step = {"op": kind, "in": [source, other]}
        elif kind == "select":
            step = {"op": "select", "in": source, "dim": draw(st.sampled_from([0, 1, -1, 3])), "index": 0}
        elif kind == "expand":
            step = {"op": "expand", "in": [source, *draw(st.sampled_from([[2, width], [-1, -1], [10**6, 10**6], [3]]))]}
        elif kind == "masked_fill":
            step = {"op": "masked_fill", "in": [source, other], "value": draw(st.sampled_from([0.0, -math.inf]))}
        elif kind == "where":
            step = {"op": "where", "in": [source, other, 0.0]}
        elif kind == "to":
            step = {"op": "to", "in": source, "dtype": draw(st.sampled_from(["bool", "float32", "int64", "float128"]))}
        elif kind == "sdpa":
            step = {"op": "sdpa", "in": [source, source, other], "enable_gqa": draw(st.booleans())}
        elif kind == "linear":
            step = {"type": "Linear", "in": source, "in_features": "${w}", "out_features": width}
        elif kind == "rms":
            step = {"type": "RMSNorm", "in": source, "normalized_shape": draw(st.sampled_from(["${w}", width]))}
        else:
            step = {"op": "drop_path", "in": source, "p": draw(st.sampled_from([0.1, 1.5])), "mode": "row"}
        if draw(st.integers(0, 6)) == 0:
            step["when"] = draw(st.sampled_from([True, False, "${w > 2}"]))
        layers[draw(st.sampled_from([f"s{i}", "self", "forward", "training"]))] = step
    body["layers"] = layers
    return declarations.dump_entry("m", body)


def test_check_passes_implies_build_succeeds_for_buffers_defaults_indices_and_ops(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=300)
    @given(version3_declaration())
    def holds(text: str) -> None:
        check_then_build(tmp_path / "version3.toml", text, counts)

    holds()
    report("check passes => build succeeds (buffers, defaults, indices, ops)", counts)
    assert counts["checked and built"] > 30 and counts["refused by check"] > 30


# --- key maps --------------------------------------------------------------------------------------------

ATOMS = ["a", "b", ".", r"\.", r"\d", r"\w", "[ab]", "(a)", "(?P<n>a)", "(a|aa)", "(a|a)", "^", "$", r"\1"]
QUANTIFIERS = ["", "", "*", "+", "?", "{2}", "{1,3}", "{1000}"]


@st.composite
def pattern(draw: st.DrawFn, depth: int = 0) -> str:
    """Regular expressions with nested quantifiers, overlapping alternatives, groups and references."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 3 and draw(st.integers(0, 3)) == 0:
            atom = f"({draw(pattern(depth + 1))})"
        else:
            atom = draw(st.sampled_from(ATOMS))
        parts.append(atom + draw(st.sampled_from(QUANTIFIERS)))
    return "".join(parts)


def test_generated_key_map_patterns_are_refused_or_matched_as_re_sub_would(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=300)
    @given(pattern(), st.sampled_from(["x", r"\1", r"<\g<0>>", r"\g<n>", ""]), st.text("ab.1!", max_size=12))
    def holds(regex: str, replacement: str, key: str) -> None:
        counts["tried"] += 1
        with bounded():
            try:
                keymap = KeyMap.from_table({"rename": [[regex, replacement]]})
            except SpecError:
                counts["refused"] += 1
                return
            long_key = "a" * (MAX_KEY - 1) + "!"
            started = time.perf_counter()
            keymap(long_key)  # the attack's shape: backtracking would never end here
            assert time.perf_counter() - started < 2, regex
            try:  # re is the oracle on short keys, where even its backtracking ends
                expected = re.sub(regex, replacement, key)
            except (re.error, IndexError):
                counts["matched (re refuses it)"] += 1
                return
            assert keymap(key) == expected, (regex, replacement, key)
            counts["matched as re.sub"] += 1

    holds()
    report("key-map patterns", counts)
    assert counts["matched as re.sub"] > 50 and counts["refused"] > 20


# --- the same declarations through a saved folder's config.json ---------------------------------------------

_SAVED: list[Path] = []


def _saved() -> Path:
    if not _SAVED:
        _SAVED.append(zoo.save(zoo.build("mlp"), Path(tempfile.mkdtemp(prefix="zoo-fuzz-config-")) / "saved"))
    return _SAVED[0]


@st.composite
def hostile_declaration(draw: st.DrawFn) -> dict[str, Any]:
    """A declaration as config.json holds one: generated dataflow, repeats, and hostile expressions in it."""
    kind = draw(st.sampled_from(["dataflow", "repeats", "expression"]))
    if kind == "expression":
        text = draw(st.one_of(expression(), hostile_expression()))
        return {"type": "Linear", "in_features": 20, "out_features": "${" + text + "}"}
    text = draw(dataflow_declaration() if kind == "dataflow" else nested_repeats())
    body: dict[str, Any] = tomllib.loads(text)["m"]
    body.pop("args", None)  # a saved declaration is resolved: no args, so ${a} and ${n} are refused
    body.pop("input", None)
    return body


@pytest.fixture(scope="module", autouse=True)
def _remove_saved() -> Iterator[None]:
    yield
    for folder in _SAVED:
        shutil.rmtree(folder.parent, ignore_errors=True)


def test_hostile_config_json_declarations_end_in_a_model_or_a_zoo_error(tmp_path: Path) -> None:
    counts: Counter[str] = Counter()
    folder = tmp_path / "saved"

    @settings(FUZZ, max_examples=150)
    @given(hostile_declaration())
    def holds(declaration: dict[str, Any]) -> None:
        counts["tried"] += 1
        if not folder.exists():
            shutil.copytree(_saved(), folder)
        config = json.loads((_saved() / "config.json").read_text())
        config["declaration"] = declaration
        (folder / "config.json").write_text(json.dumps(config))
        with bounded(), budget(20_000):
            try:  # anything but a model or a ZooError fails the test
                zoo.load(folder, strict=False)
                counts["loaded"] += 1
            except ZooError:
                counts["refused"] += 1

    holds()
    report("hostile config.json", counts)
    assert counts["refused"] > 50
