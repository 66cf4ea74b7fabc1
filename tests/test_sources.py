"""zoo.load_weights from anywhere: files, folders and Hub repos that other libraries wrote.

The writers are the real ones (huggingface_hub's save_torch_model and PyTorchModelHubMixin,
transformers' save_pretrained, HfApi.upload_folder to tests/hubserver.py); nothing is patched.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, PyTorchModelHubMixin, save_torch_model
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

import zoo
from zoo import cli
from zoo._errors import ArgumentError, HubError, WeightsError

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer  # noqa: E402

X = torch.arange(40, dtype=torch.float32).reshape(2, 20) / 40


pytestmark = pytest.mark.usefixtures("hub_client_settings")  # every test here, with a server or not


def tied_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.build("tied_mlp")


class MixinTiedMLP(nn.Sequential, PyTorchModelHubMixin):
    """tied_mlp written by hand, saved the way PyTorchModelHubMixin users save (config.json of its own)."""

    def __init__(self, hidden: int = 8) -> None:
        tied = nn.Linear(hidden, hidden)
        super().__init__(nn.Linear(20, hidden), nn.ReLU(), tied, nn.ReLU(), tied, nn.ReLU(), nn.Linear(hidden, 1))


def output(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def header_metadata(file: Path) -> dict[str, str]:
    with safe_open(str(file), framework="pt") as f:
        return dict(f.metadata() or {})


def downloads(server: HubServer) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path in server.requests if method == "GET" and "/resolve/" in path]


def upload(server: HubServer, folder: Path, repo: str) -> str:
    api = HfApi(endpoint=server.url, token="test-token")
    api.create_repo(repo, exist_ok=True)
    return str(api.upload_folder(repo_id=repo, folder_path=folder).oid)


# --- tied weights, as huggingface_hub writes them ----------------------------------------------------


@pytest.mark.parametrize("max_shard_size", [None, 300], ids=["one file", "shards"])
def test_save_torch_model_of_a_tied_model_loads_strictly_and_stays_tied(
    tmp_path: Path, max_shard_size: int | None
) -> None:
    source = tied_mlp(0)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    save_torch_model(source, tmp_path, **kwargs)
    index = tmp_path / "model.safetensors.index.json"
    if max_shard_size:  # {removed: kept} goes into the index's metadata; shards hold only "format"
        assert json.loads(index.read_text())["metadata"]["4.weight"] == "2.weight"
    else:
        assert header_metadata(tmp_path / "model.safetensors")["4.weight"] == "2.weight"
    model = tied_mlp(1)
    assert not zoo.load_weights(model, tmp_path)  # 4.* are aliases of 2.* by the metadata
    assert model[2] is model[4] and model[2].weight is model[4].weight
    assert torch.equal(output(model), output(source))


def test_removed_names_are_honoured_in_a_model_that_does_not_tie_them(tmp_path: Path) -> None:
    save_torch_model(tied_mlp(0), tmp_path)
    torch.manual_seed(1)
    untied = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                           nn.Linear(8, 1))  # fmt: skip
    assert not zoo.load_weights(untied, tmp_path)
    assert untied[4].weight is untied[2].weight  # stored once, so one Parameter, as for zoo's own aliases
    assert torch.equal(output(untied), output(tied_mlp(0)))
    # A model without the removed names is not told they are unexpected: the file holds no data under them.
    half = nn.Sequential(*list(tied_mlp(2))[:4])
    report = zoo.load_weights(half, tmp_path, strict=False)
    assert "4.weight" not in report.unexpected and "6.weight" in report.unexpected


def test_a_missing_key_that_the_model_does_not_tie_is_still_missing(tmp_path: Path) -> None:
    source = tied_mlp(0)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("4.")}
    zoo.save_tensors(state, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    untied = nn.Sequential(*[nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                             nn.Linear(8, 1)])  # fmt: skip
    before = untied[4].weight.detach().clone()
    with pytest.raises(WeightsError, match=r"missing from the file \(2\): 4\.bias, 4\.weight"):
        zoo.load_weights(untied, tmp_path / "w.safetensors")
    assert torch.equal(untied[4].weight, before)  # all or nothing
    model = tied_mlp(1)  # ties 4 to 2: the same file is complete for it
    assert not zoo.load_weights(model, tmp_path / "w.safetensors") and model[4] is model[2]


def test_a_tied_key_is_filled_on_a_meta_model_even_when_it_comes_first(tmp_path: Path) -> None:
    # huggingface_hub keeps the alphabetically first name: here the *later* module's, so the model's
    # first holder of the tied tensor is the key the file lacks.
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.a_head = nn.Linear(4, 10, bias=False)
            self.a_head.weight = self.wte.weight

    torch.manual_seed(0)
    source = Head()
    save_torch_model(source, tmp_path)
    assert list(load_file(tmp_path / "model.safetensors")) == ["a_head.weight"]
    with torch.device("meta"):
        model = Head()
    assert not zoo.load_weights(model, tmp_path)
    assert model.wte.weight is model.a_head.weight and not model.wte.weight.is_meta
    assert torch.equal(model.wte.weight, source.wte.weight)


def test_mixin_folder_refuses_zoo_load_with_the_load_weights_line_and_loads_by_load_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mixin = MixinTiedMLP()
    mixin.save_pretrained(tmp_path / "mixin")
    assert (tmp_path / "mixin" / "config.json").is_file()  # the Mixin's own: {"hidden": 8}
    with pytest.raises(WeightsError) as caught:
        zoo.load(tmp_path / "mixin")
    assert f'zoo.load_weights(zoo.build("NAME"), "{tmp_path / "mixin"}")' in str(caught.value)
    model = tied_mlp(1)
    assert not zoo.load_weights(model, tmp_path / "mixin")
    assert torch.equal(output(model), output(mixin))


def test_zoo_saves_stay_readable_by_the_other_loaders(tmp_path: Path) -> None:
    from huggingface_hub import load_torch_model

    source = tied_mlp(0)
    zoo.save(source, tmp_path / "m", max_shard_size=300)
    twin = MixinTiedMLP()
    load_torch_model(twin, tmp_path / "m")
    assert torch.equal(output(twin), output(source))


# --- transformers: a tiny GPT-2 with its lm_head tied to the embedding --------------------------------


class GPT2Twin(nn.Module):
    """GPT-2 written from the paper's equations, in plain PyTorch, with keys of its own (no 'transformer.')."""

    def __init__(self, vocab: int, positions: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(positions, dim)
        self.h = nn.ModuleList([_Block(dim) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))  # (B, T, C)
        for block in self.h:
            x = block(x, self.heads)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)


