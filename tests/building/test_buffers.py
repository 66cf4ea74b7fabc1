"""Declared buffers: computed at build by ops, saved only when persistent, recomputed wherever a model is built."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import zoo
from zoo import cli
from zoo._build import builder, check
from zoo._language.registry import USER

ROTARY = """\
[rotary]
doc = "Llama's rotary table: inv_freq = 1 / theta ** (arange(0, dim, 2) / dim), cos and sin of positions * inv_freq"
input = [2, 6, 8]
args = { dim = 8, theta = 10000.0 }
inputs = ["x"]
out = ["cos", "sin", "proj"]
[rotary.buffers]
exponents = { op = "arange", end = "${dim}", step = 2, dtype = "float32", persistent = false }
fractions = { op = "div", in = ["exponents", "${dim}"], persistent = false }
powers = { op = "pow", in = ["${theta}", "fractions"], persistent = false }
inv_freq = { op = "div", in = [1.0, "powers"], persistent = false }
scale = { op = "full", shape = ["${dim}"], fill_value = 0.5 }   # persistent: saved with the weights
bias = { shape = ["${dim}"], init = { fn = "constant", val = 0.25 } }
[rotary.layers]
positions = { op = "positions", in = "x", dim = 1 }
angles = { op = "mul", in = ["positions[:, None]", "inv_freq"] }
table = { op = "cat", in = ["angles", "angles"], dim = -1 }
cos = { op = "cos", in = "table" }
sin = { op = "sin", in = "table" }
linear = { type = "Linear", in = "x", in_features = "${dim}", out_features = "${dim}" }
scaled = { op = "mul", in = ["linear", "scale"] }
proj = { op = "add", in = ["scaled", "bias"] }
"""


def expected_inv_freq(dim: int = 8, theta: float = 10000.0) -> torch.Tensor:
    """transformers' LlamaRotaryEmbedding.compute_default_rope_parameters."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


@pytest.fixture
def rotary(write_toml: Callable[..., Path]) -> Path:
    return write_toml(ROTARY)


def test_buffers_are_computed_by_ops_and_only_persistent_ones_have_keys(rotary: Path) -> None:
    model = zoo.build("rotary", registry=rotary)
    assert torch.equal(model.inv_freq, expected_inv_freq())  # bit for bit: the same float32 ops
    assert list(model.state_dict()) == ["scale", "bias", "linear.weight", "linear.bias"]  # torch: own tensors first
    assert [name for name, _ in model.named_buffers()] == [
        "exponents",
        "fractions",
        "powers",
        "inv_freq",
        "scale",
        "bias",
    ]
    assert model.scale.tolist() == [0.5] * 8 and model.bias.tolist() == [0.25] * 8
    x = torch.randn(2, 6, 8)
    cos, sin, proj = model(x)
    angles = torch.arange(6)[:, None] * expected_inv_freq()
    torch.testing.assert_close(cos, torch.cat([angles, angles], -1).cos())
    torch.testing.assert_close(proj, model.linear(x) * 0.5 + 0.25)


def test_buffers_follow_the_model_to_a_dtype(rotary: Path) -> None:
    model = zoo.build("rotary", registry=rotary, dtype=torch.float64)
    assert model.inv_freq.dtype == torch.float64 and model.scale.dtype == torch.float64


def test_a_meta_build_has_meta_buffers_and_a_load_recomputes_the_unsaved_ones(rotary: Path, tmp_path: Path) -> None:
    meta = zoo.build("rotary", registry=rotary, device="meta")
    assert all(b.is_meta for b in meta.buffers())
    model = zoo.build("rotary", registry=rotary)
    with torch.no_grad():
        model.scale.fill_(3.0)  # a persistent buffer's value is the saved one, not the declaration's
    zoo.save(model, tmp_path / "rotary")
    loaded = zoo.load(tmp_path / "rotary")
    assert not any(b.is_meta for b in loaded.buffers())
    assert torch.equal(loaded.inv_freq, expected_inv_freq())  # recomputed: no file holds it
    assert loaded.scale.tolist() == [3.0] * 8
    x = torch.randn(1, 4, 8)
    for ours, theirs in zip(loaded(x), model(x), strict=True):
        torch.testing.assert_close(ours, theirs)
    half = zoo.load(tmp_path / "rotary", dtype=torch.float16)
    assert half.inv_freq.dtype == torch.float16 and torch.equal(half.inv_freq, expected_inv_freq().half())


def test_a_load_builds_once_and_places_the_buffers_it_computed(write_toml: Callable[..., Path], tmp_path: Path) -> None:
    # A declared non-persistent buffer gets its value in the load's own (meta) build: no second build
    # for it (a 32-layer Llama's load took twice as long), and it goes where the model goes.
    built = []

    class Counted(torch.nn.Linear):
        def __init__(self, in_features: int, out_features: int) -> None:
            built.append(self)
            super().__init__(in_features, out_features)

    class Plugin:
        @zoo.hookimpl
        def zoo_blocks(self, register: Callable[..., None]) -> None:
            register("Counted", Counted)

    path = write_toml(ROTARY.replace('type = "Linear"', 'type = "Counted"'))
    with zoo.isolated_registry(Plugin()):
        model = zoo.build("rotary", registry=path)
        zoo.save(model, tmp_path / "rotary")
        built.clear()
        loaded = zoo.load(tmp_path / "rotary", dtype=torch.float64)
        assert len(built) == 1
        assert loaded.inv_freq.dtype == torch.float64 and torch.equal(loaded.inv_freq, expected_inv_freq().double())
        assert loaded.exponents.dtype == torch.float64  # a floating buffer follows dtype=, as the weights do
        on_meta = zoo.load(tmp_path / "rotary", device="meta")
        assert on_meta.inv_freq.is_meta and on_meta.linear.weight.is_meta


