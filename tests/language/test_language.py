"""Language v2: dataflow, ops, repetition, expressions, unambiguous keys, and the checks that close gaps."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import fx, nn

import zoo
from zoo import cli
from zoo._build import builder, check
from zoo._language.declarations import dump_entry, parse_text
from zoo._language.registry import USER, Origin, Provider
from zoo._language.resolve import declaration, resolve

BASIC_BLOCK = """\
[basic_block]
doc = "torchvision's BasicBlock"
internal = true
args = { inplanes = 8, planes = 8, stride = 1 }
[basic_block.layers]
conv1 = { type = "Conv2d", in_channels = "${inplanes}", out_channels = "${planes}", kernel_size = 3, stride = "${stride}", padding = 1, bias = false }
bn1 = { type = "BatchNorm2d", num_features = "${planes}" }
relu = "ReLU"
conv2 = { type = "Conv2d", in_channels = "${planes}", out_channels = "${planes}", kernel_size = 3, padding = 1, bias = false }
bn2 = { type = "BatchNorm2d", num_features = "${planes}" }
downsample = { in = "x", when = "${stride != 1 or inplanes != planes}", layers = [
  { type = "Conv2d", in_channels = "${inplanes}", out_channels = "${planes}", kernel_size = 1, stride = "${stride}", bias = false },
  { type = "BatchNorm2d", num_features = "${planes}" },
] }
add = { op = "add", in = ["bn2", "downsample"] }
relu2 = { op = "relu" }

[stage]
input = [2, 8, 8, 8]
args = { c = 8 }
[stage.layers]
layer1 = { repeat = 2, type = "basic_block", inplanes = "${c}", planes = "${c}" }
"block${i + 1}" = { repeat = 2, type = "basic_block", inplanes = "${c if i == 0 else 2 * c}", planes = "${2 * c}", stride = "${2 if i == 0 else 1}" }
"""


class TwinBasicBlock(nn.Module):
    """torchvision's BasicBlock, by hand."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


@pytest.fixture
def blocks(write_toml: Callable[..., Path]) -> Path:
    return write_toml(BASIC_BLOCK)


def _problems(path: Path) -> list[str]:
    return [str(e) for e in check.check_registry(builder.registry_for(path), origins={USER})]


# --- dataflow -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("inplanes", "planes", "stride"), [(8, 8, 1), (8, 16, 2)])
def test_a_residual_block_matches_its_hand_written_twin(blocks: Path, inplanes: int, planes: int, stride: int) -> None:
    model = zoo.build("basic_block", registry=blocks, inplanes=inplanes, planes=planes, stride=stride)
    twin = TwinBasicBlock(inplanes, planes, stride)
    assert list(model.state_dict()) == list(twin.state_dict())  # declared names, declared order
    model.load_state_dict(twin.state_dict(), strict=True)
    model.eval(), twin.eval()
    x = torch.randn(2, inplanes, 8, 8)
    assert torch.equal(model(x), twin(x))
    assert isinstance(model, fx.GraphModule) and ("self.downsample(x)" in model.code) == (twin.downsample is not None)
    assert ("downsample" in dict(model.named_children())) == (twin.downsample is not None)


def test_gradients_flow_through_both_branches(blocks: Path) -> None:
    model = zoo.build("basic_block", registry=blocks, planes=16, stride=2)
    model(torch.randn(2, 8, 8, 8)).sum().backward()
    assert model.conv1.weight.grad is not None and model.downsample[0].weight.grad is not None


