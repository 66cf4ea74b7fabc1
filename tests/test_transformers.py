"""Transformers both ways, no code and no config by hand: an entry's `transformers` table (data in its TOML).

- zoo.save of such a model writes a config.json that transformers' from_pretrained reads, with zoo's
  record beside its keys; transformers' logits are zoo's.
- zoo.load of a folder or a Hub repo that transformers wrote (save_pretrained, the real
  huggingface_hub client against tests/hubserver.py) builds the entry with the config's values
  and loads the weights: tied, sharded, bf16, fp16. No file of the repo but config.json and the
  safetensors is fetched; an undeclared model_type or architecture is named with what zoo knows.
Every declared table is held to transformers' own config classes. Nothing is downloaded: tiny configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi, constants
from torch import nn

import zoo
from tests.hubserver import HubServer
from tests.ties import small
from zoo._build import builder
from zoo._plugins import discovery
from zoo._saved import foreign

transformers = pytest.importorskip("transformers")

MAPPED = [m.entry for m in foreign.declared(discovery.current())]
GPT2 = {"vocab_size": 96, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}


pytestmark = pytest.mark.usefixtures("hub_client_settings")  # every test here, with a server or not


def example(model: nn.Module) -> torch.Tensor:
    info = builder.build_info(model)
    assert info is not None and info.input_shape is not None
    return builder.example_input(info, info.input_shape, seed=0)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tensor to compare: transformers' .logits or .last_hidden_state, zoo's first output of a tuple."""
    with torch.no_grad():
        out = model.eval()(x)
    for name in ("logits", "last_hidden_state"):
        if hasattr(out, name):
            return getattr(out, name)  # type: ignore[no-any-return]
    return out[0] if isinstance(out, tuple) else out


def config_value(config: Any, key: str) -> Any:
    """A transformers config's value at a config key ("a.b": b in the table a)."""
    first, *inner = key.split(".")
    value = getattr(config, first)
    for part in inner:
        value = value[part]
    return value


def flat(keys: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """config.json keys with a nested table's keys as paths: {"rope_parameters.rope_theta": 10000.0}."""
    out: dict[str, Any] = {}
    for key, value in keys.items():
        if isinstance(value, dict):
            out.update(flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def hf_gpt2(**config: Any) -> Any:
    torch.manual_seed(0)
    options = {"bos_token_id": 0, "eos_token_id": 0, **config}
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2, **options)).eval()


# --- the tables ------------------------------------------------------------------------------------


def test_the_transformers_families_declare_their_mapping() -> None:
    assert {"hf_gpt2", "hf_llama", "hf_bert"} <= set(MAPPED)


@pytest.mark.parametrize("name", MAPPED)
def test_a_declared_mapping_agrees_with_transformers_own_config_class(name: str) -> None:
    keys = zoo.build(name, device="meta").zoo_info.transformers  # the entry's defaults, as zoo.save writes them
    assert keys is not None
    defaults = transformers.AutoConfig.for_model(keys["model_type"])  # transformers' defaults: what an absent key means
    for architecture in keys["architectures"]:
        assert hasattr(transformers, architecture), architecture
    for key, value in flat(keys).items():
        if key not in ("model_type", "architectures"):
            theirs = config_value(defaults, key)
            assert theirs == value, f"{name}: {key} is {value!r} in zoo, {theirs!r} in transformers"


