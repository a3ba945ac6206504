"""Service: the Prometheus endpoint on localhost, read from the running pipeline at scrape time."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from vehicle_agent import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from vehicle_agent.app import Pipeline
    from vehicle_agent.control.loop import ControlSnapshot

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


class PipelineCollector(Collector):
    """Builds the metric families from `DaemonState` each time Prometheus scrapes."""

    def __init__(self, state: DaemonState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        info = InfoMetricFamily(PREFIX, "Daemon version, state and config digest")
        info.add_metric(
            [], {"version": __version__, "state": state.state, "config": state.config_digest}
        )
        yield info
        totals = state.counters()
        for name, help_text in (
            ("frames_in", "Frames delivered by the source"),
            ("frames_out", "Frames that left the pipeline"),
            ("frames_missing", "Frames a live camera missed while it was lost"),
            ("frames_invalid", "Frames that could not be decoded"),
            ("source_reconnects", "Times a lost source came back"),
        ):
            counter = CounterMetricFamily(f"{PREFIX}_{name}", help_text)
            counter.add_metric([], totals.get(name, 0.0))
            yield counter
        yield from _labelled(
            totals, "dropped:", "frames_dropped", "Frames dropped by a full queue", "queue"
        )
        yield from _labelled(
            totals, "failures:", "stage_failures", "Frames a stage failed on", "stage"
        )
        yield from _labelled(totals, "event:", "events", "Events emitted", "type")
        pipeline = state.pipeline
        fps = GaugeMetricFamily(f"{PREFIX}_fps", "Output frames per second (last 64 frames)")
        fps.add_metric([], pipeline.fps if pipeline else 0.0)
        yield fps
        if pipeline is None:
            return
        backend = InfoMetricFamily(f"{PREFIX}_enhancer", "Enhancement backend in use")
        backend.add_metric([], {"backend": pipeline.parts.enhancer.name})
        yield backend
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Frames waiting in each queue", labels=["queue"]
        )
        for queue in pipeline.queues:
            depth.add_metric([queue.name], queue.qsize())
        yield depth
        if pipeline.control is not None:
            yield from _control_metrics(pipeline.control.snapshot())
            service = GaugeMetricFamily(
                f"{PREFIX}_lens_service_required",
                "1 while the lens needs service (cleaning retries spent), until a cleaning "
                "succeeds or clear_lens_service",
            )
            service.add_metric([], float(pipeline.control.lens_service_required))
            yield service
        record = pipeline.last_record
        if record is not None and record.quality is not None:
            quality = GaugeMetricFamily(
                f"{PREFIX}_quality", "Quality of the last output frame", labels=["metric"]
            )
            for key, value in record.quality.as_dict().items():
                if isinstance(value, int | float):
                    quality.add_metric([key], float(value))
            yield quality
        if record is not None and record.adhesion is not None:
            adhesion = GaugeMetricFamily(f"{PREFIX}_adhesion_score", "Lens adhesion score, 0-1")
            adhesion.add_metric([], record.adhesion.score)
            yield adhesion
        uplink_stats = pipeline.parts.uplink.stats()
        if uplink_stats:
            uplink = GaugeMetricFamily(
                f"{PREFIX}_uplink",
                "Fleet link figures (outbox depth, reconnects…)",
                labels=["name"],
            )
            for key, value in uplink_stats.items():
                uplink.add_metric([key], float(value))
            yield uplink


def _control_metrics(snap: ControlSnapshot) -> Iterator[Metric]:
    fan = GaugeMetricFamily(f"{PREFIX}_fan_duty", "Fan duty cycle the control applies, 0-1")
    fan.add_metric([], snap.fan_duty)
    yield fan
    if snap.tach_rpm is not None:
        rpm = GaugeMetricFamily(f"{PREFIX}_fan_rpm", "Fan speed from its tachometer, rpm")
        rpm.add_metric([], snap.tach_rpm)
        yield rpm
    temps = GaugeMetricFamily(
        f"{PREFIX}_temperature_celsius",
        "Camera module temperatures: image sensor, cooler cold and hot side",
        labels=["sensor"],
    )
    for sensor, value in sorted(snap.temperatures_c.items()):
        temps.add_metric([sensor], value)
    yield temps
    if snap.cooler_enabled is not None:
        cooler = GaugeMetricFamily(f"{PREFIX}_cooler_enabled", "Refrigeration chip on (1) or off")
        cooler.add_metric([], float(snap.cooler_enabled))
        yield cooler
    alarms = GaugeMetricFamily(f"{PREFIX}_alarms", "Thermal and sensor alarms active now")
    alarms.add_metric([], float(len(snap.alarms)))
    yield alarms
    state = InfoMetricFamily(f"{PREFIX}_control", "Cleaning state and what decides the fan")
    state.add_metric(
        [],
        {
            "cleaning": snap.cleaning_state,
            "fan_decided_by": snap.decided_by,
            "thermal": snap.thermal_level or "none",
            "fan_driver": snap.fan_driver,
            "alarms": ",".join(snap.alarms),
        },
    )
    yield state


def _labelled(
    totals: dict[str, float], prefix: str, name: str, help_text: str, label: str
) -> Iterator[Metric]:
    family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=[label])
    for key, value in sorted(totals.items()):
        if key.startswith(prefix):
            family.add_metric([key.removeprefix(prefix)], value)
    yield family


class MetricsServer:
    """The HTTP endpoint (prometheus-client's own server, on its own thread)."""

    def __init__(self, state: DaemonState, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PipelineCollector(state))
        self.latency = Histogram(
            f"{PREFIX}_stage_latency_seconds",
            "Time a stage spent on a frame (the enhance stage's is the inference time)",
            ["stage"],
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
