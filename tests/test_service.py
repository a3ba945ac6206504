"""Running as a service: sd_notify READY/WATCHDOG/STATUS/STOPPING, SIGHUP reload, metrics, status."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_metrics import assert_families_are_declared
from tests.test_simulate import cut_clip
from vehicle_agent.cli import main
from vehicle_agent.config import load_config
from vehicle_agent.service.daemon import Daemon, run_daemon
from vehicle_agent.service.notify import SystemdNotifier
from vehicle_agent.sim.simulate import sample_video


class FakeSystemd:
    """A unix datagram socket standing in for systemd's notify socket; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, line: str) -> list[float]:
        return [t for t, m in self.messages if line in m.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    systemd = FakeSystemd(tmp_path / "notify.sock")
    yield systemd
    systemd.close()


def write_config(tmp_path: Path, *, backend: str = "classical", extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
state_dir = "{tmp_path}/state"

[capture]
uri = "file://{sample_video()}"
on_end = "loop"
pacing = "realtime"

[enhance.backend]
type = "{backend}"

[output]
events = "{tmp_path}/events.jsonl"

[service]
metrics_port = 0
{extra}
"""
    )
    return path


def events(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def wait_until(predicate: object, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {limit_s} s")
        await asyncio.sleep(0.05)


async def test_ready_watchdog_at_half_the_period_no_pings_while_blocked_and_stopping(
    tmp_path: Path, fake_systemd: FakeSystemd
) -> None:
    env = {"NOTIFY_SOCKET": str(fake_systemd.path), "WATCHDOG_USEC": "400000"}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval_s == pytest.approx(0.2)
    config_path = write_config(tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_daemon(load_config(config_path), config_path, stop=stop, notifier=notifier)
    )
    await wait_until(lambda: fake_systemd.times("READY=1"))
    ready_at = fake_systemd.times("READY=1")[0]
    # READY only once frames flow through the pipeline's stages.
    assert any("STATUS=running" in m for _, m in fake_systemd.messages)
    await asyncio.sleep(1.0)
    time.sleep(1.2)  # noqa: ASYNC251 - blocks the event loop on purpose, as a stuck stage would
    blocked_until = time.monotonic()
    await asyncio.sleep(0.8)
    stop.set()
    result = await asyncio.wait_for(task, 10)
    await asyncio.sleep(0.2)
    pings = fake_systemd.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 6
    # About half of WATCHDOG_USEC between pings while the loop runs…
    assert 0.15 <= statistics.median(gaps) <= 0.3
    # …and none while it is blocked: one gap spans the whole block.
    assert max(gaps) >= 1.1
    assert not [t for t in pings if blocked_until - 1.1 < t < blocked_until - 0.05]
    stopping = fake_systemd.times("STOPPING=1")
    assert stopping
    assert stopping[0] > ready_at
    assert result.stop_reason == "signal"


async def test_sighup_applies_an_enhancement_change_without_stopping_the_pipeline(
    tmp_path: Path,
) -> None:
    config_path = write_config(tmp_path)
    stop = asyncio.Event()
    daemons: list[Daemon] = []
    task = asyncio.create_task(
        run_daemon(load_config(config_path), config_path, stop=stop, on_started=daemons.append)
    )
    await wait_until(lambda: daemons)
    daemon = daemons[0]
    await wait_until(lambda: daemon.state.state == "running")
    pipeline = daemon.state.pipeline
    assert pipeline is not None
    assert pipeline.enhancer.name == "classical"
    write_config(tmp_path, backend="passthrough")
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: pipeline.enhancer.name == "passthrough")
    assert daemon.state.pipeline is pipeline  # the same pipeline, not a restart
    frames_before = pipeline.frames_out
    await wait_until(lambda: pipeline.frames_out > frames_before + 3)
    assert pipeline.last_record is not None
    assert pipeline.last_record.enhancer == "passthrough"
    stop.set()
    await asyncio.wait_for(task, 10)
    reloaded = [e for e in events(tmp_path) if e["type"] == "config_reloaded"]
    assert reloaded == [
        {
            "t": reloaded[0]["t"],
            "frame": None,
            "type": "config_reloaded",
            "sections": "enhance",
            "applied": "live",
            "config_digest": load_config(config_path).digest(),
        }
    ]
    types = [e["type"] for e in events(tmp_path)]
    assert types.count("pipeline_stopped") == 1


async def test_sighup_with_an_invalid_config_keeps_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = write_config(tmp_path)
    running = load_config(config_path)
    stop = asyncio.Event()
    daemons: list[Daemon] = []
    task = asyncio.create_task(
        run_daemon(running, config_path, stop=stop, on_started=daemons.append)
    )
    await wait_until(lambda: daemons)
    daemon = daemons[0]
    await wait_until(lambda: daemon.state.state == "running")
    pipeline = daemon.state.pipeline
    config_path.write_text(config_path.read_text() + "\n[pipeline]\nqueue_size = 999\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(lambda: any(e["type"] == "config_reload_refused" for e in events(tmp_path)))
    assert daemon.config is running
    assert daemon.state.pipeline is pipeline
    frames = pipeline.frames_out if pipeline else 0
    await wait_until(lambda: pipeline is not None and pipeline.frames_out > frames + 3)
    stop.set()
    await asyncio.wait_for(task, 10)
    refused = next(e for e in events(tmp_path) if e["type"] == "config_reload_refused")
    assert "pipeline.queue_size" in str(refused["error"])
    assert any(
        "reload refused" in r.getMessage() and "keeping the running config" in r.getMessage()
        for r in caplog.records
    )


async def test_sighup_with_a_new_source_restarts_only_the_pipeline(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    stop = asyncio.Event()
    daemons: list[Daemon] = []
    task = asyncio.create_task(
        run_daemon(load_config(config_path), config_path, stop=stop, on_started=daemons.append)
    )
    await wait_until(lambda: daemons)
    daemon = daemons[0]
    await wait_until(lambda: daemon.state.state == "running")
    first = daemon.state.pipeline
    await wait_until(lambda: first is not None and first.frames_out > 2)
    write_config(tmp_path, extra="[pipeline]\nqueue_size = 8\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_until(
        lambda: (
            daemon.state.pipeline is not None
            and daemon.state.pipeline is not first
            and daemon.state.state == "running"
        )
    )
    assert daemon.config.pipeline.queue_size == 8
    totals_before = daemon.state.counters()["frames_out"]
    await wait_until(lambda: daemon.state.counters()["frames_out"] > totals_before)
    stop.set()
    await asyncio.wait_for(task, 10)
    reloaded = next(e for e in events(tmp_path) if e["type"] == "config_reloaded")
    assert reloaded["applied"] == "restart"
    assert reloaded["sections"] == "pipeline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_endpoint_answers_during_a_simulate_run_and_status_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = tmp_path / "bench.toml"
    config.write_text(f"[service]\nmetrics_port = {port}\n")
    scraped: list[str] = []
    printed: list[str] = []

    def scrape() -> None:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.05)
                continue
            if 'seconds_bucket{le="0.01",stage="output"}' in text:
                scraped.append(text)
                code = main(["status", "--url", url, "--interval", "0.2"])
                printed.append(f"{code}")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=scrape)
    thread.start()
    report = tmp_path / "report"
    clip = cut_clip(tmp_path / "clip.mp4", 8)
    code = main(
        [
            *("simulate", "--config", str(config), "--video", str(clip)),
            *("--report", str(report), "--speed", "realtime"),
        ]
    )
    thread.join()
    assert code == 0
    assert scraped, "the endpoint never answered with pipeline metrics"
    text = scraped[0]
    for name in (
        "vehicle_agent_frames_in_total",
        "vehicle_agent_frames_dropped_total",
        'vehicle_agent_stage_latency_seconds_bucket{le="0.01",stage="enhance"}',
        "vehicle_agent_fan_duty_ratio",
    ):
        assert name in text
    assert_families_are_declared(text)
    backend = re.search(r'vehicle_agent_enhancer_info\{backend="([^"]+)"\}', text)
    assert backend is not None
    assert printed == ["0"]
    out = capsys.readouterr().out
    assert "simulating" in out
    assert f"enhance  {backend[1]}" in out
    assert " fps" in out  # the rate of frames_out_total between two scrapes
    stages = [line.split()[0] for line in out.split("(flow order)\n", 1)[1].splitlines()[:6]]
    assert stages == ["capture", "enhance", "analyze", "act", "uplink", "output"]


def test_status_without_a_daemon_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["status", "--url", f"http://127.0.0.1:{port}/metrics"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no daemon answering" in err[0]


def test_the_daemon_process_tells_systemd_ready_then_stopping_on_sigterm(
    tmp_path: Path, fake_systemd: FakeSystemd
) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    config_path = write_config(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(fake_systemd.path), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vehicle_agent", "run", "--config", str(config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not fake_systemd.times("READY=1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake_systemd.times("READY=1"), "no READY=1 within 30 s"
        time.sleep(1.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert len(fake_systemd.times("WATCHDOG=1")) >= 2
    stopping = fake_systemd.times("STOPPING=1")
    assert stopping
    assert stopping[0] > fake_systemd.times("READY=1")[0]


def test_a_hung_enhance_thread_stops_the_watchdog_and_sigterm_still_exits_safe(
    tmp_path: Path, fake_systemd: FakeSystemd
) -> None:
    """The enhance stage stuck on one frame for good: the watchdog pings stop within
    WatchdogSec (systemd would restart the daemon), STATUS says why, and SIGTERM ends the
    process within 5 s with the fan in its safe state, although the thread never returns."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    watchdog_s = 2.0
    config_path = write_config(
        tmp_path,
        extra='[pipeline]\nstall_s = 1.0\n\n[control.fan]\ndriver = "gpiozero"\npin = "GPIO18"\n',
    )
    marker = tmp_path / "hung-at"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(fake_systemd.path),
        "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
        "GPIOZERO_PIN_FACTORY": "mock",
        "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hung_enhance", str(config_path), str(marker), "30"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the enhance stage never reached its hang"
        time.sleep(0.05)
        hung_at = float(marker.read_text())
        time.sleep(2 * watchdog_s)  # systemd would have restarted it by now
        assert proc.poll() is None
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        exit_s = time.monotonic() - stopped_at
    finally:
        proc.kill()
    pings = fake_systemd.times("WATCHDOG=1")
    assert pings, err.decode()[-2000:]
    assert [t for t in pings if t < hung_at], "no pings while frames moved"
    late = [t for t in pings if t > hung_at + watchdog_s]
    assert not late, f"pings {[round(t - hung_at, 2) for t in late]} s after the hang"
    assert any("STATUS=stalled: stage enhance" in m for _, m in fake_systemd.messages)
    print(f"SIGTERM to exit with a hung enhance thread: {exit_s:.2f} s")
    assert exit_s < 5.0, err.decode()[-2000:]
    types = [e["type"] for e in events(tmp_path)]
    assert "stage_stalled" in types
    assert "shutdown_forced" in types
    safe = [e for e in events(tmp_path) if e["type"] == "actuator_safe_state"]
    assert safe, types
    assert "pipeline_stopped" in types
