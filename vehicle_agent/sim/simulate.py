"""`vehicle-agent simulate`: replay a recording through the real pipeline with simulated hardware.

The simulator swaps implementations at the composition root (a recorded video instead of the
camera, a fan in memory, no fleet link) and writes the bench report: `summary.json`,
`events.jsonl`, `frames.csv`, the output video and the annotated `side_by_side.mp4`, then the
plots and `report.html` (`sim/report.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from firmware_bridge.sim import FirmwareConfig, FirmwareSimulator
from vehicle_agent import __version__
from vehicle_agent.app import Overrides, build_parts, build_uplink
from vehicle_agent.capture.base import FrameSource
from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import Config, ConfigError, MqttUplinkConfig
from vehicle_agent.control.settings import McuConfig, McuFanConfig
from vehicle_agent.enhance.chain import EnhancerChain
from vehicle_agent.events import EventBus, EventListener, JsonlEventLog
from vehicle_agent.output.sinks import CsvFrameLog, VideoFileSink
from vehicle_agent.pipeline import Pipeline, RunResult
from vehicle_agent.records import Event, FrameRecord
from vehicle_agent.service.metrics import DaemonState, serve_metrics
from vehicle_agent.sim import report as report_files
from vehicle_agent.sim.faults import FaultPlan, FaultSpec, FaultSpecError
from vehicle_agent.sim.lens import Injection, LensFan, SimulatedLens, through_lens
from vehicle_agent.sim.lockstep import Lockstep
from vehicle_agent.sim.overlay import ControlProbe, SideBySideSink
from vehicle_agent.sim.progress import ProgressSink, frame_count
from vehicle_agent.uplink.base import NoUplink, Uplink

logger = logging.getLogger(__name__)

SAMPLE_NAME = "street_vtest.mp4"

Speed = Literal["realtime", "max"]


def sample_video() -> Path:
    """The bundled sample footage (real street video, see its licence note beside it)."""
    return Path(str(resources.files("vehicle_agent.sim") / "samples" / SAMPLE_NAME))


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

    @property
    def side_by_side(self) -> Path:
        return self.directory / report_files.SIDE_BY_SIDE

    @property
    def html(self) -> Path:
        return self.directory / report_files.HTML_NAME

    def generated(self) -> list[Path]:
        """What `write_report` makes from the run's files (plots, stills, the page)."""
        names = [f"{name}.png" for name in report_files.PLOTS]
        names += [report_files.LEGACY_PREVIEW, report_files.STRIP, report_files.HTML_NAME]
        return [self.directory / name for name in names]


def bench_config(config: Config, video: Path, speed: Speed) -> Config:
    """The config with the bench's source and pacing swapped in, and no `[output]` video."""
    reconnect = config.capture.reconnect
    if reconnect.max_attempts == 0:
        # A recording that fails three times in a row will not heal: end the bench run instead
        # of retrying forever as a vehicle would for its camera.
        reconnect = reconnect.model_copy(update={"max_attempts": 3})
    capture = config.capture.model_copy(
        update={"uri": f"file://{video}", "pacing": speed, "reconnect": reconnect}
    )
    # The report's videos are sinks the simulator adds (`_run_bench`), not `[output] video`:
    # the config, and so its digest, does not name the report directory.
    output = config.output.model_copy(update={"video": None, "events": None})
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
            "side_by_side": str(report.side_by_side),
            "report": str(report.html),
        },
    }


@dataclass(frozen=True)
class BenchHardware:
    """The simulated camera module: its surroundings and the faults injected into it."""

    ambient_c: float = 25.0
    thermal_speed: float = 20.0
    """How much faster than real time the thermal model runs (a 30 s clip shows minutes)."""
    mcu_faults: tuple[tuple[str, float], ...] = ()
    """(fault name, video time in seconds when it starts)."""
    lens: tuple[Injection, ...] = ()
    """Soiling put on the simulated lens (`--inject`); it stays until the fan clears it."""
    faults: tuple[FaultSpec, ...] = ()
    """Camera, enhancement and broker faults (`--fault`, `sim/faults.py`)."""


