"""Well-known architectures declared in TOML alone, held against their real references.

torchvision 0.28.0's own model files (imported by path from the downloaded wheel) and transformers'
GPT2LMHeadModel: state-dict keys and shapes exactly the reference's, the published parameter
counts, the reference's state dict loading strictly, the same outputs in eval mode, and the same
initialisation. Large models are built on the meta device where only keys, shapes and counts are
needed, so the file stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from tests import references

# name -> (reference constructor, published parameter count, a small input for the output check)
TORCHVISION: dict[str, tuple[Callable[[], nn.Module], int, tuple[int, ...]]] = {
    "tv_alexnet": (references.tv_alexnet, 61_100_840, (1, 3, 64, 64)),
    "tv_resnet18": (references.tv_resnet18, 11_689_512, (2, 3, 64, 64)),
    "tv_googlenet": (references.tv_googlenet, 6_624_904, (2, 3, 32, 32)),
    "tv_densenet121": (references.tv_densenet121, 7_978_856, (2, 3, 32, 32)),
    "tv_vgg11": (references.tv_vgg11, 132_863_336, (1, 3, 32, 32)),
    "tv_mobilenet_v2": (references.tv_mobilenet_v2, 3_504_872, (2, 3, 64, 64)),
    "tv_convnext_tiny": (references.tv_convnext_tiny, 28_589_128, (2, 3, 64, 64)),
    "tv_vit_b_16": (references.tv_vit_b_16, 86_567_656, (1, 3, 224, 224)),  # its position embeddings fix the size
}
GPT2_SMALL_PARAMETERS = 124_439_808  # lm_head tied to wte: counted once
TINY_GPT2 = {"vocab_size": 100, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied parameter once, as torch yields it once


def on_meta(make: Callable[[], nn.Module]) -> nn.Module:
    """Built with every tensor on the meta device: shapes without memory or initialisation time."""
    with torch.device("meta"):
        return make()


# Where building on meta is the cheaper way to shapes: many parameters, or a slow initialiser
# (trunc_normal). Elsewhere a real build is quicker: torch's meta normal_ is a Python decomposition.
CHEAPER_ON_META = {"tv_alexnet", "tv_vgg11", "tv_googlenet", "tv_convnext_tiny", "tv_vit_b_16"}


def for_shapes(name: str, make: Callable[[], nn.Module]) -> nn.Module:
    """A model whose parameters only need the right shapes: they are read, or overwritten with assign."""
    return on_meta(make) if name in CHEAPER_ON_META else make()


def randomise_constants(model: nn.Module) -> None:
    """Give BatchNorm/LayerNorm statistics and affine terms, and zero biases, random values.

    A fresh model's norms are identities in eval mode (mean 0, variance 1, weight 1, bias 0), so
    comparing outputs would not notice a norm applied at the wrong place.
    """
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and tensor.numel() > 1 and bool((tensor == tensor.flatten()[0]).all()):
                low, high = (0.5, 1.5) if name.endswith(("running_var", "weight")) else (-0.2, 0.2)
                tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))


def assert_same_initialisation(ours: nn.Module, theirs: nn.Module) -> None:
    """Each parameter drawn like the reference's: constants equal, random ones with the same mean and spread."""
    reference = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        expected = reference[name]
        if bool((expected == expected.flatten()[0]).all()):
            assert torch.equal(param, expected), f"{name}: expected the constant {expected.flatten()[0].item()}"
        elif expected.numel() >= 1000:  # enough samples for the statistics to be sharp
            std, mean = expected.std().item(), expected.mean().item()
            spread = param.std().item()
            assert spread == pytest.approx(std, rel=0.15), f"{name}: spread {spread:.4g}, not {std:.4g}"
            assert abs(param.mean().item() - mean) < 0.1 * std, f"{name}: mean {param.mean():.4g}, not {mean:.4g}"


