"""Tied parameters stay one Parameter on every path zoo takes them: meta builds, device and dtype
changes, materialisation, dispatch, save and load. For every registry entry with a tie (tests/ties.py
finds them), plus models zoo did not build on zoo's own paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from tests.ties import MAX_BYTES_WITHOUT_SMALL, SMALL, small, tied_entries
from zoo._build import ties

TIED = tied_entries()


def tie_keys(model: nn.Module) -> list[list[str]]:
    return sorted(sorted(group) for group in ties.keys(model))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # torch counts a shared Parameter once


def test_the_entries_with_a_tie_are_found() -> None:
    assert {"hf_gpt2", "tied_mlp"} <= set(TIED)
    for name in TIED:  # an entry too big to allocate in a test must say how to shrink it
        model = zoo.build(name, device="meta", **small(name))
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        assert name in SMALL or size <= MAX_BYTES_WITHOUT_SMALL, f"add {name}'s small sizes to tests/ties.py"
        assert tie_keys(model), f"{name} declares a tie that SMALL's overrides leave off: switch it on in tests/ties.py"


def test_gpt2_small_on_meta_has_gpt2_smalls_parameter_count() -> None:
    model = zoo.build("hf_gpt2", device="meta")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert count(model) == 124_439_808  # transformers' GPT2LMHeadModel, lm_head tied to wte


@pytest.mark.parametrize("name", TIED)
def test_a_meta_build_keeps_the_ties_of_a_real_one(name: str) -> None:
    real = zoo.build(name, **small(name))
    meta = zoo.build(name, device="meta", **small(name))
    assert all(p.is_meta for p in meta.parameters())
    assert tie_keys(meta) == tie_keys(real) != []
    assert count(meta) == count(real)


@pytest.mark.parametrize("name", TIED)
def test_device_and_dtype_changes_keep_the_ties_of_a_model_zoo_built(name: str) -> None:
    model = zoo.build(name, **small(name))
    expected = tie_keys(model)
    model.to("meta")  # torch alone gives each place its own Parameter here
    assert tie_keys(model) == expected
    model.to_empty(device="cpu")
    assert tie_keys(model) == expected
    model.to(torch.float64)
    assert tie_keys(model) == expected and all(p.dtype == torch.float64 for p in model.parameters())
    model.half()
    assert tie_keys(model) == expected


@pytest.mark.parametrize("name", TIED)
def test_save_and_every_kind_of_load_keep_the_ties(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, **small(name))
    expected = tie_keys(model)
    zoo.save(model, tmp_path / "saved")
    for options in ({}, {"mmap": False}, {"dtype": torch.float64}, {"device": "meta"}, {"device_map": "auto"}):
        loaded = zoo.load(tmp_path / "saved", **options)  # type: ignore[arg-type]
        assert tie_keys(loaded) == expected, options
    into = zoo.build(name, device="meta", **small(name))
    zoo.load_weights(into, tmp_path / "saved")
    assert tie_keys(into) == expected


def test_zoos_own_paths_keep_ties_in_models_it_did_not_build() -> None:
    def tied() -> nn.Sequential:
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        model[2].weight = model[0].weight
        return model

    plain = tied()
    plain.to("meta")
    assert plain[2].weight is not plain[0].weight  # torch's own .to(): zoo does not change nn.Module

    model = tied()
    plan = zoo.plan(model, device_map={"0": "meta", "1": "meta", "2": "meta"})
    assert plan.placements[0].device == plan.placements[-1].device  # tied blocks are planned onto one device
    zoo.dispatch(model, plan)
    assert model[2].weight is model[0].weight and model[0].weight.is_meta

    model = tied()
    with zoo.isolated_registry():
        zoo.materialize(model, input_shape=(2, 4), device="meta", dtype=torch.float16)
    assert model[2].weight is model[0].weight and model[0].weight.dtype == torch.float16
