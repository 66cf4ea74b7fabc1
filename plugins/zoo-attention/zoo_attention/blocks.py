"""Attention blocks after d2l (multi-head attention, transformer encoder, ViT), written the nanoGPT way.

Shapes in trailing comments: B batch, T tokens, C = num_hiddens channels, h heads, D = C / h.
Projections are LazyLinear, so the input width is inferred on the first forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter


class MultiHeadAttention(nn.Module):
    """d2l's multi-head scaled dot-product attention (not torch's nn.MultiheadAttention).

    Args:
        num_hiddens: width of queries, keys and values after projection; split across heads.
        num_heads: number of heads; must divide num_hiddens.
        dropout: dropout on the attention weights, in training only.
        bias: whether the four projections have biases.
    """

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        if num_hiddens % num_heads:
            raise ValueError(f"num_hiddens ({num_hiddens}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.dropout = dropout
        # projections of queries, keys, values and the concatenated heads
        self.W_q = nn.LazyLinear(num_hiddens, bias=bias)
        self.W_k = nn.LazyLinear(num_hiddens, bias=bias)
        self.W_v = nn.LazyLinear(num_hiddens, bias=bias)
        self.W_o = nn.LazyLinear(num_hiddens, bias=bias)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        valid_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention when only `queries` is given; `valid_lens` (B,) or (B, T_q) masks key positions."""
        keys = queries if keys is None else keys
        values = keys if values is None else values
        q = self._split_heads(self.W_q(queries))  # (B, h, T_q, D)
        k = self._split_heads(self.W_k(keys))  # (B, h, T_k, D)
        v = self._split_heads(self.W_v(values))  # (B, h, T_k, D)
        mask = None if valid_lens is None else _key_mask(valid_lens, k.shape[2])  # (B, 1, 1 or T_q, T_k)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        B, h, T, D = y.shape
        return self.W_o(y.transpose(1, 2).reshape(B, T, h * D))  # (B, T_q, C)

    def _split_heads(self, X: torch.Tensor) -> torch.Tensor:
        B, T, C = X.shape
        return X.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, h, T, D)


def _key_mask(valid_lens: torch.Tensor, num_keys: int) -> torch.Tensor:
    """True where a key may be attended to: its position is below the valid length."""
    positions = torch.arange(num_keys, device=valid_lens.device)
    if valid_lens.dim() == 1:
        return (positions[None, :] < valid_lens[:, None])[:, None, None, :]  # (B, 1, 1, T_k)
    return (positions[None, None, :] < valid_lens[:, :, None])[:, None]  # (B, 1, T_q, T_k)


class PositionWiseFFN(nn.Module):
    """d2l's position-wise feed-forward network: the same two-layer MLP at every token."""

    def __init__(self, ffn_num_hiddens: int, ffn_num_outputs: int) -> None:
        super().__init__()
        self.dense1 = nn.LazyLinear(ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dense2 = nn.LazyLinear(ffn_num_outputs)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.relu(self.dense1(X)))  # (B, T, ffn_num_outputs)


class AddNorm(nn.Module):
    """d2l's residual connection followed by layer normalisation: LayerNorm(dropout(Y) + X)."""

    def __init__(self, norm_shape: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(norm_shape)

    def forward(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return self.ln(self.dropout(Y) + X)  # (B, T, C)


class TransformerEncoderBlock(nn.Module):
    """d2l's transformer encoder block (post-norm): self-attention, then the FFN, each with AddNorm."""

    def __init__(
        self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float = 0.0, use_bias: bool = False
    ) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.addnorm1 = AddNorm(num_hiddens, dropout)
        self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens)
        self.addnorm2 = AddNorm(num_hiddens, dropout)

    def forward(self, X: torch.Tensor, valid_lens: torch.Tensor | None = None) -> torch.Tensor:
        Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))  # (B, T, C)
        return self.addnorm2(Y, self.ffn(Y))  # (B, T, C)


class ViTMLP(nn.Module):
    """d2l's ViT MLP: dense, GELU, dropout, dense, dropout."""

    def __init__(self, mlp_num_hiddens: int, mlp_num_outputs: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dense1 = nn.LazyLinear(mlp_num_hiddens)
        self.gelu = nn.GELU()
        self.dropout1 = nn.Dropout(dropout)
        self.dense2 = nn.LazyLinear(mlp_num_outputs)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.dense2(self.dropout1(self.gelu(self.dense1(X)))))  # (B, T, mlp_num_outputs)


class ViTBlock(nn.Module):
    """d2l's ViT encoder block (pre-norm): X + attention(norm(X)), then X + mlp(norm(X))."""

    def __init__(
        self, num_hiddens: int, mlp_num_hiddens: int, num_heads: int, dropout: float = 0.0, use_bias: bool = False
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(num_hiddens)
        self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
        self.ln2 = nn.LayerNorm(num_hiddens)
        self.mlp = ViTMLP(mlp_num_hiddens, num_hiddens, dropout)

    def forward(self, X: torch.Tensor, valid_lens: torch.Tensor | None = None) -> torch.Tensor:
        X = X + self.attention(self.ln1(X), valid_lens=valid_lens)  # (B, T, C)
        return X + self.mlp(self.ln2(X))  # (B, T, C)


class ClassToken(nn.Module):
    """Prepends one learned token (d2l's `cls_token`, zeros at first) whose final state classifies the image."""

    def __init__(self, num_hiddens: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, num_hiddens))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cls_token.expand(X.shape[0], -1, -1), X), dim=1)  # (B, T + 1, C)


class LearnedPositions(nn.Module):
    """Adds a learned embedding per position (d2l's `pos_embedding`, standard normal at first)."""

    def __init__(self, num_steps: int, num_hiddens: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, num_steps, num_hiddens))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if X.shape[1] != self.pos_embedding.shape[1]:
            raise ValueError(f"expected {self.pos_embedding.shape[1]} tokens, got {X.shape[1]}: the image size changed")
        return X + self.pos_embedding  # (B, T, C)


class LazyLearnedPositions(LazyModuleMixin, LearnedPositions):
    """LearnedPositions whose number of positions and width come from the first input; becomes LearnedPositions.

    With it, a ViT declaration need not work out how many patches its image size makes.
    """

    cls_to_become = LearnedPositions
    pos_embedding: UninitializedParameter

    def __init__(self) -> None:
        super().__init__(0, 0)
        self.pos_embedding = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            with torch.no_grad():
                self.pos_embedding.normal_()

    def initialize_parameters(self, X: torch.Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.pos_embedding.materialize((1, X.shape[1], X.shape[2]))  # (1, T, C)
                self.reset_parameters()

    @staticmethod
    def zoo_input_shape(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The input that gives these shapes, so zoo can size the layer from a checkpoint: (1, T, C)."""
        return shapes["pos_embedding"]


class ClassHead(nn.Module):
    """d2l's ViT head: layer-normalise the class token's final state, then a linear classifier."""

    def __init__(self, num_hiddens: int, num_classes: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(num_hiddens)
        self.linear = nn.Linear(num_hiddens, num_classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.linear(self.ln(X[:, 0]))  # (B, T, C) -> (B, num_classes)
