"""Fuzzing: generated registries and hostile saved folders, through zoo's front doors.

The property, for every generated input: `zoo check` / `zoo build` exit 0 or 2 with no
traceback, zoo.build / zoo.load / zoo.load_weights succeed or raise a ZooError, nothing
hangs (a SIGALRM deadline per input) and memory stays bounded (an address-space limit per
input: an allocation beyond it must come back as a ZooError, not take the machine).

Deterministic (derandomize=True, no example database written) and bounded to about a
minute in all; the harness is tests/fuzzing.py, and tests/test_fuzz_language.py fuzzes the
language's own surfaces (expressions, expansion, names, ties, key maps, check against
build). The registries here are mutations of zoo's own registry.toml and the README's TOML
examples, at the text level (tokens that break strings, brackets, references) and at the
data level (values swapped for hostile ones); the folders are zoo.save output with their
config.json, index and safetensors headers mutated, or replaced by links and FIFOs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from zoo._language import declarations
from zoo._weights import reader

from .fuzzing import FUZZ, bounded, holds_api, holds_cli, zoo_cli

ROOT = Path(__file__).resolve().parent.parent


# --- generated registries ---------------------------------------------------------------------


def _seed_texts() -> list[str]:
    """zoo's registry.toml and the README's TOML examples, entries renamed so they do not clash with the built-ins."""
    texts = [(ROOT / "zoo" / "registry.toml").read_text()]
    texts += re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [re.sub(r"^\[([A-Za-z_][\w.]*)\]", r"[f_\1]", text, flags=re.M) for text in texts]


SEEDS = _seed_texts()
TOKENS = [
    '"', "'", '"""', "'''", "\\", '\\"', '\\"""', "[", "]", "{", "}", "[[", "]]", ",", "=", ".", "#", "\n",
    '"${hidden}"', '"${nope}"', '"@tied"', '"@"', '"Linear"', '"LazyLinear"', '"mlp"', '"f_mlp"', '"DIST:x"',
    "layers", "type", "init", "shared", "args", "input", "replace = true", '{ fn = "normal", std = -1 }',
    '{ "*" = "xavier_uniform" }', '{ "*.bias" = "eye" }', "[" * 300, "]" * 300, "-1", "0", "1e309", "nan",
    str(2**40), str(2**63), "9" * 5000, "true", "1979-05-27", "ü", "\0",
]  # fmt: skip
VALUES: list[Any] = [
    -1, 0, 1, 3, 2**40, 2**63 - 1, 2**64, 0.5, -0.0, float("inf"), "x", "", "${hidden}", "${nope}", "@tied",
    "Linear", "LazyLinear", "mlp", "f_mlp", "chimera", True, [], [0], [2, 20], [2, 2**40], {}, {"type": "ReLU"},
    {"type": "Linear", "in_features": 20, "out_features": 3}, {"fn": "normal", "std": "x"}, {"*": "orthogonal"},
]  # fmt: skip


@st.composite
def text_mutation(draw: st.DrawFn) -> str:
    """A seed with a few spans deleted, duplicated or replaced by tokens that stress the TOML reader and the scanner."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = min(len(text), start + draw(st.integers(0, 12)))
        action = draw(st.sampled_from(["insert", "replace", "delete", "duplicate"]))
        token = draw(st.sampled_from(TOKENS))
        if action == "insert":
            text = text[:start] + token + text[start:]
        elif action == "replace":
            text = text[:start] + token + text[end:]
        elif action == "delete":
            text = text[:start] + text[end:]
        else:
            text = text[:end] + text[start:end] + text[end:]
    return text


