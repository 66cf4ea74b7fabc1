"""`zoo show NAME --graph FILE` and zoo.draw: the dataflow drawn, with shapes, or one clear error."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

import zoo
from zoo import cli

# torchvision's BasicBlock with a projection (stride 2, 8 → 16 channels), in zoo's dataflow language.
RESIDUAL = """
[res_block]
doc = "A ResNet basic block: two 3x3 convs, and the input or its 1x1 projection added back"
input = [2, 8, 16, 16]
args = { inplanes = 8, planes = 16, stride = 2 }
[res_block.layers]
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
relu_out = { op = "relu" }
"""  # noqa: E501

# Two halves of the features through different layers, then joined: tuple items and a parameter.
HALVES = """
[halves]
input = [3, 8]
params = { scale = [4] }
[halves.layers]
parts = { op = "chunk", chunks = 2, dim = 1 }
left = { type = "Linear", in_features = 4, out_features = 4, in = "parts[0]" }
right = { op = "mul", in = { a = "parts[1]", b = "scale" } }
output = { op = "cat", in = ["left", "right"], dim = 1 }   # named like the picture's own output node
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def residual(write_toml: Callable[..., Path]) -> Path:
    return write_toml(RESIDUAL)


def svg_texts(path: Path) -> list[str]:
    """Every text of an SVG file, which must parse as XML with an <svg> root."""
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_svg_names_every_node_with_its_output_shape(
    capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path
) -> None:
    out = tmp_path / "block.svg"
    code, stdout, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 0, err
    assert f"# drew 11 nodes (depth 2 of 2) to {out}" in stdout
    assert "[res_block]" in stdout  # the declaration is still shown
    texts = svg_texts(out)
    for heading in ("x", "conv1 · Conv2d", "bn2 · BatchNorm2d", "0 · Conv2d", "add", "relu_out · relu", "output"):
        assert heading in texts
    assert "downsample: Sequential" in texts  # the opened child's box
    assert "(2, 8, 16, 16)" in texts  # the declared input
    assert texts.count("(2, 16, 8, 8)") == 10  # the 9 blocks and ops after the stride-2 conv, and the output
    assert any("res_block · input [2, 8, 16, 16] · depth 2 of 2" in t for t in texts)


def test_edges_are_the_values_each_node_takes(residual: Path, tmp_path: Path) -> None:
    diagram = zoo.draw("res_block", tmp_path / "a.svg", registry=residual)
    edges = {(e.src, e.dst) for e in diagram.edges}
    assert (".input.x", "conv1") in edges and (".input.x", "downsample.0") in edges  # the skip
    assert ("bn2", "add") in edges and ("downsample.1", "add") in edges  # the merge
    assert ("relu_out", ".output") in edges
    assert len(diagram.edges) == 11


def test_a_child_left_out_by_when_is_drawn_as_the_value_it_stands_for(residual: Path, tmp_path: Path) -> None:
    diagram = zoo.draw(
        "res_block", tmp_path / "a.svg", registry=residual, overrides={"stride": 1, "inplanes": 16},
        input_shape=(2, 16, 8, 8),
    )  # fmt: skip
    assert not any(n.id.startswith("downsample") for n in diagram.nodes)
    assert {(e.src, e.dst) for e in diagram.edges if e.dst == "add"} == {("bn2", "add"), (".input.x", "add")}
    assert {n.id: n.shape for n in diagram.nodes}["add"] == "(2, 16, 8, 8)"


def test_depth_1_draws_a_nested_block_whole(residual: Path, tmp_path: Path) -> None:
    diagram = zoo.draw("res_block", tmp_path / "a.svg", registry=residual, depth=1)
    nodes = {n.id: n for n in diagram.nodes}
    assert "downsample.0" not in nodes and diagram.boxes == {}
    assert nodes["downsample"].type == "Sequential" and nodes["downsample"].closed
    assert nodes["downsample"].shape == "(2, 16, 8, 8)"
    assert "downsample · Sequential" in svg_texts(tmp_path / "a.svg")


