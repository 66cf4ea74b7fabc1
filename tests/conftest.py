"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# huggingface_hub reads these at import: keep the suite's caches and Xet logs out of ~, and
# never ask the real Hub for telemetry (there is no network here, so it would wait for a timeout).
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="zoo-tests-hf-"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

import zoo
from tests.hubserver import HubServer
from zoo._language.registry import Registry


@pytest.fixture
def write_toml(tmp_path: Path) -> Callable[..., Path]:
    """Write registry TOML to a fresh file and return its path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"registry{next(counter)}.toml")
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def builtin_only() -> Iterator[Registry]:
    """A fresh registry with zoo's built-ins alone; in-process registrations vanish afterwards."""
    with zoo.isolated_registry() as registry:
        yield registry


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Pretend this machine has `n` CUDA devices and no MPS (only what zoo asks torch is faked)."""

    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    return fake


@pytest.fixture
def hub_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings the client froze at import: no telemetry (it calls huggingface.co), never offline."""
    from huggingface_hub import constants  # here, so only the tests that ask for it import the client

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def server(hub_client_settings: None) -> Iterator[HubServer]:
    """A fresh in-memory Hub; whatever it raised while serving fails the test, even if the client coped."""
    with HubServer() as running:
        yield running
        assert running.errors == [], "the test server raised:\n" + "\n".join(running.errors)
