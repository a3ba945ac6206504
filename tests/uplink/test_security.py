"""Nothing accepted from strangers, nothing sent to them: the broker's refusals are errors
(reason code 135 outside the vehicle's subtree, bad credentials), TLS checks the CA and the
server name, a TLS link never falls back to plain TCP, and a client certificate can replace
the password. The Last Will says `offline` when the link drops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.uplink.broker import Broker, Certs, free_port
from tests.uplink.conftest import PASSWORDS, operator_access
from tests.uplink.helpers import CREDENTIAL, Watcher, make_uplink, mqtt_config, wait_for
from vehicle_agent.config import ConfigError, parse_config
from vehicle_agent.secrets import env_name


async def test_a_publish_outside_the_vehicle_subtree_is_refused_counted_and_not_retried(
    broker: Broker, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """veh-2's account publishing as veh-1: the broker answers PUBACK 135 (not authorized)."""
    monkeypatch.setenv(env_name(CREDENTIAL), PASSWORDS["veh-2"])
    config = mqtt_config(broker, certs, tmp_path, username="veh-2")
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/#"]) as watcher:
        uplink, recorder = make_uplink(config)
        await uplink.start()
        try:
            await wait_for(lambda: len(recorder.of("uplink_refused")) >= 2, 10, "refusals")
            await wait_for(
                lambda: uplink.pump.dropped.get("telemetry", {}).get("refused", 0) >= 3, 10, "drops"
            )
            # Not retried: the outbox does not grow with refused telemetry.
            await asyncio.sleep(0.5)
            assert uplink.outbox.pending < 10
        finally:
            await uplink.close()
    refused = {e.data["message_class"]: e.data for e in recorder.of("uplink_refused")}
    assert refused["telemetry"]["reason_code"] == 135
    assert refused["telemetry"]["reason"] == "Not authorized"
    assert refused["telemetry"]["topic"] == "fleet/veh-1/front/telemetry"
    assert refused["status"]["reason_code"] == 135
    # One event per class and code, not one per message.
    assert len(recorder.of("uplink_refused")) <= 4
    assert watcher.messages == []
    assert uplink.stats()["connected"] == 0.0


async def test_wrong_password_is_a_refused_connection_reported_once_and_retried(
    broker: Broker, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_name(CREDENTIAL), "wrong")
    uplink, recorder = make_uplink(mqtt_config(broker, certs, tmp_path))
    await uplink.start()
    try:
        await wait_for(lambda: bool(recorder.of("uplink_lost")), 10, "uplink_lost")
        await asyncio.sleep(0.5)  # several attempts
    finally:
        await uplink.close()
    (lost,) = recorder.of("uplink_lost")
    assert "refused the connection" in str(lost.data["reason"])
    assert "Bad user name or password" in str(lost.data["reason"]) or "Not authorized" in str(
        lost.data["reason"]
    )
    assert uplink.connects == 0


@pytest.mark.usefixtures("vehicle_password")
async def test_a_certificate_for_another_name_is_refused(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    """The impostor listener's certificate is signed by the right CA but names another host."""
    uplink, recorder = make_uplink(mqtt_config(broker, certs, tmp_path, listener="impostor"))
    await uplink.start()
    try:
        await wait_for(lambda: bool(recorder.of("uplink_lost")), 10, "uplink_lost")
    finally:
        await uplink.close()
    reason = str(recorder.of("uplink_lost")[0].data["reason"])
    assert "certificate verify failed" in reason
    assert "mismatch" in reason
    assert uplink.connects == 0


@pytest.mark.usefixtures("vehicle_password")
async def test_tls_never_falls_back_to_plain_tcp(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    """mqtts:// pointed at a plain listener fails; what it sent is a TLS hello, no MQTT CONNECT
    and no password. A config with TLS files and an mqtt:// URL is refused outright."""
    received = bytearray()
    got = asyncio.Event()

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read(4096))
        got.set()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(capture, "127.0.0.1", port)
    config = mqtt_config(broker, certs, tmp_path)
    uplink_table = config.uplink.model_dump(mode="json")
    uplink_table["broker"] = f"mqtts://127.0.0.1:{port}"
    config = parse_config({"agent": config.agent.model_dump(mode="json"), "uplink": uplink_table})
    uplink, recorder = make_uplink(config)
    try:
        await uplink.start()
        await asyncio.wait_for(got.wait(), 10)
        await wait_for(lambda: bool(recorder.of("uplink_lost")), 10, "uplink_lost")
    finally:
        await uplink.close()
        server.close()
        await server.wait_closed()
    assert received[:1] == b"\x16", "not a TLS handshake record"
    assert b"MQTT" not in received
    assert PASSWORDS["veh-1"].encode() not in received
    # And against the real broker's plain listener: refused, never connected.
    plain = mqtt_config(broker, certs, tmp_path / "b")
    plain_table = plain.uplink.model_dump(mode="json")
    plain_table["broker"] = f"mqtts://127.0.0.1:{broker.ports['plain']}"
    plain = parse_config({"agent": plain.agent.model_dump(mode="json"), "uplink": plain_table})
    uplink, recorder = make_uplink(plain)
    await uplink.start()
    try:
        await wait_for(lambda: bool(recorder.of("uplink_lost")), 10, "uplink_lost")
    finally:
        await uplink.close()
    assert uplink.connects == 0
    with pytest.raises(ConfigError, match="plain TCP is refused"):
        parse_config({"uplink": {**plain_table, "broker": broker.url("plain")}})


async def test_a_client_certificate_replaces_the_password(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    config = mqtt_config(
        broker,
        certs,
        tmp_path,
        vehicle=certs.client_cn,
        listener="mtls",
        username=None,
        client_cert_file=str(certs.client_cert),
        client_key_file=str(certs.client_key),
    )
    topic = f"fleet/{certs.client_cn}/front/telemetry"
    async with Watcher(operator_access(broker, certs), [topic]) as watcher:
        uplink, _ = make_uplink(config)
        await uplink.start()
        try:
            await wait_for(lambda: len(watcher.seqs()) >= 2, 10, "telemetry over mutual TLS")
        finally:
            await uplink.close()


@pytest.mark.usefixtures("vehicle_password")
async def test_the_last_will_says_offline_when_the_link_drops(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    async with Watcher(operator_access(broker, certs), ["fleet/veh-1/front/status"]) as watcher:
        uplink, _ = make_uplink(mqtt_config(broker, certs, tmp_path))
        await uplink.start()
        try:
            await wait_for(lambda: len(watcher.messages) >= 1, 10, "online")
            link = uplink._link
            assert link is not None
            link.abandon()  # the socket closes without DISCONNECT: the broker sends the will
            await wait_for(lambda: len(watcher.messages) >= 3, 10, "offline, then online again")
        finally:
            await uplink.close()
    assert [m.payload for m in watcher.messages[:3]] == [b"online", b"offline", b"online"]
