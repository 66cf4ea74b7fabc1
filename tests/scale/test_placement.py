"""zoo.placement: plans for made-up GPUs, the no-split rule, out-of-memory messages, dispatch.

Planning runs on any machine: budgets for made-up GPUs are plain numbers, and dispatch is
checked with the CPU (and the meta device) as every target. Tests marked `gpu` need CUDA.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import zoo
from zoo._build import devices
from zoo._errors import ArgumentError, DeviceError, NotMaterializedError

LINEAR16 = (16 * 16 + 16) * 4  # bytes of nn.Linear(16, 16) in float32
# The chimera's blocks in float32: nest_mlp's four layers, Linear(16, 20), FixedHiddenMLP (buffer + Linear).
CHIMERA = {"0.net.0": 5376, "0.net.1": 0, "0.net.2": 8320, "0.net.3": 0, "0.linear": 2112, "1": 1360, "2": 3280}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def stack(n: int, width: int = 16) -> nn.Sequential:
    return nn.Sequential(*(nn.Linear(width, width) for _ in range(n)))


def device_of(plan: zoo.Plan) -> dict[str, str]:
    return {p.name: p.device for p in plan.placements}


# ---------------------------------------------------------------- plans for 1, 2 and 4 made-up GPUs


def test_one_gpu_holds_everything_that_fits() -> None:
    plan = zoo.plan(stack(8), max_memory={"cuda:0": 8 * LINEAR16})
    assert set(device_of(plan).values()) == {"cuda:0"}
    assert plan.used == {"cuda:0": 8 * LINEAR16}
    assert [p.name for p in plan.placements] == [str(i) for i in range(8)]


def test_two_gpus_are_filled_in_order() -> None:
    plan = zoo.plan(stack(8), max_memory={"cuda:1": 4 * LINEAR16, "cuda:0": 4 * LINEAR16})
    assert list(device_of(plan).values()) == ["cuda:0"] * 4 + ["cuda:1"] * 4
    assert plan.used == {"cuda:0": 4 * LINEAR16, "cuda:1": 4 * LINEAR16}


def test_four_gpus_then_the_cpu_takes_the_rest() -> None:
    budgets = {f"cuda:{i}": 2 * LINEAR16 for i in range(4)} | {"cpu": "1GB"}
    plan = zoo.plan(stack(10), max_memory=budgets)
    assert list(device_of(plan).values()) == [d for i in range(4) for d in [f"cuda:{i}"] * 2] + ["cpu"] * 2
    assert plan.devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cpu"]


@pytest.mark.parametrize("n_gpus", [1, 2, 3, 4])
def test_balanced_spreads_blocks_evenly_across_gpus(n_gpus: int) -> None:
    budgets = {f"cuda:{i}": "1GiB" for i in range(n_gpus)} | {"cpu": "1GiB"}
    plan = zoo.plan(stack(8), device_map="balanced", max_memory=budgets)
    loads = [plan.used[f"cuda:{i}"] for i in range(n_gpus)]
    assert sum(loads) == 8 * LINEAR16 and plan.used["cpu"] == 0
    assert max(loads) - min(loads) <= LINEAR16  # at most one block apart
    assert max(loads) <= math.ceil(8 / n_gpus) * LINEAR16


def test_auto_keeps_to_the_first_gpu_when_it_can_hold_everything() -> None:
    plan = zoo.plan(stack(8), device_map="auto", max_memory={"cuda:0": "1GiB", "cuda:1": "1GiB"})
    assert plan.devices == ["cuda:0"]


def test_a_name_is_planned_on_the_meta_device() -> None:
    plan = zoo.plan("chimera", max_memory={"cuda:0": "1MB"})
    assert {p.name: p.bytes for p in plan.placements} == CHIMERA
    assert plan.model == "chimera" and plan.total_bytes == sum(CHIMERA.values())


def test_planning_allocates_no_weights(write_toml: Callable[..., Path]) -> None:
    # 400 GB of float32: were the plan to allocate it, this test could not pass on any test machine.
    path = write_toml('[huge]\nlayers = [{ type = "Linear", in_features = 100000, out_features = 1000000 }]\n')
    plan = zoo.plan("huge", registry=path, max_memory={"cuda:0": "500GB", "cuda:1": "500GB"})
    assert plan.placements[0].bytes == (100_000 * 1_000_000 + 1_000_000) * 4
    assert plan.placements[0].device == "cuda:0"


def test_budgets_as_text_and_as_integers() -> None:
    plan = zoo.plan(stack(1), max_memory={0: "1KiB", "cuda:1": "1.5 kb", "cpu": 10**9})
    assert plan.budgets == {"cuda:0": 1024, "cuda:1": 1500, "cpu": 10**9}
    assert device_of(plan) == {"0": "cuda:1"}  # 1,088 B does not fit into 1 KiB


@pytest.mark.parametrize(
    ("budgets", "fragment"),
    [
        ({"cuda:0": "4 GiBs"}, "Did you mean 'gib'?"),
        ({"cuda:0": -5}, "negative"),
        ({"cuda:0": 1.5}, "not a size"),
        ({"gpu:0": 100}, "not a device name"),
        ({"disk": "1TB"}, "disk"),
        ({"meta": 100}, "meta"),
        ({"cuda": 100, "cuda:0": 100}, "twice"),
        ({}, "empty"),
    ],
)
def test_bad_budgets_are_errors(budgets: dict[Any, Any], fragment: str) -> None:
    with pytest.raises(DeviceError, match=fragment):
        zoo.plan(stack(2), max_memory=budgets)


def test_plan_takes_a_module_or_a_name() -> None:
    with pytest.raises(ArgumentError, match="not int"):
        zoo.plan(3)  # type: ignore[arg-type]
    with pytest.raises(zoo.UnknownNameError, match="Did you mean 'chimera'"):
        zoo.plan("chimra")


def test_an_unknown_strategy_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(DeviceError, match="Did you mean 'balanced'"):
        zoo.plan(stack(2), device_map="balance", max_memory={"cpu": "1GB"})


def test_default_budgets_are_this_machines_free_memory(gpus: Callable[[int], None]) -> None:
    gpus(0)
    plan = zoo.plan("mlp")
    assert list(plan.budgets) == ["cpu"] and plan.devices == ["cpu"]
    assert plan.budgets["cpu"] == devices.inventory()[-1].free or plan.budgets["cpu"] > 0


def test_dtype_counts_floating_tensors_only() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16))  # BatchNorm counts batches in an int64
    full = zoo.plan(model, max_memory={"cpu": "1GB"})
    half = zoo.plan(model, max_memory={"cpu": "1GB"}, dtype=torch.float16)
    assert [p.bytes for p in full.placements] == [LINEAR16, 4 * 16 * 4 + 8]
    assert [p.bytes for p in half.placements] == [LINEAR16 // 2, 4 * 16 * 2 + 8]


def test_lazy_models_need_an_input_shape() -> None:
    with pytest.raises(NotMaterializedError, match="input_shape"):
        zoo.plan("lazy_mlp", max_memory={"cpu": "1GB"})
    plan = zoo.plan("lazy_mlp", input_shape=(2, 20), max_memory={"cpu": "1GB"})
    assert [p.bytes for p in plan.placements] == [(20 * 256 + 256) * 4, 0, (256 * 10 + 10) * 4]


# ---------------------------------------------------------------- blocks that stay whole


def test_a_custom_block_is_never_split() -> None:
    fits_up_to_1 = sum(CHIMERA.values()) - CHIMERA["2"] + 1000  # room left: 1,000 B < FixedHiddenMLP's 3,280
    plan = zoo.plan("chimera", max_memory={"cuda:0": fits_up_to_1, "cuda:1": "1MB"})
    assert [p.name for p in plan.placements] == list(CHIMERA)  # "2" as one block, no "2.linear"
    assert device_of(plan)["2"] == "cuda:1" and set(list(device_of(plan).values())[:-1]) == {"cuda:0"}
    whole = {p.name for p in plan.placements if p.whole}
    assert whole == {"2"}


class Residual(nn.Module):
    """One child, used next to the input: splitting it across devices would break `x + f(x)`."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(16, 16)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X + self.f(X)


