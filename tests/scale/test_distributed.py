"""zoo.distributed: models sharded with FSDP2 over gloo, checkpointed to normal zoo folders.

The 2-rank tests share one run of tests/scale/distributed_worker.py in two processes (starting torch
twice costs most of the time); each test checks one thing that run recorded. The error tests
run in this process, in a process group of one rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader

import zoo
from tests.scale.conftest import free_port, run_ranks
from tests.scale.distributed_worker import train_step
from tests.ties import forward_backward, small, tied_entries

WORKER = Path(__file__).parent / "distributed_worker.py"
RUN_TIMEOUT = 300  # seconds for both ranks: a hang fails the tests instead of stalling the suite


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepare an unsharded save and checkpoint, then run the worker on 2 ranks; its folder."""
    work = tmp_path_factory.mktemp("two-ranks")
    (work / "out").mkdir()
    torch.manual_seed(0)
    model = zoo.build("mlp", hidden=64)
    zoo.save(model, work / "saved")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, optimizer, 1)
    zoo.checkpoint.save(work / "single", model=model, optimizer=optimizer, step=1)
    for name in tied_entries():
        torch.manual_seed(0)
        zoo.save(zoo.build(name, **small(name)), work / "tied" / name)

    ranks = run_ranks(
        WORKER, 2, work, timeout=RUN_TIMEOUT, env={"ZOO_PEER_WAIT": "3"}
    )  # a killed rank: named after 3 s
    logs = [r.stdout + r.stderr for r in ranks]
    # Rank 1 kills itself in the last step on purpose (exit 3); rank 0 must finish.
    assert ranks[0].returncode == 0, logs[0][-3000:]
    assert ranks[1].returncode == 3, logs[1][-3000:]
    return work


def record(run: Path, rank: int) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "out" / f"rank{rank}.json").read_text())  # type: ignore[no-any-return]


def tensors(run: Path) -> dict:  # type: ignore[type-arg]
    return zoo.load_tensors(run / "out" / "tensors.safetensors")  # type: ignore[no-any-return]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- two ranks -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_load_with_a_mesh_puts_half_of_each_parameter_on_each_rank(run: Path) -> None:
    full = dict(zoo.load(run / "saved").named_parameters())
    for rank in (0, 1):
        for key, shard in record(run, rank)["load"].items():
            rows = full[key].shape[0] // 2
            assert shard["local"] == [rows, *full[key].shape[1:]], key
            assert shard["offsets"][0] == rank * rows, key


@pytest.mark.slow
def test_a_mesh_that_leaves_a_rank_out_is_refused_on_every_rank(run: Path) -> None:
    for rank in (0, 1):
        message = record(run, rank)["partial_mesh"]
        assert message.startswith(
            f"DistributedError: rank {rank}: zoo.build('mlp', mesh=...): the mesh holds ranks [0]"
        )
        assert "the process group 2 ranks" in message and "init_device_mesh('cpu', (2,))" in message


