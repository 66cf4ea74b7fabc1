"""Declarations written to hurt (issue 21): every root cause an outside attack found, as tests.

A declaration may be a stranger's (a Hub repo's config.json), so each of these must end in a
ZooError (exit 2 at the command line) within seconds, with its file:line, and never run code,
hang, exhaust memory or print a traceback. Each test holds the root cause, not only the
reproducer: the bounds are checked on the neighbours of the attack as well as on it.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import zoo
from zoo import cli
from zoo._errors import SpecError, ZooError
from zoo._language import expressions
from zoo._language.keymap import MAX_KEY, MAX_PROGRAM, KeyMap
from zoo._language.resolve import DEFAULT_MAX_NODES, MAX_NODES_ENV

from .hubserver import HubServer


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a Python loop that never ends."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: the input hangs zoo")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line in this process, under a deadline; never a traceback or an internal error."""
    with deadline(60):
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def entry(value: str) -> str:
    """One entry whose Linear takes `value` as its out_features, on line 3."""
    return f'[m]\ninput = [2, 3]\nlayers = [{{ type = "Linear", in_features = 3, out_features = "{value}" }}]\n'


# --- 1. expressions nested deeper than the parser can follow ---------------------------------------

DEEP = {
    "minus": "${" + "-" * 200 + "1}",
    "sum": "${" + "+".join(["1"] * 500) + "}",
    "not": "${" + "not " * 300 + "1}",
    "brackets": "${" + "(" * 150 + "1" + ")" * 150 + "}",
    "lists": "${" + "[" * 150 + "1" + "]" * 150 + "}",
    "calls": "${" + "max(1, " * 100 + "1" + ")" * 100 + "}",
    "conditional": "${" + "1 if 1 else " * 200 + "1}",
}


@pytest.mark.parametrize("case", DEEP)
def test_1_an_expression_nested_too_deeply_is_refused_before_python_parses_it(
    case: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(entry(DEEP[case]))
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:3: m -> layers[0] -> out_features" in err and "nested too deeply" in err
    assert len(err.splitlines()[0]) < 400  # the expression is cut short in the message


def test_1_the_issues_reproducers_are_refused_by_their_depth_or_their_length(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    for value, refusal in (
        ("${" + "-" * 3000 + "1}", "nested too deeply"),
        ("${" + "+".join(["1"] * 3000) + "}", f"expressions are at most {expressions.MAX_SOURCE}"),
        ("${" + "not " * 8000 + "1}", f"expressions are at most {expressions.MAX_SOURCE}"),
    ):
        path = write_toml(entry(value))
        code, _, err = run(capsys, "check", str(path))
        assert code == 2 and f"{path}:3:" in err and refusal in err


def test_1_the_depth_bound_counts_what_real_expressions_need() -> None:
    widest = "(((num_init_features + 6 * growth_rate) // 2 + 12 * growth_rate) // 2 + 24 * growth_rate) // 2"
    assert expressions._depth_bound(widest, widest, "w") <= expressions.MAX_DEPTH // 2
    flat = "[" + ", ".join(["1"] * 1000) + "]"  # wide is not deep: the commas of one list make one node
    assert expressions._depth_bound(flat, flat, "w") <= 3
    assert expressions.parse("${" + flat + "}", "w").evaluate({}, "w") == [1] * 1000


def test_1_the_bound_is_an_upper_bound_on_the_real_depth() -> None:
    def depth(node: ast.AST) -> int:
        children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.expr_context, ast.operator))]
        return 1 + max((depth(c) for c in children), default=0)

    for source in ("1 + 2 * 3", "-(-(-x))", "[1, [2, [3]]]", "max(a, min(b, c)) if a < b else c", "not a or b and c"):
        tree = ast.parse(source, mode="eval").body
        assert depth(tree) <= expressions._depth_bound(source, source, "w"), source


def test_1_f_strings_are_refused_unread(write_toml: Callable[..., Path]) -> None:
    with pytest.raises(SpecError, match="f-strings are not part of the expression language"):
        zoo.build("m", registry=[write_toml(entry("${f'{1}' + f'x'}".replace("{1}", "")))])


