"""d2l's convolutional blocks, lazy-friendly: input channels are inferred on the first forward.

Shapes in trailing comments: B batch, C channels, H x W the feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def vgg_block(num_convs: int, out_channels: int) -> nn.Sequential:
    """d2l's VGG block: `num_convs` 3x3 convolutions with ReLU, then a 2x2 max-pool that halves H and W."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.LazyConv2d(out_channels, kernel_size=3, padding=1), nn.ReLU()]
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def nin_block(
    out_channels: int,
    kernel_size: int | tuple[int, int],
    strides: int | tuple[int, int],
    padding: int | tuple[int, int],
) -> nn.Sequential:
    """d2l's NiN block: one spatial convolution, then two 1x1 convolutions acting as a per-pixel MLP."""
    return nn.Sequential(
        nn.LazyConv2d(out_channels, kernel_size, strides, padding),
        nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1),
        nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1),
        nn.ReLU(),
    )


class Residual(nn.Module):
    """d2l's residual block: two 3x3 conv + batch-norm layers, plus the input (through a 1x1 conv when shapes change).

    Args:
        num_channels: output channels.
        use_1x1conv: pass the input through a 1x1 convolution, needed when channels or strides change.
        strides: stride of the first convolution (2 halves H and W).
    """

    def __init__(self, num_channels: int, use_1x1conv: bool = False, strides: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        # None keeps d2l's state-dict keys: conv3 exists only when it has parameters
        self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))  # (B, C, H / strides, W / strides)
        Y = self.bn2(self.conv2(Y))  # (B, C, H / strides, W / strides)
        if self.conv3 is not None:
            X = self.conv3(X)  # the shortcut takes the same shape as Y
        return F.relu(Y + X)


def resnet_block(num_channels: int, num_residuals: int, first_block: bool = False) -> nn.Sequential:
    """d2l's ResNet stage: `num_residuals` Residual blocks; all but the first stage start by halving H and W."""
    blocks: list[nn.Module] = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels))
    return nn.Sequential(*blocks)


BLOCKS = (vgg_block, nin_block, Residual, resnet_block)
