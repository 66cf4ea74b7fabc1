"""Language v2: dataflow, ops, repetition, expressions, unambiguous keys, and the checks that close gaps."""

from __future__ import annotations

import copy
import re
import tomllib
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


def test_an_op_chosen_by_an_expression_follows_the_arguments(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # as `type = "${act}"` chooses a block: an entry's argument picks the function, e.g. BERT's hidden_act
    path = write_toml(
        '[a]\nargs = { act = "relu" }\ninput = [2, 3]\n'
        '[a.layers]\nlinear = { type = "Linear", in_features = 3, out_features = 3 }\n'
        "act = { op = \"${'gelu' if act in ['gelu', 'gelu_new'] else act}\" }\n"
    )
    assert cli.main(["check", str(path)]) == 0
    assert "never used" not in capsys.readouterr().err  # `act` is read by the op alone: it is used
    x = torch.randn(2, 3)
    for act, reference in (("relu", torch.relu), ("gelu", F.gelu), ("gelu_new", F.gelu), ("tanh", torch.tanh)):
        model = zoo.build("a", registry=path, act=act)
        assert torch.equal(model(x), reference(model.linear(x)))
        saved = zoo.spec("a", registry=path, act=act).declaration
        assert saved["layers"]["act"] == {"op": "gelu" if act.startswith("gelu") else act}  # config.json's is plain


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ('"${act}"', "unknown op 'rleu'. Did you mean 'relu'?"),
        ('"${1 if act else 2}"', '`op` must name a tensor function such as "add", got 1.'),
        ('"${actt}"', "'actt' is not a declared argument. Did you mean 'act'?"),
    ],
)
def test_an_op_expression_that_names_no_op_is_refused_at_its_line(
    write_toml: Callable[..., Path], op: str, message: str
) -> None:
    path = write_toml(f'[a]\nargs = {{ act = "rleu" }}\n[a.layers]\nl = "Identity"\nact = {{ op = {op} }}\n')
    problems = _problems(path)
    assert any(message in p for p in problems), problems
    assert all(f"{path}:5" in p for p in problems), problems
    with pytest.raises(zoo.ZooError, match=re.escape(message)):
        zoo.build("a", registry=path)  # check and build agree


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("'gelu' in acts", True),
        ("'tanh' not in acts", True),
        ("2 in widths", True),
        ("2.0 in widths", True),
        ("5 in widths", False),
        ("'el' in 'gelu'", True),
        ("[1, 2] in [[1, 2], [3]]", True),
    ],
)
def test_in_looks_in_a_list_or_a_string(write_toml: Callable[..., Path], expression: str, value: bool) -> None:
    path = write_toml(
        f'[a]\nargs = {{ acts = ["relu", "gelu"], widths = [1, 2, 3] }}\n'
        f'type = "Linear"\nin_features = 2\nout_features = 2\nbias = "${{{expression}}}"\n'
    )
    assert (zoo.build("a", registry=path).bias is not None) is value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 in 2", "`in` looks in a list or a string, not in int 2."),
        ("1 in 'abc'", "`in` a string looks for a string, not for int 1."),
    ],
)
def test_in_refuses_what_has_no_items(write_toml: Callable[..., Path], expression: str, message: str) -> None:
    path = write_toml(f'[a]\ntype = "Linear"\nin_features = 2\nout_features = 2\nbias = "${{{expression}}}"\n')
    (problem,) = _problems(path)
    assert f"{path}:5" in problem and message in problem


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
    err = capsys.readouterr().err
    assert "warning: " in err and "argument 'unused' is declared in `args` but never used" in err
    assert "'hidden'" not in err