MCU_FAULTS = {
    # name on the command line → (FaultSwitches attribute, value switched on)
    "silence": ("silence", True),
    "stuck-sensor": ("stuck_sensor", True),
    "overtemp": ("overtemp", True),
    "sensor-open": ("sensor_open", True),
    "fan-stall": ("fan_stall", True),
    "garbage": ("garbage", 0.2),
    "corrupt": ("corrupt", 0.2),
    "drop": ("drop", 0.2),
}


def parse_mcu_fault(spec: str) -> tuple[str, float]:
    """'stuck-sensor@10s' → ('stuck-sensor', 10.0); 'overtemp' → ('overtemp', 0.0)."""
    name, _, at = spec.strip().partition("@")
    if name not in MCU_FAULTS:
        known = ", ".join(MCU_FAULTS)
        raise ValueError(f"unknown microcontroller fault {name!r} in {spec!r}; known: {known}")
    try:
        start = float(at.removesuffix("s")) if at else 0.0
    except ValueError:
        raise ValueError(f"bad start time {at!r} in {spec!r}: expected e.g. @10s") from None
    if start < 0:
        raise ValueError(f"start time in {spec!r} is negative")
    return name, start


BENCH_PORT = "simulated-module"
"""The port the bench config names; the pty's real path reaches the bridge through
`Overrides.mcu_port`, so the config digest is the same from run to run."""

WALL_CLOCK_FIELDS: Mapping[str, tuple[str, ...]] = {
    # Event fields that measure the host's clock, not the recording: null in seeded runs.
    "model_loaded": ("load_s", "warmup_ms"),
    "enhancer_promoted": ("demoted_s",),
    "enhancer_prepared": ("prepare_s",),
}


def without_wall_clock(listener: EventListener) -> EventListener:
    """`listener`, given each event with its `WALL_CLOCK_FIELDS` set to null (seeded runs)."""

    def forward(event: Event) -> None:
        fields = WALL_CLOCK_FIELDS.get(event.type)
        if fields:
            event = replace(event, data={**event.data, **dict.fromkeys(fields)})
        listener(event)

    return forward


def bench_control(config: Config, port: str = BENCH_PORT) -> Config:
    """Control through the simulated module's microcontroller on `port`."""
    control = config.control
    thermal = control.thermal.model_copy(
        # A short clip must be able to show a frozen reading being caught.
        update={"frozen_after_s": min(control.thermal.frozen_after_s, 3.0)}
    )
    control = control.model_copy(
        update={"fan": McuFanConfig(), "mcu": McuConfig(port=port), "thermal": thermal}
    )
    return config.model_copy(update={"control": control})


class FaultInjector:
    """Switches microcontroller faults on when the replay reaches their time (act stage hook)."""

    def __init__(self, simulator: FirmwareSimulator, faults: tuple[tuple[str, float], ...]) -> None:
        self.simulator = simulator
        self.pending = sorted(faults, key=lambda f: f[1])

    def __call__(self, record: FrameRecord) -> None:
        while self.pending and record.frame.t_video >= self.pending[0][1]:
            name, _ = self.pending.pop(0)
            attribute, value = MCU_FAULTS[name]
            setattr(self.simulator.faults, attribute, value)
            logger.info("bench: microcontroller fault %s from t=%.1f s", name, record.frame.t_video)


