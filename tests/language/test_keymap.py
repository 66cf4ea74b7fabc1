"""zoo.KeyMap: how a foreign checkpoint's keys map onto a model's own, and every malformed table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import zoo
from zoo._errors import SpecError, WeightsError
from zoo._language.keymap import KeyMap


def test_strip_then_rename_in_order_then_add() -> None:
    keymap = KeyMap.from_table(
        {"strip_prefix": "module.", "add_prefix": "net.", "rename": [[r"^blocks\.(\d+)", r"h.\1"], [r"\.fc$", ".out"]]}
    )
    assert keymap("module.blocks.3.fc") == "net.h.3.out"
    assert keymap("blocks.0.attn") == "net.h.0.attn"  # keys without the prefix stay as they are
    assert keymap("head.weight") == "net.head.weight"
    assert bool(keymap) and not KeyMap()
    named = KeyMap.from_table({"rename": [[r"^(?P<layer>\w+)\.w$", r"\g<layer>.weight"]]})
    assert named("fc.w") == "fc.weight"
    assert KeyMap.of(None) is None and KeyMap.of(keymap) is keymap
    assert KeyMap.of({"strip_prefix": "module."}) == KeyMap(strip_prefix="module.")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"strip_prefx": "module."}, "unknown key 'strip_prefx'. Did you mean 'strip_prefix'?"),
        ({"strip_prefix": 1}, "rename -> strip_prefix must be a string, not int 1"),
        ({"rename": "^a"}, "rename -> rename must be a list of \\[pattern, replacement\\] pairs"),
        ({"rename": [["^a"]]}, "rename -> rename\\[0\\] must be a \\[pattern, replacement\\] pair of strings"),
        ({"rename": [["^a", 3]]}, "rename -> rename\\[0\\] must be a \\[pattern, replacement\\] pair"),
        ({"rename": [["x", "y"], ["(unclosed", "z"]]}, "rename\\[1\\]: the pattern '\\(unclosed' is not a regular"),
        ({"rename": [["^blocks\\.(\\d+)", "h.\\2"]]}, "refers to group 2, but .* has 1 group"),
        ({"rename": [["^(?P<n>\\d+)", "\\g<m>"]]}, "refers to group 'm', which"),
        (["strip_prefix"], "rename must be a table"),
    ],
)
def test_a_malformed_table_says_what_and_where(table: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        KeyMap.from_table(table)  # type: ignore[arg-type]


def test_where_names_the_declaration() -> None:
    with pytest.raises(SpecError, match=re.escape("gpt2 -> key_map -> rename[0]")):
        KeyMap.from_table({"rename": [[1, 2]]}, where="gpt2 -> key_map")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.h = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])


def _foreign_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    tensors = {f"module.blocks.{i}.{n}": torch.rand(3, 3) if n == "weight" else torch.rand(3) for i in range(2)
               for n in ("weight", "bias")}  # fmt: skip
    save_file(tensors, tmp_path / "foreign.safetensors")
    return tmp_path / "foreign.safetensors", tensors


def test_load_weights_renames_and_an_error_shows_the_nearest_names_on_both_sides(tmp_path: Path) -> None:
    file, tensors = _foreign_file(tmp_path)
    model = Net()
    with pytest.raises(WeightsError) as caught:
        zoo.load_weights(model, file)
    text = str(caught.value)
    assert "nearest names, file → model" in text and "'module.blocks.0.bias' → 'h.0.bias'" in text
    rename = {"strip_prefix": "module.", "rename": [[r"^blocks\.", "h."]]}
    report = zoo.load_weights(model, file, rename=rename)
    assert not report and torch.equal(model.h[1].weight, tensors["module.blocks.1.weight"])
    with pytest.raises(WeightsError, match=r"keys mapped by \{ strip_prefix = \"module.\" \}"):
        zoo.load_weights(model, file, rename={"strip_prefix": "module."})  # half a map: still all or nothing
    assert torch.equal(model.h[1].weight, tensors["module.blocks.1.weight"])


def test_a_models_own_key_map_is_used_unless_rename_is_given(tmp_path: Path) -> None:
    file, tensors = _foreign_file(tmp_path)
    model = Net()
    model.zoo_key_map = KeyMap.from_table({"strip_prefix": "module.", "rename": [[r"^blocks\.", "h."]]})
    assert not zoo.load_weights(model, file)
    assert torch.equal(model.h[0].bias, tensors["module.blocks.0.bias"])
    with pytest.raises(WeightsError, match="missing from the file"):
        zoo.load_weights(model, file, rename=KeyMap())  # an explicit empty map wins over the model's


def test_two_file_keys_mapping_to_one_model_key_is_refused(tmp_path: Path) -> None:
    save_file({"a.weight": torch.zeros(2), "b.weight": torch.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="maps both 'a.weight' and 'b.weight' to 'x.weight'"):
        zoo.load_weights(nn.Linear(2, 2), tmp_path / "w.safetensors", rename={"rename": [["^[ab]", "x"]]})
