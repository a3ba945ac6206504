"""Simulation, around capture, enhance and uplink: faults injected into a bench run (`--fault`).

`parse_fault('camera-stall@10s-16s')` reads one fault; a `FaultPlan` plays them over a replay by
swapping parts at the composition root, so no stage knows they are injected:
- `camera-stall@T[-END]`: from the frame at video time T the camera delivers nothing for END - T
  wall seconds (default 6, at most 60); the capture stage's stall timeout reopens it.
- `camera-eos@T`: the recording ends at T.
- `enhance-fail@T[-END]`: the chain's first backend raises on every frame from T to END (default:
  to the end), so the chain demotes it and its health checks promote it back afterwards.
- `broker-loss@T[-END]`: a TCP proxy between the uplink and the broker drops every connection at
  T and accepts none until END (default T + 10 s).
Every source instance the capture stage opens shares one underlying source, so a reopened
recording goes on where it stalled instead of from its first frame. What each fault did goes to
`summary.json` (`FaultPlan.summary`) and from there to the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from vehicle_agent.capture.base import BadFrameError, FrameSource, RawFrame, SourceError, SourceInfo
from vehicle_agent.compat import Self, TaskGroup
from vehicle_agent.enhance.base import Enhancer, EnhancerError
from vehicle_agent.events import EventBus
from vehicle_agent.records import FrameRecord, Image, JsonValue

logger = logging.getLogger(__name__)

FaultKind: TypeAlias = Literal["camera-stall", "camera-eos", "enhance-fail", "broker-loss"]
KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
DEFAULT_LENGTH_S: dict[FaultKind, float] = {"camera-stall": 6.0, "broker-loss": 10.0}
"""END - T when a spec gives no END (enhance-fail lasts to the end of the run without one)."""
MAX_STALL_S = 60.0

_TIME = r"(\d+(?:\.\d*)?|\.\d+)s?"
_SPEC = re.compile(rf"^(?P<kind>[a-z-]+)@(?P<start>{_TIME})(?:-(?P<end>{_TIME}))?$")


class FaultSpecError(ValueError):
    """A `--fault` spec that cannot be read; the message says what is wrong in it."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault to inject: its kind and its window in video time, seconds."""

    kind: FaultKind
    start_s: float
    end_s: float | None
    """Video time it ends (camera-stall: T + its wall-clock length); None: to the end of the run."""

    @property
    def text(self) -> str:
        end = "" if self.end_s is None or self.kind == "camera-eos" else f"-{self.end_s:g}s"
        return f"{self.kind}@{self.start_s:g}s{end}"


def parse_fault(spec: str) -> FaultSpec:
    """'camera-stall@10s-14s' → FaultSpec('camera-stall', 10.0, 14.0); defaults fill END."""
    text = spec.strip()
    kind_text = text.partition("@")[0]
    if kind_text not in KINDS:
        raise FaultSpecError(f"unknown fault {kind_text!r} in {spec!r}; known: {', '.join(KINDS)}")
    kind: FaultKind = kind_text  # checked against KINDS just above
    match = _SPEC.match(text)
    if match is None:
        raise FaultSpecError(
            f"bad fault {spec!r}: expected {kind}@START[-END] in seconds, e.g. {kind}@5s-11s"
        )
    start = float(match["start"].removesuffix("s"))
    end = float(match["end"].removesuffix("s")) if match["end"] else None
    if kind == "camera-eos":
        if end is not None:
            raise FaultSpecError(f"{spec!r}: camera-eos takes no END (the recording ends at START)")
        return FaultSpec(kind, start, start)
    if end is not None and end <= start:
        raise FaultSpecError(f"{spec!r}: END {end:g} s is not after START {start:g} s")
    if end is None and kind in DEFAULT_LENGTH_S:
        end = start + DEFAULT_LENGTH_S[kind]
    if kind == "camera-stall" and end is not None and end - start > MAX_STALL_S:
        raise FaultSpecError(f"{spec!r}: a camera stall lasts at most {MAX_STALL_S:g} s")
    return FaultSpec(kind, start, end)


