"""Faults: damaged files fail loudly and change nothing; a save killed at any moment leaves the previous one.

Every damaged file gives a WeightsError naming it, and the model's tensors are compared in full
before and after. The crash tests SIGKILL saving processes at many moments of their writes.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import zoo
from zoo._errors import WeightsError
from zoo._files import fsio
from zoo._weights import layout

# --- helpers -------------------------------------------------------------------------------------


def fresh_model() -> nn.Module:
    torch.manual_seed(3)
    return zoo.build("chimera")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == before.keys()
    for key in now:
        assert torch.equal(now[key], before[key]), key


def assert_refused(path: Path, named: Path, match: str | None = None) -> None:
    """load_weights(path) raises a WeightsError naming `named` and leaves a model as it was."""
    model = fresh_model()
    before = snapshot(model)
    with pytest.raises(WeightsError, match=match) as err:
        zoo.load_weights(model, path)
    assert str(named) in str(err.value)
    assert_unchanged(model, before)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A folder with chimera's weights from another seed, and the raw bytes of its file."""
    torch.manual_seed(11)
    zoo.save(zoo.build("chimera"), tmp_path / "saved")
    return tmp_path / "saved" / "model.safetensors"


def header_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def with_header(raw: bytes, header: dict[str, Any]) -> bytes:
    """The file with its header replaced (the length prefix recomputed), data untouched."""
    n, _ = header_of(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]


# --- damaged files ---------------------------------------------------------------------------------


def test_a_good_file_loads(saved: Path) -> None:
    model = fresh_model()
    zoo.load_weights(model, saved)
    assert torch.equal(model.state_dict()["1.weight"], load_file(saved)["1.weight"])


def test_a_file_cut_at_ten_offsets_is_refused(saved: Path, tmp_path: Path) -> None:
    raw = saved.read_bytes()
    n, _ = header_of(raw)
    offsets = [0, 1, 7, 8, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, (8 + n + len(raw)) // 2, len(raw) - 1]
    assert len(set(offsets)) == 10
    for offset in offsets:
        cut = tmp_path / f"cut{offset}.safetensors"
        cut.write_bytes(raw[:offset])
        assert_refused(cut, cut)


def test_a_cut_shard_in_a_folder_is_refused_by_load_and_load_weights(tmp_path: Path) -> None:
    zoo.save(zoo.build("chimera"), tmp_path / "m", max_shard_size=3000)
    shard = sorted((tmp_path / "m").glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-3])
    assert_refused(tmp_path / "m", shard)
    with pytest.raises(WeightsError, match=shard.name):
        zoo.load(tmp_path / "m")


def test_flipped_header_bytes_are_refused(saved: Path, tmp_path: Path) -> None:
    raw = saved.read_bytes()
    n, _ = header_of(raw)
    for position in [0, 3, 7, 8, 9, 8 + n // 3, 8 + n // 2, 8 + 2 * n // 3, 8 + n - 2]:
        flipped = bytearray(raw)
        flipped[position] ^= 0xFF
        bad = tmp_path / f"flip{position}.safetensors"
        bad.write_bytes(bytes(flipped))
        assert_refused(bad, bad)


def test_headers_that_lie_are_refused(saved: Path, tmp_path: Path) -> None:
    raw = saved.read_bytes()
    _, header = header_of(raw)
    lies = {}
    h = json.loads(json.dumps(header))
    h["1.weight"]["shape"] = [20, 17]  # more elements than its bytes
    lies["shape"] = h
    h = json.loads(json.dumps(header))
    h["1.weight"]["data_offsets"][1] += 4  # overlaps the next tensor
    lies["offsets"] = h
    h = json.loads(json.dumps(header))
    h["1.weight"]["dtype"] = "F64"  # twice the bytes it has
    lies["dtype_size"] = h
    h = json.loads(json.dumps(header))
    last = max(h, key=lambda k: h[k]["data_offsets"][1] if k != "__metadata__" else -1)
    h[last]["data_offsets"][1] += 8  # claims data past the end of the file
    lies["past_end"] = h
    h = json.loads(json.dumps(header))
    h["1.weight"]["dtype"] = "UNKNOWN"
    lies["unknown_dtype"] = h
    for name, lie in lies.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(with_header(raw, lie))
        assert_refused(bad, bad)
    n, _ = header_of(raw)
    too_long = tmp_path / "length.safetensors"
    too_long.write_bytes(struct.pack("<Q", n + 8) + raw[8:])
    assert_refused(too_long, too_long)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + raw[8:])
    assert_refused(huge, huge)


