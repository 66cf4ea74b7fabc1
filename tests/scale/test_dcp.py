"""zoo checkpoints and torch.distributed.checkpoint: zoo writes the Hugging Face layout (safetensors shards and
an index, no pickled .metadata), which DCP reads and writes through HuggingFaceStorageReader/Writer. DCP knows
no aliases, so a tie's second key stays out of the state dict on its side, as transformers leaves it out of its
files. (Resharding 2 -> 1 and 1 -> 2 through DCP is in test_distributed.py's 2-rank run.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter

import zoo
from tests.ties import small
from zoo._build import ties


def without_tied_copies(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tie under its first key only (what a safetensors file stores)."""
    later = {key for group in ties.keys(model) for key in group[1:]}
    return {key: value for key, value in state.items() if key not in later}


def test_torch_dcp_reads_a_sharded_zoo_checkpoint_of_a_tied_model(mesh: object, tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = zoo.build("hf_gpt2", **small("hf_gpt2"))
    zoo.save(plain, tmp_path / "saved")
    model = zoo.load(tmp_path / "saved", mesh=mesh)  # type: ignore[arg-type]
    zoo.checkpoint.save(tmp_path / "run", model=model, optimizer=torch.optim.Adam(model.parameters()), step=3)
    fresh = zoo.load(tmp_path / "saved", mesh=mesh)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    step = zoo.checkpoint.latest(tmp_path / "run")
    dcp.load(without_tied_copies(fresh.state_dict(), fresh), storage_reader=HuggingFaceStorageReader(str(step)))
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    for key, value in plain.state_dict().items():
        assert torch.equal(fresh.state_dict()[key].full_tensor(), value), key


@pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled:UserWarning"
)  # DCP's note that it saves in one process
def test_what_torch_dcps_safetensors_writer_saves_loads_in_zoo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = zoo.build("hf_gpt2", **small("hf_gpt2"))
    dcp.save(
        without_tied_copies(source.state_dict(), source),
        storage_writer=HuggingFaceStorageWriter(str(tmp_path)),
        no_dist=True,
    )
    model = zoo.build("hf_gpt2", device="meta", **small("hf_gpt2"))
    report = zoo.load_weights(model, tmp_path)  # strict: the head comes back through the tie
    assert not report and dict(report.tied) == {"lm_head.weight": "transformer.wte.weight"}
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
