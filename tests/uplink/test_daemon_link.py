"""The real daemon as a process against the real broker: `kill -9` during a broker outage loses
nothing (every telemetry and event sequence number arrives after the restart), and
`vehicle-agent simulate --broker` publishes a run's telemetry and events, telemetry carrying the
scene condition, the model and the camera module's temperatures."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import PASSWORDS, operator_access
from tests.uplink.helpers import CREDENTIAL, Watcher, wait_for
from vehicle_agent.quality.condition import CONDITIONS
from vehicle_agent.secrets import env_name


def _env() -> dict[str, str]:
    return {
        **os.environ,
        env_name(CREDENTIAL): PASSWORDS["veh-1"],
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_SOCKET": "",
    }


def _uplink_toml(broker: Broker, certs: Certs) -> str:
    return f"""
[uplink]
type = "mqtt"
broker = "{broker.url("tls")}"
ca_file = "{certs.ca}"
username = "veh-1"
password_credential = "{CREDENTIAL}"
telemetry_interval_s = 0.2
reconnect_initial_s = 0.05
reconnect_max_s = 0.3
keepalive_s = 5

[uplink.upload]
good_frame_every_s = 0
"""


def _write_daemon_config(tmp_path: Path, broker: Broker, certs: Certs) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 255, (48, 64, 3), np.uint8))
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
vehicle_id = "veh-1"
state_dir = "{tmp_path / "state"}"

[capture]
uri = "{images}"
fps = 20
on_end = "loop"

[output]
events = "{tmp_path / "events.jsonl"}"

[service]
metrics_port = 0

[logging]
format = "json"
{_uplink_toml(broker, certs)}"""
    )
    return config


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vehicle_agent", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _pending(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        (count,) = connection.execute("SELECT count(*) FROM outbox").fetchone()
    connection.close()
    return int(count)


def _stop(process: subprocess.Popen[bytes]) -> bytes:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=15)
    finally:
        process.kill()
    return err


async def test_kill_9_during_a_broker_outage_loses_nothing(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    config = _write_daemon_config(tmp_path, broker, certs)
    db = tmp_path / "state" / "uplink.sqlite3"
    topics = ["fleet/veh-1/front/telemetry", "fleet/veh-1/front/events"]
    async with Watcher(operator_access(broker, certs), topics) as watcher:
        daemon = _start("run", "--config", str(config))
        try:
            await wait_for(lambda: len(watcher.seqs()) >= 3, 30, "telemetry from the daemon")
            await asyncio.to_thread(broker.stop)
            # The daemon keeps going; telemetry and its uplink_lost event wait in the outbox.
            await wait_for(lambda: _pending(db) >= 6, 10, "messages waiting in the outbox")
            daemon.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.communicate)
            held = _pending(db)
            await asyncio.to_thread(broker.start)
            daemon = _start("run", "--config", str(config))
            target = max(watcher.seqs()) + held + 3
            await wait_for(
                lambda: bool(watcher.seqs()) and max(watcher.seqs()) >= target, 30, "catch-up"
            )
        finally:
            err = await asyncio.to_thread(_stop, daemon)
        await wait_for(lambda: "pipeline_stopped" in str(watcher.json_on("/events")), 10, "stop")
    assert daemon.returncode == 0, err.decode()[-2000:]
    telemetry = sorted(set(watcher.seqs()))
    assert telemetry == list(range(1, telemetry[-1] + 1)), "a telemetry sequence number is missing"
    events = sorted(set(watcher.seqs("/events")))
    assert events == list(range(1, events[-1] + 1)), "an event is missing"
    types = [e["type"] for e in watcher.json_on("/events")]
    assert types.count("pipeline_started") == 2
    assert "uplink_lost" in types
    assert _pending(db) == 0


async def test_simulate_with_broker_publishes_the_run(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    from tests.test_simulate import cut_clip  # noqa: PLC0415 - reuses the bench's clip helper

    clip = await asyncio.to_thread(cut_clip, tmp_path / "clip.mp4", 2.0)
    config = tmp_path / "sim.toml"
    config.write_text(f'[agent]\nvehicle_id = "veh-1"\n{_uplink_toml(broker, certs)}')
    report = tmp_path / "report"
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/#"]) as watcher:
        sim = _start(
            "simulate",
            "--config",
            str(config),
            "--video",
            str(clip),
            "--report",
            str(report),
            "--broker",
            broker.url("tls"),
        )
        err = await asyncio.to_thread(_stop_when_done, sim)
        assert sim.returncode == 0, err.decode()[-2000:]
        await wait_for(lambda: bool(watcher.on("/status")), 5, "status")
        await wait_for(lambda: watcher.on("/status")[-1].payload == b"offline", 5, "offline")
    seqs = watcher.seqs()
    assert seqs
    assert seqs == list(range(1, len(seqs) + 1))
    last = watcher.json_on("/telemetry")[-1]
    assert last["frames_out"] == 20
    types = [e["type"] for e in watcher.json_on("/events")]
    assert "pipeline_started" in types
    assert "pipeline_stopped" in types
    assert (report / "uplink.sqlite3").is_file()


async def test_simulate_telemetry_tells_the_condition_model_and_module_temperatures(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    """Every telemetry message of `simulate --broker` carries the scene condition and the model
    (name@version) of a frame in the report's frames.csv, and the simulated camera module's
    sensor, cold and hot side temperatures; none is the null it used to be."""
    from tests.test_simulate import cut_clip  # noqa: PLC0415 - reuses the bench's clip helper

    clip = await asyncio.to_thread(cut_clip, tmp_path / "clip.mp4", 2.0)
    config = tmp_path / "sim.toml"
    config.write_text(f'[agent]\nvehicle_id = "veh-1"\n{_uplink_toml(broker, certs)}')
    report = tmp_path / "report"
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/front/telemetry"]) as watcher:
        sim = _start(
            "simulate",
            "--config",
            str(config),
            "--video",
            str(clip),
            "--report",
            str(report),
            "--broker",
            broker.url("tls"),
            # Real time, so the run spans the simulated module's temperature reports (every
            # 0.5 s); at --speed max a fast machine ends the clip before the first one.
            "--speed",
            "realtime",
        )
        err = await asyncio.to_thread(_stop_when_done, sim)
        assert sim.returncode == 0, err.decode()[-2000:]
        await wait_for(
            lambda: any(t["frames_out"] == 20 for t in watcher.json_on("/telemetry")),
            5,
            "the last telemetry",
        )
    with (report / "frames.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    conditions = {r["condition"] for r in rows}
    models = {r["model"] or None for r in rows}
    assert conditions <= set(CONDITIONS)
    assert any(m is not None and m.startswith("fast-enhance@") for m in models), models
    telemetry = [t for t in watcher.json_on("/telemetry") if t["frames_out"] > 0]
    assert telemetry
    for message in telemetry:
        assert message["condition"] in conditions, message
        assert message["model"] in models, message
    last = max(telemetry, key=lambda t: t["seq"])
    assert (last["condition"], last["model"]) == (rows[-1]["condition"], rows[-1]["model"] or None)
    module = {k: v for k, v in last["temperatures_c"].items() if k.startswith("camera/")}
    assert set(module) == {"camera/sensor", "camera/cold_side", "camera/hot_side"}, last
    assert all(-40.0 < v < 125.0 for v in module.values()), module


def _stop_when_done(process: subprocess.Popen[bytes]) -> bytes:
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return err
