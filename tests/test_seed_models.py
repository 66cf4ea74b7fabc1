"""The seed's models, built by zoo, against the seed's hand-written PyTorch twins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from tests import seed_twins
from zoo._plugins import blocks

INPUTS = {"centered_mlp": (4, 8), "my_linear_mlp": (2, 5)}
LAZY = {"tied_mlp", "lazy_mlp"}


def _pair(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(zoo's model, the twin), both made right after `torch.manual_seed(seed)`, and an input."""
    shape = INPUTS.get(name, (2, 20))
    X = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 1))
    torch.manual_seed(seed)
    twin = seed_twins.TWINS[name]()
    if name in LAZY:
        twin(X)  # torch's own deferred initialisation: the first forward
    torch.manual_seed(seed)
    model = zoo.build(name, input_shape=shape)
    return model, twin, X


def _twin_state(twin: nn.Module) -> dict[str, torch.Tensor]:
    """The twin's state, plus FixedHiddenMLP's rand_weight, which the seed keeps out of state_dict."""
    state = dict(twin.state_dict())
    for prefix, module in twin.named_modules():
        if isinstance(module, seed_twins.FixedHiddenMLP):
            state[f"{prefix}.rand_weight" if prefix else "rand_weight"] = module.rand_weight
    return state


@pytest.mark.parametrize("name", sorted(seed_twins.TWINS))
def test_same_state_dict_keys_as_the_seed(name: str) -> None:
    model, twin, _ = _pair(name)
    assert list(model.state_dict()) == list(_twin_state(twin)) or set(model.state_dict()) == set(_twin_state(twin))


def test_chimera_keys_are_the_seeds_plus_the_rand_weight_buffer() -> None:
    model = zoo.build("chimera")
    seed_keys = set(seed_twins.chimera().state_dict())
    assert set(model.state_dict()) == seed_keys | {"2.rand_weight"}


@pytest.mark.parametrize("name", sorted(seed_twins.TWINS))
def test_same_seed_gives_the_same_parameters_and_outputs(name: str) -> None:
    model, twin, X = _pair(name)
    theirs = _twin_state(twin)
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    if name == "my_linear_mlp":  # the seed's .data forward gives the same values, only no gradient
        assert torch.equal(model(X), twin(X))
    else:
        assert torch.equal(model(X), twin(X))


@pytest.mark.parametrize("name", sorted(seed_twins.TWINS))
def test_same_weights_give_the_same_outputs(name: str) -> None:
    model, twin, X = _pair(name, seed=3)
    torch.manual_seed(99)  # the zoo model now differs from the twin ...
    for p in model.parameters():
        nn.init.normal_(p)
    model.load_state_dict(_twin_state(twin))  # ... until it takes the twin's weights
    assert torch.equal(model(X), twin(X))


def test_fixed_hidden_mlp_keeps_its_constant_through_state_dict() -> None:
    torch.manual_seed(0)
    model = zoo.build("fixed_hidden_mlp")
    X = torch.rand(2, 20)
    torch.manual_seed(1)
    clone = zoo.build("fixed_hidden_mlp")
    assert not torch.equal(model(X), clone(X))
    clone.load_state_dict(model.state_dict())
    assert torch.equal(model(X), clone(X))  # the seed's version would differ: rand_weight is not saved
    assert not model.rand_weight.requires_grad
    assert "rand_weight" not in dict(model.named_parameters())


def test_chimera_trains_through_its_loop() -> None:
    torch.manual_seed(0)
    model, twin = zoo.build("chimera"), seed_twins.chimera()
    state = dict(twin.state_dict()) | {"2.rand_weight": twin[2].rand_weight}
    model.load_state_dict(state)
    X = torch.rand(2, 20)
    model(X).backward()
    twin(X).backward()
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert ours.grad is not None and torch.equal(ours.grad, theirs.grad), name


def test_my_linear_trains_where_the_seeds_does_not() -> None:
    torch.manual_seed(0)
    ours, seeds = zoo.build("MyLinear", in_units=5, units=3), seed_twins.MyLinear(5, 3)
    ours.load_state_dict(seeds.state_dict())
    X = torch.rand(4, 5)
    ours(X).sum().backward()
    assert ours.weight.grad is not None and ours.weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="does not require grad"):
        seeds(X).sum().backward()  # .data cut the graph: nothing to differentiate


def test_centered_layer_centres() -> None:
    layer = zoo.build("CenteredLayer")
    assert torch.equal(layer(torch.tensor([1.0, 2, 3, 4, 5])), torch.tensor([-2.0, -1, 0, 1, 2]))
    Y = zoo.build("centered_mlp")(torch.rand(4, 8))
    assert abs(Y.mean().item()) < 1e-6


def test_tied_mlp_shares_one_layer_and_its_gradient() -> None:
    model = zoo.build("tied_mlp")
    assert model[2] is model[4]
    assert model[2].weight is model[4].weight
    model(torch.rand(2, 20)).sum().backward()
    assert model[2].weight.grad is model[4].weight.grad
    table = zoo.summary(model)
    assert table.total_params == sum(p.numel() for p in model.parameters())  # the shared layer once
    assert table.total_params == 20 * 8 + 8 + 8 * 8 + 8 + 8 + 1


def test_lazy_my_linear_becomes_my_linear_with_the_same_draws() -> None:
    torch.manual_seed(0)
    model = zoo.build("lazy_my_linear_mlp", input_shape=(2, 5))
    torch.manual_seed(0)
    twin = nn.Sequential(blocks.MyLinear(5, 3), blocks.MyLinear(3, 1))
    assert [type(m).__name__ for m in model] == ["MyLinear", "MyLinear"]
    assert model[0].in_units == 5 and model[1].in_units == 3
    for key, value in twin.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_mlp_hidden_override() -> None:
    model = zoo.build("mlp", hidden=512)
    assert model.hidden.out_features == 512 and model.out.in_features == 512
    assert model(torch.rand(3, 20)).shape == (3, 10)


PARAMETER_COUNTS = {
    "mlp": 20 * 256 + 256 + 256 * 10 + 10,
    "chimera": (20 * 64 + 64) + (64 * 32 + 32) + (32 * 16 + 16) + (16 * 20 + 20) + (20 * 20 + 20),
    "centered_mlp": 8 * 128 + 128,
    "my_linear_mlp": 5 * 3 + 3 + 3 * 1 + 1,
}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_counts(name: str) -> None:
    assert zoo.summary(zoo.build(name)).total_params == PARAMETER_COUNTS[name]