@dataclass(eq=False)
class InjectedFault:
    """A fault of a run and what it did (for `summary.json`)."""

    spec: FaultSpec
    fired_at_s: float | None = None
    """Video time of the frame at which it took effect; None if the run never got there."""
    until_s: float | None = None
    """Video time it stopped taking effect; None while it lasts."""
    details: dict[str, JsonValue] = field(default_factory=dict)
    on_fire: Callable[[InjectedFault], None] | None = None

    def due(self, t: float) -> bool:
        """Not fired yet and the replay reached its start."""
        return self.fired_at_s is None and t >= self.spec.start_s

    def fire(self, t: float) -> None:
        self.fired_at_s = round(t, 3)
        logger.info("bench: fault %s from t=%.2f s", self.spec.text, t)
        if self.on_fire is not None:
            self.on_fire(self)

    def as_json(self, last_t: float) -> dict[str, JsonValue]:
        until = self.until_s
        end = self.spec.end_s
        if (
            self.spec.kind == "enhance-fail"
            and self.fired_at_s is not None
            and end is not None
            and end <= last_t
        ):
            until = end
        return {
            "kind": self.spec.kind,
            "spec": self.spec.text,
            "start_s": self.spec.start_s,
            "end_s": end,
            "fired_at_s": self.fired_at_s,
            "until_s": until,
            **self.details,
        }


class VideoClock:
    """Video time of the latest frame read, as the capture stage stamps it (`offset + pts`),
    and of each recent image, for stages that see the image only (`time_of`)."""

    REMEMBERED = 256

    def __init__(self) -> None:
        self.t = 0.0
        self.offset = 0.0
        self.fps = 10.0
        self._images: dict[int, tuple[weakref.ref[Image], float]] = {}

    def stamp(self, pts: float | None, index: int) -> float:
        self.t = self.offset + (pts if pts is not None else index / self.fps)
        return self.t

    def remember(self, image: Image, t: float) -> None:
        self._images[id(image)] = (weakref.ref(image), t)
        while len(self._images) > self.REMEMBERED:
            self._images.pop(next(iter(self._images)), None)

    def time_of(self, image: Image) -> float:
        """Video time of the frame `image` came from (the frame stores a read-only view of the
        source's array); the latest frame read's when it is not known. The capture stage reads
        ahead of enhance, so the latest read is up to a queue's length late."""
        for candidate in (image, image.base):
            entry = self._images.get(id(candidate))
            if entry is not None and entry[0]() is candidate:
                return entry[1]
        return self.t

    def rewound(self) -> None:
        self.offset = self.t + 1.0 / self.fps


class FaultPlan:
    """The faults of one run, and the parts they are swapped into (`source`,
    `enhancer_factory`, `broker`, and the act-stage observer `__call__`)."""

    def __init__(self, specs: tuple[FaultSpec, ...] | list[FaultSpec]) -> None:
        self.faults = [InjectedFault(s) for s in sorted(specs, key=lambda s: s.start_s)]
        self.clock = VideoClock()
        self.proxy: BrokerProxy | None = None
        self._camera: SharedCamera | None = None

    def of(self, kind: FaultKind) -> list[InjectedFault]:
        return [f for f in self.faults if f.spec.kind == kind]

    def summary(self) -> list[dict[str, JsonValue]]:
        return [f.as_json(self.clock.t) for f in self.faults]

    def report_to(self, events: EventBus, loop: asyncio.AbstractEventLoop) -> None:
        """Emit `fault_injected` when each fault takes effect; faults fire on the capture and
        enhance threads too, and the bus is not thread-safe, so the event loop emits it."""

        def announce(fault: InjectedFault) -> None:
            def emit() -> None:
                t = fault.fired_at_s if fault.fired_at_s is not None else fault.spec.start_s
                end = fault.spec.end_s
                events.emit(
                    "fault_injected", t, kind=fault.spec.kind, spec=fault.spec.text, end_s=end
                )

            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(emit)

        for fault in self.faults:
            fault.on_fire = announce

    # -- capture ------------------------------------------------------------------------------

    def source(self, open_source: Callable[[], FrameSource]) -> Callable[[], FrameSource]:
        """The source factory `open_source`, its instances sharing one open source and stalling
        or ending where the plan says."""
        camera = SharedCamera(open_source, self)
        self._camera = camera
        return lambda: FaultySource(camera)

    def close(self) -> None:
        """Release the shared source if the run stopped while it was stalled (a closer)."""
        if self._camera is not None:
            self._camera.release()

    # -- enhance ------------------------------------------------------------------------------

    def enhancer_factory(
        self, factory: Callable[..., Enhancer], primary: object
    ) -> Callable[..., Enhancer]:
        """The chain's backend `factory`, the instances it makes for config `primary` failing
        on every frame inside an enhance-fail window."""
        faults = self.of("enhance-fail")
        if not faults:
            return factory

        def make(config: Any, **context: Any) -> Enhancer:
            enhancer = factory(config, **context)
            if config is primary:
                _fail_in_windows(enhancer, faults, self.clock)
            return enhancer

        return make

    # -- uplink -------------------------------------------------------------------------------

    def broker(self, url: str) -> BrokerProxy:
        """A proxy to the broker at `url` for the uplink, cut during broker-loss windows."""
        self.proxy = BrokerProxy(url)
        return self.proxy

    def __call__(self, record: FrameRecord) -> None:
        """Act-stage observer (on the event loop): cuts and restores the broker proxy."""
        t = record.frame.t_video
        for fault in self.of("broker-loss"):
            if self.proxy is None:
                continue
            if fault.due(t):
                fault.fire(t)
                fault.details["connections_cut"] = self.proxy.cut()
            end = fault.spec.end_s
            if (
                fault.fired_at_s is not None
                and fault.until_s is None
                and end is not None
                and t >= end
            ):
                self.proxy.restore()
                fault.until_s = round(t, 3)
                fault.details["connections_refused"] = self.proxy.refused