def test_items_keywords_and_parameters_are_labelled_edges(write_toml: Callable[..., Path], tmp_path: Path) -> None:
    diagram = zoo.draw("halves", tmp_path / "h.svg", registry=write_toml(HALVES))
    edges = {(e.src, e.dst, e.label) for e in diagram.edges}
    assert ("parts", "left", "[0]") in edges and ("parts", "right", "a[1]") in edges
    assert ("scale", "right", "b") in edges and ("output", ".output", "") in edges
    shapes = {n.id: n.shape for n in diagram.nodes}
    assert shapes["parts"] == "(3, 4), (3, 4)" and shapes["scale"] == "(4)"
    assert shapes["output"] == shapes[".output"] == "(3, 8)"


def test_png_is_a_real_image(capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path) -> None:
    import matplotlib.image

    out = tmp_path / "block.png"
    code, _, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(out).shape
    assert height > 1.5 * width  # nine layers of nodes, top to bottom


def test_dot_is_graphviz_text_and_needs_no_extra(
    capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a machine without zoo[graph]
    out = tmp_path / "block.dot"
    code, _, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 0, err
    text = out.read_text()
    assert text.startswith('digraph "res_block" {')
    assert '".input.x" -> "downsample.0";' in text and '"downsample.1" -> "add";' in text
    assert 'subgraph "cluster_downsample" {' in text
    assert '"conv1" [label="conv1 · Conv2d\\n(2, 16, 8, 8)", shape=box];' in text


def test_shapes_come_from_input_shape_when_the_entry_declares_none(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "linear.svg"
    argv = ["show", "Linear", "--set", "in_features=3", "--set", "out_features=5", "--graph", str(out)]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert "no example input: pass --input-shape for shapes" in err
    assert "(2, 5)" not in svg_texts(out)
    code, _, err = run(capsys, *argv, "--input-shape", "2,3")
    assert code == 0 and "note" not in err
    texts = svg_texts(out)
    assert "Linear" in texts and "(2, 3)" in texts and texts.count("(2, 5)") == 2  # the block and the output


def test_an_input_that_does_not_fit_still_draws_and_says_where_shapes_stop(
    capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path
) -> None:
    out = tmp_path / "block.svg"
    argv = ["show", "res_block", "--registry", str(residual), "--graph", str(out), "--input-shape", "2,3,16,16"]
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert "zoo: note: shapes stop at conv1 (Conv2d), where the input [2, 3, 16, 16] fails" in err
    texts = svg_texts(out)
    assert "conv1 · Conv2d" in texts and "(2, 16, 8, 8)" not in texts


def test_a_block_that_cannot_run_on_meta_is_named_and_the_shapes_before_it_are_kept(tmp_path: Path) -> None:
    diagram = zoo.draw("chimera", tmp_path / "chimera.dot")  # FixedHiddenMLP loops on a tensor's value
    assert diagram.note.startswith("shapes stop at 2 (FixedHiddenMLP), which cannot run on the meta device")
    shapes = {n.id: n.shape for n in diagram.nodes}
    assert shapes["0.linear"] == "(2, 16)" and shapes["1"] == "(2, 20)" and shapes["2"] == ""


def test_a_bad_extension_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path
) -> None:
    out = tmp_path / "block.jpg"
    code, stdout, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 2 and stdout == ""
    assert f"cannot draw to '{out}'" in err and ".svg, .png, .dot" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [residual]


def test_an_unknown_name_exits_2_with_the_nearest(capsys: pytest.CaptureFixture[str], residual: Path) -> None:
    code, stdout, err = run(capsys, "show", "res_blok", "--registry", str(residual), "--graph", "x.svg")
    assert code == 2 and stdout == ""
    assert "'res_blok'" in err and "Did you mean 'res_block'?" in err
    assert not Path("x.svg").exists()


def test_a_depth_below_1_exits_2(capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.svg"
    code, _, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out), "--depth", "0")
    assert code == 2 and "depth must be 1 or more" in err and not out.exists()


