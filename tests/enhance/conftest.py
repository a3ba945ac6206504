"""Fixtures of the enhance tests: model folders in tmp_path, a fake clock, no leftover threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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
