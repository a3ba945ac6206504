"""Service: the Prometheus endpoint on localhost, read from the running pipeline at scrape time."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from vehicle_agent import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from vehicle_agent.control.loop import ControlSnapshot
    from vehicle_agent.pipeline import Pipeline

logger = logging.getLogger(__name__)

PREFIX = "vehicle_agent"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


@dataclass
class DaemonState:
    """What the endpoint reports: the pipeline running now, plus totals of earlier ones.

    A config reload that restarts the pipeline must not make counters go backwards.
    """

    pipeline: Pipeline | None = None
    state: str = "starting"
    config_digest: str = ""
    carried: dict[str, float] = field(default_factory=dict)

    def retire(self, pipeline: Pipeline) -> None:
        """Fold a finished pipeline's counters into the totals."""
        for key, value in _counters(pipeline).items():
            self.carried[key] = self.carried.get(key, 0.0) + value
        if self.pipeline is pipeline:
            self.pipeline = None

    def counters(self) -> dict[str, float]:
        totals = dict(self.carried)
        if self.pipeline is not None:
            for key, value in _counters(self.pipeline).items():
                totals[key] = totals.get(key, 0.0) + value
        return totals


def _counters(pipeline: Pipeline) -> dict[str, float]:
    stats = pipeline.capture.stats
    counters = {
        "frames_in": float(stats.frames_in),
        "frames_out": float(pipeline.frames_out),
        "frames_missing": float(stats.frames_missing),
        "frames_invalid": float(stats.frames_invalid),
        "source_reconnects": float(stats.reconnects),
    }
    for queue in pipeline.queues:
        counters[f"dropped:{queue.name}"] = float(queue.dropped)
    for stage, health in pipeline.health.items():
        counters[f"failures:{stage}"] = float(health.failures)
    for event_type, count in pipeline.events.counts.items():
        counters[f"event:{event_type}"] = float(count)
    return counters


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: a single quantity, its unit in the name (Prometheus conventions)."""

    name: str
    """Family name after `vehicle_agent_`; counters are exposed with `_total`, infos with `_info`."""
    kind: Literal["counter", "gauge", "info", "histogram"]
    help: str
    labels: tuple[str, ...] = ()

    @property
    def exposed(self) -> str:
        """The sample name a scrape shows (a histogram's `_bucket`, `_sum`, `_count` aside)."""
        suffix = {"counter": "_total", "info": "_info"}.get(self.kind, "")
        return f"{PREFIX}_{self.name}{suffix}" if self.name else f"{PREFIX}{suffix}"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "", "info", "Daemon version, state and config digest", ("version", "state", "config")
    ),
    MetricSpec("frames_in", "counter", "Frames delivered by the source"),
    MetricSpec(
        "frames_out",
        "counter",
        "Frames that left the pipeline; the frame rate is its rate(), e.g. "
        "`rate(vehicle_agent_frames_out_total[1m])`",
    ),
    MetricSpec("frames_missing", "counter", "Frames a live camera missed while it was lost"),
    MetricSpec("frames_invalid", "counter", "Frames that could not be decoded"),
    MetricSpec("source_reconnects", "counter", "Times a lost source came back"),
    MetricSpec("frames_dropped", "counter", "Frames dropped by a full queue", ("queue",)),
    MetricSpec("stage_failures", "counter", "Frames a stage failed on", ("stage",)),
    MetricSpec("events", "counter", "Events emitted (docs/events.md)", ("type",)),
    MetricSpec(
        "stage_latency_seconds",
        "histogram",
        "Time a stage spent on a frame (the enhance stage's is the inference time)",
        ("stage",),
    ),
    MetricSpec("enhancer", "info", "Enhancement backend in use", ("backend",)),
    MetricSpec("queue_frames", "gauge", "Frames waiting in each queue between stages", ("queue",)),
    MetricSpec("fan_duty_ratio", "gauge", "Fan duty cycle the control applies, 0-1"),
    MetricSpec("fan_speed_rpm", "gauge", "Fan speed from its tachometer, revolutions per minute"),
    MetricSpec(
        "temperature_celsius",
        "gauge",
        "Camera module temperatures: image sensor, cooler cold and hot side",
        ("sensor",),
    ),
    MetricSpec("cooler_enabled", "gauge", "Refrigeration chip on (1) or off (0)"),
    MetricSpec("alarms_active", "gauge", "Thermal and sensor alarms active now"),
    MetricSpec(
        "control",
        "info",
        "Cleaning state and what decides the fan",
        ("cleaning", "fan_decided_by", "thermal", "fan_driver", "alarms"),
    ),
    MetricSpec(
        "lens_service_required",
        "gauge",
        "1 while the lens needs service (cleaning retries spent), until a cleaning succeeds or "
        "clear_lens_service",
    ),
    MetricSpec("quality_brightness", "gauge", "Mean luma of the last output frame, 0-255"),
    MetricSpec(
        "quality_contrast", "gauge", "Standard deviation of luma of the last output frame, 0-255"
    ),
    MetricSpec(
        "quality_sharpness", "gauge", "Variance of the Laplacian of luma of the last output frame"
    ),
    MetricSpec(
        "adhesion_score_ratio",
        "gauge",
        "Lens adhesion score, 0 (clean) to 1; 0.5 is the alarm threshold",
    ),
    MetricSpec("lens_covered_ratio", "gauge", "Fraction of the frame on soiled tiles, 0-1"),
    MetricSpec("uplink_connected", "gauge", "Whether the fleet link is up (1) or down (0)"),
    MetricSpec("uplink_connects", "counter", "Successful connections to the broker"),
    MetricSpec("uplink_sent", "counter", "Messages the broker acknowledged"),
    MetricSpec(
        "uplink_dropped", "counter", "Messages the outbox dropped (budget, expiry, refusal)"
    ),
    MetricSpec("outbox_messages", "gauge", "Messages waiting in the outbox"),
    MetricSpec(
        "outbox_bytes", "gauge", "Size of the messages waiting in the outbox, bytes (estimate)"
    ),
    MetricSpec("uplink_telemetry_seq", "gauge", "Sequence number of the last telemetry message"),
)
"""Every family the endpoint serves, once; docs/service.md's table is generated from it."""

