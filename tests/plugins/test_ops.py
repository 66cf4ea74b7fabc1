"""The ops of dataflow blocks: each against torch, its arguments checked, numbers and indices in `in`, the mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from tests import references
from zoo._plugins import ops


def graph(write_toml: Callable[..., Path], layers: str, inputs: str = '["x"]', extra: str = "") -> nn.Module:
    """A one-entry dataflow block `g` with these children, built."""
    path = write_toml(f"[g]\ninputs = {inputs}\n{extra}\n[g.layers]\n{layers}\n")
    return zoo.build("g", registry=path)


def problems(write_toml: Callable[..., Path], layers: str, inputs: str = '["x"]') -> str:
    with pytest.raises(zoo.ZooError) as caught:
        graph(write_toml, layers, inputs)
    return str(caught.value)


X = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
POSITIVE = X.abs() + 0.5

# (children of `g`, the input, what torch computes)
CASES: list[tuple[str, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = [
    ('y = { op = "sin" }', X, torch.sin),
    ('y = { op = "cos" }', X, torch.cos),
    ('y = { op = "exp" }', X, torch.exp),
    ('y = { op = "log" }', POSITIVE, torch.log),
    ('y = { op = "sqrt" }', POSITIVE, torch.sqrt),
    ('y = { op = "rsqrt" }', POSITIVE, torch.rsqrt),
    ('y = { op = "neg" }', X, torch.neg),
    ('y = { op = "abs" }', X, torch.abs),
    ('y = { op = "clamp", min = -0.5, max = 0.5 }', X, lambda x: x.clamp(-0.5, 0.5)),
    ('y = { op = "pow", in = ["x", 2] }', X, lambda x: x**2),
    ('y = { op = "pow", in = [10000.0, "x"] }', X, lambda x: 10000.0**x),
    ('y = { op = "div", in = [1.0, "x"] }', POSITIVE, lambda x: 1.0 / x),
    ('y = { op = "sub", in = [1, "x"] }', X, lambda x: 1 - x),
    ('y = { op = "add", in = ["x", "${2 * 3}"] }', X, lambda x: x + 6),
    ('y = { op = "le", in = ["x", 0.0] }', X, lambda x: x <= 0.0),
    ('y = { op = "gt", in = ["x", 0.1] }', X, lambda x: x > 0.1),
    ('p = { op = "gt", in = ["x", 0.0] }\ny = { op = "where", in = ["p", "x", 0.0] }', X, lambda x: x.clamp(min=0)),
    (
        'm = { op = "lt", in = ["x", 0.0] }\ny = { op = "masked_fill", in = ["x", "m"], value = -inf }',
        X,
        lambda x: x.masked_fill(x < 0, float("-inf")),
    ),
    (
        'a = { op = "gt", in = ["x", -0.5] }\nb = { op = "lt", in = ["x", 0.5] }\n'
        'y = { op = "logical_and", in = ["a", "b"] }',
        X,
        lambda x: (x > -0.5) & (x < 0.5),
    ),
    ('y = { op = "ones_like", dtype = "bool" }', X, lambda x: torch.ones_like(x, dtype=torch.bool)),
    ('y = { op = "full_like", fill_value = 3.0 }', X, lambda x: torch.full_like(x, 3.0)),
    ('y = { op = "to", dtype = "float64" }', X, lambda x: x.double()),
    ('y = { op = "unsqueeze", dim = 1 }', X, lambda x: x.unsqueeze(1)),
    ('y = { op = "select", dim = 1, index = 0 }', X, lambda x: x[:, 0]),
    ('y = { op = "narrow", dim = 2, start = 1, length = 2 }', X, lambda x: x[:, :, 1:3]),
    ('y = { op = "slice", dim = -1, start = 1, step = 2 }', X, lambda x: x[..., 1::2]),
    ('y = { op = "repeat_interleave", repeats = 2, dim = 1 }', X, lambda x: x.repeat_interleave(2, 1)),
    (
        'n = { op = "size", dim = 0 }\ny = { op = "expand", in = ["x", 3, "n", -1, -1] }',
        X,
        lambda x: x.expand(3, 2, 3, 4),
    ),
    ('y = { op = "layer_norm", normalized_shape = 4, eps = 1e-6 }', X, lambda x: F.layer_norm(x, (4,), eps=1e-6)),
    ('y = { op = "rms_norm", normalized_shape = [4], eps = 1e-6 }', X, lambda x: F.rms_norm(x, (4,), eps=1e-6)),
    ('y = { op = "sum", dim = [1, 2] }', X, lambda x: x.sum((1, 2))),
    ('y = { op = "gelu", approximate = "tanh" }', X, lambda x: F.gelu(x, approximate="tanh")),
    ('y = { op = "identity", in = "x[:, 0]" }', X, lambda x: x[:, 0]),
    ('y = { op = "identity", in = "x[..., 1:3]" }', X, lambda x: x[..., 1:3]),
    ('y = { op = "identity", in = "x[:, None, -1, ::2]" }', X, lambda x: x[:, None, -1, ::2]),
    ('h = { op = "chunk", chunks = 2, dim = -1 }\ny = { op = "identity", in = "h[1]" }', X, lambda x: x[..., 2:]),
]


@pytest.mark.parametrize(("layers", "x", "expected"), CASES, ids=[c[0].split("\n")[-1] for c in CASES])
def test_each_op_computes_what_torch_does(
    write_toml: Callable[..., Path], layers: str, x: torch.Tensor, expected: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    got = graph(write_toml, layers)(x)
    want = expected(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_every_builtin_op_is_registered_under_its_name() -> None:
    with zoo.isolated_registry() as reg:
        for name, fn in ops.BUILTIN_OPS.items():
            assert reg.op(name).fn is fn
    for name in ("abs", "pow", "slice", "sum", "sdpa", "drop_path", "rms_norm", "arange", "where", "expand"):
        assert name in ops.BUILTIN_OPS  # a Python builtin's name, without the trailing underscore


def test_gather_embedding_and_index_select_take_integer_tensors(write_toml: Callable[..., Path]) -> None:
    weight = torch.randn(10, 3)
    ids = torch.tensor([[1, 2], [3, 9]])
    extra = "params = { weight = [10, 3] }"
    model = graph(write_toml, 'y = { op = "embedding", in = ["x", "weight"], padding_idx = 0 }', extra=extra)
    with torch.no_grad():
        model.weight.copy_(weight)
    torch.testing.assert_close(model(ids), F.embedding(ids, weight, 0))
    picked = graph(write_toml, 'y = { op = "index_select", in = ["x", "i"], dim = 1 }', inputs='["x", "i"]')
    torch.testing.assert_close(picked(X, torch.tensor([2, 0])), X[:, [2, 0]])
    gathered = graph(write_toml, 'y = { op = "gather", in = ["x", "i"], dim = 1 }', inputs='["x", "i"]')
    index = torch.tensor([[[0, 1, 2, 0]], [[2, 2, 1, 0]]])
    torch.testing.assert_close(gathered(X, index), torch.gather(X, 1, index))


def test_grouped_query_attention_is_sdpa_with_repeated_kv_heads(write_toml: Callable[..., Path]) -> None:
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    model = graph(
        write_toml,
        'y = { op = "sdpa", in = ["q", "k", "v"], is_causal = true, enable_gqa = true, scale = 0.5 }',
        inputs='["q", "k", "v"]',
    )
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True, scale=0.5
    )
    torch.testing.assert_close(model(q, k, v), expected)


def test_ops_with_a_training_parameter_follow_the_blocks_mode(write_toml: Callable[..., Path]) -> None:
    model = graph(write_toml, 'y = { op = "dropout", p = 0.5 }')
    x = torch.ones(1000)
    model.train()
    torch.manual_seed(0)
    dropped = model(x)
    torch.manual_seed(0)
    assert torch.equal(dropped, F.dropout(x, 0.5, training=True))  # the same draws as torch's dropout
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    model.eval()
    assert torch.equal(model(x), x)
    assert "training = self.training" in model.code


def test_sdpa_dropout_applies_in_training_only(write_toml: Callable[..., Path]) -> None:
    q = torch.randn(1, 2, 16, 8)
    model = graph(write_toml, 'y = { op = "sdpa", in = ["x", "x", "x"], dropout_p = 0.5 }')
    model.eval()
    torch.testing.assert_close(model(q), F.scaled_dot_product_attention(q, q, q))
    model.train()
    torch.manual_seed(3)
    trained = model(q)
    torch.manual_seed(3)
    torch.testing.assert_close(trained, F.scaled_dot_product_attention(q, q, q, dropout_p=0.5))
    assert not torch.allclose(trained, F.scaled_dot_product_attention(q, q, q))


def test_drop_path_is_torchvisions_stochastic_depth() -> None:
    stochastic_depth = references.torchvision_ops().stochastic_depth.stochastic_depth
    x = torch.randn(64, 3, 4, 4)
    for p, mode in ((0.3, "row"), (0.5, "batch"), (0.0, "row"), (1.0, "row")):
        torch.manual_seed(5)
        ours = ops.drop_path(x, p=p, mode=mode, training=True)
        torch.manual_seed(5)
        theirs = stochastic_depth(x, p, mode, training=True)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        assert ops.drop_path(x, p=p, mode=mode, training=False) is x
    torch.manual_seed(6)
    rows = ops.drop_path(torch.ones(20_000, 1), p=0.25, training=True).flatten()
    assert abs((rows == 0).float().mean().item() - 0.25) < 0.02  # rows dropped with probability p
    assert rows.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]  # survivors scaled: the same expectation


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ('y = { op = "neg", in = [1.0] }', "op 'neg' takes Tensor as 'x' (input 1 of `in`), not the number 1.0"),
        ('y = { op = "dropout", p = 1.5 }', "op 'dropout' expects float from 0 to 1, got float 1.5"),
        ('y = { op = "drop_path", p = 0.1, mode = "rows" }', "expects one of 'row', 'batch', got str 'rows'"),
        ('y = { op = "dropout", p = 0.1, training = true }', "takes the block's mode as `training`"),
        (
            'y = { op = "arange", end = 4 }',
            "op 'arange' makes a tensor from constants alone; declare it under `buffers`",
        ),
        ('y = { op = "to", dtype = "float" }', "expects one of 'float32', 'float64'"),
        (
            'y = { op = "sdpa", in = ["x", "x"] }',
            "op 'sdpa' takes 3 to 4 inputs (q, k, v, attn_mask), but `in` gives 2",
        ),
        ('y = { op = "rms_norm", eps = 1e-6 }', "op 'rms_norm' is missing required argument 'normalized_shape'"),
        ('y = { op = "add", in = ["x", true] }', "`in` holds True; a value written in `in` is a number"),
        ('y = { op = "add", in = ["x", "${[1, 2]}"] }', "`in` holds [1, 2]; a value written in `in` is a number"),
        ('y = { op = "identity", in = "x[a]" }', "an index holds ints, slices such as 1:3 or :, None and ..."),
        ('y = { op = "identity", in = "x[0][1]" }', "an index holds ints"),
        ('y = { op = "identity", in = "z[:, 0]" }', "`in` refers to 'z', which is no input"),
        (
            'y = { op = "identity", in = "x[:, 99999999999999999999]" }',
            "`in` indexes with 99999999999999999999, which is no tensor index: indices fit in 64 bits",
        ),
    ],
)
def test_op_mistakes_are_named_where_written(write_toml: Callable[..., Path], layers: str, message: str) -> None:
    text = problems(write_toml, layers)
    assert message in text, text
    assert ".toml:" in text  # file:line


def test_a_slice_past_64_bits_clamps_as_pythons_do(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[a]\n[a.layers]\ny = { op = "identity", in = "x[:, 1:99999999999999999999]" }\n')
    assert zoo.build("a", registry=path)(torch.arange(6).view(2, 3)).tolist() == [[1, 2], [4, 5]]


def test_an_op_that_makes_too_much_refuses_before_allocating() -> None:
    with pytest.raises(ValueError, match="arange.*would hold 1e\\+12 elements; an op makes at most 268,435,456"):
        ops.arange(end=10**12)
    with pytest.raises(ValueError, match="zeros would hold"):
        ops.zeros(shape=(2**20, 2**20))
    with pytest.raises(ValueError, match="a shape holds sizes"):
        ops.ones(shape=(-1, 3))
    with pytest.raises(ValueError, match="step must not be 0"):
        ops.arange(end=4, step=0)
    assert ops.arange(start=0, end=8, step=2, dtype="float32").tolist() == [0.0, 2.0, 4.0, 6.0]
