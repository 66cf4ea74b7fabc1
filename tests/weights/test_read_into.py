"""StoredTensors.read_into: a rank's rows read from the file straight into its own memory, nothing mapped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo
from zoo._weights import reader


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    zoo.save_tensors({"w": torch.randn(7, 5), "b": torch.randn(3), "h": torch.randn(4, 2).half()}, tmp_path / "t")
    return tmp_path / "t.safetensors" if (tmp_path / "t.safetensors").exists() else tmp_path / "t"


def test_whole_rows_are_read_into_the_given_tensor(stored: Path) -> None:
    full = zoo.load_tensors(stored)
    with reader.open_stored(stored) as opened:
        out = torch.empty(3, 5)
        address = out.data_ptr()
        opened.read_into("w", (slice(2, 5), slice(0, 5)), out)
        assert out.data_ptr() == address and torch.equal(out, full["w"][2:5])
        tail = torch.empty(2, 5)
        opened.read_into("w", (slice(5, 7), slice(None)), tail)  # open slices too
        assert torch.equal(tail, full["w"][5:])
        vector = torch.empty(3)
        opened.read_into("b", (slice(0, 3),), vector)
        assert torch.equal(vector, full["b"])


def test_a_read_into_another_dtype_converts(stored: Path) -> None:
    full = zoo.load_tensors(stored)
    with reader.open_stored(stored) as opened:
        out = torch.empty(4, 2, dtype=torch.float64)
        opened.read_into("h", (slice(0, 4), slice(0, 2)), out)
        assert torch.equal(out, full["h"].double())


def test_a_part_that_is_not_whole_rows_goes_through_the_map(stored: Path) -> None:
    full = zoo.load_tensors(stored)
    with reader.open_stored(stored) as opened:
        out = torch.empty(7, 2)
        opened.read_into("w", (slice(0, 7), slice(1, 3)), out)
        assert torch.equal(out, full["w"][:, 1:3])


def test_a_file_cut_short_after_opening_fails_naming_it(stored: Path) -> None:
    with reader.open_stored(stored) as opened:
        file = opened.info("w").file
        with open(file, "r+b") as f:
            f.truncate(file.stat().st_size - 8)  # in place, under the open reader: the last tensor loses bytes
        for key, shape in (("w", (7, 5)), ("b", (3,)), ("h", (4, 2))):
            try:
                opened.read_into(key, tuple(slice(0, n) for n in shape), torch.empty(shape, dtype=torch.float64))
            except zoo.WeightsError as err:
                assert str(err).startswith(f"{file} ends before the bytes its header promises")
                break
        else:
            raise AssertionError("no read noticed the missing bytes")
        with open(file, "r+b") as f:
            f.truncate(20)  # the header too
        fresh = reader.StoredTensors(opened.where, opened.infos, {}, opened.headers, opened._handles, _raw=opened._raw)
        with pytest.raises(zoo.WeightsError, match="changed after it was opened"):
            fresh.read_into("w", (slice(0, 7), slice(0, 5)), torch.empty(7, 5))
