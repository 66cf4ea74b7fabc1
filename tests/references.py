"""The real models zoo's well-known architectures are held against: torchvision's and transformers' own code.

torchvision 0.28.0's compiled ops do not load against the CPU torch 2.13.0, but its model files
are plain Python. `make setup` downloads the wheel (`pip download`, never installed) and unpacks
it under .venv/wheels; `torchvision_models()` imports alexnet.py, resnet.py, googlenet.py,
densenet.py, vgg.py, mobilenetv2.py, convnext.py and vision_transformer.py from there under a
private package name, without running torchvision/__init__.py (which loads the compiled ops), and
`torchvision_ops()` the pure-Python ops they use (ops/misc.py, ops/stochastic_depth.py), without
ops/__init__.py (compiled ops again). Only what fails to load is stubbed: `utils` (it imports PIL
for drawing) and `transforms` (PIL again), of which the model files use a no-op usage logger,
`_make_ntuple` (copied) and the preprocessing presets named in their pretrained-weights metadata.
Everything the models are made of (their classes, constructors, initialisation, forward) is
torchvision's own code.

GPT-2, Llama and BERT come from transformers, installed by the `test` extra next to torch 2.13.0
(constraints.txt pins torch). Nothing is downloaded at test time: the references build with random
weights from their configs.
"""

from __future__ import annotations

import collections.abc
import importlib
import itertools
import sys
import types
from functools import cache
from pathlib import Path
from typing import Any

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TORCHVISION_VERSION = "0.28.0"
# `make setup` unpacks the wheel here; ZOO_TORCHVISION_DIR points elsewhere (a folder holding torchvision/).
TORCHVISION_DIR = ROOT / ".venv" / "wheels" / f"torchvision-{TORCHVISION_VERSION}"
# A private name, so that nothing else that imports or probes `torchvision` finds this partial copy.
_PACKAGE = "_zoo_reference_torchvision"


class ReferenceMissing(RuntimeError):
    """A reference is not installed: run `make setup`."""


def _torchvision_root() -> Path:
    import os

    root = Path(os.environ.get("ZOO_TORCHVISION_DIR", TORCHVISION_DIR)) / "torchvision"
    if not (root / "models" / "resnet.py").is_file():
        raise ReferenceMissing(
            f"torchvision {TORCHVISION_VERSION}'s model files are not at {root}: run `make setup`, which downloads "
            f"the wheel (pip download torchvision=={TORCHVISION_VERSION} --no-deps) and unpacks it there"
        )
    return root


def _package(name: str, path: Path | None) -> types.ModuleType:
    """An empty package whose submodules import from `path`: its __init__.py is never run."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path is not None else []
    module.__package__ = name
    sys.modules[name] = module
    return module


class _ImageClassificationPreset:
    """Stands in for torchvision.transforms._presets.ImageClassification (PIL-bound): metadata only."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class _InterpolationMode:
    """Stands in for torchvision.transforms.InterpolationMode, named in ViT's weights metadata only."""

    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _make_ntuple(x: Any, n: int) -> tuple[Any, ...]:
    """torchvision.utils._make_ntuple, copied (torchvision/utils.py imports PIL)."""
    if isinstance(x, collections.abc.Iterable):
        return tuple(x)
    return tuple(itertools.repeat(x, n))


@cache
def _torchvision_package() -> Path:
    """The private package, its stubs in place; the root of the unpacked wheel's torchvision/."""
    root = _torchvision_root()
    _package(_PACKAGE, root)
    _package(f"{_PACKAGE}.models", root / "models")
    _package(f"{_PACKAGE}.ops", root / "ops")
    utils = types.ModuleType(f"{_PACKAGE}.utils")
    utils._log_api_usage_once = lambda obj: None  # type: ignore[attr-defined]  # telemetry only
    utils._make_ntuple = _make_ntuple  # type: ignore[attr-defined]
    sys.modules[utils.__name__] = utils
    _package(f"{_PACKAGE}.transforms", None)
    presets = types.ModuleType(f"{_PACKAGE}.transforms._presets")
    presets.ImageClassification = _ImageClassificationPreset  # type: ignore[attr-defined]
    presets.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    sys.modules[presets.__name__] = presets
    return root


@cache
def torchvision_models() -> types.SimpleNamespace:
    """torchvision 0.28.0's model modules, imported by path from the wheel.

    Returns:
        A namespace with the modules `alexnet`, `resnet`, `googlenet`, `densenet`, `vgg`,
        `mobilenetv2`, `convnext` and `vision_transformer`.

    Raises:
        ReferenceMissing: the unpacked wheel is not there.
    """
    _torchvision_package()
    names = ("alexnet", "resnet", "googlenet", "densenet", "vgg", "mobilenetv2", "convnext", "vision_transformer")
    return types.SimpleNamespace(**{n: importlib.import_module(f"{_PACKAGE}.models.{n}") for n in names})


