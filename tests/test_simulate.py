"""`vehicle-agent simulate` on real footage: the bench report and its stable keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from vehicle_agent.cli import main
from vehicle_agent.sim.simulate import sample_video

SUMMARY_KEYS = {"frames_in", "frames_out", "frames_dropped", "fps"}


def cut_clip(dst: Path, seconds: float, fps: float = 10.0) -> Path:
    """The first `seconds` of the bundled street footage, re-encoded at `fps`."""
    cap = cv2.VideoCapture(str(sample_video()))
    writer = None
    for _ in range(round(seconds * fps)):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
    assert writer is not None
    writer.release()
    cap.release()
    return dst


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_sample_footage_is_bundled_real_video() -> None:
    video = sample_video()
    assert video.is_file()
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 300
    assert (video.parent / "LICENSE-street_vtest.md").is_file()


def test_simulate_at_max_speed_keeps_every_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", 6)
    report = tmp_path / "report"
    assert main(["simulate", "--video", str(clip), "--report", str(report), "--speed", "max"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["frames_in"] == summary["frames_out"] == 60
    assert summary["frames_dropped"] == 0
    assert summary["fps"] > 0
    events = [json.loads(line) for line in (report / "events.jsonl").read_text().splitlines()]
    assert all({"t", "frame", "type"} <= e.keys() for e in events)
    assert [e["type"] for e in events][:2] == ["pipeline_started", "source_opened"]
    ended = next(e for e in events if e["type"] == "source_ended")
    assert ended["frame"] == 59
    assert ended["t"] == pytest.approx(5.9)
    assert video_frames(report / "output.mp4") == 60
    width = cv2.VideoCapture(str(report / "output.mp4")).get(cv2.CAP_PROP_FRAME_WIDTH)
    assert width == 2 * 768  # raw | enhanced side by side
    rows = (report / "frames.csv").read_text().splitlines()
    assert len(rows) == 61
    assert rows[0].startswith("frame,t,enhancer,brightness,contrast,sharpness")
    out = capsys.readouterr().out
    assert "60 frames in, 60 out, 0 dropped" in out
    assert str(report / "output.mp4") in out


@pytest.mark.slow
def test_realtime_replay_paces_like_the_camera_and_accounts_for_every_frame(
    tmp_path: Path,
) -> None:
    """What holds on a quiet machine and a loaded one alike: capture delivers every frame of the
    recording, no sooner than the footage's own clock, and every frame either leaves the
    pipeline or is counted as dropped by a named queue (a replay at real time stands for a
    camera, which does not wait for a slow stage). How many drop depends on the machine's load:
    the real-time figures are the soak's and the pipeline benchmark's (docs/benchmarks.md)."""
    report = tmp_path / "report"
    code = main(["simulate", "--report", str(report), "--speed", "realtime"])
    assert code == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["frames_in"] == 300
    assert summary["frames_missing"] == 0
    assert summary["frames_out"] + summary["frames_dropped"] == 300
    assert sum(summary["drops_by_queue"].values()) == summary["frames_dropped"]
    # Paced like the camera: the replay took at least as long as the footage lasts.
    assert summary["wall_s"] >= 29.5


def test_missing_video_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--video", str(tmp_path / "nope.mp4"), "--report", str(tmp_path)])
    assert code == 2
    assert "nope.mp4: no such video file" in capsys.readouterr().err


def test_a_broker_never_reached_fails_the_run_in_one_line_with_what_was_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", 2.0)
    report = tmp_path / "report"
    code = main(
        [
            "simulate", "--video", str(clip), "--report", str(report), "--speed", "max",
            "--broker", "mqtt://no-such-host.invalid:1883",
        ]
    )  # fmt: skip
    assert code == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vehicle-agent:")]
    assert "--broker mqtt://no-such-host.invalid:1883: never connected (" in line
    left = json.loads((report / "summary.json").read_text())["uplink"]["left_in_outbox"]
    assert left > 0
    assert f"{left} messages left undelivered in {report / 'uplink.sqlite3'}" in line


def test_undecodable_video_ends_the_run_with_a_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    config = tmp_path / "bench.toml"
    config.write_text("[capture.reconnect]\nmax_attempts = 2\ninitial_s = 0.01\nmax_s = 0.02\n")
    report = tmp_path / "report"
    code = main(
        ["simulate", "--config", str(config), "--video", str(junk), "--report", str(report)]
    )
    assert code == 1
    events = [json.loads(line) for line in (report / "events.jsonl").read_text().splitlines()]
    gave_up = next(e for e in events if e["type"] == "source_gave_up")
    assert "cannot" in gave_up["reason"]
    summary = json.loads((report / "summary.json").read_text())
    assert summary["stop_reason"] == "source_gave_up"


def test_simulate_with_injected_drops_writes_adhesion_events_columns_and_ground_truth(
    tmp_path: Path,
) -> None:
    clip = cut_clip(tmp_path / "clip.mp4", 12)
    report = tmp_path / "report"
    args = ["simulate", "--video", str(clip), "--report", str(report), "--inject", "drops@6s:4%"]
    assert main(args) == 0
    events = [json.loads(line) for line in (report / "events.jsonl").read_text().splitlines()]
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)  # in video-time order
    detected = next(e for e in events if e["type"] == "adhesion_detected")
    assert 6.0 <= detected["t"] <= 7.0
    # Unseeded, at full speed: the cleaning is still timed by the video (a 3 s burst).
    started = next(e for e in events if e["type"] == "cleaning_started")
    verifying = next(e for e in events if e["type"] == "cleaning_verifying")
    assert verifying["t"] - started["t"] == pytest.approx(started["burst_s"], abs=0.25)
    assert detected["score"] >= 0.5
    assert 0.0 < detected["covered_fraction"] <= 1.0
    with (report / "frames.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {
        "noise",
        "saturation",
        "clipped_shadows",
        "clipped_highlights",
        "brisque",
        "condition",
        "adhesion_score",
        "adhesion_covered",
        "adhesion_detected",
    } <= rows[0].keys()
    assert rows[0]["condition"] == "normal"
    assert rows[0]["adhesion_detected"] == "0"
    assert any(r["adhesion_detected"] == "1" and float(r["adhesion_covered"]) > 0 for r in rows)
    summary = json.loads((report / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    (drops,) = summary["injected"]
    assert drops["kind"] == "drops"
    assert drops["appeared_s"] == pytest.approx(6.0)
    assert drops["covered_fraction"] > 0.02


def test_a_bad_inject_spec_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--report", str(tmp_path), "--inject", "drops@5s,snow@9s"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--inject" in err
    assert "unknown kind 'snow'" in err
    assert "snow@9s" in err
