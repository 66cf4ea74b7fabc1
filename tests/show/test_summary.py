"""zoo.summary: shapes from the meta pass, `?` while lazy, shared parameters counted once."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo._build import lazy
from zoo._show.summary import Summary


def _rows(table: Summary) -> dict[str, tuple[str, str, int | None, str]]:
    return {r.name: (r.type, r.output_shape, r.params, r.shared_with) for r in table.rows}


def test_a_lazy_model_shows_pending_counts_as_question_marks() -> None:
    model = zoo.build("lazy_mlp")
    table = zoo.summary(model)
    assert table.total_params is None and table.trainable_params is None and table.known_params == 0
    assert _rows(table) == {
        "": ("Sequential", "", None, ""),
        "0": ("LazyLinear", "", None, ""),
        "1": ("ReLU", "", 0, ""),
        "2": ("LazyLinear", "", None, ""),
    }
    assert "Total params: ? (0 known; the rest wait for materialisation)" in str(table)
    assert lazy.is_lazy(model)


def test_a_lazy_model_traced_gets_shapes_and_its_future_count() -> None:
    model = zoo.build("lazy_mlp")
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    table = zoo.summary(model, input_shape=(2_000_000, 20))
    assert torch.equal(torch.rand(1), expected_next)  # no random draw left behind
    assert lazy.is_lazy(model) and type(model[0]).__name__ == "LazyLinear"  # neither materialised nor changed
    rows = _rows(table)
    assert rows["0"] == ("LazyLinear", "(2000000, 256)", None, "")
    assert rows[""][1] == "(2000000, 10)"
    materialised = zoo.build("lazy_mlp", input_shape=(2, 20))
    assert table.params_once_materialized == zoo.summary(materialised).total_params == 20 * 256 + 256 + 256 * 10 + 10
    assert "; 7,946 once materialised for input (2000000, 20)" in str(table)


def test_shared_layers_are_counted_once_and_point_to_their_first_path() -> None:
    table = zoo.summary(zoo.build("tied_mlp"), input_shape=(2, 20))
    rows = _rows(table)
    assert rows["4"] == ("Linear", "(2, 8)", 72, "2")
    assert rows["2"][3] == ""
    assert table.total_params == 20 * 8 + 8 + 72 + 9 == table.trainable_params
    assert "Total params: 249 (trainable 249)" in str(table)


def test_a_model_that_cannot_run_on_meta_gets_a_note_not_a_warning() -> None:
    model = zoo.build("chimera")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = zoo.summary(model, input_shape=(3, 20))  # warnings are errors here: none may be raised
    rows = _rows(table)
    assert rows["0.net.2"][1] == "(3, 32)" and rows["2"][1] == "()" and rows["2.linear"][1] == "(3, 20)"
    assert len(table.notes) == 1 and "`2` (FixedHiddenMLP) in 'chimera' cannot run on the meta device" in table.notes[0]
    assert str(table).endswith("Note: " + table.notes[0])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_an_unreached_module_shows_a_question_mark() -> None:
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(3, 2), "spare": torch.nn.Linear(3, 2)})

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.parts["used"](x)

    rows = _rows(zoo.summary(Head(), input_shape=(4, 3)))
    assert rows["parts.used"][1] == "(4, 2)" and rows["parts.spare"][1] == "?"


def test_rendering_lines_up_columns() -> None:
    text = str(zoo.summary(zoo.build("mlp"), input_shape=(2, 20)))
    lines = text.splitlines()
    header = lines[1]
    for line, cells in [
        (lines[3], ("(model)", "Sequential", "(2, 10)", "7,946")),
        (lines[4], ("hidden", "Linear", "(2, 256)", "5,376")),
    ]:
        for title, cell in zip(("Layer", "Type", "Output shape", "Params"), cells, strict=True):
            assert line.index(cell) == header.index(title), (line, cell)
    assert len({len(lines[0]), len(lines[2]), len(lines[-2])}) == 1  # the rules are one width
    assert lines[-1] == "Total params: 7,946 (trainable 7,946)"


@pytest.mark.parametrize("shape", [(0, 20), (2, -1), "2,20", ()])
def test_a_bad_input_shape(shape: object) -> None:
    with pytest.raises(zoo.ArgumentError, match="input_shape"):
        zoo.summary(zoo.build("mlp"), input_shape=shape)  # type: ignore[arg-type]


def test_an_input_shape_the_model_rejects() -> None:
    match = r"input of shape \(2, 7\) does not fit 'mlp_sequential': `0` \(Linear\) raised .*\(2x7 and 20x256\)"
    with pytest.raises(zoo.ShapeError, match=match):
        zoo.summary(zoo.build("mlp_sequential"), input_shape=(2, 7))
