"""zoo-convnets against d2l's hand-written networks, in a registry holding only zoo and this plugin.

Needs the plugin installed (pip install -e './plugins/zoo-convnets[test]'): the registry is
found through the real `zoo` entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import zoo_convnets
from torch import nn
from zoo_convnets import vgg_block

import zoo
from zoo._build import check
from zoo._language.registry import Registry, normalize_dist


@pytest.fixture
def registry() -> Iterator[Registry]:
    """zoo's built-ins and zoo-convnets, whatever else is installed."""
    with zoo.isolated_registry("zoo-convnets") as reg:
        yield reg


# --- d2l's hand-written twins (d2l.ai, chapters 7.6 and 8.1-8.6), copied as written there ---------


def d2l_lenet(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.LazyConv2d(6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.LazyConv2d(16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.LazyLinear(120), nn.Sigmoid(),
        nn.LazyLinear(84), nn.Sigmoid(),
        nn.LazyLinear(num_classes))  # fmt: skip


def d2l_vgg_block(num_convs: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.LazyConv2d(out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def d2l_vgg11(hidden: int = 4096, num_classes: int = 10) -> nn.Sequential:
    arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    conv_blks = [d2l_vgg_block(num_convs, out_channels) for num_convs, out_channels in arch]
    return nn.Sequential(
        *conv_blks, nn.Flatten(),
        nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.LazyLinear(num_classes))  # fmt: skip


def d2l_nin_block(out_channels: int, kernel_size: int, strides: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())  # fmt: skip


def d2l_nin(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        d2l_nin_block(96, kernel_size=11, strides=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        d2l_nin_block(256, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        d2l_nin_block(384, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        d2l_nin_block(num_classes, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten())  # fmt: skip


class D2lResidual(nn.Module):
    def __init__(self, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def d2l_resnet18(num_classes: int = 10) -> nn.Sequential:
    def block(num_residuals: int, num_channels: int, first_block: bool = False) -> nn.Sequential:
        blk: list[nn.Module] = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(D2lResidual(num_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(D2lResidual(num_channels))
        return nn.Sequential(*blk)

    b1 = nn.Sequential(
        nn.LazyConv2d(64, kernel_size=7, stride=2, padding=3),
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1))  # fmt: skip
    net = nn.Sequential(b1)
    for i, b in enumerate(((2, 64), (2, 128), (2, 256), (2, 512))):
        net.add_module(f"b{i + 2}", block(*b, first_block=(i == 0)))
    net.add_module("last", nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.LazyLinear(num_classes)))
    return net


TWINS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], dict[str, int]]] = [
    ("lenet", d2l_lenet, (2, 1, 28, 28), {}),
    ("vgg11", lambda: d2l_vgg11(hidden=32), (2, 1, 32, 32), {"hidden": 32}),
    ("nin", d2l_nin, (2, 1, 96, 96), {}),
    ("resnet18", d2l_resnet18, (2, 3, 64, 64), {}),
]


# --- the plugin as installed -------------------------------------------------------------------------


def test_the_plugin_provides_its_blocks_and_models_with_provenance(registry: Registry) -> None:
    for name in ("vgg_block", "nin_block", "Residual", "resnet_block", "lenet", "vgg11", "nin", "resnet18"):
        providers = registry.providers(name)
        assert [normalize_dist(p.origin.dist) for p in providers] == ["zoo-convnets"], name
        assert providers[0].origin.version == "0.1.0"
    assert registry.resolve("vgg_block").factory is vgg_block
    for declared in ("nin_block", "Residual", "resnet_block"):  # in TOML alone: dataflow, `when`, `repeat`
        assert registry.resolve(declared).entry is not None, declared
    toml = Path(zoo_convnets.__file__).with_name("registry.toml")
    line = toml.read_text().splitlines().index("[resnet18]") + 1
    assert zoo.spec("resnet18").source == f"{toml}:{line}"


def test_every_declaration_passes_zoo_check(registry: Registry) -> None:
    origins = {p.origin.dist for p in registry.providers("lenet")}
    assert check.check_registry(registry, origins=origins) == []


def test_declarations_name_the_plugins_own_blocks_qualified(registry: Registry) -> None:
    layers = zoo.spec("vgg11").declaration["layers"]
    assert layers[0] == {"type": "zoo-convnets:vgg_block", "num_convs": 1, "out_channels": 64}
    assert layers[5] == {"type": "Flatten"}  # a built-in stays bare


@pytest.mark.parametrize(("name", "twin", "shape", "overrides"), TWINS, ids=[t[0] for t in TWINS])
def test_each_model_is_d2ls_network(
    registry: Registry, name: str, twin: Callable[[], nn.Module], shape: tuple[int, ...], overrides: dict[str, int]
) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, input_shape=shape, **overrides)
    reference = twin()
    reference(torch.zeros(shape))  # materialise the twin's lazy layers
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    reference.load_state_dict(model.state_dict())
    model.eval(), reference.eval()
    X = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(model(X), reference(X))


def test_lenet_builds_at_its_declared_input(registry: Registry) -> None:
    model = zoo.build("lenet")
    assert zoo.spec("lenet").input_shape == (1, 1, 28, 28)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert sum(p.numel() for p in model.parameters()) == 61_706  # d2l's LeNet on 28x28 grey images


def test_num_classes_and_input_channels_follow_the_caller(registry: Registry) -> None:
    model = zoo.build("resnet18", input_shape=(2, 3, 32, 32), num_classes=100).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert model[0][0].weight.shape == (64, 3, 7, 7)  # RGB inferred by the lazy stem


def test_a_misspelt_override_is_refused_with_the_nearest_name(registry: Registry) -> None:
    with pytest.raises(zoo.ArgumentError, match="has no argument 'num_class' to override. Did you mean 'num_classes'?"):
        zoo.build("resnet18", num_class=5)


def test_a_user_declaration_with_a_wrong_argument_type_names_file_and_line(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[tiny_vgg]\nlayers = [\n  { type = "vgg_block", num_convs = "2", out_channels = 8 },\n]\n')
    with pytest.raises(zoo.ArgumentError, match=rf"{path}:3: .*num_convs: vgg_block expects int, got str '2'"):
        zoo.build("tiny_vgg", registry=path)


# --- the blocks, with d2l's own shape checks ---------------------------------------------------------


def test_vgg_block_halves_the_map_and_sets_the_channels() -> None:
    block = vgg_block(2, 16)
    assert [type(m).__name__ for m in block] == ["LazyConv2d", "ReLU", "LazyConv2d", "ReLU", "MaxPool2d"]
    assert block(torch.zeros(1, 3, 8, 10)).shape == (1, 16, 4, 5)


def test_nin_block_keeps_the_channels_through_its_1x1_convolutions(registry: Registry) -> None:
    block = zoo.build("nin_block", out_channels=8, kernel_size=3, strides=1, padding=1, input_shape=(2, 3, 6, 6))
    assert block(torch.zeros(2, 3, 6, 6)).shape == (2, 8, 6, 6)
    assert [m.kernel_size for m in block if isinstance(m, nn.Conv2d)] == [(3, 3), (1, 1), (1, 1)]
    assert list(block.state_dict()) == [f"{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]  # d2l's keys


def test_residual_keeps_or_halves_the_shape_as_in_d2l(registry: Registry) -> None:
    X = torch.randn(4, 3, 6, 6)
    same = zoo.build("Residual", num_channels=3, input_shape=X.shape)
    assert same(X).shape == (4, 3, 6, 6) and not hasattr(same, "conv3")  # d2l's conv3 is None: no keys
    halving = zoo.build("Residual", num_channels=6, use_1x1conv=True, strides=2, input_shape=X.shape)
    assert halving(X).shape == (4, 6, 3, 3) and halving.conv3.stride == (2, 2)


def test_residual_adds_its_input(registry: Registry) -> None:
    block = zoo.build("Residual", num_channels=3, input_shape=(1, 3, 4, 4))
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight), nn.init.zeros_(conv.bias)
    X = torch.rand(1, 3, 4, 4)  # non-negative: ReLU(0 + X) is X
    block.eval()
    torch.testing.assert_close(block(X), X)
    with torch.no_grad():
        block.conv2.bias.fill_(1.0)  # the branch now adds something: the output is no longer X
    assert not torch.allclose(block(X), X)


def test_resnet_block_downsamples_unless_it_is_the_first(registry: Registry) -> None:
    X = torch.randn(2, 8, 8, 8)
    assert zoo.build("resnet_block", num_channels=16, num_residuals=2, input_shape=X.shape)(X).shape == (2, 16, 4, 4)
    first = zoo.build("resnet_block", num_channels=8, num_residuals=2, first_block=True, input_shape=X.shape)
    assert first(X).shape == (2, 8, 8, 8) and not any(hasattr(r, "conv3") for r in first)
    three = zoo.build("resnet_block", num_channels=16, num_residuals=3, input_shape=X.shape)
    assert [hasattr(r, "conv3") for r in three] == [True, False, False]  # only the first halves
