"""Model updates through the real broker: every refusal reported with its reason and nothing written
outside staging, a transfer resumed across a restart, the rollback of a model that fails its
health check, and the daemon swapping to the shipped model that `tools.model_update` publishes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.update.helpers import Keys, offer_for, resign, tiny_model
from tests.uplink.broker import OPERATOR, Broker, Certs
from tests.uplink.conftest import PASSWORDS, operator_access
from tests.uplink.helpers import (
    CREDENTIAL,
    OPERATOR_CREDENTIAL,
    Recorder,
    Watcher,
    make_uplink,
    mqtt_config,
    operator_cli,
    wait_for,
)
from tools import model_update
from tools.fleet import FleetClient
from vehicle_agent.config import Config
from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.enhance.store import ModelStore, default_dirs, shipped_models_dir
from vehicle_agent.secrets import env_name
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest
from vehicle_agent.update.settings import UpdateConfig
from vehicle_agent.update.transfer import split
from vehicle_agent.uplink.mqtt import MqttUplink

pytestmark = pytest.mark.usefixtures("vehicle_password")


def update_config(
    broker: Broker, certs: Certs, tmp_path: Path, keys: Keys, **update: Any
) -> Config:
    """veh-1 with the two trusted keys, model 'tiny' (1.0.0 in a model folder) and golden
    frames from a folder of small images."""
    base = mqtt_config(broker, certs, tmp_path, telemetry_interval_s=5)
    golden = tmp_path / "golden"
    golden.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(golden / f"{i}.png"), rng.integers(30, 220, (48, 64, 3), np.uint8))
    shipped = tmp_path / "shipped"
    if not shipped.exists():
        tiny_model(shipped, "1.0.0")
    settings = {
        "trusted_keys": keys.trusted(),
        "device": "test-device",
        "golden_frames": golden,
        "stall_s": 1.0,
        "progress_interval_s": 0.0,
        **update,
    }
    enhance = base.enhance.model_copy(update={"model": "tiny", "model_dirs": [shipped]})
    return base.model_copy(
        update={"update": UpdateConfig.model_validate(settings), "enhance": enhance}
    )


def running(config: Config) -> str:
    dirs = default_dirs(config.agent.state_dir, config.enhance.model_dirs)
    return ModelStore(dirs).resolve("tiny").label


async def publish_offer(operator: FleetClient, offer: SignedUpdate | bytes) -> None:
    payload = offer if isinstance(offer, bytes) else offer.to_bytes()
    await operator.client.publish("fleet/veh-1/update/offer", payload, qos=1, retain=True)


async def publish_chunks(
    operator: FleetClient, offer: SignedUpdate, data: bytes, indices: range | None = None
) -> None:
    manifest = UpdateManifest.model_validate(offer.manifest)
    chunks = split(data, manifest.chunk_size)
    for i in indices if indices is not None else range(len(chunks)):
        topic = f"fleet/veh-1/update/data/{offer.update_id}/{i}"
        await operator.client.publish(topic, chunks[i], qos=1, retain=True)


def has(recorder: Recorder, type_: str, count: int = 1, **data: Any) -> Callable[[], bool]:
    """A predicate: at least `count` events of `type_` whose fields include `data`."""

    def predicate() -> bool:
        found = [e for e in recorder.of(type_) if data.items() <= e.data.items()]
        return len(found) >= count

    return predicate


def reasons(recorder: Recorder) -> list[str]:
    return [str(e.data["reason"]) for e in recorder.of("model_update_refused")]


async def started(config: Config) -> tuple[MqttUplink, Recorder]:
    uplink, recorder = make_uplink(config)
    await uplink.start()
    await wait_for(lambda: uplink.connected, 10, "connected")
    return uplink, recorder


async def test_each_refusal_is_reported_and_nothing_outside_staging_changes(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    keys = Keys()
    config = update_config(broker, certs, tmp_path, keys, max_chunk_bytes=2048)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    data = (model / "model.onnx").read_bytes()
    good = offer_for(model, keys.new)
    cases: list[tuple[str, SignedUpdate | bytes]] = [
        ("malformed", b"{not json"),
        ("unsigned", SignedUpdate(manifest=good.manifest)),
        ("unknown_key", offer_for(model, keys.stranger, "rogue")),
        ("bad_signature", offer_for(model, keys.stranger, "fleet-new")),
        ("expired", resign(good, keys.new, "fleet-new", expires_at=int(time.time()) - 5)),
        ("incompatible", resign(good, keys.new, "fleet-new", devices=["other-device"])),
        ("oversize", offer_for(model, keys.new, chunk_size=4096)),
        ("not_newer", offer_for(model, keys.old, "fleet-old", version="1.0.0")),
    ]
    uplink, recorder = await started(config)
    try:
        for i, (reason, offer) in enumerate(cases):
            await publish_offer(operator, offer)
            await wait_for(has(recorder, "model_update_refused", i + 1), 10, f"refusal {reason}")
            assert reasons(recorder)[i] == reason
        # hash mismatch: a signed offer whose chunks carry other bytes of the same length.
        tampered = bytearray(data)
        tampered[100] ^= 0x55
        await publish_chunks(operator, good, bytes(tampered))
        await publish_offer(operator, good)
        await wait_for(lambda: len(reasons(recorder)) > len(cases), 10, "hash mismatch")
        assert reasons(recorder)[-1] == "hash_mismatch"
        details = [e.data["detail"] for e in recorder.of("model_update_refused")]
        assert all(details), details
    finally:
        await uplink.close()
    root = config.agent.state_dir / "models"
    # Only staging was written (what was refused, so that a redelivery is ignored).
    assert [p.name for p in root.iterdir()] == [".staging"]
    assert [p.name for p in (root / ".staging").iterdir()] == ["outcomes.json"]
    assert running(config) == "tiny@1.0.0"


async def test_a_transfer_resumes_after_a_restart_and_installs(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    keys = Keys()
    config = update_config(broker, certs, tmp_path, keys)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    data = (model / "model.onnx").read_bytes()
    offer = offer_for(model, keys.new, chunk_size=1024)
    chunks = UpdateManifest.model_validate(offer.manifest).chunks
    half = chunks // 2
    uplink, recorder = await started(config)
    try:
        await publish_chunks(operator, offer, data, range(half))
        await publish_offer(operator, offer)
        await wait_for(
            lambda: any(
                e.data["received_bytes"] == half * 1024
                for e in recorder.of("model_update_progress")
            ),
            10,
            "the first half",
        )
    finally:
        await uplink.close()  # the vehicle stops (or loses the link) half way
    await publish_chunks(operator, offer, data, range(half, chunks))
    start = time.monotonic()
    uplink, recorder = await started(config)
    try:
        await wait_for(lambda: bool(recorder.of("model_update_installed")), 15, "installed")
        elapsed = time.monotonic() - start
    finally:
        await uplink.close()
    offered = recorder.of("model_update_offered")
    assert offered[0].data["have_bytes"] == half * 1024
    installed = recorder.of("model_update_installed")[0].data
    assert installed["model"] == "tiny@1.0.1"
    assert installed["previous"] == "tiny@1.0.0"
    assert running(config) == "tiny@1.0.1"
    print(f"resumed transfer + install + health check: {elapsed:.2f} s")


async def test_a_transfer_resumes_after_a_broker_outage(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    keys = Keys()
    config = update_config(broker, certs, tmp_path, keys)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    data = (model / "model.onnx").read_bytes()
    offer = offer_for(model, keys.new, chunk_size=1024)
    chunks = UpdateManifest.model_validate(offer.manifest).chunks
    uplink, recorder = await started(config)
    try:
        await publish_chunks(operator, offer, data, range(2))
        await publish_offer(operator, offer)
        await wait_for(has(recorder, "model_update_progress", received_bytes=2048), 10, "2 chunks")
        await asyncio.to_thread(broker.restart)  # the link drops; retained messages persist
        async with FleetClient(operator_access(broker, certs)) as again:
            await publish_chunks(again, offer, data, range(2, chunks))
        await wait_for(has(recorder, "uplink_connected", 2), 15, "reconnected")
        await wait_for(has(recorder, "model_update_installed"), 15, "installed")
    finally:
        await uplink.close()
    assert len(recorder.of("model_update_offered")) == 1
    assert running(config) == "tiny@1.0.1"


async def test_an_oversize_last_chunk_is_refused_within_one_stall_and_not_asked_for_again(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    """Issue 25: a last chunk 70,000 bytes longer than signed was ignored, and the transfer
    subscribed again every `stall_s` until the offer expired (an hour), never refused."""
    keys = Keys()
    stall_s = 3.0
    config = update_config(broker, certs, tmp_path, keys, stall_s=stall_s)
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    data = (model / "model.onnx").read_bytes()
    offer = offer_for(model, keys.new, chunk_size=1024)
    manifest = UpdateManifest.model_validate(offer.manifest)
    last = manifest.chunks - 1
    await publish_chunks(operator, offer, data, range(last))
    oversize = split(data, 1024)[last] + b"x" * 70_000
    topic = f"fleet/veh-1/update/data/{offer.update_id}/{last}"
    await operator.client.publish(topic, oversize, qos=1, retain=True)
    uplink, recorder = await started(config)
    try:
        start = time.monotonic()
        await publish_offer(operator, offer)
        await wait_for(has(recorder, "model_update_refused"), stall_s, "refused within stall_s")
        took = time.monotonic() - start
        await asyncio.sleep(2 * stall_s)  # two more stalls: nothing is asked for again
        wanted = sorted(uplink.subscriptions.wanted)
    finally:
        await uplink.close()
    refused = recorder.of("model_update_refused")[0].data
    print(f"oversize last chunk refused {took:.2f} s after the offer (stall_s {stall_s})")
    assert refused["reason"] == "bad_chunk"
    assert refused["update_id"] == offer.update_id
    assert f"chunk {last} is {len(oversize)} bytes" in str(refused["detail"])
    assert len(recorder.of("model_update_refused")) == 1
    assert wanted == ["fleet/veh-1/update/offer"]  # no chunk subscription is left
    assert not recorder.of("model_update_installed")
    staging = config.agent.state_dir / "models" / ".staging"
    assert [p.name for p in staging.iterdir()] == ["outcomes.json"]
    assert running(config) == "tiny@1.0.0"


async def test_a_model_that_fails_its_health_check_is_rolled_back_and_never_retried(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    keys = Keys()
    config = update_config(broker, certs, tmp_path, keys)
    uplink, recorder = await started(config)
    try:
        for version, kind in (("1.0.1", "nan"), ("1.0.2", "blank")):
            model = tiny_model(tmp_path / kind, version, kind)
            offer = offer_for(model, keys.new)
            await publish_chunks(operator, offer, (model / "model.onnx").read_bytes())
            await publish_offer(operator, offer)
            await wait_for(
                has(recorder, "model_rolled_back", model=f"tiny@{version}"), 15, "rollback"
            )
            assert running(config) == "tiny@1.0.0"
        rolled = [e.data for e in recorder.of("model_rolled_back")]
        assert [r["stage"] for r in rolled] == ["health_check", "health_check"]
        assert "nan" in str(rolled[0]["reason"])
        assert "blank" in str(rolled[1]["reason"])
        assert rolled[0]["restored"] == "tiny@1.0.0"
        # The same version, signed again, is refused: it is marked bad.
        # (another manifest: an identical one is the same update, ignored as already handled)
        again = offer_for(tmp_path / "nan" / "tiny", keys.old, "fleet-old", expires_in_s=999)
        await publish_offer(operator, again)
        await wait_for(lambda: bool(reasons(recorder)), 10, "refusal")
        assert reasons(recorder) == ["bad_version"]
    finally:
        await uplink.close()
    assert not recorder.of("model_update_installed")
    versions = config.agent.state_dir / "models" / ".versions" / "tiny"
    assert not versions.exists() or not list(versions.iterdir())


async def test_tools_publish_to_a_group_and_each_vehicle_installs(
    broker: Broker,
    certs: Certs,
    tmp_path: Path,
    operator: FleetClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys()
    monkeypatch.setenv(env_name("veh2-password"), PASSWORDS["veh-2"])
    uplinks = []
    for vehicle in ("veh-1", "veh-2"):
        config = update_config(broker, certs, tmp_path / vehicle, keys)
        agent = config.agent.model_copy(update={"vehicle_id": vehicle})
        uplink_config = config.uplink.model_copy(
            update={"username": vehicle}
            | ({"password_credential": "veh2-password"} if vehicle == "veh-2" else {})
        )
        uplinks.append(
            await started(config.model_copy(update={"agent": agent, "uplink": uplink_config}))
        )
    model = tiny_model(tmp_path / "src", "1.0.1", "other")
    offer = offer_for(model, keys.new)
    try:
        await model_update.publish(operator, offer, model / "model.onnx", ["veh-1", "veh-2"])
        for _, recorder in uplinks:
            await wait_for(has(recorder, "model_update_installed", model="tiny@1.0.1"), 15, "both")
    finally:
        for uplink, _ in uplinks:
            await uplink.close()


# -- the daemon, end to end -------------------------------------------------------------------


def _daemon_config(
    tmp_path: Path, broker: Broker, certs: Certs, public: str, update: str = "confirm_after_s = 1.0"
) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 255, (96, 128, 3), np.uint8))
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
vehicle_id = "veh-1"
state_dir = "{tmp_path / "state"}"

[capture]
uri = "{images}"
fps = 10
on_end = "loop"

[service]
metrics_port = 0

[update]
device = "bench"
{update}

[update.trusted_keys]
fleet-2026 = "{public}"

[uplink]
type = "mqtt"
broker = "{broker.url("tls")}"
ca_file = "{certs.ca}"
username = "veh-1"
password_credential = "{CREDENTIAL}"
telemetry_interval_s = 5
reconnect_initial_s = 0.05
reconnect_max_s = 0.3

[uplink.upload]
good_frame_every_s = 0
"""
    )
    return config


