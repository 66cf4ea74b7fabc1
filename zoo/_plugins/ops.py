"""The closed set of tensor functions a dataflow block can use as nodes (`op = "add"`).

Each op is a plain function: its positional parameters are the values it takes (from `in`:
tensors, or numbers written there), its keyword-only parameters are the arguments written in
the declaration. An op with a `training` parameter is given the block's mode (`model.train()`,
`model.eval()`); a declaration cannot set it. zoo's ops arrive through the `zoo_ops` hook like
any plugin's; there is no way to name an arbitrary import.

Ops that make a tensor from constants alone (`arange`, `zeros`, `ones`, `full`) refuse more than
MAX_MADE_ELEMENTS elements before allocating: a declaration from a stranger cannot make
`arange(10**12)` take the machine's memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

from zoo._language.signatures import Between

Tensor = torch.Tensor
Number = float  # an int fits too: TOML's 1 and 1.0 are both numbers to an op
Value = Tensor | float  # a tensor, or a number written in `in` (`in = [1.0, "x"]`)
Probability = Annotated[float, Between(0.0, 1.0)]
DType = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]
MAX_MADE_ELEMENTS = 2**28  # a tensor made from constants: 1 GiB of float32, far above any buffer a model needs

_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DType.__args__}  # type: ignore[attr-defined]


def _dtype(name: str | None) -> torch.dtype | None:
    return _DTYPES[name] if name is not None else None


def _bounded(count: float, what: str) -> int:
    """The element count of a tensor about to be made from constants, refused past MAX_MADE_ELEMENTS."""
    if not math.isfinite(count) or count > MAX_MADE_ELEMENTS:
        raise ValueError(f"{what} would hold {count:.4g} elements; an op makes at most {MAX_MADE_ELEMENTS:,}")
    return max(int(count), 0)


def _numel(shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    if any(type(d) is not int or d < 0 for d in shape):
        raise ValueError(f"{what}: a shape holds sizes (ints, 0 or more), got {list(shape)}")
    _bounded(math.prod(shape), what)
    return tuple(shape)


# --- arithmetic and merges ------------------------------------------------------------------
# Binary ops take tensors or numbers on either side (`in = [1.0, "x"]` is 1 / x for div).


def add(a: Value, b: Value, *, inplace: bool = False) -> Value:
    """a + b (broadcasting): a residual, or token plus position embeddings.

    inplace = true writes the sum into a (torchvision's `out += identity`); zoo allows it only
    where nothing else takes a.
    """
    return a.add_(b) if inplace and isinstance(a, Tensor) else a + b


def sub(a: Value, b: Value) -> Value:
    """a - b (broadcasting)."""
    return a - b


def mul(a: Value, b: Value) -> Value:
    """a * b, elementwise (broadcasting): a gate, or a layer scale."""
    return a * b


def div(a: Value, b: Value) -> Value:
    """a / b, elementwise (broadcasting)."""
    return a / b


def pow_(a: Value, b: Value) -> Value:
    """a ** b, elementwise: `in = ["x", 2]` squares, `in = [10000.0, "exponents"]` raises a base to each."""
    return a**b


def scale(x: Tensor, *, factor: float) -> Tensor:
    """x * factor, a constant written in the declaration."""
    return x * factor


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b."""
    return torch.matmul(a, b)


def cat(*tensors: Tensor, dim: int = 0) -> Tensor:
    """Concatenate along `dim`: GoogLeNet's branches, DenseNet's features, a U-Net skip, a class token."""
    return torch.cat(tensors, dim)


def stack(*tensors: Tensor, dim: int = 0) -> Tensor:
    """Stack along a new `dim`."""
    return torch.stack(tensors, dim)


# --- elementwise math -------------------------------------------------------------------------


def sin(x: Tensor) -> Tensor:
    """sin(x): half of a rotary embedding's table."""
    return torch.sin(x)


def cos(x: Tensor) -> Tensor:
    """cos(x)."""
    return torch.cos(x)


def exp(x: Tensor) -> Tensor:
    """e ** x."""
    return torch.exp(x)


def log(x: Tensor) -> Tensor:
    """The natural logarithm."""
    return torch.log(x)


def sqrt(x: Tensor) -> Tensor:
    """The square root."""
    return torch.sqrt(x)


def rsqrt(x: Tensor) -> Tensor:
    """1 / sqrt(x): an RMS norm's scale."""
    return torch.rsqrt(x)


def neg(x: Tensor) -> Tensor:
    """-x: half of rotate_half."""
    return torch.neg(x)


def abs_(x: Tensor) -> Tensor:
    """|x|."""
    return torch.abs(x)


def clamp(x: Tensor, *, min: float | None = None, max: float | None = None) -> Tensor:
    """x limited to [min, max] (either may be left out)."""
    return torch.clamp(x, min=min, max=max)


# --- comparisons, masks and choices ------------------------------------------------------------


def eq(a: Value, b: Value) -> Value:
    """a == b, elementwise (a bool tensor)."""
    return a == b


def ne(a: Value, b: Value) -> Value:
    """a != b, elementwise."""
    return a != b


def lt(a: Value, b: Value) -> Value:
    """a < b, elementwise."""
    return a < b


def le(a: Value, b: Value) -> Value:
    """a <= b, elementwise: key position <= query position is a causal mask."""
    return a <= b


def gt(a: Value, b: Value) -> Value:
    """a > b, elementwise."""
    return a > b


def ge(a: Value, b: Value) -> Value:
    """a >= b, elementwise."""
    return a >= b


def logical_and(a: Tensor, b: Tensor) -> Tensor:
    """a and b, elementwise (bool tensors): a causal mask and a padding mask together."""
    return torch.logical_and(a, b)


def logical_or(a: Tensor, b: Tensor) -> Tensor:
    """a or b, elementwise."""
    return torch.logical_or(a, b)


def logical_not(x: Tensor) -> Tensor:
    """not x, elementwise."""
    return torch.logical_not(x)


def where(condition: Tensor, a: Value, b: Value) -> Tensor:
    """a where condition holds, else b (broadcasting; a and b may be numbers)."""
    return torch.where(condition, a, b)


def masked_fill(x: Tensor, mask: Tensor, *, value: float) -> Tensor:
    """x with `value` wherever mask is true (value = -inf in TOML for an attention mask)."""
    return x.masked_fill(mask, value)


# --- making tensors ---------------------------------------------------------------------------
# From constants alone (buffers are made so): bounded. From another tensor (`_like`): its shape.


def arange(*, start: Number = 0, end: Number, step: Number = 1, dtype: DType | None = None) -> Tensor:
    """start, start + step, … below end: torch.arange (RoPE's frequencies, BERT's position ids)."""
    if step == 0:
        raise ValueError("arange: step must not be 0")
    _bounded(math.ceil((end - start) / step), f"arange(start={start}, end={end}, step={step})")
    return torch.arange(start, end, step, dtype=_dtype(dtype))


def tensor(*, data: float | tuple[Any, ...], dtype: DType | None = None) -> Tensor:
    """A tensor holding `data` (a number, or nested arrays of them): `buffers = { w = [0.5, 0.25] }`."""
    # Made on the CPU first: on meta, torch takes ragged data ([[1, 2], [3]]) without a word, so a
    # check (on meta) would pass what a build refuses. The data is a declaration's, so small.
    return torch.tensor(data, dtype=_dtype(dtype), device="cpu").to(torch.get_default_device())


def zeros(*, shape: tuple[int, ...], dtype: DType | None = None) -> Tensor:
    """A tensor of zeros of `shape`."""
    return torch.zeros(_numel(tuple(shape), "zeros"), dtype=_dtype(dtype))


def ones(*, shape: tuple[int, ...], dtype: DType | None = None) -> Tensor:
    """A tensor of ones of `shape`."""
    return torch.ones(_numel(tuple(shape), "ones"), dtype=_dtype(dtype))


def full(*, shape: tuple[int, ...], fill_value: float, dtype: DType | None = None) -> Tensor:
    """A tensor of `shape` holding `fill_value` everywhere."""
    return torch.full(_numel(tuple(shape), "full"), fill_value, dtype=_dtype(dtype))


def zeros_like(x: Tensor, *, dtype: DType | None = None) -> Tensor:
    """Zeros of x's shape and device (and x's dtype unless given): BERT's default token types."""
    return torch.zeros_like(x, dtype=_dtype(dtype))


def ones_like(x: Tensor, *, dtype: DType | None = None) -> Tensor:
    """Ones of x's shape and device: an attention mask that keeps every token."""
    return torch.ones_like(x, dtype=_dtype(dtype))


def full_like(x: Tensor, *, fill_value: float, dtype: DType | None = None) -> Tensor:
    """`fill_value` in x's shape and device."""
    return torch.full_like(x, fill_value, dtype=_dtype(dtype))


def positions(x: Tensor, *, dim: int = 1) -> Tensor:
    """0, 1, …, n-1 for n = x's size along dim, on x's device: position ids for an embedding."""
    return torch.arange(x.shape[dim], device=x.device)


def to(x: Tensor, *, dtype: DType) -> Tensor:
    """x in another dtype: `dtype = "float32"` for a computation in full precision, "bool" for a mask."""
    return x.to(_DTYPES[dtype])


def type_as(x: Tensor, other: Tensor) -> Tensor:
    """x in other's dtype: back to the input's precision after a float32 computation."""
    return x.type_as(other)


# --- shapes ------------------------------------------------------------------------------------


def size(x: Tensor, *, dim: int) -> int:
    """x's size along dim, as a value other ops take (`in = ["class_token", "batch", -1, -1]` for expand)."""
    return x.shape[dim]


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


def unsqueeze(x: Tensor, *, dim: int) -> Tensor:
    """A new dim of size 1 at `dim`."""
    return x.unsqueeze(dim)


def squeeze(x: Tensor, *, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Dims of size 1 removed (only `dim`, when given)."""
    return x.squeeze() if dim is None else x.squeeze(dim if isinstance(dim, int) else tuple(dim))


def transpose(x: Tensor, *, dim0: int, dim1: int) -> Tensor:
    """Swap two dims."""
    return x.transpose(dim0, dim1)


def permute(x: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """Reorder all dims."""
    return x.permute(*dims)


def expand(x: Tensor, *sizes: int) -> Tensor:
    """x.expand(*sizes), a view: sizes come from `in`, numbers or `size` values; -1 keeps a dim.

    ViT's class token for the batch: `in = ["class_token", "batch", -1, -1]`.
    """
    return x.expand(*sizes)


def repeat_interleave(x: Tensor, *, repeats: int, dim: int) -> Tensor:
    """Each slice along dim repeated `repeats` times in place: grouped-query attention's repeat_kv."""
    return torch.repeat_interleave(x, repeats, dim)


def contiguous(x: Tensor) -> Tensor:
    """A contiguous copy when x is not."""
    return x.contiguous()


def split(x: Tensor, *, split_size: int | tuple[int, ...], dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of `split_size` along dim, as a tuple: name them "node[0]", "node[1]"."""
    return torch.split(x, split_size if isinstance(split_size, int) else list(split_size), dim)


def chunk(x: Tensor, *, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """`chunks` equal pieces along dim, as a tuple: the two halves of rotate_half."""
    return torch.chunk(x, chunks, dim)


def identity(x: Tensor) -> Tensor:
    """x itself."""
    return x


# --- indexing (`in = "x[:, 0]"` indexes too) ----------------------------------------------------


def select(x: Tensor, *, dim: int, index: int) -> Tensor:
    """x[..., index, ...] at dim, which goes away: BERT's pooler reads x[:, 0]."""
    return x.select(dim, index)


def narrow(x: Tensor, *, dim: int, start: int, length: int) -> Tensor:
    """length entries from start along dim (a view)."""
    return x.narrow(dim, start, length)


def slice_(x: Tensor, *, dim: int, start: int | None = None, end: int | None = None, step: int = 1) -> Tensor:
    """x[start:end:step] along dim; a left-out bound is the whole range."""
    index = [slice(None)] * (dim % x.dim()) + [slice(start, end, step)]
    return x[tuple(index)]


def gather(x: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """torch.gather: out[i][j] = x[i][index[i][j]] for dim = 1."""
    return torch.gather(x, dim, index)


def index_select(x: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """The slices of x along dim at the positions in `index` (a 1-D integer tensor)."""
    return torch.index_select(x, dim, index)


# --- activations, normalisation, pooling ------------------------------------------------------


def relu(x: Tensor, *, inplace: bool = False) -> Tensor:
    """max(x, 0); inplace = true overwrites x (allowed only where nothing else takes x)."""
    return F.relu(x, inplace=inplace)


def gelu(x: Tensor, *, approximate: Literal["none", "tanh"] = "none") -> Tensor:
    """GELU; approximate = "tanh" is GPT-2's gelu_new."""
    return F.gelu(x, approximate=approximate)


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x): Llama's MLP gate."""
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


def sum_(x: Tensor, *, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """Sum over dim(s)."""
    return x.sum(dim if isinstance(dim, int) else tuple(dim), keepdim=keepdim)


def layer_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    normalized_shape: int | tuple[int, ...],
    eps: float = 1e-5,
) -> Tensor:
    """F.layer_norm over the last dims, with a weight and bias from `in` (bare `params`) or none.

    ConvNeXt's channels-first LayerNorm2d is permute, layer_norm, permute.
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return F.layer_norm(x, shape, weight, bias, eps)


def rms_norm(
    x: Tensor, weight: Tensor | None = None, *, normalized_shape: int | tuple[int, ...], eps: float | None = None
) -> Tensor:
    """F.rms_norm: x / sqrt(mean(x²) + eps) over the last dims, times weight (Llama's RMSNorm)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return F.rms_norm(x, shape, weight, eps)


def embedding(ids: Tensor, weight: Tensor, *, padding_idx: int | None = None) -> Tensor:
    """The rows of `weight` (a bare parameter) at `ids`: F.embedding."""
    return F.embedding(ids, weight, padding_idx)


def dropout(x: Tensor, *, p: Probability = 0.5, training: bool = False) -> Tensor:
    """Elements zeroed with probability p and the rest scaled by 1/(1-p) in training; x itself in eval."""
    return F.dropout(x, p, training)


def drop_path(x: Tensor, *, p: Probability, mode: Literal["row", "batch"] = "row", training: bool = False) -> Tensor:
    """Stochastic depth, as torchvision's stochastic_depth: in training, whole rows (mode "row": each
    sample of the batch; "batch": all of it) are zeroed with probability p and the survivors scaled by
    1/(1-p); in eval, x itself. The same random draws as torchvision's, so a seed gives the same rows.
    """
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise


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
    dropout_p: Probability = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    training: bool = False,
) -> Tensor:
    """softmax(q kᵀ · scale + mask) v: torch's scaled_dot_product_attention, (B, H, T, D) in and out.

    attn_mask is a bool mask (true: attend) or an additive one; dropout_p applies in training only;
    enable_gqa lets k and v have fewer heads than q (grouped-query attention, each shared by
    H / H_kv query heads).
    """
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        dropout_p=dropout_p if training else 0.0,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )


def _ops(*fns: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """By name; a trailing underscore keeps a Python builtin's name (abs, pow, slice, sum) for the op."""
    return {fn.__name__.rstrip("_"): fn for fn in fns}


BUILTIN_OPS: dict[str, Callable[..., Any]] = _ops(
    # arithmetic and merges
    add, sub, mul, div, pow_, scale, matmul, cat, stack,
    # elementwise math
    sin, cos, exp, log, sqrt, rsqrt, neg, abs_, clamp,
    # comparisons, masks and choices
    eq, ne, lt, le, gt, ge, logical_and, logical_or, logical_not, where, masked_fill,
    # making tensors
    arange, tensor, zeros, ones, full, zeros_like, ones_like, full_like, positions, to, type_as,
    # shapes
    size, reshape, view, flatten, unflatten, unsqueeze, squeeze, transpose, permute, expand, repeat_interleave,
    contiguous, split, chunk, identity,
    # indexing
    select, narrow, slice_, gather, index_select,
    # activations, normalisation, pooling, attention
    relu, gelu, silu, sigmoid, tanh, softmax, mean, sum_, layer_norm, rms_norm, embedding, dropout, drop_path,
    adaptive_avg_pool2d, max_pool2d, avg_pool2d, interpolate, sdpa,
)  # fmt: skip