# --- zoo -> transformers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", MAPPED)
def test_a_zoo_save_opens_in_transformers_with_zoos_logits(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, **small(name))
    zoo.save(model, tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["model_type"] and config["dtype"] == "float32" and config["zoo"]["name"] == name
    keys = model.zoo_info.transformers
    assert f"{keys['architectures'][0]}.from_pretrained(" in (tmp_path / "saved" / "README.md").read_text()
    architecture = getattr(transformers, keys["architectures"][0])
    theirs = architecture.from_pretrained(tmp_path / "saved")
    x = example(model)
    torch.testing.assert_close(logits(theirs, x), logits(model, x), rtol=0, atol=1e-5)
    again = zoo.load(tmp_path / "saved")  # zoo's record: the same declaration, and the keys kept for the next save
    assert again.zoo_info.transformers == keys
    torch.testing.assert_close(logits(again, x), logits(model, x), rtol=0, atol=0)


def test_a_save_in_another_dtype_says_so_to_transformers(tmp_path: Path) -> None:
    zoo.save(zoo.build("hf_gpt2", **GPT2), tmp_path / "half", dtype=torch.float16)
    assert json.loads((tmp_path / "half" / "config.json").read_text())["dtype"] == "float16"
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "half", dtype="auto")
    assert theirs.transformer.wte.weight.dtype == torch.float16


# --- transformers -> zoo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shard"),
    [(torch.float32, None), (torch.float32, "20KB"), (torch.bfloat16, None), (torch.float16, "20KB")],
    ids=["float32", "float32 sharded", "bfloat16", "float16 sharded"],
)
def test_a_transformers_folder_loads_with_zoo_load(tmp_path: Path, dtype: torch.dtype, shard: str | None) -> None:
    theirs = hf_gpt2().to(dtype)
    theirs.save_pretrained(tmp_path / "t", **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "t" / "model.safetensors.index.json").exists() == (shard is not None)
    model = zoo.load(tmp_path / "t")
    assert model.zoo_info.name == "hf_gpt2" and dict(model.zoo_info.overrides) == GPT2  # the config's values
    assert model.lm_head.weight is model.transformer.wte.weight  # transformers stored wte alone
    state = model.state_dict()
    assert state.keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert state[key].dtype == dtype and torch.equal(state[key], value), key  # kept as stored: nothing converted
    if dtype == torch.float32:
        x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(logits(model, x), logits(theirs, x), rtol=0, atol=1e-5)


# grouped-query attention and the tied head of tests/ties.py, a RoPE base other than the default, a pad token
LLAMA = {**small("hf_llama"), "rope_theta": 500000.0, "pad_token_id": 0}
BERT = small("hf_bert")


EMBEDDINGS = {"hf_llama": "model.embed_tokens", "hf_bert": "embeddings.word_embeddings"}


@pytest.mark.parametrize(
    ("entry", "architecture", "config"),
    [("hf_llama", "LlamaForCausalLM", LLAMA), ("hf_bert", "BertModel", {**BERT, "hidden_act": "relu"})],
)
def test_each_familys_transformers_folder_loads_with_zoo_load(
    tmp_path: Path, entry: str, architecture: str, config: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    kind = getattr(transformers, architecture)
    theirs = kind(kind.config_class(**config)).eval()
    theirs.save_pretrained(tmp_path / "t")
    model = zoo.load(tmp_path / "t")
    assert model.zoo_info.name == entry
    for key, value in config.items():
        assert model.zoo_info.overrides[key] == value, key  # rope_theta read from rope_parameters
    embeddings = [dict(m.named_modules())[k] for m, k in ((model, EMBEDDINGS[entry]), (theirs, EMBEDDINGS[entry]))]
    assert embeddings[0].padding_idx == embeddings[1].padding_idx  # the pad token's row gets no gradient in both
    state = model.state_dict()
    assert state.keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(state[key], value), key
    x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model, x), logits(theirs, x), rtol=0, atol=1e-5)