def test_repeat_splices_flat_names_or_makes_a_sequential(blocks: Path) -> None:
    model = zoo.build("stage", registry=blocks)
    keys = list(model.state_dict())
    assert "layer1.0.conv1.weight" in keys and "layer1.1.bn2.bias" in keys
    assert "block1.downsample.0.weight" in keys and "block2.conv1.weight" in keys
    assert not any(k.startswith("block2.downsample") for k in keys)  # `when` left it out
    assert isinstance(model.layer1, nn.Sequential) and len(model.layer1) == 2
    assert model(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


def test_deepcopy_keeps_order_forward_and_ties(write_toml: Callable[..., Path]) -> None:
    path = write_toml(TIED)
    model = zoo.build("lm", registry=path)
    clone = copy.deepcopy(model)
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(clone(ids), model(ids)) and list(clone.state_dict()) == list(model.state_dict())
    assert clone.head.weight is clone.wte.weight and clone.head.weight is not model.head.weight


TIED = """\
[lm]
args = { vocab = 50, d = 8 }
input = { shape = [2, 5], dtype = "int64", high = "${vocab}" }
tie = { "head.weight" = "wte.weight" }
[lm.layers]
wte = { type = "Embedding", num_embeddings = "${vocab}", embedding_dim = "${d}" }
pos = { op = "positions", in = "x", dim = 1 }
wpe = { type = "Embedding", num_embeddings = 16, embedding_dim = "${d}" }
add = { op = "add", in = ["wte", "wpe"] }
head = { type = "Linear", in_features = "${d}", out_features = "${vocab}", bias = false }
"""


def test_tie_params_and_token_inputs_round_trip_through_a_save(write_toml: Callable[..., Path], tmp_path: Path) -> None:
    path = write_toml(TIED)
    model = zoo.build("lm", registry=path)
    assert model.head.weight is model.wte.weight
    assert sum(p.numel() for p in model.parameters()) == 50 * 8 + 16 * 8
    assert str(zoo.summary(model)).count("Embedding") == 2
    zoo.save(model, tmp_path / "lm")
    loaded = zoo.load(tmp_path / "lm")
    ids = torch.randint(0, 50, (2, 5))
    assert torch.equal(loaded(ids), model.eval()(ids)) and loaded.head.weight is loaded.wte.weight


def test_bare_params_tuple_items_and_keyword_inputs(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        """\
[conv1d]
doc = "transformers' Conv1D: x @ weight + bias, weight stored (in, out)"
args = { nx = 4, nf = 6 }
params = { weight = ["${nx}", "${nf}"], bias = ["${nf}"] }
init = { weight = { fn = "normal", std = 0.02 } }
[conv1d.layers]
mm = { op = "matmul", in = ["x", "weight"] }
y = { op = "add", in = ["mm", "bias"] }

[attn]
args = { d = 4, heads = 2 }
inputs = ["x", "mask"]
out = ["y", "qkv[2]"]
[attn.layers]
c_attn = { type = "conv1d", nx = "${d}", nf = "${3 * d}" }
qkv = { op = "split", split_size = "${d}", dim = 2 }
q = { op = "unflatten", in = "qkv[0]", dim = -1, sizes = ["${heads}", -1] }
qt = { op = "transpose", dim0 = 1, dim1 = 2 }
k = { op = "unflatten", in = "qkv[1]", dim = -1, sizes = ["${heads}", -1] }
kt = { op = "transpose", dim0 = 1, dim1 = 2 }
v = { op = "unflatten", in = "qkv[2]", dim = -1, sizes = ["${heads}", -1] }
vt = { op = "transpose", dim0 = 1, dim1 = 2 }
a = { op = "sdpa", in = { q = "qt", k = "kt", v = "vt", attn_mask = "mask" } }
at = { op = "transpose", dim0 = 1, dim1 = 2 }
y = { op = "flatten", start_dim = 2 }
"""
    )
    lin = zoo.build("conv1d", registry=path)
    assert lin.weight.shape == (4, 6) and lin.bias.shape == (6,) and 0 < lin.weight.std() < 0.05
    x = torch.randn(3, 4)
    assert torch.allclose(lin(x), x @ lin.weight + lin.bias)
    attn = zoo.build("attn", registry=path)
    x, mask = torch.randn(2, 3, 4), torch.ones(3, 3, dtype=torch.bool)
    y, v = attn(x, mask)
    assert y.shape == (2, 3, 4) and v.shape == (2, 3, 4)
    assert list(attn.state_dict()) == ["c_attn.weight", "c_attn.bias"]


def test_a_dataflow_model_traces_compiles_and_exports(blocks: Path) -> None:
    model = zoo.build("basic_block", registry=blocks, planes=16, stride=2).eval()
    x = torch.randn(2, 8, 8, 8)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x))
    assert torch.equal(fx.symbolic_trace(model)(x), model(x))


