"""Firmware bridge: `McuBridge`, the host's asyncio client of the camera module's MCU over pyserial.

The bytes travel over a `Transport` (`transport.py`; `SerialTransport`, pyserial watched by
the event loop, unless one is given): the bridge feeds what arrives to `protocol.Decoder` and
hears once when the port goes (EOF or EIO: an unplugged adapter is noticed at once). What the
host knows of the MCU (`Identity`, `Telemetry`, `Snapshot`, `BridgeCounters`) is in `state.py`.

What the bridge guarantees:
- every request gets a reply, a `McuRefusedError` (NAK), or a `McuTimeoutError` after
  `1 + retries` attempts of `request_timeout_s` with growing pauses between them;
- bad bytes never raise: they are counted (`counters`), logged (rate-limited), and cost only
  the frame they damaged;
- the link is kept up by one task: open, `identify`, and on loss (port gone, MCU rebooted,
  session expired) reopen with jittered exponential backoff; a firmware speaking another
  protocol version is refused with `McuVersionError` and never sent anything else;
- the session is kept open with heartbeats, and telemetry is polled whenever periodic reports
  stop, so `latest()` is current or visibly `stale`, never an old value passed off as new.

Actuator refresh is deliberately not automatic: the caller's control loop re-sends `set_fan`
and `set_cooler` before their `max_duration` runs out, so that a wedged control loop lets the
firmware fall back to its safe state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware_bridge.compat import Self, TaskGroup, wait_for
from firmware_bridge.errors import (
    McuError,
    McuRefusedError,
    McuTimeoutError,
    McuUnavailableError,
    McuVersionError,
)
from firmware_bridge.messages import (
    ALL_FAULTS,
    CLEAR_FAULTS,
    GET_TELEMETRY,
    HEARTBEAT,
    IDENTIFY,
    IDENTIFY_REPLY,
    MAX_DURATION_MS,
    NAK,
    PROTOCOL_VERSION,
    SET_COOLER,
    SET_FAN,
    TELEMETRY,
    ErrorCode,
    Fault,
    Kind,
    MessageSpec,
    Value,
)
from firmware_bridge.protocol import (
    FRAMING_REASONS,
    Decoder,
    ErrorReason,
    Message,
    ProtocolError,
    encode,
)
from firmware_bridge.state import BridgeCounters, Identity, Snapshot, Telemetry, number
from firmware_bridge.transport import SerialTransport, TransportClosedError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping
    from types import TracebackType

    from firmware_bridge.transport import Transport

logger = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 10.0
"""At most one warning per kind of bad frame in this time; the others are counted."""
UPTIME_WRAP_MS = 1 << 32


class _LinkLostError(Exception):
    """The port went away while a request waited for its reply (internal: the request retries)."""


@dataclass(frozen=True, slots=True)
class _Sample:
    telemetry: Telemetry
    received_at: float
    poll: int


@dataclass(slots=True)
class _Pending:
    spec: MessageSpec
    future: asyncio.Future[Message]


class _Backoff:
    """Jittered exponential waits (the daemon's own `Backoff` lives in vehicle_agent, which
    this package must not import)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self.initial_s, self.max_s, self.rng = initial_s, max_s, rng
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * 2.0**self.attempt)
        self.attempt += 1
        return min(self.max_s, base * self.rng.uniform(0.7, 1.3))

    def reset(self) -> None:
        self.attempt = 0


def _answers(request: MessageSpec, reply: Message) -> bool:
    if reply.spec is NAK:
        return reply["request_id"] == request.msg_id
    if reply.spec.name != request.reply:
        return False
    return "request_id" not in reply.values or reply["request_id"] == request.msg_id


def _nak_text(request: MessageSpec, code: int, detail: int) -> str:
    try:
        name = ErrorCode(code).name
    except ValueError:
        return f"unknown error code {code} (detail {detail})"
    if code == ErrorCode.BAD_VALUE and detail < len(request.fields):
        return f"{name}: field {request.fields[detail].name} out of range"
    if code == ErrorCode.FAULT_ACTIVE:
        active = [f.name for f in Fault if f & detail]
        return f"{name}: {', '.join(str(a) for a in active) or detail}"
    return f"{name} (detail {detail})"


