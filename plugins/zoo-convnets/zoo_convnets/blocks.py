"""d2l's VGG block, the one zoo-convnets block the registry language cannot say.

Its keys are flat (`0`, `2`, ... for the convs, odd indices for their ReLUs): `num_convs`
(conv, ReLU) *pairs* spliced into one Sequential, and `repeat` copies a single child. The NiN
block, the residual block and the ResNet stage are declared in registry.toml instead.

Shapes in trailing comments: B batch, C channels, H x W the feature map.
"""

from __future__ import annotations

from torch import nn


def vgg_block(num_convs: int, out_channels: int) -> nn.Sequential:
    """d2l's VGG block: `num_convs` 3x3 convolutions with ReLU, then a 2x2 max-pool that halves H and W."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.LazyConv2d(out_channels, kernel_size=3, padding=1), nn.ReLU()]  # (B, out_channels, H, W)
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # (B, out_channels, H / 2, W / 2)
    return nn.Sequential(*layers)