def _start_daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vehicle_agent", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_tools_publish_the_shipped_model_and_the_daemon_swaps_to_it(
    broker: Broker, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_dir = tmp_path / "keys"
    private, public = model_update.keygen(keys_dir, "fleet-2026")
    shipped, _, newer = shipped_and_next()
    offer_file = tmp_path / "offer.json"
    assert (
        model_update.main(
            [
                "sign",
                str(shipped),
                "--key",
                str(private),
                "--key-id",
                "fleet-2026",
                "--version",
                newer,
                "--devices",
                "bench",
                "--out",
                str(offer_file),
            ]
        )
        == 0
    )
    config = _daemon_config(tmp_path, broker, certs, public)
    env = {
        **os.environ,
        env_name(CREDENTIAL): PASSWORDS["veh-1"],
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_SOCKET": "",
    }
    daemon = _start_daemon(config, env)
    monkeypatch.setenv(env_name(OPERATOR_CREDENTIAL), PASSWORDS[OPERATOR])
    broker_args = operator_cli(broker, certs)
    try:
        start = time.monotonic()
        code = await asyncio.to_thread(
            model_update.main,
            [*broker_args, "publish", str(offer_file), str(shipped), "veh-1", "--watch",
             "--timeout", "60"],
        )  # fmt: skip
        elapsed = time.monotonic() - start
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.to_thread(daemon.communicate, timeout=20)
        finally:
            daemon.kill()
    assert code == 0, err.decode()[-3000:]
    assert daemon.returncode == 0, err.decode()[-3000:]
    print(f"publish → model_swapped: {elapsed:.2f} s")
    active = tmp_path / "state" / "models" / "fast-enhance"
    assert active.is_symlink()
    manifest = json.loads((active / "manifest.json").read_text())
    assert manifest["version"] == newer


