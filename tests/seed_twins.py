"""The seed's hand-written PyTorch, as written in d2l's chapter: the twins zoo's models must match.

Kept as the seed has them (its bugs included), so the tests show where zoo mends them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.out = nn.Linear(256, 10)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(X)))


class MySequential(nn.Module):
    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        for idx, module in enumerate(args):
            self._modules[str(idx)] = module

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        for block in self._modules.values():
            X = block(X)
        return X


class FixedHiddenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rand_weight = torch.randn(20, 20, requires_grad=False)  # the seed's plain attribute
        self.linear = nn.Linear(20, 20)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.linear(X)
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        X = self.linear(X)
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


class NestMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.linear = nn.Linear(32, 16)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.linear(self.net(X))


class CenteredLayer(nn.Module):
    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X - X.mean()


class MyLinear(nn.Module):
    def __init__(self, in_units: int, units: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_units, units))
        self.bias = nn.Parameter(torch.randn(units))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        linear = torch.matmul(X, self.weight.data) + self.bias.data  # the seed's .data: no gradient
        return F.relu(linear)


def chimera() -> nn.Module:
    return nn.Sequential(NestMLP(), nn.Linear(16, 20), FixedHiddenMLP())


def tied_mlp() -> nn.Module:
    shared = nn.Linear(8, 8)
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.LazyLinear(1))


TWINS = {
    "mlp": MLP,
    "mlp_sequential": lambda: nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)),
    "my_sequential_mlp": lambda: MySequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10)),
    "fixed_hidden_mlp": FixedHiddenMLP,
    "nest_mlp": NestMLP,
    "chimera": chimera,
    "centered_mlp": lambda: nn.Sequential(nn.Linear(8, 128), CenteredLayer()),
    "my_linear_mlp": lambda: nn.Sequential(MyLinear(5, 3), MyLinear(3, 1)),
    "tied_mlp": tied_mlp,
    "lazy_mlp": lambda: nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10)),
}