# --- expressions --------------------------------------------------------------------------------


def test_expressions_keep_types_interpolate_strings_and_see_every_arg(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        """\
[e]
args = { d = 8, heads = 2, act = "ReLU", head_dim = "${d // heads}" }
input = [2, "${d}"]
layers = [
  { type = "Linear", in_features = "${d}", out_features = "${max(4 * d, 16)}" },
  { type = "${act}" },
  { type = "Linear", in_features = "${4 * d}", out_features = "${head_dim ** 2 - (1 if heads > 1 else 0)}" },
]
init = { "0.weight" = { fn = "constant", val = "${1 / d}" } }
"""
    )
    model = zoo.build("e", registry=path)
    assert isinstance(model[1], nn.ReLU) and model[0].out_features == 32 and model[2].out_features == 15
    assert torch.all(model[0].weight == 1 / 8)
    assert builder.build_info(model).input_shape == (2, 8)  # type: ignore[union-attr]
    assert zoo.build("e", registry=path, d=4, act="GELU")[2].in_features == 16


def test_a_string_with_text_around_an_expression_is_a_string(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[s]\nargs = { act = "Tanh" }\ntype = "${act}shrink"\n')
    assert isinstance(zoo.build("s", registry=path), nn.Tanhshrink)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"${widht}"', "'widht' is not a declared argument. Did you mean 'width'?"),
        ('"${width.real}"', "attribute access"),
        ('"${__import__(\\"os\\")}"', "only min(...), max(...) and len(...) can be called"),
        ('"${width +}"', "is not a valid expression"),
        ('"${width / 0}"', "division by zero"),
        ('"${10 ** 1000}"', "too large"),
        ('"${width"', "without a matching"),
        ('"${}"', "empty"),
        ('"${-\\"ab\\"}"', "'-' needs numbers, got str 'ab'"),
    ],
)
def test_bad_expressions_are_refused_with_file_and_line(
    write_toml: Callable[..., Path], value: str, message: str
) -> None:
    path = write_toml(f'[a]\nargs = {{ width = 4 }}\ntype = "Linear"\nin_features = 2\nout_features = {value}\n')
    try:
        problems = _problems(path)
    except zoo.SpecError as err:  # a syntax error is found while parsing the file
        problems = [str(err)]
    (problem,) = problems
    assert f"{path}:5" in problem and message in problem


def test_args_that_refer_to_each_other_in_a_loop(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[a]\nargs = { x = "${y}", y = "${x}" }\ntype = "Linear"\nin_features = "${x}"\nout_features = 1\n'
    )
    (problem,) = _problems(path)
    assert "arguments refer to each other in a loop: x -> y -> x" in problem


# --- unambiguous keys ---------------------------------------------------------------------------


