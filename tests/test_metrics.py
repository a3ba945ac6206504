"""The Prometheus endpoint: one family per quantity with its unit, every family declared once in
`METRICS`, no gauge a counter's rate already gives; `status` reads it (text and --json)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.cli import main
from vehicle_agent.config import parse_config
from vehicle_agent.control.loop import ControlSnapshot
from vehicle_agent.events import EventBus
from vehicle_agent.records import STAGES, AdhesionEstimate, Frame, FrameRecord, QualityMetrics
from vehicle_agent.service.metrics import (
    METRICS,
    PREFIX,
    QUALITY_FAMILIES,
    SPECS,
    UPLINK_FAMILIES,
    DaemonState,
    MetricsServer,
    PipelineCollector,
)
from vehicle_agent.service.status import fetch_status, format_status
from vehicle_agent.uplink.mqtt import MqttUplink

UNITS = ("_seconds", "_bytes", "_celsius", "_rpm", "_ratio")


def _sample_names() -> dict[str, str]:
    """Every sample name a scrape may show → its family in METRICS."""
    names: dict[str, str] = {}
    for spec in METRICS:
        if spec.kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count", "_created"):
                names[spec.exposed + suffix] = spec.name
        else:
            names[spec.exposed] = spec.name
    return names


def assert_families_are_declared(text: str) -> None:
    """Each sample of a scrape belongs to a family of METRICS and uses only its labels."""
    known = _sample_names()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX):
                continue
            assert sample.name in known, f"{sample.name} is not declared in METRICS"
            spec = SPECS[known[sample.name]]
            labels = set(sample.labels) - {"le"}
            assert labels <= set(spec.labels), (sample.name, labels)


def test_each_family_is_one_quantity_named_with_its_unit() -> None:
    names = [spec.exposed for spec in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        # A label splits one quantity (by queue, stage…), never picks between quantities.
        assert not {"name", "metric", "key"} & set(spec.labels), spec.name
        assert "fps" not in spec.name  # the rate of frames_out_total says it
    by_name = {spec.name: spec for spec in METRICS}
    assert by_name["fan_duty_ratio"].kind == "gauge"
    assert by_name["outbox_bytes"].kind == "gauge"
    assert by_name["uplink_sent"].exposed == "vehicle_agent_uplink_sent_total"
    assert by_name["stage_latency_seconds"].kind == "histogram"
    assert by_name["temperature_celsius"].labels == ("sensor",)
    for spec in METRICS:
        if spec.kind == "gauge" and any(u in spec.name for u in ("duty", "temperature", "bytes")):
            assert spec.name.endswith(UNITS), spec.name


def _uplink(tmp_path: Path) -> MqttUplink:
    config = parse_config(
        {
            "agent": {"vehicle_id": "veh-1", "state_dir": str(tmp_path / "state")},
            "uplink": {"type": "mqtt", "broker": "mqtt://127.0.0.1:1"},
        }
    )
    return MqttUplink.from_config(config, EventBus(EVENT_TYPES))


def test_every_uplink_and_quality_figure_has_its_family(tmp_path: Path) -> None:
    """A figure added to `MqttUplink.stats()` must get a family (else it is not served)."""
    uplink = _uplink(tmp_path)
    assert set(uplink.stats()) == set(UPLINK_FAMILIES)
    assert set(UPLINK_FAMILIES.values()) <= set(SPECS)
    quality = QualityMetrics(brightness=1.0, contrast=2.0, sharpness=3.0)
    assert set(quality.as_dict()) == set(QUALITY_FAMILIES)
    assert set(QUALITY_FAMILIES.values()) <= set(SPECS)


@dataclass
class _Queue:
    name: str
    dropped: int
    depth: int

    def qsize(self) -> int:
        return self.depth


@dataclass
class _FakePipeline:
    """What the collector reads of a running `Pipeline`, with known figures."""

    uplink: Any
    frames_out: int = 40
    capture: Any = field(
        default_factory=lambda: SimpleNamespace(
            stats=SimpleNamespace(frames_in=42, frames_missing=1, frames_invalid=0, reconnects=2)
        )
    )
    queues: list[_Queue] = field(
        default_factory=lambda: [_Queue("capture>enhance", 2, 1), _Queue("enhance>analyze", 0, 0)]
    )
    health: dict[str, Any] = field(
        default_factory=lambda: {s: SimpleNamespace(failures=0) for s in STAGES[1:]}
    )
    events: Any = field(default_factory=lambda: SimpleNamespace(counts={"fan_started": 3}))
    fps: float = 9.5
    last_record: FrameRecord | None = None

    def __post_init__(self) -> None:
        self.parts = SimpleNamespace(enhancer=SimpleNamespace(name="classical"), uplink=self.uplink)
        snapshot = ControlSnapshot(
            fan_driver="mcu",
            fan_duty=0.4,
            fan_readback=0.4,
            tach_rpm=5200.0,
            decided_by="cleaning",
            temperatures_c={"sensor": 41.5, "cold_side": 18.0, "hot_side": 47.0},
            cooler_enabled=True,
            cooler_setpoint_c=20.0,
            cleaning_state="burst",
            thermal_level=None,
            alarms=(),
        )
        self.control = SimpleNamespace(snapshot=lambda: snapshot, lens_service_required=False)
        image = np.zeros((8, 8, 3), np.uint8)
        self.last_record = FrameRecord(
            Frame(41, time.monotonic(), 4.1, image, "test://"),
            quality=QualityMetrics(brightness=80.0, contrast=30.0, sharpness=120.0),
            adhesion=AdhesionEstimate(score=0.25, covered_fraction=0.05),
        )


@pytest.fixture
def state(tmp_path: Path) -> DaemonState:
    pipeline: Any = _FakePipeline(_uplink(tmp_path))
    return DaemonState(pipeline=pipeline, state="running", config_digest="abc")


def _scrape(state: DaemonState) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(state))
    text = generate_latest(registry).decode()
    assert_families_are_declared(text)
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def test_a_scrape_serves_each_quantity_in_its_own_family(state: DaemonState) -> None:
    values = _scrape(state)
    assert values["vehicle_agent_frames_out_total"] == 40
    assert values["vehicle_agent_frames_dropped_total{queue=capture>enhance}"] == 2
    assert values["vehicle_agent_queue_frames{queue=capture>enhance}"] == 1
    assert values["vehicle_agent_fan_duty_ratio"] == pytest.approx(0.4)
    assert values["vehicle_agent_fan_speed_rpm"] == 5200
    assert values["vehicle_agent_temperature_celsius{sensor=cold_side}"] == 18
    assert values["vehicle_agent_quality_brightness"] == 80
    assert values["vehicle_agent_adhesion_score_ratio"] == pytest.approx(0.25)
    assert values["vehicle_agent_lens_covered_ratio"] == pytest.approx(0.05)
    assert values["vehicle_agent_uplink_connected"] == 0
    assert values["vehicle_agent_uplink_sent_total"] == 0
    assert values["vehicle_agent_outbox_bytes"] == 0
    assert values["vehicle_agent_outbox_messages"] == 0
    assert values["vehicle_agent_events_total{type=fan_started}"] == 3
    assert not [name for name in values if "fps" in name]


@pytest.fixture
def server(state: DaemonState) -> Iterator[str]:
    server = MetricsServer(state, "127.0.0.1", 0)
    server.start()
    for stage in STAGES[1:]:
        server.observe(stage, 0.004)
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.close()


def test_status_lists_every_stage_in_flow_order(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", server, "--interval", "0"]) == 0
    out = capsys.readouterr().out
    lines = out.split("  stages   (flow order)\n", 1)[1].splitlines()
    assert [line.split()[0] for line in lines] == list(STAGES)
    assert " ".join(lines[0].split()) == "capture 42 frames, 1 missing, 0 invalid, 2 reconnects"
    assert "enhance  classical" in out
    assert "fan      duty 0.40 (mcu)" in out


def test_status_json_is_one_object_with_the_same_figures(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--json", "--url", server, "--interval", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["frames_in"] == 42
    assert data["frames_dropped"] == 2
    assert data["fan_duty"] == pytest.approx(0.4)
    assert data["temperatures_c"] == {"cold_side": 18.0, "hot_side": 47.0, "sensor": 41.5}
    assert data["uplink"]["sent_total"] == 0
    assert [row["stage"] for row in data["stages"]] == list(STAGES)
    assert data["stages"][1] == {"stage": "enhance", "frames": 1, "mean_ms": 4.0, "failures": 0}
    assert data["fps"] is None  # one scrape: no rate


def test_status_measures_the_frame_rate_from_the_counter(state: DaemonState, server: str) -> None:
    pipeline: Any = state.pipeline
    ticks = iter([100.0, 102.0])

    def fifty_frames_later(seconds: float) -> None:
        assert seconds == 1.0
        pipeline.frames_out += 50

    status = fetch_status(server, sleep=fifty_frames_later, clock=lambda: next(ticks))
    assert status.fps == 25.0
    assert ", 25.0 fps" in format_status(status)


def test_status_without_a_daemon_in_json_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:9/metrics"
    assert main(["status", "--json", "--url", url, "--interval", "0"]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["ok"] is False
    assert "no daemon answering" in data["error"]
    assert len(captured.err.strip().splitlines()) == 1
