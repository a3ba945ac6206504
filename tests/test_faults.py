"""Bench fault injection (`--fault`): the spec parser, the shared camera behind reconnects, and
short simulator runs where each injected fault shows in the events, summary.json and report.html."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_simulate import cut_clip
from vehicle_agent.capture.base import FrameSource, RawFrame, SourceError, SourceInfo
from vehicle_agent.cli import main
from vehicle_agent.sim.faults import FaultPlan, FaultSpec, FaultSpecError, parse_fault


def run_bench(
    tmp_path: Path, seconds: float, *args: str, config: str = ""
) -> tuple[dict[str, object], list[dict[str, object]], str]:
    """A short max-speed simulator run; (summary, events, report.html)."""
    clip = cut_clip(tmp_path / "clip.mp4", seconds)
    report = tmp_path / "report"
    extra: list[str] = []
    if config:
        path = tmp_path / "bench.toml"
        path.write_text(config, encoding="utf-8")
        extra = ["--config", str(path)]
    code = main(["simulate", "--video", str(clip), "--report", str(report), *extra, *args])
    assert code == 0
    summary = json.loads((report / "summary.json").read_text())
    lines = (report / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return summary, events, (report / "report.html").read_text()


def of(events: list[dict[str, object]], type_: str) -> list[dict[str, object]]:
    return [e for e in events if e["type"] == type_]


# -- the spec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("camera-stall@10s", FaultSpec("camera-stall", 10.0, 16.0)),
        ("camera-stall@1.5-3", FaultSpec("camera-stall", 1.5, 3.0)),
        ("camera-eos@7s", FaultSpec("camera-eos", 7.0, 7.0)),
        ("enhance-fail@2s", FaultSpec("enhance-fail", 2.0, None)),
        ("enhance-fail@2s-4s", FaultSpec("enhance-fail", 2.0, 4.0)),
        ("broker-loss@3s", FaultSpec("broker-loss", 3.0, 13.0)),
    ],
)
def test_fault_specs_fill_in_their_default_ends(text: str, expected: FaultSpec) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lens-crack@3s", "unknown fault 'lens-crack'"),
        ("camera-stall", "expected camera-stall@START[-END]"),
        ("camera-stall@soon", "expected camera-stall@START[-END]"),
        ("camera-stall@-3s", "expected camera-stall@START[-END]"),
        ("enhance-fail@5s-2s", "END 2 s is not after START 5 s"),
        ("camera-eos@5s-6s", "camera-eos takes no END"),
        ("camera-stall@1s-90s", "at most 60 s"),
    ],
)
def test_bad_fault_specs_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(FaultSpecError, match=re.escape(words)):
        parse_fault(text)


# -- the shared camera ---------------------------------------------------------------------


class CountingSource(FrameSource):
    """A recording of `n` frames at 10 fps; counts how often it was opened and closed."""

    def __init__(self, n: int) -> None:
        super().__init__("fake://counting")
        self.n = n
        self.next = 0
        self.opened = 0
        self.closed = 0

    def open(self) -> SourceInfo:
        self.opened += 1
        self.next = 0
        return SourceInfo(8, 8, 10.0, live=False, description="fake")

    def read(self) -> RawFrame | None:
        if self.next >= self.n:
            return None
        image = np.full((8, 8, 3), self.next, np.uint8)
        self.next += 1
        return RawFrame(image, (self.next - 1) / 10.0)

    def close(self) -> None:
        self.closed += 1


def test_a_stalled_camera_reopened_goes_on_where_it_stalled() -> None:
    """The capture stage abandons a stalled instance and opens a fresh one: the fresh one gets
    the frame the stall began at, then the next ones; the recording is opened only once, and
    the abandoned read, woken by its close, leaves the shared source alone."""
    inner = CountingSource(10)
    plan = FaultPlan([FaultSpec("camera-stall", 0.3, 0.6)])
    factory = plan.source(lambda: inner)
    first = factory()
    first.open()
    assert [first.read() is not None for _ in range(3)] == [True] * 3
    errors: list[Exception] = []

    def stalled_read() -> None:
        try:
            first.read()
        except SourceError as exc:
            errors.append(exc)

    reader = threading.Thread(target=stalled_read)
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # stalled
    first.close()  # the stage gives up on it
    reader.join(1.0)
    assert not reader.is_alive()
    assert "closed while stalled" in str(errors[0])
    assert inner.closed == 0
    second = factory()
    second.open()
    start = time.monotonic()
    frame = second.read()
    assert time.monotonic() - start > 0.1  # the rest of the stall
    assert frame is not None
    assert frame.pts == pytest.approx(0.3)
    rest = []
    while (raw := second.read()) is not None:
        rest.append(raw.pts)
    assert rest == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert inner.opened == 1
    second.close()
    assert inner.closed == 1
    (fault,) = plan.summary()
    assert fault["fired_at_s"] == pytest.approx(0.3)
    assert fault["stalled_wall_s"] == pytest.approx(0.3)


def test_the_end_of_stream_fault_ends_the_recording_at_its_time() -> None:
    plan = FaultPlan([FaultSpec("camera-eos", 0.5, 0.5)])
    source = plan.source(lambda: CountingSource(10))()
    source.open()
    pts = []
    while (raw := source.read()) is not None:
        pts.append(raw.pts)
    assert pts == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert plan.summary()[0]["fired_at_s"] == pytest.approx(0.5)


# -- simulator runs ------------------------------------------------------------------------

FAST_STALL = "[capture]\nstall_timeout_s = 0.5\n"
FAST_PROMOTION = "[enhance.health]\npromote_after_s = 0.2\nmax_latency_ms = 10000\n"
"""Checks soon after the failure ends, and none failing for slowness on a busy test host."""


def test_a_camera_stall_is_lost_resumed_and_reported(tmp_path: Path) -> None:
    summary, events, page = run_bench(
        tmp_path, 3, "--fault", "camera-stall@1s-1.8s", config=FAST_STALL
    )
    (injected,) = of(events, "fault_injected")
    assert (injected["kind"], injected["t"]) == ("camera-stall", 1.0)
    (lost,) = of(events, "source_lost")
    assert "stalled" in str(lost["reason"])
    assert lost["t"] == pytest.approx(0.9)
    (resumed,) = of(events, "source_resumed")
    assert float(resumed["outage_s"]) >= 0.5  # type: ignore[arg-type]
    assert len(of(events, "source_opened")) == 2
    # The replay went on where it stalled: every frame once, in order.
    assert summary["frames_in"] == 30
    assert of(events, "source_ended")[0]["frame"] == 29
    faults = summary["faults"]
    assert isinstance(faults, list)
    (fault,) = faults
    assert fault["kind"] == "camera-stall"
    assert fault["fired_at_s"] == pytest.approx(1.0)
    assert fault["stalled_wall_s"] == pytest.approx(0.8)
    assert "Injected faults" in page
    assert "camera-stall@1s-1.8s" in page


def test_enhance_failure_demotes_then_promotes_and_eos_ends_the_run(tmp_path: Path) -> None:
    # Real-time pacing: the promotion's health check waits `promote_after_s` of wall-clock time,
    # which at --speed max a busy host may not give between the failure's end and the clip's.
    summary, events, page = run_bench(
        tmp_path,
        5,
        "--speed",
        "realtime",
        "--fault",
        "enhance-fail@1s-1.5s",
        "--fault",
        "camera-eos@4s",
        config=FAST_PROMOTION,
    )
    injected = [(e["spec"], e["t"]) for e in of(events, "fault_injected")]
    assert injected == [("enhance-fail@1s-1.5s", 1.0), ("camera-eos@4s", 4.0)]
    (demoted,) = of(events, "enhancer_demoted")
    assert demoted["kind"] == "error"
    assert "injected fault enhance-fail@1s-1.5s" in str(demoted["reason"])
    assert demoted["t"] == pytest.approx(1.0)
    swaps = [(e["reason"], e["current"]) for e in of(events, "model_swapped")]
    assert swaps[0] == ("fallback", "classical")
    (promoted,) = of(events, "enhancer_promoted")
    assert float(promoted["t"]) >= 1.5  # type: ignore[arg-type]
    assert swaps[-1][0] == "promoted"
    (ended,) = of(events, "source_ended")
    assert ended["t"] == pytest.approx(3.9)
    assert summary["frames_in"] == 40
    assert summary["stop_reason"] == "end_of_stream"
    faults = {f["kind"]: f for f in summary["faults"]}  # type: ignore[attr-defined]
    assert faults["enhance-fail"]["fired_at_s"] == pytest.approx(1.0)
    assert faults["enhance-fail"]["until_s"] == pytest.approx(1.5)
    assert faults["enhance-fail"]["failures"] >= 1
    assert faults["camera-eos"]["fired_at_s"] == pytest.approx(4.0)
    assert "enhance-fail@1s-1.5s" in page
    assert "camera-eos@4s" in page