def _fail_in_windows(enhancer: Enhancer, faults: list[InjectedFault], clock: VideoClock) -> None:
    """Make `enhancer.enhance` raise while the video clock is inside one of `faults`.

    The instance itself is changed, not wrapped: the chain looks at its type (a model backend
    reports `model_loaded`), which a wrapper would hide."""
    real = enhancer.enhance

    def enhance(image: Image) -> Image:
        t = clock.time_of(image)
        for fault in faults:
            end = fault.spec.end_s
            if t >= fault.spec.start_s and (end is None or t < end):
                if fault.fired_at_s is None:
                    fault.fire(t)
                failures = fault.details.get("failures", 0)
                fault.details["failures"] = (failures if isinstance(failures, int) else 0) + 1
                raise EnhancerError(enhancer.name, f"injected fault {fault.spec.text}")
        return real(image)

    vars(enhancer)["enhance"] = enhance


# -- the camera ---------------------------------------------------------------------------------


class SharedCamera:
    """The one open source behind every `FaultySource` of a run, with the stall state.

    The capture stage abandons a stalled instance and opens a fresh one; with a recording, a
    fresh open would start again from the first frame, so instances share this one instead."""

    def __init__(self, open_source: Callable[[], FrameSource], plan: FaultPlan) -> None:
        self.open_source = open_source
        self.plan = plan
        self.lock = threading.Lock()
        self.inner: FrameSource | None = open_source()  # made, not opened
        self.uri = self.inner.uri
        self.info: SourceInfo | None = None
        self.held: RawFrame | None = None
        """The frame the stall began at, delivered first when it ends."""
        self.stalled_until: float | None = None
        """Monotonic time the stall ends."""
        self.stall: InjectedFault | None = None
        self.ended = False
        self.index = 0
        self.owner: FaultySource | None = None
        """The instance opened last: only it may close the shared source."""

    def reset(self) -> None:
        """The source broke (or the run ended): the next instance opens it afresh."""
        inner, self.inner, self.info = self.inner, None, None
        if inner is not None:
            inner.close()

    def release(self) -> None:
        with self.lock:
            self.stalled_until = None
        self.reset()

    def stall_left(self) -> float:
        until = self.stalled_until
        return 0.0 if until is None else max(0.0, until - time.monotonic())