@st.composite
def data_mutation(draw: st.DrawFn) -> str:
    """A seed parsed, with values at a few key paths swapped for hostile ones, written back as valid TOML."""
    data = tomllib.loads(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        node: Any = data
        while True:  # walk down to a container, then change one of its items
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if isinstance(node[key], (dict, list)) and node[key] and draw(st.booleans()):
                node = node[key]
                continue
            if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
                del node[key]
            else:
                node[key] = copy.deepcopy(draw(st.sampled_from(VALUES)))  # a later step may change it in place
            break
    lines = []
    for name, body in data.items():
        if isinstance(body, dict):
            lines.append(declarations.dump_entry(name, body))
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    try:
        return [name for name, body in tomllib.loads(text).items() if isinstance(body, dict)][:2]
    except (tomllib.TOMLDecodeError, RecursionError):
        return []


@settings(FUZZ, max_examples=120)
@given(st.one_of(text_mutation(), data_mutation()))
def test_generated_registries_through_check_and_build(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with bounded():
            holds_cli(*zoo_cli("check", str(path)), f"zoo check of\n{text}")
            for name in _names(text):
                holds_cli(*zoo_cli("build", name, "--registry", str(path)), f"zoo build {name} of\n{text}")
                holds_api(lambda name=name: zoo.build(name, registry=[path]), f"zoo.build({name!r}) of\n{text}")


# --- generated hostile folders ------------------------------------------------------------------

_BASES: dict[str, Path] = {}


def _base(kind: str) -> Path:
    """One zoo.save per kind, made once per session, copied for each input."""
    if kind not in _BASES:
        torch.manual_seed(0)
        root = Path(tempfile.mkdtemp(prefix="zoo-fuzz-base-"))
        name, shard = {"mlp": ("mlp", None), "tied": ("tied_mlp", None), "sharded": ("mlp", 4000)}[kind]
        _BASES[kind] = zoo.save(zoo.build(name), root / kind, max_shard_size=shard)
    return _BASES[kind]


def _json_mutation(draw: st.DrawFn, data: Any) -> Any:
    if not isinstance(data, (dict, list)) or not data or draw(st.integers(0, 3)) == 0:
        return draw(
            st.sampled_from(
                [None, -1, 0, 2**64, 1.5, "", "../x", "..\\..\\evil.safetensors", "/dev/zero", [], {}, [[[[]]]], True]
            )
        )
    key = draw(st.sampled_from(list(data) if isinstance(data, dict) else list(range(len(data)))))
    data[key] = _json_mutation(draw, data[key])
    return data


@st.composite
def hostile_folder(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A base kind and a list of (file, operation): what to do to a copy of a good save."""
    kind = draw(st.sampled_from(["mlp", "tied", "sharded"]))
    files = [p.name for p in sorted(_base(kind).iterdir())]
    ops = ["json", "deep", "digits", "flip", "truncate", "append", "header", "dev_zero", "fifo", "folder", "delete"]
    steps = draw(st.lists(st.tuples(st.sampled_from(files), st.sampled_from(ops)), min_size=1, max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    return kind, [(f, f"{op}:{seed}") for f, op in steps]


def _apply(folder: Path, file: str, operation: str, draw_json: Callable[[Any], Any]) -> None:
    op, seed = operation.split(":")
    rng = int(seed)
    path = folder / file
    if not path.is_file() or path.is_symlink():
        return
    raw = path.read_bytes()
    if op == "json" and file.endswith(".json"):
        try:
            data = json.loads(raw)
        except ValueError:  # an earlier step broke it already
            return
        path.write_text(json.dumps(draw_json(data)))
    elif op == "deep":
        path.write_bytes(raw[: rng % (len(raw) + 1)] + b"[" * 100_000 + raw[rng % (len(raw) + 1) :])
    elif op == "digits":
        path.write_bytes(re.sub(rb"\d+", b"9" * 5000, raw, count=1))
    elif op == "flip" and raw:
        at = rng % min(len(raw), 4096)  # the header region, where the parsing happens
        path.write_bytes(raw[:at] + bytes([raw[at] ^ (1 << (rng % 8))]) + raw[at + 1 :])
    elif op == "truncate":
        path.write_bytes(raw[: rng % (len(raw) + 1)])
    elif op == "append":
        path.write_bytes(raw + b"\0" * (rng % 4096))
    elif op == "header" and file.endswith(".safetensors") and len(raw) >= 8:
        path.write_bytes(struct.pack("<Q", [2**40, 2**63, 7, len(raw)][rng % 4]) + raw[8:])
    elif op == "dev_zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif op == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif op == "folder":
        path.unlink()
        path.mkdir()
    elif op == "delete":
        path.unlink()


@settings(FUZZ, max_examples=120)
@given(hostile_folder(), st.data())
def test_hostile_folders_through_load_and_load_weights(case: tuple[str, list[tuple[str, str]]], data: Any) -> None:
    kind, steps = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "saved"
        shutil.copytree(_base(kind), folder)
        for file, operation in steps:
            _apply(folder, file, operation, lambda value: _json_mutation(data.draw, value))
        what = f"{kind} with {steps}"
        with bounded():
            holds_api(lambda: zoo.load(folder), f"zoo.load of {what}")
            holds_api(lambda: zoo.load(folder, mmap=False, strict=False), f"zoo.load(strict=False) of {what}")
            model = zoo.build("tied_mlp" if kind == "tied" else "mlp")
            holds_api(lambda: zoo.load_weights(model, folder), f"zoo.load_weights of {what}")
            holds_api(lambda: reader.inspect(folder), f"zoo inspect of {what}")


def test_the_suite_starts_from_inputs_that_work(tmp_path: Path) -> None:
    """Without this, a mutation harness whose seeds never parse would pass without testing anything."""
    assert all(tomllib.loads(text) for text in SEEDS)  # README snippets may name each other's entries
    path = tmp_path / "registry.toml"
    path.write_text(SEEDS[0])
    assert zoo_cli("check", str(path)) == (0, "")  # zoo's own registry, renamed, is clean
    assert len(SEEDS) > 3
    assert zoo.load(_base("sharded")) is not None


@pytest.fixture(autouse=True, scope="module")
def _remove_bases() -> Iterator[None]:
    yield
    for folder in _BASES.values():
        shutil.rmtree(folder.parent, ignore_errors=True)
    _BASES.clear()