@cache
def torchvision_ops() -> types.SimpleNamespace:
    """torchvision 0.28.0's pure-Python ops the models use: `misc` and `stochastic_depth`."""
    _torchvision_package()
    names = ("misc", "stochastic_depth")
    return types.SimpleNamespace(**{n: importlib.import_module(f"{_PACKAGE}.ops.{n}") for n in names})


def tv_alexnet() -> nn.Module:
    """torchvision.models.alexnet(), random weights."""
    model: nn.Module = torchvision_models().alexnet.alexnet()
    return model


def tv_resnet18() -> nn.Module:
    """torchvision.models.resnet18(), random weights."""
    model: nn.Module = torchvision_models().resnet.resnet18()
    return model


def tv_googlenet() -> nn.Module:
    """torchvision.models.googlenet(aux_logits=False, init_weights=True), random weights.

    init_weights=True is torchvision's own truncated-normal initialisation (its default for
    googlenet without weights is the same, with a FutureWarning asking to say so).
    """
    model: nn.Module = torchvision_models().googlenet.googlenet(aux_logits=False, init_weights=True)
    return model


def tv_densenet121() -> nn.Module:
    """torchvision.models.densenet121(), random weights."""
    model: nn.Module = torchvision_models().densenet.densenet121()
    return model


def tv_vgg11() -> nn.Module:
    """torchvision.models.vgg11(), random weights."""
    model: nn.Module = torchvision_models().vgg.vgg11()
    return model


def tv_mobilenet_v2() -> nn.Module:
    """torchvision.models.mobilenet_v2(), random weights."""
    model: nn.Module = torchvision_models().mobilenetv2.mobilenet_v2()
    return model


def tv_convnext_tiny() -> nn.Module:
    """torchvision.models.convnext_tiny(), random weights (stochastic depth 0.1, as torchvision sets it)."""
    model: nn.Module = torchvision_models().convnext.convnext_tiny()
    return model


def tv_vit_b_16() -> nn.Module:
    """torchvision.models.vit_b_16(), random weights."""
    model: nn.Module = torchvision_models().vision_transformer.vit_b_16()
    return model


TORCHVISION = {
    "tv_alexnet": tv_alexnet,
    "tv_resnet18": tv_resnet18,
    "tv_googlenet": tv_googlenet,
    "tv_densenet121": tv_densenet121,
    "tv_vgg11": tv_vgg11,
    "tv_mobilenet_v2": tv_mobilenet_v2,
    "tv_convnext_tiny": tv_convnext_tiny,
    "tv_vit_b_16": tv_vit_b_16,
}


def gpt2_config(**overrides: Any) -> Any:
    """transformers' GPT2Config: GPT-2 small unless overridden.

    A smaller vocabulary gets its last id as the begin/end token (GPT-2's 50256 would lie outside it).
    """
    if "vocab_size" in overrides:
        last = overrides["vocab_size"] - 1
        overrides = {"bos_token_id": last, "eos_token_id": last, **overrides}
    try:
        from transformers import GPT2Config
    except ImportError as err:
        raise ReferenceMissing("transformers is not installed: run `make setup` (it is in the `test` extra)") from err
    return GPT2Config(**overrides)


def hf_gpt2(**overrides: Any) -> nn.Module:
    """transformers' GPT2LMHeadModel with GPT2Config(**overrides), random weights, lm_head tied to wte."""
    from transformers import GPT2LMHeadModel

    model: nn.Module = GPT2LMHeadModel(gpt2_config(**overrides))
    return model


def llama_config(**overrides: Any) -> Any:
    """transformers' LlamaConfig: its defaults (Llama 2 7B's sizes) unless overridden."""
    try:
        from transformers import LlamaConfig
    except ImportError as err:
        raise ReferenceMissing("transformers is not installed: run `make setup` (it is in the `test` extra)") from err
    return LlamaConfig(**overrides)


def hf_llama(**overrides: Any) -> nn.Module:
    """transformers' LlamaForCausalLM with LlamaConfig(**overrides), random weights."""
    from transformers import LlamaForCausalLM

    model: nn.Module = LlamaForCausalLM(llama_config(**overrides))
    return model


def bert_config(**overrides: Any) -> Any:
    """transformers' BertConfig: BERT-base unless overridden."""
    try:
        from transformers import BertConfig
    except ImportError as err:
        raise ReferenceMissing("transformers is not installed: run `make setup` (it is in the `test` extra)") from err
    return BertConfig(**overrides)


def hf_bert(**overrides: Any) -> nn.Module:
    """transformers' BertModel (with its pooler) with BertConfig(**overrides), random weights."""
    from transformers import BertModel

    model: nn.Module = BertModel(bert_config(**overrides))
    return model
