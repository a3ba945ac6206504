"""Act stage: `ControlLoop`, the asyncio part of control: runs the pure machines, applies and refreshes.

Two inputs drive it:
- every analysed frame (`on_adhesion`, called by the act stage): the cleaning machine sees the
  adhesion estimate, and a new cleaning wish is applied at once;
- a refresh tick every `refresh_interval_s`, from its own task: time passes for the cleaning
  machine (a burst ends on time even if frames stop), thermal control reads the latest
  telemetry (stale-aware, no waiting), the wishes are arbitrated, the fan duty is applied and
  the MCU's outputs are re-sent with `max_duration`.

The refresh is the dead man's switch: it runs only while this event loop runs, so a crashed
daemon or a wedged loop stops it and the microcontroller reverts the fan and the cooler by
itself. On a clean exit (`async with`), the fan and the cooler are put in their safe state.
Nothing here needs the network: events go to a callback (the bus), never to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from firmware_bridge import Fault, McuBridge, McuError
from vehicle_agent.compat import Self, timeout
from vehicle_agent.control.arbiter import Decision, arbitrate
from vehicle_agent.control.cleaning import CleaningStateMachine
from vehicle_agent.control.events import ControlEvent
from vehicle_agent.control.fan import Fan, FanError
from vehicle_agent.control.settings import ControlLoopConfig
from vehicle_agent.control.thermal import ThermalController, ThermalOutput, ThermalReading
from vehicle_agent.records import Actuation, FrameRecord

if TYPE_CHECKING:
    from types import TracebackType

    from vehicle_agent.control.events import Emit
    from vehicle_agent.records import JsonValue

logger = logging.getLogger(__name__)

NO_REAL_FAN_MESSAGE = "set [control.fan] driver = 'mcu' (or 'sysfs', 'gpiozero'): docs/service.md"

DUTY_RESOLUTION = 3
"""Decimals a duty is rounded to before it is applied (the MCU's wire carries thousandths)."""


class ThermalLinkError(Exception):
    """The thermal link could not carry a command; `link` names it, `command` says which."""

    def __init__(self, link: str, command: str, reason: str) -> None:
        self.link = link
        self.command = command
        self.reason = reason
        super().__init__(f"{link}: {command}: {reason}")


class ThermalLink(Protocol):
    """Where temperatures come from and the cooler command goes (the MCU, for now).

    `read` must not wait: it returns the latest sample with its age, or None before the first.
    """

    name: str

    def read(self) -> ThermalReading | None: ...

    async def set_cooler(self, enabled: bool, setpoint_c: float, max_duration_s: float) -> None:
        """Raise `ThermalLinkError` when the command was not acknowledged."""
        ...

    async def cooler_off(self) -> None:
        """Switch the cooler off now (safe state); raise `ThermalLinkError` when it cannot."""
        ...


class McuThermalLink:
    """The camera module's microcontroller as the thermal link, through `McuBridge`."""

    name = "mcu"

    def __init__(self, bridge: McuBridge) -> None:
        self.bridge = bridge

    def read(self) -> ThermalReading | None:
        snapshot = self.bridge.latest()
        if snapshot is None:
            return None
        t = snapshot.telemetry
        return ThermalReading(
            sensor_c=t.sensor_c,
            cold_side_c=t.cold_side_c,
            hot_side_c=t.hot_side_c,
            age_s=snapshot.age_s,
            sample_id=snapshot.received_at,
            stale=snapshot.stale,
            mcu_faults=frozenset(str(f.name) for f in Fault if f in t.faults),
        )

    async def set_cooler(self, enabled: bool, setpoint_c: float, max_duration_s: float) -> None:
        try:
            await self.bridge.set_cooler(enabled, setpoint_c, max_duration_s)
        except McuError as exc:
            raise ThermalLinkError(self.name, "set_cooler", str(exc)) from exc

    async def cooler_off(self) -> None:
        try:
            await self.bridge.set_cooler(enabled=False)
        except McuError as exc:
            raise ThermalLinkError(self.name, "cooler_off", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """The actuators and what drives them, for telemetry and the status command."""

    fan_driver: str
    fan_duty: float
    """Duty the control applies now, 0–1."""
    fan_readback: float | None
    """Duty the hardware reports applying (the MCU's own overrides included), 0–1."""
    tach_rpm: float | None
    decided_by: str
    """'idle', 'cleaning', 'thermal', 'sensor_fault' or 'critical'."""
    temperatures_c: dict[str, float]
    """Latest valid readings, °C: 'sensor', 'cold_side', 'hot_side'."""
    cooler_enabled: bool | None
    """None: no thermal link."""
    cooler_setpoint_c: float | None
    cleaning_state: str
    thermal_level: str | None
    alarms: tuple[str, ...]

    def as_dict(self) -> dict[str, JsonValue]:
        data = asdict(self)
        data["alarms"] = list(self.alarms)
        return data


class _Health:
    """Turns repeated failures of one actuator into one `actuator_fault`/`actuator_recovered` pair."""

    def __init__(self, actuator: str) -> None:
        self.actuator = actuator
        self.failures = 0
        self.failing = 0

    def failed(self, error: Exception) -> ControlEvent | None:
        self.failures += 1
        self.failing += 1
        if self.failing > 1:
            return None
        logger.warning(f"actuator {self.actuator}: {error}")
        return ControlEvent("actuator_fault", {"actuator": self.actuator, "error": str(error)})

    def succeeded(self) -> ControlEvent | None:
        if not self.failing:
            return None
        failing, self.failing = self.failing, 0
        return ControlEvent("actuator_recovered", {"actuator": self.actuator, "failures": failing})


class ControlLoop:
    """Runs cleaning and thermal control for one pipeline: `async with ControlLoop(...) as c:`.

    `thermal` and `link` come together or not at all (a vehicle without the module has no
    cooler and no temperatures; cleaning still works). `emit` receives every event; see
    `events.Emit`. The cleaning (bursts, verify window, back-off) is timed by `clock`, or with
    `video_timed` (a replay on the bench) by the video time of the latest frame (`video_t`), so
    cleanings follow the recording, not how fast the host replays it.
    """

    def __init__(
        self,
        fan: Fan,
        cleaning: CleaningStateMachine,
        *,
        emit: Emit,
        thermal: ThermalController | None = None,
        link: ThermalLink | None = None,
        config: ControlLoopConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        video_timed: bool = False,
    ) -> None:
        if (thermal is None) != (link is None):
            raise ValueError("thermal control needs both a ThermalController and a ThermalLink")
        self.fan = fan
        self.cleaning = cleaning
        self.thermal = thermal
        self.link = link
        self.config = config or ControlLoopConfig()
        self.emit = emit
        self.clock = clock
        self.cleaning_clock: Callable[[], float] = (lambda: self._video_t) if video_timed else clock
        self.decision = Decision(fan.safe_duty, None, "idle")
        self.ticks = 0
        self.max_fan_duty = fan.duty
        self._thermal_out: ThermalOutput | None = None
        self._apply_failed = False
        self._video_t = 0.0
        self._fan_health = _Health(f"fan:{fan.name}")
        self._cooler_health = _Health(f"cooler:{link.name}" if link is not None else "cooler")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiters: dict[int, asyncio.Future[dict[str, JsonValue]]] = {}

    # -- lifecycle

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("ControlLoop is already running")
        self._stopping = False
        if not self.fan.real:
            self._emit_now("no_real_fan", message=NO_REAL_FAN_MESSAGE)
        self._task = asyncio.create_task(self._run(), name="control-refresh")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        self._stopping = True
        try:
            # Cancel until it is done: on Python 3.10 and 3.11, wait_for (inside the bridge's
            # requests) and timeout can swallow a cancellation that races with their own
            # completion; the flag ends the loop at its next turn in that case.
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        finally:
            for waiter in self._waiters.values():
                if not waiter.done():
                    # An answer, not a cancellation: the command's task is not being cancelled.
                    waiter.set_result({"finished": False, "reason": "shutdown"})
            await self.safe_state("shutdown" if exc_type is None else "error")
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.error("control refresh task failed", exc_info=task.exception())

    async def safe_state(self, reason: str) -> None:
        """Fan to its safe duty and cooler off, now; each within `safe_state_timeout_s`."""
        limit_s = self.config.safe_state_timeout_s
        try:
            self.fan.safe_state()
            async with timeout(limit_s):
                await self.fan.refresh(self.config.max_duration_s)
            self.decision = Decision(self.fan.duty, None, "idle")
            self._emit_now(
                "actuator_safe_state",
                actuator=f"fan:{self.fan.name}",
                duty=self.fan.duty,
                reason=reason,
            )
        except (FanError, TimeoutError) as exc:
            fallback = " (its firmware reverts by itself)" if self.fan.has_fallback else ""
            logger.warning(f"could not put the fan in its safe state{fallback}: {exc}")
        if self.link is None:
            return
        try:
            async with timeout(limit_s):
                await self.link.cooler_off()
            self._emit_now(
                "actuator_safe_state", actuator=f"cooler:{self.link.name}", duty=0.0, reason=reason
            )
        except (ThermalLinkError, TimeoutError) as exc:
            logger.warning(
                f"could not switch the cooler off (its firmware reverts by itself): {exc}"
            )

    # -- inputs

    def on_adhesion(
        self,
        score: float | None,
        detected: bool | None,
        *,
        covered: float | None = None,
        t: float | None = None,
        frame: int | None = None,
    ) -> float:
        """An analysed frame's adhesion estimate (score 0–1, the detector's flag, the covered
        share; None when the frame has none) at video time `t`. Returns the fan duty now
        applied, for `Actuation`."""
        if t is not None:
            self._video_t = t
        out = self.cleaning.update(self.cleaning_clock(), score, detected, covered)
        self._emit_events(out.events, frame)
        self._decide()
        return self.fan.duty

    async def first_reading(self, timeout_s: float) -> bool:
        """Wait, at most `timeout_s`, until the thermal controller holds a valid reading of the
        camera module (at once without a thermal link). Returns whether it does."""
        thermal = self.thermal
        if thermal is None or self.link is None:
            return True
        link = self.link
        deadline = asyncio.get_running_loop().time() + timeout_s
        woken = False
        while not thermal.temperatures():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            if not woken and link.read() is not None:
                woken = True
                self._wake.set()  # the link has a sample: a tick now, not at the next period
            await asyncio.sleep(0.02)
        return True

    def on_record(self, record: FrameRecord) -> FrameRecord:
        """The act stage's work: the record's adhesion estimate goes to the cleaning machine
        (thermal protection runs on its own tick), and the record comes back with the fan duty
        applied now, the driver, the alarms and the lens-service latch."""
        adhesion = record.adhesion
        duty = self.on_adhesion(
            adhesion.score if adhesion is not None else None,
            adhesion.detected if adhesion is not None else None,
            covered=adhesion.covered_fraction if adhesion is not None else None,
            t=record.frame.t_video,
            frame=record.frame.seq,
        )
        return record.replace(
            actuation=Actuation(
                fan_duty=duty,
                fan_driver=self.fan.name,
                alarms=self.alarms,
                lens_service_required=self.lens_service_required,
            )
        )

    def trigger_cleaning(self, reason: str = "manual", burst_s: float | None = None) -> int | None:
        """Start a cleaning now; returns its cycle number, or None when one is already running."""
        out = self.cleaning.trigger(self.cleaning_clock(), reason, burst_s)
        self._emit_events(out.events, None)
        self._decide()
        if not any(e.type == "cleaning_started" for e in out.events):
            return None
        return self.cleaning.cycle

    async def clean_lens(self, duration_s: float) -> Mapping[str, JsonValue]:
        """The MQTT `clean_lens` command: blow for `duration_s`, wait for the verdict, and return
        the `cleaning_finished` fields (or why nothing was started)."""
        cycle = self.trigger_cleaning("command", duration_s)
        if cycle is None:
            return {"started": False, "reason": "busy"}
        waiter: asyncio.Future[dict[str, JsonValue]] = asyncio.get_running_loop().create_future()
        self._waiters[cycle] = waiter
        # Bounded even if the loop's task died: a command must always get an answer.
        limit = duration_s + self.cleaning.config.verify_s + 3 * self.config.refresh_interval_s
        try:
            async with timeout(limit + 5.0):
                result = await waiter
        except TimeoutError:
            return {"started": True, "finished": False, "cycle": cycle}
        finally:
            self._waiters.pop(cycle, None)
        return {"started": True, **result}

    def clear_lens_service(self) -> Mapping[str, JsonValue]:
        """The MQTT `clear_lens_service` command: release the `lens_service_required` latch."""
        was = self.cleaning.service_required
        out = self.cleaning.clear_service("command")
        self._emit_events(out.events, None)
        return {"cleared": was, "lens_service_required": self.cleaning.service_required}

    # -- outputs

    @property
    def lens_service_required(self) -> bool:
        """Latched after the cleaning retries were spent, until a success or the command."""
        return self.cleaning.service_required

    @property
    def video_t(self) -> float:
        """Video time of the latest frame the loop saw (seconds; 0 before the first)."""
        return self._video_t

    @property
    def alarms(self) -> tuple[str, ...]:
        """Alarms active now: thermal and sensor ones, failing actuators, `no_real_fan`,
        `lens_service_required` (cheap: no hardware read, called for every frame)."""
        thermal = self.thermal
        alarms: tuple[str, ...] = thermal.alarms if thermal is not None else ()
        if self._fan_health.failing:
            alarms = (*alarms, f"actuator_fault:{self._fan_health.actuator}")
        if self._cooler_health.failing:
            alarms = (*alarms, f"actuator_fault:{self._cooler_health.actuator}")
        if not self.fan.real:
            alarms = (*alarms, "no_real_fan")
        if self.cleaning.service_required:
            alarms = (*alarms, "lens_service_required")
        return alarms

    def snapshot(self) -> ControlSnapshot:
        thermal = self.thermal
        cooler = self.decision.cooler
        alarms = self.alarms
        return ControlSnapshot(
            fan_driver=self.fan.name,
            fan_duty=self.fan.duty,
            fan_readback=self.fan.readback(),
            tach_rpm=self.fan.tach_rpm,
            decided_by=self.decision.reason,
            temperatures_c=thermal.temperatures() if thermal is not None else {},
            cooler_enabled=None if cooler is None else cooler.enabled,
            cooler_setpoint_c=None if cooler is None else cooler.setpoint_c,
            cleaning_state=str(self.cleaning.state),
            thermal_level=None if thermal is None else str(thermal.level),
            alarms=alarms,
        )

    def summary(self) -> dict[str, JsonValue]:
        """Totals for `summary.json`: cleanings, alarms, extremes."""
        cleaning, thermal = self.cleaning, self.thermal
        stats = thermal.stats if thermal is not None else None
        max_c: dict[str, JsonValue] = {}
        if stats is not None:
            max_c = {k: round(v, 2) for k, v in stats.max_c.items()}
        alarms = 0 if stats is None else stats.warnings + stats.criticals + stats.sensor_faults
        return {
            "cleanings": cleaning.cycles,
            "cleanings_succeeded": cleaning.succeeded,
            "cleanings_failed": cleaning.failed,
            "cleaning_bursts": cleaning.bursts,
            "alarms": alarms,
            "thermal_warnings": 0 if stats is None else stats.warnings,
            "thermal_criticals": 0 if stats is None else stats.criticals,
            "sensor_faults": 0 if stats is None else stats.sensor_faults,
            "mcu_faults": 0 if stats is None else stats.mcu_faults,
            "actuator_faults": self._fan_health.failures + self._cooler_health.failures,
            "lens_service_requests": cleaning.service_requests,
            "max_fan_duty": round(self.max_fan_duty, 3),
            "max_temperatures_c": max_c,
        }

    # -- the refresh task

    async def _run(self) -> None:
        interval = self.config.refresh_interval_s
        clock = asyncio.get_running_loop().time
        while not self._stopping:
            self._wake.clear()
            started = clock()
            try:
                await self.tick()
            except Exception:
                # The task boundary: a bug in one tick must not end control for good. Outputs not
                # refreshed meanwhile revert in the firmware by themselves.
                logger.exception("control tick failed")
            # A fixed rate, not a fixed pause: a slow tick (a silent MCU) must not stretch the
            # time between refreshes beyond max_duration.
            with contextlib.suppress(TimeoutError):
                async with timeout(max(0.0, interval - (clock() - started))):
                    await self._wake.wait()

    async def tick(self) -> None:
        """One refresh: time passes, thermal control runs, the outputs are applied and re-sent."""
        self.ticks += 1
        now = self.clock()
        out = self.cleaning.update(self.cleaning_clock())
        self._emit_events(out.events, None)
        if self.thermal is not None and self.link is not None:
            self._thermal_out = self.thermal.update(now, self.link.read())
            self._emit_events(self._thermal_out.events, None)
        decision = self._decide()
        # Both at once: each may wait for retries when the MCU is silent, and together they
        # must stay well inside max_duration.
        if self.link is not None and decision.cooler is not None:
            await asyncio.gather(self._refresh_fan(), self._refresh_cooler(decision))
        else:
            await self._refresh_fan()

    def _decide(self) -> Decision:
        """Arbitrate the current wishes and apply the duty to the fan (at once for drivers that
        apply in `set_duty`; the MCU gets it at the next refresh, which this wakes)."""
        decision = arbitrate(self.fan.safe_duty, self.cleaning.duty, self._thermal_out)
        self.decision = decision
        duty = round(decision.fan_duty, DUTY_RESOLUTION)
        if duty != self.fan.duty:
            try:
                self.fan.set_duty(duty)
            except FanError as exc:
                self._apply_failed = True
                self._emit_health(self._fan_health.failed(exc))
            else:
                self._apply_failed = False
                self.max_fan_duty = max(self.max_fan_duty, duty)
                self._wake.set()
        return decision

    async def _refresh_fan(self) -> None:
        try:
            await self.fan.refresh(self.config.max_duration_s)
        except FanError as exc:
            self._emit_health(self._fan_health.failed(exc))
        else:
            if not self._apply_failed:
                self._emit_health(self._fan_health.succeeded())

    async def _refresh_cooler(self, decision: Decision) -> None:
        assert self.link is not None  # noqa: S101 - checked by the caller
        assert decision.cooler is not None  # noqa: S101 - idem
        try:
            await self.link.set_cooler(
                decision.cooler.enabled, decision.cooler.setpoint_c, self.config.max_duration_s
            )
        except ThermalLinkError as exc:
            self._emit_health(self._cooler_health.failed(exc))
        else:
            self._emit_health(self._cooler_health.succeeded())

    # -- events

    def _emit_health(self, event: ControlEvent | None) -> None:
        if event is not None:
            self._emit_events((event,), None)

    def _emit_events(self, events: tuple[ControlEvent, ...], frame: int | None) -> None:
        for event in events:
            if event.type == "cleaning_finished":
                cycle = event.data.get("cycle")
                waiter = self._waiters.get(cycle) if isinstance(cycle, int) else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(dict(event.data))
            self._emit(event.type, frame, dict(event.data))

    def _emit_now(self, type_: str, **data: JsonValue) -> None:
        self._emit(type_, None, data)

    def _emit(self, type_: str, frame: int | None, data: dict[str, JsonValue]) -> None:
        try:
            self.emit(type_, self._video_t, frame, **data)
        except Exception:
            # A listener's failure (an event type not yet registered, a full disk) must never
            # stop fan and cooler control.
            logger.exception(f"could not emit control event {type_}")