class _Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = _Conv1D(dim, 3 * dim), _Conv1D(dim, dim)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = _Conv1D(dim, 4 * dim), _Conv1D(4 * dim, dim)

    def forward(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(C // heads)).masked_fill(~mask, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(folder)
    ids = torch.tensor([[1, 7, 3, 49, 0, 12]])
    with torch.no_grad():
        logits = model(ids).logits
    return folder, ids, logits


def test_transformers_gpt2_loads_strictly_into_a_twin_with_its_tied_lm_head(
    gpt2_folder: tuple[Path, torch.Tensor, torch.Tensor],
) -> None:
    folder, ids, logits = gpt2_folder
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")  # transformers drops the tied key
    torch.manual_seed(1)
    twin = GPT2Twin(vocab=50, positions=16, dim=16, layers=2, heads=2).eval()
    with pytest.raises(WeightsError, match=r"'transformer\.h\.0\.attn\.c_attn\.bias' → 'h\.0\.attn\.c_attn\.bias'"):
        zoo.load_weights(twin, folder)  # the error shows the map to write
    report = zoo.load_weights(twin, folder, rename={"strip_prefix": "transformer."})
    assert not report and dict(report.tied) == {"lm_head.weight": "wte.weight"}
    assert twin.lm_head.weight is twin.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(twin(ids), logits)


def test_transformers_gpt2_loads_into_the_declared_hf_gpt2_from_a_folder_and_the_hub(
    gpt2_folder: tuple[Path, torch.Tensor, torch.Tensor], server: HubServer, tmp_path: Path
) -> None:
    folder, ids, logits = gpt2_folder
    tiny = {"vocab_size": 50, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2}
    model = zoo.build("hf_gpt2", **tiny).eval()
    report = zoo.load_weights(model, folder)  # strict: the missing lm_head.weight is tied to wte in the model
    assert not report and dict(report.tied) == {"lm_head.weight": "transformer.wte.weight"}
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(model(ids), logits, atol=1e-4, rtol=0)
    upload(server, folder, "openai-community/tiny-gpt2")
    from_hub = zoo.build("hf_gpt2", **tiny).eval()
    zoo.load_weights(from_hub, "hf://openai-community/tiny-gpt2", endpoint=server.url, cache_dir=tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(from_hub(ids), model(ids))


def test_transformers_folder_builds_the_declared_entry_with_zoo_load(
    gpt2_folder: tuple[Path, torch.Tensor, torch.Tensor],
) -> None:
    folder, ids, logits = gpt2_folder
    model = zoo.load(folder)  # hf_gpt2 declares model_type gpt2 (tests/test_transformers.py has the rest)
    assert model.zoo_info.name == "hf_gpt2"
    with torch.no_grad():
        torch.testing.assert_close(model(ids), logits, atol=1e-4, rtol=0)


# --- the Hub: weights-only repos, foreign repos, revisions, offline -----------------------------------


def test_weights_only_repo_loads_by_address_and_zoo_pull_refuses_before_any_weights(
    server: HubServer, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    save_torch_model(tied_mlp(0), tmp_path / "plain")
    first = upload(server, tmp_path / "plain", "org/plain")
    cache = tmp_path / "cache"
    server.clear_requests()
    with pytest.raises(HubError) as caught:
        zoo.pull("org/plain", endpoint=server.url, cache_dir=cache)
    assert 'zoo.load_weights(zoo.build("NAME"), "hf://org/plain")' in str(caught.value)
    assert downloads(server) == []

    model = tied_mlp(1)
    report = zoo.load_weights(model, "hf://org/plain", endpoint=server.url, cache_dir=cache)
    assert not report and model[2] is model[4] and torch.equal(output(model), output(tied_mlp(0)))
    assert downloads(server) == ["model.safetensors"]
    assert model.zoo_source.repo_id == "org/plain" and model.zoo_source.commit == first

    # Pinned: a later commit does not change what an old revision loads; offline needs no server.
    save_torch_model(tied_mlp(5), tmp_path / "plain")
    upload(server, tmp_path / "plain", "org/plain")
    pinned = tied_mlp(1)
    zoo.load_weights(pinned, f"hf://org/plain@{first}", endpoint=server.url, cache_dir=cache)
    assert torch.equal(output(pinned), output(tied_mlp(0)))
    latest = tied_mlp(1)
    zoo.load_weights(latest, "hf://org/plain", endpoint=server.url, cache_dir=cache)
    assert torch.equal(output(latest), output(tied_mlp(5)))
    server.clear_requests()
    offline = tied_mlp(1)
    zoo.load_weights(offline, "hf://org/plain", cache_dir=cache, local_files_only=True)
    assert server.requests == [] and torch.equal(output(offline), output(tied_mlp(5)))
    with pytest.raises(HubError, match="not in the cache"):
        zoo.load_weights(tied_mlp(1), "hf://org/plain@v9", cache_dir=cache, local_files_only=True)


def test_sharded_weights_fetch_only_the_index_and_its_shards(server: HubServer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    mixin = MixinTiedMLP()
    (tmp_path / "sharded").mkdir()
    save_torch_model(mixin, tmp_path / "sharded", max_shard_size=300)
    (tmp_path / "sharded" / "notes.bin").write_bytes(b"not for zoo")
    (tmp_path / "sharded" / "config.json").write_text('{"model_type": "tied"}')
    upload(server, tmp_path / "sharded", "org/sharded")
    server.clear_requests()
    model = tied_mlp(1)
    assert not zoo.load_weights(model, "hf://org/sharded@main", endpoint=server.url, cache_dir=tmp_path / "cache")
    fetched = downloads(server)
    assert fetched[0] == "model.safetensors.index.json" and len(fetched) > 2
    assert all(name.startswith("model-") for name in fetched[1:])  # no config.json, no notes.bin
    assert torch.equal(output(model), output(mixin))


def test_zoo_pull_of_a_foreign_repo_reads_config_json_only(server: HubServer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    MixinTiedMLP().save_pretrained(tmp_path / "mixin")
    upload(server, tmp_path / "mixin", "org/mixin")
    server.clear_requests()
    with pytest.raises(HubError) as caught:
        zoo.pull("org/mixin@main", endpoint=server.url, cache_dir=tmp_path / "cache")
    assert 'zoo.load_weights(zoo.build("NAME"), "hf://org/mixin")' in str(caught.value)
    assert downloads(server) == ["config.json"]
    with pytest.raises(HubError, match='zoo.load_weights\\(zoo.build\\("NAME"\\), "hf://org/mixin"\\)'):
        zoo.pull("org/mixin", cache_dir=tmp_path / "cache", local_files_only=True)  # the cached config, offline


def test_hub_options_with_a_local_source_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="revision= only apply to hf:// sources"):
        zoo.load_weights(tied_mlp(0), tmp_path, revision="v1")


def test_cli_load_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = {f"module.{k}": v for k, v in tied_mlp(0).state_dict().items() if not k.startswith("4.")}
    zoo.save_tensors(state, tmp_path / "w.safetensors")  # as accelerate writes a tied model: no record of 4.*
    assert cli.main(["load-weights", "tied_mlp", str(tmp_path / "w.safetensors"), "--strip-prefix", "module."]) == 0
    out = capsys.readouterr().out
    assert "through ties in the model: 4.weight (tied to 2.weight), 4.bias (tied to 2.bias)" in out
    assert "Total params: 249" in out
    (tmp_path / "bad").mkdir()
    zoo.save_tensors({"x": torch.zeros(1)}, tmp_path / "bad" / "model.safetensors")
    assert cli.main(["load-weights", "tied_mlp", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "missing from the file" in err and "Traceback" not in err
