"""zoo's default plugin: torch.nn's layers, the seed's blocks, registry.toml, architectures/ and init functions.

It goes through the same hooks as any third-party plugin. It registers everything by import
path ("torch.nn:Linear"), so discovery knows every name without importing torch (~1.5 s) or the
blocks: `zoo list` and `zoo --help` do not wait for them. Each is imported where it is first used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo._plugins.hookspecs import hookimpl

REGISTRY_TOML = Path(__file__).parent.parent / "registry.toml"  # the repository's, shipped in the wheel
ARCHITECTURES = (
    Path(__file__).parent.parent / "architectures"
)  # one file per family: hf_llama.toml, tv_vit_b_16.toml, …

# torch.nn's public nn.Module classes (nn.Module itself aside), as torch 2.13 has them: the names
# must be known before torch is imported. tests/plugins/test_builtin.py holds this list to the
# installed torch's; an older torch that lacks one says so where it is used.
TORCH_NN = """
AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveLogSoftmaxWithLoss AdaptiveMaxPool1d AdaptiveMaxPool2d
AdaptiveMaxPool3d AlphaDropout AvgPool1d AvgPool2d AvgPool3d BCELoss BCEWithLogitsLoss BatchNorm1d BatchNorm2d
BatchNorm3d Bilinear CELU CTCLoss ChannelShuffle CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d
ConstantPad3d Container Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d CosineEmbeddingLoss
CosineSimilarity CrossEntropyLoss CrossMapLRN2d DataParallel Dropout Dropout1d Dropout2d Dropout3d ELU Embedding
EmbeddingBag FeatureAlphaDropout Flatten Fold FractionalMaxPool2d FractionalMaxPool3d GELU GLU GRU GRUCell
GaussianNLLLoss GroupNorm Hardshrink Hardsigmoid Hardswish Hardtanh HingeEmbeddingLoss HuberLoss Identity
InstanceNorm1d InstanceNorm2d InstanceNorm3d KLDivLoss L1Loss LPPool1d LPPool2d LPPool3d LSTM LSTMCell LayerNorm
LazyBatchNorm1d LazyBatchNorm2d LazyBatchNorm3d LazyConv1d LazyConv2d LazyConv3d LazyConvTranspose1d
LazyConvTranspose2d LazyConvTranspose3d LazyInstanceNorm1d LazyInstanceNorm2d LazyInstanceNorm3d LazyLinear LeakyReLU
Linear LinearCrossEntropyLoss LocalResponseNorm LogSigmoid LogSoftmax MSELoss MarginRankingLoss MaxPool1d MaxPool2d
MaxPool3d MaxUnpool1d MaxUnpool2d MaxUnpool3d Mish ModuleDict ModuleList MultiLabelMarginLoss MultiLabelSoftMarginLoss
MultiMarginLoss MultiheadAttention NLLLoss NLLLoss2d PReLU PairwiseDistance ParameterDict ParameterList PixelShuffle
PixelUnshuffle PoissonNLLLoss RMSNorm RNN RNNBase RNNCell RNNCellBase RReLU ReLU ReLU6 ReflectionPad1d ReflectionPad2d
ReflectionPad3d ReplicationPad1d ReplicationPad2d ReplicationPad3d SELU Sequential SiLU Sigmoid SmoothL1Loss
SoftMarginLoss Softmax Softmax2d Softmin Softplus Softshrink Softsign SyncBatchNorm Tanh Tanhshrink Threshold
Transformer TransformerDecoder TransformerDecoderLayer TransformerEncoder TransformerEncoderLayer TripletMarginLoss
TripletMarginWithDistanceLoss Unflatten Unfold Upsample UpsamplingBilinear2d UpsamplingNearest2d ZeroPad1d ZeroPad2d
ZeroPad3d
""".split()

# zoo._plugins.blocks' SEED_BLOCKS and ZOO_BLOCKS, and zoo._plugins.ops' functions, by the names
# they have in their modules (the test holds them equal). An op keeps a Python builtin's name
# (`pow`, `slice`) though its function has a trailing underscore.
SEED_BLOCKS = ("MySequential", "CenteredLayer", "FixedHiddenMLP", "MyLinear", "LazyMyLinear")
ZOO_BLOCKS = ("Chain",)
OPS = """
add sub mul div pow_ scale matmul cat stack sin cos exp log sqrt rsqrt neg abs_ clamp eq ne lt le gt ge logical_and
logical_or logical_not where masked_fill arange tensor zeros ones full zeros_like ones_like full_like positions to
type_as size reshape view flatten unflatten unsqueeze squeeze transpose permute expand repeat_interleave contiguous
split chunk identity select narrow slice_ gather index_select relu gelu silu sigmoid tanh softmax mean sum_ layer_norm
rms_norm embedding dropout drop_path adaptive_avg_pool2d max_pool2d avg_pool2d interpolate sdpa
""".split()

# torch.nn.init's in-place initialisers, by the name used in `init` rules.
TORCH_INITS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@hookimpl
def zoo_blocks(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    for name in TORCH_NN:
        register(name, f"torch.nn:{name}")
    for name in (*SEED_BLOCKS, *ZOO_BLOCKS):
        register(name, f"zoo._plugins.blocks:{name}")


@hookimpl
def zoo_registries(register: Callable[[str | Path], None]) -> None:
    register(REGISTRY_TOML)
    for path in sorted(ARCHITECTURES.glob("*.toml")):
        register(path)


@hookimpl
def zoo_initializers(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    for name in TORCH_INITS:
        register(name.rstrip("_"), f"torch.nn.init:{name}")
    register("my_init", "zoo._plugins.blocks:my_init")


@hookimpl
def zoo_ops(register: Callable[[str, Callable[..., Any] | str], None]) -> None:
    for attribute in OPS:
        register(attribute.rstrip("_"), f"zoo._plugins.ops:{attribute}")
