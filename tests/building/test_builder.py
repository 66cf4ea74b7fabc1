"""Construction: overrides, children, shared layers, init rules, in-process blocks, registry sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo._language.registry import Registry


def test_python_blocks_build_by_name_with_keyword_arguments() -> None:
    layer = zoo.build("Linear", in_features=3, out_features=4)
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (4, 3)


def test_overrides_reach_declared_args_and_direct_arguments(write_toml: Callable[..., Path]) -> None:
    assert zoo.build("mlp_sequential", hidden=32)[0].out_features == 32
    path = write_toml('[head]\ntype = "Linear"\nin_features = 8\nout_features = 2\n')
    assert zoo.build("head", registry=path, out_features=5).out_features == 5


def test_an_entry_used_as_a_type_takes_overrides(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[wide]\ntype = "mlp"\nhidden = 64\n[twice]\nlayers = [{ type = "mlp", hidden = 16 }, "ReLU"]\n')
    assert zoo.build("wide", registry=path).hidden.out_features == 64
    assert zoo.build("twice", registry=path)[0].out.in_features == 16


def test_named_layers_keep_document_order_and_names(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[n]\n[n.layers]\nz = "ReLU"\na = { type = "Linear", in_features = 2, out_features = 2 }\n')
    model = zoo.build("n", registry=path)
    assert [name for name, _ in model.named_children()] == ["z", "a"]
    assert list(model.state_dict()) == ["a.weight", "a.bias"]


def test_layers_reach_list_taking_blocks(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[ml]\ntype = "ModuleList"\nlayers = ["ReLU", "Tanh"]\n')
    model = zoo.build("ml", registry=path)
    assert isinstance(model, nn.ModuleList) and [type(m) for m in model] == [nn.ReLU, nn.Tanh]


def test_shared_block_is_one_object_in_nested_scopes(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[s]\nshared = { t = { type = "Linear", in_features = 4, out_features = 4 } }\n'
        'layers = ["@t", { layers = ["ReLU", "@t"] }]\n'
    )
    model = zoo.build("s", registry=path)
    assert model[0] is model[1][1]
    assert zoo.summary(model).total_params == 4 * 4 + 4


def test_a_table_with_type_in_argument_position_is_a_child_block(
    builtin_only: Registry, write_toml: Callable[..., Path]
) -> None:
    @zoo.register
    class Residual(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return X + self.body(X)

    path = write_toml('[r]\ntype = "Residual"\nbody = { type = "Linear", in_features = 3, out_features = 3 }\n')
    model = zoo.build("r", registry=path)
    assert isinstance(model.body, nn.Linear)
    assert zoo.build("Residual", body=nn.Identity())(torch.ones(2)).tolist() == [2.0, 2.0]


def test_init_rules_apply_in_order(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[m]\ntype = "mlp_sequential"\n'
        'init = { "*.weight" = { fn = "constant", val = 1 }, "2.weight" = { fn = "constant", val = 42 },'
        ' "*.bias" = "zeros" }\n'
    )
    model = zoo.build("m", registry=path)
    assert (model[0].weight == 1).all() and (model[2].weight == 42).all()
    assert (model[0].bias == 0).all() and (model[2].bias == 0).all()


def test_an_init_rule_keeps_an_embeddings_padding_row_zero(write_toml: Callable[..., Path]) -> None:
    # as Embedding's own reset_parameters and transformers' _init_weights do; its gradient is zero too
    path = write_toml(
        '[m]\ntype = "Embedding"\nnum_embeddings = 6\nembedding_dim = 4\npadding_idx = 2\n'
        'init = { "weight" = { fn = "constant", val = 1 } }\n'
        '[n]\ntype = "Embedding"\nnum_embeddings = 6\nembedding_dim = 4\n'
        'init = { "weight" = { fn = "constant", val = 1 } }\n'
    )
    weight = zoo.build("m", registry=path).weight
    assert (weight[2] == 0).all() and (weight[[0, 1, 3, 4, 5]] == 1).all()
    assert (zoo.build("n", registry=path).weight == 1).all()  # no padding row: every row as the rule says


def test_normal_init_has_the_declared_spread() -> None:
    torch.manual_seed(0)
    weight = zoo.build("mlp_init_normal")[0].weight
    assert abs(weight.std().item() - 0.01) < 0.001 and abs(weight.mean().item()) < 0.001


def test_my_init_zeroes_small_weights() -> None:
    weight = zoo.build("mlp_my_init")[0].weight
    kept = weight[weight != 0]
    assert kept.abs().min() >= 5 and kept.abs().max() <= 10
    assert 0.3 < (weight == 0).float().mean().item() < 0.7  # about half of U(-10, 10) lies inside ±5


def test_init_rules_on_lazy_layers_run_once_shapes_are_known(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[l]\nlayers = [{ type = "LazyLinear", out_features = 3 }]\n'
        'init = { "*.weight" = { fn = "constant", val = 7 } }\n'
    )
    by_zoo = zoo.build("l", registry=path, input_shape=(2, 5))
    assert (by_zoo[0].weight == 7).all() and by_zoo[0].weight.shape == (3, 5)
    by_torch = zoo.build("l", registry=path)  # lazy: torch's own first forward materialises it
    by_torch(torch.rand(2, 4))
    assert (by_torch[0].weight == 7).all() and by_torch[0].weight.shape == (3, 4)


def test_register_decorator_forms_and_qualified_names(builtin_only: Registry) -> None:
    @zoo.register
    class Double(nn.Module):
        def forward(self, X: torch.Tensor) -> torch.Tensor:
            return 2 * X

    @zoo.register("triple")
    def make_triple(scale: float = 3.0) -> nn.Module:
        return zoo.build("Double")

    assert "Double" in zoo.names() and "triple" in zoo.names()
    assert zoo.build("Double")(torch.ones(1)).item() == 2
    assert isinstance(zoo.build("triple", scale=1.0), Double)
    assert isinstance(zoo.build("zoo:Linear", in_features=1, out_features=1), nn.Linear)
    with pytest.raises(zoo.UnknownNameError, match="'Linear' is not provided by 'nope'; it is provided by: zoo"):
        zoo.build("nope:Linear", in_features=1, out_features=1)


def test_registrations_do_not_leak_out_of_an_isolated_registry() -> None:
    with zoo.isolated_registry():

        @zoo.register
        class Leaky(nn.Module):
            pass

        assert "Leaky" in zoo.names()
    assert "Leaky" not in zoo.names()


def test_a_factory_that_raises_is_a_build_error_naming_the_place(
    builtin_only: Registry, write_toml: Callable[..., Path]
) -> None:
    @zoo.register
    def Broken(width: int = 1) -> nn.Module:  # noqa: N802
        raise ValueError("width must be even")

    path = write_toml('[b]\nlayers = ["ReLU", { type = "Broken", width = 3 }]\n')
    with pytest.raises(
        zoo.BuildError, match=r":2: b -> layers\[1\]: Broken\(...\) raised ValueError: width must be even"
    ):
        zoo.build("b", registry=path)


def test_zoo_registry_environment_variable(write_toml: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_toml('[from_env_a]\ntype = "ReLU"\n')
    b = write_toml('[from_env_b]\ntype = "Tanh"\n')
    monkeypatch.setenv("ZOO_REGISTRY", f"{a}{__import__('os').pathsep}{b}")
    with zoo.isolated_registry():
        pass  # isolated registries ignore ZOO_REGISTRY; the process one reads it
    from zoo._plugins import discovery

    discovery.reset()
    try:
        assert isinstance(zoo.build("from_env_a"), nn.ReLU) and isinstance(zoo.build("from_env_b"), nn.Tanh)
    finally:
        monkeypatch.delenv("ZOO_REGISTRY")
        discovery.reset()


def test_names_and_spec() -> None:
    found = zoo.names("*mlp*")
    assert found == sorted(found) and {"centered_mlp", "FixedHiddenMLP"} <= set(found)  # case-insensitive, as timm
    assert "Linear" not in found
    assert "Linear" in zoo.names("lin*")
    info = zoo.spec("mlp")
    assert info.kind == "entry" and info.origin.startswith("zoo ") and info.source.endswith("registry.toml:4")
    assert info.params == {"hidden": 256} and info.input_shape == (2, 20)
    assert info.declaration["layers"]["hidden"] == {"type": "Linear", "in_features": 20, "out_features": 256}
    assert zoo.spec("mlp", hidden=8).declaration["layers"]["out"]["in_features"] == 8
    assert zoo.spec("Linear").kind == "block"


def test_build_places_parameters(write_toml: Callable[..., Path]) -> None:
    model = zoo.build("mlp", dtype=torch.float64, device="cpu")
    assert model.hidden.weight.dtype == torch.float64 and model.hidden.weight.device.type == "cpu"


def test_build_refuses_a_dtype_or_shape_it_cannot_use() -> None:
    with pytest.raises(
        zoo.ArgumentError, match=r"dtype must be a floating-point torch.dtype .*'float16' \(pass torch.float16\)"
    ):
        zoo.build("mlp", dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(zoo.ArgumentError, match="input_shape must be a sequence of sizes such as"):
        zoo.build("mlp", input_shape="2,20")  # type: ignore[arg-type]
    with pytest.raises(zoo.ArgumentError, match="input_shape must be positive integer sizes"):
        zoo.build("mlp", input_shape=(2, 0))


def test_public_api_is_sorted_and_complete() -> None:
    assert zoo.__all__ == sorted(zoo.__all__)
    for name in zoo.__all__:
        assert hasattr(zoo, name), name


NESTED = """\
[inner]
[inner.layers]
act = { op = "relu" }
[middle]
[middle.layers]
inner = { type = "inner" }
twice = { op = "add", in = ["inner", "inner"] }
[outer]
[outer.layers]
first = { type = "middle" }
second = { type = "middle", in = "first" }
"""


def test_each_dataflow_block_is_compiled_once_and_a_later_recompile_reaches_its_children(
    write_toml: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch import fx

    compiled = []
    recompile = fx.GraphModule.recompile

    def counted(self: fx.GraphModule) -> object:
        compiled.append(self)
        return recompile(self)

    monkeypatch.setattr(fx.GraphModule, "recompile", counted)
    model = zoo.build("outer", registry=write_toml(NESTED))
    graphs = [m for m in model.modules() if isinstance(m, fx.GraphModule)]
    assert len(graphs) == 5 and len([m for m in compiled if any(m is g for g in graphs)]) == 5  # fx alone: 11
    x = torch.tensor([-1.0, 2.0])
    assert model(x).tolist() == [0.0, 8.0]
    # As fx's own: a pass that edits a child's graph in place and recompiles the root reaches the child.
    inner = model.first.inner
    for node in inner.graph.nodes:
        if node.op == "call_function":
            node.target = torch.neg
    compiled.clear()
    model.recompile()
    assert inner in compiled and model(x).tolist() == [4.0, 0.0]
