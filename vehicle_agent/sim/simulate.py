"""`vehicle-agent simulate`: replay a recording through the real pipeline with simulated hardware.

The simulator swaps implementations at the composition root (a recorded video instead of the
camera, a fan in memory, no fleet link) and writes the bench report: `summary.json`,
`events.jsonl`, `frames.csv` and the output video.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from vehicle_agent import __version__
from vehicle_agent.app import Parts, Pipeline, RunResult
from vehicle_agent.capture.uri import open_source
from vehicle_agent.config import Config, ConfigError, MqttUplinkConfig
from vehicle_agent.enhance.chain import build_enhancer
from vehicle_agent.events import EventBus, JsonlEventLog
from vehicle_agent.output.sinks import CsvFrameLog
from vehicle_agent.service.metrics import DaemonState, serve_metrics
from vehicle_agent.sim.hardware import SimulatedFan
from vehicle_agent.uplink.base import NoUplink, Uplink

logger = logging.getLogger(__name__)

SAMPLE_NAME = "street_vtest.mp4"

Speed = Literal["realtime", "max"]


def sample_video() -> Path:
    """The bundled sample footage (real street video, see its licence note beside it)."""
    return Path(str(resources.files("vehicle_agent.sim").joinpath("samples", SAMPLE_NAME)))


@dataclass(frozen=True)
class ReportPaths:
    directory: Path

    @property
    def summary(self) -> Path:
        return self.directory / "summary.json"

    @property
    def events(self) -> Path:
        return self.directory / "events.jsonl"

    @property
    def frames(self) -> Path:
        return self.directory / "frames.csv"

    @property
    def video(self) -> Path:
        return self.directory / "output.mp4"


def bench_config(config: Config, video: Path, report: ReportPaths, speed: Speed) -> Config:
    """The config with the bench's source, pacing and report outputs swapped in."""
    reconnect = config.capture.reconnect
    if reconnect.max_attempts == 0:
        # A recording that fails three times in a row will not heal: end the bench run instead
        # of retrying forever as a vehicle would for its camera.
        reconnect = reconnect.model_copy(update={"max_attempts": 3})
    capture = config.capture.model_copy(
        update={"uri": f"file://{video}", "pacing": speed, "reconnect": reconnect}
    )
    output = config.output.model_copy(
        update={"video": report.video, "video_content": "side_by_side", "events": None}
    )
    return config.model_copy(update={"capture": capture, "output": output})


def summary_dict(
    result: RunResult,
    config: Config,
    video: Path,
    report: ReportPaths,
    speed: Speed,
    *,
    enhancer: str,
) -> dict[str, object]:
    data = asdict(result)
    data["fps"] = round(result.fps, 3)
    data["wall_s"] = round(result.wall_s, 3)
    data["video_s"] = round(result.video_s, 3)
    return {
        "frames_in": result.frames_in,
        "frames_out": result.frames_out,
        "frames_dropped": result.frames_dropped,
        "fps": data["fps"],
        **{k: v for k, v in data.items() if k not in {"frames_in", "frames_out", "frames_dropped"}},
        "speed": speed,
        "video": str(video),
        "enhancer": enhancer,
        "version": __version__,
        "config_digest": config.digest(),
        "outputs": {
            "summary": str(report.summary),
            "events": str(report.events),
            "frames": str(report.frames),
            "video": str(report.video),
        },
    }


def prepare_report(report_dir: Path) -> ReportPaths:
    """Create the report directory and remove a previous run's files from it."""
    report = ReportPaths(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    for stale in (report.summary, report.events, report.frames, report.video):
        stale.unlink(missing_ok=True)
    return report


def bench_uplink(config: Config, broker: str | None, events: EventBus, report_dir: Path) -> Uplink:
    """No fleet link, or MQTT to `broker` (TLS and credentials from the config's `[uplink]`),
    with its outbox in the report directory unless the config names one."""
    if broker is None:
        return NoUplink()
    from vehicle_agent.uplink.commands import describe_validation  # noqa: PLC0415
    from vehicle_agent.uplink.mqtt import MqttUplink  # noqa: PLC0415 - paho only when used

    table = config.uplink.model_dump(mode="json") if config.uplink.type == "mqtt" else {}
    try:
        uplink = MqttUplinkConfig.model_validate({**table, "type": "mqtt", "broker": broker})
    except ValidationError as exc:
        raise ConfigError("--broker", "uplink", describe_validation(exc)) from None
    outbox = uplink.outbox.path or report_dir / "uplink.sqlite3"
    config = config.model_copy(update={"uplink": uplink})
    return MqttUplink.from_config(config, events, outbox_path=outbox)


async def simulate(
    config: Config,
    video: Path,
    report_dir: Path,
    speed: Speed = "max",
    broker: str | None = None,
) -> dict[str, object]:
    """Run the pipeline over `video` and write the report into `report_dir`; returns the summary.

    With `broker` (mqtt:// or mqtts://), the fleet link publishes to it as on a vehicle."""
    report = await asyncio.to_thread(prepare_report, report_dir)
    config = bench_config(config, video, report, speed)
    events = EventBus()
    event_log = JsonlEventLog(report.events)
    events.subscribe(event_log)
    parts = Parts(
        open_source=lambda: open_source(config.capture.uri, config.capture),
        enhancer=build_enhancer(config.enhance, config.agent.state_dir),
        fan=SimulatedFan(config.control.safe_duty),
        uplink=bench_uplink(config, broker, events, report_dir),
        sinks=[CsvFrameLog(report.frames)],
        events=events,
        closers=[event_log.close],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pipeline = Pipeline(config, parts)
    state = DaemonState(pipeline=pipeline, state="simulating", config_digest=config.digest())
    metrics = await serve_metrics(state, config.service.metrics_host, config.service.metrics_port)
    if metrics is not None:
        parts.latency_observers.append(metrics.observe)
    try:
        result = await pipeline.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if metrics is not None:
            await asyncio.to_thread(metrics.close)
    summary = summary_dict(result, config, video, report, speed, enhancer=parts.enhancer.name)
    text = json.dumps(summary, indent=2) + "\n"
    await asyncio.to_thread(report.summary.write_text, text, encoding="utf-8")
    return summary