SPECS: Mapping[str, MetricSpec] = {spec.name: spec for spec in METRICS}

UPLINK_FAMILIES: Mapping[str, str] = {
    "connected": "uplink_connected",
    "connects": "uplink_connects",
    "sent": "uplink_sent",
    "dropped": "uplink_dropped",
    "outbox_pending": "outbox_messages",
    "outbox_bytes": "outbox_bytes",
    "telemetry_seq": "uplink_telemetry_seq",
}
"""`Uplink.stats()` key → its family in METRICS."""

QUALITY_FAMILIES: Mapping[str, str] = {
    "brightness": "quality_brightness",
    "contrast": "quality_contrast",
    "sharpness": "quality_sharpness",
}
"""`QualityMetrics.as_dict()` key → its family in METRICS."""


def _spec(name: str, *kinds: str) -> tuple[str, MetricSpec]:
    spec = SPECS[name]
    if spec.kind not in kinds:
        raise ValueError(f"metric {name!r} is a {spec.kind}, not a {' or '.join(kinds)}")
    return (f"{PREFIX}_{name}" if name else PREFIX), spec


def family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty counter or gauge family of METRICS' `name`."""
    full, spec = _spec(name, "counter", "gauge")
    if spec.kind == "counter":
        return CounterMetricFamily(full, spec.help, labels=list(spec.labels))
    return GaugeMetricFamily(full, spec.help, labels=list(spec.labels))


def info_family(name: str, value: dict[str, str]) -> InfoMetricFamily:
    """The info family of METRICS' `name` with one sample."""
    full, spec = _spec(name, "info")
    info = InfoMetricFamily(full, spec.help)
    info.add_metric([], value)
    return info


def _one(name: str, value: float) -> Metric:
    metric = family(name)
    metric.add_metric([], value)
    return metric


