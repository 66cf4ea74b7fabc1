"""The `zoo` command: output on success, one clear message and exit 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's --help and usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_build_chimera_prints_summary_and_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "build", "chimera")
    assert code == 0, err
    assert "FixedHiddenMLP" in out and "Total params: 4,712" in out
    assert "input:  (2, 20)" in out and "output: ()" in out


def test_build_with_overrides_and_input_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "build", "mlp", "--set", "hidden=32", "--input-shape", "3,20")
    assert code == 0
    assert "(3, 32)" in out and "output: (3, 10)" in out


def test_misspelt_name_exits_2_with_a_suggestion_and_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "build", "chimra")
    assert code == 2 and out == ""
    assert "Did you mean 'chimera'?" in err and "Traceback" not in err
    assert len(err.splitlines()) <= 3


def test_check_refuses_a_misspelt_argument(capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]) -> None:
    path = write_toml('[tiny]\ntype = "Linear"\nin_features = 3\nout_feature = 4\n')
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:4" in err and "Did you mean 'out_features'?" in err and "1 problem(s) in 1 entries" in err


def test_check_everything_installed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "check")
    assert code == 0, err
    assert out.startswith("ok: ") and "no problems" in out


def test_check_a_file_that_is_not_toml(capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]) -> None:
    path = write_toml("[oops\n")
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}: invalid TOML" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "mlp", "--set", "hidden"], "'hidden' is not KEY=VALUE"),
        (["build", "mlp", "--input-shape", "two,20"], "'two,20' is not a shape"),
        (["build", "mlp", "--input-shape", "2,x"], "'2,x' is not a shape of positive sizes"),
        (["build", "mlp", "--input-shape", "0,20"], "'0,20' is not a shape of positive sizes"),
        (["build", "mlp", "--input-shape", "2,,20"], "'2,,20' is not a shape of positive sizes"),
        (["build", "mlp", "--input-shape", "2,30"], "forward of 'mlp' on an input of shape (2, 30) failed"),
        (["build", "lazy_mlp"], "'lazy_mlp' declares no example `input`; pass one, e.g. --input-shape 2,20"),
        (["save", "lazy_mlp", "never-written"], "its shapes are unknown; pass one, e.g. --input-shape 2,20"),
        (["build", "mlp", "--set", "hiden=3"], "Did you mean 'hidden'?"),
        (["show", "nest_mpl"], "Did you mean 'nest_mlp'?"),
        (["build", "mlp", "--registry", "/nonexistent.toml"], "registry file not found: /nonexistent.toml"),
        (["bulid", "mlp"], "invalid choice: 'bulid'"),
    ],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    line = next(row for row in out.splitlines() if row.startswith("chimera "))
    assert "entry" in line and "mix-and-match" in line
    assert not any(row.startswith("Linear ") for row in out.splitlines())  # blocks only with --all or a pattern
    _, out, _ = run(capsys, "list", "lin*")
    assert "Linear" in out and "LazyLinear" not in out
    _, out, _ = run(capsys, "list", "--all")
    assert "LazyLinear" in out
    _, out, _ = run(capsys, "list", "nothing_like_it*")
    assert "no names match" in out
    code, out, _ = run(capsys, "show", "mlp", "--set", "hidden=8")
    assert code == 0 and "registry.toml:4" in out and "[mlp]" in out and "out_features = 8" in out


def _commands() -> list[str]:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_command_is_covered_here() -> None:
    assert _commands() == sorted(
        [
            "build",
            "check",
            "devices",
            "inspect",
            "list",
            "load",
            "load-weights",
            "plugins",
            "pull",
            "push",
            "save",
            "show",
        ]
    )


@pytest.mark.parametrize("command", _commands())
def test_help_everywhere(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and f"usage: zoo {command}" in out


def test_version_prints_zoos_version(capsys: pytest.CaptureFixture[str]) -> None:
    import zoo

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"zoo {zoo.__version__}\n"


# Run `zoo ARGV` in a fresh interpreter and report, after it, whether torch was imported.
FRESH = """
import sys
from zoo.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(f"exit={code} torch={'torch' in sys.modules}", file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["check", "--help"], 0),
        (["build", "--help"], 0),
        (["frobnicate"], 2),
        (["build"], 2),
        (["list"], 0),
        (["list", "--all"], 0),
        (["list", "*mlp*", "--registry", "REGISTRY"], 0),
    ],
    ids=["help", "version", "check-help", "build-help", "unknown-command", "missing-argument", "list", "all", "files"],
)
def test_the_command_line_does_not_wait_for_torch(
    argv: list[str], exit_code: int, write_toml: Callable[..., Path]
) -> None:
    # `zoo list` too, with the example plugins installed: they register their blocks by import path
    path = write_toml('[my_mlp]\nlayers = [{ type = "Linear", in_features = 2, out_features = 3 }, "ReLU"]\n')
    argv = [str(path) if a == "REGISTRY" else a for a in argv]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ZOO_")}
    done = subprocess.run([sys.executable, "-c", FRESH, *argv], capture_output=True, text=True, timeout=120, env=env)
    assert done.stderr.splitlines()[-1] == f"exit={exit_code} torch=False", done.stderr
    if argv[-1] == str(path):
        assert "my_mlp" in done.stdout and "user" in done.stdout


def test_check_of_a_small_model_pays_for_torch_alone(write_toml: Callable[..., Path]) -> None:
    # The check forward of a small model runs on the CPU's kernels: meta's Python shape functions would
    # first import torch._dynamo and sympy, a second and a half of every `zoo check` (zoo._build.check).
    path = write_toml('[my_mlp]\ninput = [2, 4]\nlayers = [{ type = "Linear", in_features = 4, out_features = 3 }]\n')
    probe = FRESH + "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules), file=sys.stderr)\n"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ZOO_")}
    done = subprocess.run(
        [sys.executable, "-c", probe, "check", "--registry", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.stderr.splitlines()[-2:] == ["exit=0 torch=True", "[]"], done.stderr
    assert "1 entries checked, no problems" in done.stdout


def test_an_x_separated_shape_works(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "build", "mlp", "--input-shape", "3x20")
    assert code == 0 and "output: (3, 10)" in out


def test_warnings_reach_the_terminal_as_one_line() -> None:
    script = Path(sys.executable).with_name("zoo")
    env = {**__import__("os").environ, "ZOO_DISABLE_PLUGINS": "convnetz"}
    done = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0
    (line,) = [row for row in done.stderr.splitlines() if row.strip()]
    assert line.startswith("zoo: warning: ZOO_DISABLE_PLUGINS names 'convnetz'") and "Did you mean 'convnets'" in line


def test_the_installed_script_runs_in_a_fresh_process() -> None:
    script = Path(sys.executable).with_name("zoo")
    done = subprocess.run([str(script), "build", "chimra"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Did you mean 'chimera'?" in done.stderr and "Traceback" not in done.stderr


def test_a_reader_that_stops_early_is_no_error() -> None:
    # `zoo show NAME | head -1`: the pipe closes after one line.
    zoo = Path(sys.executable).with_name("zoo")
    done = subprocess.run(
        f"'{zoo}' show tv_densenet121 | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.startswith("# tv_densenet121") and "error" not in done.stderr
    piped = subprocess.run([str(zoo), "show", "tv_densenet121"], capture_output=True, timeout=120)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) > 100  # a long output, so head closes early
