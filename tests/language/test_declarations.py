"""Parsing registry TOML: declarations, locations, and malformed input."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

import zoo
from zoo._language.declarations import Node, SharedRef, dump_entry, parse_file, parse_text, parse_value

TEXT = """\
# a comment
[mlp]
doc = "an MLP"
input = [2, 20]
args = { hidden = 256 }

[mlp.layers]
hidden = { type = "Linear", in_features = 20, out_features = "${hidden}" }
act = "ReLU"
out = { type = "Linear", in_features = "${hidden}", out_features = 10 }

[tied]
shared = { t = { type = "Linear", in_features = 8, out_features = 8 } }
layers = [
  { type = "LazyLinear", out_features = 8 },
  "@t",
  "ReLU",
]
init = { "*.weight" = { fn = "normal", std = 0.01 }, "*.bias" = "zeros" }
"""


def test_entries_become_frozen_declarations() -> None:
    entries = parse_text(TEXT, "reg.toml")
    mlp = entries["mlp"]
    assert (mlp.doc, mlp.input_shape, dict(mlp.params)) == ("an MLP", (2, 20), {"hidden": 256})
    assert mlp.node.type == "Sequential"  # the default when `layers` is given
    assert mlp.node.layer_names == ("hidden", "act", "out")
    hidden = mlp.node.layers[0]
    assert isinstance(hidden, Node) and hidden.kwargs["out_features"].text == "${hidden}"
    tied = entries["tied"]
    assert isinstance(tied.node.layers[1], SharedRef) and tied.node.layers[1].name == "t"
    assert [(r.pattern, r.fn, dict(r.kwargs)) for r in tied.node.init] == [
        ("*.weight", "normal", {"std": 0.01}),
        ("*.bias", "zeros", {}),
    ]
    with pytest.raises(AttributeError):
        mlp.doc = "changed"  # type: ignore[misc]


def test_every_key_knows_its_line() -> None:
    entries = parse_text(TEXT, "reg.toml")
    assert str(entries["mlp"].loc) == "reg.toml:2"
    assert [str(c.loc) for c in entries["mlp"].node.layers] == ["reg.toml:8", "reg.toml:9", "reg.toml:10"]
    tied = entries["tied"].node
    assert [str(c.loc) for c in tied.layers] == ["reg.toml:15", "reg.toml:16", "reg.toml:17"]
    assert str(tied.init[0].loc) == "reg.toml:19"


def test_invalid_toml_names_file_and_line(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[a]\ntype = "Linear"\nin_features = \n')
    with pytest.raises(zoo.RegistryFileError, match=rf"{path.name}: invalid TOML: .*line 3"):
        parse_file(path)


def test_duplicate_key_in_one_file_is_a_toml_error() -> None:
    with pytest.raises(zoo.RegistryFileError, match="line 3"):
        parse_text('[a]\ntype = "ReLU"\n[a]\ntype = "Tanh"\n', "dup.toml")


def test_missing_file() -> None:
    with pytest.raises(zoo.RegistryFileError, match="not found: .*nope.toml"):
        parse_file("/nonexistent/nope.toml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a = 3", "an entry must be a table"),
        ("[a]\nin_features = 3", r"reg.toml:1: a: no `type`"),
        ('[a]\ntipe = "Linear"', "Is 'tipe' a misspelt `type`"),
        ('[a]\ntype = "ReLU"\ninput = [2, -1]', r"reg.toml:3: a: `input` must be a shape"),
        ('[a]\ntype = "ReLU"\nargs = 3', "`args` must be a table"),
        ('[a]\ntype = "ReLU"\ndoc = 3', "`doc` must be a string"),
        ('[a]\ntype = "ReLU"\nreplace = "yes"', "`replace` must be true or false"),
        ("[a]\nlayers = [3]", r"a -> layers\[0\]: expected a block"),
        ('[a]\nlayers = "ReLU"', "`layers` must be an array or a table"),
        ('[a]\nlayers = [{ type = "ReLU", doc = "x" }]', "`doc` is allowed only on a top-level entry"),
        ('[a]\ntype = "ReLU"\ninit = { "*" = 3 }', "needs `fn`"),
        ('[a]\ntype = "ReLU"\nshared = { x = "@y" }', "a shared block must be a block, not a reference"),
        ('["a:b"]\ntype = "ReLU"', "reg.toml:1: 'a:b': an entry name must start with a letter"),
        ('[""]\ntype = "ReLU"', "reg.toml:1: '': an entry name must"),
        ('["@x"]\ntype = "ReLU"', "'@x': an entry name must"),
        ('["two words"]\ntype = "ReLU"', "'two words': an entry name must"),
        (
            '[a]\nargs = { w = 1 }\nlayers = ["${w}"]',
            r"reg.toml:3: a -> layers\[0\]: '\$\{w\}' is an expression where a block is expected",
        ),
    ],
)
def test_malformed_declarations(body: str, message: str) -> None:
    with pytest.raises(zoo.SpecError, match=message):
        parse_text(body, "reg.toml")


def test_parse_value_reads_toml_scalars_else_strings() -> None:
    assert parse_value("512") == 512
    assert parse_value("1e-3") == 0.001
    assert parse_value("true") is True
    assert parse_value("[2, 3]") == (2, 3)
    assert parse_value("relu") == "relu"


def test_dump_entry_round_trips(write_toml: Callable[..., Path]) -> None:
    declaration = zoo.spec("tied_mlp").declaration
    text = dump_entry("again", declaration)
    path = write_toml(text)
    model = zoo.build("again", registry=path, input_shape=(2, 20))
    assert model[2] is model[4]
    assert zoo.spec("again", registry=path).declaration == declaration


def test_dump_entry_writes_a_scalar_beside_long_child_tables_as_toml_that_parses_back() -> None:
    long_child = {"type": "Linear", "in_features": 4, "out_features": 4, "doc_note": "x" * 90}
    body = {"layers": {"a": long_child, "b": -1}}  # a hostile config.json's `layers`
    assert tomllib.loads(dump_entry("m", body))["m"] == body