def test_kwargs_passes_an_argument_named_like_a_language_key(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[p]\ntype = "PReLU"\nnum_parameters = 4\nkwargs = { init = 0.1 }\n')
    assert torch.allclose(zoo.build("p", registry=path).weight, torch.full((4,), 0.1))
    spec = zoo.spec("p", registry=path).declaration
    assert spec == {"type": "PReLU", "num_parameters": 4, "kwargs": {"init": 0.1}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('type = "PReLU"\ninit = 0.1', "write kwargs = { init = 0.1 }"),
        ('type = "Linear"\nin_features = 1\nout_features = 1\nout = "x"', "remove type = 'Linear'"),
        ('layers = [{ type = "ReLU", repeat = "x" }]', "`repeat` must be a count"),
        ('type = "Linear"\nin = "x"', "kwargs = { in = ... }"),
    ],
)
def test_old_spellings_say_the_new_one(write_toml: Callable[..., Path], body: str, message: str) -> None:
    with pytest.raises(zoo.SpecError, match=message.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        zoo.build("a", registry=write_toml(f"[a]\n{body}\n"))


def test_build_keywords_stay_out_of_the_arguments_way() -> None:
    layer = zoo.build("Linear", overrides={"in_features": 2, "out_features": 3, "device": "meta"})
    assert layer.weight.device.type == "meta"
    with pytest.raises(zoo.ArgumentError, match="given both in overrides= and as keywords"):
        zoo.build("Linear", overrides={"in_features": 2}, in_features=2, out_features=3)
    with pytest.raises(TypeError):
        zoo.build(name="mlp")  # type: ignore[call-arg]  # positional-only: `name` is free for blocks


# --- dataflow errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ('a = { op = "ad" }', "unknown op 'ad'. Did you mean 'add'?"),
        ('a = { op = "add" }', "op 'add' takes 2 inputs (a, b), but `in` gives 1"),
        ('a = { op = "cat", dimm = 1 }', "op 'cat' has no argument 'dimm'. Did you mean 'dim'?"),
        (
            'a = { op = "relu", in = "b" }\nb = "ReLU"',
            "`in` refers to 'b', which is no input, parameter or earlier child",
        ),
        ('a = "ReLU"\nb = "@a"\nc = { op = "relu" }', "'@a' would share a block's weights, but 'a' is a value"),
        ('a = "ReLU"\nb = "@a"', "'@a' would share a block's weights, but 'a' is a value of this block"),
        ('a = { op = "relu", in = "@x" }', "a value is named without '@'"),
        ('a = { op = "transpose", dim0 = 1 }', "op 'transpose' is missing required argument 'dim1'"),
        ('a = { type = "ReLU", when = "${1}" }\nb = { op = "relu" }', "`when` must be true or false"),
        ('a = { op = "relu", inplace = true }', "inplace = true would overwrite 'x', which is an input"),
        (
            'a = "ReLU"\nb = { op = "relu", inplace = true }\nc = { op = "add", in = ["a", "b"] }',
            "inplace = true would overwrite 'a', which other children also take",
        ),
    ],
)
def test_dataflow_mistakes(write_toml: Callable[..., Path], layers: str, message: str) -> None:
    path = write_toml(f"[g]\n[g.layers]\n{layers}\n")
    problems = []
    try:
        problems = _problems(path)
    except zoo.SpecError as err:
        problems = [str(err)]
    assert any(message in p for p in problems), problems
    assert all(f"{path}:" in p for p in problems)


def test_an_op_from_a_plugin_hook(write_toml: Callable[..., Path]) -> None:
    class Plugin:
        @zoo.hookimpl
        def zoo_ops(self, register: Callable[..., None]) -> None:
            def double(x: torch.Tensor, *, times: int = 2) -> torch.Tensor:
                return x * times

            register("double", double)

    path = write_toml('[d]\n[d.layers]\nl = { type = "Identity" }\nd = { op = "double", times = 3 }\n')
    with zoo.isolated_registry(Plugin()):
        assert torch.equal(zoo.build("d", registry=path)(torch.ones(2)), torch.full((2,), 3.0))


# --- checks that close gaps ----------------------------------------------------------------------