async def test_a_daemon_that_keeps_crashing_after_the_swap_rolls_back_and_says_so(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    private, public = model_update.keygen(tmp_path / "keys", "fleet-2026")
    shipped, current, newer = shipped_and_next()
    offer = model_update.make_offer(
        shipped, model_update.load_private_key(private), "fleet-2026", version=newer
    )
    config = _daemon_config(
        tmp_path, broker, certs, public, "confirm_after_s = 600.0\nmax_crashes = 2"
    )
    env = {**os.environ, env_name(CREDENTIAL): PASSWORDS["veh-1"], "NOTIFY_SOCKET": ""}
    active = tmp_path / "state" / "models" / "fast-enhance"
    async with (
        FleetClient(operator_access(broker, certs)) as operator,
        Watcher(operator_access(broker, certs), ["fleet/veh-1/front/events"]) as watcher,
    ):
        await model_update.publish(operator, offer, shipped / "model.onnx", ["veh-1"])
        daemon = _start_daemon(config, env)
        try:
            await wait_for(lambda: "model_swapped" in types(watcher), 30, "the swap")
            assert active.is_symlink()
            for started in (2, 3):  # two crashes after the swap (kill -9, no clean stop)
                daemon.kill()
                await asyncio.to_thread(daemon.communicate)
                daemon = _start_daemon(config, env)
                await wait_for(count_of(watcher, "pipeline_started", started), 30, "a start")
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            await asyncio.to_thread(daemon.communicate, timeout=20)
        await wait_for(lambda: "model_rolled_back" in types(watcher), 10, "the rollback report")
    rolled = next(e["data"] for e in watcher.json_on("/events") if e["type"] == "model_rolled_back")
    assert rolled["model"] == f"fast-enhance@{newer}"
    assert rolled["stage"] == "crash_loop"
    assert rolled["restored"] == f"fast-enhance@{current}"
    assert not active.exists()  # the pointer is gone: the shipped model runs again


def types(watcher: Watcher) -> list[str]:
    return [str(e["type"]) for e in watcher.json_on("/events")]


def count_of(watcher: Watcher, type_: str, count: int) -> Callable[[], bool]:
    return lambda: types(watcher).count(type_) >= count


def shipped_and_next() -> tuple[Path, str, str]:
    """The shipped fast-enhance folder, its version, and a newer one to publish."""
    folder = shipped_models_dir() / "fast-enhance"
    version = read_manifest(folder).version
    parts = [int(p) for p in re.split(r"[-+]", version, maxsplit=1)[0].split(".")]
    parts[-1] += 1
    return folder, version, ".".join(str(p) for p in parts)
