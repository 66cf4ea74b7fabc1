"""zoo.load's placement: device maps read each tensor straight to its device; GPU checkpoints load on CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import zoo


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = zoo.build("chimera")
    return model.eval(), zoo.save(model, tmp_path / "chimera")


@pytest.mark.parametrize("device_map", ["auto", "balanced", {"": "cpu"}, {"0": "cpu", "1": "cpu", "2": "cpu"}])
def test_a_device_mapped_load_gives_the_same_outputs(saved: tuple[torch.nn.Module, Path], device_map: object) -> None:
    model, folder = saved
    X = torch.rand(2, 20)
    loaded = zoo.load(folder, device_map=device_map)  # type: ignore[arg-type]
    assert torch.equal(loaded(X), model(X))
    assert not loaded.training


def test_each_tensor_goes_to_the_device_its_block_is_planned_on(saved: tuple[torch.nn.Module, Path]) -> None:
    # The meta device stands in for a second accelerator: what lands there proves the routing.
    _, folder = saved
    loaded = zoo.load(folder, device_map={"": "cpu", "2": "meta"})
    assert loaded[0].net[0].weight.device.type == "cpu" and loaded[1].weight.device.type == "cpu"
    assert loaded[2].linear.weight.device.type == "meta"
    assert loaded[2].rand_weight.device.type == "meta"  # buffers follow their block


def test_device_and_device_map_together_are_refused(saved: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(zoo.DeviceError, match="pass device= or device_map=, not both"):
        zoo.load(saved[1], device="cpu", device_map="auto")


def test_a_budget_too_small_says_how_much_is_missing(saved: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(zoo.DeviceError, match="missing"):
        zoo.load(saved[1], device_map="auto", max_memory={"cpu": 1000})


def test_a_checkpoint_saved_on_a_missing_gpu_loads_on_cpu_with_one_notice(
    saved: tuple[torch.nn.Module, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["saved_on"] == "cpu"
    config["saved_on"] = "cuda:3"  # as a save on a GPU machine writes it
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="zoo"):
        loaded = zoo.load(folder)
    assert [r.getMessage() for r in caplog.records] == [
        f"{folder} was saved on cuda:3, which this machine lacks; loading it onto the cpu."
    ]
    assert loaded[1].weight.device.type == "cpu"
    X = torch.rand(2, 20)
    assert torch.equal(loaded(X), model(X))


def test_asking_for_a_missing_device_lists_those_present(saved: tuple[torch.nn.Module, Path]) -> None:
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(zoo.DeviceError, match="'cuda:7' is not on this machine, which has .*cpu"):
        zoo.load(saved[1], device="cuda:7")
