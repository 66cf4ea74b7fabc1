"""Validation before construction: every bad declaration is refused with where, what, and the nearest name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

import zoo
from zoo._build import check
from zoo._language.registry import Registry


def _problems(registry_path: Path) -> list[str]:
    from zoo._build import builder
    from zoo._language.registry import USER

    return [str(e) for e in check.check_registry(builder.registry_for(registry_path), origins={USER})]


def test_misspelt_argument_is_refused_at_check_time_with_the_right_name(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[tiny]\ntype = "Linear"\nin_features = 3\nout_feature = 4\n')
    (message,) = _problems(path)
    assert f"{path}:4" in message
    assert "has no argument 'out_feature'" in message and "Did you mean 'out_features'?" in message
    assert "missing required argument 'out_features'" not in message
    with pytest.raises(zoo.ArgumentError, match="out_features"):
        zoo.build("tiny", registry=path)


def test_unknown_type_deep_inside_points_at_its_path(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[net]\nlayers = [\n  "ReLU",\n  { type = "Linaer", in_features = 2, out_features = 2 },\n]\n')
    (message,) = _problems(path)
    assert f"{path}:4: net -> layers[1]" in message
    assert "unknown block or entry 'Linaer'. Did you mean 'Linear'?" in message


def test_missing_argument(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[a]\ntype = "Linear"\nin_features = 3\n')
    assert _problems(path) == [f"{path}:1: a: Linear is missing required argument 'out_features'."]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"sixteen"', "expects int, got str 'sixteen'"),
        ("2.5", "expects int, got float 2.5"),
        ("true", "expects int"),
        ("{ a = 1 }", "expects int, got a table { a = 1 }"),
        ("[1, 2]", "expects int, got an array [1, 2]"),
    ],
)
def test_wrong_value_type(write_toml: Callable[..., Path], value: str, expected: str) -> None:
    path = write_toml(f'[a]\ntype = "Linear"\nin_features = {value}\nout_features = 2\n')
    (message,) = _problems(path)
    assert f"{path}:3: a -> in_features: Linear {expected}" in message


def test_union_and_tuple_annotations_accept_what_torch_accepts(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[c]\ntype = "Conv2d"\nin_channels = 1\nout_channels = 2\nkernel_size = [3, 3]\npadding = "same"\n'
        '[d]\ntype = "Conv2d"\nin_channels = 1\nout_channels = 2\nkernel_size = 3\nbias = 0\n'
    )
    (message,) = _problems(path)
    assert "d -> bias: Conv2d expects bool, got int 0" in message


def test_cycles_are_found(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[a]\nlayers = ["b"]\n[b]\nlayers = ["ReLU", "a"]\n[self]\ntype = "self"\n')
    messages = _problems(path)
    assert any("loop: a -> b -> a" in m for m in messages)
    assert not any("loop: b -> a -> b" in m for m in messages)  # one loop, reported once
    assert any("loop: self -> self" in m for m in messages)
    with pytest.raises(zoo.CycleError):
        zoo.build("a", registry=path)


def test_redefining_a_name_needs_replace(write_toml: Callable[..., Path]) -> None:
    first = write_toml('[net]\ntype = "ReLU"\n')
    second = write_toml('[net]\ntype = "Tanh"\n')
    with pytest.raises(zoo.DuplicateNameError, match=rf"{first}:1 and {second}:1.*replace = true"):
        zoo.build("net", registry=[first, second])
    third = write_toml('[net]\ntype = "Tanh"\nreplace = true\n')
    assert isinstance(zoo.build("net", registry=[first, third]), nn.Tanh)


def test_redefining_a_builtin_entry_needs_replace(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[mlp]\ntype = "ReLU"\n')
    with pytest.raises(zoo.DuplicateNameError, match="'mlp' is defined more than once"):
        zoo.build("mlp", registry=path)
    assert isinstance(zoo.build("mlp", registry=write_toml('[mlp]\ntype = "ReLU"\nreplace = true\n')), nn.ReLU)


def test_a_file_named_twice_is_one_declaration_not_a_clash(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from zoo import cli

    path = write_toml('[net]\ntype = "ReLU"\n')
    link = tmp_path / "link.toml"
    link.symlink_to(path)
    assert isinstance(zoo.build("net", registry=[path, link]), nn.ReLU)
    builtin_file = Path(zoo.__file__).parent / "architectures" / "hf_llama.toml"  # one of zoo's own files
    assert cli.main(["check", "--registry", str(builtin_file)]) == 0
    assert "entries checked, no problems" in capsys.readouterr().out
    copy = write_toml(builtin_file.read_text())  # a copy is another declaration: it needs `replace = true`
    assert cli.main(["check", "--registry", str(copy)]) == 2
    assert "'hf_llama' is defined more than once" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[a]\nargs = { width = 4 }\nlayers = [{ type = "Linear", in_features = 2, out_features = "${widht}" }]',
            r"'\$\{widht\}': 'widht' is not a declared argument. Did you mean 'width'\?",
        ),
        (
            '[a]\nshared = { tied = { type = "ReLU" } }\nlayers = ["@tide"]',
            "'@tide' names no shared block. Did you mean 'tied'",
        ),
        (
            '[a]\ntype = "Linear"\nin_features = 2\nout_features = 2\ninit = { "*" = "xavier_uniformm" }',
            "unknown init function 'xavier_uniformm'. Did you mean 'xavier_uniform'",
        ),
        (
            '[a]\ntype = "Linear"\nin_features = 2\nout_features = 2\ninit = { "*" = { fn = "normal", sd = 1 } }',
            "init function 'normal' has no argument 'sd'. Did you mean 'std'",
        ),
        ('[a]\ntype = "mlp"\nlayers = ["ReLU"]', "'mlp' is a declared entry; it takes no `layers`"),
        ('[a]\ntype = "mlp"\nhiden = 3', "'mlp' has no argument 'hiden' to override. Did you mean 'hidden'"),
        ('[a]\ntype = "ReLU"\nlayers = ["ReLU"]', "ReLU takes no child blocks"),
    ],
)
def test_reference_errors(write_toml: Callable[..., Path], text: str, message: str) -> None:
    path = write_toml(text)
    messages = _problems(path)
    assert any(__import__("re").search(message, m) for m in messages), messages


def test_build_overrides_are_checked(builtin_only: Registry) -> None:
    with pytest.raises(
        zoo.ArgumentError, match="'mlp' has no argument 'hiden'.*Did you mean 'hidden'.*Overridable: hidden"
    ):
        zoo.build("mlp", hiden=3)
    with pytest.raises(zoo.ArgumentError, match="Linear has no argument 'in_feature'. Did you mean 'in_features'"):
        zoo.build("Linear", in_feature=3, out_features=4)
    with pytest.raises(zoo.UnknownNameError, match="Did you mean 'chimera'"):
        zoo.build("chimra")


def test_nothing_is_constructed_when_any_part_is_wrong(builtin_only: Registry, write_toml: Callable[..., Path]) -> None:
    made = []

    @zoo.register
    def Counted() -> nn.Module:  # noqa: N802 - a block name, as users write them
        made.append(1)
        return nn.Identity()

    path = write_toml('[a]\nlayers = ["Counted", { type = "Linear", in_features = 2 }]\n')
    with pytest.raises(zoo.ArgumentError):
        zoo.build("a", registry=path)
    assert made == []


def test_the_builtin_registry_checks_clean(builtin_only: Registry) -> None:
    assert check.check_registry(builtin_only) == []


def test_errors_subclass_the_natural_builtins() -> None:
    assert issubclass(zoo.UnknownNameError, KeyError) and issubclass(zoo.ArgumentError, TypeError)
    assert issubclass(zoo.SpecError, ValueError) and issubclass(zoo.NotMaterializedError, RuntimeError)
    with pytest.raises(KeyError):
        zoo.build("no_such_model_at_all")
    assert str(zoo.UnknownNameError("plain")) == "plain"  # not KeyError's quoted repr


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_mismatch_reads_the_same_whether_the_check_forward_ran_on_the_cpu_or_on_meta(
    write_toml: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    # A small model is checked on the CPU, a large one on meta (SMALL_BYTES): the user reads one frame.
    if device == "meta":
        monkeypatch.setattr(check, "SMALL_BYTES", 0)
    path = write_toml(
        '[net]\ninput = [2, 20]\n[net.layers]\nfc1 = { type = "Linear", in_features = 20, out_features = 30 }\n'
        'fc2 = { type = "Linear", in_features = 31, out_features = 5 }\n'
    )
    (message,) = _problems(path)
    assert message.startswith(
        f"{path}:5: net -> layers.fc2: with the declared input [2, 20], Linear got (2, 30) and raised: "
    )
    words = {"cpu": "mat1 and mat2 shapes cannot be multiplied (2x30 and 31x5)", "meta": "[2, 30] X [31, 5]"}
    assert words[device] in message  # torch's own words differ between its kernels
    assert message.endswith(f"It follows {path}:4: net -> layers.fc1 (Linear), which gave (2, 30).")


def test_a_small_models_check_takes_token_ids_in_its_declared_range(write_toml: Callable[..., Path]) -> None:
    # On the CPU the input has values: ids below `high`, as zoo build's example input draws them.
    path = write_toml(
        '[lm]\ninput = { shape = [2, 8], dtype = "int64", high = 10 }\n'
        'layers = [{ type = "Embedding", num_embeddings = 10, embedding_dim = 4 }]\n'
        '[too_few]\ninput = { shape = [2, 8], dtype = "int64", high = 11 }\n'
        'layers = [{ type = "Embedding", num_embeddings = 10, embedding_dim = 4 }]\n'
    )
    (message,) = _problems(path)
    assert message.startswith(f"{path}:6: too_few -> layers[0]: with the declared input [2, 8], Embedding got (2, 8)")
    assert "index out of range" in message