def write_config(folder: Path, **keys: Any) -> None:
    """Rewrite a saved config.json's keys: None deletes one."""
    config = json.loads((folder / "config.json").read_text())
    for key, value in keys.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_a_llama_config_from_before_transformers_5_loads_with_its_rope_base(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    theirs.save_pretrained(tmp_path / "old")
    # transformers 4 wrote the RoPE base at the top and its (absent) scaling as rope_scaling
    write_config(tmp_path / "old", rope_parameters=None, rope_theta=500000.0, rope_scaling=None)
    model = zoo.load(tmp_path / "old")
    assert model.zoo_info.overrides["rope_theta"] == 500000.0
    x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model, x), logits(theirs, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}},
        {"rope_parameters": None, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
        {"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}},
    ],
    ids=["transformers 5", "transformers 4", "transformers 4.43"],
)
def test_a_rope_scaling_the_entry_does_not_implement_is_refused_in_every_spelling(
    tmp_path: Path, rope: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).save_pretrained(tmp_path / "scaled")
    write_config(tmp_path / "scaled", **rope)
    refused = r"rope_parameters\.rope_type = '(llama3|linear)' \(the entry implements 'default' only\)"
    with pytest.raises(zoo.WeightsError, match=refused):
        zoo.load(tmp_path / "scaled")


def test_a_transformers_folder_loaded_by_zoo_saves_back_for_both(tmp_path: Path) -> None:
    theirs = hf_gpt2()
    theirs.save_pretrained(tmp_path / "t")
    zoo.save(zoo.load(tmp_path / "t"), tmp_path / "z")
    x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "z")
    torch.testing.assert_close(logits(again, x), logits(theirs, x), rtol=0, atol=1e-5)
    assert zoo.load(tmp_path / "z").zoo_info.name == "hf_gpt2"


def test_a_zoo_record_that_transformers_left_stale_gives_way_to_transformers_keys(tmp_path: Path) -> None:
    zoo.save(zoo.build("hf_gpt2", **GPT2), tmp_path / "m")  # n_head = 4 in zoo's record
    config = transformers.GPT2Config.from_pretrained(tmp_path / "m")
    config.n_head = 2  # the same shapes, another model
    edited = transformers.GPT2LMHeadModel(config).eval()
    edited.load_state_dict(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "m").state_dict())
    edited.save_pretrained(tmp_path / "m")  # over it: transformers keeps zoo's record as an attribute
    assert json.loads((tmp_path / "m" / "config.json").read_text())["zoo"]["overrides"]["n_head"] == 4
    model = zoo.load(tmp_path / "m")
    assert model.zoo_info.overrides["n_head"] == 2
    x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model, x), logits(edited, x), rtol=0, atol=1e-5)


def test_an_undeclared_model_type_names_the_model_types_zoo_knows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16
    )
    transformers.OPTForCausalLM(config).save_pretrained(tmp_path / "opt")
    with pytest.raises(zoo.WeightsError, match=r"says model_type 'opt' \(OPTForCausalLM\), which no installed entry"):
        zoo.load(tmp_path / "opt")
    with pytest.raises(zoo.WeightsError) as caught:
        zoo.load(tmp_path / "opt")
    for mapping in foreign.declared(discovery.current()):
        assert f"{mapping.model_type} ({mapping.entry})" in str(caught.value)
    assert f'zoo.load_weights(zoo.build("NAME"), "{tmp_path / "opt"}")' in str(caught.value)


def test_an_architecture_zoo_does_not_build_is_named_with_those_it_does(tmp_path: Path) -> None:
    torch.manual_seed(0)
    transformers.GPT2Model(transformers.GPT2Config(**GPT2)).save_pretrained(tmp_path / "base")  # no lm_head
    with pytest.raises(zoo.WeightsError, match=r"'gpt2' as GPT2LMHeadModel \(hf_gpt2\) only.*GPT2Model's"):
        zoo.load(tmp_path / "base")


def test_a_config_value_the_entry_does_not_implement_is_refused_naming_it(tmp_path: Path) -> None:
    hf_gpt2(activation_function="relu", n_inner=64).save_pretrained(tmp_path / "relu")
    with pytest.raises(zoo.WeightsError) as caught:
        zoo.load(tmp_path / "relu")
    message = str(caught.value)
    assert "activation_function = 'relu' (the entry implements 'gelu_new' only)" in message
    assert "n_inner = 64 (the entry implements none)" in message and "registry.toml" in message