def test_any_module_with_children_other_than_a_plain_container_stays_whole() -> None:
    model = nn.Sequential(Residual(), nn.Linear(16, 16))
    plan = zoo.plan(model, max_memory={"cuda:0": LINEAR16, "cuda:1": LINEAR16})
    assert device_of(plan) == {"0": "cuda:0", "1": "cuda:1"}
    assert plan.placements[0].whole and not plan.placements[1].whole


def test_a_container_with_tensors_of_its_own_stays_whole() -> None:
    inner = stack(2)
    inner.register_buffer("scale", torch.ones(4))
    plan = zoo.plan(nn.Sequential(inner, nn.Linear(16, 16)), max_memory={"cpu": "1MB"})
    assert [p.name for p in plan.placements] == ["0", "1"]


def test_zoos_own_sequential_is_split_like_nn_sequential() -> None:
    plan = zoo.plan("my_sequential_mlp", max_memory={"cpu": "1MB"})
    assert [(p.name, p.type) for p in plan.placements] == [("0", "Linear"), ("1", "ReLU"), ("2", "Linear")]


def test_no_split_keeps_named_classes_whole() -> None:
    plan = zoo.plan("chimera", no_split=["Sequential"], max_memory={"cuda:0": "1MB"})
    assert [(p.name, p.type, p.whole) for p in plan.placements] == [("", "Sequential", True)]
    assert plan.device_for("2.linear.weight") == torch.device("cuda:0")