def prepare_report(report_dir: Path) -> ReportPaths:
    """Create the report directory and remove a previous run's files from it."""
    report = ReportPaths(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    run_files = [report.summary, report.events, report.frames, report.video, report.side_by_side]
    for stale in (*run_files, *report.generated()):
        stale.unlink(missing_ok=True)
    return report


def bench_uplink_config(config: Config, broker: str) -> MqttUplinkConfig:
    """The config's `[uplink]` (TLS, credentials) aimed at `broker`; `ConfigError` names
    `--broker` when the two do not make a valid link (the CLI checks it before starting)."""
    from vehicle_agent.validation import describe_validation  # noqa: PLC0415

    table = config.uplink.model_dump(mode="json") if config.uplink.type == "mqtt" else {}
    try:
        return MqttUplinkConfig.model_validate({**table, "type": "mqtt", "broker": broker})
    except ValidationError as exc:
        raise ConfigError("--broker", "uplink", describe_validation(exc)) from None


def bench_outbox(uplink: MqttUplinkConfig, report_dir: Path) -> Path:
    """Where a bench run's outbox is: the config's, else in the report directory."""
    return uplink.outbox.path or report_dir / "uplink.sqlite3"


def messages_left(outbox: Path) -> int | None:
    """Messages a finished run left in its outbox (not delivered); None when unreadable."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return None


def bench_uplink(config: Config, broker: str | None, events: EventBus, report_dir: Path) -> Uplink:
    """No fleet link, or MQTT to `broker` (TLS and credentials from the config's `[uplink]`),
    with its outbox in the report directory unless the config names one."""
    if broker is None:
        return NoUplink()
    uplink = bench_uplink_config(config, broker)
    config = config.model_copy(update={"uplink": uplink})
    return build_uplink(config, events, outbox_path=bench_outbox(uplink, report_dir))


async def simulate(
    config: Config,
    video: Path,
    report_dir: Path,
    speed: Speed = "max",
    *,
    broker: str | None = None,
    hardware: BenchHardware | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> dict[str, object]:
    """Run the pipeline over `video` and write the report into `report_dir`; returns the summary.

    With `broker` (mqtt:// or mqtts://), the fleet link publishes to it as on a vehicle. The
    camera module is the firmware simulator on a pseudo-terminal, driven through the real
    serial bridge: fan, cooler and temperatures behave as `hardware` says. With `progress`, a
    progress bar on stderr counts the frames written.

    Every timer of the run (the cleaning, the enhancer's retries) is video time, not how fast
    this host replays. With `seed`, a run at `max` speed is repeatable: the module's noise is
    seeded, a soiled lens is read in
    `Lockstep` with the act stage, and event fields that measure the host's clock are null
    (`WALL_CLOCK_FIELDS`). The module's thermal model still runs on
    the host's clock, so thermal events (a hot `--ambient`, faults) may differ by a frame."""
    hardware = hardware or BenchHardware()
    plan = FaultPlan(hardware.faults) if hardware.faults else None
    if plan is not None and plan.of("broker-loss") and broker is None:
        raise FaultSpecError("broker-loss needs a broker (--broker URL)")
    report = await asyncio.to_thread(prepare_report, report_dir)
    config = bench_config(config, video, speed)
    firmware = FirmwareConfig(fan_safe_duty=config.control.safe_duty)
    async with contextlib.AsyncExitStack() as stack:
        if plan is not None and plan.of("broker-loss") and broker is not None:
            # The uplink talks to the broker through a proxy that the fault cuts.
            broker = (await stack.enter_async_context(plan.broker(broker))).url
        mcu = stack.enter_context(
            FirmwareSimulator(
                ambient_c=hardware.ambient_c,
                time_scale=hardware.thermal_speed,
                config=firmware,
                seed=seed,
            )
        )
        config = bench_control(config)
        return await _run_bench(
            config,
            video,
            report,
            speed,
            broker=broker,
            mcu=mcu,
            hardware=hardware,
            progress=progress,
            seed=seed,
            plan=plan,
        )


async def _run_bench(
    config: Config,
    video: Path,
    report: ReportPaths,
    speed: Speed,
    *,
    broker: str | None,
    mcu: FirmwareSimulator,
    hardware: BenchHardware,
    progress: bool,
    seed: int | None,
    plan: FaultPlan | None = None,
) -> dict[str, object]:
    events = EventBus(EVENT_TYPES)
    event_log = JsonlEventLog(report.events, ordered=True)
    events.subscribe(event_log if seed is None else without_wall_clock(event_log))
    link_errors: list[str] = []

    def note_link(event: Event) -> None:
        if event.type == "uplink_lost":
            link_errors.append(str(event.data["reason"]))

    events.subscribe(note_link)

    # The simulated lens sits between capture and enhance, as a real one does: every source
    # instance is seen through it.
    lens = SimulatedLens(hardware.lens) if hardware.lens else None
    # The control state per frame (temperatures, cleaning) for frames.csv and the annotated
    # video; the pipeline exists once the parts do, hence the late lookups.
    probe = ControlProbe(lambda: None if pipeline.control is None else pipeline.control.snapshot())

    def video_fps() -> float:
        fps = config.output.video_fps or pipeline.capture.stats.source_fps
        return fps or config.capture.fps or 10.0

    lockstep = Lockstep() if lens is not None and seed is not None else None

    def seen_by_the_bench(camera: Callable[[], FrameSource]) -> Callable[[], FrameSource]:
        # The simulated lens sits between capture and enhance, as a real one does: every
        # source instance is seen through it; then the faults, as the capture stage gets it.
        opener = camera if lens is None else through_lens(camera, lens)
        if plan is not None:
            opener = plan.source(opener)
        return opener if lockstep is None else lockstep.source(opener)

    def with_faults(enhancer: EnhancerChain) -> None:
        if plan is not None:
            enhancer.factory = plan.enhancer_factory(enhancer.factory, enhancer.specs[0].config)

    parts = build_parts(
        config,
        Overrides(
            events=events,
            source=seen_by_the_bench,
            enhancer=with_faults,
            uplink=lambda bus: bench_uplink(config, broker, bus, report.directory),
            sinks=[
                VideoFileSink(report.video, video_fps, "side_by_side"),
                CsvFrameLog(report.frames, more_columns=probe.columns),
                SideBySideSink(report.side_by_side, video_fps, probe),
            ],
            closers=[event_log.close],
            actuation_observers=[FaultInjector(mcu, hardware.mcu_faults), probe],
            mcu_port=mcu.port,
            video_timed=True,
            recover=False,
        ),
    )
    if lens is not None:
        parts.actuation_observers.append(LensFan(lens))
    if lockstep is not None:
        parts.actuation_observers.append(lockstep)  # after the lens was blown
    if plan is not None:
        parts.actuation_observers.append(plan)
        parts.closers.append(plan.close)
        plan.report_to(events, asyncio.get_running_loop())
    if progress:
        total = await asyncio.to_thread(frame_count, video)
        parts.sinks.append(ProgressSink(total, video.name))
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
    summary["seed"] = seed
    thermal = config.control.thermal
    summary["thermal_limits_c"] = {
        "sensor_warning": thermal.sensor_warning_c,
        "sensor_critical": thermal.sensor_critical_c,
        "hot_warning": thermal.hot_warning_c,
        "hot_critical": thermal.hot_critical_c,
    }
    if broker is not None:
        outbox = bench_outbox(bench_uplink_config(config, broker), report.directory)
        summary["uplink"] = {
            "broker": broker,
            "connected": result.events.get("uplink_connected", 0),
            "last_error": link_errors[-1] if link_errors else None,
            "outbox": str(outbox),
            "left_in_outbox": await asyncio.to_thread(messages_left, outbox),
        }
    if lens is not None:
        summary["injected"] = lens.ground_truth()
    if plan is not None:
        summary["faults"] = plan.summary()
    text = json.dumps(summary, indent=2) + "\n"
    await asyncio.to_thread(report.summary.write_text, text, encoding="utf-8")
    try:
        await asyncio.to_thread(report_files.write_report, report.directory)
    except Exception:
        # The run's own files are written; a report that cannot be drawn must not hide them.
        logger.exception("could not write %s", report.html)
        outputs = summary["outputs"]
        assert isinstance(outputs, dict)  # noqa: S101 - built by summary_dict
        outputs.pop("report", None)
        text = json.dumps(summary, indent=2) + "\n"
        await asyncio.to_thread(report.summary.write_text, text, encoding="utf-8")
    return summary
