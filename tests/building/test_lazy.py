"""zoo.lazy: deferred initialisation by a meta pass, from checkpoint shapes, and its errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch.utils._python_dispatch import TorchDispatchMode

import zoo
from zoo._build import builder, lazy
from zoo._build.known_shapes import materialize_from_shapes, register_input_rule
from zoo._build.materialize import materialize
from zoo._build.meta import meta_build
from zoo._build.shape_pass import trace_shapes
from zoo._plugins.blocks import FixedHiddenMLP, MyLinear

# --- helpers -----------------------------------------------------------------------------


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def _by_torch(make: Callable[[], nn.Module], x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Torch's own deferred initialisation: the first forward, right after the seed."""
    torch.manual_seed(seed)
    model = make()
    with torch.no_grad():
        model(x)
    return model


def _by_zoo(make: Callable[[], nn.Module], *args: Any, seed: int = 0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.materialize(make(), *args, **kwargs)


def _conv_net() -> nn.Module:
    return nn.Sequential(
        nn.LazyConv2d(8, 3, groups=1),
        nn.LazyBatchNorm2d(),
        nn.ReLU(),
        nn.LazyConv2d(4, 3, groups=2),
        nn.Flatten(),
        nn.LazyLinear(10),
        nn.Linear(10, 4),  # a concrete layer between lazy ones keeps its own values
    )


class _LazyScaler(LazyModuleMixin, nn.Module):
    """A plugin-style lazy block with a non-persistent buffer computed from its input size."""

    cls_to_become = None

    def __init__(self) -> None:
        super().__init__()
        self.weight = UninitializedParameter()
        self.register_buffer("ramp", UninitializedBuffer(), persistent=False)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((x.shape[-1],))
                self.ramp.materialize((x.shape[-1],))
                self.weight.uniform_()
                self.ramp.copy_(torch.arange(x.shape[-1], dtype=self.ramp.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.ramp


_REAL_BATCHES: list[tuple[int, bool]] = []  # (batch, training) of every real forward of a _ValueGate or copy


class _ValueGate(nn.Module):
    """Data-dependent control flow, like FixedHiddenMLP's loop; records the real batches it sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            _REAL_BATCHES.append((x.shape[0], self.training))
        return x if x.sum() >= 0 else -x


class _Allocations(TorchDispatchMode):
    """Records the storage size of every real (non-meta) tensor an operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.real_bytes: list[int] = []
        self.meta_ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                if t.device.type == "meta":
                    self.meta_ops += 1
                else:
                    self.real_bytes.append(t.untyped_storage().nbytes())
        return out


# --- 1. build: lazy without an input, materialised with one -----------------------------------


def test_build_without_input_leaves_lazy_layers_uninitialised() -> None:
    model = zoo.build("lazy_mlp")
    assert lazy.is_lazy(model)
    assert lazy.lazy_keys(model) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(model[0], nn.LazyLinear)


def test_build_with_input_shape_gives_concrete_layers() -> None:
    model = zoo.build("lazy_mlp", input_shape=(2, 20))
    assert not lazy.is_lazy(model)
    assert type(model[0]) is nn.Linear and model[0].in_features == 20
    assert type(model[2]) is nn.Linear and model[2].in_features == 256
    assert model(torch.rand(3, 20)).shape == (3, 10)


def test_build_uses_the_declared_input(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[lazy20]\ninput = [2, 12]\nlayers = [{ type = "LazyLinear", out_features = 3 }]\n')
    model = zoo.build("lazy20", registry=path)
    assert type(model[0]) is nn.Linear and model[0].in_features == 12


def test_build_places_lazy_tensors_with_device_and_dtype() -> None:
    model = zoo.build("lazy_mlp", input_shape=(2, 20), device="cpu", dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(torch.rand(2, 20, dtype=torch.float64)).dtype == torch.float64


# --- 2. same seed, same parameters as torch's first forward ------------------------------------


TOO_LARGE_TO_BUILD = 1_000_000_000  # parameters; a real build of more would not fit in a test machine's memory


@pytest.mark.parametrize("name", [n for n in zoo.names() if builder.entry_of(n) is not None])
def test_every_entry_builds_on_the_meta_device(name: str) -> None:
    # The way to size a model (or load weights into it: zoo.load_weights assigns) without memory.
    try:
        model = zoo.build(name, device="meta")
    except (zoo.UnknownNameError, zoo.ArgumentError) as err:  # an entry that needs arguments or a missing block
        pytest.skip(f"'{name}' does not build here: {err}")
    assert all(t.is_meta for t in model.state_dict(keep_vars=True).values())
    if model.zoo_info.input_shape is not None:
        assert not lazy.is_lazy(model)  # lazy convs included (resnet18): shapes from the declared input
        if sum(p.numel() for p in model.parameters()) > TOO_LARGE_TO_BUILD:
            return  # hf_llama's defaults are Llama 2 7B's: 27 GB in float32, more than a test machine holds
        real = zoo.build(name)
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}


@pytest.mark.parametrize("name", [n for n in zoo.names() if builder.entry_of(n) is not None])
def test_the_load_time_meta_build_makes_the_same_model_as_torch_meta(name: str) -> None:
    # zoo.load builds with meta_build (initialisers skipped): the model must not differ otherwise.
    try:
        with torch.device("meta"):
            expected = zoo.build(name)
    except (zoo.UnknownNameError, zoo.ArgumentError) as err:
        pytest.skip(f"'{name}' does not build here: {err}")
    with meta_build():
        model = zoo.build(name)

    def layout(m: nn.Module) -> dict[str, tuple[Any, ...]]:
        def shape(t: torch.Tensor) -> Any:  # an uninitialised (lazy) parameter has none yet
            return None if isinstance(t, (UninitializedParameter, UninitializedBuffer)) else t.shape

        return {k: (type(t), shape(t), t.dtype, t.device) for k, t in m.state_dict(keep_vars=True).items()}

    def ties(m: nn.Module) -> list[list[str]]:
        by_id: dict[int, list[str]] = {}
        for key, tensor in m.state_dict(keep_vars=True).items():
            by_id.setdefault(id(tensor), []).append(key)
        return sorted(keys for keys in by_id.values() if len(keys) > 1)

    assert layout(model) == layout(expected) and ties(model) == ties(expected)
    assert [(k, type(m).__name__) for k, m in model.named_modules()] == [
        (k, type(m).__name__) for k, m in expected.named_modules()
    ]


class RandomOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if "uniform" in func.__name__ or "normal" in func.__name__:
            self.seen.append(f"{func.__name__} on {args[0].device}")
        return func(*args, **(kwargs or {}))


def test_the_load_time_meta_build_draws_no_initial_values_on_meta_only() -> None:
    with torch.device("meta"), RandomOps() as plain:
        nn.Linear(8, 8)
    assert plain.seen  # what the meta build saves: torch.device("meta") runs the initialisers
    with meta_build(), RandomOps() as skipped:
        meta = nn.Linear(8, 8)
        real = nn.Linear(8, 8, device="cpu")  # asked for on the CPU: initialised as usual
    assert meta.weight.is_meta and meta.weight.shape == (8, 8)
    assert skipped.seen and all(seen.endswith("on cpu") for seen in skipped.seen)
    assert real.weight.abs().sum() > 0 and real.weight.std() > 0


def test_a_lazy_model_placed_on_meta_stays_lazy_and_materialises_there() -> None:
    model = zoo.build("lazy_mlp", device="meta")
    assert isinstance(model[0].weight, UninitializedParameter) and model[0].weight.device.type == "meta"
    zoo.materialize(model, input_shape=(2, 20))
    assert model[0].weight.shape == (256, 20) and model[0].weight.is_meta
    tied = zoo.build("LazyLinear", out_features=4)
    tied.register_parameter("alias", tied.weight)
    lazy.place(tied, torch.device("meta"), torch.float64)
    assert tied.alias is tied.weight and isinstance(tied.weight, UninitializedParameter)
    assert tied.weight.dtype == torch.float64


@pytest.mark.parametrize("name, shape", [("lazy_mlp", (2, 20)), ("lazy_my_linear_mlp", (2, 5)), ("tied_mlp", (2, 20))])
def test_same_parameters_as_torchs_first_forward(name: str, shape: tuple[int, ...]) -> None:
    by_torch = _by_torch(lambda: zoo.build(name), torch.zeros(shape), seed=3)
    by_zoo = _by_zoo(lambda: zoo.build(name), input_shape=shape, seed=3)
    assert _same_state(by_torch, by_zoo)
    assert [type(m) for m in by_torch.modules()] == [type(m) for m in by_zoo.modules()]


def test_same_parameters_for_conv_and_batchnorm_and_fresh_statistics() -> None:
    x = torch.zeros(2, 3, 9, 9)
    by_torch = _by_torch(_conv_net, x, seed=1)
    after_torch = torch.rand(1)
    by_zoo = _by_zoo(_conv_net, input_shape=(2, 3, 9, 9), seed=1)
    assert torch.equal(torch.rand(1), after_torch)  # the random stream is where torch's leaves it
    assert _same_params(by_torch, by_zoo)
    assert [type(m) for m in by_zoo] == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.Conv2d,
        nn.Flatten,
        nn.Linear,
        nn.Linear,
    ]
    assert (by_zoo[0].in_channels, by_zoo[1].num_features, by_zoo[3].in_channels) == (3, 8, 8)
    assert by_zoo[5].in_features == 4 * 5 * 5
    # The dry run's batch statistics are not in the model: zoo ran no real batch through it.
    assert torch.equal(by_zoo[1].running_mean, torch.zeros(8))
    assert torch.equal(by_zoo[1].running_var, torch.ones(8))
    assert by_zoo[1].num_batches_tracked.item() == 0


def test_deferred_init_rules_run_as_under_torchs_first_forward(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[lazy_init]\n"
        'layers = [{ type = "LazyLinear", out_features = 16 }, "ReLU", { type = "LazyLinear", out_features = 4 }]\n'
        'init = { "*.weight" = { fn = "normal", std = 0.01 }, "2.bias" = { fn = "constant", val = 0.5 } }\n'
    )
    by_torch = _by_torch(lambda: zoo.build("lazy_init", registry=path), torch.zeros(2, 6), seed=5)
    by_zoo = _by_zoo(lambda: zoo.build("lazy_init", registry=path), input_shape=(2, 6), seed=5)
    assert _same_state(by_torch, by_zoo)
    assert torch.equal(by_zoo[2].bias, torch.full((4,), 0.5))
    assert by_zoo[0].weight.std() < 0.05  # the rule's N(0, 0.01), not Linear's default
    assert by_zoo._forward_pre_hooks == {} and by_zoo[0]._forward_pre_hooks == {}  # nothing left to run later


def test_example_inputs_of_any_dtype() -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.Embedding(100, 8), nn.Flatten(), nn.LazyLinear(4))

    tokens = torch.randint(0, 100, (3, 7))
    by_torch = _by_torch(make, tokens, seed=2)
    by_zoo = _by_zoo(make, tokens, seed=2)
    assert _same_state(by_torch, by_zoo)
    assert by_zoo[2].in_features == 56


# --- the meta pass: no compute or memory in proportion to the batch -----------------------------


def test_a_huge_batch_allocates_nothing_of_batch_size() -> None:
    torch.manual_seed(0)
    model = zoo.build("lazy_mlp")
    with _Allocations() as seen:
        zoo.materialize(model, input_shape=(2_000_000, 20))
    assert seen.meta_ops > 0  # the forward ran, on meta
    # Real storage: parameters (256 x 20 floats at most) and one-element zeros; a real dry run
    # would have made a 2,000,000 x 256 activation (2 GB).
    assert max(seen.real_bytes) <= 256 * 256 * 4
    assert _same_state(model, _by_zoo(lambda: zoo.build("lazy_mlp"), input_shape=(2, 20)))


def test_the_meta_pass_never_runs_the_model_on_real_data() -> None:
    seen_devices: list[str] = []
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU())
    model[1].register_forward_pre_hook(lambda _m, args: seen_devices.append(args[0].device.type))
    zoo.materialize(model, input_shape=(1000, 3))
    assert seen_devices == ["meta"]  # the user's hooks ran once, in the twin, on meta tensors only


# --- 2. buffers are real afterwards -------------------------------------------------------------


def test_non_persistent_lazy_buffer_is_computed_not_garbage() -> None:
    model = nn.Sequential(nn.LazyLinear(5), _LazyScaler())
    zoo.materialize(model, input_shape=(2, 3), dtype=torch.float64)
    assert torch.equal(model[1].ramp, torch.arange(5, dtype=torch.float64))
    assert "1.ramp" not in model.state_dict()
    assert not lazy.is_lazy(model)


# --- 2. fallback: blocks that cannot run on meta -------------------------------------------------


def test_fixed_hidden_mlp_falls_back_with_a_notice_naming_it() -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.LazyLinear(20), FixedHiddenMLP())

    by_torch = _by_torch(make, torch.zeros(2, 7), seed=4)
    after_torch = torch.rand(1)
    with pytest.warns(zoo.MetaFallbackWarning, match=r"`1` \(FixedHiddenMLP\).*meta device.*batch of 2"):
        by_zoo = _by_zoo(make, input_shape=(2, 7), seed=4)
    assert torch.equal(torch.rand(1), after_torch)  # the dry run's twin drew nothing that stays drawn
    assert _same_state(by_torch, by_zoo)
    assert type(by_zoo[0]) is nn.Linear and by_zoo[0].in_features == 7


