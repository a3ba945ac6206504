"""Several cameras on one vehicle, against the real Mosquitto: two daemons with two camera ids on
one vehicle id keep their own connection (client id), status and Last Will, telemetry and events
(each its own seq on its own topic) and commands; a vehicle-wide command reaches both; an outbox
of the single-camera layout is migrated, and one camera's outbox is refused to another."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import operator_access
from tests.uplink.helpers import Watcher, make_uplink, mqtt_config, wait_for
from tests.uplink.test_daemon_link import _start, _stop, _write_daemon_config
from tools.fleet import FleetClient
from vehicle_agent.uplink.outbox import Outbox, OutboxError, OutMessage
from vehicle_agent.uplink.topics import MessageClass, Topics

CAMERAS = ("front", "rear")


def _camera_config(tmp_path: Path, broker: Broker, certs: Certs, camera: str) -> Path:
    """The daemon config of test_daemon_link, for `camera` of veh-1 with its own state_dir."""
    folder = tmp_path / camera
    folder.mkdir()
    config = _write_daemon_config(folder, broker, certs)
    text = config.read_text()
    config.write_text(
        text.replace('vehicle_id = "veh-1"\n', f'vehicle_id = "veh-1"\ncamera_id = "{camera}"\n', 1)
    )
    return config


def _of(watcher: Watcher, camera: str, suffix: str) -> list[dict[str, object]]:
    return watcher.json_on(f"fleet/veh-1/{camera}/{suffix}")


async def test_two_camera_daemons_on_one_vehicle_keep_separate_status_telemetry_and_commands(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    configs = {camera: _camera_config(tmp_path, broker, certs, camera) for camera in CAMERAS}
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/#"]) as watcher:
        daemons = {camera: _start("run", "--config", str(configs[camera])) for camera in CAMERAS}
        errors: dict[str, bytes] = {}
        try:
            for camera in CAMERAS:
                await wait_for(
                    lambda c=camera: len(_of(watcher, c, "telemetry")) >= 5,  # type: ignore[misc]
                    30,
                    f"telemetry from the {camera} camera",
                )
            # One camera's command reaches that camera only, and it answers as itself.
            front = await operator.send("veh-1", "get_status", camera="front", command_id="c-f")
            rear = await operator.send("veh-1", "get_status", camera="rear", command_id="c-r")
            assert front.ok
            assert rear.ok
            assert (front.camera_id, rear.camera_id) == ("front", "rear")
            assert front.result is not None
            assert rear.result is not None
            assert front.result["telemetry"]["camera_id"] == "front"
            assert rear.result["telemetry"]["camera_id"] == "rear"
            # The vehicle-wide command: every camera runs it and replies, each as itself.
            replies, silent = await operator.send_all("veh-1", "ping", command_id="c-all")
            assert silent == set()
            assert sorted(replies) == ["front", "rear"]
            assert all(r.ok and r.id == "c-all" for r in replies.values())
        finally:
            for camera, daemon in daemons.items():
                errors[camera] = await asyncio.to_thread(_stop, daemon)
        for camera in CAMERAS:
            await wait_for(
                lambda c=camera: "pipeline_stopped" in str(_of(watcher, c, "events")),  # type: ignore[misc]
                10,
                f"the {camera} camera's last events",
            )
    for camera, daemon in daemons.items():
        assert daemon.returncode == 0, errors[camera].decode()[-2000:]
    for camera in CAMERAS:
        telemetry = _of(watcher, camera, "telemetry")
        # Its own counter on its own topic: 1, 2, 3, … without a gap.
        seqs = [int(str(t["seq"])) for t in telemetry]
        assert seqs == list(range(1, len(seqs) + 1)), camera
        assert {t["camera_id"] for t in telemetry} == {camera}
        events = _of(watcher, camera, "events")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), camera
        assert {e["camera_id"] for e in events} == {camera}
        types = [e["type"] for e in events]
        # Neither took the other's connection over: one connection each, never lost.
        assert types.count("uplink_connected") == 1, (camera, types)
        assert "uplink_lost" not in types, camera
        handled = {
            str(e["data"]["id"])  # type: ignore[index]
            for e in events
            if e["type"] == "command_handled"
        }
        other = "c-r" if camera == "front" else "c-f"
        assert f"c-{camera[0]}" in handled
        assert other not in handled
        assert "c-all" in handled
        status = [m.payload for m in watcher.on(f"fleet/veh-1/{camera}/status")]
        assert status[0] == b"online"
        assert status[-1] == b"offline"
    assert not watcher.on("fleet/veh-1/telemetry")  # nothing in the single-camera layout
    assert "already connected" not in broker.log_text()


@pytest.mark.usefixtures("vehicle_password")
async def test_a_camera_that_drops_out_is_offline_by_its_will_while_the_other_stays_online(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    uplinks = {
        camera: make_uplink(mqtt_config(broker, certs, tmp_path / camera, camera=camera))[0]
        for camera in CAMERAS
    }
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/+/status"]) as watcher:
        for uplink in uplinks.values():
            await uplink.start()
        try:
            for camera in CAMERAS:
                await wait_for(
                    lambda c=camera: bool(watcher.on(f"/{c}/status")),  # type: ignore[misc]
                    10,
                    f"{camera} online",
                )
            link = uplinks["rear"]._link
            assert link is not None
            link.abandon()  # no DISCONNECT: the broker publishes the rear camera's Last Will
            await wait_for(
                lambda: b"offline" in [m.payload for m in watcher.on("/rear/status")],
                10,
                "the rear camera's will",
            )
            assert [m.payload for m in watcher.on("/front/status")] == [b"online"]
        finally:
            for uplink in uplinks.values():
                await uplink.close()


@pytest.mark.usefixtures("vehicle_password")
async def test_an_outbox_of_the_single_camera_layout_is_migrated_and_its_old_status_cleared(
    broker: Broker, certs: Certs, tmp_path: Path, operator: FleetClient
) -> None:
    """What the previous version left: a retained `online` on fleet/veh-1/status and telemetry
    queued in the outbox on fleet/veh-1/telemetry. The new daemon sends that telemetry on its
    camera's topic and clears the stale retained status."""
    await operator.client.publish("fleet/veh-1/status", b"online", qos=1, retain=True)
    config = mqtt_config(broker, certs, tmp_path)
    old = Outbox(tmp_path / "state" / "uplink.sqlite3", 2**20, {MessageClass.TELEMETRY: 3600.0})
    old.write(
        [OutMessage(MessageClass.TELEMETRY, "fleet/veh-1/telemetry", b'{"seq": 7}')],
        counters={"telemetry_seq": 7},
    )
    old.close()
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/#"]) as watcher:
        uplink, _ = make_uplink(config)
        await uplink.start()
        try:
            await wait_for(
                lambda: any(m.payload == b'{"seq": 7}' for m in watcher.on("/front/telemetry")),
                10,
                "the stored telemetry on the camera's topic",
            )
            await wait_for(lambda: len(watcher.seqs("/front/telemetry")) >= 2, 10, "new telemetry")
            await wait_for(
                lambda: any(m.payload == b"" for m in watcher.on("fleet/veh-1/status")),
                10,
                "the old status cleared",
            )
        finally:
            await uplink.close()
    # The stored one first, then the counter goes on from the old outbox's.
    assert watcher.seqs("/front/telemetry")[:2] == [7, 8]
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/status"], "late") as late:
        await asyncio.sleep(0.5)  # a retained message would arrive right after the subscription
    assert late.messages == []


def test_one_cameras_outbox_is_refused_to_another_camera_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "uplink.sqlite3"
    front = Topics("fleet", "veh-1", "front")
    outbox = Outbox(path, 2**20, {})
    outbox.claim("veh-1", "front", front.migrated)
    outbox.close()
    outbox = Outbox(path, 2**20, {})
    try:
        assert not outbox.claim("veh-1", "front", front.migrated).legacy  # its own: fine
        with pytest.raises(OutboxError, match=r"belongs to camera 'front'.*own agent\.state_dir"):
            outbox.claim("veh-1", "rear", Topics("fleet", "veh-1", "rear").migrated)
    finally:
        outbox.close()