class McuBridge:
    """Talks to the camera module's MCU on `port`. Use as `async with McuBridge(port) as mcu:`.

    Entering starts the link in the background and returns at once; `wait_ready()` waits for
    the first successful `identify`. Requests made while the link is down wait for it within
    their own deadline.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115_200,
        request_timeout_s: float = 0.25,
        retries: int = 2,
        retry_backoff_s: float = 0.05,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        poll_interval_s: float = 0.25,
        stale_after_polls: int = 3,
        keepalive_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        transport: Transport | None = None,
    ) -> None:
        if request_timeout_s <= 0 or retries < 0 or poll_interval_s <= 0 or stale_after_polls < 1:
            raise ValueError(
                "need request_timeout_s > 0, retries ≥ 0, poll_interval_s > 0, "
                "stale_after_polls ≥ 1"
            )
        self.port = port
        self.baudrate = baudrate
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.poll_interval_s = poll_interval_s
        self.stale_after_polls = stale_after_polls
        self.keepalive_s = keepalive_s
        """Send a heartbeat after this long without sending; None: a third of the MCU's host
        timeout (from `identify`)."""
        self.counters = BridgeCounters()
        self.last_rtt_s: float | None = None
        """Round-trip time of the last request answered at its first attempt."""
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._transport: Transport = transport or SerialTransport(port, baudrate)
        self._decoder = Decoder()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._changed = asyncio.Event()
        self._sample_arrived = asyncio.Event()
        self._link_error: McuError | None = None
        self._identity: Identity | None = None
        self._connections = 0
        self._latest: _Sample | None = None
        self._last_report_seq: int | None = None
        self._poll = 0
        self._last_tx = clock()
        self._error_log: dict[ErrorReason, tuple[float, int]] = {}
        self._group: TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: dict[str, asyncio.Task[None]] = {}

    # -- lifecycle

    async def __aenter__(self) -> Self:
        if self._group is not None:
            raise RuntimeError("McuBridge is already running")
        self._group = TaskGroup()
        await self._group.__aenter__()
        self._tasks = [
            self._group.create_task(self._maintain_link(), name=f"mcu-link {self.port}"),
            self._group.create_task(self._poll_loop(), name=f"mcu-poll {self.port}"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        for task in [*self._tasks, *self._background.values()]:
            task.cancel()
        try:
            if group is not None:
                # Not the body's exception: the group would wrap it in an ExceptionGroup. The
                # body's exception propagates by itself; the group only reports its own tasks'.
                await group.__aexit__(None, None, None)
        finally:
            self._ready.clear()
            self._close_port()

    # -- state

    @property
    def identity(self) -> Identity | None:
        """From the last successful `identify`; None before the first."""
        return self._identity

    @property
    def ready(self) -> bool:
        """The port is open and a session with a compatible firmware is established."""
        return self._ready.is_set()

    @property
    def link_error(self) -> McuError | None:
        """Why the last attempt to establish the link failed; None once it is up."""
        return self._link_error

    @property
    def poll_count(self) -> int:
        return self._poll

    def latest(self) -> Snapshot | None:
        """The newest telemetry (report or reply) and how old it is; None before the first."""
        sample = self._latest
        if sample is None:
            return None
        age_polls = self._poll - sample.poll
        return Snapshot(
            telemetry=sample.telemetry,
            received_at=sample.received_at,
            poll=sample.poll,
            age_polls=age_polls,
            age_s=self._clock() - sample.received_at,
            stale=age_polls > self.stale_after_polls,
        )

    async def wait_ready(self, timeout_s: float, *, retry: bool = True) -> Identity:
        """Wait until the link is up. Raises the link's error (`McuUnavailableError`,
        `McuTimeoutError`) at the deadline, a `McuVersionError` at once, and with
        `retry=False` the first failure at once (for one-shot commands)."""
        deadline = self._clock() + timeout_s
        while True:
            changed = self._changed
            if self._ready.is_set() and self._identity is not None:
                return self._identity
            error = self._link_error
            if isinstance(error, McuVersionError) or (error is not None and not retry):
                raise error
            remaining = deadline - self._clock()
            if remaining <= 0:
                if error is not None:
                    raise error
                raise McuTimeoutError(self.port, "identify", 0, timeout_s)
            with contextlib.suppress(TimeoutError):
                await wait_for(changed.wait(), remaining)

    async def next_telemetry(self, timeout_s: float) -> Telemetry:
        """The next sample to arrive (report or reply), waiting at most `timeout_s`."""
        event = self._sample_arrived
        try:
            await wait_for(event.wait(), timeout_s)
        except TimeoutError:
            raise McuTimeoutError(self.port, "telemetry", 1, timeout_s) from None
        assert self._latest is not None  # noqa: S101 - set before the event
        return self._latest.telemetry

    # -- requests

    async def get_telemetry(self) -> Telemetry:
        """A sample taken now (it also becomes `latest()`)."""
        return Telemetry.from_message(await self.request(GET_TELEMETRY))

    async def set_fan(self, duty: float, max_duration_s: float) -> None:
        """Drive the fan at `duty` (0–1) for at most `max_duration_s`; refresh it before then."""
        await self.request(SET_FAN, {"duty": duty, "max_duration_ms": _ms(max_duration_s)})

    async def set_cooler(
        self, enabled: bool, setpoint_c: float = 20.0, max_duration_s: float = 1.0
    ) -> None:
        """Regulate the sensor to `setpoint_c` for at most `max_duration_s`, or switch off."""
        await self.request(
            SET_COOLER,
            {
                "enable": int(enabled),
                "setpoint": setpoint_c,
                "max_duration_ms": _ms(max_duration_s),
            },
        )

    async def heartbeat(self) -> float:
        """Keep the session open; returns the MCU uptime in seconds."""
        reply = await self.request(HEARTBEAT)
        return number(reply["uptime_ms"]) / 1000

    async def clear_faults(self, mask: Fault = ALL_FAULTS) -> None:
        """Clear latched faults whose condition is gone (those still present stay set)."""
        await self.request(CLEAR_FAULTS, {"mask": int(mask)})

    async def safe_state(self) -> None:
        """Cooler off and fan at its safe duty now, rather than when their durations run out."""
        await self.set_cooler(enabled=False)
        if self._identity is not None:
            await self.set_fan(self._identity.fan_safe_duty, 1.0)

    async def request(
        self, spec: MessageSpec, values: Mapping[str, Value] | None = None
    ) -> Message:
        """Send a request and return its reply; see the module docstring for the guarantees.

        Values are checked before anything is sent (ValueError names the field).
        """
        if spec.kind is not Kind.REQUEST:
            raise ValueError(f"{spec.name} is not a request")
        spec.pack(values or {})  # refuse bad values before waiting for anything
        return await self._request(spec, values or {}, handshake=False)

    async def _request(
        self, spec: MessageSpec, values: Mapping[str, Value], *, handshake: bool
    ) -> Message:
        attempts = 1 + self.retries
        sent = False
        for attempt in range(attempts):
            if attempt:
                self.counters.retries += 1
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            if not handshake and not self._ready.is_set():
                if isinstance(self._link_error, McuVersionError):
                    raise self._link_error
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._ready.wait(), self.request_timeout_s)
                if not self._ready.is_set():
                    continue
            seq = self._next_seq()
            pending = _Pending(spec, asyncio.get_running_loop().create_future())
            self._pending[seq] = pending
            started = self._clock()
            try:
                self._send(encode(spec, seq, values))
                sent = True
                reply = await wait_for(pending.future, self.request_timeout_s)
            except TimeoutError:
                self.counters.timeouts += 1
                logger.debug(f"{self.port}: {spec.name} seq {seq}: no reply, attempt {attempt + 1}")
                continue
            except _LinkLostError:
                continue
            finally:
                self._pending.pop(seq, None)
            if attempt == 0:
                self.last_rtt_s = self._clock() - started
            if reply.spec is not NAK:
                return reply
            self.counters.naks += 1
            code, detail = int(number(reply["code"])), int(number(reply["detail"]))
            if code == ErrorCode.VERSION_MISMATCH:
                raise McuVersionError(self.port, PROTOCOL_VERSION, detail)
            if code == ErrorCode.NOT_IDENTIFIED and not handshake:
                # The MCU rebooted or timed us out: open a new session, then try again.
                self._drop_link("the microcontroller has no session (rebooted or timed out)")
                continue
            raise McuRefusedError(self.port, spec.name, code, detail, _nak_text(spec, code, detail))
        if not sent and isinstance(self._link_error, McuUnavailableError):
            raise self._link_error
        raise McuTimeoutError(self.port, spec.name, attempts, self.request_timeout_s)

    def _next_seq(self) -> int:
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in self._pending:
                return self._seq
        raise RuntimeError("256 requests pending: no free sequence number")

    # -- the link

    async def _maintain_link(self) -> None:
        backoff = _Backoff(self.reconnect_initial_s, self.reconnect_max_s, self._rng)
        while True:
            try:
                self._open()
                identity = await self._handshake()
            except McuError as exc:
                self._close_port()
                if str(exc) != str(self._link_error):
                    logger.warning(str(exc))
                self._link_error = exc
                self._notify()
                delay = backoff.next_delay()
                if isinstance(exc, McuVersionError):
                    delay = self.reconnect_max_s  # it will not change by itself soon
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if self._connections:
                self.counters.reconnects += 1
                logger.info(f"{self.port}: link re-established")
            else:
                logger.info(
                    f"{self.port}: module {identity.serial_number}, firmware "
                    f"{identity.firmware_version}, protocol {identity.protocol}"
                )
            self._connections += 1
            self._identity = identity
            self._link_error = None
            self._ready.set()
            self._notify()
            await self._lost.wait()
            self._ready.clear()
            self._close_port()
            self._notify()

    def _open(self) -> None:
        self._decoder = Decoder()
        self._last_report_seq = None
        self._lost.clear()
        self._transport.open(self._on_bytes, self._drop_link)

    async def _handshake(self) -> Identity:
        reply = await self._request(IDENTIFY, {"host_protocol": PROTOCOL_VERSION}, handshake=True)
        identity = Identity.from_message(reply)
        if identity.protocol != PROTOCOL_VERSION:
            raise McuVersionError(
                self.port,
                PROTOCOL_VERSION,
                identity.protocol,
                identity.firmware_version,
                identity.serial_number,
            )
        return identity

    def _close_port(self) -> None:
        self._transport.close()
        self._fail_pending()

    def _fail_pending(self) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(_LinkLostError())

    def _drop_link(self, reason: str) -> None:
        """The link is gone (or useless): stop reading, fail pending requests, let the link
        task reconnect."""
        if self._lost.is_set():
            return
        logger.warning(f"{self.port}: link lost: {reason}")
        self._transport.close()
        self._ready.clear()
        self._lost.set()
        self._fail_pending()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- bytes

    def _send(self, frame: bytes) -> None:
        if self._lost.is_set() or not self._transport.is_open:
            raise _LinkLostError
        self.counters.frames_out += 1
        self._last_tx = self._clock()
        try:
            self._transport.write(frame)
        except TransportClosedError as exc:
            raise _LinkLostError from exc

    def _on_bytes(self, data: bytes) -> None:
        discarded = self._decoder.bytes_discarded
        feed = self._decoder.feed(data)
        self.counters.bytes_discarded += self._decoder.bytes_discarded - discarded
        for error in feed.errors:
            self._on_protocol_error(error)
        for message in feed.messages:
            self.counters.frames_in += 1
            self._dispatch(message)

    def _on_protocol_error(self, error: ProtocolError) -> None:
        if error.reason is ErrorReason.CRC:
            self.counters.crc_errors += 1
        elif error.reason in FRAMING_REASONS:
            self.counters.framing_errors += 1
        else:
            self.counters.bad_messages += 1
        self._log_error(error)
        # identify_reply's first byte is the protocol version in every version: a reply we
        # cannot decode still tells us what the firmware speaks.
        if (
            error.reason is ErrorReason.BAD_LENGTH
            and error.msg_id == IDENTIFY_REPLY.msg_id
            and error.seq is not None
            and error.payload
        ):
            pending = self._pending.get(error.seq)
            if pending is not None and pending.spec is IDENTIFY and not pending.future.done():
                pending.future.set_exception(
                    McuVersionError(self.port, PROTOCOL_VERSION, error.payload[0])
                )

    def _log_error(self, error: ProtocolError) -> None:
        now = self._clock()
        last, suppressed = self._error_log.get(error.reason, (-ERROR_LOG_INTERVAL_S, 0))
        if now - last < ERROR_LOG_INTERVAL_S:
            self._error_log[error.reason] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more of this kind since the last warning)" if suppressed else ""
        logger.warning(f"{self.port}: refused bytes from the microcontroller: {error}{more}")
        self._error_log[error.reason] = (now, 0)

    def _dispatch(self, message: Message) -> None:
        if message.spec.kind is Kind.REPORT:
            self._on_telemetry(message)
            return
        if message.spec is TELEMETRY:
            self._on_telemetry(message)  # a late reply is still a real sample
        pending = self._pending.get(message.seq)
        if pending is None or pending.future.done() or not _answers(pending.spec, message):
            self.counters.late_replies += 1
            return
        pending.future.set_result(message)

    def _on_telemetry(self, message: Message) -> None:
        telemetry = Telemetry.from_message(message)
        previous = self._latest.telemetry if self._latest else None
        if previous is not None and telemetry.uptime_s < previous.uptime_s:
            wrapped = previous.uptime_s * 1000 > UPTIME_WRAP_MS - 60_000
            if not wrapped:
                self.counters.mcu_resets += 1
                logger.warning(f"{self.port}: the microcontroller rebooted (uptime went back)")
        if telemetry.source == "report":
            if self._last_report_seq is not None:
                self.counters.reports_missed += (message.seq - self._last_report_seq - 1) & 0xFF
            self._last_report_seq = message.seq
        self._latest = _Sample(telemetry, self._clock(), self._poll)
        self._sample_arrived.set()
        self._sample_arrived = asyncio.Event()

    # -- polling

    async def _poll_loop(self) -> None:
        """Count polls (the unit of staleness), poll when reports stop, keep the session open."""
        while True:
            await asyncio.sleep(self.poll_interval_s)
            self._poll += 1
            if not self._ready.is_set():
                continue
            latest_poll = self._latest.poll if self._latest is not None else -1
            if latest_poll < self._poll - 1:
                self._spawn("poll", self.get_telemetry())
            elif self._clock() - self._last_tx >= self._keepalive_interval():
                self._spawn("heartbeat", self.heartbeat())

    def _keepalive_interval(self) -> float:
        if self.keepalive_s is not None:
            return self.keepalive_s
        timeout = self._identity.host_timeout_s if self._identity else 1.0
        return timeout / 3

    def _spawn(self, name: str, work: Coroutine[Any, Any, object]) -> None:
        running = self._background.get(name)
        if running is not None and not running.done():
            work.close()
            return
        if self._group is None:
            work.close()
            return
        self._background[name] = self._group.create_task(
            self._quietly(name, work), name=f"mcu-{name} {self.port}"
        )

    async def _quietly(self, name: str, work: Coroutine[Any, Any, object]) -> None:
        try:
            await work
        except McuError as exc:
            logger.debug(f"{self.port}: background {name} failed: {exc}")
        except Exception:
            logger.exception(f"{self.port}: background {name} failed")


def _ms(seconds: float) -> int:
    """Seconds to a whole `max_duration_ms` (refused by `request()` when out of range)."""
    ms = round(seconds * 1000)
    if not 1 <= ms <= MAX_DURATION_MS:
        raise ValueError(f"max_duration {seconds} s is outside [0.001, {MAX_DURATION_MS / 1000}] s")
    return ms