def test_no_split_names_a_class_the_model_lacks() -> None:
    with pytest.raises(DeviceError, match="Did you mean 'FixedHiddenMLP'"):
        zoo.plan("chimera", no_split=["FixedHiddenMlp"], max_memory={"cpu": "1MB"})


# ---------------------------------------------------------------- shared parameters


def test_a_module_used_twice_is_placed_and_counted_once() -> None:
    plan = zoo.plan("tied_mlp", device_map="balanced", max_memory={"cuda:0": "1MB", "cuda:1": "1MB"})
    by_name = {p.name: p for p in plan.placements}
    assert by_name["4"].shares_with == "2" and by_name["4"].bytes == 0
    assert by_name["4"].device == by_name["2"].device
    model = zoo.build("tied_mlp")
    unique = {id(t): t for t in model.parameters()}
    assert plan.total_bytes == sum(t.numel() * 4 for t in unique.values())
    assert plan.device_for("4.weight") == plan.device_for("2.weight")


def test_a_module_without_tensors_used_twice_runs_where_it_first_runs() -> None:
    relu = nn.ReLU()  # one module object: one pre-hook, so one device for both of its calls
    model = nn.Sequential(nn.Linear(16, 16), relu, nn.Linear(16, 16), relu)
    plan = zoo.plan(model, max_memory={"cuda:0": LINEAR16, "cuda:1": LINEAR16})
    assert device_of(plan) == {"0": "cuda:0", "1": "cuda:0", "2": "cuda:1", "3": "cuda:0"}
    assert plan.placements[3].shares_with == "1"


def tied_apart() -> nn.Sequential:
    first, middle, last = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
    last.weight = first.weight  # two modules, one weight
    return nn.Sequential(first, middle, last)


def test_blocks_sharing_a_tensor_go_where_its_first_user_goes() -> None:
    linear = (8 * 8 + 8) * 4
    # cuda:0 can hold the shared group (first + last's bias), not the middle block too
    plan = zoo.plan(tied_apart(), max_memory={"cuda:0": linear + 32 + 100, "cuda:1": "1MB"})
    assert device_of(plan) == {"0": "cuda:0", "1": "cuda:1", "2": "cuda:0"}
    assert [p.bytes for p in plan.placements] == [linear, linear, 32]
    assert plan.placements[2].shares_with == "0"


def test_an_explicit_map_cannot_split_a_shared_tensor() -> None:
    with pytest.raises(DeviceError, match="shares tensors with '0'"):
        zoo.plan(tied_apart(), device_map={"0": "cuda:0", "1": "cuda:0", "2": "cuda:1"})


# ---------------------------------------------------------------- out of memory


def test_out_of_memory_says_how_many_bytes_are_missing_where() -> None:
    with pytest.raises(DeviceError) as caught:
        zoo.plan(stack(8), max_memory={"cuda:0": 2 * LINEAR16, "cuda:1": 2 * LINEAR16})
    message = str(caught.value)
    assert "block '4' (Linear) needs 1,088 B" in message
    assert "the budgets hold 4,352 B (4.2 KiB): 4,352 B (4.2 KiB) missing" in message
    assert "The blocks from '4' on need 4,352 B (4.2 KiB): cuda:1 is 4,352 B (4.2 KiB) short" in message


