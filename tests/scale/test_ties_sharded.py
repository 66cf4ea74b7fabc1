"""Tied models sharded on a mesh of one rank in this process: the tie is one unit's, the model computes what
the unsharded one does, and a policy that would split a tie is refused before anything is loaded. The
2-rank run (test_distributed.py) does the same on two processes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import zoo
from tests.ties import forward_backward, small, tied_entries
from zoo._build import ties

TIED = tied_entries()


@pytest.mark.parametrize("name", TIED)
def test_a_tied_model_loads_sharded_and_computes_what_the_unsharded_one_does(
    name: str, mesh: object, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, **small(name))
    zoo.save(model, tmp_path / "saved")
    sharded = zoo.load(tmp_path / "saved", mesh=mesh)  # type: ignore[arg-type]
    assert sorted(map(sorted, ties.keys(sharded))) == sorted(map(sorted, ties.keys(model)))
    expected, got = forward_backward(zoo.load(tmp_path / "saved")), forward_backward(sharded)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)
    zoo.save(sharded, tmp_path / "again")  # the tie is stored once, and loads back tied
    assert sorted(map(sorted, ties.keys(zoo.load(tmp_path / "again")))) == sorted(map(sorted, ties.keys(model)))


@pytest.mark.parametrize("name", [n for n in TIED if ties.groups(zoo.build(n, device="meta", **small(n)))])
def test_a_shard_policy_that_splits_a_tie_is_refused_naming_both_keys(name: str, mesh: object, tmp_path: Path) -> None:
    zoo.save(zoo.build(name, **small(name)), tmp_path / "saved")
    first, second = ties.keys(zoo.build(name, device="meta", **small(name)))[0][:2]
    holder = first.rpartition(".")[0]  # the block that holds the first place alone
    with pytest.raises(zoo.ArgumentError, match="tied") as caught:
        zoo.load(tmp_path / "saved", mesh=mesh, shard=lambda path, _module: path == holder)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("rank 0: ") and f"'{first}'" in message and f"'{second}'" in message
    assert "Nothing was loaded" in message


def test_a_policy_that_keeps_the_tie_in_one_unit_is_taken(mesh: object, tmp_path: Path) -> None:
    torch.manual_seed(0)
    zoo.save(zoo.build("hf_gpt2", **small("hf_gpt2")), tmp_path / "saved")
    blocks = re.compile(r"transformer\.h\.\d+")  # a unit per transformer block; wte and lm_head go to the model's
    model = zoo.load(tmp_path / "saved", mesh=mesh, shard=lambda path, _m: bool(blocks.fullmatch(path)))  # type: ignore[arg-type]
    assert type(model.transformer.h[0]).__name__.startswith("FSDP")
    assert model.lm_head.weight is model.transformer.wte.weight
    forward_backward(model)


TIED_HEAD = """
[tied_head]
input = { shape = [2, 5], dtype = "int64", high = 16 }
inputs = ["ids"]
tie = { "head.weight" = "embed.weight" }
[tied_head.layers]
embed = { type = "Embedding", num_embeddings = 16, embedding_dim = 8 }
head = { type = "Linear", in_features = 8, out_features = 16 }
"""


def test_build_with_a_mesh_gives_a_tie_its_first_owners_values(mesh: object, write_toml: Callable[..., Path]) -> None:
    registry = write_toml(TIED_HEAD)
    torch.manual_seed(5)
    unsharded = zoo.build("tied_head", registry=registry)
    torch.manual_seed(5)
    sharded = zoo.build("tied_head", registry=registry, mesh=mesh)  # type: ignore[arg-type]
    assert sharded.head.weight is sharded.embed.weight
    for key, value in unsharded.state_dict().items():  # the embedding's normal values, and the head's own bias
        assert torch.equal(sharded.state_dict()[key].full_tensor(), value), key
