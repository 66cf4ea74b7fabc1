"""Dtypes said: a load that converts a dtype says so in its report (and the CLI prints it); dtype= chooses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo
from zoo import cli

EVERY = ["hidden.bias", "hidden.weight", "out.bias", "out.weight"]


@pytest.fixture
def bf16(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    zoo.save(zoo.build("mlp"), tmp_path / "bf16", dtype=torch.bfloat16)
    return tmp_path / "bf16"


def test_weights_copied_into_a_model_of_another_dtype_are_reported_converted(bf16: Path) -> None:
    report = zoo.load_weights(zoo.build("mlp"), bf16)
    assert not report  # a conversion is no misfit: strict loads pass
    assert sorted(report.converted) == EVERY and set(report.converted.values()) == {"bfloat16 → float32"}
    assert report.conversions() == f"converted 4 tensor(s) bfloat16 to float32: {', '.join(EVERY)}"
    assert not zoo.load_weights(zoo.build("mlp", dtype=torch.bfloat16), bf16).converted  # the model's dtype chooses
    assert not zoo.load_weights(zoo.build("mlp", device="meta"), bf16).converted  # meta takes the stored tensors


def test_zoo_load_keeps_the_stored_dtype_unless_dtype_says_otherwise(bf16: Path) -> None:
    kept = zoo.load(bf16)
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16} and not kept.zoo_load_report.converted
    converted = zoo.load(bf16, dtype=torch.float32)
    assert {p.dtype for p in converted.parameters()} == {torch.float32}
    assert set(converted.zoo_load_report.converted.values()) == {"bfloat16 → float32"}
    slow = zoo.load(bf16, strict=False, dtype=torch.float16)  # the other path: built, copied, then moved
    assert set(slow.zoo_load_report.converted.values()) == {"bfloat16 → float16"}


def test_the_cli_prints_what_it_converted(bf16: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["load-weights", "mlp", str(bf16)]) == 0
    assert "converted 4 tensor(s) bfloat16 to float32: hidden.bias" in capsys.readouterr().out
    assert cli.main(["load-weights", "mlp", str(bf16), "--dtype", "bfloat16"]) == 0
    assert "converted" not in capsys.readouterr().out
    assert cli.main(["load", str(bf16), "--dtype", "float16"]) == 0
    assert "converted 4 tensor(s) bfloat16 to float16" in capsys.readouterr().out