def test_the_shortfall_named_is_exactly_what_is_missing() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 64), nn.Linear(64, 16))
    budgets = {"cuda:0": LINEAR16 + 500, "cuda:1": 2000}
    with pytest.raises(DeviceError, match=r"cuda:1 is ([\d,]+) B") as caught:
        zoo.plan(model, max_memory=budgets)
    short = int(str(caught.value).split("cuda:1 is ")[1].split(" B")[0].replace(",", ""))
    with pytest.raises(DeviceError):
        zoo.plan(model, max_memory={**budgets, "cuda:1": 2000 + short - 1})
    plan = zoo.plan(model, max_memory={**budgets, "cuda:1": 2000 + short})
    assert plan.used["cuda:1"] == 2000 + short


def test_a_block_larger_than_every_device() -> None:
    with pytest.raises(DeviceError, match=r"block '2' \(FixedHiddenMLP, kept whole\) needs 3,280 B"):
        zoo.plan("chimera", max_memory={"cuda:0": 18_000, "cuda:1": 3_000})


# ---------------------------------------------------------------- activations


def test_activations_are_reserved_from_a_forward_on_meta() -> None:
    plan = zoo.plan("mlp", input_shape=(1000, 20), max_memory={"cuda:0": 10**7})
    acts = {p.name: p.activation_bytes for p in plan.placements}
    assert acts == {
        "hidden": (1000 * 20 + 1000 * 256) * 4,
        "act": 2 * 1000 * 256 * 4,
        "out": (1000 * 256 + 1000 * 10) * 4,
    }
    assert plan.reserve == {"cuda:0": 2 * 1000 * 256 * 4}
    assert "activations for input (1000, 20)" in str(plan)


def test_a_device_with_room_for_weights_but_not_activations_is_skipped() -> None:
    plan = zoo.plan("mlp", input_shape=(1000, 20), max_memory={"cuda:0": 1_200_000, "cpu": "1GB"})
    assert device_of(plan) == {"hidden": "cuda:0", "act": "cpu", "out": "cpu"}
    plan = zoo.plan("mlp", input_shape=(1000, 20), reserve=0, max_memory={"cuda:0": 1_200_000, "cpu": "1GB"})
    assert plan.devices == ["cuda:0"] and plan.reserve == {"cuda:0": 0, "cpu": 0}


@pytest.mark.parametrize("name", ["tied_mlp", "mlp", "centered_mlp"])
def test_counting_activations_leaves_the_models_tensors_as_they_were(name: str) -> None:
    model = zoo.build(name)
    before = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    plan = zoo.plan(model, max_memory={"cpu": "1GB"})
    assert plan.note == "" and plan.reserve["cpu"] > 0  # the meta forward ran
    after = model.state_dict(keep_vars=True)
    assert all(after[k] is v and torch.equal(v, copy) for k, (v, copy) in before.items())
    assert model[2] is model[4] if name == "tied_mlp" else True


def test_a_fixed_reserve_applies_to_every_block() -> None:
    plan = zoo.plan(stack(4), reserve="1KiB", max_memory={"cuda:0": 2 * LINEAR16 + 1024, "cuda:1": "1MB"})
    assert list(device_of(plan).values()) == ["cuda:0"] * 2 + ["cuda:1"] * 2
    assert plan.reserve == {"cuda:0": 1024, "cuda:1": 1024}


def test_when_activations_cannot_be_counted_the_plan_says_why() -> None:
    assert "Tensor.item() cannot be called on meta tensors" in zoo.plan("chimera", max_memory={"cpu": "1GB"}).note
    assert "no input shape" in zoo.plan(stack(2), max_memory={"cpu": "1GB"}).note


# ---------------------------------------------------------------- explicit maps, device_for, the table


def test_an_explicit_map_round_trips() -> None:
    budgets = {"cuda:0": 14_000, "cuda:1": 14_000}
    auto = zoo.plan("chimera", max_memory=budgets)
    again = zoo.plan("chimera", device_map=auto.device_map(), max_memory=budgets)
    assert again.mode == "explicit" and device_of(again) == device_of(auto) and again.used == auto.used


