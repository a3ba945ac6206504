"""MqttUplink against a real Mosquitto: telemetry and events over TLS, availability with a Last
Will, nothing lost across a broker restart, refusals (ACL, TLS, credentials) handled as errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs
from tests.uplink.conftest import operator_access
from tests.uplink.helpers import Watcher, make_uplink, mqtt_config, record, wait_for

pytestmark = pytest.mark.usefixtures("vehicle_password")


async def test_telemetry_and_events_arrive_with_consecutive_seq_and_status_online(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    config = mqtt_config(broker, certs, tmp_path)
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/#"]) as watcher:
        uplink, recorder = make_uplink(config, lambda: {"frames_in": 3, "frames_out": 3})
        await uplink.start()
        for i in range(3):
            await uplink.on_frame(record(i))
        await wait_for(lambda: len(watcher.seqs()) >= 5, 10, "5 telemetry messages")
        assert watcher.on("/status")[0].payload == b"online"
        await uplink.close()
        await wait_for(lambda: watcher.on("/status")[-1].payload == b"offline", 5, "offline")
    seqs = watcher.seqs()
    assert seqs == list(range(1, len(seqs) + 1))
    first = watcher.json_on("/telemetry")[0]
    assert first["vehicle_id"] == "veh-1"
    assert first["frames_in"] == 3
    assert first["quality"]["brightness"] == 120.0
    assert first["backend"] == "passthrough"
    connected = recorder.of("uplink_connected")
    assert connected
    assert connected[0].data["broker"] == config.uplink.broker  # type: ignore[union-attr]
    # The uplink's own events went out on the events topic, numbered too.
    events = watcher.json_on("/events")
    assert {"uplink_connected", "frame_upload_queued"} <= {e["type"] for e in events}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_broker_restart_during_telemetry_loses_no_sequence_number(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    config = mqtt_config(broker, certs, tmp_path)
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/front/telemetry"]) as watcher:
        uplink, recorder = make_uplink(config)
        await uplink.start()
        try:
            await wait_for(lambda: len(watcher.seqs()) >= 3, 10, "telemetry before the outage")
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(1.0)  # ~10 telemetry messages go to the outbox meanwhile
            assert uplink.outbox.pending >= 5
            await asyncio.to_thread(broker.start)
            during = uplink.telemetry.seq
            await wait_for(
                lambda: bool(watcher.seqs()) and max(watcher.seqs()) >= during + 3, 15, "catch-up"
            )
        finally:
            await uplink.close()
    seqs = sorted(set(watcher.seqs()))
    assert seqs == list(range(1, seqs[-1] + 1)), "a sequence number is missing"
    assert [e.type for e in recorder.events].count("uplink_lost") >= 1
    reconnected = recorder.of("uplink_connected")[-1]
    assert isinstance(reconnected.data["outage_s"], float)
    assert reconnected.data["outage_s"] > 0.5


async def test_an_outbox_that_cannot_open_degrades_to_no_link_with_an_event(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    uplink, recorder = make_uplink(mqtt_config(broker, certs, tmp_path))
    await uplink.start()
    await uplink.on_frame(record(0))
    uplink.on_event(recorder.events[0])
    await uplink.close()
    (lost,) = recorder.of("uplink_lost")
    assert "outbox" in str(lost.data["reason"])
    assert lost.data["retry_in_s"] is None
    assert uplink.stats()["outbox_pending"] == 0


async def test_a_failing_disk_is_counted_as_dropped_and_reported(
    broker: Broker, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uplink, recorder = make_uplink(mqtt_config(broker, certs, tmp_path))
    await uplink.start()
    try:
        await wait_for(lambda: uplink.connected, 10, "connected")
        outbox = uplink.outbox

        def full(*_args: object, **_kwargs: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(outbox, "write", full)
        await wait_for(lambda: uplink.stats()["dropped"] >= 2, 10, "drops counted")
        await wait_for(lambda: bool(recorder.of("outbox_dropped")), 10, "outbox_dropped")
    finally:
        await uplink.close()
    assert "telemetry:write_failed" in str(recorder.of("outbox_dropped")[0].data["counts"])


def test_a_socket_closed_after_the_loop_ended_is_ignored_on_any_thread() -> None:
    """paho closes a garbage-collected client's socket whenever the collector runs: on the loop's
    own thread after the loop closed, that must not raise (it fails a run as an unraisable
    exception in `__del__`)."""
    from vehicle_agent.uplink.link import Link  # noqa: PLC0415 - the private seam under test

    async def make() -> Link:
        link = Link(
            client_id="gc-test", username=None, password=None, tls=None, will_topic="t/status",
            keepalive=30, connect_timeout=1.0, on_message=lambda _m, _s: None, on_lost=lambda: None,
        )  # fmt: skip
        link._misc = asyncio.get_running_loop().create_task(asyncio.sleep(60))  # the keep-alive
        await asyncio.sleep(0)
        return link

    loop = asyncio.new_event_loop()
    link = loop.run_until_complete(make())
    loop.close()

    class Sock:
        def fileno(self) -> int:
            return 7

    link._on_socket_close(None, None, Sock())  # type: ignore[arg-type]
    link._on_socket_register_write(None, None, Sock())  # type: ignore[arg-type]