def test_check_runs_the_declared_input_and_names_both_layers(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[m]\ninput = [2, 20]\nlayers = [\n  { type = "Linear", in_features = 20, out_features = 30 },\n'
        '  { type = "Linear", in_features = 31, out_features = 5 },\n]\n'
    )
    (problem,) = _problems(path)
    assert f"{path}:5: m -> layers[1]: with the declared input [2, 20], Linear got (2, 30)" in problem
    assert f"It follows {path}:4: m -> layers[0] (Linear), which gave (2, 30)" in problem


def test_an_init_glob_that_matches_nothing_is_an_error(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[m]\ntype = "mlp"\ninit = { "*.wieght" = "zeros" }\n')
    with pytest.raises(zoo.SpecError, match=r"init rule '\*\.wieght' matches no parameter.*hidden\.weight"):
        zoo.build("m", registry=path)


def test_init_rules_select_by_block_type(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        '[m]\nlayers = [{ type = "Conv2d", in_channels = 1, out_channels = 2, kernel_size = 1 }, '
        '{ type = "LazyLinear", out_features = 2 }]\n'
        'init = { "*" = { fn = "constant", val = 3, on = ["Linear"] }, "*.weight" = { fn = "zeros", on = "Conv2d" } }\n'
    )
    model = zoo.build("m", registry=path)
    assert torch.all(model[0].weight == 0) and not torch.all(model[0].bias == 3)
    zoo.materialize(model, input_shape=(1, 1, 1, 1))
    assert torch.all(model[1].weight == 3) and torch.all(model[1].bias == 3)  # LazyLinear is a Linear


def test_unused_args_are_a_warning_at_check(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(
        '[m]\nargs = { hidden = 4, unused = 1 }\ntype = "Linear"\nin_features = 2\nout_features = "${hidden}"\n'
    )
    assert cli.main(["check", str(path)]) == 0
    assert "warning: " in capsys.readouterr().err and "argument 'unused' is declared in `args` but never used"


def test_internal_entries_are_hidden_from_zoo_list(blocks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "--registry", str(blocks)]) == 0
    listed = capsys.readouterr().out
    assert "stage" in listed and "basic_block" not in listed
    assert cli.main(["list", "--all", "--registry", str(blocks)]) == 0
    assert "basic_block" in capsys.readouterr().out


def test_an_entry_used_as_a_type_passes_on_its_input(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[wide_mlp]\ntype = "mlp"\nhidden = 1024\n')
    model = zoo.build("wide_mlp", registry=path)
    assert builder.build_info(model).input_shape == (2, 20)  # type: ignore[union-attr]
    assert cli.main(["build", "wide_mlp", "--registry", str(path)]) == 0


def test_zoo_show_prints_readable_toml_that_parses_back_to_the_same_tree(blocks: Path) -> None:
    reg = builder.registry_for(blocks)
    for name in ("stage", "basic_block", "tied_mlp", "chimera", "mlp_init_mixed"):
        shown = zoo.spec(name, registry=reg).declaration
        text = dump_entry(name, shown)
        assert max(len(line) for line in text.splitlines()) <= 160
        entry = parse_text(text, "shown.toml")[name]
        again = resolve(reg, Provider(name, Origin(USER), entry=entry), {}, name)
        assert again.errors == [] and again.root is not None and declaration(again.root) == shown


def test_the_readme_examples_paste_into_a_file_of_ones_own(write_toml: Callable[..., Path]) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    own = []
    for block in readme.split("```toml\n")[1:]:
        text = block.split("```")[0]
        if "[project]" in text or "[scaled_mlp]" in text:
            continue  # a plugin's pyproject and registry, tested installed elsewhere
        if set(parse_text(text, "readme.toml")) <= set(zoo.names()):
            continue  # a listing of the built-ins themselves
        own.append(text)
    assert len(own) >= 4
    path = write_toml("\n".join(own))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check.check_registry(builder.registry_for(path), origins={USER}) == []
    stage = zoo.build("my_resnet_stage", registry=path)
    assert "block1.downsample.0.weight" in stage.state_dict() and "layer1.1.conv2.weight" in stage.state_dict()


def test_a_module_list_as_a_layer_is_refused_at_check(write_toml: Callable[..., Path]) -> None:
    path = write_toml('[m]\nlayers = [{ type = "ModuleList", layers = ["ReLU"] }, "ReLU"]\n')
    (problem,) = _problems(path)
    assert f"{path}:2: m -> layers[0]: ModuleList holds blocks but cannot be called" in problem
    assert zoo.build("ModuleList", overrides={"modules": None}) is not None  # on its own it is fine


def test_an_entry_says_how_foreign_checkpoint_keys_map_onto_its_own(
    write_toml: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_toml(
        '[ported]\ntype = "mlp_sequential"\nweights = { strip_prefix = "module.", rename = [["^fc(\\\\d)", "\\\\1"]] }\n'
        '[broken]\ntype = "mlp"\nweights = { strip_prefx = "module." }\n'
    )
    source = zoo.build("mlp_sequential")
    theirs = {f"module.fc{k}": v for k, v in source.state_dict().items()}  # a DataParallel-style checkpoint
    save_file({k: v.contiguous() for k, v in theirs.items()}, tmp_path / "theirs.safetensors")
    model = zoo.build("ported", registry=path)
    assert not zoo.load_weights(model, tmp_path / "theirs.safetensors")
    x = torch.randn(2, 20)
    assert torch.equal(model(x), source(x))
    (problem,) = [p for p in _problems(path) if "broken" in p]
    assert f"{path}:6: broken -> weights: unknown key 'strip_prefx'. Did you mean 'strip_prefix'?" in problem
