"""The command line speaks its own words: flags and zoo commands, never keyword arguments, and hf://org/name,
never a path inside huggingface_hub's cache. Python callers get Python's words for the same errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import zoo
from tests.hubserver import HubServer
from zoo import cli

PYTHON_WORDS = re.compile(r"\b[a-z_]+=(?:\s|False|True|None|'|\"|\(|\{|\[|\.\.\.)|\bzoo\.[a-z_]+\(")


pytestmark = pytest.mark.usefixtures("hub_client_settings")  # every test here, with a server or not


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str], *, usage: bool = False) -> str:
    """What `zoo ARGV` prints on stderr; it must exit 2 (bad input) without a traceback."""
    if usage:  # argparse refuses the flag itself
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
    else:
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: " if usage else "zoo: error: "), err
    return err


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    zoo.save(zoo.build("mlp", hidden=8), tmp_path / "mlp8")
    (tmp_path / "plain").mkdir()
    zoo.save_tensors({"w": torch.zeros(2)}, tmp_path / "plain" / "model.safetensors")
    (tmp_path / "empty").mkdir()
    return {"mlp8": tmp_path / "mlp8", "plain": tmp_path / "plain", "empty": tmp_path / "empty", "tmp": tmp_path}


def test_a_misfit_says_non_strict_at_the_cli_and_strict_false_in_python(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = error_of(["load-weights", "mlp", str(folders["mlp8"])], capsys)
    assert "Pass --non-strict" in err and "strict=False" not in err
    with pytest.raises(zoo.WeightsError, match="Pass strict=False"):
        zoo.load_weights(zoo.build("mlp"), folders["mlp8"])
    assert cli.main(["load-weights", "mlp", str(folders["mlp8"]), "--non-strict"]) == 0
    assert "did not fit (not loaded)" in capsys.readouterr().out


def test_every_cli_error_on_these_paths_speaks_cli(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "weights only": (["load", str(folders["plain"])], f"zoo load-weights NAME {folders['plain']}"),
        "no save": (["load", str(folders["empty"])], f"zoo save NAME {folders['empty']}"),
        "a file": (["load", str(folders["plain"] / "model.safetensors")], "zoo load-weights NAME"),
        "no device": (["load", str(folders["mlp8"]), "--device", "cuda:7"], "--device auto"),
        "lazy plan": (["devices", "--plan", "lazy_mlp"], "--input-shape"),
        "two revisions": (["pull", "org/x@a", "--revision", "b"], "--revision b"),
        "push no config": (["push", str(folders["plain"]), "org/x"], "zoo save NAME"),
        "create pr": (["push", str(folders["mlp8"]), "org/x", "--create-pr", "--branch", "dev"], "--branch dev"),
    }
    for name, (argv, said) in cases.items():
        err = error_of(argv, capsys)
        assert said in err, (name, err)
        assert not PYTHON_WORDS.search(err), (name, err)


def test_bad_sizes_are_the_flags_errors(folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["save", "mlp", str(folders["tmp"] / "x"), "--max-shard-size", "2XB"], capsys, usage=True)
    assert "--max-shard-size" in err and "'2XB' is not a size" in err
    err = error_of(["devices", "--plan", "mlp", "--max-memory", "cpu=lots"], capsys, usage=True)
    assert "--max-memory" in err and "'lots' is not a size" in err


def test_a_hub_source_is_named_by_its_address_not_the_cache(
    server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    zoo.push(zoo.build("mlp", hidden=8), "org/mlp8", endpoint=server.url, token="test-token")
    cache = tmp_path / "cache"
    argv = ["load-weights", "mlp", "hf://org/mlp8", "--endpoint", server.url, "--cache-dir", str(cache)]
    err = error_of(argv, capsys)
    assert "hf://org/mlp8 does not fit" in err and str(cache) not in err and "--non-strict" in err
    with pytest.raises(zoo.WeightsError, match=r"^hf://org/mlp8 does not fit") as caught:
        zoo.load_weights(zoo.build("mlp"), "hf://org/mlp8", endpoint=server.url, cache_dir=cache)
    assert str(cache) not in str(caught.value)
