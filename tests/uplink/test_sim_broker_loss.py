"""Bench fault `broker-loss`: the simulator's uplink reaches a real Mosquitto through a proxy that
the fault cuts; the uplink reports the loss and the reconnect, and the report shows the fault."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.test_simulate import cut_clip
from tests.uplink.broker import Broker, Certs
from tests.uplink.helpers import mqtt_config
from vehicle_agent.sim.faults import parse_fault
from vehicle_agent.sim.simulate import BenchHardware, simulate


@pytest.mark.usefixtures("vehicle_password")
async def test_broker_loss_drops_the_link_until_its_end(
    broker: Broker, certs: Certs, tmp_path: Path
) -> None:
    clip = await asyncio.to_thread(cut_clip, tmp_path / "clip.mp4", 4.0)
    config = mqtt_config(broker, certs, tmp_path)
    report = tmp_path / "report"
    hardware = BenchHardware(faults=(parse_fault("broker-loss@1s-2.5s"),))
    summary = await simulate(
        config, clip, report, "realtime", broker=broker.url("tls"), hardware=hardware
    )
    events = [json.loads(line) for line in (report / "events.jsonl").read_text().splitlines()]
    (injected,) = [e for e in events if e["type"] == "fault_injected"]
    assert (injected["kind"], injected["t"]) == ("broker-loss", 1.0)
    connected = [e for e in events if e["type"] == "uplink_connected"]
    lost = [e for e in events if e["type"] == "uplink_lost"]
    assert connected
    assert connected[0]["t"] < 1.0
    assert lost
    assert 1.0 <= lost[0]["t"] < 2.5
    back = [e for e in connected if e["t"] >= 2.5]
    assert back, connected
    assert back[0]["outage_s"] >= 1.0
    assert back[0]["pending"] > 0  # the outbox kept what was published meanwhile
    faults = summary["faults"]
    assert isinstance(faults, list)
    (fault,) = faults
    assert fault["kind"] == "broker-loss"
    assert fault["fired_at_s"] == pytest.approx(1.0)
    assert fault["until_s"] == pytest.approx(2.5)
    assert fault["connections_cut"] >= 1
    page = (report / "report.html").read_text()
    assert "broker-loss@1s-2.5s" in page
