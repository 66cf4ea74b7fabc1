"""The nine inputs an outside fuzzing found (issue 14), each kept as a named regression test.

Every one of them hung zoo, crashed it with exit 1, or exhausted memory. Each must now give
exit 2 (CLI) or a ZooError (API) within seconds, naming the file and where in it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import zoo
from zoo import checkpoint, cli
from zoo._errors import ArgumentError, HubError, SpecError, WeightsError, ZooError
from zoo._files import jsonio
from zoo._hub import client
from zoo._language import declarations

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer  # noqa: E402


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
    with deadline(60):
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


# --- 1. the key-line scanner -------------------------------------------------------------------

HANG = '[m]\nlayers = [{ type = "Identity", note = """\\"""#""", tags = ["",\n{ e = "}z" }] }]\n'


def test_1_escaped_quotes_in_a_multiline_string_do_not_hang_check(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(HANG)
    code, out, err = run(capsys, "check", str(path))
    assert code == 0, err
    assert "1 entries checked" in out
    lines = declarations._locate_keys(HANG)
    assert lines[("m", "layers", 0, "tags", 1)] == 3  # the scanner followed the string to its real end
    assert lines[("m", "layers", 0, "tags", 1, "e")] == 3


def test_1_an_escaped_triple_quote_before_a_brace_is_not_an_internal_error(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    text = '[m]\ntype = "ReLU"\ndoc = """\\"""}"""\nbad = 1\n'
    code, _, err = run(capsys, "check", str(write_toml(text)))
    assert code == 2
    assert ":4: m: ReLU has no argument 'bad'" in err  # lines after the string are still located


@pytest.mark.parametrize(
    "text",
    [
        '[m]\nx = """a\\\\"""\ny = 1\n',  # an escaped backslash, then the real end
        "[m]\nx = '''a\\'''\ny = 1\n",  # literal strings have no escapes
        '[m]\nx = """a""""\ny = 1\n',  # four quotes: one belongs to the text
        '[m]\nx = ["a", \'b\', """c\n"""]\ny = 1\n',
    ],
)
def test_1_the_scanner_finds_the_lines_after_tricky_strings(text: str) -> None:
    with deadline(5):
        assert declarations._locate_keys(text)[("m", "y")] == text.count("\n")  # the last line


@pytest.mark.parametrize("text", ["[m]\nx = [", '[m]\nx = { a = "', "[m]\nx = [1, }", '[m]\nx = """'])
def test_1_the_scanner_stops_on_text_it_cannot_follow(text: str) -> None:
    with deadline(5):
        declarations._locate_keys(text)  # not valid TOML: no lines promised, but no hang or error


# --- 2. deep nesting ------------------------------------------------------------------------------


def test_2_hundreds_of_nested_tables_are_a_spec_error_with_a_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    header = "m" + "".join(f".layers.a{i}" for i in range(250))
    path = write_toml(f'[{header}]\ntype = "Identity"\n')
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:1: m.layers.a0…: nested more than {declarations.MAX_NESTING} levels deep" in err
    with pytest.raises(SpecError, match="nested more than"):
        declarations.parse_file(path)


def test_2_an_array_nested_a_thousand_deep_is_a_spec_error_with_a_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml('[m]\ntype = "Identity"\n\nx = ' + "[" * 1000 + "]" * 1000 + "\n")
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:4: " in err and "nested more than" in err


def test_2_an_integer_too_long_for_python_is_a_registry_error_with_a_line(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml('[m]\ntype = "Identity"\ninput = ' + "9" * 5000 + "\n")  # found by tests/test_fuzz.py
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:3: a value TOML allows but Python refuses" in err
    code, _, err = run(capsys, "build", "mlp", "--set", "hidden=" + "9" * 5000)
    assert code == 2 and "hidden" in err


def test_2_nesting_just_within_the_limit_still_parses(write_toml: Callable[..., Path]) -> None:
    depth = declarations.MAX_NESTING - 2  # the entry table and `x` take two levels
    entries = declarations.parse_file(write_toml('[m]\ntype = "Identity"\nx = ' + "[" * depth + "]" * depth + "\n"))
    assert "m" in entries


def test_2_a_chain_of_entries_too_long_to_follow_is_a_spec_error(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml("".join(f'[a{i}]\ntype = "a{i + 1}"\n' for i in range(150)) + '[a150]\ntype = "ReLU"\n')
    code, _, err = run(capsys, "build", "a0", "--registry", str(path))
    assert code == 2
    assert f"{path}:201: entries refer to entries more than 100 deep: a0 -> a1 -> a2 -> … -> a100." in err


def test_2_entries_and_blocks_nested_deep_together_are_a_spec_error(write_toml: Callable[..., Path]) -> None:
    text = ""
    for i in range(99):  # each level within its limits, but each entry's reference sits 47 blocks down
        inner = f'"a{i + 1}"' if i < 98 else '"ReLU"'
        for _ in range(47):
            inner = f'{{ type = "Sequential", layers = [{inner}] }}'
        text += f"[a{i}]\nlayers = [{inner}]\n"
    path = write_toml(text)
    with deadline(60), pytest.raises(SpecError, match=rf"{re.escape(str(path))}:1: a0: .* nest too deeply"):
        zoo.build("a0", registry=[path])


def test_2_a_deep_declaration_in_config_json_is_refused(tmp_path: Path) -> None:
    folder = zoo.save(zoo.build("mlp"), tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    deep: dict[str, object] = {"type": "Identity"}
    for _ in range(300):
        deep = {"type": "Sequential", "layers": [deep]}
    config["declaration"] = deep
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"config\.json: nested more than 100 levels deep at declaration\.layers"):
        zoo.load(folder)


# --- 3. init rules that cannot run ----------------------------------------------------------------

INIT_CASES = {
    "bias_xavier": ('{ "*.bias" = "xavier_uniform" }', "xavier_uniform cannot initialise 'hid.bias' of shape [3]"),
    "negative_std": ('{ "*.weight" = { fn = "normal", std = -1 } }', "std"),
    "string_std": ('{ "*.weight" = { fn = "normal", std = "x" } }', "std"),
    "missing_arg": ('{ "*.weight" = { fn = "sparse" } }', "missing a required argument: 'sparsity'"),
}


@pytest.mark.parametrize("case", INIT_CASES)
def test_3_init_rules_that_cannot_run_fail_check_with_a_line_and_never_reach_build(
    case: str, capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    rule, message = INIT_CASES[case]
    text = (
        '[tiny]\ninput = [2, 4]\nlayers.hid = { type = "Linear", in_features = 4, out_features = 3 }\n'
        f'layers.out = {{ type = "Linear", in_features = 3, out_features = 2 }}\ninit = {rule}\n'
    )
    path = write_toml(text)
    code, _, err = run(capsys, "check", str(path))
    assert code == 2
    assert f"{path}:5: tiny -> init." in err and message in err
    code, _, err = run(capsys, "build", "tiny", "--registry", str(path))
    assert code == 2 and message in err
    with pytest.raises(ZooError, match=re.escape(message)):
        zoo.build("tiny", registry=[path])


def test_3_a_rule_on_a_lazy_layer_is_checked_for_its_arguments_before_build(
    capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]
) -> None:
    path = write_toml(
        '[lz]\nlayers = [{ type = "LazyLinear", out_features = 3 }]\ninit = { "*" = { fn = "normal", std = "x" } }\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 2 and f"{path}:3: lz -> init.*" in err and "std" in err


def test_3_rules_that_can_run_still_pass(capsys: pytest.CaptureFixture[str], write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[ok]\ninput = [2, 4]\nlayers = [{ type = "Linear", in_features = 4, out_features = 3 }]\n'
        'init = { "*.weight" = { fn = "sparse", sparsity = 0.5 }, "*.bias" = "zeros", "0.weight" = "xavier_uniform" }\n'
    )
    code, _, err = run(capsys, "check", str(path))
    assert code == 0, err
    assert zoo.build("ok", registry=[path])[0].bias.abs().sum() == 0


# --- 4. absurd input shapes -------------------------------------------------------------------------


def test_4_build_with_an_input_that_cannot_fit_in_memory_is_refused_before_allocating(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "build", "mlp", "--input-shape", "1000000000,20")
    assert code == 2
    assert "(1000000000, 20)" in err and "bytes" in err


def test_4_a_probe_shape_beyond_int64_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match=r"input_shape \(2, 9223372036854775807\) has .* elements"):
        zoo.build("lazy_mlp", input_shape=(2, 2**63 - 1))
    with pytest.raises(ZooError):
        zoo.materialize(zoo.build("lazy_mlp"), input_shape=(2**40, 2**30))


# --- 5. hostile JSON --------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return zoo.save(zoo.build("tied_mlp"), tmp_path / "saved")


def test_5_a_config_json_nested_100000_deep_is_a_weights_error(saved: Path) -> None:
    (saved / "config.json").write_text('{"declaration": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(WeightsError, match=r"config\.json: nested more than 100 levels deep at declaration"):
        zoo.load(saved)


def test_5_a_shard_index_nested_100000_deep_is_a_weights_error(tmp_path: Path) -> None:
    folder = zoo.save(zoo.build("mlp"), tmp_path / "sharded", max_shard_size=2000)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + "[" * 100_000)
    with pytest.raises(WeightsError, match=r"index\.json: nested more than 100 levels deep at weight_map"):
        zoo.load_weights(zoo.build("mlp"), folder)


def test_5_a_shard_name_too_long_for_the_file_system_is_a_weights_error(tmp_path: Path) -> None:
    folder = zoo.save(zoo.build("mlp"), tmp_path / "sharded", max_shard_size=2000)  # found by tests/test_fuzz.py
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["out.bias"] = "[" * 100_000 + ".safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match=r"shard '\[\[\[.*' is not a file name inside"):
        zoo.load(folder)


def _rewrite_metadata(file: Path, key: str, value: str) -> None:
    """Set a `__metadata__` string in a safetensors header, keeping the data section as it was."""
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][key] = value
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    file.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])


def test_5_an_aliases_header_nested_100000_deep_is_a_weights_error(saved: Path) -> None:
    _rewrite_metadata(saved / "model.safetensors", "zoo.aliases", "[" * 100_000)
    with pytest.raises(WeightsError, match=r"model\.safetensors: `zoo\.aliases`: nested more than 100 levels"):
        zoo.load(saved)


def test_5_an_integer_of_5000_digits_is_a_weights_error_naming_its_key(saved: Path) -> None:
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(
        json.dumps(config).replace('"input_shape": [2, 20]', '"input_shape": [2, ' + "9" * 5000 + "]")
    )
    with pytest.raises(WeightsError, match=r"config\.json: the integer at input_shape\[1\] has more than 40 digits"):
        zoo.load(saved)


def test_5_the_structure_header_of_save_tensors_is_bounded_too(tmp_path: Path) -> None:
    zoo.save_tensors({"x": torch.zeros(2)}, tmp_path / "t.safetensors")
    _rewrite_metadata(tmp_path / "t.safetensors", "zoo.structure", '{"dict": ' + "[" * 5000)
    with pytest.raises(WeightsError, match=r"`zoo\.structure`: nested more than 100 levels"):
        zoo.load_tensors(tmp_path / "t.safetensors")


def test_5_bounded_json_reports_the_key_path() -> None:
    with pytest.raises(WeightsError, match=r"x: nested more than 100 levels deep at a\.b\[2\]"):
        jsonio.loads('{"a": {"b": [1, 2, ' + "[" * 200 + "]" * 200 + "]}}", "x")
    with pytest.raises(WeightsError, match=r"x is not valid JSON.*NaN"):
        jsonio.loads('{"a": NaN}', "x")
    assert jsonio.loads('{"a": [1, {"b": "[{"}], "c": -12}', "x") == {"a": [1, {"b": "[{"}], "c": -12}


# --- 6. config.json that is not a file ---------------------------------------------------------------


def test_6_config_json_linked_to_dev_zero_is_refused_without_reading(saved: Path) -> None:
    (saved / "config.json").unlink()
    (saved / "config.json").symlink_to("/dev/zero")
    with deadline(10), pytest.raises(WeightsError, match=r"config\.json is not a regular file \(a character device\)"):
        zoo.load(saved)


def test_6_config_json_that_is_a_fifo_is_refused_without_waiting(saved: Path) -> None:
    (saved / "config.json").unlink()
    os.mkfifo(saved / "config.json")
    with deadline(10), pytest.raises(WeightsError, match=r"config\.json is not a regular file \(a FIFO\)"):
        zoo.load(saved)


def test_6_a_huge_config_json_is_refused_by_size(saved: Path) -> None:
    with open(saved / "config.json", "r+b") as f:
        f.truncate(jsonio.MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(WeightsError, match=r"config\.json is 16,777,217 bytes, over zoo's limit of 16,777,216"):
        zoo.load(saved)


# --- 7 and 8. hostile Hub repos ------------------------------------------------------------------------


def _pull(server: HubServer, tmp_path: Path, repo: str) -> torch.nn.Module:
    with deadline(60):
        return zoo.pull(repo, endpoint=server.url, cache_dir=tmp_path / "cache", token="t")


def _seed_repo(server: HubServer, tmp_path: Path, repo: str) -> dict[str, bytes]:
    folder = zoo.save(zoo.build("mlp"), tmp_path / "seed")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    server.put_files(repo, files)
    return files


def test_7_a_hub_index_with_backslashes_is_refused(server: HubServer, tmp_path: Path) -> None:
    files = _seed_repo(server, tmp_path, "org/evil")
    index = {"weight_map": {"hidden.weight": "..\\..\\evil.safetensors"}}
    server.put_files(
        "org/evil",
        {
            "model.safetensors": None,
            "model.safetensors.index.json": json.dumps(index).encode(),
            "config.json": files["config.json"],
        },
    )
    with pytest.raises(
        HubError, match=r"the shard name '\.\.\\\\\.\.\\\\evil\.safetensors' is not a \.safetensors file"
    ):
        _pull(server, tmp_path, "org/evil")


def test_7_a_value_error_of_the_client_becomes_a_hub_error(server: HubServer, tmp_path: Path) -> None:
    api = client.HfApi(endpoint=server.url)
    with pytest.raises(HubError, match=r"cannot pull org/ok@main: .* refuses: Invalid filename 'a/\.\./\.\./x'"):
        with client._hub_errors("pull org/ok@main", "org/ok", "main", server.url, api):
            client.hf_hub_download("org/ok", "a/../../x", endpoint=server.url, cache_dir=tmp_path / "c")  # a ValueError
    with pytest.raises(SpecError):  # zoo's own errors, some of them ValueErrors too, pass through unchanged
        with client._hub_errors("pull org/ok@main", "org/ok", "main", server.url, api):
            raise SpecError("mine")


def test_7_an_os_error_of_the_client_becomes_a_hub_error(server: HubServer, tmp_path: Path) -> None:
    _seed_repo(server, tmp_path, "org/ok")
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(HubError, match=r"cannot pull org/ok@main: .*cache"):
        _pull(server, tmp_path, "org/ok")


def test_8_a_config_json_larger_than_listed_is_refused_before_parsing(server: HubServer, tmp_path: Path) -> None:
    files = _seed_repo(server, tmp_path, "org/liar")
    big = files["config.json"].rstrip()[:-1] + b', "pad": "' + b"x" * (jsonio.MAX_BYTES + 10) + b'"}'
    server.put_files("org/liar", {"config.json": big})
    server.misreport_size("config.json", len(files["config.json"]))
    with pytest.raises(HubError, match=r"config\.json is 16,777,\d{3} bytes, over zoo's limit"):
        _pull(server, tmp_path, "org/liar")


def test_5_hostile_json_through_the_hub_is_refused_within_its_size_limit(server: HubServer, tmp_path: Path) -> None:
    files = _seed_repo(server, tmp_path, "org/deep")
    server.put_files("org/deep", {"config.json": b'{"declaration": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"})
    # zoo.pull reads config.json alone first, and refuses the repo on it (HubError: not a zoo model, and why).
    with pytest.raises(ZooError, match=r"config\.json: nested more than 100 levels deep at declaration"):
        _pull(server, tmp_path, "org/deep")
    index = b'{"weight_map": {"a": ' + b"9" * 5000 + b"}}"
    server.put_files(
        "org/deep",
        {"config.json": files["config.json"], "model.safetensors": None, "model.safetensors.index.json": index},
    )
    with pytest.raises(HubError, match=r"the integer at weight_map\.a has more than 40 digits"):
        _pull(server, tmp_path, "org/deep")


# --- 9. killed checkpoint saves ------------------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import os, sys, torch, zoo
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Linear(2048, 2048)  # 16 MiB: a save long enough to be killed in the middle
    for line in sys.stdin:  # "save DIR STEP KEEP": a forked child saves; "reap PID": collect it once killed
        command, *args = line.split()
        if command == "save":
            pid = os.fork()
            if pid == 0:
                keep = int(args[2]) if args[2] != "-" else None
                zoo.checkpoint.save(args[0], model=model, step=int(args[1]), keep_last=keep)
                os._exit(0)
            print(pid, flush=True)
        else:
            os.waitpid(int(args[0]), 0)  # until then the killed saver is a zombie, and its pid still in use
            print("reaped", flush=True)
    """
)


@pytest.fixture
def kill_mid_save() -> Iterator[Callable[..., None]]:
    """Start a save of a step in a fresh process and SIGKILL it once its temporary folder has data."""
    saver = subprocess.Popen([sys.executable, "-c", _SAVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert saver.stdin is not None and saver.stdout is not None

    def kill(directory: Path, step: int, keep_last: int | None = None) -> None:
        assert saver.stdin is not None and saver.stdout is not None
        saver.stdin.write(f"save {directory} {step} {keep_last or '-'}\n")
        saver.stdin.flush()
        pid = int(saver.stdout.readline())
        temp = f".step-{step:08d}.zoo-tmp-"
        give_up = time.monotonic() + 60
        while not any(p.name.startswith(temp) and any(p.iterdir()) for p in directory.glob(".*")):
            assert time.monotonic() < give_up, "the save never started"
            time.sleep(0.001)
        os.kill(pid, signal.SIGKILL)
        saver.stdin.write(f"reap {pid}\n")
        saver.stdin.flush()
        assert saver.stdout.readline().strip() == "reaped"

    try:
        yield kill
    finally:
        saver.stdin.close()
        saver.wait(timeout=30)
        saver.stdout.close()


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".zoo-tmp-" in p.name)


@pytest.mark.slow
def test_9_six_killed_saves_of_new_steps_leave_at_most_one_temporary(
    tmp_path: Path, kill_mid_save: Callable[..., None]
) -> None:
    directory = tmp_path / "run"
    checkpoint.save(directory, model=torch.nn.Linear(2, 2), step=0)
    for step in range(1, 7):
        kill_mid_save(directory, step)
        assert len(temporaries(directory)) <= 1, temporaries(directory)
    assert [p.name for p in checkpoint.checkpoints(directory)] == ["step-00000000"]
    checkpoint.save(directory, model=torch.nn.Linear(2, 2), step=7)
    assert temporaries(directory) == []


@pytest.mark.slow
def test_9_keep_last_holds_after_a_kill(tmp_path: Path, kill_mid_save: Callable[..., None]) -> None:
    directory = tmp_path / "run"
    for step in range(3):  # what a kill between publishing and rotating leaves with keep_last=2
        checkpoint.save(directory, model=torch.nn.Linear(2, 2), step=step)
    kill_mid_save(directory, 3, keep_last=2)
    assert [p.name for p in checkpoint.checkpoints(directory)] == ["step-00000001", "step-00000002"]


def test_9_temporaries_of_live_savers_are_kept_and_old_ones_of_other_hosts_go(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    live = directory / f".step-00000005.zoo-tmp-otherhost-{os.getpid()}-abcd"
    old = directory / ".step-00000006.zoo-tmp-otherhost-1-abcd"
    for temp in (live, old):
        temp.mkdir()
    os.utime(old, (time.time() - 8 * 86400,) * 2)
    checkpoint.save(directory, model=torch.nn.Linear(2, 2), step=0)
    assert temporaries(directory) == [live.name]


# --- memory-mapped loads -----------------------------------------------------------------------------


def _zero_the_data(file: Path) -> None:
    """Overwrite a safetensors file's tensor bytes in place, as `cp` over it would: same inode, new content."""
    with open(file, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        size = file.stat().st_size - 8 - n
        f.seek(8 + n)
        f.write(b"\0" * size)


def test_mmap_false_keeps_the_weights_when_the_file_is_overwritten_in_place(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = zoo.save(zoo.build("tied_mlp"), tmp_path / "saved")
    private = zoo.load(folder, mmap=False)
    mapped = zoo.load(folder)
    before = {k: v.clone() for k, v in private.state_dict().items()}
    _zero_the_data(folder / "model.safetensors")
    assert all(torch.equal(before[k], v) for k, v in private.state_dict().items())
    assert private[2] is private[4]  # ties survive the copy
    # The trade-off mmap=True makes, as the README says: the live weights follow the file. (Small
    # tensors that sit off the 64-byte boundary are copied at load, for bit-exact results.)
    aligned = [v for v in mapped.state_dict().values() if v.numel() * v.element_size() % 64 == 0]
    assert aligned and all(v.abs().sum() == 0 for v in aligned)