def test_an_explicit_path_covers_everything_below_it() -> None:
    plan = zoo.plan("chimera", device_map={"0": "cuda:0", "": "cpu"})
    assert device_of(plan) == {name: "cuda:0" if name.startswith("0.") else "cpu" for name in CHIMERA}
    assert plan.budgets == {"cuda:0": None, "cpu": None}


@pytest.mark.parametrize(
    ("device_map", "fragment"),
    [
        ({"0.nett": "cpu", "": "cpu"}, "Did you mean '0.net'"),
        ({"2.linear": "cuda:0", "": "cpu"}, "inside '2' \\(FixedHiddenMLP\\), which stays whole"),
        ({"0": "cpu"}, "2 block\\(s\\) of 'chimera' without a device: 1, 2"),
        ({"": "gpu"}, "not a device name"),
        ({"": None}, "is None"),
        ({}, "non-empty"),
    ],
)
def test_bad_explicit_maps_are_errors(device_map: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DeviceError, match=fragment):
        zoo.plan("chimera", device_map=device_map)


def test_an_explicit_map_over_budget_says_what_is_missing() -> None:
    with pytest.raises(DeviceError, match="cuda:0 needs 20,448 B .* of its 20,000 B .* budget: 448 B missing"):
        zoo.plan("chimera", device_map={"": "cuda:0"}, max_memory={"cuda:0": 20_000})


def test_device_for_maps_state_dict_keys_to_their_block() -> None:
    plan = zoo.plan("chimera", device_map={"0.net": "cuda:0", "0.linear": "cuda:1", "": "cpu"})
    model = zoo.build("chimera")
    expected = {"0.net": "cuda:0", "0.linear": "cuda:1", "1": "cpu", "2": "cpu"}
    for key in model.state_dict():
        prefix = next(p for p in expected if key.startswith(p + "."))
        assert plan.device_for(key) == torch.device(expected[prefix]), key
    with pytest.raises(DeviceError, match="holds '9.weight'"):
        plan.device_for("9.weight")


def test_the_plan_prints_as_a_table() -> None:
    text = str(zoo.plan("chimera", max_memory={"cuda:0": 14_000, "cuda:1": "1MB"}))
    assert text.startswith("Plan for 'chimera' (auto)")
    for name in ("0.net.0", "0.linear", "FixedHiddenMLP", "whole", "Weights", "Budget", "cuda:1"):
        assert name in text
    assert "Total: 20.0 KiB in 7 blocks on 2 device(s)" in text
    assert "Note: activations not counted" in text


def test_remap_runs_a_plan_made_for_other_hardware() -> None:
    plan = zoo.plan(stack(4), max_memory={"cuda:0": 2 * LINEAR16, "cuda:1": 2 * LINEAR16})
    here = plan.remap({"cuda:0": "cpu", "cuda:1": "cpu"})
    assert set(device_of(here).values()) == {"cpu"} and here.used == {"cpu": 4 * LINEAR16}
    with pytest.raises(DeviceError, match="no device cuda:7"):
        plan.remap({"cuda:7": "cpu"})


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize("name", ["chimera", "mlp", "tied_mlp", "my_sequential_mlp", "nest_mlp"])
def test_a_dispatched_model_gives_the_same_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name)
    X = torch.rand(model.zoo_info.input_shape)
    expected = model(X)
    plan = zoo.plan(model, device_map="balanced", max_memory={"cuda:0": "1GB", "cuda:1": "1GB", "cuda:2": "1GB"})
    assert zoo.dispatch(model, plan.remap({d: "cpu" for d in plan.used})) is model
    assert torch.equal(model(X), expected)


