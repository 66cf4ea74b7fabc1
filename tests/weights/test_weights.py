"""zoo.save / zoo.load / zoo.load_weights / zoo.save_tensors: what a user relies on, error paths included."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import zoo
from zoo import cli
from zoo._build import builder, devices, lazy
from zoo._build.shape_pass import trace
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError, UnknownNameError, WeightsError
from zoo._files import fsio
from zoo._weights import layout, progress, reader

# --- helpers -----------------------------------------------------------------------------------


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in now)


def tie_groups(model: nn.Module) -> list[list[str]]:
    """Names of parameters held by one Parameter object, for every object held at more than one place."""
    by_object: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_object.setdefault(id(param), []).append(name)
    return sorted(sorted(names) for names in by_object.values() if len(names) > 1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Tied(nn.Module):
    """Parameter-level tying, as language models tie their embedding and output weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


# --- the fresh-process round trip over every entry that builds ------------------------------------

BIG_PARAMS = 20_000_000  # above this a model's round trip is marked slow
TOO_LARGE_TO_BUILD = 1_000_000_000  # above this a real build does not fit in a test machine (hf_llama's 7B defaults)


def _entries() -> list[str]:
    return [n for n in zoo.names() if builder.entry_of(n) is not None]


def _param_count(name: str) -> int | None:
    """Parameters of `name` once built for its example input, found on the meta device (no memory); None if it
    does not build."""
    try:
        with torch.device("meta"):
            model = builder.build(name)
    except zoo.ZooError:
        return None
    shape = model.zoo_info.input_shape
    if lazy.is_lazy(model) and shape is not None:
        return trace(model, shape).param_count
    return sum(p.numel() for p in model.parameters() if not isinstance(p, nn.parameter.UninitializedParameter))


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return []


def _build_for_round_trip(name: str) -> tuple[nn.Module, tuple[int, ...] | None]:
    torch.manual_seed(0)
    try:
        model = zoo.build(name)
    except zoo.ZooError as err:  # needs arguments or something this machine lacks
        pytest.skip(f"'{name}' does not build here: {err}")
    if lazy.is_lazy(model):
        pytest.skip(f"'{name}' declares no example input, so it stays lazy and cannot be saved before materialising")
    return model.eval(), model.zoo_info.input_shape


_LOADER = textwrap.dedent(
    """
    import json, sys, torch, zoo
    torch.set_num_threads(1)  # one reduction order: with more, a busy machine can change the last bit
    jobs = json.loads(sys.argv[1])
    for job in jobs:
        model = zoo.load(job["dir"])
        by_object = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            by_object.setdefault(id(param), []).append(name)
        groups = sorted(sorted(g) for g in by_object.values() if len(g) > 1)
        result = {"state": model.state_dict(), "groups": groups, "training": model.training,
                  "params": all(isinstance(p, torch.nn.Parameter) for p in model.parameters())}
        if job["input"] is not None:
            with torch.no_grad():
                result["output"] = model(zoo.load_tensors(job["input"]))
        zoo.save_tensors(result, job["out"])
    """
)