# --- 2. values too large to build --------------------------------------------------------------------

LARGE = {
    "nested_lists": "x${[[[1] * 4096] * 4096] * 4096}",
    "square": "${[[1] * 4096] * 4096}",
    "comparison": "${[[1] * 4096] * 4096 == [[1] * 4096] * 4096}",
    "concatenation": "${[[1] * 4000] + [[1] * 4000] + [[1] * 4000] + [[1] * 4000] + [[1] * 4000]}",
    "list_of_strings": "${['" + "a" * 3000 + "'] * 4000}",
}


@pytest.mark.parametrize("case", LARGE)
def test_2_every_value_is_bounded_as_it_is_built(
    case: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(entry(LARGE[case]))
    started = time.perf_counter()
    code, _, err = run(capsys, "check", str(path))
    assert time.perf_counter() - started < 20  # a bound, not a benchmark: today's machine does it in milliseconds
    assert code == 2 and f"{path}:3:" in err and f"at most {expressions.MAX_SIZE}" in err, err
    assert len(err) < 2000  # the message shows a short excerpt, never the value


def test_2_values_within_the_bound_still_work() -> None:
    assert expressions.parse("${[[1] * 100] * 100}", "w").evaluate({}, "w") == [[1] * 100] * 100
    assert expressions.parse("${'ab' * 2048}", "w").evaluate({}, "w") == "ab" * 2048
    assert expressions.parse("${[1] * -3}", "w").evaluate({}, "w") == []


def test_2_an_error_about_a_large_value_shows_a_short_excerpt_of_it() -> None:
    scope = {"big": tuple(range(100_000))}
    with pytest.raises(SpecError) as err:
        expressions.parse("${big < 'x'}", "w").evaluate(scope, "w")
    assert "cannot compare" in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize(
    "declaration",
    [
        {"type": "Linear", "in_features": list(range(200_000)), "out_features": 3},
        {"layers": {"a": {"op": "relu", "in": "x"}}, "inputs": [["x"] * 200_000]},
        {"type": "Linear", "in_features": 3, "out_features": 3, "kwargs": {"bias": "b" * 1_000_000}},
        {"layers": [{"type": "Identity", "repeat": {"n": list(range(200_000))}}]},
    ],
    ids=["argument", "inputs", "string", "repeat"],
)
def test_2_a_huge_value_in_a_config_json_is_shown_as_an_excerpt(declaration: dict[str, object], tmp_path: Path) -> None:
    folder = zoo.save(zoo.build("mlp"), tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    config["declaration"] = declaration
    (folder / "config.json").write_text(json.dumps(config))
    with deadline(60), pytest.raises(ZooError) as err:
        zoo.load(folder)
    assert str(folder / "config.json") in str(err.value) and len(str(err.value)) < 1000, str(err.value)[:2000]


# --- 3. declarations that expand to more than any model ----------------------------------------------

REPEATS = '[m]\nlayers = [{ repeat = 10000, layers = [{ repeat = 10000, type = "Identity" }] }]\n'


def test_3_a_repeat_of_repeats_stops_at_the_expansion_budget(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(REPEATS)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:2: m -> layers[0] -> layers[0]: m expands to more than {DEFAULT_MAX_NODES:,} nodes" in err
    assert MAX_NODES_ENV in err and err.count("error:") == 1  # one error, not one per copy


@pytest.mark.parametrize(
    "layers",
    [
        '{ repeat = 10000, layers = [{ repeat = 10000, type = "Identity", when = false }] }',  # copies left out
        '{ repeat = 10000, type = "Identity", foo = ' + "[" + ", ".join(["1"] * 200) + "] }",  # argument values
        '{ repeat = 2000, type = "Identity", foo = "' + "a" * 20000 + '" }',  # long strings
    ],
    ids=["when_false", "large_arguments", "long_strings"],
)
def test_3_the_budget_counts_what_expansion_costs_not_only_what_it_keeps(
    layers: str, write_toml: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_NODES_ENV, "100000")
    path = write_toml(f"[m]\nlayers = [{layers}]\n")
    with deadline(30), pytest.raises(SpecError, match="m expands to more than 100,000 nodes"):
        zoo.build("m", registry=[path])


def test_3_the_budget_is_configurable_and_checked(
    write_toml: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml('[m]\nlayers = [{ repeat = 40, type = "Identity" }]\n')
    monkeypatch.setenv(MAX_NODES_ENV, "30")
    with pytest.raises(SpecError, match="m expands to more than 30 nodes"):
        zoo.build("m", registry=[path])
    monkeypatch.setenv(MAX_NODES_ENV, "200")
    assert len(zoo.build("m", registry=[path])) == 40
    monkeypatch.setenv(MAX_NODES_ENV, "lots")
    with pytest.raises(SpecError, match=f"{MAX_NODES_ENV} must be a positive whole number"):
        zoo.build("m", registry=[path])


def test_3_every_registry_entry_fits_the_budget_a_hundred_times() -> None:
    from zoo._language import resolve
    from zoo._plugins import discovery

    registry = discovery.current()
    largest = 0
    for name in registry.names():
        provider = registry.resolve(name)
        if provider.entry is None:
            continue
        resolver = resolve._Resolver(registry, DEFAULT_MAX_NODES)
        resolver.entry(provider.entry, {}, name)
        largest = max(largest, DEFAULT_MAX_NODES - resolver.budget)
    assert 0 < largest * 100 <= DEFAULT_MAX_NODES  # each real architecture fits a hundred times over


# --- 1-3 through a saved folder: zoo load DIR, zoo.load, zoo pull ---------------------------------------

HOSTILE_DECLARATIONS = {
    "deep_expression": {"type": "Linear", "in_features": 3, "out_features": "${" + "-" * 200 + "1}"},
    "large_value": {"type": "Identity", "foo": "x${[[[1] * 4096] * 4096] * 4096}"},
    "repeats": {"layers": [{"repeat": 10000, "layers": [{"repeat": 10000, "type": "Identity"}]}]},
}
HOSTILE_MESSAGES = {
    "deep_expression": "nested too deeply",
    "large_value": "at most 16384",
    "repeats": "expands to more",
}


def _hostile_folder(tmp_path: Path, case: str) -> Path:
    folder = zoo.save(zoo.build("mlp"), tmp_path / case)
    config = json.loads((folder / "config.json").read_text())
    config["declaration"] = HOSTILE_DECLARATIONS[case]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case", HOSTILE_DECLARATIONS)
def test_1_to_3_hold_through_a_saved_folder(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_NODES_ENV, "50000")  # the path is under test here; the default budget is above
    folder = _hostile_folder(tmp_path, case)
    with deadline(60), pytest.raises(SpecError, match=HOSTILE_MESSAGES[case]) as err:
        zoo.load(folder)
    assert str(folder / "config.json") in str(err.value)
    code, _, stderr = run(capsys, "load", str(folder))
    assert code == 2 and HOSTILE_MESSAGES[case] in stderr


@pytest.mark.parametrize("case", HOSTILE_DECLARATIONS)
def test_1_to_3_hold_through_zoo_pull(
    case: str, server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_NODES_ENV, "50000")
    folder = _hostile_folder(tmp_path, case)
    server.put_files(f"org/{case}", {p.name: p.read_bytes() for p in folder.iterdir()})
    with deadline(60), pytest.raises(ZooError, match=HOSTILE_MESSAGES[case]):
        zoo.pull(f"org/{case}", endpoint=server.url, cache_dir=tmp_path / "cache", token="t")
    code, _, err = run(capsys, "pull", f"org/{case}", "--endpoint", server.url, "--cache-dir", str(tmp_path / "c2"))
    assert code == 2 and HOSTILE_MESSAGES[case] in err
    assert re.search(r"config\.json", err)


# --- 4 and 5. names that are Module attributes, fx names or Python keywords --------------------------------

ATTRIBUTE_NAMES = ["self", "forward", "training", "type", "parameters", "__class__", "_parameters", "__dict__"]
ATTRIBUTE_NAMES += ["code", "graph", "meta", "zoo_info", "class", "lambda", "0"]


def _every_name_entry(name: str) -> str:
    """A dataflow block with a child, a parameter and an input all named like attributes; `name` for the child."""
    return f"""
[m]
input = [2, 3]
inputs = ["self", "class"]
params = {{ forward = [3], type = [3, 3] }}
tie = {{ "{name}.weight" = "training.weight" }}
[m.layers]
training = {{ type = "Linear", in_features = 3, out_features = 3, in = "self" }}
{name} = {{ type = "Linear", in_features = 3, out_features = 3, in = "class" }}
sum = {{ op = "add", in = ["training", "{name}"] }}
scaled = {{ op = "mul", in = ["sum", "forward"] }}
out = {{ op = "matmul", in = ["scaled", "type"] }}
"""


@pytest.mark.parametrize(
    "name", [n for n in ATTRIBUTE_NAMES if n not in ("training", "self", "class", "forward", "type")]
)
def test_4_any_state_dict_key_works_as_a_dataflow_name(name: str, write_toml: Callable[..., Path]) -> None:
    path = write_toml(_every_name_entry(name))
    model = zoo.build("m", registry=[path])
    keys = ["forward", "type", "training.weight", "training.bias", f"{name}.weight", f"{name}.bias"]
    assert list(model.state_dict()) == keys
    assert [n for n, _ in model.named_modules()] == ["", "training", name]
    assert model.get_submodule(name) is model._modules[name] and model.get_parameter("forward").shape == (3,)
    assert model._modules[name].weight is model._modules["training"].weight  # the tie, by declared keys
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    with torch.no_grad():
        model.get_parameter("forward").fill_(2.0)
        model.get_parameter("type").copy_(torch.eye(3))
        training, other = model._modules["training"], model._modules[name]
        expected = (training(x) + other(y)) * 2.0
    assert torch.allclose(model(x, y), expected)
    model.eval()  # nn.Module's own `self.training = False` lands on the attribute, not the child
    assert model.training is False and model._modules["training"].training is False
    assert callable(model.forward) and not isinstance(model.forward, torch.nn.Module)
    twin = zoo.build("m", registry=[path])
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin(x, y), model(x, y))
    assert torch.equal(copy.deepcopy(model)(x, y), model(x, y))


def test_4_the_generated_code_names_what_would_clash_otherwise(write_toml: Callable[..., Path]) -> None:
    model = zoo.build("m", registry=[write_toml(_every_name_entry("parameters"))])
    code = model.code
    assert "def forward(self, _self, _class):" in code
    assert "self._training(" in code and "self._parameters_(" not in code and "self._forward" in code
    assert "self.self" not in code and " self = " not in code


def test_4_a_model_with_such_names_saves_loads_and_compiles(tmp_path: Path, write_toml: Callable[..., Path]) -> None:
    model = zoo.build("m", registry=[write_toml(_every_name_entry("parameters"))])
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    loaded = zoo.load(zoo.save(model, tmp_path / "saved"))
    assert torch.equal(loaded(x, y), model.eval()(x, y))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x, y), model(x, y))


def test_4_a_chain_takes_the_same_names(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[c]\ninput = [2, 3]\n[c.layers]\n"
        'forward = { type = "Linear", in_features = 3, out_features = 3 }\ntraining = "ReLU"\ntype = "Identity"\n'
    )
    model = zoo.build("c", registry=[path])
    assert isinstance(model, torch.nn.Sequential) and list(model.state_dict()) == ["forward.weight", "forward.bias"]
    model.eval()
    assert model.training is False and str(model).startswith("Sequential(")
    assert model(torch.ones(2, 3)).shape == (2, 3)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '[m]\ntype = "ModuleDict"\nlayers = { ok = "ReLU", forward = "ReLU" }\n',
            ":3: m -> layers.forward: 'forward' cannot name a child of ModuleDict: ModuleDict registers",
        ),
        (
            '[m]\ntype = "MySequential"\n[m.layers]\nok = "ReLU"\neval = "ReLU"\n',
            ":5: m -> layers.eval: 'eval' cannot name a child of MySequential",
        ),
        (
            '[m]\ninput = [2, 3]\n[m.layers]\ninner = { type = "t", in = { class = "x" } }\n\n'
            '[t]\ninputs = ["class"]\nlayers = { a = { op = "relu", in = "class" } }\n',
            ":4: m -> layers.inner: `in` or `call` passes 'class' by name, which no Python call can",
        ),
        (
            '[m]\ninput = [2, 3]\n[m.layers]\ninner = { type = "Linear", in_features = 3, out_features = 3, '
            'in = { self = "x" } }\n',
            ":4: m -> layers.inner: `in` or `call` passes 'self' by name",
        ),
    ],
    ids=["module_dict", "my_sequential", "keyword_by_name", "self_by_name"],
)
def test_5_a_name_that_truly_cannot_be_used_is_refused_at_file_and_line(
    body: str, message: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(body)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}{message}" in err, err