def test_fallback_runs_a_tiny_batch_in_eval_mode() -> None:
    model = nn.Sequential(nn.LazyLinear(6), _ValueGate(), nn.LazyBatchNorm1d())
    _REAL_BATCHES.clear()
    with pytest.warns(zoo.MetaFallbackWarning, match=r"`1` \(_ValueGate\)"):
        zoo.materialize(model, input_shape=(100_000, 3))
    assert _REAL_BATCHES == [(2, False)]  # one real forward, of a copy in eval mode, on 2 samples
    assert model.training and model[2].num_batches_tracked.item() == 0
    assert model[2].num_features == 6


# --- errors ---------------------------------------------------------------------------------------


def test_no_input_known_says_how_to_give_one() -> None:
    model = zoo.build("lazy_mlp")
    with pytest.raises(zoo.ArgumentError, match=r"input_shape=\(batch, \.\.\.\).*input_shape=\(2, 20\)"):
        zoo.materialize(model)
    assert lazy.is_lazy(model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (0, 20)}, "positive integer sizes"),
        ({"input_shape": "2,20"}, "sequence of sizes"),
        ({"input_shape": (2, 20), "dtype": torch.int64}, "floating-point torch.dtype"),
        ({"input_shape": (2, 20), "dtype": "float64"}, "floating-point torch.dtype"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    model = zoo.build("lazy_mlp")
    with pytest.raises(zoo.ArgumentError, match=message):
        zoo.materialize(model, **kwargs)
    assert lazy.is_lazy(model)


def test_example_inputs_and_input_shape_together() -> None:
    with pytest.raises(zoo.ArgumentError, match="not both"):
        zoo.materialize(zoo.build("lazy_mlp"), torch.zeros(2, 20), input_shape=(2, 20))


@pytest.mark.parametrize("device", ["cuda:99", "tpu"])
def test_a_device_that_is_not_here(device: str) -> None:
    model = zoo.build("lazy_mlp")
    with pytest.raises(zoo.DeviceError, match="cpu"):
        zoo.materialize(model, input_shape=(2, 20), device=device)
    assert lazy.is_lazy(model)


def test_an_input_that_does_not_fit_names_the_block_and_changes_nothing() -> None:
    model = nn.Sequential(nn.LazyLinear(8), nn.Linear(4, 2))
    with pytest.raises(zoo.ShapeError, match=r"\(2, 5\) does not fit.*`1` \(Linear\).*mat1 and mat2"):
        zoo.materialize(model, input_shape=(2, 5))
    assert type(model[0]) is nn.LazyLinear and lazy.is_lazy(model)


def test_a_lazy_layer_the_forward_never_reaches() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.LazyLinear(3), nn.LazyLinear(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Branchy()
    with pytest.raises(zoo.NotMaterializedError, match="never reached lazy layer.*unused"):
        zoo.materialize(model, input_shape=(2, 4))
    assert lazy.lazy_keys(model) == ["used.weight", "used.bias", "unused.weight", "unused.bias"]


class _Fragile(nn.LazyLinear):
    """Initialises on meta; on a real device, raises `refuse` if set: a failure half-way through."""

    refuse: type[Exception] | None = None

    def initialize_parameters(self, input: torch.Tensor) -> None:  # type: ignore[override]
        if input.device.type != "meta" and _Fragile.refuse is not None:
            raise _Fragile.refuse("allocation refused")
        super().initialize_parameters(input)


@contextmanager
def _fragile(error: type[Exception]) -> Iterator[None]:
    _Fragile.refuse = error
    try:
        yield
    finally:
        _Fragile.refuse = None


@pytest.mark.parametrize(
    "error, expected", [(RuntimeError, zoo.NotMaterializedError), (torch.OutOfMemoryError, zoo.DeviceError)]
)
def test_a_failure_half_way_puts_every_layer_back(error: type[Exception], expected: type[Exception]) -> None:
    def make() -> nn.Module:
        return nn.Sequential(nn.LazyLinear(6), nn.ReLU(), _Fragile(3))

    torch.manual_seed(0)
    model = make()
    with _fragile(error), pytest.raises(expected, match=r"`2` \(_Fragile\)|does not fit"):
        zoo.materialize(model, input_shape=(2, 4))
    assert type(model[0]) is nn.LazyLinear and model[0].in_features == 0
    assert lazy.lazy_keys(model) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # The layers work again as lazy layers: torch's own first forward still initialises them.
    with torch.no_grad():
        model(torch.zeros(2, 4))
    assert type(model[0]) is nn.Linear and model[0].in_features == 4


# --- device and dtype -----------------------------------------------------------------------------


def test_dtype_and_device_arguments() -> None:
    model = zoo.materialize(zoo.build("lazy_mlp"), input_shape=(2, 20), device="cpu", dtype=torch.float64)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float64)}