def test_without_the_extra_the_message_says_what_to_install_and_the_old_file_stays(
    capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "block.svg"
    out.write_text("an earlier picture")
    monkeypatch.setitem(sys.modules, "networkx", None)
    code, stdout, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 2 and stdout == ""
    assert "pip install 'zoo[graph]'" in err and "Traceback" not in err
    assert out.read_text() == "an earlier picture"
    with pytest.raises(zoo.MissingDependencyError) as caught:
        zoo.draw("res_block", out, registry=residual)
    assert isinstance(caught.value, ImportError)


def test_import_zoo_imports_neither_networkx_nor_matplotlib() -> None:
    code = "import sys, zoo; print(sorted(m for m in ('networkx', 'matplotlib') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_built_model_is_drawn_from_the_declaration_it_carries(residual: Path, tmp_path: Path) -> None:
    model = zoo.build("res_block", registry=residual)
    by_model = zoo.draw(model, tmp_path / "model.dot")
    by_name = zoo.draw("res_block", tmp_path / "name.dot", registry=residual)
    assert by_model.nodes == by_name.nodes and by_model.edges == by_name.edges
    assert (tmp_path / "model.dot").read_text() == (tmp_path / "name.dot").read_text()


def test_a_model_zoo_did_not_build_is_refused(tmp_path: Path) -> None:
    from torch import nn

    with pytest.raises(zoo.ArgumentError, match="this Linear: zoo draws from a declaration"):
        zoo.draw(nn.Linear(2, 3), tmp_path / "x.svg")
    assert not (tmp_path / "x.svg").exists()


def test_a_bad_input_shape_is_refused(residual: Path, tmp_path: Path) -> None:
    with pytest.raises(zoo.ArgumentError, match="input_shape must be positive integer sizes"):
        zoo.draw("res_block", tmp_path / "x.svg", registry=residual, input_shape=(2, 0))


def test_the_same_declaration_draws_the_same_bytes(residual: Path, tmp_path: Path) -> None:
    # Pictures kept in a repository (docs/) change only when the model does.
    for name in ("a.svg", "b.svg"):
        zoo.draw("res_block", tmp_path / name, registry=residual)
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_a_folder_that_is_not_there_exits_2(capsys: pytest.CaptureFixture[str], residual: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "block.svg"
    code, stdout, err = run(capsys, "show", "res_block", "--registry", str(residual), "--graph", str(out))
    assert code == 2 and stdout == ""
    assert f"cannot draw to '{out}': there is no folder '{out.parent}'" in err


def test_buffers_defaults_indices_and_chains_are_drawn(tmp_path: Path) -> None:
    sizes = {"vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    diagram = zoo.draw("hf_llama", tmp_path / "llama.dot", overrides=sizes, depth=3)
    nodes = {n.id: n for n in diagram.nodes}
    assert nodes["model.rotary_emb.inv_freq"].type == "buffer" and nodes["model.rotary_emb.inv_freq"].kind == "param"
    assert nodes["attention_mask.default"].type == "ones_like"  # computed when the caller gives no mask
    edges = {(e.src, e.dst, e.label) for e in diagram.edges}
    assert ("model.rotary_emb.powers", "model.rotary_emb.inv_freq", "") in edges  # one buffer from another
    assert ("model.position_ids", "model.causal", "[None, :]") in edges  # a tensor index on the edge
    assert ("model.layers.0", "model.layers.1", "") in edges  # the Chain passes the hidden state on
    assert ("model.mask", "model.layers.1", "") in edges and ("model.rotary_emb.sin", "model.layers.1", "") in edges
    assert nodes["model.layers.1"].shape == "(1, 8, 32)" and nodes[".output"].shape == "(1, 8, 50)"