class FaultySource(FrameSource):
    """One instance of the shared camera, as the capture stage sees it (a decorator like
    `LensSource`, around the lens, so `VideoClock.time_of` knows the images the stage gets)."""

    def __init__(self, camera: SharedCamera) -> None:
        super().__init__(camera.uri)
        self.camera = camera
        self._closed = threading.Event()

    def open(self) -> SourceInfo:
        camera = self.camera
        with camera.lock:
            if self._closed.is_set():
                raise SourceError(self.uri, "closed")
            if camera.inner is None:
                camera.inner = camera.open_source()
            if camera.info is None:
                camera.info = camera.inner.open()
                camera.plan.clock.fps = camera.info.fps or camera.plan.clock.fps
            camera.owner = self
            return camera.info

    def read(self) -> RawFrame | None:
        camera = self.camera
        while True:
            # A stalled camera: wait it out, or until this instance is abandoned (closed).
            if self._closed.wait(camera.stall_left()):
                raise SourceError(self.uri, "closed while stalled")
            with camera.lock:
                if self._closed.is_set():
                    raise SourceError(self.uri, "closed")
                if camera.stall_left() > 0:
                    continue
                if camera.stalled_until is not None:
                    self._stall_ended()
                held = camera.held
                if held is not None:
                    camera.held = None
                    return held
                if camera.ended or camera.inner is None:
                    return None
                raw = self._read_inner(camera.inner)
                if raw is None:
                    return None
                t = camera.plan.clock.stamp(raw.pts, camera.index)
                camera.index += 1
                for eos in camera.plan.of("camera-eos"):
                    if eos.due(t):
                        eos.fire(t)
                        eos.until_s = eos.fired_at_s
                        camera.ended = True
                        return None
                camera.plan.clock.remember(raw.image, t)
                for stall in camera.plan.of("camera-stall"):
                    if stall.due(t):
                        stall.fire(t)
                        stall.until_s = stall.fired_at_s  # video time stands still meanwhile
                        length = (stall.spec.end_s or stall.spec.start_s) - stall.spec.start_s
                        camera.held = raw
                        camera.stall = stall
                        camera.stalled_until = time.monotonic() + length
                        break
                else:
                    return raw

    def _stall_ended(self) -> None:
        camera = self.camera
        stall = camera.stall
        if stall is not None:
            length = (stall.spec.end_s or stall.spec.start_s) - stall.spec.start_s
            stall.details["stalled_wall_s"] = round(length, 3)
            logger.info("bench: camera stall %s over", stall.spec.text)
        camera.stalled_until = None
        camera.stall = None

    def _read_inner(self, inner: FrameSource) -> RawFrame | None:
        try:
            return inner.read()
        except BadFrameError:
            raise
        except SourceError:
            self.camera.reset()
            raise

    def close(self) -> None:
        self._closed.set()
        camera = self.camera
        with camera.lock:
            if camera.owner is not self or camera.stalled_until is not None:
                # Abandoned while stalled (or superseded): the next instance goes on with the
                # shared source, from the frame the stall began at.
                return
            camera.owner = None
            camera.reset()

    def rewind(self) -> None:
        camera = self.camera
        with camera.lock:
            if camera.inner is None:
                raise SourceError(self.uri, "cannot rewind: not open")
            camera.inner.rewind()
            camera.plan.clock.rewound()
            camera.index = 0
            camera.ended = False


# -- the broker ---------------------------------------------------------------------------------


def _broker_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an mqtt:// or mqtts:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"mqtt", "mqtts"}:
        raise FaultSpecError(f"broker-loss: {url!r} is not an mqtt:// or mqtts:// URL")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    try:
        number = int(port) if port else (8883 if scheme == "mqtts" else 1883)
    except ValueError:
        raise FaultSpecError(f"broker-loss: bad port in {url!r}") from None
    return scheme, host, number


class BrokerProxy:
    """A TCP proxy on 127.0.0.1 in front of the broker; `cut()` drops every connection and
    refuses new ones (accepted, then closed at once) until `restore()`.

    It forwards bytes only, so TLS runs end to end; with mqtts:// the broker's certificate must
    name the host the uplink is given (`url`: 'localhost' or 127.0.0.1)."""

    def __init__(self, broker_url: str) -> None:
        self.scheme, self.host, self.port = _broker_address(broker_url)
        self.down = False
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._listen_port = 0

    @property
    def url(self) -> str:
        host = "localhost" if self.host == "localhost" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self._listen_port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._listen_port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._drop()
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> int:
        """Drop every connection and refuse new ones; returns how many were dropped."""
        self.down = True
        return self._drop()

    def restore(self) -> None:
        self.down = False

    def _drop(self) -> int:
        links = list(self._links)
        self._links.clear()
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            logger.warning("bench broker proxy: cannot reach %s:%d: %s", self.host, self.port, exc)
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            async with TaskGroup() as group:
                group.create_task(_pipe(reader, up_writer))
                group.create_task(_pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy `reader` to `writer` until either side closes, then close `writer`."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
