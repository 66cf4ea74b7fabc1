"""zoo's default plugin names everything by import path: the names must be the ones that exist."""

from __future__ import annotations

import inspect

from torch import nn
from torch.nn import init

from zoo._language.registry import Deferred
from zoo._plugins import blocks, builtin, discovery, ops


def test_torch_nn_names_are_the_installed_torchs_module_classes() -> None:
    classes = sorted(
        name
        for name in dir(nn)
        if not name.startswith("_")
        and isinstance(getattr(nn, name), type)
        and issubclass(getattr(nn, name), nn.Module)
        and getattr(nn, name) is not nn.Module
    )
    assert sorted(builtin.TORCH_NN) == classes, "builtin.TORCH_NN is out of date for this torch: regenerate it"


def test_seed_blocks_ops_and_inits_by_name_are_the_ones_defined() -> None:
    assert builtin.SEED_BLOCKS == tuple(block.__name__ for block in blocks.SEED_BLOCKS)
    assert builtin.ZOO_BLOCKS == tuple(block.__name__ for block in blocks.ZOO_BLOCKS)
    by_name = {attribute.rstrip("_"): getattr(ops, attribute) for attribute in builtin.OPS}
    assert by_name == ops.BUILTIN_OPS, "an op in ops.BUILTIN_OPS needs its name here"
    assert all(callable(getattr(init, name)) for name in builtin.TORCH_INITS)


def test_every_builtin_registration_is_deferred_and_loads_what_it_names() -> None:
    registry, _ = discovery.discover([])
    linear = registry.providers("Linear")[0]
    assert isinstance(linear.registered, Deferred) and linear.registered.path == "torch.nn:Linear"
    assert linear.factory is nn.Linear
    assert registry.resolve("CenteredLayer").factory is blocks.CenteredLayer
    assert registry.op("add").fn is ops.add and registry.init_fn("normal_").fn is init.normal_
    assert registry.init_fn("my_init").fn is blocks.my_init
    assert not registry.load_all(registry.providers("Linear")[0].origin)  # every path names something real
    assert inspect.isclass(registry.resolve("LazyMyLinear").factory)