def test_a_saved_declaration_rebuilds_its_buffers(rotary: Path) -> None:
    model = zoo.build("rotary", registry=rotary, dim=4)
    info = builder.build_info(model)
    assert info is not None
    assert info.declaration["buffers"]["inv_freq"] == {"op": "div", "in": [1.0, "powers"], "persistent": False}
    again = builder.build_declaration("rotary", info.declaration)
    assert torch.equal(again.inv_freq, expected_inv_freq(4))
    assert list(again.state_dict()) == list(model.state_dict())


def test_zoo_check_runs_a_declaration_with_buffers(rotary: Path) -> None:
    assert check.check_registry(builder.registry_for(rotary), origins={USER}) == []


@pytest.mark.parametrize(
    ("buffers", "message"),
    [
        (
            'huge = { op = "arange", end = 1000000000000 }',
            "op 'arange' raised ValueError: arange(start=0, end=1000000000000, step=1) would hold 1e+12 elements",
        ),
        (
            'a = { op = "arange", end = 100000 }\nb = { op = "arange", end = 100000 }\n'
            'outer = { op = "mul", in = ["a[:, None]", "b[None, :]"] }',
            "buffer 'outer' would hold 10,000,000,000 elements of shape [100000, 100000]; a declared buffer holds",
        ),
        (
            'a = { op = "arange", end = 3 }\nb = { op = "arange", end = 4 }\nc = { op = "mul", in = ["a", "b"] }',
            "buffers.c: op 'mul' raised RuntimeError:",
        ),
        ('b = { op = "mul", in = ["x", 2.0] }', "`in` refers to 'x', which is no input, parameter or earlier child"),
        ('b = { op = "mul", in = ["c", 2.0] }\nc = { op = "ones", shape = [2] }', "`in` refers to 'c'"),
        ('b = { op = "ones", shape = [2], persistent = "no" }', "`persistent` must be true or false"),
        ('b = { op = "ones", shape = [2], when = true }', "a buffer is computed once, at build: it takes no `when`"),
        ('b = { dtype = "float32" }', "a buffer is a value"),
        ('b = { op = "chunk", in = "a", chunks = 2 }\n', "`in` refers to 'a'"),
    ],
)
def test_buffer_mistakes_are_refused_where_written_before_anything_is_allocated(
    write_toml: Callable[..., Path], buffers: str, message: str
) -> None:
    path = write_toml(f'[b]\ninput = [1, 2]\n[b.buffers]\n{buffers}\n[b.layers]\ny = {{ op = "identity" }}\n')
    started = time.perf_counter()
    with pytest.raises(zoo.ZooError) as caught:
        zoo.build("b", registry=path)
    assert time.perf_counter() - started < 5  # nothing of 10**12 elements was made
    assert message in str(caught.value), str(caught.value)
    assert ".toml:" in str(caught.value)


def test_zoo_check_reports_a_buffer_too_large_with_exit_2(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml('[b]\ninput = [1, 2]\nbuffers = { huge = { op = "zeros", shape = [1000000, 1000000] } }\n'
                      '[b.layers]\ny = { op = "identity" }\n')  # fmt: skip
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "zeros would hold 1e+12 elements" in err and f"{path}:3" in err


def test_a_constant_buffer_from_an_expression(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[c]\nargs = { w = [0.5, 0.25] }\n"
        'buffers = { weights = "${w + [1.0]}", eye = { op = "tensor", data = [[1, 0], [0, 1]] } }\n'
        '[c.layers]\ny = { op = "mul", in = ["x", "weights"] }\n'
    )
    model = zoo.build("c", registry=path)
    assert model.weights.tolist() == [0.5, 0.25, 1.0] and model.eye.dtype == torch.int64
    assert model(torch.ones(3)).tolist() == [0.5, 0.25, 1.0]


@pytest.fixture
def mesh() -> Iterator[object]:
    """A gloo process group of one rank in this process, and its mesh; torn down afterwards."""
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_sharded_builds_and_loads_fill_declared_buffers(rotary: Path, mesh: object, tmp_path: Path) -> None:
    no_init = rotary.read_text().replace('bias = { shape = ["${dim}"], init = { fn = "constant", val = 0.25 } }',
                                         'bias = { op = "full", shape = ["${dim}"], fill_value = 0.25 }')  # fmt: skip
    rotary.write_text(no_init)  # zoo.build(mesh=) refuses init rules; a buffer's op is no init rule
    sharded = zoo.build("rotary", registry=rotary, mesh=mesh)
    assert torch.equal(sharded.inv_freq, expected_inv_freq()) and sharded.scale.tolist() == [0.5] * 8
    model = zoo.build("rotary", registry=rotary)
    zoo.save(model, tmp_path / "rotary")
    loaded = zoo.load(tmp_path / "rotary", mesh=mesh, registry=rotary)
    assert torch.equal(loaded.inv_freq, expected_inv_freq()) and loaded.bias.tolist() == [0.25] * 8
