"""Uplink stage: telemetry, per-frame records folded into one snapshot per interval.

`on_frame` runs on the event loop for every frame, so it only adds numbers; `SystemSampler`
reads CPU, memory and board temperatures through psutil (a few syscalls: call it off the loop).
The scene condition and the model come from the latest frame record, the camera module's
temperatures from the thermal link (`PipelineHooks.module_temperatures`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from vehicle_agent.records import Actuation, FrameRecord
from vehicle_agent.uplink.base import PipelineHooks
from vehicle_agent.uplink.outbox import OutMessage
from vehicle_agent.uplink.topics import (
    AdhesionSummary,
    MessageClass,
    QualitySummary,
    Telemetry,
    Topics,
    UplinkStatus,
)

MODULE_PREFIX = "camera/"
"""Prefix of the camera module's channels in `temperatures_c` (board sensors are 'chip/label')."""


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float
    process_cpu_percent: float
    memory_percent: float
    process_rss_mb: float
    temperatures_c: dict[str, float] = field(default_factory=dict)


class SystemSampler:
    """CPU use since the previous sample, memory, and board temperatures."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        # The first call of cpu_percent(None) starts the measuring interval.
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)

    def sample(self) -> SystemSample:
        memory = psutil.virtual_memory()
        return SystemSample(
            cpu_percent=float(psutil.cpu_percent(None)),
            process_cpu_percent=float(self._process.cpu_percent(None)),
            memory_percent=float(memory.percent),
            process_rss_mb=self._process.memory_info().rss / 2**20,
            temperatures_c=_temperatures(),
        )


def _temperatures() -> dict[str, float]:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:  # not on every platform
        return {}
    try:
        sensors = reader()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for chip, readings in sensors.items():
        for i, reading in enumerate(readings):
            label = reading.label or str(i)
            out[f"{chip}/{label}"] = round(float(reading.current), 1)
    return out


def _control_fields(actuation: Actuation | None) -> dict[str, Any]:
    """The control's fan driver, alarms and service latch on the latest frame."""
    if actuation is None:
        return {}
    return {
        "fan_driver": actuation.fan_driver or None,
        "alarms": list(actuation.alarms),
        "lens_service_required": actuation.lens_service_required,
    }


class TelemetryAggregator:
    """Sums what each frame record says; `snapshot` turns the interval into a `Telemetry`."""

    def __init__(self, vehicle_id: str, camera_id: str, started: float | None = None) -> None:
        self.vehicle_id = vehicle_id
        self.camera_id = camera_id
        self.started_mono = time.monotonic() if started is None else started
        self._interval_start = self.started_mono
        self._frames = 0
        self._quality_n = 0
        self._quality_sum = [0.0, 0.0, 0.0]
        self._last: FrameRecord | None = None
        self._dropped_before = 0

    def on_frame(self, record: FrameRecord) -> None:
        self._frames += 1
        self._last = record
        quality = record.quality
        if quality is not None:
            self._quality_n += 1
            self._quality_sum[0] += quality.brightness
            self._quality_sum[1] += quality.contrast
            self._quality_sum[2] += quality.sharpness

    @property
    def last_record(self) -> FrameRecord | None:
        return self._last

    def snapshot(
        self,
        *,
        seq: int,
        now_wall: float,
        counters: Mapping[str, float],
        system: SystemSample,
        uplink: UplinkStatus,
        now_mono: float | None = None,
        module_temperatures: Mapping[str, float] | None = None,
    ) -> Telemetry:
        """The interval since the previous snapshot; starts the next one.

        `module_temperatures`: the camera module's latest readings by channel, °C; they join the
        board's as 'camera/<channel>'."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        elapsed = max(now_mono - self._interval_start, 1e-9)
        quality = None
        if self._quality_n:
            b, c, s = (v / self._quality_n for v in self._quality_sum)
            quality = QualitySummary(
                brightness=round(b, 3), contrast=round(c, 3), sharpness=round(s, 3)
            )
        last = self._last
        adhesion = None
        if last is not None and last.adhesion is not None:
            adhesion = AdhesionSummary(
                score=last.adhesion.score, covered_fraction=last.adhesion.covered_fraction
            )
        dropped = int(counters.get("frames_dropped", 0))
        temperatures = dict(system.temperatures_c)
        for channel, value in (module_temperatures or {}).items():
            temperatures[MODULE_PREFIX + channel] = round(float(value), 2)
        telemetry = Telemetry(
            vehicle_id=self.vehicle_id,
            camera_id=self.camera_id,
            seq=seq,
            time=round(now_wall, 3),
            uptime_s=round(now_mono - self.started_mono, 3),
            interval_s=round(elapsed, 3),
            fps=round(self._frames / elapsed, 3),
            frames_in=int(counters.get("frames_in", 0)),
            frames_out=int(counters.get("frames_out", 0)),
            frames_dropped=dropped,
            frames_dropped_interval=max(0, dropped - self._dropped_before),
            frames_invalid=int(counters.get("frames_invalid", 0)),
            quality=quality,
            condition=None if last is None or last.quality is None else last.quality.condition,
            adhesion=adhesion,
            temperatures_c=temperatures,
            fan_duty=None if last is None or last.actuation is None else last.actuation.fan_duty,
            **_control_fields(None if last is None else last.actuation),
            backend=None if last is None or not last.enhancer else last.enhancer,
            model=None if last is None else last.model,
            cpu_percent=round(system.cpu_percent, 1),
            process_cpu_percent=round(system.process_cpu_percent, 1),
            memory_percent=round(system.memory_percent, 1),
            process_rss_mb=round(system.process_rss_mb, 1),
            uplink=uplink,
        )
        self._interval_start = now_mono
        self._frames = 0
        self._quality_n = 0
        self._quality_sum = [0.0, 0.0, 0.0]
        self._dropped_before = dropped
        return telemetry


class TelemetryReporter:
    """The camera's telemetry messages: a snapshot of the aggregated frames, the system, the
    link and the camera module, numbered by a sequence the outbox keeps across restarts."""

    def __init__(
        self,
        aggregator: TelemetryAggregator,
        topics: Topics,
        enqueue: Callable[[list[OutMessage], Mapping[str, int]], None],
        status: Callable[[], UplinkStatus],
        hooks: Callable[[], PipelineHooks | None],
    ) -> None:
        self.aggregator = aggregator
        self.topics = topics
        self.enqueue = enqueue
        self.status = status
        self.hooks = hooks
        self.seq = 0
        """The last telemetry sequence number (restored from the outbox at start)."""
        self.last: Telemetry | None = None
        self._sampler: SystemSampler | None = None

    async def start(self) -> None:
        self._sampler = await asyncio.to_thread(SystemSampler)

    async def emit(self) -> None:
        """One telemetry message into the outbox (after `start`)."""
        if self._sampler is None:
            return
        system = await asyncio.to_thread(self._sampler.sample)
        hooks = self.hooks()
        counters = hooks.counters() if hooks is not None else {}
        read_module = None if hooks is None else hooks.module_temperatures
        self.seq += 1
        telemetry = self.aggregator.snapshot(
            seq=self.seq,
            now_wall=time.time(),
            counters=counters,
            system=system,
            uplink=self.status(),
            module_temperatures=None if read_module is None else read_module(),
        )
        self.last = telemetry
        message = OutMessage(
            MessageClass.TELEMETRY, self.topics.telemetry, telemetry.model_dump_json().encode()
        )
        self.enqueue([message], {"telemetry_seq": self.seq})