def test_a_model_without_lazy_layers_is_only_placed() -> None:
    model = zoo.build("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert zoo.materialize(model, dtype=torch.float64) is model
    assert all(torch.equal(v.double(), model.state_dict()[k]) for k, v in before.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_materialise_on_cuda_draws_what_torch_draws_there() -> None:
    def make() -> nn.Module:
        return zoo.build("lazy_mlp").to("cuda")

    by_torch = _by_torch(make, torch.zeros(2, 20, device="cuda"), seed=7)
    torch.manual_seed(7)
    by_zoo = zoo.materialize(zoo.build("lazy_mlp"), input_shape=(2, 20), device="cuda")
    assert {p.device.type for p in by_zoo.parameters()} == {"cuda"}
    assert _same_state(by_torch, by_zoo)


# --- 4. before materialisation ---------------------------------------------------------------------


def test_require_materialized_says_how() -> None:
    model = zoo.build("lazy_mlp")
    with pytest.raises(
        zoo.NotMaterializedError, match=r"cannot save: 'lazy_mlp' has 4 lazy.*0\.weight.*zoo\.materialize"
    ):
        lazy.require_materialized(model, "save")
    lazy.require_materialized(zoo.build("lazy_mlp", input_shape=(2, 20)), "save")  # no error once concrete


# --- 3. materialize_from_shapes: shapes from a checkpoint header ------------------------------------


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def _load_by_header(model: nn.Module, path: Path) -> None:
    materialize_from_shapes(model, _header_shapes(path))
    model.load_state_dict(load_file(str(path)))


def _load_by_zoo(model: nn.Module, path: Path) -> None:
    zoo.load_weights(model, path)


@pytest.mark.parametrize("load", [_load_by_header, _load_by_zoo])
def test_lazy_mlp_loaded_from_a_saved_mlp_sequential(tmp_path: Path, load: Callable[[nn.Module, Path], None]) -> None:
    source = zoo.build("mlp_sequential")
    path = tmp_path / "mlp.safetensors"
    save_file(source.state_dict(), str(path))
    model = zoo.build("lazy_mlp")
    calls: list[str] = []
    for name, module in model.named_modules():
        module.register_forward_pre_hook(lambda _m, _a, name=name: calls.append(name))
    load(model, path)
    assert calls == []  # no forward before the load
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (model[0].in_features, model[0].out_features, model[2].in_features) == (20, 256, 256)
    x = torch.rand(4, 20)
    assert torch.equal(model(x), source(x))
    assert "LazyLinear" not in repr(model) and "in_features=0" not in repr(model)


def test_from_shapes_sets_what_each_lazy_class_would_set() -> None:
    model = nn.Sequential(
        nn.LazyConv2d(8, 3, groups=2),
        nn.LazyBatchNorm2d(),
        nn.LazyConvTranspose2d(4, 2),
        nn.LazyBatchNorm1d(affine=False),
        nn.Flatten(),
        nn.LazyLinear(5),
        nn.Sequential(),
    )
    model.append(zoo.build("LazyMyLinear", units=2))
    shapes = {
        "0.weight": (8, 3, 3, 3), "0.bias": (8,),
        "1.weight": (8,), "1.bias": (8,), "1.running_mean": (8,), "1.running_var": (8,),
        "2.weight": (8, 4, 2, 2), "2.bias": (4,),
        "3.running_mean": (4,), "3.running_var": (4,),
        "5.weight": (5, 100), "5.bias": (5,),
        "7.weight": (5, 2), "7.bias": (2,),
    }  # fmt: skip
    materialize_from_shapes(model, shapes, dtype=torch.float64)
    assert [type(m) for m in model] == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ConvTranspose2d,
        nn.BatchNorm1d,
        nn.Flatten,
        nn.Linear,
        nn.Sequential,
        MyLinear,
    ]
    assert (model[0].in_channels, model[1].num_features, model[2].in_channels, model[3].num_features) == (6, 8, 8, 4)
    assert (model[5].in_features, model[7].in_units) == (100, 5)
    state = model.state_dict()
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert state["1.num_batches_tracked"].item() == 0  # a concrete buffer, untouched
    assert not lazy.is_lazy(model)
    assert all(not hasattr(m, "_initialize_hook") for m in model)


def test_from_shapes_lists_every_missing_key_and_changes_nothing() -> None:
    model = zoo.build("lazy_mlp")
    shapes = {"0.weight": (256, 20), "2.weigth": (10, 256), "3.bias": (10,)}
    with pytest.raises(
        zoo.NotMaterializedError,
        match=r"no shape for lazy 0\.bias, 2\.bias, 2\.weight.*`2\.weight`: Did you mean '2\.weigth'",
    ):
        materialize_from_shapes(model, shapes)
    assert lazy.lazy_keys(model) == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize(
    "key, shape, message",
    [
        ("0.weight", (10,), r"`0\.weight` has shape \(10,\), but the layer's weight has 2 dimension\(s\)"),
        ("0.bias", (25,), r"`0\.bias` has shape \(25,\).*bias of shape \(256,\)"),
        ("0.weight", (255, 20), r"`0\.weight` has shape \(255, 20\).*\(256, 20\)"),
        ("0.weight", ("a", 3), r"`0\.weight`: a shape must be a sequence of sizes"),
    ],
)
def test_from_shapes_rejects_a_shape_the_layer_cannot_have(key: str, shape: tuple[Any, ...], message: str) -> None:
    shapes: dict[str, Any] = {"0.weight": (256, 20), "0.bias": (256,), "2.weight": (10, 256), "2.bias": (10,)}
    shapes[key] = shape
    model = zoo.build("lazy_mlp")
    with pytest.raises(zoo.WeightsError, match=message):
        materialize_from_shapes(model, shapes)
    assert len(lazy.lazy_keys(model)) == 4 and type(model[2]) is nn.LazyLinear  # checked before any change


def test_from_shapes_a_shared_lazy_layer_under_either_path() -> None:
    shared = nn.LazyLinear(3)
    model = nn.Sequential(shared, nn.ReLU(), nn.Linear(3, 3), shared)
    materialize_from_shapes(model, {"3.weight": (3, 3), "3.bias": (3,)})  # saved under its later path
    assert model[0] is model[3] and model[0].in_features == 3


def test_from_shapes_unknown_lazy_class_then_a_rule_for_it() -> None:
    class LazyScale(LazyModuleMixin, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.size = 0
            self.scale = UninitializedParameter()

        def initialize_parameters(self, x: torch.Tensor) -> None:  # type: ignore[override]
            self.size = x.shape[-1]
            self.scale.materialize((self.size,))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    model = nn.Sequential(LazyScale())
    with pytest.raises(zoo.NotMaterializedError, match=r"`0` \(LazyScale\).*register_input_rule\(LazyScale, rule\)"):
        materialize_from_shapes(model, {"0.scale": (7,)})
    register_input_rule(LazyScale, lambda layer, shapes: (1, shapes["scale"][0]))
    materialize_from_shapes(model, {"0.scale": (7,)})
    assert model[0].size == 7 and model[0].scale.shape == (7,)


def test_from_shapes_refuses_a_non_persistent_lazy_buffer() -> None:
    model = nn.Sequential(_LazyScaler())
    with pytest.raises(zoo.NotMaterializedError, match=r"non-persistent lazy buffer `0\.ramp`"):
        materialize_from_shapes(model, {"0.weight": (3,)})


def test_from_shapes_runs_deferred_init_rules_so_they_cannot_overwrite_loaded_weights(
    write_toml: Callable[..., Path],
) -> None:
    path = write_toml('[l]\nlayers = [{ type = "LazyLinear", out_features = 2 }]\ninit = { "0.weight" = "ones" }\n')
    model = zoo.build("l", registry=path)
    materialize_from_shapes(model, {"0.weight": (2, 3), "0.bias": (2,)})
    weights = {"0.weight": torch.full((2, 3), 7.0), "0.bias": torch.zeros(2)}
    model.load_state_dict(weights)
    model(torch.rand(1, 3))
    assert torch.equal(model[0].weight, weights["0.weight"])


# --- 5. trace_shapes: the same meta pass, for summaries -----------------------------------------------


def test_trace_shapes_leaves_the_model_and_the_random_state_alone() -> None:
    model = zoo.build("lazy_mlp")
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    shapes = trace_shapes(model, (2_000_000, 20))
    assert torch.equal(torch.rand(1), expected_next)
    assert shapes == {"": (2_000_000, 10), "0": (2_000_000, 256), "1": (2_000_000, 256), "2": (2_000_000, 10)}
    assert type(model[0]) is nn.LazyLinear and lazy.is_lazy(model)


def test_trace_shapes_falls_back_on_a_copy_with_a_notice() -> None:
    model = zoo.build("chimera")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(zoo.MetaFallbackWarning, match=r"`2` \(FixedHiddenMLP\) in 'chimera'.*\(3, 20\)"):
        shapes = trace_shapes(model, (3, 20))
    assert shapes["0.net.0"] == (3, 64) and shapes["2"] == () and shapes["2.linear"] == (3, 20)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_trace_shapes_with_an_input_that_does_not_fit() -> None:
    with pytest.raises(zoo.ShapeError, match=r"\(2, 7\) does not fit 'mlp'.*`hidden` \(Linear\)"):
        trace_shapes(zoo.build("mlp"), (2, 7))


def test_module_level_api() -> None:
    assert zoo.materialize is materialize
    assert issubclass(zoo.MetaFallbackWarning, UserWarning)
    assert issubclass(zoo.ShapeError, zoo.ZooError) and issubclass(zoo.ShapeError, ValueError)
