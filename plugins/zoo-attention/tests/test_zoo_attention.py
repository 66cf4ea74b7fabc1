"""zoo-attention: its blocks against d2l's formulas and shape checks, its models across plugins.

Needs zoo-convnets and zoo-attention installed (pip install -e './plugins/zoo-attention[test]').
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from zoo_attention import (
    ClassHead,
    ClassToken,
    LazyLearnedPositions,
    LearnedPositions,
    MultiHeadAttention,
    TransformerEncoderBlock,
    ViTBlock,
)

import zoo
from zoo._build import check
from zoo._build.known_shapes import materialize_from_shapes
from zoo._language.registry import Registry


@pytest.fixture
def registry() -> Iterator[Registry]:
    """zoo's built-ins, zoo-convnets and zoo-attention, whatever else is installed."""
    with zoo.isolated_registry("zoo-convnets", "zoo-attention") as reg:
        yield reg


def d2l_attention(
    attention: MultiHeadAttention, queries: torch.Tensor, keys: torch.Tensor, valid_lens: torch.Tensor | None
) -> torch.Tensor:
    """d2l's MultiHeadAttention.forward, written out: per-head masked softmax(QK^T / sqrt(d)) V."""
    h = attention.num_heads

    def heads(X: torch.Tensor) -> torch.Tensor:  # d2l's transpose_qkv
        X = X.reshape(X.shape[0], X.shape[1], h, -1).permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    q, k, v = heads(attention.W_q(queries)), heads(attention.W_k(keys)), heads(attention.W_v(keys))
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    if valid_lens is not None:  # d2l's masked_softmax: masked scores become -1e6
        lens = torch.repeat_interleave(valid_lens, h, dim=0)
        lens = lens.reshape(-1) if lens.dim() > 1 else torch.repeat_interleave(lens, scores.shape[1])
        flat = scores.reshape(-1, scores.shape[-1])
        mask = torch.arange(flat.shape[1])[None, :] < lens[:, None]
        scores = flat.masked_fill(~mask, -1e6).reshape(scores.shape)
    out = torch.bmm(torch.softmax(scores, dim=-1), v)
    out = out.reshape(-1, h, out.shape[1], out.shape[2]).permute(0, 2, 1, 3)  # d2l's transpose_output
    return attention.W_o(out.reshape(out.shape[0], out.shape[1], -1))


# --- blocks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "valid_lens", [None, torch.tensor([3, 2]), torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]])], ids=["none", "1d", "2d"]
)
def test_multi_head_attention_computes_d2ls_formula(valid_lens: torch.Tensor | None) -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(num_hiddens=100, num_heads=5, dropout=0.5).eval()
    X, Y = torch.randn(2, 4, 100), torch.randn(2, 6, 100)
    out = attention(X, Y, Y, valid_lens)
    assert out.shape == (2, 4, 100)  # d2l's own shape check
    torch.testing.assert_close(out, d2l_attention(attention, X, Y, valid_lens))


def test_multi_head_attention_refuses_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"num_hiddens \(10\) must be a multiple of num_heads \(3\)"):
        MultiHeadAttention(10, 3)


def test_keys_beyond_the_valid_length_are_ignored() -> None:
    attention = MultiHeadAttention(8, 2).eval()
    X, KV = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    changed = KV.clone()
    changed[:, 3:] = 100.0
    lens = torch.tensor([3])
    torch.testing.assert_close(attention(X, changed, changed, lens), attention(X, KV, KV, lens))
    assert not torch.allclose(attention(X, changed, changed), attention(X, KV, KV))  # unmasked, they count


def test_encoder_blocks_keep_the_shape_as_in_d2l() -> None:
    X, valid_lens = torch.ones(2, 100, 24), torch.tensor([3, 2])
    assert TransformerEncoderBlock(24, 48, 8, 0.5).eval()(X, valid_lens).shape == (2, 100, 24)
    assert ViTBlock(24, 48, 8, 0.5).eval()(X).shape == (2, 100, 24)


def test_patch_tokens_class_token_and_head(registry: Registry) -> None:
    tokens = zoo.build("PatchTokens")(torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5))
    assert tokens.shape == (2, 20, 3) and tokens[1, 6].tolist() == [66.0, 86.0, 106.0]  # pixel (1, 1) of image 1
    with_cls = ClassToken(3)(tokens)
    assert with_cls.shape == (2, 21, 3) and with_cls[:, 0].abs().sum() == 0  # d2l starts it at zeros
    assert ClassHead(3, 7)(with_cls).shape == (2, 7)