# --- the Hub ---------------------------------------------------------------------------------------


def upload(server: HubServer, folder: Path, repo: str) -> str:
    api = HfApi(endpoint=server.url, token="test-token")
    api.create_repo(repo, exist_ok=True)
    return str(api.upload_folder(repo_id=repo, folder_path=folder).oid)


def downloads(server: HubServer) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path in server.requests if method == "GET" and "/resolve/" in path]


def test_a_transformers_repo_loads_by_address_and_its_code_is_never_fetched(
    server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = hf_gpt2()
    theirs.save_pretrained(tmp_path / "repo", max_shard_size="20KB")
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}  # what trust_remote_code would run
    (tmp_path / "repo" / "config.json").write_text(json.dumps(config))
    (tmp_path / "repo" / "modeling_evil.py").write_text("raise SystemExit('ran code from the repo')\n")
    upload(server, tmp_path / "repo", "org/tiny-gpt2")
    monkeypatch.setattr(constants, "ENDPOINT", server.url)  # zoo.load("hf://…") takes huggingface_hub's settings
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    server.clear_requests()
    model = zoo.load("hf://org/tiny-gpt2")
    fetched = downloads(server)
    assert fetched[:2] == ["config.json", "model.safetensors.index.json"] and len(fetched) > 3
    assert all(name.endswith(".safetensors") for name in fetched[2:])  # no modeling_evil.py, no generation_config
    assert model.zoo_info.name == "hf_gpt2" and model.zoo_source.repo_id == "org/tiny-gpt2"
    x = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(model, x), logits(theirs, x), rtol=0, atol=1e-5)


def test_an_undeclared_repo_is_refused_before_any_weights_are_fetched(server: HubServer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    transformers.GPT2Model(transformers.GPT2Config(**GPT2)).save_pretrained(tmp_path / "base")
    upload(server, tmp_path / "base", "org/gpt2-base")
    server.clear_requests()
    with pytest.raises(zoo.HubError, match=r"org/gpt2-base@main is not a model zoo can build: .*GPT2Model"):
        zoo.pull("org/gpt2-base", endpoint=server.url, cache_dir=tmp_path / "cache")
    assert downloads(server) == ["config.json"]


# --- the table's own mistakes ------------------------------------------------------------------------

ENTRY = """
[m]
args = { width = 4 }
layers = [{ type = "Linear", in_features = "${width}", out_features = 2 }]
[m.transformers]
"""


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('model_type = "x"\narchitectures = ["X"]\nargs = { widht = "hidden_size" }', r"`args` names widht.*'width'"),
        ('architectures = ["X"]', "`model_type` must be"),
        ('model_type = "x"', "`architectures` must list"),
        ('model_type = "x"\narchitectures = ["X"]\nfixed = { a = [1] }', "`fixed` must map config keys to plain"),
        (
            'model_type = "x"\narchitectures = ["X"]\nargs = ["width"]\nunset = ["width"]',
            "key\\(s\\) width appear more than",
        ),
        ('model_type = "x"\narchitectures = ["X"]\nmodeltype = "x"', r"unknown key 'modeltype'.*'model_type'"),
        ('model_type = "x"\narchitectures = ["X"]\nrenamed = { a = 1 }', "`renamed` must map an older config key"),
        ('model_type = "x"\narchitectures = ["X"]\nargs = { width = "a..b" }', "config key 'a..b' has an empty part"),
        (
            'model_type = "x"\narchitectures = ["X"]\nargs = { width = "a.b" }\nfixed = { a = 1 }',
            "config key 'a' is a table, since 'a.b' is a key inside it",
        ),
    ],
)
def test_a_broken_transformers_table_is_an_error_at_its_line(write_toml: Any, table: str, message: str) -> None:
    path = write_toml(ENTRY + table + "\n")
    with pytest.raises(zoo.SpecError, match=rf"\.toml:5: m -> transformers: .*{message}"):
        zoo.build("m", registry=path)