def test_consistent_lies_that_do_not_fit_the_model_are_refused(saved: Path, tmp_path: Path) -> None:
    raw = saved.read_bytes()
    _, header = header_of(raw)
    h = json.loads(json.dumps(header))
    h["1.weight"]["shape"] = [16, 20]  # the same bytes, transposed
    bad = tmp_path / "transposed.safetensors"
    bad.write_bytes(with_header(raw, h))
    assert_refused(bad, bad, match=r"'1\.weight': shape \(20, 16\) in the model, \(16, 20\) in the file")
    h = json.loads(json.dumps(header))
    h["1.weight"]["dtype"] = "I32"  # the same size, another kind
    bad = tmp_path / "integer.safetensors"
    bad.write_bytes(with_header(raw, h))
    assert_refused(bad, bad, match=r"'1\.weight': torch\.float32 in the model, torch\.int32 in the file")


@pytest.mark.parametrize("content", [b"", b"hello, world\n", os.urandom(64), b"\x00" * 8])
def test_files_that_are_not_safetensors_are_refused(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    assert_refused(bad, bad, match="not a valid safetensors file")


def test_a_missing_file_is_named_with_a_suggestion(saved: Path) -> None:
    assert_refused(saved.with_name("model.safetensor"), saved.with_name("model.safetensor"), match="Did you mean")


class _Trap:
    """Unpickling this creates a file: proof that something unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".safetensors"])
def test_pickles_are_refused_and_never_unpickled(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "unpickled"
    trap = tmp_path / f"trap{suffix}"
    trap.write_bytes(pickle.dumps({"weight": _Trap(marker)}, protocol=4))
    assert_refused(trap, trap, match="never unpickles")
    zipped = tmp_path / f"zipped{suffix}"
    torch.save(fresh_model().state_dict(), zipped)  # torch.save's zip format
    assert_refused(zipped, zipped, match="never unpickles")
    with pytest.raises(WeightsError, match="never unpickles"):
        zoo.load_tensors(trap)
    assert not marker.exists()


def test_a_folder_of_pickles_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    torch.save(fresh_model().state_dict(), tmp_path / "m" / "pytorch_model.bin")
    assert_refused(tmp_path / "m", tmp_path / "m", match=r"pytorch_model\.bin: pickle files")


def test_broken_shard_indexes_are_refused(tmp_path: Path) -> None:
    zoo.save(zoo.build("chimera"), tmp_path / "m", max_shard_size=3000)
    index_file = tmp_path / "m" / layout.INDEX_FILE
    good = json.loads(index_file.read_text())
    first_shard = sorted(set(good["weight_map"].values()))[0]
    cases = {
        "not json": "{oops",
        "no weight_map": json.dumps({"metadata": {}}),
        "escapes the folder": json.dumps({"weight_map": {**good["weight_map"], "1.weight": "../x.safetensors"}}),
        "missing shard": json.dumps({"weight_map": {**good["weight_map"], "1.weight": "model-09-of-09.safetensors"}}),
        "wrong shard": json.dumps({"weight_map": {**good["weight_map"], "1.weight": first_shard}}),
        "unlisted key": json.dumps({"weight_map": {k: v for k, v in good["weight_map"].items() if k != "1.bias"}}),
    }
    for case, text in cases.items():
        index_file.write_text(text)
        model = fresh_model()
        before = snapshot(model)
        with pytest.raises(WeightsError) as err:
            zoo.load_weights(model, tmp_path / "m")
        assert str(tmp_path / "m") in str(err.value), case
        assert_unchanged(model, before)


def test_corrupt_alias_metadata_is_refused(tmp_path: Path) -> None:
    tensors = {"2.weight": torch.ones(8, 8), "2.bias": torch.zeros(8)}
    for aliases in [
        "{not json",
        json.dumps(["4.weight"]),
        json.dumps({"4.weight": "9.weight"}),
        json.dumps({"2.bias": "2.weight"}),
    ]:
        bad = tmp_path / "aliases.safetensors"
        save_file(tensors, bad, metadata={layout.ALIASES_KEY: aliases})
        model = nn.Sequential(nn.ReLU(), nn.ReLU(), nn.Linear(8, 8))
        before = snapshot(model)
        with pytest.raises(WeightsError, match=r"zoo\.aliases"):
            zoo.load_weights(model, bad)
        assert_unchanged(model, before)


# --- crash safety: SIGKILL during saves ---------------------------------------------------------

# A parent process that imports torch and zoo once, then forks one saving child per kill, so
# each of the many kills costs milliseconds instead of an interpreter start. The children only
# fill tensors and write files; torch runs single-threaded, so forking is safe.
_ZYGOTE = textwrap.dedent(
    """
    import os, sys, time, torch, zoo
    torch.set_num_threads(1)
    model = zoo.build("mlp", hidden=65536)   # 7.5 MiB of float32, with a config.json
    scratch, = sys.argv[1:]
    zoo.save(model, scratch, max_shard_size="3MB")  # the first save pays for imports: time the second
    start = time.perf_counter()
    zoo.save(model, scratch, max_shard_size="3MB")
    print("ready", time.perf_counter() - start, flush=True)

    def save_forever(kind, path, log, first):
        value = first
        while True:
            if kind == "model":
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(value)
                zoo.save(model, path, max_shard_size="3MB" if value % 2 else None)  # the layout changes too
            else:
                zoo.save_tensors({"v": torch.full((1 << 20,), float(value))}, path)
            with open(log, "a") as f:
                f.write(f"{value}\\n")
            value += 1

    for line in sys.stdin:
        command, *args = line.split()
        if command == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    save_forever(args[0], args[1], args[2], int(args[3]))
                finally:
                    os._exit(1)
            print("pid", pid, flush=True)
        elif command == "reap":
            os.waitpid(int(args[0]), 0)
            print("reaped", flush=True)
    """
)


class Zygote:
    def __init__(self, scratch: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, str(scratch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        word, seconds = self._read().split()
        assert word == "ready"
        self.save_seconds = float(seconds)

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the zygote died"
        return line.strip()

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def fork(self, kind: str, path: Path, log: Path, first: int) -> int:
        self._send(f"fork {kind} {path} {log} {first}")
        word, pid = self._read().split()
        assert word == "pid"
        return int(pid)

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self._send(f"reap {pid}")
        assert self._read() == "reaped"

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.process.wait(timeout=30)


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path / "scratch")
    yield z
    z.close()


def extremes(tensor: torch.Tensor) -> set[float]:
    """{min, max}: one element when the tensor holds one value (much faster than unique())."""
    low, high = torch.aminmax(tensor)
    return {low.item(), high.item()}


def logged(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


BIG_MLP = {"hidden": 65536}  # the zygote's model


def value_of(path: Path, allowed: set[int]) -> int:
    """The folder loads (zoo.load: config and weights), and every tensor holds the one value of a single save."""
    model = zoo.load(path)
    values = {v for t in model.state_dict().values() for v in extremes(t)}
    assert len(values) == 1, f"a mix of saves: {sorted(values)[:5]}"
    value = int(values.pop())
    assert value in allowed, (value, allowed)
    return value


def check_complete(path: Path, allowed: set[int]) -> int:
    """value_of, and every file under a final name is whole and belongs to the layout."""
    value = value_of(path, allowed)
    names = {p.name for p in path.iterdir()}
    shards = {n for n in names if n.startswith("model-")}
    if "model.safetensors" in names:
        assert not shards and layout.INDEX_FILE not in names
    else:
        index = json.loads((path / layout.INDEX_FILE).read_text())
        assert shards == set(index["weight_map"].values())
    for name in names:
        if name.endswith(".safetensors"):
            load_file(path / name)  # every file under its final name is whole
    return value


@pytest.mark.slow
def test_a_save_killed_at_24_moments_leaves_the_previous_checkpoint(zygote: Zygote, tmp_path: Path) -> None:
    path, log = tmp_path / "ckpt", tmp_path / "log"
    zoo.save(zoo.build("mlp", **BIG_MLP).apply(_fill(0)), path)
    last, first = 0, 1
    span = 3 * zygote.save_seconds  # the moments cover the first three saves of each child
    for moment in range(24):
        pid = zygote.fork("model", path, log, first)
        time.sleep(span * moment / 24)
        zygote.kill(pid)
        done = [v for v in logged(log) if v >= first]
        # The folder holds the newest logged save, or the next one if the kill fell between its
        # swap and its log line; with nothing logged, the previous checkpoint or the first save.
        allowed = {done[-1], done[-1] + 1} if done else {last, first}
        last = check_complete(path, allowed)
        first = last + 100
    zoo.save(nn.Linear(1, 1), path)  # a later save to the same target removes the dead ones' temporaries
    assert [p.name for p in tmp_path.iterdir() if ".zoo-tmp-" in p.name] == []


@pytest.mark.slow
def test_save_tensors_killed_at_12_moments_leaves_a_whole_file(zygote: Zygote, tmp_path: Path) -> None:
    path, log = tmp_path / "state.safetensors", tmp_path / "log"
    zoo.save_tensors({"v": torch.full((1 << 20,), 0.0)}, path)
    last, first = 0, 1
    for moment in range(12):
        pid = zygote.fork("tensors", path, log, first)
        time.sleep(0.004 * moment)
        zygote.kill(pid)
        done = [v for v in logged(log) if v >= first]
        values = extremes(zoo.load_tensors(path)["v"])
        assert len(values) == 1
        value = int(values.pop())
        allowed = {done[-1], done[-1] + 1} if done else {last, first}
        assert value in allowed
        last, first = value, value + 100


@pytest.mark.slow
def test_two_processes_saving_to_one_path_leave_one_complete_checkpoint(zygote: Zygote, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    a = zygote.fork("model", path, tmp_path / "log_a", 1000)
    b = zygote.fork("model", path, tmp_path / "log_b", 5000)
    loads = 0
    deadline = time.monotonic() + 8 * zygote.save_seconds + 1
    while time.monotonic() < deadline or (loads == 0 and time.monotonic() < deadline + 30):
        if path.exists():  # a reader during the writes gets one whole save or a WeightsError, never a mix
            try:
                value_of(path, set(range(1000, 9000)))
                loads += 1
            except WeightsError:
                pass
    zygote.kill(a)
    zygote.kill(b)
    saves = logged(tmp_path / "log_a") + logged(tmp_path / "log_b")
    assert len(saves) >= 4 and loads >= 1
    check_complete(
        path,
        set(saves)
        | {max(logged(tmp_path / "log_a"), default=999) + 1, max(logged(tmp_path / "log_b"), default=4999) + 1},
    )


def _fill(value: float) -> Any:
    def fill(module: nn.Module) -> None:
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                p.fill_(value)

    return fill


# --- the fallback swap, for systems without renameat2 ---------------------------------------------


def test_saves_work_without_an_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: None)
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m")
    zoo.save(model, tmp_path / "m", max_shard_size=3000)
    assert not (tmp_path / "m" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    loaded = zoo.load(tmp_path / "m")
    assert torch.equal(loaded[1].weight, model[1].weight)


def test_the_fallback_swap_keeps_the_mode_and_moves_this_process_along(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: None)
    (tmp_path / "m").mkdir(mode=0o700)
    monkeypatch.chdir(tmp_path / "m")
    zoo.save(zoo.build("mlp"), ".")
    Path("x").write_text("x")
    assert (tmp_path / "m" / "x").exists() and stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_tensors_keeps_the_files_mode_and_follows_a_symlink(tmp_path: Path) -> None:
    state = {"w": torch.ones(2)}
    zoo.save_tensors(state, tmp_path / "private.safetensors")
    (tmp_path / "private.safetensors").chmod(0o600)
    (tmp_path / "link.safetensors").symlink_to("private.safetensors")
    zoo.save_tensors({"w": torch.zeros(2)}, tmp_path / "link.safetensors")
    assert (tmp_path / "link.safetensors").is_symlink()
    assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600
    assert torch.equal(zoo.load_tensors(tmp_path / "private.safetensors")["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "private.safetensors"]


def test_a_crash_between_the_two_renames_is_recovered(tmp_path: Path) -> None:
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m")
    # What the fallback leaves when killed after moving the old folder aside:
    os.rename(tmp_path / "m", tmp_path / f".m{fsio._OLD}{fsio._HOST}-1-abcd")
    loaded = zoo.load(tmp_path / "m")
    assert torch.equal(loaded[1].weight, model[1].weight)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".m{fsio._TEMP}{fsio._HOST}-{dead_pid}-0000"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".m{fsio._TEMP}{fsio._HOST}-{os.getpid()}-1111"
    live.mkdir()
    other_host = tmp_path / f".m{fsio._TEMP}elsewhere-{dead_pid}-2222"
    other_host.mkdir()
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    assert not stale.exists() and live.exists() and other_host.exists()


def test_remove_dir_leaves_nothing_half_deleted(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    fsio.remove_dir(tmp_path / "m")
    fsio.remove_dir(tmp_path / "m")  # already gone: nothing to do
    assert list(tmp_path.iterdir()) == []
