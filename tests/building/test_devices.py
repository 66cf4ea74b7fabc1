"""zoo.devices: finding devices, resolving what users write, checkpoints saved on missing GPUs, `zoo devices`.

Machines with GPUs are faked where only what zoo asks torch matters. Tests marked `gpu` need CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import zoo
from zoo import cli
from zoo._build import devices
from zoo._errors import DeviceError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------- finding devices


def test_try_gpu_and_try_all_gpus_fall_back_to_the_cpu(gpus: Callable[[int], None]) -> None:
    gpus(0)
    assert zoo.try_gpu() == torch.device("cpu")
    assert zoo.try_gpu(10) == torch.device("cpu")
    assert zoo.try_all_gpus() == [torch.device("cpu")]


def test_try_gpu_and_try_all_gpus_with_two_gpus(gpus: Callable[[int], None]) -> None:
    gpus(2)
    assert zoo.try_gpu() == torch.device("cuda:0")
    assert zoo.try_gpu(1) == torch.device("cuda:1")
    assert zoo.try_gpu(2) == torch.device("cpu")  # the seed's try_gpu(10)
    assert zoo.try_all_gpus() == [torch.device("cuda:0"), torch.device("cuda:1")]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [(None, "cpu"), ("auto", "cpu"), (" AUTO ", "cpu"), ("cpu", "cpu"), (torch.device("cpu"), "cpu"), ("meta", "meta")],
)
def test_resolve_on_a_cpu_only_machine(gpus: Callable[[int], None], wanted: Any, expected: str) -> None:
    gpus(0)
    assert devices.resolve(wanted) == torch.device(expected)


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1"), (1, "cuda:1"), (torch.device("cuda", 1), "cuda:1")],
)
def test_resolve_with_two_gpus(gpus: Callable[[int], None], wanted: Any, expected: str) -> None:
    gpus(2)
    assert devices.resolve(wanted) == torch.device(expected)


def test_auto_prefers_mps_to_the_cpu_when_there_is_no_cuda(
    gpus: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve("auto") == torch.device("mps")
    assert devices.available() == [torch.device("mps"), torch.device("cpu")]


def test_a_missing_gpu_is_an_error_listing_the_devices_that_are_here(gpus: Callable[[int], None]) -> None:
    gpus(2)
    with pytest.raises(DeviceError) as caught:
        devices.resolve("cuda:2")
    message = str(caught.value)
    assert "'cuda:2' is not on this machine" in message and "cpu, cuda:0, cuda:1" in message
    assert "'auto'" in message


def test_cuda_on_a_cpu_only_machine_says_torch_sees_no_gpu(gpus: Callable[[int], None]) -> None:
    gpus(0)
    with pytest.raises(DeviceError, match=r"which has cpu\..*torch\.cuda\.is_available\(\) is False"):
        devices.resolve("cuda")


@pytest.mark.parametrize(
    ("wanted", "fragment"),
    [
        ("gpu", "not a device name"),
        ("cdua:0", "Did you mean 'cuda:0'?"),
        (-1, "negative"),
        (2.5, "not a device"),
        (True, "not a device"),
    ],
)
def test_text_that_is_not_a_device_is_an_error(wanted: Any, fragment: str) -> None:
    with pytest.raises(DeviceError, match=fragment):
        devices.resolve(wanted)


def test_build_resolves_its_device_before_building(gpus: Callable[[int], None]) -> None:
    gpus(0)
    model = zoo.build("mlp", device="auto")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    with pytest.raises(DeviceError, match="cuda:3"):
        zoo.build("mlp", device="cuda:3")


def test_inventory_lists_the_cpu_with_its_memory() -> None:
    infos = {info.device: info for info in devices.inventory()}
    cpu = infos["cpu"]
    assert cpu.name and cpu.total is not None and cpu.free is not None
    assert 0 < cpu.free <= cpu.total
    assert list(infos)[-1] == "cpu"  # best first, the CPU last


def test_a_checkpoint_saved_on_a_missing_gpu_loads_on_the_cpu_with_one_line(
    gpus: Callable[[int], None], caplog: pytest.LogCaptureFixture
) -> None:
    gpus(0)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        device = devices.for_checkpoint(None, "cuda:0", source="ckpt/model.safetensors")
    assert device == torch.device("cpu")
    [record] = caplog.records
    assert "ckpt/model.safetensors" in record.getMessage() and "cuda:0" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_no_notice_when_the_saved_device_is_here_or_was_the_cpu(
    gpus: Callable[[int], None], caplog: pytest.LogCaptureFixture
) -> None:
    gpus(1)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        assert devices.for_checkpoint(None, "cuda:0", source="a") == torch.device("cpu")  # None means the CPU
        assert devices.for_checkpoint(None, "cpu", source="b") == torch.device("cpu")
        assert devices.for_checkpoint(None, None, source="c") == torch.device("cpu")
    assert caplog.records == []


def test_asking_for_a_missing_device_for_a_checkpoint_is_an_error(gpus: Callable[[int], None]) -> None:
    gpus(0)
    with pytest.raises(DeviceError, match="is not on this machine"):
        devices.for_checkpoint("cuda:0", "cuda:0", source="ckpt")


def test_the_seeds_gpu_examples(gpus: Callable[[int], None]) -> None:
    gpus(0)
    X = torch.ones(2, 3, device=zoo.try_gpu())
    net = nn.Sequential(nn.Linear(3, 1)).to(device=zoo.try_gpu())
    assert net[0].weight.data.device == X.device and net(X).device == X.device
    assert (zoo.try_gpu(), zoo.try_gpu(10), zoo.try_all_gpus()) == (torch.device("cpu"),) * 2 + ([torch.device("cpu")],)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_zoo_devices_lists_each_device_with_its_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "devices")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split() == ["DEVICE", "NAME", "TOTAL", "FREE"]
    assert rows[-1].startswith("cpu ") and rows[-1].split()[-1] in ("B", "KiB", "MiB", "GiB", "TiB")


def test_zoo_devices_plans_a_model_with_made_up_budgets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "devices", "--plan", "chimera", "--max-memory", "cuda:0=14000", "--max-memory", "cuda:1=1MB"
    )
    assert code == 0, err
    assert "Plan for 'chimera' (auto)" in out and "cuda:1" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("devices", "--plan", "chimera", "--max-memory", "cuda:0"), "not DEVICE=SIZE"),
        (("devices", "--plan", "chimera", "--max-memory", "cuda:0=1KB"), "does not fit"),
        (("devices", "--plan", "chimra", "--max-memory", "cpu=1GB"), "Did you mean 'chimera'"),
    ],
)
def test_zoo_devices_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and fragment in err and "Traceback" not in err


# ---------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@needs_cuda
def test_gpu_resolve_build_and_inventory() -> None:
    assert devices.resolve("cuda") == torch.device("cuda", torch.cuda.current_device())
    assert devices.resolve("auto") == torch.device("cuda:0")
    model = zoo.build("mlp", device="auto")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    cuda0 = next(i for i in devices.inventory() if i.device == "cuda:0")
    assert cuda0.total is not None and cuda0.free is not None and 0 < cuda0.free <= cuda0.total


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1), ("2GB", 2 * 10**9), ("1.5 GiB", 3 * 2**29), ("500mb", 5 * 10**8), (".5KB", 500)]
)
def test_sizes_read_as_people_write_them(value: Any, expected: int) -> None:
    assert devices.parse_size(value, "size") == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0.5", "'0.5' is 0 bytes; it must be at least 1 byte"),
        (0, "0 is 0 bytes"),
        (-3, "-3 is negative"),
        ("2 GiBs", "'2 GiBs' is not a size. Did you mean 'gib'?"),
        (True, "True is not a size"),
    ],
)
def test_sizes_that_are_no_size(value: Any, fragment: str) -> None:
    with pytest.raises(zoo.ArgumentError) as caught:
        devices.parse_size(value, "max_shard_size")
    assert str(caught.value).startswith("max_shard_size: ") and fragment in str(caught.value)