class Probe(nn.Module):
    """Records the device of what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[tuple[str, ...]] = []

    def forward(self, X: torch.Tensor, extra: Any = None) -> torch.Tensor:
        found = [X.device.type]
        if extra is not None:
            found += [t.device.type for t in extra["list"]] + [extra["pair"].a.device.type]
        self.seen.append(tuple(found))
        return X * self.scale


def test_activations_move_at_block_boundaries_and_outputs_stay_on_the_last_device() -> None:
    model = nn.Sequential(Probe(), Probe())
    zoo.dispatch(model, zoo.plan(model, device_map={"0": "cpu", "1": "meta"}))
    Y = model(torch.ones(3))
    assert model[0].seen == [("cpu",)] and model[1].seen == [("meta",)]
    assert Y.device.type == "meta"


def test_inputs_move_to_the_first_blocks_device_through_args_and_kwargs() -> None:
    model = Probe()
    zoo.dispatch(model, zoo.plan(model, device_map={"": "meta"}))
    Pair = namedtuple("Pair", "a b")
    model(torch.ones(2), extra={"list": [torch.ones(1), torch.ones(1)], "pair": Pair(torch.ones(1), 5)})
    assert model.seen == [("meta", "meta", "meta", "meta")]


def test_dispatching_again_replaces_the_hooks() -> None:
    model = zoo.build("chimera")
    plan = zoo.plan(model, max_memory={"cpu": "1GB"})
    zoo.dispatch(model, plan)
    zoo.dispatch(model, plan)
    assert len(model[1]._forward_pre_hooks) == 1
    assert model.zoo_plan is plan


def test_a_plan_for_another_model_is_refused() -> None:
    plan = zoo.plan("chimera", max_memory={"cpu": "1GB"})
    with pytest.raises(DeviceError, match="does not have"):
        zoo.dispatch(zoo.build("mlp"), plan)


def test_a_plan_naming_a_missing_device_changes_nothing(gpus: Callable[[int], None]) -> None:
    gpus(0)
    model = zoo.build("chimera")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = zoo.plan(model, max_memory={"cuda:0": "1GB"})
    with pytest.raises(DeviceError, match="which has cpu"):
        zoo.dispatch(model, plan)
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())


def test_a_model_without_values_cannot_be_dispatched() -> None:
    with torch.device("meta"):
        model = zoo.build("mlp")
    with pytest.raises(NotMaterializedError, match="'hidden.weight' of 'mlp' is on the meta device"):
        zoo.dispatch(model, zoo.plan(model, device_map={"": "cpu"}))


def test_dispatch_casts_to_the_plans_dtype() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    zoo.dispatch(model, zoo.plan(model, max_memory={"cpu": "1GB"}, dtype=torch.float64))
    assert model[0].weight.dtype == torch.float64 and model[1].num_batches_tracked.dtype == torch.int64
    assert model(torch.ones(2, 4, dtype=torch.float64)).dtype == torch.float64


def test_the_weights_loader_path_meta_build_plan_read_onto_devices_dispatch() -> None:
    """What zoo.load does with device_map: no weights allocated before each is read onto its device."""
    torch.manual_seed(0)
    saved = zoo.build("chimera")
    X = torch.rand(2, 20)
    expected = saved(X)
    checkpoint = saved.state_dict()
    with torch.device("meta"):
        model = zoo.build("chimera")
    plan = zoo.plan(model, max_memory={"cuda:0": 9000, "cuda:1": 9000, "cpu": "1GB"}).remap(
        {"cuda:0": "cpu", "cuda:1": "cpu"}
    )
    state = {key: tensor.to(plan.device_for(key)) for key, tensor in checkpoint.items()}
    model.load_state_dict(state, assign=True)
    zoo.dispatch(model, plan)
    assert torch.equal(model(X), expected)


@pytest.mark.gpu
@needs_cuda
def test_gpu_dispatch_across_gpu_and_cpu_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = zoo.build("chimera")
    X = torch.rand(2, 20)
    expected = model(X)
    zoo.dispatch(model, zoo.plan(model, device_map={"0": "cuda:0", "1": "cpu", "2": "cuda:0"}))
    assert model[0].net[0].weight.device.type == "cuda" and model[1].weight.device.type == "cpu"
    Y = model(X)  # X is on the CPU: the first block's hook moves it
    assert Y.device == torch.device("cuda:0")
    torch.testing.assert_close(Y.cpu(), expected)


@pytest.mark.gpu
@needs_cuda
def test_gpu_default_plan_uses_the_gpu() -> None:
    plan = zoo.plan("chimera")
    assert plan.devices == ["cuda:0"] and plan.budgets["cuda:0"] is not None


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_dispatch_across_two_gpus() -> None:
    model = zoo.build("mlp")
    X = torch.rand(2, 20)
    expected = model(X)
    zoo.dispatch(model, zoo.plan(model, device_map={"hidden": "cuda:0", "": "cuda:1"}))
    torch.testing.assert_close(model(X).cpu(), expected)