def _round_trip(names: list[str], tmp: Path) -> dict[str, tuple[nn.Module, Any, Any]]:
    """Save each model here, load it and run it in a fresh process; return (model, our output, theirs).

    Models that stay lazy (no example input) are left out.
    """
    jobs, ours = [], {}
    for name in names:
        torch.manual_seed(0)
        model = zoo.build(name).eval()
        if lazy.is_lazy(model):
            continue
        shape = model.zoo_info.input_shape
        x = None
        if shape is not None:
            torch.manual_seed(1)
            x = builder.example_input(model.zoo_info, shape)  # floats, or token ids where the entry says so
            zoo.save_tensors(x, tmp / f"{name}.input")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the fresh process does: bit-identity is about the weights, not threads
        try:
            with torch.no_grad():
                ours[name] = (model, model(x) if x is not None else None)
        finally:
            torch.set_num_threads(threads)
        zoo.save(model, tmp / name)
        jobs.append(
            {
                "dir": str(tmp / name),
                "input": str(tmp / f"{name}.input") if x is not None else None,
                "out": str(tmp / f"{name}.out"),
            }
        )
    command = [sys.executable, "-c", _LOADER, json.dumps(jobs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {name: (*ours[name], zoo.load_tensors(tmp / f"{name}.out")) for name in ours}


def _check_round_trip(model: nn.Module, ours: Any, theirs: dict[str, Any]) -> None:
    state = model.state_dict()
    assert theirs["state"].keys() == state.keys()
    for key, value in state.items():  # bit-identical, dtype included
        assert theirs["state"][key].dtype == value.dtype and torch.equal(theirs["state"][key], value), key
    assert theirs["groups"] == tie_groups(model)
    assert theirs["training"] is False and theirs["params"] is True
    if ours is not None:
        flat_ours, flat_theirs = _leaves(ours), _leaves(theirs["output"])
        assert len(flat_ours) == len(flat_theirs) > 0
        for a, b in zip(flat_ours, flat_theirs, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.fixture(scope="module")
def param_counts() -> dict[str, int | None]:
    return {name: _param_count(name) for name in _entries()}


@pytest.fixture(scope="module")
def round_trips(
    param_counts: dict[str, int | None], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[nn.Module, Any, Any]]:
    small = [name for name, count in param_counts.items() if count is not None and count <= BIG_PARAMS]
    return _round_trip(small, tmp_path_factory.mktemp("round_trip"))


@pytest.mark.slow  # one fresh process for all models, but it builds, saves and runs them all
@pytest.mark.parametrize("name", _entries())
def test_round_trip_through_a_fresh_process_is_bit_identical(
    name: str, round_trips: dict[str, tuple[nn.Module, Any, Any]], param_counts: dict[str, int | None]
) -> None:
    if name in round_trips:
        _check_round_trip(*round_trips[name])
        return
    count = param_counts[name]
    if count is not None and count > TOO_LARGE_TO_BUILD:
        pytest.skip(f"'{name}' has {count:,} parameters: too large to build here (its keys are checked on meta)")
    if count is not None and count > BIG_PARAMS:
        pytest.skip(f"'{name}' is large: covered by test_round_trip_of_large_models")
    _build_for_round_trip(name)  # skips, saying why, what cannot build or stays lazy
    raise AssertionError(f"'{name}' builds but was left out of the round trip")


@pytest.mark.slow
def test_round_trip_of_large_models(param_counts: dict[str, int | None], tmp_path: Path) -> None:
    big = [
        name for name, count in param_counts.items() if count is not None and BIG_PARAMS < count <= TOO_LARGE_TO_BUILD
    ]
    if not big:
        pytest.skip("no installed entry is larger than the fast round trip's limit")
    for model, ours, theirs in _round_trip(big, tmp_path).values():
        _check_round_trip(model, ours, theirs)


@pytest.mark.slow
def test_chimera_keeps_its_rand_weight_and_tied_mlp_stays_tied(round_trips: dict[str, Any]) -> None:
    chimera, _, loaded = round_trips["chimera"]
    assert torch.equal(loaded["state"]["2.rand_weight"], chimera[2].rand_weight)
    tied, _, loaded = round_trips["tied_mlp"]
    assert loaded["groups"] == [["2.bias", "4.bias"], ["2.weight", "4.weight"]]


# --- the files -------------------------------------------------------------------------------------


def test_model_safetensors_opens_with_plain_safetensors_and_keys_follow_state_dict(tmp_path: Path) -> None:
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m")
    plain = load_file(tmp_path / "m" / "model.safetensors")
    assert list(plain) != [] and set(plain) == set(model.state_dict())
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_loaded_tensors_start_64_byte_aligned_as_torch_allocates_them(tmp_path: Path) -> None:
    # Math kernels choose their code path by input address: a mapped tensor must sit where torch's
    # allocator would put it, or a loaded model computes other bits (the fresh-process round trip).
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m")
    raw = (tmp_path / "m" / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert (8 + header_len) % 64 == 0  # the data buffer starts aligned in the file, so in the page-aligned map
    header = json.loads(raw[8 : 8 + header_len])
    starts = {k: v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
    sizes = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
    assert all(starts[k] % 64 == 0 for k in starts if sizes[k] % 64 == 0)  # whole multiples: every one
    assert sum(starts[k] % 64 != 0 for k in starts) <= 2  # of 11 tensors, 8 of odd sizes
    plain = load_file(tmp_path / "m" / "model.safetensors")
    assert all(torch.equal(plain[k], v) for k, v in model.state_dict().items())
    loaded = zoo.load(tmp_path / "m")
    assert all(t.data_ptr() % 64 == 0 for t in loaded.state_dict().values())
    # A file another writer laid out (8-byte header padding, no ordering) loads aligned too.
    save_file({"odd": torch.arange(3.0), "w": torch.rand(5, 7), "v": torch.rand(9)}, tmp_path / "plain.safetensors")
    back = zoo.load_tensors(tmp_path / "plain.safetensors")
    assert all(t.data_ptr() % 64 == 0 for t in back.values())
    assert torch.equal(back["odd"], torch.arange(3.0))
    zoo.save_tensors({"a": torch.rand(3), "b": [torch.rand(5, 3), torch.rand(7)]}, tmp_path / "t")
    nested = zoo.load_tensors(tmp_path / "t")
    assert all(t.data_ptr() % 64 == 0 for t in [nested["a"], *nested["b"]])


def test_config_json_carries_declaration_provenance_and_version(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp", hidden=32), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["name"] == "mlp" and config["zoo_version"] == zoo.__version__
    assert config["declaration"]["layers"]["hidden"] == {"type": "Linear", "in_features": 20, "out_features": 32}
    assert config["provenance"] == {
        "Linear": f"zoo {zoo.__version__}",
        "ReLU": f"zoo {zoo.__version__}",
        "Sequential": f"zoo {zoo.__version__}",
    }
    assert config["input_shape"] == [2, 20] and config["overrides"] == {"hidden": 32}
    loaded = zoo.load(tmp_path / "m")
    assert loaded.hidden.out_features == 32 and loaded.zoo_info.name == "mlp"


def test_model_card_says_how_to_load(tmp_path: Path) -> None:
    zoo.save(zoo.build("tied_mlp"), tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: zoo\n")
    assert "- Parameters: 249 " in card  # the tied Linear(8, 8) counted once
    assert 'zoo.load("path/to/this/folder")' in card and "# tied_mlp" in card


def test_tied_weights_are_stored_once_and_tied_again(tmp_path: Path) -> None:
    model = zoo.build("tied_mlp")
    zoo.save(model, tmp_path / "m")
    stored = load_file(tmp_path / "m" / "model.safetensors")
    assert "4.weight" not in stored and "2.weight" in stored
    header = reader.inspect(tmp_path / "m")[0]
    assert json.loads(header.metadata[layout.ALIASES_KEY]) == {"4.weight": "2.weight", "4.bias": "2.bias"}
    loaded = zoo.load(tmp_path / "m")
    assert loaded[2] is loaded[4]


def test_parameter_level_ties_survive_save_and_load_weights(tmp_path: Path) -> None:
    model = Tied()
    zoo.save(model, tmp_path / "m")
    fresh = nn.Module()
    fresh.a, fresh.b = nn.Linear(4, 4), nn.Linear(4, 4)  # the same keys, not tied
    zoo.load_weights(fresh, tmp_path / "m")
    assert fresh.b.weight is fresh.a.weight
    assert torch.equal(fresh.a.weight, model.a.weight) and torch.equal(fresh.b.bias, model.b.bias)


def test_sharded_save_writes_a_transformers_index(tmp_path: Path) -> None:
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m", max_shard_size=4000)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict()) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in model.state_dict().values())
    for shard in shards:  # each shard stays under the limit unless one tensor alone is larger
        tensors = load_file(tmp_path / "m" / shard)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= 4000 or len(tensors) == 1
    assert same_state(zoo.load(tmp_path / "m"), model)


@pytest.mark.parametrize(("text", "size"), [(1234, 1234), ("2GB", 2 * 10**9), ("500MiB", 500 * 2**20), ("1.5kb", 1500)])
def test_max_shard_size_accepts_bytes_and_units(text: int | str, size: int) -> None:
    assert devices.parse_size(text, "max_shard_size") == size


@pytest.mark.parametrize("bad", [0, -5, "lots", "5 parsecs", True, 2.5])
def test_bad_max_shard_size_is_an_argument_error(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="max_shard_size"):
        zoo.save(zoo.build("mlp"), tmp_path / "m", max_shard_size=bad)
    assert not (tmp_path / "m").exists()


def test_save_in_half_precision_keeps_integer_buffers(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    zoo.save(model, tmp_path / "m", dtype=torch.float16)
    stored = load_file(tmp_path / "m" / "model.safetensors")
    assert stored["0.weight"].dtype == torch.float16 and stored["1.num_batches_tracked"].dtype == torch.int64
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    zoo.load_weights(fresh, tmp_path / "m")  # converted to the model's float32 on the way in
    assert fresh[0].weight.dtype == torch.float32
    assert torch.equal(fresh[0].weight, model[0].weight.half().float())


def test_bad_save_dtype_is_an_argument_error(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="floating-point"):
        zoo.save(zoo.build("mlp"), tmp_path / "m", dtype=torch.int8)


def test_load_converts_dtype_and_places_on_device(tmp_path: Path) -> None:
    model = zoo.build("chimera")
    zoo.save(model, tmp_path / "m")
    loaded = zoo.load(tmp_path / "m", dtype=torch.float64, device="cpu")
    assert {t.dtype for t in loaded.state_dict().values()} == {torch.float64}
    assert torch.equal(loaded[1].weight, model[1].weight.double())
    with pytest.raises(DeviceError, match="not on this machine"):
        zoo.load(tmp_path / "m", device="cuda:7")


@pytest.mark.parametrize("bad", ["float16", torch.int8, 16])
def test_a_load_dtype_that_is_no_floating_torch_dtype_is_an_argument_error(tmp_path: Path, bad: Any) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    with pytest.raises(ArgumentError, match=rf"such as torch\.float16, got {re.escape(repr(bad))}"):
        zoo.load(tmp_path / "m", dtype=bad)
    with pytest.raises(ArgumentError, match="floating-point"):  # before any download
        zoo.load("hf://someone/nothing", dtype=bad)


def test_load_draws_no_random_numbers_and_shares_the_file_pages(tmp_path: Path) -> None:
    model = zoo.build("mlp", hidden=512)
    zoo.save(model, tmp_path / "m")
    state = torch.get_rng_state()
    loaded = zoo.load(tmp_path / "m")
    assert torch.equal(torch.get_rng_state(), state)  # no random initialisation ran
    assert same_state(loaded, model)
    mapped = load_file(tmp_path / "m" / "model.safetensors")["hidden.weight"]
    # The loaded parameter is a view of the mapped file (copy-on-write): same bytes, no copy made.
    assert loaded.hidden.weight.untyped_storage().nbytes() == mapped.untyped_storage().nbytes()
    loaded.hidden.weight.data.add_(1)  # writing to it never touches the file
    assert torch.equal(load_file(tmp_path / "m" / "model.safetensors")["hidden.weight"], model.hidden.weight)


def test_loaded_model_is_in_eval_mode_and_trains(tmp_path: Path) -> None:
    model = zoo.build("mlp").train()
    zoo.save(model, tmp_path / "m")
    loaded = zoo.load(tmp_path / "m")
    assert not loaded.training
    loaded.train()
    loss = loaded(torch.rand(2, 20)).sum()
    loss.backward()
    assert all(p.grad is not None for p in loaded.parameters())


# --- non-persistent buffers and blocks registered in Python ---------------------------------------


class Positional(nn.Module):
    """A block with a non-persistent buffer, computed in __init__ and never saved (like rotary tables)."""

    def __init__(self, size: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(size, size)
        self.register_buffer("table", torch.arange(size, dtype=torch.float32) / size, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.table


@pytest.fixture
def positional() -> Iterator[None]:
    with zoo.isolated_registry():
        zoo.register(Positional)
        yield


def test_non_persistent_buffers_are_computed_again(positional: None, tmp_path: Path) -> None:
    model = zoo.build("Positional", size=6)
    zoo.save(model, tmp_path / "m")
    assert "table" not in load_file(tmp_path / "m" / "model.safetensors")
    loaded = zoo.load(tmp_path / "m", dtype=torch.float64)
    assert not loaded.table.is_meta and torch.equal(loaded.table, model.table.double())
    x = torch.rand(2, 6, dtype=torch.float64)
    assert torch.equal(loaded(x), model.double()(x))


def test_a_block_no_longer_registered_names_who_provided_it(positional: None, tmp_path: Path) -> None:
    zoo.save(zoo.build("Positional"), tmp_path / "m")
    with zoo.isolated_registry(), pytest.raises(UnknownNameError) as err:
        zoo.load(tmp_path / "m")
    assert "'Positional'" in str(err.value) and "zoo.register" in str(err.value) and "config.json" in str(err.value)


def test_a_missing_plugin_block_says_what_to_pip_install(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    config["declaration"]["layers"]["act"] = {"type": "zoo-extras:Swish"}
    config["provenance"]["Swish"] = "zoo-extras 1.2.0"
    config_file.write_text(json.dumps(config))
    with pytest.raises(UnknownNameError, match=r"pip install 'zoo-extras==1\.2\.0'"):
        zoo.load(tmp_path / "m")


# --- weights only, and loading into a model you built ---------------------------------------------


def test_a_model_zoo_did_not_build_saves_weights_only(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    zoo.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "model.safetensors"]
    assert "zoo.load_weights(model" in (tmp_path / "m" / "README.md").read_text()
    with pytest.raises(WeightsError, match=r"weights only .*zoo\.load_weights"):
        zoo.load(tmp_path / "m")
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert not zoo.load_weights(fresh, tmp_path / "m")
    assert same_state(fresh, model)


def test_a_folder_with_no_save_in_it_says_so_and_lists_what_it_holds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"empty holds no zoo save \(no config.json, .*; it holds: \(none\)"):
        zoo.load(tmp_path / "empty")
    (tmp_path / "empty" / "notes.txt").write_text("x")
    code, _, err = run(capsys, "load", str(tmp_path / "empty"))
    assert code == 2 and "holds no zoo save" in err and "it holds: notes.txt" in err and "weights only" not in err


def test_the_seed_mlp_clone_gives_equal_outputs(tmp_path: Path) -> None:
    net = zoo.build("mlp")
    X = torch.randn(2, 20)
    Y = net(X)
    zoo.save(net, tmp_path / "mlp-params")
    clone = zoo.build("mlp")  # the architecture from code, then the parameters
    zoo.load_weights(clone, tmp_path / "mlp-params" / "model.safetensors")
    clone.eval()
    assert torch.equal(clone(X), Y)


def test_load_weights_copies_into_the_models_own_parameters(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    model = zoo.build("mlp")
    params = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    zoo.load_weights(model, tmp_path / "m")
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert optimizer.param_groups[0]["params"][0] is model.hidden.weight


def test_load_weights_into_a_model_built_on_the_meta_device_assigns_without_copying(tmp_path: Path) -> None:
    source = zoo.build("tied_mlp")
    zoo.save(source, tmp_path / "m")
    with torch.device("meta"):
        empty = zoo.build("tied_mlp")
    zoo.load_weights(empty, tmp_path / "m")
    assert not any(t.is_meta for t in empty.state_dict().values()) and empty[2] is empty[4]
    assert torch.equal(empty[0].weight, source[0].weight)


def test_a_misfit_lists_every_problem_and_changes_nothing(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    source.extra = nn.Linear(2, 2)
    zoo.save(source, tmp_path / "m")
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 6), nn.Linear(6, 1))
    before = snapshot(target)
    with pytest.raises(WeightsError) as err:
        zoo.load_weights(target, tmp_path / "m")
    message = str(err.value)
    assert str(tmp_path / "m") in message and "nothing was loaded" in message
    assert "missing from the file (2): 2.bias, 2.weight" in message
    assert "not in the model (2): extra.bias, extra.weight" in message
    assert "'1.weight': shape (6, 4) in the model, (5, 4) in the file" in message and "'1.bias'" in message
    assert unchanged(target, before)


def test_a_non_strict_load_returns_the_lists_and_loads_the_rest(tmp_path: Path) -> None:
    source = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5))
    zoo.save(source, tmp_path / "m")
    target = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 6), nn.Linear(6, 1))
    before = snapshot(target)
    report = zoo.load_weights(target, tmp_path / "m", strict=False)
    assert report.missing == ("2.weight", "2.bias") and report.unexpected == ()
    assert set(report.mismatched) == {"1.weight", "1.bias"}
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[1].weight, before["1.weight"]) and torch.equal(target[2].weight, before["2.weight"])


def test_an_integer_file_tensor_does_not_load_into_a_float_one(tmp_path: Path) -> None:
    save_file({"weight": torch.ones(2, 2, dtype=torch.int64), "bias": torch.zeros(2)}, tmp_path / "w.safetensors")
    model = nn.Linear(2, 2)
    before = snapshot(model)
    with pytest.raises(WeightsError, match=r"'weight': torch\.float32 in the model, torch\.int64 in the file"):
        zoo.load_weights(model, tmp_path / "w.safetensors")
    assert unchanged(model, before)


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    save_file({"wieght": torch.ones(2, 2), "bias": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="nearest names, file → model .*: 'wieght' → 'weight'"):
        zoo.load_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")


def test_load_weights_into_a_lazy_model(tmp_path: Path) -> None:
    source = zoo.build("lazy_mlp", input_shape=(2, 7))
    zoo.save(source, tmp_path / "m")
    lazy_model = zoo.build("lazy_mlp")
    assert lazy.is_lazy(lazy_model)
    zoo.load_weights(lazy_model, tmp_path / "m")
    assert not lazy.is_lazy(lazy_model) and same_state(lazy_model, source)
    x = torch.rand(3, 7)
    assert torch.equal(lazy_model(x), source(x))


def test_a_lazy_model_that_does_not_fit_is_left_lazy(tmp_path: Path) -> None:
    save_file(
        {
            "0.weight": torch.ones(5, 7),
            "0.bias": torch.zeros(5),
            "2.weight": torch.ones(10, 5),
            "2.bias": torch.zeros(10),
        },
        tmp_path / "w.safetensors",
    )
    lazy_model = zoo.build("lazy_mlp")  # LazyLinear(256) first: 5 outputs cannot fit
    with pytest.raises(WeightsError, match="0.weight"):
        zoo.load_weights(lazy_model, tmp_path / "w.safetensors")
    assert lazy.is_lazy(lazy_model)


def test_saving_a_lazy_model_says_how_to_materialise(tmp_path: Path) -> None:
    with pytest.raises(NotMaterializedError, match=r"zoo\.materialize\(model, input_shape="):
        zoo.save(zoo.build("lazy_mlp"), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_tensors_that_cannot_be_stored_are_named(tmp_path: Path) -> None:
    class WithExtraState(nn.Linear):
        def get_extra_state(self) -> Any:
            return {"note": "hi"}

    with pytest.raises(WeightsError, match=r"'_extra_state' is a dict, not a tensor"):
        zoo.save(WithExtraState(2, 2), tmp_path / "a")
    with torch.device("meta"):
        empty = nn.Linear(2, 2)
    with pytest.raises(WeightsError, match="'weight' is on the meta device"):
        zoo.save(empty, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_strict_zoo_load_of_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    model = zoo.build("mlp")
    zoo.save(model, tmp_path / "m")
    state = {k: v for k, v in model.state_dict().items() if k != "out.bias"}
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(WeightsError, match=r"missing from the file \(1\): out\.bias"):
        zoo.load(tmp_path / "m")
    loaded = zoo.load(tmp_path / "m", strict=False)
    assert loaded.zoo_load_report.missing == ("out.bias",)
    assert torch.equal(loaded.hidden.weight, model.hidden.weight) and not loaded.training


# --- folders -------------------------------------------------------------------------------------


def test_files_zoo_did_not_write_are_kept_and_its_own_replaced(tmp_path: Path) -> None:
    target = tmp_path / "m"
    zoo.save(zoo.build("mlp"), target, max_shard_size=10_000)
    (target / "tokenizer.json").write_text("{}")
    (target / "extras").mkdir()
    (target / "extras" / "notes.txt").write_text("mine")
    zoo.save(zoo.build("mlp"), target)  # one file now: the old shards and index must go
    assert sorted(p.name for p in target.iterdir()) == [
        "README.md",
        "config.json",
        "extras",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (target / "extras" / "notes.txt").read_text() == "mine"
    (target / "README.md").write_text("# my own card\n")
    zoo.save(zoo.build("mlp"), target)
    assert (target / "README.md").read_text() == "# my own card\n"


def test_saving_again_keeps_the_folders_mode_and_a_new_folder_gets_the_default(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()  # what mkdir gives under this umask
    zoo.save(zoo.build("mlp"), tmp_path / "new")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode)
    (tmp_path / "private").mkdir()
    (tmp_path / "private").chmod(0o700)
    zoo.save(zoo.build("mlp"), tmp_path / "private")
    zoo.save(zoo.build("mlp"), tmp_path / "private")
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    (tmp_path / "private").chmod(0o2750)  # set-group-id, as on a shared folder
    zoo.save(zoo.build("mlp"), tmp_path / "private")
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o2750


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give a folder away")
def test_saving_again_keeps_the_folders_owner_and_group_where_it_may(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "theirs"
    target.mkdir()
    os.chown(target, 12345, 23456)
    zoo.save(zoo.build("mlp"), target)
    assert (target.stat().st_uid, target.stat().st_gid) == (12345, 23456)
    real_chown = os.chown

    def chown_as_a_user(path: Any, uid: int, gid: int) -> None:  # a user may set a group, never give a file away
        if uid != -1:
            raise PermissionError(1, "Operation not permitted")
        real_chown(path, uid, gid)

    monkeypatch.setattr(os, "chown", chown_as_a_user)
    zoo.save(zoo.build("mlp"), target)
    assert (target.stat().st_uid, target.stat().st_gid) == (os.geteuid(), 23456)


def test_saving_into_the_current_directory_moves_this_process_into_the_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m"
    zoo.save(zoo.build("mlp"), target)
    (target / "extras").mkdir()
    monkeypatch.chdir(target)
    zoo.save(zoo.build("mlp"), os.getcwd())
    Path("x").write_text("written after the save")  # the old folder is gone: this must land in the new one
    assert (target / "x").read_text() == "written after the save" and Path.cwd() == target.resolve()
    monkeypatch.chdir(target / "extras")
    zoo.save(zoo.build("mlp"), target)
    Path("y").write_text("y")
    assert (target / "extras" / "y").exists()
    with fsio.atomic_dir(target) as folder:  # keeps nothing: this process's subfolder is gone, it lands in the folder
        (folder / "new.txt").write_text("new")
    assert Path("new.txt").read_text() == "new" and Path.cwd() == target.resolve()


def test_saving_to_dot_saves_the_current_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = zoo.build("mlp")
    zoo.save(model, ".")
    assert (tmp_path / "config.json").exists() and same_state(zoo.load("."), model)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    code, out, err = run(capsys, "save", "chimera", "..")
    assert code == 0, err
    info = builder.build_info(zoo.load(tmp_path))
    assert info is not None and info.name == "chimera"
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "save", "mlp", ".")
    assert code == 0, err
    assert "saved 'mlp'" in out and "model.safetensors" in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_saving_through_a_symlink_replaces_the_folder_it_points_at(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    model = zoo.build("mlp")
    for _ in range(2):  # a new folder, then one replaced
        assert zoo.save(model, tmp_path / "link") == tmp_path / "link"
        assert (tmp_path / "link").is_symlink() and os.readlink(tmp_path / "link") == "real"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no stray temporary
        assert (tmp_path / "real" / "model.safetensors").is_file()
    assert same_state(zoo.load(tmp_path / "link"), model)


def test_saving_over_a_file_or_loading_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(WeightsError, match="is a file; zoo.save writes a folder"):
        zoo.save(zoo.build("mlp"), tmp_path / "f")
    with pytest.raises(WeightsError, match=r"is a file; zoo\.load takes the folder"):
        zoo.load(tmp_path / "f")


def test_loading_a_missing_folder_suggests_the_nearest(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "chimera")
    with pytest.raises(WeightsError, match="no such folder: .*chimra. Did you mean 'chimera'"):
        zoo.load(tmp_path / "chimra")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"zoo_format": 1}', "no `declaration`"),
        ('{"zoo_format": 99, "zoo_version": "9.0", "declaration": {}}', "zoo_format 99, written by zoo 9.0"),
        ('{"zoo_format": 1, "name": "m", "declaration": {}, "input_shape": [0]}', "input_shape"),
        ('{"zoo_format": 1, "name": "m", "declaration": [], "input_shape": null}', "`declaration` must be a table"),
    ],
)
def test_a_broken_config_json_is_named(tmp_path: Path, config: str, message: str) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(config)
    with pytest.raises(WeightsError, match=message) as err:
        zoo.load(tmp_path / "m")
    assert str(tmp_path / "m" / "config.json") in str(err.value)


def test_a_declaration_error_in_config_json_names_the_file(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    config["declaration"]["layers"]["hidden"]["out_feature"] = 3
    config_file.write_text(json.dumps(config))
    with pytest.raises(zoo.ArgumentError, match=r"config\.json.*Did you mean 'out_features'"):
        zoo.load(tmp_path / "m")


def test_shards_of_two_saves_are_not_mixed(tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp"), tmp_path / "a", max_shard_size=10_000)
    zoo.save(zoo.build("mlp"), tmp_path / "b", max_shard_size=10_000)
    (tmp_path / "a" / "model-00002-of-00004.safetensors").write_bytes(
        (tmp_path / "b" / "model-00002-of-00004.safetensors").read_bytes()
    )
    with pytest.raises(WeightsError, match="come from different saves"):
        zoo.load(tmp_path / "a")


# --- save_tensors / load_tensors -----------------------------------------------------------------


def test_the_seeds_tensor_list_and_dict(tmp_path: Path) -> None:
    x = torch.arange(4)
    zoo.save_tensors(x, tmp_path / "x-file")
    x1 = zoo.load_tensors(tmp_path / "x-file")
    assert isinstance(x1, torch.Tensor) and torch.equal(x1, x) and x1.dtype == torch.int64
    y = torch.zeros(4)
    zoo.save_tensors([x, y], tmp_path / "x-files")
    x2, y2 = zoo.load_tensors(tmp_path / "x-files")
    assert torch.equal(x2, x) and torch.equal(y2, y)
    mydict = {"x": x, "y": y}
    zoo.save_tensors(mydict, tmp_path / "mydict")
    mydict2 = zoo.load_tensors(tmp_path / "mydict")
    assert type(mydict2) is dict and list(mydict2) == ["x", "y"] and torch.equal(mydict2["y"], y)
    assert set(load_file(tmp_path / "mydict")) == {"x", "y"}  # plain safetensors, readable anywhere


def test_nesting_types_and_plain_values_come_back(tmp_path: Path) -> None:
    shared = torch.rand(3)
    obj = {
        "tuple": (torch.ones(2), [torch.zeros(1, dtype=torch.bfloat16), 7]),
        3: {"deep": torch.tensor(2.5), "none": None, "flag": True, "name": "adam", "lr": 1e-3},
        "a.b": torch.full((2,), 1.0),
        "a": {"b": torch.full((2,), 2.0)},
        "nan": math.nan,
        "inf": -math.inf,
        "same": [shared, shared],
        "strided": torch.arange(12).reshape(3, 4).t(),
        "empty": torch.empty(0, 5),
    }
    zoo.save_tensors(obj, tmp_path / "obj")
    back = zoo.load_tensors(tmp_path / "obj")
    assert list(back) == list(obj)
    assert isinstance(back["tuple"], tuple) and isinstance(back["tuple"][1], list) and back["tuple"][1][1] == 7
    assert back["tuple"][1][0].dtype == torch.bfloat16
    assert back[3]["deep"].shape == () and back[3]["none"] is None and back[3]["flag"] is True
    assert back[3]["name"] == "adam" and back[3]["lr"] == 1e-3
    assert torch.equal(back["a.b"], obj["a.b"]) and torch.equal(back["a"]["b"], obj["a"]["b"])
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["same"][0] is back["same"][1] and torch.equal(back["same"][0], shared)
    assert torch.equal(back["strided"], obj["strided"]) and back["empty"].shape == (0, 5)
    assert len(load_file(tmp_path / "obj")) == 8  # `shared` stored once


def test_an_optimizer_state_round_trips(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    model(torch.rand(4, 3)).sum().backward()
    optimizer.step()
    zoo.save_tensors(optimizer.state_dict(), tmp_path / "opt")
    again = torch.optim.Adam(model.parameters(), lr=0.5)
    again.load_state_dict(zoo.load_tensors(tmp_path / "opt"))
    assert again.param_groups[0]["betas"] == (0.8, 0.9) and again.param_groups[0]["lr"] == 0.01
    assert torch.equal(again.state[model.weight]["exp_avg"], optimizer.state[model.weight]["exp_avg"])


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"a": [1, object()]}, r"obj\['a'\]\[1\] is a object"),
        ({(1, 2): torch.ones(1)}, "dict keys must be str or int"),
        ({"a": {1.5: 2}}, r"obj\['a'\]: dict keys"),
    ],
)
def test_values_that_cannot_be_stored_are_placed(tmp_path: Path, obj: Any, where: str) -> None:
    with pytest.raises(ArgumentError, match=where):
        zoo.save_tensors(obj, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary


def test_save_tensors_to_a_folder_or_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is a folder"):
        zoo.save_tensors(torch.ones(1), tmp_path)
    with pytest.raises(WeightsError, match="does not exist"):
        zoo.save_tensors(torch.ones(1), tmp_path / "nope" / "x")


def test_load_tensors_of_a_plain_safetensors_file_and_on_a_device(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2), "b": torch.zeros(3)}, tmp_path / "plain.safetensors")
    assert set(zoo.load_tensors(tmp_path / "plain.safetensors", device="cpu")) == {"a", "b"}
    with pytest.raises(WeightsError, match="is a folder"):
        zoo.load_tensors(tmp_path)


def test_a_corrupt_structure_is_named(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "f", metadata={layout.STRUCTURE_KEY: '{"tensor": "zz"}'})
    with pytest.raises(WeightsError, match=r"zoo\.structure.*corrupt"):
        zoo.load_tensors(tmp_path / "f")
    save_file({"a": torch.ones(2)}, tmp_path / "g", metadata={layout.STRUCTURE_KEY: "{oops"})
    with pytest.raises(WeightsError, match="not valid JSON"):
        zoo.load_tensors(tmp_path / "g")


# --- progress -----------------------------------------------------------------------------------


class RecordingBar:
    made: list[RecordingBar] = []

    def __init__(self, total: int, desc: str, **_: Any) -> None:
        self.total, self.desc, self.n = total, desc, 0
        RecordingBar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


def test_a_progress_bar_follows_the_bytes_of_large_saves_and_loads_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "tqdm", RecordingBar)
    monkeypatch.setattr(progress, "_on_terminal", lambda: True)
    RecordingBar.made = []
    model = zoo.build("mlp")
    nbytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    zoo.save(model, tmp_path / "small")
    assert RecordingBar.made == []  # under PROGRESS_MIN_BYTES: no bar
    monkeypatch.setattr(progress, "PROGRESS_MIN_BYTES", nbytes)
    zoo.save(model, tmp_path / "m", max_shard_size=10_000)
    zoo.load(tmp_path / "m", dtype=torch.float64)
    save_bar, load_bar = RecordingBar.made
    assert save_bar.total == save_bar.n == nbytes and save_bar.desc.startswith("saving ")
    assert load_bar.total == load_bar.n == nbytes and load_bar.desc == "loading m"
    monkeypatch.setattr(progress, "_on_terminal", lambda: False)  # a log or a pipe: no bar, whatever the size
    RecordingBar.made = []
    zoo.save(model, tmp_path / "n")
    zoo.load(tmp_path / "n")
    assert RecordingBar.made == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_save_from_and_load_onto_a_gpu(tmp_path: Path) -> None:
    model = zoo.build("tied_mlp", device="cuda")
    zoo.save(model, tmp_path / "m")  # tensors come to the host one at a time
    on_gpu = zoo.load(tmp_path / "m", device="cuda", dtype=torch.float16)
    assert {t.device.type for t in on_gpu.state_dict().values()} == {"cuda"} and on_gpu[2] is on_gpu[4]
    assert torch.equal(on_gpu[0].weight, model[0].weight.half())
    on_cpu = zoo.load(tmp_path / "m")  # no device recorded in the file: it loads anywhere
    assert torch.equal(on_cpu[6].weight, model[6].weight.cpu())


# --- the CLI ----------------------------------------------------------------------------------------


def test_cli_save_load_inspect(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "save", "tied_mlp", str(tmp_path / "t"), "--dtype", "float16")
    assert code == 0, err
    assert "saved 'tied_mlp'" in out and "model.safetensors" in out and "config.json" in out
    code, out, err = run(capsys, "load", str(tmp_path / "t"))
    assert code == 0, err
    assert "loaded 'tied_mlp'" in out and "Total params: 249" in out
    code, out, err = run(capsys, "inspect", str(tmp_path / "t"))
    assert code == 0, err
    assert "'tied_mlp', saved by zoo" in out and "block LazyLinear from zoo" in out
    assert "2.weight  float16  [8, 8]" in out and '"4.weight": "2.weight"' in out
    code, out, err = run(capsys, "inspect", str(tmp_path / "t" / "model.safetensors"))
    assert code == 0 and "6 tensor(s)" in out and "config" not in out


def test_cli_errors_exit_2_with_one_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "save", "lazy_mlp", str(tmp_path / "l"))
    assert code == 2 and "--input-shape 2,20" in err and "Traceback" not in err
    code, _, err = run(capsys, "save", "lazy_mlp", str(tmp_path / "l"), "--input-shape", "2,5")
    assert code == 0, err
    code, _, err = run(capsys, "load", str(tmp_path / "nope"))
    assert code == 2 and "no such folder" in err
    (tmp_path / "x.pt").write_bytes(b"PK\x03\x04" + bytes(60))
    code, _, err = run(capsys, "inspect", str(tmp_path / "x.pt"))
    assert code == 2 and "never unpickles" in err
    with pytest.raises(SystemExit):
        cli.main(["save", "mlp", str(tmp_path / "m"), "--dtype", "int8"])
    assert "not a floating-point dtype" in capsys.readouterr().err


def test_no_pickle_in_the_package() -> None:
    package = Path(zoo.__file__).parent
    for file in package.glob("*.py"):
        text = file.read_text()
        assert "torch.load(" not in text and "import pickle" not in text and "pickle.load" not in text, file.name


def test_a_meta_model_that_loads_its_own_way_still_gets_its_hooks(tmp_path: Path) -> None:
    # zoo assigns stored tensors straight into plain modules; one with a load hook goes through torch's load.
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    source[1].running_mean.fill_(0.5)
    zoo.save_tensors(dict(source.state_dict()), tmp_path / "w.safetensors")
    seen: list[str] = []
    with torch.device("meta"):
        plain, hooked = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), nn.Sequential(nn.Linear(4, 3))
        hooked.append(nn.BatchNorm1d(3))
    hooked[0].register_load_state_dict_pre_hook(lambda *args, **kwargs: seen.append("pre"))
    plain[0].weight.requires_grad_(False)
    for model in (plain, hooked):
        zoo.load_weights(model, tmp_path / "w.safetensors")
        assert all(not t.is_meta for t in model.state_dict().values())
        assert torch.equal(model[1].running_mean, torch.full((3,), 0.5)) and torch.equal(model[0].bias, source[0].bias)
        assert type(model[0].weight) is nn.Parameter and isinstance(model[1].running_var, torch.Tensor)
    assert seen == ["pre"] and not plain[0].weight.requires_grad and hooked[0].weight.requires_grad