def test_lazy_positions_take_their_shape_from_the_first_input() -> None:
    positions = LazyLearnedPositions()
    X = torch.zeros(2, 17, 8)
    torch.testing.assert_close(positions(X), positions.pos_embedding.expand(2, -1, -1))
    assert type(positions) is LearnedPositions and positions.pos_embedding.shape == (1, 17, 8)
    with pytest.raises(ValueError, match="expected 17 tokens, got 5: the image size changed"):
        positions(torch.zeros(2, 5, 8))


# --- models ----------------------------------------------------------------------------------------


def test_every_declaration_passes_zoo_check(registry: Registry) -> None:
    origins = {p.origin.dist for p in registry.providers("vit_tiny")}
    assert check.check_registry(registry, origins=origins) == []


def test_vit_tiny_computes_d2ls_vit_forward(registry: Registry) -> None:
    torch.manual_seed(0)
    model = zoo.build("vit_tiny").eval()
    assert list(dict(model.named_children())) == [
        "patch_embedding",
        "cls_token",
        "pos_embedding",
        "dropout",
        "blks",
        "head",
    ]
    X = torch.randn(2, 3, 32, 32)
    # d2l's ViT.forward, with the model's own parts
    Y = model.patch_embedding(X)
    Y = torch.cat((model.cls_token.cls_token.expand(Y.shape[0], -1, -1), Y), 1)
    Y = model.dropout(Y + model.pos_embedding.pos_embedding)
    for blk in model.blks:
        Y = blk(Y)
    torch.testing.assert_close(model(X), model.head.linear(model.head.ln(Y[:, 0])))
    assert model.pos_embedding.pos_embedding.shape == (1, 65, 64)  # (32 / 4)^2 patches and the class token


def test_vit_tiny_parameters_are_d2ls_count(registry: Registry) -> None:
    C, mlp, classes, steps = 64, 128, 10, 65
    block = 2 * 2 * C + 4 * C * C + (C * mlp + mlp) + (mlp * C + C)  # two LayerNorms, 4 bias-free projections, MLP
    expected = (3 * 4 * 4 * C + C) + C + steps * C + 2 * block + (2 * C + C * classes + classes)
    assert sum(p.numel() for p in zoo.build("vit_tiny").parameters()) == expected


def test_hybrid_vit_uses_zoo_convnets_residual_stem(registry: Registry) -> None:
    model = zoo.build("hybrid_vit_tiny").eval()
    stem = model.patch_embedding[0]  # zoo-convnets' declared Residual, with its 1x1 shortcut
    assert sorted(dict(stem.named_children())) == ["bn1", "bn2", "conv1", "conv2", "conv3"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.pos_embedding.pos_embedding.shape == (1, 65, 64)  # 32 -> 16 (stem) -> 8 (2x2 patches)
    residual, conv, tokens = zoo.spec("hybrid_vit_tiny").declaration["layers"]["patch_embedding"]["layers"]
    assert list(residual["layers"]) == ["conv1", "bn1", "relu1", "conv2", "bn2", "conv3", "add", "relu2"]  # inlined
    assert conv["type"] == "LazyConv2d"
    assert [node["op"] for node in tokens["layers"].values()] == ["flatten", "transpose"]  # PatchTokens, inlined


def test_overrides_reach_every_block(registry: Registry) -> None:
    model = zoo.build("vit_tiny", num_hiddens=32, num_heads=2, num_classes=5, input_shape=(1, 3, 16, 16)).eval()
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)
    assert model.blks[0].attention.num_heads == 2 and model.pos_embedding.pos_embedding.shape == (1, 17, 32)


def test_without_zoo_convnets_the_hybrid_says_what_is_missing() -> None:
    with zoo.isolated_registry("zoo-attention"):
        assert zoo.build("vit_tiny") is not None  # its other models need only the built-ins
        with pytest.raises(
            zoo.UnknownNameError, match=r"registry\.toml:\d+: hybrid_vit_tiny -> layers\.patch_embedding -> layers\[0\]"
        ):
            zoo.build("hybrid_vit_tiny")


def test_transformer_encoder_tiny_masks_with_valid_lens(registry: Registry) -> None:
    model = zoo.build("transformer_encoder_tiny").eval()
    assert isinstance(model[0], TransformerEncoderBlock) and isinstance(model, nn.Sequential)
    X = torch.randn(2, 8, 32)
    assert model(X).shape == (2, 8, 32)
    masked = model[0](X, torch.tensor([8, 3]))
    torch.testing.assert_close(masked[0], model[0](X)[0])  # a full-length row is unchanged by the mask


def test_learned_positions_are_sized_from_checkpoint_shapes_alone() -> None:
    from zoo_attention.blocks import LazyLearnedPositions, LearnedPositions

    layer = LazyLearnedPositions()
    materialize_from_shapes(layer, {"pos_embedding": (1, 17, 32)})  # what a safetensors header gives
    assert type(layer) is LearnedPositions and layer.pos_embedding.shape == (1, 17, 32)
