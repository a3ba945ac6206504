"""`vehicle-agent run` as a process: real GStreamer sources, SIGTERM/SIGINT within 5 s, reconnects."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("gst-launch-1.0") is None,
    reason="gst-launch-1.0 not installed (gstreamer1.0-tools)",
)

LIVE = "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1"


def write_config(tmp_path: Path, uri: str, extra: str = "") -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
state_dir = "{tmp_path}/state"

[capture]
uri = "{uri}"

[capture.reconnect]
initial_s = 0.1
max_s = 0.2

[output]
video = "{tmp_path}/out.mp4"
events = "{tmp_path}/events.jsonl"

[logging]
format = "json"
{extra}
"""
    )
    return config


def events(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s")


def start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vehicle_agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_within_5_s_of_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc = start(write_config(tmp_path, f"gst://{LIVE}"))
    try:
        wait_for(lambda: any(e["type"] == "source_opened" for e in events(tmp_path)), 30)
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 5
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    types = [e["type"] for e in events(tmp_path)]
    assert types[-2:] == ["actuator_safe_state", "pipeline_stopped"]
    assert events(tmp_path)[-1]["reason"] == "signal"
    # JSON logs on stderr, one object per line.
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert any("stopped (signal)" in str(line["msg"]) for line in lines)
    # The video was closed properly and plays back.
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    ok, frame = cap.read()
    assert ok
    assert frame.shape == (240, 320, 3)
    # No gst-launch child is left behind.
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout
    assert children.strip() == ""


def test_a_pipeline_that_stops_is_reported_and_retried(tmp_path: Path) -> None:
    uri = "gst://videotestsrc num-buffers=15 ! video/x-raw,width=160,height=120,framerate=30/1"
    proc = start(write_config(tmp_path, uri))
    try:
        wait_for(lambda: sum(e["type"] == "source_resumed" for e in events(tmp_path)) >= 2, 30)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    seen = events(tmp_path)
    lost = [e for e in seen if e["type"] == "source_lost"]
    assert lost
    assert lost[0]["reason"] == "stream ended"
    assert lost[0]["frame"] == 14
    resumed = [e for e in seen if e["type"] == "source_resumed"]
    assert resumed[0]["frame"] == 14
    assert proc.returncode == 0


def test_bad_config_refuses_to_start_with_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"gst://{LIVE}", "[pipeline]\nqueue_size = -3\n")
    result = subprocess.run(
        [sys.executable, "-m", "vehicle_agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "pipeline.queue_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