# --- torchvision ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_reference() -> Iterator[Callable[[str], nn.Module]]:
    """torchvision's model (random weights, non-trivial norm statistics), built once per name."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            torch.manual_seed(0)
            built[name] = TORCHVISION[name][0]().eval()
        return built[name]

    yield get


@pytest.mark.parametrize("name", TORCHVISION)
def test_keys_shapes_and_parameter_count_are_torchvisions(name: str) -> None:
    make, count, _ = TORCHVISION[name]
    ours, theirs = for_shapes(name, lambda: zoo.build(name)), for_shapes(name, make)
    assert list(shapes(ours)) == list(shapes(theirs))  # the same keys, in the same order
    assert shapes(ours) == shapes(theirs)
    assert parameter_count(ours) == parameter_count(theirs) == count


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvisions_state_dict_loads_strictly_and_gives_its_outputs(
    name: str, torchvision_reference: Callable[[str], nn.Module]
) -> None:
    reference = torchvision_reference(name)
    randomise_constants(reference)
    # The weights are built once, by the reference; zoo's model takes them over (assign: no copy).
    ours = for_shapes(name, lambda: zoo.build(name))
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    X = torch.randn(TORCHVISION[name][2], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(X)
        torch.testing.assert_close(ours(X), expected, atol=1e-4, rtol=1e-4)
    assert expected.shape == (X.shape[0], 1000)


@pytest.mark.parametrize("name", ["tv_mobilenet_v2", "tv_convnext_tiny", "tv_vit_b_16"])
def test_dropout_and_stochastic_depth_train_as_torchvisions(name: str) -> None:
    """In training, the same seed gives the same output as the reference: the same rows dropped, the same scale."""
    torch.manual_seed(0)
    reference = TORCHVISION[name][0]()
    randomise_constants(reference)  # layer scales of 0.2 rather than 1e-6: a dropped branch shows
    ours = zoo.build(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.train(), reference.train()
    X = torch.randn((4, *TORCHVISION[name][2][1:]), generator=torch.Generator().manual_seed(2))
    outputs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        theirs = reference(X)
        torch.manual_seed(seed)
        outputs.append(ours(X))
        torch.testing.assert_close(outputs[-1], theirs, rtol=0, atol=0)
    if name == "tv_vit_b_16":  # vit_b_16's dropout is 0: training changes nothing
        torch.testing.assert_close(outputs[0], outputs[2])
    else:
        assert not torch.allclose(outputs[0], outputs[2])  # not the identity: another seed drops other rows


def test_mobilenet_adds_the_input_back_only_where_shapes_agree() -> None:
    model = on_meta(lambda: zoo.build("tv_mobilenet_v2"))
    added = [name for name, block in model.features.named_children() if "add" in getattr(block, "code", "")]
    # InvertedResidual.use_res_connect: stride 1 and as many channels out as in
    assert added == ["3", "5", "6", "8", "9", "10", "12", "13", "15", "16"]


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_googlenet", "tv_densenet121", "tv_mobilenet_v2"])
def test_initialisation_is_torchvisions(name: str) -> None:
    torch.manual_seed(3)
    theirs = TORCHVISION[name][0]()
    torch.manual_seed(4)
    assert_same_initialisation(zoo.build(name), theirs)


def test_resnet_downsamples_only_where_torchvision_does() -> None:
    model = on_meta(lambda: zoo.build("tv_resnet18"))
    downsampled = sorted({k.split(".downsample")[0] for k in model.state_dict() if ".downsample." in k})
    assert downsampled == ["layer2.0", "layer3.0", "layer4.0"]  # stride 2 or a change of width; layer1 keeps both


def test_num_classes_reaches_the_classifier() -> None:
    model = zoo.build("tv_resnet18", num_classes=10).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_missing_torchvision_wheel_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_TORCHVISION_DIR", str(tmp_path))
    with pytest.raises(references.ReferenceMissing, match=r"run `make setup`.*pip download torchvision==0\.28\.0"):
        references._torchvision_root()


# --- GPT-2 ---------------------------------------------------------------------------------------


def test_gpt2_small_is_124m_parameters_with_the_head_tied_to_the_token_embedding() -> None:
    ours, theirs = on_meta(lambda: zoo.build("hf_gpt2")), on_meta(references.hf_gpt2)
    assert shapes(ours) == shapes(theirs)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert parameter_count(ours) == parameter_count(theirs) == GPT2_SMALL_PARAMETERS


@pytest.fixture(scope="module")
def tiny_gpt2() -> tuple[nn.Module, nn.Module]:
    """zoo's and transformers' GPT-2 at a tiny size, the reference's (randomised) weights loaded into zoo's."""
    torch.manual_seed(0)
    theirs = references.hf_gpt2(**TINY_GPT2).eval()
    randomise_constants(theirs)
    ours = zoo.build("hf_gpt2", **TINY_GPT2)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs


def test_gpt2_has_transformers_keys_and_gives_its_logits(tiny_gpt2: tuple[nn.Module, nn.Module]) -> None:
    ours, theirs = tiny_gpt2
    assert list(shapes(ours)) == list(shapes(theirs))
    assert ours.lm_head.weight is ours.transformer.wte.weight  # still tied after the load
    ids = torch.randint(0, TINY_GPT2["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = ours(ids)
        expected = theirs(ids).logits
    logits = getattr(logits, "logits", logits)
    assert logits.shape == (2, 12, TINY_GPT2["vocab_size"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_gpt2_is_causal(tiny_gpt2: tuple[nn.Module, nn.Module]) -> None:
    ours, _ = tiny_gpt2
    ids = torch.randint(0, TINY_GPT2["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(6))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1) % TINY_GPT2["vocab_size"]
    with torch.no_grad():
        before, after = ours(ids), ours(changed)
    before, after = getattr(before, "logits", before), getattr(after, "logits", after)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=0, rtol=0)  # earlier positions cannot see it
    assert not torch.allclose(after[:, 7:], before[:, 7:])


def test_gpt2_trains_one_embedding_for_input_and_output(tiny_gpt2: tuple[nn.Module, nn.Module]) -> None:
    ours, _ = tiny_gpt2
    model = zoo.build("hf_gpt2", **TINY_GPT2)
    model.load_state_dict(ours.state_dict())
    ids = torch.randint(0, TINY_GPT2["vocab_size"], (1, 8), generator=torch.Generator().manual_seed(7))
    logits = model(ids)
    getattr(logits, "logits", logits).sum().backward()
    wte = model.transformer.wte.weight
    assert wte.grad is not None and model.lm_head.weight.grad is wte.grad  # one tensor, one gradient


def test_gpt2_initialisation_is_transformers() -> None:
    config = {**TINY_GPT2, "n_embd": 64, "n_layer": 4}  # c_proj std 0.02 / sqrt(8): distinct from 0.02
    torch.manual_seed(8)
    theirs = references.hf_gpt2(**config)
    torch.manual_seed(9)
    ours = zoo.build("hf_gpt2", **config)
    assert_same_initialisation(ours, theirs)
    assert ours.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.02 / 8**0.5, rel=0.15)


def test_gpt2_heads_not_dividing_the_width_are_blamed_on_the_attention(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo import cli

    wrong = ["--set", "n_embd=30", "--set", "n_head=4", "--set", "n_layer=1", "--set", "vocab_size=50"]
    assert cli.main(["build", "hf_gpt2", *wrong]) == 2  # a bad input, not a traceback
    err = capsys.readouterr().err
    assert (
        "hf_gpt2_block -> layers.attn -> require: '${n_embd % n_head == 0}' does not hold with n_embd = 30, n_head = 4"
        in err
    )


def test_gpt2_honours_a_padding_mask(tiny_gpt2: tuple[nn.Module, nn.Module]) -> None:
    ours, theirs = tiny_gpt2
    ids = torch.randint(0, TINY_GPT2["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(8))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 9:], mask[1, :2] = 0, 0
    with torch.no_grad():
        logits, expected = ours(ids, mask), theirs(ids, attention_mask=mask).logits
        unmasked = ours(ids)
    kept = mask.bool()
    torch.testing.assert_close(logits[kept], expected[kept], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[1, 2:], unmasked[1, 2:])  # the padded tokens were really left out


# --- torch's transformer encoder layer -----------------------------------------------------------


def test_encoder_layer_is_torchs_transformer_encoder_layer() -> None:
    torch.manual_seed(10)
    theirs = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    torch.manual_seed(11)
    ours = zoo.build("torch_encoder_layer", d_model=64, nhead=4, dim_feedforward=128)
    assert shapes(ours) == shapes(theirs)  # in dataflow order: torch registers norm1 after linear2
    assert_same_initialisation(ours, theirs)
    randomise_constants(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    X = torch.randn(2, 9, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(X), theirs(X), atol=1e-4, rtol=1e-4)


# --- U-Net ---------------------------------------------------------------------------------------


class UNetTwin(nn.Module):
    """unet_small written by hand: the same keys, the skips as torch.cat."""

    def __init__(self, in_channels: int = 1, base: int = 16, num_classes: int = 2) -> None:
        super().__init__()

        def double_conv(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
            )  # fmt: skip

        self.enc1, self.pool1 = double_conv(in_channels, base), nn.MaxPool2d(2)
        self.enc2, self.pool2 = double_conv(base, 2 * base), nn.MaxPool2d(2)
        self.bottleneck = double_conv(2 * base, 4 * base)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2), double_conv(4 * base, 2 * base)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * base, base, 2, stride=2), double_conv(2 * base, base)
        self.head = nn.Conv2d(base, num_classes, 1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(X)  # (B, b, H, W)
        e2 = self.enc2(self.pool1(e1))  # (B, 2b, H / 2, W / 2)
        y = self.bottleneck(self.pool2(e2))  # (B, 4b, H / 4, W / 4)
        y = self.dec2(torch.cat([self.up2(y), e2], dim=1))  # (B, 2b, H / 2, W / 2)
        y = self.dec1(torch.cat([self.up1(y), e1], dim=1))  # (B, b, H, W)
        return self.head(y)  # (B, num_classes, H, W)


def test_unet_is_the_hand_written_unet() -> None:
    model, twin = zoo.build("unet_small"), UNetTwin()
    assert shapes(model) == shapes(twin)
    randomise_constants(twin)
    model.load_state_dict(twin.state_dict(), strict=True)
    X = torch.randn(2, 1, 32, 32)
    model.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(X), twin(X))
        assert model(X).shape == (2, 2, 32, 32)
    rgb = zoo.build("unet_small", in_channels=3, num_classes=5).eval()
    assert rgb(torch.zeros(1, 3, 16, 16)).shape == (1, 5, 16, 16)


def test_unet_skip_carries_the_gradient_to_the_encoder() -> None:
    model = zoo.build("unet_small")
    with torch.no_grad():  # cut the path through the bottleneck: enc1 reaches the output only by the skip
        model.up1.weight.zero_(), model.up1.bias.zero_()
    model(torch.randn(2, 1, 16, 16)).square().sum().backward()
    assert model.enc1[0].weight.grad is not None and bool(model.enc1[0].weight.grad.abs().sum() > 0)
    assert model.enc2[0].weight.grad is not None and bool(model.enc2[0].weight.grad.abs().sum() == 0)


# --- Llama ---------------------------------------------------------------------------------------

TINY_LLAMA = {  # grouped-query attention: 2 key/value heads for 4 query heads
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
LLAMA_2_7B_PARAMETERS = 6_738_415_616  # LlamaConfig's defaults


def test_llama_defaults_are_llamaconfigs_with_its_parameter_count_on_meta() -> None:
    ours = zoo.build("hf_llama", device="meta")  # 27 GB in float32: shapes only
    theirs = on_meta(references.hf_llama)
    assert shapes(ours) == shapes(theirs)  # the same keys and shapes (in dataflow order: LlamaDecoderLayer
    # registers self_attn and mlp before the two norms that run first)
    assert parameter_count(ours) == parameter_count(theirs) == LLAMA_2_7B_PARAMETERS
    assert ours.lm_head.weight is not ours.model.embed_tokens.weight  # tie_word_embeddings = False
    config = references.llama_config().to_dict()
    spec = zoo.spec("hf_llama")
    for name, value in spec.params.items():  # named and defaulted as LlamaConfig's keys
        if name == "head_dim":  # hidden_size // num_attention_heads, as LlamaConfig derives it
            assert ours.model.layers[0].self_attn.q_proj.out_features // config["num_attention_heads"] == 128
            continue
        if name == "pad_token_id":  # None: TOML has no null, so the default is the expression ${None}
            assert ours.model.embed_tokens.padding_idx is config[name] is None
            continue
        if name == "num_key_value_heads":  # num_attention_heads, as LlamaConfig derives it when not given
            assert ours.model.layers[0].self_attn.k_proj.out_features // 128 == config[name]
            assert (
                zoo.build("hf_llama", device="meta", num_attention_heads=16)
                .model.layers[0]
                .self_attn.k_proj.out_features
                == 16 * 256
            )
            continue
        assert value == (config["rope_parameters"]["rope_theta"] if name == "rope_theta" else config[name]), name
    assert zoo.build("hf_llama", device="meta", **TINY_LLAMA).model.layers[0].self_attn.k_proj.out_features == 32


@pytest.fixture(scope="module")
def tiny_llama() -> tuple[nn.Module, nn.Module]:
    """zoo's and transformers' Llama at a tiny size, the reference's (randomised) weights loaded into zoo's."""
    torch.manual_seed(0)
    theirs = references.hf_llama(**TINY_LLAMA).eval()
    randomise_constants(theirs)
    ours = zoo.build("hf_llama", **TINY_LLAMA)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs


def test_llama_gives_transformers_logits_with_and_without_padding(tiny_llama: tuple[nn.Module, nn.Module]) -> None:
    ours, theirs = tiny_llama
    assert shapes(ours) == shapes(theirs)
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 7:] = 0  # right padding
    mask[1, :3] = 0  # left padding: padded queries see no key at all
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, atol=1e-4, rtol=1e-4)
        padded, expected = ours(ids, mask), theirs(ids, attention_mask=mask).logits
        torch.testing.assert_close(ours(ids, attention_mask=mask), padded, atol=0, rtol=0)
    kept = mask.bool()
    torch.testing.assert_close(padded[kept], expected[kept], atol=1e-4, rtol=1e-4)
    assert not padded.isnan().any()


def test_llama_honours_the_attention_mask_and_is_causal(tiny_llama: tuple[nn.Module, nn.Module]) -> None:
    ours, _ = tiny_llama
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (1, 8), generator=torch.Generator().manual_seed(6))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % TINY_LLAMA["vocab_size"]
    hide = torch.ones(1, 8, dtype=torch.long)
    hide[0, 5] = 0
    with torch.no_grad():
        before, after = ours(ids), ours(changed)
        torch.testing.assert_close(after[:, :5], before[:, :5], atol=0, rtol=0)  # causal: earlier tokens cannot see it
        assert not torch.allclose(after[:, 6:], before[:, 6:])
        masked_before, masked_after = ours(ids, hide), ours(changed, hide)
    torch.testing.assert_close(masked_after[:, 6:], masked_before[:, 6:])  # masked out: later tokens cannot either


def test_llama_rope_frequencies_are_a_non_persistent_buffer_recomputed_on_load(
    tiny_llama: tuple[nn.Module, nn.Module], tmp_path: Path
) -> None:
    ours, theirs = tiny_llama
    rotary = ours.model.rotary_emb
    torch.testing.assert_close(rotary.inv_freq, theirs.model.rotary_emb.inv_freq, atol=0, rtol=0)
    assert "model.rotary_emb.inv_freq" not in ours.state_dict()
    zoo.save(ours, tmp_path / "llama")
    loaded = zoo.load(tmp_path / "llama")
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, rotary.inv_freq, atol=0, rtol=0)
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), ours(ids), atol=0, rtol=0)


def test_llama_ties_the_head_when_its_config_says_so() -> None:
    tied = zoo.build("hf_llama", device="meta", **TINY_LLAMA, tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    theirs = on_meta(lambda: references.hf_llama(**TINY_LLAMA, tie_word_embeddings=True))
    assert parameter_count(tied) == parameter_count(theirs)


def test_llama_initialisation_is_transformers() -> None:
    config = {**TINY_LLAMA, "hidden_size": 128, "intermediate_size": 256, "vocab_size": 200}
    torch.manual_seed(8)
    theirs = references.hf_llama(**config)
    torch.manual_seed(9)
    assert_same_initialisation(zoo.build("hf_llama", **config), theirs)


def test_llama_refuses_heads_that_do_not_share_key_value_heads_evenly(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo import cli

    sizes = [f"--set={k}={v}" for k, v in {**TINY_LLAMA, "num_key_value_heads": 3}.items()]
    assert cli.main(["build", "hf_llama", *sizes]) == 2
    err = capsys.readouterr().err
    assert "hf_llama.toml:" in err and "'${num_attention_heads % num_key_value_heads == 0}' does not hold" in err
    assert "num_attention_heads = 4, num_key_value_heads = 3" in err


# --- BERT ----------------------------------------------------------------------------------------

TINY_BERT = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "max_position_embeddings": 16,
    "type_vocab_size": 3,
}
BERT_BASE_PARAMETERS = 109_482_240  # BertConfig's defaults, pooler included


def test_bert_defaults_are_bertconfigs_with_its_parameter_count_on_meta() -> None:
    ours = zoo.build("hf_bert", device="meta")
    theirs = on_meta(references.hf_bert)
    assert shapes(ours) == shapes(theirs)
    assert parameter_count(ours) == parameter_count(theirs) == BERT_BASE_PARAMETERS
    config = references.bert_config().to_dict()
    for name, value in zoo.spec("hf_bert").params.items():  # named and defaulted as BertConfig's keys
        assert value == config[name], name
    assert "encoder.layer.11.attention.self.query.weight" in ours.state_dict()


@pytest.fixture(scope="module")
def tiny_bert() -> tuple[nn.Module, nn.Module]:
    """zoo's and transformers' BertModel at a tiny size, the reference's (randomised) weights loaded into zoo's."""
    torch.manual_seed(0)
    theirs = references.hf_bert(**TINY_BERT).eval()
    randomise_constants(theirs)
    ours = zoo.build("hf_bert", **TINY_BERT)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs


def test_bert_initialises_its_padding_row_to_zero_as_transformers_does() -> None:
    torch.manual_seed(0)
    ours = zoo.build("hf_bert", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    theirs = references.hf_bert(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    for model in (ours, theirs):
        rows = model.embeddings.word_embeddings.weight
        assert (rows[0] == 0).all() and (rows[1:] != 0).all()  # pad_token_id = 0


def test_bert_gives_transformers_states_and_pooler_with_padding_and_token_types(
    tiny_bert: tuple[nn.Module, nn.Module],
) -> None:
    ours, theirs = tiny_bert
    assert list(ours.state_dict()) == list(theirs.state_dict())  # the same keys, in the same order
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, TINY_BERT["vocab_size"], (3, 10), generator=generator)
    types = torch.randint(0, TINY_BERT["type_vocab_size"], (3, 10), generator=generator)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 7:] = 0  # right padding
    mask[1, :3] = 0  # left padding: the pooler reads a padded first token, as transformers' does
    with torch.no_grad():
        states, pooled = ours(ids, mask, types)
        expected = theirs(ids, attention_mask=mask, token_type_ids=types)
        by_name = ours(ids, attention_mask=mask, token_type_ids=types)
    kept = mask.bool()
    torch.testing.assert_close(states[kept], expected.last_hidden_state[kept], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(by_name[0], states, atol=0, rtol=0)
    with torch.no_grad():  # the padding and the token types both change what the kept tokens see
        unmasked, _ = ours(ids, token_type_ids=types)
        untyped, _ = ours(ids, mask)
    assert not torch.allclose(unmasked[kept], states[kept])
    assert not torch.allclose(untyped[kept], states[kept])


def test_bert_without_the_optional_inputs_is_all_ones_mask_and_segment_zero(
    tiny_bert: tuple[nn.Module, nn.Module],
) -> None:
    ours, theirs = tiny_bert
    ids = torch.randint(0, TINY_BERT["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        states, pooled = ours(ids)
        expected = theirs(ids)
        explicit = ours(ids, torch.ones_like(ids), torch.zeros_like(ids))
    torch.testing.assert_close(states, expected.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(explicit[0], states, atol=0, rtol=0)


def test_bert_child_named_self_has_transformers_key_and_module() -> None:
    model = zoo.build("hf_bert", device="meta", **TINY_BERT)
    attention = model.get_submodule("encoder.layer.0.attention.self")
    assert isinstance(attention.get_submodule("query"), nn.Linear)
    assert "encoder.layer.1.attention.self.value.bias" in model.state_dict()


def test_bert_refuses_heads_that_do_not_split_the_hidden_size(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo import cli

    sizes = [f"--set={k}={v}" for k, v in {**TINY_BERT, "num_attention_heads": 5}.items()]
    assert cli.main(["build", "hf_bert", *sizes]) == 2
    err = capsys.readouterr().err
    assert "hf_bert.toml:" in err and "'${hidden_size % num_attention_heads == 0}' does not hold" in err