def test_5_keywords_and_self_as_inputs_work_by_position(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[m]\ninputs = ["self", "class", "lambda"]\n[m.layers]\n'
        'a = { op = "add", in = ["self", "class"] }\nb = { op = "mul", in = ["a", "lambda"] }\n'
    )
    model = zoo.build("m", registry=[path])
    assert torch.equal(model(torch.ones(2), torch.ones(2), torch.full((2,), 3.0)), torch.full((2,), 6.0))


# --- 6. parameters larger than the machine ---------------------------------------------------------------

HUGE = '[m]\ninput = [2, 3]\nparams = { w = [100000, 100000, 1000] }\n[m.layers]\na = { op = "identity", in = "x" }\n'


def test_6_a_parameter_no_memory_here_can_hold_is_refused_by_check_and_by_build_before_allocating(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(HUGE)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:1: m -> params.w: a tensor of shape (100000, 100000, 1000)" in err
    assert "40,000,000,000,000 bytes (36.4 TiB), more than this machine's memory" in err
    code, _, err = run(capsys, "build", "m", "--registry", str(path))
    assert code == 2 and f"{path}:1: m -> params.w of shape (100000, 100000, 1000)" in err
    assert "needs 40,000,000,000,000 bytes" in err and "free" in err


def test_6_on_the_meta_device_any_size_builds(write_toml: Callable[..., Path]) -> None:
    with torch.device("meta"):
        model = zoo.build("m", registry=[write_toml(HUGE)])
    assert model.get_parameter("w").shape == (100000, 100000, 1000)


def test_6_a_block_whose_tensors_cannot_be_allocated_is_a_device_error_with_its_bytes(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        '[m]\ninput = [2, 4]\nlayers = [{ type = "Linear", in_features = 1000000, out_features = 10000000 }]\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:3: m -> layers[0] -> weight: a tensor of shape (10000000, 1000000)" in err
    with pytest.raises(zoo.DeviceError, match=re.escape("Linear(...) asked for a tensor of 40,000,000,000,000 bytes")):
        zoo.build("m", registry=[path])


# --- 7. an error inside fx's generated code ------------------------------------------------------------------

CHUNKS = (
    '[m]\ninput = [2, 4]\n[m.layers]\ns = { op = "chunk", chunks = 2, dim = 1 }\nt = { op = "identity", in = "s[5]" }\n'
)


def test_7_an_item_out_of_range_is_caught_at_check_with_its_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(CHUNKS)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:5: m -> layers.t: with the declared input [2, 4], 's[5]' picks item 5 of 's', which gives 2" in err


def test_7_fx_never_prints_its_own_traceback(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(CHUNKS)
    code, out, err = run(capsys, "build", "m", "--registry", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "generated forward" not in err + out and "FX" not in err + out
    model = zoo.build("m", registry=[path], input_shape=None)
    with pytest.raises(IndexError):  # the model's own error, raised as it is
        model(torch.zeros(2, 4))
    assert "generated forward" not in capsys.readouterr().err


def test_7_an_op_that_fails_is_named_at_its_own_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        '[m]\ninput = [2, 4]\n[m.layers]\na = { type = "Linear", in_features = 4, out_features = 3, in = "x" }\n'
        'b = { op = "cat", in = ["a", "x"], dim = 0 }\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:5: m -> layers.b: with the declared input [2, 4], op 'cat' got (2, 3), (2, 4)" in err


# --- 9 and 10. what build refuses, check refuses -----------------------------------------------------------------

TWO_LINEARS = (
    '[m]\ninput = [2, 4]\ntie = {{ {tie} }}\n[m.layers]\na = {{ type = "Linear", in_features = 4, out_features = 4 }}\n'
    'bn = {{ type = "BatchNorm1d", num_features = 4 }}\n'
    'b = {{ type = "Linear", in_features = 4, out_features = {out}, in = "x" }}\n'
)


@pytest.mark.parametrize(
    "tie, out, message",
    [
        ('"a.weight" = "b.weight"', 8, "'a.weight' has shape (4, 4) but 'b.weight' has (8, 4)"),
        ('"a.__class__" = "b.weight"', 4, "Linear has no parameter `__class__`"),
        ('"a.weight" = "bn.running_mean"', 4, "`bn.running_mean` is a buffer, not a parameter"),
        ('"a.bias" = "bn.weight"', 4, None),  # a tie that fits: no problem
    ],
    ids=["shapes", "attribute", "buffer", "fits"],
)
def test_9_ties_that_build_refuses_check_refuses(
    tie: str, out: int, message: str | None, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(TWO_LINEARS.format(tie=tie, out=out))
    code, _, err = run(capsys, "check", str(path))
    if message is None:
        assert code == 0, err
        model = zoo.build("m", registry=[path])
        assert model._modules["a"].bias is model._modules["bn"].weight
        return
    assert code == 2 and f"{path}:1: m -> tie:" in err and message in err, err
    with pytest.raises(ZooError, match=re.escape(message)):
        zoo.build("m", registry=[path])


@pytest.mark.parametrize(
    "layer, message",
    [
        ('{ type = "Linear", in_features = 4, out_features = "${-5}" }', "negative dimension -5"),
        ('{ type = "Conv1d", in_channels = 4, out_channels = 4, kernel_size = 1, groups = 3 }', "divisible by groups"),
        ('{ type = "Dropout", p = 1.5 }', "dropout probability has to be between 0 and 1"),
    ],
    ids=["negative", "groups", "probability"],
)
def test_10_constructor_argument_checks_run_at_check_on_meta(
    layer: str, message: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(f"[m]\ninput = [2, 4, 3]\nlayers = [{layer}]\n")
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:3: m -> layers[0]:" in err and message in err, err


@pytest.mark.parametrize(
    "buffer, message",
    [
        ('{ op = "tensor", data = [[1, 2], [3]] }', "expected sequence of length 2 at dim 1"),  # meta takes it silently
        ('{ op = "arange", end = 1000000000000 }', "an op makes at most 268,435,456"),
        ('{ op = "full", shape = [2, 2], fill_value = "x" }', "expects float"),
    ],
    ids=["ragged", "huge", "value"],
)
def test_buffers_that_build_refuses_check_refuses(
    buffer: str, message: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        f'[m]\ninput = [2, 2]\ninputs = ["x"]\n[m.buffers]\nt = {buffer}\n'
        '[m.layers]\ns = { op = "add", in = ["x", "t"] }\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:5: m -> buffers.t" in err and message in err, err
    with pytest.raises(ZooError, match=re.escape(message)):
        zoo.build("m", registry=[path])


def test_check_takes_files_as_arguments_and_as_registry_options(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    good = write_toml('[ok]\ninput = [2, 3]\nlayers = [{ type = "Linear", in_features = 3, out_features = 2 }]\n')
    bad = write_toml(CHUNKS)
    assert run(capsys, "check", str(good))[:2] == (0, "ok: 1 entries checked, no problems\n")
    assert run(capsys, "check", "--registry", str(good))[:2] == (0, "ok: 1 entries checked, no problems\n")
    code, _, err = run(capsys, "check", str(good), "--registry", str(bad))
    assert code == 2 and "1 problem(s) in 2 entries" in err
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    assert "What check passes, zoo build builds" in " ".join(capsys.readouterr().out.split())


# --- issue 18's other breaks: unknown keys, locations once, no cascades ---------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '[m]\nparamz = { w = [4, 4] }\n[m.layers]\na = { op = "relu", in = "x" }\n',
            ":2: m: `paramz` is no key of a dataflow block. Did you mean 'params'? A dataflow block takes: layers,",
        ),
        (
            '[m]\n[m.layers]\na = { op = "relu", in = "x" }\n'
            'b = { layers = [{ op = "relu" }], in = "a", whem = true }\n',
            ":4: m -> layers.b: `whem` is no key of a dataflow block. Did you mean 'when'?",
        ),
        (
            '[m]\nkwargs = { a = 1 }\n[m.layers]\na = { op = "relu", in = "x" }\n',
            ":2: m: `kwargs` passes constructor arguments, and a dataflow block has no constructor",
        ),
        (
            '[m]\ntype = "Linear"\nin_features = 4\nout_features = 4\nlayerz = ["ReLU"]\n',
            ":5: m: Linear has no argument 'layerz'. Did you mean the language key `layers`?",
        ),
        (
            '[m]\n[m.layers]\na = { op = "relu", in = "x", repaet = 2 }\n',
            ":3: m -> layers.a: op 'relu' has no argument 'repaet'. Did you mean the language key `repeat`?",
        ),
    ],
    ids=["dataflow_entry", "dataflow_child", "kwargs_of_a_graph", "typed_block", "op"],
)
def test_an_unknown_key_anywhere_is_an_error_with_the_nearest_known_key(
    body: str, message: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(body)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}{message}" in err, err


def test_the_known_keys_come_from_one_table() -> None:
    from zoo._language import declarations

    assert set(declarations.GRAPH_NODE_KEYS) == set(declarations.BLOCK_KEYS) - {"type", "kwargs"}
    assert set(declarations.BLOCK_NODE_KEYS) == declarations.LANGUAGE_KEYS


def test_each_location_is_printed_once(capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]) -> None:
    path = write_toml('[m]\ninput = [2, 4]\n[m.layers]\na = { op = "relu", in = "x", bogus = 1 }\n')
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and err.count(f"{path}:4") == 1 and f"{path}:4: m -> layers.a: op 'relu' has no argument" in err


def test_a_failed_child_does_not_cascade_into_false_errors(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        "[m]\ninput = [2, 4]\n[m.layers]\n"
        'conv = { type = "Linear", in_features = 4, out_features = 4, bias = "${nope}", in = "x" }\n'
        'act = { op = "relu" }\n'  # takes conv's output without saying so
        'b = { op = "add", in = ["conv", "x"] }\n'
        'c = { op = "softmax", in = "b", dim = "x" }\n'  # its own mistake is still reported
        'd = { op = "add", in = ["c", "nothere"] }\n'  # and so is a name that is truly not declared
        '"e${nope}" = { op = "relu", in = "x" }\n'  # a name that cannot be known: what follows stays quiet
        'f = { op = "relu", in = "e1" }\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:4: m -> layers.conv -> bias: '${{nope}}': 'nope' is not a declared argument" in err
    assert f"{path}:7: m -> layers.c -> dim: op 'softmax' expects int" in err
    assert f"{path}:8: m -> layers.d: `in` refers to 'nothere', which is no input" in err
    assert f"{path}:9: m -> layers.e${{nope}} (its name): 'e${{nope}}'" in err
    assert "'conv', which is no input" not in err and "'b', which" not in err and "'e1'" not in err
    assert err.count("error:") == 4, err


# --- 8. key-map patterns that backtrack ----------------------------------------------------------------------

EVIL = "^(a+)+$"


def test_8_a_catastrophic_pattern_matches_in_linear_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    from safetensors.torch import save_file

    file = tmp_path / "w.safetensors"
    save_file({"a" * (MAX_KEY - 1) + "!": torch.zeros(3)}, str(file))  # re would outlast the universe
    started = time.perf_counter()
    code, _, err = run(capsys, "load-weights", "mlp", str(file), "--rename", f"{EVIL}=x")
    assert code == 2 and "does not fit the model" in err
    path = write_toml(f'[m]\ntype = "mlp"\nweights = {{ rename = [["{EVIL}", "x"], ["^(a|a)*b$", "y"]] }}\n')
    assert run(capsys, "check", str(path))[0] == 0
    with pytest.raises(ZooError, match="does not fit the model"):
        zoo.load_weights(zoo.build("m", registry=[path]), file)
    assert time.perf_counter() - started < 20  # a bound, not a benchmark: RE2 takes milliseconds


def test_8_a_pattern_only_a_backtracking_matcher_can_run_is_refused_at_its_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml('[m]\ntype = "mlp"\n\nweights = { rename = [["^(a)\\\\1$", "x"]] }\n')
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:4: m -> weights -> rename[0]: the pattern" in err
    assert "without backreferences or lookarounds" in err and "invalid escape sequence" in err
    assert err.count("\n") == 2  # RE2's own log line never reaches the terminal


def test_8_a_pattern_too_large_to_match_quickly_is_refused() -> None:
    with pytest.raises(SpecError, match=f"compiles to 3004 instructions, more than the {MAX_PROGRAM}"):
        KeyMap.from_table({"rename": [["(b*){1000}", "x"]]})
    long = "a" * (MAX_KEY + 1)
    assert KeyMap.from_table({"rename": [["a", "b"]], "add_prefix": "p."})(long) == "p." + long  # left as it is


@pytest.mark.parametrize(
    "pattern, replacement, key",
    [
        (r"^blocks\.(\d+)", r"h.\1", "blocks.11.attn.weight"),
        (r"(?P<layer>\w+)\.w$", r"\g<layer>.weight", "fc.w"),
        (r"$", ".w", "fc"),
        (r"x*", "-", "abc"),
        (r"^", "net.", "a.b"),
        (r"\.(\d+)\.", r"[\1]", "h.0.attn.1.x"),
        (r"(a)|b", r"<\1>", "ab"),
    ],
)
def test_8_renames_keep_re_subs_meaning(pattern: str, replacement: str, key: str) -> None:
    assert KeyMap.from_table({"rename": [[pattern, replacement]]})(key) == re.sub(pattern, replacement, key)


# --- zoo show --graph of a huge declaration --------------------------------------------------------------------


def test_a_picture_too_large_to_draw_is_refused_before_any_shape_pass(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path], tmp_path: Path
) -> None:
    from zoo._show import picture

    path = write_toml(
        '[big]\ninput = [2, 4]\nlayers = [{ repeat = 10000, type = "Linear", in_features = 4, out_features = 4 }]\n'
    )
    started = time.perf_counter()
    code, _, err = run(capsys, "show", "big", "--registry", str(path), "--graph", str(tmp_path / "big.dot"))
    assert time.perf_counter() - started < 30  # a bound: the meta pass alone would take about 20 s
    assert code == 2 and f"at depth 1 its picture holds more than {picture.MAX_NODES:,} nodes" in err
    assert not (tmp_path / "big.dot").exists()


def test_the_default_depth_stops_drawing_as_soon_as_a_level_is_too_large(
    write_toml: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_toml(
        '[huge]\ninput = [2, 4]\nlayers = [{ repeat = 3, type = "block" }]\n\n'
        '[block]\nlayers = [{ repeat = 3000, type = "ReLU" }]\n'
    )
    started = time.perf_counter()
    diagram = zoo.draw("huge", tmp_path / "huge.dot", registry=path, input_shape=(2, 4))
    assert diagram.depth == 1 and len(diagram.nodes) == 5 and diagram.levels == 2
    assert time.perf_counter() - started < 30
    with pytest.raises(zoo.ArgumentError, match="Draw fewer levels \\(--depth 1\\)"):
        zoo.draw("huge", tmp_path / "huge.dot", registry=path, depth=2)


def test_shapes_are_left_out_of_a_model_too_large_to_measure(
    write_toml: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zoo._show import picture

    monkeypatch.setattr(picture, "MAX_MEASURED", 10)
    path = write_toml('[m]\ninput = [2, 4]\nlayers = [{ repeat = 20, type = "ReLU" }]\n')
    diagram = zoo.draw("m", tmp_path / "m.dot", registry=path)
    assert diagram.note == "no shapes: the model has 21 blocks, and one pass measures at most 10"
    assert all(node.shape == "" for node in diagram.nodes if node.kind == "block")
