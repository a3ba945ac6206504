"""Service: `vehicle-agent run` — the pipeline under systemd, with watchdog, metrics and SIGHUP reload.

The pipeline itself is wired in `vehicle_agent.app`; this module runs it as a long-lived
service: READY=1 once it runs, WATCHDOG=1 from the event loop, STATUS= lines, STOPPING=1 on
SIGTERM/SIGINT, and a new config on SIGHUP, applied live when only `[logging]` or `[enhance]`
changed and by restarting the pipeline (not the process) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import signal
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from vehicle_agent import __version__
from vehicle_agent.app import build_parts
from vehicle_agent.config import Config, ConfigError, load_config
from vehicle_agent.enhance.chain import build_enhancer
from vehicle_agent.logs import configure_logging
from vehicle_agent.pipeline import Pipeline, RunResult
from vehicle_agent.service.metrics import DaemonState, MetricsServer, serve_metrics
from vehicle_agent.service.notify import SystemdNotifier

logger = logging.getLogger(__name__)

LIVE_SECTIONS = frozenset({"logging", "enhance"})
"""Sections a reload applies without restarting the pipeline."""

VERSIONED = ("numpy", "opencv-contrib-python-headless", "pydantic", "paho-mqtt", "onnxruntime")


def versions() -> dict[str, str]:
    """Versions worth having in the first log line of every start."""
    found = {"vehicle-agent": __version__, "python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def changed_sections(old: Config, new: Config) -> list[str]:
    return [name for name in Config.model_fields if getattr(old, name) != getattr(new, name)]


class Daemon:
    """Runs pipelines one after another until stopped; one per config that needs a restart."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        notifier: SystemdNotifier | None = None,
        log_override: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.log_override = log_override
        self.state = DaemonState(config_digest=config.digest())
        self.metrics: MetricsServer | None = None
        self._pending: Config | None = None
        self._pipeline_stop: asyncio.Event | None = None
        self._reload_requested: asyncio.Event | None = None
        self._stall: tuple[object, str] | None = None
        """(pipeline, stage) of the stall reported last: stage_stalled once per stall."""

    # -- status ------------------------------------------------------------------------------

    def status_line(self) -> str:
        pipeline = self.state.pipeline
        if pipeline is None:
            return self.state.state
        totals = self.state.counters()
        dropped = sum(v for k, v in totals.items() if k.startswith("dropped:"))
        source = "source lost, retrying" if pipeline.capture.lost else "source ok"
        return (
            f"{self.state.state}: {pipeline.fps:.1f} fps, {int(totals.get('frames_out', 0))} "
            f"frames, {int(dropped)} dropped, {source}, enhancer {pipeline.parts.enhancer.name}"
        )

    def stalled(self) -> str | None:
        """Why frames stopped moving (a stage on one frame beyond `pipeline.stall_s`), or None;
        the first time for a stall, emits `stage_stalled`. The watchdog asks it."""
        pipeline = self.state.pipeline
        found = None if pipeline is None else pipeline.stalled(self.config.pipeline.stall_s)
        if found is None or pipeline is None:
            self._stall = None
            return None
        stage, seconds = found
        if self._stall != (pipeline, stage):
            self._stall = (pipeline, stage)
            pipeline.events.emit(
                "stage_stalled",
                pipeline.video_time,
                stage=stage,
                busy_s=round(seconds, 1),
                bound_s=self.config.pipeline.stall_s,
            )
        return f"stage {stage} on one frame for {seconds:.0f} s"

    # -- reload ------------------------------------------------------------------------------

    def request_reload(self) -> None:
        if self._reload_requested is not None:
            self._reload_requested.set()

    async def _reloader(self) -> None:
        assert self._reload_requested is not None  # noqa: S101 - set by run()
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self._reload()

    async def _reload(self) -> None:
        if self.config_path is None:
            logger.warning("SIGHUP ignored: the daemon was not started from a config file")
            return
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            logger.error(  # noqa: TRY400 - the error is the message; no traceback wanted
                "reload refused: %s; keeping the running config (digest %s)",
                exc,
                self.config.digest(),
            )
            self._emit("config_reload_refused", error=str(exc))
            self.notifier.ready(self.status_line())
            return
        changed = changed_sections(self.config, new)
        if not changed:
            logger.info("reload: %s unchanged", self.config_path)
            self.notifier.ready(self.status_line())
            return
        pipeline = self.state.pipeline
        if set(changed) <= LIVE_SECTIONS and pipeline is not None:
            await self._apply_live(new, changed, pipeline)
            return
        logger.info("reload: %s changed; restarting the pipeline", ", ".join(changed))
        self._emit(
            "config_reloaded",
            sections=", ".join(changed),
            applied="restart",
            config_digest=new.digest(),
        )
        self._pending = new
        if self._pipeline_stop is not None:
            self._pipeline_stop.set()

    async def _apply_live(self, new: Config, changed: list[str], pipeline: Pipeline) -> None:
        if "enhance" in changed:
            # The new chain loads and warms up off the loop while the old one keeps serving
            # frames; the swap happens between two frames (none lost).
            try:
                await pipeline.swap_enhancer(
                    lambda: build_enhancer(new.enhance, new.agent.state_dir)
                )
            except Exception as exc:
                logger.exception("reload refused: the new enhancer does not load")
                self._emit("config_reload_refused", error=f"[enhance]: {exc}")
                self.notifier.ready(self.status_line())
                return
        if "logging" in changed:
            level, fmt = self.log_override
            configure_logging(level or new.logging.level, fmt or new.logging.format)  # type: ignore[arg-type]
        pipeline.config = new
        self.config = new
        self.state.config_digest = new.digest()
        logger.info("reload: applied %s without interruption", ", ".join(changed))
        self._emit(
            "config_reloaded",
            sections=", ".join(changed),
            applied="live",
            config_digest=new.digest(),
        )
        self.notifier.ready(self.status_line())

    def _emit(self, type_: str, **data: str) -> None:
        pipeline = self.state.pipeline
        if pipeline is not None:
            pipeline.events.emit(type_, pipeline.video_time, **data)

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> RunResult:
        self._reload_requested = asyncio.Event()
        logger.info(
            "starting %s; config %s (digest %s)",
            " ".join(f"{k}={v}" for k, v in versions().items()),
            self.config_path or "(defaults)",
            self.config.digest(),
        )
        service = self.config.service
        self.metrics = await serve_metrics(self.state, service.metrics_host, service.metrics_port)
        helpers = [
            asyncio.create_task(
                self.notifier.watchdog(self.status_line, self.stalled), name="watchdog"
            ),
            asyncio.create_task(self._reloader(), name="reloader"),
            asyncio.create_task(self._announce_stop(stop), name="stop-notice"),
        ]
        try:
            return await self._run_pipelines(stop)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self.metrics is not None:
                await asyncio.to_thread(self.metrics.close)
            self.notifier.close()

    async def _announce_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.state.state = "stopping"
        self.notifier.stopping("stopping: draining the pipeline")
        if self._pipeline_stop is not None:
            self._pipeline_stop.set()

    async def _run_pipelines(self, stop: asyncio.Event) -> RunResult:
        while True:
            parts = build_parts(self.config)
            if self.metrics is not None:
                parts.latency_observers.append(self.metrics.observe)
            pipeline = Pipeline(self.config, parts)
            self.state.pipeline = pipeline
            self.state.state = "starting"
            self._pipeline_stop = asyncio.Event()
            if stop.is_set():
                self._pipeline_stop.set()
            ready = asyncio.create_task(self._ready_when_running(pipeline), name="ready")
            try:
                result = await pipeline.run(self._pipeline_stop)
            finally:
                ready.cancel()
                self.state.retire(pipeline)
            if self._pending is None or stop.is_set():
                self.state.state = "stopped"
                return result
            self.config, self._pending = self._pending, None
            self.state.config_digest = self.config.digest()

    async def _ready_when_running(self, pipeline: Pipeline) -> None:
        await pipeline.running.wait()
        self.state.state = "running"
        self.notifier.ready(self.status_line())
        logger.info("pipeline running: %s", self.status_line())


async def run_daemon(
    config: Config,
    config_path: Path | None = None,
    *,
    stop: asyncio.Event | None = None,
    notifier: SystemdNotifier | None = None,
    log_override: tuple[str | None, str | None] = (None, None),
    on_started: Callable[[Daemon], None] | None = None,
) -> RunResult:
    """`vehicle-agent run`: until SIGTERM/SIGINT (stop) or the source's end; SIGHUP reloads."""
    stop = stop or asyncio.Event()
    daemon = Daemon(config, config_path, notifier=notifier, log_override=log_override)
    loop = asyncio.get_running_loop()
    handlers = {
        signal.SIGTERM: stop.set,
        signal.SIGINT: stop.set,
        signal.SIGHUP: daemon.request_reload,
    }
    for sig, handler in handlers.items():
        loop.add_signal_handler(sig, handler)
    if on_started is not None:
        on_started(daemon)
    try:
        return await daemon.run(stop)
    finally:
        for sig in handlers:
            loop.remove_signal_handler(sig)