@pytest.mark.slow
def test_a_sharded_model_computes_what_the_unsharded_one_does(run: Path) -> None:
    x = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = zoo.load(run / "saved")(x)
    torch.testing.assert_close(tensors(run)["output"], expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_sharded_checkpoint_is_a_zoo_folder_with_the_gathered_weights(run: Path) -> None:
    step = zoo.checkpoint.latest(run / "run")
    assert step is not None and step.name == "step-00000001"
    assert record(run, 0)["files"] == [
        "config.json",
        "model-00001-of-00002.safetensors",  # one per rank, written in parallel
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "optimizer",  # the optimizer's tensors, a weights folder of the same kind, also one file per rank
        "trainer_state.safetensors",
    ]
    assert sorted(p.name for p in (step / "optimizer").iterdir()) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    loaded = zoo.load(step)  # one process, no process group
    assert_same_weights(loaded.state_dict(), tensors(run)["after_1"])


@pytest.mark.slow
def test_resuming_on_the_same_ranks_continues_exactly(run: Path) -> None:
    assert record(run, 0)["resumed_step"] == record(run, 1)["resumed_step"] == 1
    saved = tensors(run)
    assert_same_weights(saved["resumed_2"], saved["after_2"])


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(run: Path) -> None:
    step = zoo.checkpoint.latest(run / "run")
    assert step is not None
    model = zoo.build("mlp", hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    state = zoo.checkpoint.resume(run / "run", model, optimizer)
    assert state is not None and state.step == 1 and state.extra == {"rank": 0}
    train_step(model, optimizer, 2)
    for key, value in tensors(run)["after_2"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_ranks(run: Path) -> None:
    model = zoo.build("mlp", hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    zoo.checkpoint.resume(run / "single", model, optimizer)
    train_step(model, optimizer, 2)
    for key, value in tensors(run)["from_single_2"].items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_build_with_a_mesh_allocates_half_on_each_rank_with_the_unsharded_values(run: Path) -> None:
    torch.manual_seed(7)
    unsharded = zoo.build("mlp", hidden=4096)
    for rank in (0, 1):
        for key, shard in record(run, rank)["build"].items():
            full = unsharded.state_dict()[key]
            assert shard["numel"] == full.numel()
            assert shard["local_numel"] == full.numel() // 2, key
            assert shard["bytes"] == full.numel() // 2 * full.element_size(), key  # no hidden full-size storage
    assert_same_weights(tensors(run)["big"], unsharded.state_dict())


@pytest.mark.slow
def test_rows_that_do_not_split_evenly_save_and_load(run: Path) -> None:
    assert_same_weights(zoo.load(run / "odd").state_dict(), tensors(run)["odd"])


@pytest.mark.slow
@pytest.mark.parametrize("name", tied_entries())
def test_every_tied_entry_runs_forward_and_backward_on_two_ranks_as_unsharded(run: Path, name: str) -> None:
    assert record(run, 0)["tied"] == record(run, 1)["tied"] == sorted(tied_entries())
    expected = forward_backward(zoo.load(run / "tied" / name))
    got = zoo.load_tensors(run / "out" / f"tied-{name}.safetensors")
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
def test_torch_dcp_reads_a_one_process_zoo_checkpoint_onto_two_ranks(run: Path) -> None:
    step = zoo.checkpoint.latest(run / "single")
    assert step is not None
    assert_same_weights(tensors(run)["by_dcp"], zoo.load(step).state_dict())


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled:UserWarning"
)  # DCP's note that it reads in one process
def test_torch_dcp_reads_a_two_rank_zoo_checkpoint_into_one_process(run: Path) -> None:
    step = zoo.checkpoint.latest(run / "run")
    assert step is not None
    model = zoo.build("mlp", hidden=64)
    dcp.load(model.state_dict(), storage_reader=HuggingFaceStorageReader(str(step)), no_dist=True)  # one process
    assert_same_weights(model.state_dict(), tensors(run)["after_1"])


@pytest.mark.slow
def test_a_corrupt_copy_on_one_rank_fails_every_rank_naming_it(run: Path) -> None:
    own, other = record(run, 1), record(run, 0)
    assert own["corrupt_load"].startswith("WeightsError: ") and "copy-1/saved" in own["corrupt_load"]
    assert other["corrupt_load"].startswith("DistributedError: rank 0: zoo.load(")
    assert "failed on rank 1: " in other["corrupt_load"] and "copy-1/saved" in other["corrupt_load"]
    assert own["corrupt_resume"].startswith("WeightsError: ")
    assert other["corrupt_resume"].startswith("DistributedError: rank 0: ") and "on rank 1" in other["corrupt_resume"]
    assert own["corrupt_resume_unchanged"] and other["corrupt_resume_unchanged"]  # checked before any rank reads


@pytest.mark.slow
def test_a_rank_killed_while_saving_leaves_the_previous_checkpoint_whole(run: Path) -> None:
    outcome = (run / "out" / "killed_save.txt").read_text()
    assert outcome.startswith("DistributedError: rank 0: saving "), outcome
    assert "failed, and nothing was saved: " in outcome and "by peer" in outcome, outcome  # gloo: the peer is gone
    assert [p.name for p in (run / "run").iterdir()] == ["step-00000001"]  # no step 2, no temporary left
    assert_same_weights(zoo.load(run / "run" / "step-00000001").state_dict(), tensors(run)["after_1"])


# --- one rank, in this process: errors ----------------------------------------------------------


def test_a_mesh_without_a_process_group_says_how_to_start_one(tmp_path: Path) -> None:
    assert not dist.is_initialized()
    with pytest.raises(zoo.DistributedError, match="needs a process group.*torchrun.*init_process_group"):
        zoo.build("mlp", mesh=object())
    zoo.save(zoo.build("mlp"), tmp_path / "mlp")
    with pytest.raises(zoo.DistributedError, match="needs a process group"):
        zoo.load(tmp_path / "mlp", mesh=object())


def test_a_mesh_must_be_a_device_mesh(mesh: object) -> None:
    with pytest.raises(zoo.ArgumentError, match="mesh must be a torch.distributed.device_mesh.DeviceMesh"):
        zoo.build("mlp", mesh="cpu")


def test_a_shard_policy_naming_a_missing_block_names_the_nearest(mesh: object) -> None:
    with pytest.raises(zoo.UnknownNameError, match=r"shard= names Linaer.*Linear, ReLU.*Did you mean 'Linear'"):
        zoo.build("mlp", mesh=mesh, shard={"Linaer"})


def test_a_shard_policy_picks_the_fsdp_units(mesh: object) -> None:
    model = zoo.build("mlp", mesh=mesh, shard=lambda path, _module: path == "out")
    assert type(model.out).__name__.startswith("FSDP")
    assert not type(model.hidden).__name__.startswith("FSDP")  # its parameters belong to the root's unit


def test_resuming_a_checkpoint_of_other_shapes_names_the_rank_and_the_key(mesh: object, tmp_path: Path) -> None:
    saved = zoo.build("mlp", hidden=64, mesh=mesh)
    zoo.checkpoint.save(tmp_path / "run", model=saved, step=0)
    other = zoo.build("mlp", hidden=32, mesh=mesh)
    before = {k: v.full_tensor().clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        zoo.WeightsError, match=r"(?s)^rank 0: .*'hidden.weight': shape \(32, 20\) in the model, \(64, 20\)"
    ):
        zoo.checkpoint.resume(tmp_path / "run", other)
    assert_same_weights({k: v.full_tensor() for k, v in other.state_dict().items()}, before)  # untouched


def test_an_optimizer_state_of_another_kind_is_refused_before_anything_changes(mesh: object, tmp_path: Path) -> None:
    model = zoo.build("mlp", hidden=16, mesh=mesh)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train_step(model, optimizer, 1)
    zoo.checkpoint.save(tmp_path / "run", model=model, optimizer=optimizer, step=1)
    other = zoo.build("mlp", hidden=16, mesh=mesh)
    before = {k: v.full_tensor().clone() for k, v in other.state_dict().items()}
    amsgrad = torch.optim.Adam(other.parameters(), lr=0.01, amsgrad=True)  # one more tensor per parameter
    with pytest.raises(
        zoo.WeightsError,
        match=r"(?s)^rank 0: the optimizer state in .*missing from the file .*state.hidden.weight.max_exp_avg_sq",
    ):
        zoo.checkpoint.resume(tmp_path / "run", other, amsgrad)
    assert_same_weights({k: v.full_tensor() for k, v in other.state_dict().items()}, before)


def test_loading_a_folder_of_other_shapes_names_the_rank_and_the_key(mesh: object, tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp", hidden=16), tmp_path / "mlp")
    config = json.loads((tmp_path / "mlp" / "config.json").read_text())
    layers = config["declaration"]["layers"]
    layers["hidden"]["out_features"] = layers["out"]["in_features"] = 8  # the declaration says 8, the file 16
    (tmp_path / "mlp" / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.WeightsError, match=r"(?s)^rank 0: .*'hidden.weight': shape \(8, 20\)"):
        zoo.load(tmp_path / "mlp", mesh=mesh)


def test_a_weights_only_folder_loads_into_a_model_sharded_in_code(mesh: object, tmp_path: Path) -> None:
    plain = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    zoo.save(plain, tmp_path / "weights")  # not built by zoo: no config.json
    with pytest.raises(zoo.WeightsError, match=r"holds no config.json.*zoo.distributed.shard\(model, mesh\)"):
        zoo.load(tmp_path / "weights", mesh=mesh)
    with torch.device("meta"):  # what the message says to do
        model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    zoo.distributed.shard(model, mesh)  # type: ignore[arg-type]
    model.to_empty(device="cpu")
    zoo.distributed.load_into(model, tmp_path / "weights")
    assert_same_weights({k: v.full_tensor() for k, v in model.state_dict().items()}, plain.state_dict())


def test_init_rules_are_refused_with_a_way_out(mesh: object) -> None:
    with pytest.raises(zoo.DistributedError, match=r"rank 0: 'mlp_init_normal' declares `init` rules.*zoo.save"):
        zoo.build("mlp_init_normal", mesh=mesh)


def test_mesh_and_device_together_are_refused(mesh: object, tmp_path: Path) -> None:
    with pytest.raises(zoo.DeviceError, match="device= or mesh="):
        zoo.build("mlp", mesh=mesh, device="cpu")
    zoo.save(zoo.build("mlp"), tmp_path / "mlp")
    with pytest.raises(zoo.DeviceError, match="mesh= places the shards itself"):
        zoo.load(tmp_path / "mlp", mesh=mesh, device_map="auto")


def test_one_rank_round_trip_through_zoo_save(mesh: object, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = zoo.build("lazy_mlp", mesh=mesh, input_shape=(2, 20))  # shapes from zoo's meta pass
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "notes.txt").write_text("mine")  # a file zoo did not write survives the save
    zoo.save(model, tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    assert_same_weights(zoo.load(tmp_path / "saved").state_dict(), full)
    again = zoo.load(tmp_path / "saved", mesh=mesh)
    assert_same_weights({k: v.full_tensor() for k, v in again.state_dict().items()}, full)


def test_a_hub_repo_loads_sharded(mesh: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from tests.hubserver import HubServer

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    torch.manual_seed(0)
    model = zoo.build("mlp", hidden=16)
    with HubServer() as server:
        zoo.push(model, "org/mlp", endpoint=server.url, token="test-token")
        # zoo.load("hf://…") takes the endpoint and the cache from huggingface_hub's settings, as without a mesh
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        template = server.url + "/{repo_id}/resolve/{revision}/{filename}"  # derived from HF_ENDPOINT at import
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        sharded = zoo.load("hf://org/mlp", mesh=mesh)
        assert server.errors == []
    assert_same_weights({k: v.full_tensor() for k, v in sharded.state_dict().items()}, model.state_dict())


def test_a_sharded_load_in_another_dtype_converts_as_the_unsharded_one(mesh: object, tmp_path: Path) -> None:
    torch.manual_seed(0)
    zoo.save(zoo.build("mlp", hidden=16), tmp_path / "mlp")
    sharded = zoo.load(tmp_path / "mlp", mesh=mesh, dtype=torch.float16)  # type: ignore[arg-type]
    plain = zoo.load(tmp_path / "mlp", dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in sharded.parameters())
    assert_same_weights({k: v.full_tensor() for k, v in sharded.state_dict().items()}, plain.state_dict())


def test_a_sharded_load_keeps_the_stored_dtype_and_reports_a_conversion(mesh: object, tmp_path: Path) -> None:
    zoo.save(zoo.build("mlp", hidden=16), tmp_path / "bf16", dtype=torch.bfloat16)
    kept = zoo.load(tmp_path / "bf16", mesh=mesh)  # type: ignore[arg-type]
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16} and not kept.zoo_load_report.converted
    converted = zoo.load(tmp_path / "bf16", mesh=mesh, dtype=torch.float32)  # type: ignore[arg-type]
    assert set(converted.zoo_load_report.converted.values()) == {"bfloat16 → float32"}
    plain = zoo.load(tmp_path / "bf16", dtype=torch.float32)
    assert_same_weights({k: v.full_tensor() for k, v in converted.state_dict().items()}, plain.state_dict())


# --- GPUs ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nccl_one_rank_load_matches_unsharded(tmp_path: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.manual_seed(0)
    zoo.save(zoo.build("mlp", hidden=64), tmp_path / "saved")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = zoo.load(tmp_path / "saved", mesh=init_device_mesh("cuda", (1,)))
        x = torch.randn(4, 20)
        with torch.no_grad():
            torch.testing.assert_close(model(x.cuda()).cpu(), zoo.load(tmp_path / "saved")(x))
        zoo.checkpoint.save(tmp_path / "run", model=model, step=0)
        assert_same_weights(
            zoo.load(tmp_path / "run" / "step-00000000").state_dict(),
            {k: v.full_tensor().cpu() for k, v in model.state_dict().items()},
        )
    finally:
        dist.destroy_process_group()
