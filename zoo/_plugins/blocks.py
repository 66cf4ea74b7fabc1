"""The seed's custom blocks (d2l, "Deep Learning Computation"), mended where the seed is wrong."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter


class MySequential(nn.Module):
    """The seed's hand-made Sequential: children in `_modules`, applied in insertion order.

    Takes modules positionally, or one OrderedDict of named modules (as nn.Sequential does).
    """

    chains_children = True  # forward runs the children in order: zoo chains, plans and draws it as a Sequential

    def __init__(self, *args: nn.Module) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        for block in self._modules.values():  # not children(): a block added twice runs twice
            if block is not None:
                X = block(X)
        return X


class CenteredLayer(nn.Module):
    """A layer with no parameters: subtracts the mean (the seed's `__init_` typo mended)."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X - X.mean()


class FixedHiddenMLP(nn.Module):
    """Constant random weights, a reused Linear, and Python control flow in forward.

    The seed keeps `rand_weight` as a plain attribute, which state_dict() skips: a reloaded
    model would draw new constants and give other outputs. Here it is a persistent buffer.
    """

    rand_weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("rand_weight", torch.randn(20, 20))  # constant: no gradient, saved
        self.linear = nn.Linear(20, 20)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.linear(X)
        X = F.relu(torch.mm(X, self.rand_weight) + 1)
        X = self.linear(X)  # the same Linear again: two layers sharing parameters
        while X.abs().sum() > 1:
            X /= 2  # in place, as the seed: autograd records it, and nothing saved for backward reads X
        return X.sum()


class MyLinear(nn.Module):
    """A fully connected layer with ReLU, from raw parameters.

    The seed multiplies by `self.weight.data`, which cuts the gradient: its parameters
    would never train. Here forward uses the parameters themselves.
    """

    def __init__(self, in_units: int, units: int) -> None:
        super().__init__()
        self.in_units = in_units
        self.units = units
        self.weight = nn.Parameter(torch.empty(in_units, units))
        self.bias = nn.Parameter(torch.empty(units))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Standard normal, drawn weight then bias: the same numbers as the seed's torch.randn.
        with torch.no_grad():
            self.weight.normal_()
            self.bias.normal_()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.matmul(X, self.weight) + self.bias)

    def extra_repr(self) -> str:
        return f"in_units={self.in_units}, units={self.units}"


class LazyMyLinear(LazyModuleMixin, MyLinear):
    """MyLinear whose `in_units` is inferred from the first input; becomes a MyLinear."""

    cls_to_become = MyLinear
    weight: UninitializedParameter  # type: ignore[assignment]
    bias: UninitializedParameter  # type: ignore[assignment]

    def __init__(self, units: int) -> None:
        super().__init__(0, units)
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_units != 0:
            super().reset_parameters()

    def initialize_parameters(self, X: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.in_units = X.shape[-1]
                self.weight.materialize((self.in_units, self.units))
                self.bias.materialize((self.units,))
                self.reset_parameters()


def my_init(tensor: torch.Tensor, low: float = -10.0, high: float = 10.0, keep_above: float = 5.0) -> torch.Tensor:
    """d2l's custom init: uniform in [low, high], then zero every entry with |w| < keep_above."""
    with torch.no_grad():
        tensor.uniform_(low, high)
        tensor.mul_(tensor.abs() >= keep_above)
    return tensor


SEED_BLOCKS = (MySequential, CenteredLayer, FixedHiddenMLP, MyLinear, LazyMyLinear)


# --- zoo's own container -----------------------------------------------------------------------


class Chain(nn.Sequential):
    """A Sequential whose blocks take more than one value: the first passes through them, the rest go to each.

    A repeated child of a dataflow block that takes several values (`in = ["x", "cos", "sin",
    "mask"]`, Llama's decoder layers) becomes a Chain: `layers.0`, `layers.1`, … as nn.Sequential
    names them, called `x = layer(x, cos, sin, mask)` in turn.
    """

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, *args, **kwargs)
        return x


ZOO_BLOCKS = (Chain,)