def test_an_arg_read_only_by_require_a_buffer_or_an_input_default_is_used(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(
        '[m]\ninput = [2, 4]\nargs = { n = 4, fill = 1.0, k = 2 }\nrequire = ["${k > 0}"]\n'
        'inputs = ["x", { name = "mask", default = { op = "full_like", in = "x", fill_value = "${fill}" } }]\n'
        '[m.buffers]\ns = { op = "ones", shape = ["${n}"] }\n'
        '[m.layers]\na = { op = "add", in = ["x", "mask"] }\nout = { op = "mul", in = ["a", "s"] }\n'
    )
    assert cli.main(["check", str(path)]) == 0
    assert "never used" not in capsys.readouterr().err


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
        if set(tomllib.loads(text)) <= set(zoo.names()):
            continue  # a listing of the built-ins themselves, or a table of one (hf_gpt2's transformers map)
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


# --- language v3: optional inputs, `when` with `else`, chained repeats, groups, items, `require`, `tie` when -------

MASKED = """\
[masked_mean]
doc = "A mean over the tokens a padding mask keeps; the mask defaults to keeping all"
input = [2, 5, 4]
inputs = ["x", { name = "mask", default = { op = "ones_like", in = "x[:, :, 0]" } }]
[masked_mean.layers]
weights = { op = "unsqueeze", in = "mask", dim = -1 }
kept = { op = "mul", in = ["x", "weights"] }
total = { op = "sum", in = "kept", dim = 1 }
count = { op = "sum", in = "weights", dim = 1 }
mean = { op = "div", in = ["total", "count"] }
"""


def test_an_optional_input_takes_its_default_when_not_given(write_toml: Callable[..., Path]) -> None:
    model = zoo.build("masked_mean", registry=write_toml(MASKED))
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(model(x), x.mean(1))
    mask = torch.tensor([[1.0, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    torch.testing.assert_close(model(x, mask), torch.stack([x[0, :2].mean(0), x[1, :4].mean(0)]))
    torch.testing.assert_close(model(x, mask=mask), model(x, mask))
    assert "def forward(self, x, mask = None)" in model.code
    assert "ones_like_unless_given(mask, getitem" in model.code  # computed only when not given


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ('[{ name = "mask", default = "x" }, "x"]', "input 'x' comes after an optional one; optional inputs come last"),
        ('["x", { name = "mask" }]', 'an optional input is { name = "attention_mask", default = ... }'),
        ('["x", { name = "mask", default = "${1}" }]', "a default is a value of the block"),
        ('["x", { name = "mask", default = "later" }]', "`in` refers to 'later', which is no input"),
        ('["x", { name = "mask", default = { op = "arange", end = 3 } }]', "makes a tensor from constants alone"),
    ],
)
def test_optional_input_mistakes(write_toml: Callable[..., Path], inputs: str, message: str) -> None:
    path = write_toml(f'[m]\ninputs = {inputs}\n[m.layers]\nlater = {{ op = "identity", in = "x" }}\n')
    with pytest.raises(zoo.ZooError) as caught:
        zoo.build("m", registry=path)
    assert message in str(caught.value) and f"{path}:2" in str(caught.value), str(caught.value)


INVERTED_RESIDUAL = """\
[residual_if_same]
doc = "MobileNetV2's `x + conv(x)` only when stride 1 and in == out, else conv(x)"
args = { inp = 4, oup = 4, stride = 1 }
[residual_if_same.layers]
conv = { type = "Conv2d", in_channels = "${inp}", out_channels = "${oup}", kernel_size = 3, stride = "${stride}", padding = 1 }
add = { op = "add", in = ["x", "conv"], when = "${stride == 1 and inp == oup}", else = "conv" }
act = { op = "relu" }
"""


@pytest.mark.parametrize(("inp", "oup", "stride", "residual"), [(4, 4, 1, True), (4, 8, 1, False), (4, 4, 2, False)])
def test_when_on_a_child_of_several_inputs_stands_in_with_else(
    write_toml: Callable[..., Path], inp: int, oup: int, stride: int, residual: bool
) -> None:
    model = zoo.build("residual_if_same", registry=write_toml(INVERTED_RESIDUAL), inp=inp, oup=oup, stride=stride)
    x = torch.randn(1, inp, 6, 6)
    conv = model.conv(x)
    torch.testing.assert_close(model(x), torch.relu(x + conv if residual else conv))
    assert ("add" in model.code) == residual


def test_a_left_out_child_of_several_inputs_without_else_says_what_to_write(write_toml: Callable[..., Path]) -> None:
    path = write_toml(INVERTED_RESIDUAL.replace(', else = "conv"', ""))
    with pytest.raises(zoo.SpecError, match=r"registry0.toml:6: residual_if_same -> layers.add: a child left out by "
                       r"`when` stands for the value it takes, but this one takes 2 \(x, conv\); say which stands in "
                       r'with else = "..."'):  # fmt: skip
        zoo.build("residual_if_same", registry=path, oup=8)
    with pytest.raises(
        zoo.SpecError, match="`else` names what stands in for a child that `when` leaves out; add `when`"
    ):
        zoo.build("m", registry=write_toml('[m.layers]\na = { op = "relu", else = "x" }\n'))


DECODER = """\
[layer]
doc = "One block of a stack taking the hidden state and a mask: (x + mask) @ w"
inputs = ["x", "mask"]
args = { d = 4 }
[layer.layers]
masked = { op = "add", in = ["x", "mask"] }
proj = { type = "Linear", in_features = "${d}", out_features = "${d}", bias = false }

[stack]
inputs = ["x", "mask"]
args = { n = 3 }
[stack.layers]
layers = { type = "layer", repeat = "${n}", in = ["x", "mask"] }
"block${i}" = { type = "layer", repeat = 2, in = ["layers", "mask"] }
"""


def test_repeated_children_of_several_inputs_chain_the_first_and_share_the_rest(
    write_toml: Callable[..., Path],
) -> None:
    model = zoo.build("stack", registry=write_toml(DECODER))
    assert type(model.layers).__name__ == "Chain" and len(model.layers) == 3
    assert [k for k in model.state_dict()] == [f"layers.{i}.proj.weight" for i in range(3)] + [
        "block0.proj.weight",
        "block1.proj.weight",
    ]
    x, mask = torch.randn(2, 4), torch.randn(2, 4)
    expected = x
    for layer in (*model.layers, model.block0, model.block1):
        expected = layer.proj(expected + mask)
    torch.testing.assert_close(model(x, mask), expected)
    info = builder.build_info(model)
    assert info is not None and info.declaration["layers"]["layers"]["type"] == "Chain"
    again = builder.build_declaration("stack", info.declaration)  # the Chain round-trips through config.json
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(x, mask), expected)


def test_a_repeat_taking_values_by_name_cannot_be_chained(write_toml: Callable[..., Path]) -> None:
    path = write_toml(DECODER.replace('"block${i}" = { type = "layer", repeat = 2, in = ["layers", "mask"] }',
                                      '"block${i}" = { type = "layer", repeat = 2, in = { x = "layers", mask = "mask" } }'))  # fmt: skip
    with pytest.raises(zoo.SpecError, match="chained through their first input, but this one takes its values by name"):
        zoo.build("stack", registry=path)


VGG_BLOCK = """\
[my_vgg_block]
doc = "d2l's vgg_block: num_convs (conv, ReLU) pairs, then a 2x2 max-pool; keys 0, 2, … as d2l's Sequential"
args = { num_convs = 2, out_channels = 8 }
layers = [
  { repeat = "${num_convs}", group = [{ type = "LazyConv2d", out_channels = "${out_channels}", kernel_size = 3, padding = 1 }, "ReLU"] },
  { type = "MaxPool2d", kernel_size = 2, stride = 2 },
]

[named_groups]
input = [1, 3, 8, 8]
[named_groups.layers]
stem = { type = "Conv2d", in_channels = 3, out_channels = 4, kernel_size = 1 }
"unit${i}" = { repeat = 2, group = { "conv${i}" = { type = "Conv2d", in_channels = 4, out_channels = 4, kernel_size = 1 }, "act${i}" = "ReLU" } }
stage = { repeat = 2, when = true, group = [{ type = "Conv2d", in_channels = 4, out_channels = 4, kernel_size = 1 }, "ReLU"] }
"""


def test_a_repeated_group_splices_flat_keys_like_d2ls_vgg_block(write_toml: Callable[..., Path]) -> None:
    from zoo_convnets.blocks import vgg_block  # the plugin's Python block: the twin

    path = write_toml(VGG_BLOCK)
    ours = zoo.build("my_vgg_block", registry=path, num_convs=3, input_shape=(1, 3, 16, 16))
    theirs = vgg_block(3, 8)
    theirs(torch.zeros(1, 3, 16, 16))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                                    "4.weight", "4.bias"]  # fmt: skip
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(ours(x), theirs(x))
    named = zoo.build("named_groups", registry=path)
    assert list(named.state_dict()) == [
        "stem.weight", "stem.bias", "conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias",
        "stage.0.weight", "stage.0.bias", "stage.2.weight", "stage.2.bias",
    ]  # fmt: skip
    assert [type(m).__name__ for m in named.stage] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]


