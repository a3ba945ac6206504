"""BRISQUE: scored when Debian's model files are there, None with one log line when not."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.quality.footage import street
from vehicle_agent.quality import brisque
from vehicle_agent.quality.brisque import BrisqueScorer, find_model_dir
from vehicle_agent.quality.metrics import prepare
from vehicle_agent.quality.monitor import MonitorSettings, QualityMonitor


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No model files anywhere: the environment variable and Debian's folders point nowhere."""
    monkeypatch.delenv(brisque.ENV_DIR, raising=False)
    monkeypatch.setattr(brisque, "DEFAULT_DIRS", (tmp_path / "none",))
    return tmp_path


def test_missing_model_files_give_none_and_one_log_line(
    no_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = BrisqueScorer(interval_s=0.0)
    grey = prepare(street()[0]).grey
    with caplog.at_level(logging.WARNING, logger="vehicle_agent.quality.brisque"):
        scores = [scorer.update(grey, i / 10) for i in range(5)]
    assert scores == [None] * 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "opencv-data" in lines[0]
    assert scorer.unavailable is not None


def test_the_monitor_still_reports_every_other_metric_without_brisque(no_model: Path) -> None:
    monitor = QualityMonitor(MonitorSettings())
    quality, adhesion = monitor.analyze(street()[0], 0.0)
    assert quality is not None
    assert quality.brisque is None
    assert quality.brightness > 0
    assert adhesion is not None


def test_a_folder_with_both_files_is_found_first(no_model: Path) -> None:
    folder = no_model / "quality"
    folder.mkdir()
    (folder / brisque.MODEL_FILE).write_text("x")
    assert find_model_dir(folder) is None  # one file is not enough
    (folder / brisque.RANGE_FILE).write_text("x")
    assert find_model_dir(folder) == folder


def test_a_corrupt_model_file_is_reported_not_raised(
    no_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = no_model / "quality"
    folder.mkdir()
    (folder / brisque.MODEL_FILE).write_text("not a model")
    (folder / brisque.RANGE_FILE).write_text("not a range")
    scorer = BrisqueScorer(folder)
    with caplog.at_level(logging.WARNING):
        assert not scorer.load()
    assert scorer.score(np.zeros((32, 32), np.uint8)) is None
    assert "cannot load" in (scorer.unavailable or "")


def test_scores_are_sampled_once_per_interval_of_video_time() -> None:
    scorer = BrisqueScorer(interval_s=1.0)
    assert scorer.due(0.0)
    scorer._last_t = 0.0
    assert not scorer.due(0.5)
    assert scorer.due(1.0)
    assert scorer.due(-3.0)  # time went back (a new recording): score again


@pytest.mark.skipif(find_model_dir() is None, reason="BRISQUE model files (opencv-data) absent")
def test_a_real_frame_gets_a_brisque_score() -> None:
    scorer = BrisqueScorer()
    score = scorer.score(prepare(street()[0]).grey)
    assert score is not None
    assert 0.0 < score < 100.0
