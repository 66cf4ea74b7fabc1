"""The closed set of tensor functions a dataflow block can use as nodes (`op = "add"`).

Each op is a plain function: its positional parameters are the tensors it takes (from `in`),
its keyword-only parameters are the arguments written in the declaration. zoo's ops arrive
through the `zoo_ops` hook like any plugin's; there is no way to name an arbitrary import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# --- arithmetic and merges ------------------------------------------------------------------


def add(a: Tensor, b: Tensor, *, inplace: bool = False) -> Tensor:
    """a + b (broadcasting): a residual, or token plus position embeddings.

    inplace = true writes the sum into a (torchvision's `out += identity`); zoo allows it only
    where nothing else takes a.
    """
    return a.add_(b) if inplace else a + b


def sub(a: Tensor, b: Tensor) -> Tensor:
    """a - b (broadcasting)."""
    return a - b


def mul(a: Tensor, b: Tensor) -> Tensor:
    """a * b, elementwise (broadcasting): a gate."""
    return a * b


def div(a: Tensor, b: Tensor) -> Tensor:
    """a / b, elementwise (broadcasting)."""
    return a / b


def scale(x: Tensor, *, factor: float) -> Tensor:
    """x * factor, a constant written in the declaration."""
    return x * factor


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b."""
    return torch.matmul(a, b)


def cat(*tensors: Tensor, dim: int = 0) -> Tensor:
    """Concatenate along `dim`: GoogLeNet's branches, DenseNet's features, a U-Net skip."""
    return torch.cat(tensors, dim)


def stack(*tensors: Tensor, dim: int = 0) -> Tensor:
    """Stack along a new `dim`."""
    return torch.stack(tensors, dim)


# --- shapes ------------------------------------------------------------------------------------


def reshape(x: Tensor, *, shape: tuple[int, ...]) -> Tensor:
    """x.reshape(shape); -1 infers one size."""
    return x.reshape(tuple(shape))


def view(x: Tensor, *, shape: tuple[int, ...]) -> Tensor:
    """x.view(shape): like reshape, never copies."""
    return x.view(tuple(shape))


def flatten(x: Tensor, *, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """torch.flatten: dims start_dim..end_dim become one."""
    return torch.flatten(x, start_dim, end_dim)


def unflatten(x: Tensor, *, dim: int, sizes: tuple[int, ...]) -> Tensor:
    """torch.unflatten: dim becomes `sizes` (one of them may be -1): (B, T, C) → (B, T, H, C/H)."""
    return torch.unflatten(x, dim, tuple(sizes))


def transpose(x: Tensor, *, dim0: int, dim1: int) -> Tensor:
    """Swap two dims."""
    return x.transpose(dim0, dim1)


def permute(x: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """Reorder all dims."""
    return x.permute(*dims)


def contiguous(x: Tensor) -> Tensor:
    """A contiguous copy when x is not."""
    return x.contiguous()


def split(x: Tensor, *, split_size: int | tuple[int, ...], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of `split_size` along dim, as a tuple: name them "node[0]", "node[1]"."""
    return torch.split(x, split_size if isinstance(split_size, int) else list(split_size), dim)


def chunk(x: Tensor, *, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """`chunks` equal pieces along dim, as a tuple."""
    return torch.chunk(x, chunks, dim)


def positions(x: Tensor, *, dim: int = 1) -> Tensor:
    """0, 1, …, n-1 for n = x's size along dim, on x's device: position ids for an embedding."""
    return torch.arange(x.shape[dim], device=x.device)


def identity(x: Tensor) -> Tensor:
    """x itself."""
    return x


# --- activations, normalisation, pooling ------------------------------------------------------


def relu(x: Tensor, *, inplace: bool = False) -> Tensor:
    """max(x, 0); inplace = true overwrites x (allowed only where nothing else takes x)."""
    return F.relu(x, inplace=inplace)


def gelu(x: Tensor, *, approximate: str = "none") -> Tensor:
    """GELU; approximate = "tanh" is GPT-2's gelu_new."""
    return F.gelu(x, approximate=approximate)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x)."""
    return F.silu(x)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x))."""
    return torch.sigmoid(x)


def tanh(x: Tensor) -> Tensor:
    """tanh(x)."""
    return torch.tanh(x)


def softmax(x: Tensor, *, dim: int) -> Tensor:
    """Softmax along dim."""
    return F.softmax(x, dim)


def mean(x: Tensor, *, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """Mean over dim(s)."""
    return x.mean(dim if isinstance(dim, int) else tuple(dim), keepdim=keepdim)


def adaptive_avg_pool2d(x: Tensor, *, output_size: int | tuple[int, ...]) -> Tensor:
    """Average-pool (N, C, H, W) to output_size."""
    return F.adaptive_avg_pool2d(x, output_size if isinstance(output_size, int) else (output_size[0], output_size[1]))


def max_pool2d(
    x: Tensor,
    *,
    kernel_size: int | tuple[int, ...],
    stride: int | None = None,
    padding: int = 0,
    ceil_mode: bool = False,
) -> Tensor:
    """Max-pool (N, C, H, W)."""
    return F.max_pool2d(
        x, kernel_size if isinstance(kernel_size, int) else tuple(kernel_size), stride, padding, ceil_mode=ceil_mode
    )


def avg_pool2d(
    x: Tensor,
    *,
    kernel_size: int | tuple[int, ...],
    stride: int | None = None,
    padding: int = 0,
    ceil_mode: bool = False,
) -> Tensor:
    """Average-pool (N, C, H, W)."""
    return F.avg_pool2d(
        x, kernel_size if isinstance(kernel_size, int) else tuple(kernel_size), stride, padding, ceil_mode=ceil_mode
    )


def interpolate(
    x: Tensor, *, scale_factor: float | None = None, size: int | tuple[int, ...] | None = None, mode: str = "nearest"
) -> Tensor:
    """Resize (N, C, …) by scale_factor or to size: a U-Net's upsampling without weights."""
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode)


def sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """softmax(q kᵀ · scale + mask) v: torch's scaled_dot_product_attention, (B, H, T, D) in and out."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)


BUILTIN_OPS: tuple[Callable[..., Any], ...] = (
    add,
    sub,
    mul,
    div,
    scale,
    matmul,
    cat,
    stack,
    reshape,
    view,
    flatten,
    unflatten,
    transpose,
    permute,
    contiguous,
    split,
    chunk,
    positions,
    identity,
    relu,
    gelu,
    silu,
    sigmoid,
    tanh,
    softmax,
    mean,
    adaptive_avg_pool2d,
    max_pool2d,
    avg_pool2d,
    interpolate,
    sdpa,
)