def test_list_arguments_are_indexed_in_expressions(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[widths]\nargs = { widths = [3, 8, 16] }\n"
        'layers = [{ type = "Linear", repeat = "${len(widths) - 1}", in_features = "${widths[i]}", '
        'out_features = "${widths[i + 1]}" }]\n'
    )
    model = zoo.build("widths", registry=path)
    assert [tuple(m.weight.shape) for m in model] == [(8, 3), (16, 8)]
    assert model(torch.zeros(2, 3)).shape == (2, 16)
    assert len(zoo.build("widths", registry=path, widths=[3, 8, 16, 4])) == 3
    path.write_text(path.read_text().replace("${len(widths) - 1}", "${len(widths)}"))  # one copy too many
    with pytest.raises(zoo.SpecError, match=r"'\$\{widths\[i \+ 1\]\}': there is no item 3 in a list of 3"):
        zoo.build("widths", registry=path)


REQUIRE = """\
[heads]
args = { n_embd = 32, n_head = 4 }
require = ["${n_embd % n_head == 0}", "${n_head > 0}"]
layers = [{ type = "Linear", in_features = "${n_embd}", out_features = "${n_embd // n_head}" }]
"""


def test_declared_constraints_are_checked_at_their_line_before_anything_is_built(
    write_toml: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(REQUIRE)
    assert zoo.build("heads", registry=path)[0].out_features == 8
    with pytest.raises(zoo.SpecError) as caught:
        zoo.build("heads", registry=path, n_embd=30)
    assert str(caught.value) == (
        f"{path}:3: heads -> require: '${{n_embd % n_head == 0}}' does not hold with n_embd = 30, n_head = 4. "
        "Change the arguments."
    )
    assert cli.main(["build", "heads", "--registry", str(path), "--set", "n_head=0"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3: heads -> require: '${{n_embd % n_head == 0}}': division by zero" in err
    bad = write_toml('[r]\nrequire = ["n > 0"]\nlayers = ["ReLU"]\n')
    with pytest.raises(zoo.SpecError, match=r"`require` lists conditions on the arguments, each one expression"):
        zoo.build("r", registry=bad)


TIED_WHEN = """\
[lm]
args = { vocab = 20, d = 4, tie_word_embeddings = false }
input = { shape = [1, 3], dtype = "int64", high = "${vocab}" }
tie = { "head.weight" = { to = "wte.weight", when = "${tie_word_embeddings}" } }
[lm.layers]
wte = { type = "Embedding", num_embeddings = "${vocab}", embedding_dim = "${d}" }
head = { type = "Linear", in_features = "${d}", out_features = "${vocab}", bias = false }
"""


def test_a_tie_can_depend_on_an_argument(write_toml: Callable[..., Path]) -> None:
    path = write_toml(TIED_WHEN)
    untied = zoo.build("lm", registry=path)
    assert untied.head.weight is not untied.wte.weight and len(untied.state_dict()) == 2
    tied = zoo.build("lm", registry=path, tie_word_embeddings=True)
    assert tied.head.weight is tied.wte.weight
    assert sum(p.numel() for p in tied.parameters()) == 80


def test_v3_declarations_show_as_toml_that_parses_back(write_toml: Callable[..., Path]) -> None:
    path = write_toml("\n".join((MASKED, INVERTED_RESIDUAL, DECODER, VGG_BLOCK, TIED_WHEN)))
    reg = builder.registry_for(path)
    for name in ("masked_mean", "residual_if_same", "stack", "named_groups", "lm"):
        shown = zoo.spec(name, registry=reg).declaration
        entry = parse_text(dump_entry(name, shown), "shown.toml")[name]
        again = resolve(reg, Provider(name, Origin(USER), entry=entry), {}, name)
        assert again.errors == [] and again.root is not None and declaration(again.root) == shown, name
    assert check.check_registry(reg, origins={USER}) == []


def test_an_init_rule_with_when_applies_only_when_true(write_toml: Callable[..., Path]) -> None:
    path = write_toml(
        "[m]\nargs = { bias = false }\n"
        'init = { "*.bias" = { fn = "constant", val = 3.0, when = "${bias}" } }\n'
        'layers = [{ type = "Linear", in_features = 2, out_features = 2, bias = "${bias}" }]\n'
    )
    assert zoo.build("m", registry=path)[0].bias is None  # left out: no "matches no parameter" error
    assert zoo.build("m", registry=path, bias=True)[0].bias.tolist() == [3.0, 3.0]


def test_the_readmes_llama_layer_is_transformers_decoder_layer(write_toml: Callable[..., Path]) -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    (text,) = [b.split("```")[0] for b in readme.split("```toml\n")[1:] if b.startswith("[my_llama_layer]")]
    path = write_toml(text)
    config = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, rms_norm_eps=1e-6
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    theirs = LlamaDecoderLayer(config, layer_idx=0).eval()
    ours = zoo.build("my_llama_layer", registry=path).eval()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 8, 64)
    attention_mask = torch.ones(2, 8, dtype=torch.long)
    attention_mask[0, 6:] = 0
    cos, sin = LlamaRotaryEmbedding(config)(x, torch.arange(8)[None])
    causal = torch.arange(8)[None, :] <= torch.arange(8)[:, None]
    mask = causal[None, None] & attention_mask[:, None, None, :].bool()  # create_causal_mask's, for sdpa
    with torch.no_grad():
        expected = theirs(x, attention_mask=mask, position_embeddings=(cos, sin))
        torch.testing.assert_close(ours(x, attention_mask), expected, atol=1e-5, rtol=1e-5)
        unpadded = theirs(x, attention_mask=causal[None, None].expand(2, 1, 8, 8), position_embeddings=(cos, sin))
        torch.testing.assert_close(ours(x), unpadded, atol=1e-5, rtol=1e-5)
