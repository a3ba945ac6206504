"""Fixtures of the enhance tests: model folders in tmp_path, a fake clock, no leftover threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.enhance.fake_tensorrt import FakeGpu, install, uninstall
from tests.enhance.helpers import FakeClock, model_dir


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    left = [
        t.name
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and t.name.startswith("enhance")
    ]
    assert not left, f"threads left running: {left}"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A model folder holding 'tiny' (a 1×1 convolution, low_light)."""
    root = tmp_path / "models"
    model_dir(root, "tiny")
    return root


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGpu]:
    """TensorRT 10.3 (JetPack 6.2) and pycuda faked on an 'Orin': the real TensorRT code runs on
    them; afterwards the backends imported on the fakes are forgotten."""
    yield install(monkeypatch)
    uninstall()


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], FakeGpu]]:
    """`fake_trt(version)`: like `fake_gpu`, for another TensorRT version."""
    yield lambda version: install(monkeypatch, version)
    uninstall()