class PipelineCollector(Collector):
    """Builds the metric families from `DaemonState` each time Prometheus scrapes."""

    def __init__(self, state: DaemonState) -> None:
        self.state = state
        self._unknown: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        state = self.state
        yield info_family(
            "", {"version": __version__, "state": state.state, "config": state.config_digest}
        )
        totals = state.counters()
        for name in ("frames_in", "frames_out", "frames_missing", "frames_invalid"):
            yield _one(name, totals.get(name, 0.0))
        yield _one("source_reconnects", totals.get("source_reconnects", 0.0))
        yield _labelled(totals, "dropped:", "frames_dropped")
        yield _labelled(totals, "failures:", "stage_failures")
        yield _labelled(totals, "event:", "events")
        pipeline = state.pipeline
        if pipeline is None:
            return
        yield info_family("enhancer", {"backend": pipeline.parts.enhancer.name})
        depth = family("queue_frames")
        for queue in pipeline.queues:
            depth.add_metric([queue.name], queue.qsize())
        yield depth
        if pipeline.control is not None:
            yield from _control_metrics(pipeline.control.snapshot())
            yield _one("lens_service_required", float(pipeline.control.lens_service_required))
        record = pipeline.last_record
        if record is not None and record.quality is not None:
            for key, value in record.quality.as_dict().items():
                yield _one(QUALITY_FAMILIES[key], float(value))
        if record is not None and record.adhesion is not None:
            yield _one("adhesion_score_ratio", record.adhesion.score)
            yield _one("lens_covered_ratio", record.adhesion.covered_fraction)
        for key, value in pipeline.parts.uplink.stats().items():
            uplink_family = UPLINK_FAMILIES.get(key)
            if uplink_family is not None:
                yield _one(uplink_family, float(value))
            elif key not in self._unknown:
                self._unknown.add(key)
                logger.warning("metrics: uplink figure %r has no metric family; not served", key)


def _control_metrics(snap: ControlSnapshot) -> Iterator[Metric]:
    yield _one("fan_duty_ratio", snap.fan_duty)
    if snap.tach_rpm is not None:
        yield _one("fan_speed_rpm", snap.tach_rpm)
    temps = family("temperature_celsius")
    for sensor, value in sorted(snap.temperatures_c.items()):
        temps.add_metric([sensor], value)
    yield temps
    if snap.cooler_enabled is not None:
        yield _one("cooler_enabled", float(snap.cooler_enabled))
    yield _one("alarms_active", float(len(snap.alarms)))
    yield info_family(
        "control",
        {
            "cleaning": snap.cleaning_state,
            "fan_decided_by": snap.decided_by,
            "thermal": snap.thermal_level or "none",
            "fan_driver": snap.fan_driver,
            "alarms": ",".join(snap.alarms),
        },
    )


def _labelled(totals: dict[str, float], prefix: str, name: str) -> Metric:
    metric = family(name)
    for key, value in sorted(totals.items()):
        if key.startswith(prefix):
            metric.add_metric([key.removeprefix(prefix)], value)
    return metric


def metrics_markdown() -> str:
    """The table of docs/service.md's generated block."""
    rows = ["| metric | type | labels | what |", "|---|---|---|---|"]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        rows.append(f"| `{spec.exposed}` | {spec.kind} | {labels} | {spec.help} |")
    return "\n".join(rows)


class MetricsServer:
    """The HTTP endpoint (prometheus-client's own server, on its own thread)."""

    def __init__(self, state: DaemonState, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PipelineCollector(state))
        spec = SPECS["stage_latency_seconds"]
        self.latency = Histogram(
            f"{PREFIX}_{spec.name}",
            spec.help,
            list(spec.labels),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe(self, stage: str, seconds: float) -> None:
        self.latency.labels(stage).observe(seconds)

    def start(self) -> None:
        self._server, self._thread = start_http_server(self.port, self.host, self.registry)
        self.port = self._server.server_port
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


async def serve_metrics(state: DaemonState, host: str, port: int) -> MetricsServer | None:
    """Start the endpoint unless `port` is 0; a port in use is logged, never fatal."""
    if not port:
        return None
    server = MetricsServer(state, host, port)
    try:
        await asyncio.to_thread(server.start)
    except OSError as exc:
        logger.error("metrics endpoint on %s:%d not started: %s", host, port, exc)  # noqa: TRY400
        return None
    return server
