"""Fleet console (cloud side): watch vehicles' telemetry and events, send commands, save frames.

    python -m tools.fleet --broker mqtts://HOST:8883 --ca-file ca.crt --username operator \
        --password-credential fleet-password watch [VEHICLE] [--camera CAMERA]
    python -m tools.fleet … send VEHICLE ping                  # the vehicle's `front` camera
    python -m tools.fleet … send VEHICLE ping --camera rear
    python -m tools.fleet … send VEHICLE clean_lens --all-cameras   # every camera answers
    python -m tools.fleet … send VEHICLE set_config --args '{"changes": {"telemetry_interval_s": 5}}'
    python -m tools.fleet … frames VEHICLE [--camera CAMERA] --out DIR
    python -m tools.fleet … collect --out DATASET [--vehicle VEHICLE] [--camera CAMERA]

A command goes to one camera (`--camera`, default the configuration's default camera id,
`front`), or with `--all-cameras` to the vehicle-wide topic that every camera obeys: the console
then waits for a reply from each camera whose retained status is `online`. Watching, frames and
collecting take every camera unless `--camera` names one. A message in the single-camera topic
layout (no camera level) is reported with one line and ignored.

The password comes from a credential name (`$CREDENTIALS_DIRECTORY/NAME` or the environment
variable `VEHICLE_AGENT_<NAME>`), never from the command line. Topics and payloads are those of
`vehicle_agent.uplink.topics` (docs/mqtt.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import ssl
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import aiomqtt
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed where tests run
    raise SystemExit(
        "tools.fleet needs the fleet extra (aiomqtt is not installed): pip install -e '.[fleet]'"
    ) from exc
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tools.dataset import CollectStats, DatasetError, DatasetWriter
from vehicle_agent import compat
from vehicle_agent.compat import Self, wait_for
from vehicle_agent.config import AgentConfig
from vehicle_agent.secrets import SecretError, read_secret
from vehicle_agent.uplink.topics import ONLINE, CommandReply, FleetTopics, FrameMeta, legacy_message
from vehicle_agent.validation import parse_broker_url

DEFAULT_TTL_S = 60.0
DEFAULT_CAMERA: str = AgentConfig.model_fields["camera_id"].default
"""The camera a command goes to when none is named: the daemon's default `agent.camera_id`."""
JSON_CONTENT_TYPE = "application/json"
"""Content type of every command (and model update offer) the tools publish."""
PENDING_CALLS_WARNING = 256
"""aiomqtt warns above this many publishes in flight (its default, 10, is below one batch of
model update chunks)."""


class ReplyTimeoutError(TimeoutError):
    """No reply to a command in time: the vehicle is offline, or too busy to answer."""

    def __init__(
        self, vehicle: str, name: str, timeout_s: float, camera: str | None = None
    ) -> None:
        self.vehicle = vehicle
        self.camera = camera
        self.name = name
        self.timeout_s = timeout_s
        who = f"camera {camera!r} of vehicle {vehicle!r}" if camera else f"vehicle {vehicle!r}"
        watch = f"watch {vehicle}" + (f" --camera {camera}" if camera else "")
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for {who} to reply to "
            f"{name!r} (is it online? `{watch}` shows its status)"
        )


@dataclass(frozen=True)
class BrokerAccess:
    """How the console reaches the broker (an operator account that may read `fleet/#`)."""

    url: str
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    prefix: str = "fleet"

    def address(self) -> tuple[str, int, ssl.SSLContext | None]:
        try:
            address = parse_broker_url(self.url)
        except ValueError as exc:
            raise ValueError(f"broker URL {self.url!r}: {exc}") from None
        context = None
        if address.tls:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        return address.host, address.port, context


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    correlation: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class FleetClient:
    """One operator connection. Use `async with`; `send` publishes a command and awaits its reply."""

    access: BrokerAccess
    client_id: str = field(default_factory=lambda: f"fleet-console-{secrets.token_hex(4)}")
    session_expiry_s: int = 0
    _client: aiomqtt.Client | None = None
    _replies: dict[bytes, asyncio.Future[Received]] = field(default_factory=dict)
    _reply_queues: dict[bytes, asyncio.Queue[Received]] = field(default_factory=dict)
    """Correlation → every reply to a vehicle-wide command (one per camera)."""
    _subscribed_replies: set[str] = field(default_factory=set)
    _listeners: list[asyncio.Queue[Received]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    def new_client(self) -> aiomqtt.Client:
        host, port, context = self.access.address()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        client = aiomqtt.Client(
            host,
            port,
            username=self.access.username,
            password=self.access.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=context,
            clean_start=self.session_expiry_s == 0,
            properties=properties,
            timeout=10,
        )
        # Model updates publish chunks in batches (and several vehicles at once): so many
        # calls in flight are expected, not a warning per chunk.
        client.pending_calls_threshold = PENDING_CALLS_WARNING
        return client

    async def __aenter__(self) -> Self:
        self._client = self.new_client()
        await self._client.__aenter__()
        self._reader = asyncio.create_task(self._read(self._client), name="fleet-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
            self._client = None

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None:
            raise RuntimeError("use `async with FleetClient(...)`")
        return self._client

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            properties = message.properties
            correlation = getattr(properties, "CorrelationData", None)
            payload = message.payload if isinstance(message.payload, bytes) else b""
            received = Received(str(message.topic), payload, correlation)
            if correlation is not None:
                future = self._replies.pop(correlation, None)
                if future is not None and not future.done():
                    future.set_result(received)
                replies = self._reply_queues.get(correlation)
                if replies is not None:
                    replies.put_nowait(received)
            for queue in self._listeners:
                queue.put_nowait(received)

    @property
    def topics(self) -> FleetTopics:
        return FleetTopics(self.access.prefix)

    def topic(self, vehicle: str, suffix: str) -> str:
        """A vehicle-wide topic (`commands`, `replies/…`, `update/…`)."""
        return self.topics.vehicle(vehicle, suffix)

    def camera_topic(self, vehicle: str, camera: str, suffix: str) -> str:
        """A camera's topic (`status`, `telemetry`, `events`, `frames/…`, `commands`, …)."""
        return self.topics.camera(vehicle, camera, suffix)

    def _base(self, vehicle: str, camera: str | None) -> str:
        """Where a camera's (or with None, the vehicle's) commands and replies live."""
        return self.camera_topic(vehicle, camera, "") if camera else self.topic(vehicle, "")

    async def subscribe(self, topic: str) -> None:
        await self.client.subscribe(topic, qos=1)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Received]]:
        """A queue that receives every message of this connection's subscriptions."""
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            yield queue
        finally:
            self._listeners.remove(queue)

    async def publish_command(
        self,
        vehicle: str,
        payload: bytes,
        *,
        camera: str | None = DEFAULT_CAMERA,
        correlation: bytes | None = None,
        response_topic: str | None = None,
        ttl_s: float | None = DEFAULT_TTL_S,
    ) -> None:
        """Publish raw command bytes to `camera` (None: every camera of the vehicle; tests use it
        for malformed ones), as `application/json` like every command (docs/mqtt.md)."""
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = JSON_CONTENT_TYPE
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
        if ttl_s is not None:
            properties.MessageExpiryInterval = max(1, int(ttl_s))
        await self.client.publish(
            self._base(vehicle, camera) + "commands", payload, qos=1, properties=properties
        )

    async def request(
        self,
        vehicle: str,
        payload: bytes,
        *,
        camera: str = DEFAULT_CAMERA,
        timeout_s: float = 10.0,
        response_topic: str | None = None,
        ttl_s: float | None = DEFAULT_TTL_S,
    ) -> CommandReply:
        """Publish a command to one camera and wait for the reply that carries its correlation
        data; raise `ReplyTimeoutError` (a `TimeoutError`) naming the camera when none comes in
        time."""
        base = self._base(vehicle, camera)
        reply_topic = response_topic or f"{base}replies/{self.client_id}"
        await self._listen_for_replies(f"{base}replies/#")
        correlation = secrets.token_bytes(8)
        future: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._replies[correlation] = future
        try:
            await self.publish_command(
                vehicle,
                payload,
                camera=camera,
                correlation=correlation,
                response_topic=reply_topic,
                ttl_s=ttl_s,
            )
            try:
                received = await wait_for(future, timeout_s)
            except TimeoutError:
                name = _command_name(payload)
                raise ReplyTimeoutError(vehicle, name, timeout_s, camera) from None
        finally:
            self._replies.pop(correlation, None)
        return CommandReply.model_validate_json(received.payload)

    async def _listen_for_replies(self, topic_filter: str) -> None:
        if topic_filter not in self._subscribed_replies:
            await self.subscribe(topic_filter)
            self._subscribed_replies.add(topic_filter)

    async def request_all(
        self,
        vehicle: str,
        payload: bytes,
        *,
        timeout_s: float = 10.0,
        ttl_s: float | None = DEFAULT_TTL_S,
    ) -> tuple[dict[str, CommandReply], set[str]]:
        """Publish a command on the vehicle-wide topic, which every camera obeys, and collect
        the replies (one per camera, by `camera_id`) until each camera whose retained status
        says `online` has answered, or `timeout_s`. Returns the replies and the online cameras
        that did not answer. (The retained statuses arrive before any reply: the broker sends
        them when it grants the subscription, before it receives the command.)"""
        online: set[str] = set()
        replies: dict[str, CommandReply] = {}
        correlation = secrets.token_bytes(8)
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._reply_queues[correlation] = queue
        status_filter = self.camera_topic(vehicle, "+", "status")
        try:
            async with self.listen() as everything:
                await self.subscribe(status_filter)
                await self._listen_for_replies(self.topic(vehicle, "replies/#"))
                await self.publish_command(
                    vehicle,
                    payload,
                    camera=None,
                    correlation=correlation,
                    response_topic=self.topic(vehicle, f"replies/{self.client_id}"),
                    ttl_s=ttl_s,
                )
                deadline = time.monotonic() + timeout_s
                while True:
                    while not everything.empty():
                        message = everything.get_nowait()
                        address = self.topics.parse(message.topic)
                        if address is None or address.suffix != "status" or not address.camera_id:
                            continue
                        if message.payload == ONLINE:
                            online.add(address.camera_id)
                        else:
                            online.discard(address.camera_id)
                    if online and online <= replies.keys():
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        received = await wait_for(queue.get(), min(remaining, 0.2))
                    except TimeoutError:
                        continue
                    try:
                        reply = CommandReply.model_validate_json(received.payload)
                    except ValueError:
                        # A daemon of the single-camera layout answers without a camera id.
                        print(f"fleet: {legacy_message(received.topic)}", file=sys.stderr)
                        continue
                    replies[reply.camera_id] = reply
        finally:
            self._reply_queues.pop(correlation, None)
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.unsubscribe(status_filter)
        return replies, online - replies.keys()

    async def send(
        self,
        vehicle: str,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        camera: str = DEFAULT_CAMERA,
        command_id: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 10.0,
    ) -> CommandReply:
        """Send a command to one camera of `vehicle` and return its reply."""
        return await self.request(
            vehicle,
            _command(name, args, command_id, ttl_s),
            camera=camera,
            timeout_s=timeout_s,
            ttl_s=ttl_s,
        )

    async def send_all(
        self,
        vehicle: str,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 10.0,
    ) -> tuple[dict[str, CommandReply], set[str]]:
        """Send a command to every camera of `vehicle` (see `request_all`)."""
        return await self.request_all(
            vehicle, _command(name, args, command_id, ttl_s), timeout_s=timeout_s, ttl_s=ttl_s
        )


def _command(name: str, args: dict[str, Any] | None, command_id: str | None, ttl_s: float) -> bytes:
    body = {
        "id": command_id or f"c-{secrets.token_hex(6)}",
        "name": name,
        "args": args or {},
        "expires_at": round(time.time() + ttl_s, 3),
    }
    return json.dumps(body).encode()


def _command_name(payload: bytes) -> str:
    try:
        name = json.loads(payload).get("name")
    except (ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) else "the command"


class FrameAssembler:
    """Puts uploaded frames back together from their meta and chunk messages."""

    def __init__(self) -> None:
        self.meta: dict[str, FrameMeta] = {}
        self.chunks: dict[str, dict[int, bytes]] = {}

    def add(self, topic: str, payload: bytes) -> tuple[FrameMeta, bytes] | None:
        """Feed a `…/frames/<upload_id>/<meta|index>` message; returns a frame when complete."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[-3] != "frames":
            return None
        upload_id, part = parts[-2], parts[-1]
        if part == "meta":
            self.meta[upload_id] = FrameMeta.model_validate_json(payload)
        elif part.isdigit():
            self.chunks.setdefault(upload_id, {})[int(part)] = payload
        meta = self.meta.get(upload_id)
        chunks = self.chunks.get(upload_id, {})
        if meta is None or len(chunks) < meta.chunks:
            return None
        data = b"".join(chunks[i] for i in range(meta.chunks))
        del self.meta[upload_id], self.chunks[upload_id]
        if hashlib.sha256(data).hexdigest() != meta.sha256:
            raise ValueError(f"upload {upload_id}: sha256 mismatch")
        return meta, data


# -- command line ------------------------------------------------------------------------------


def _access(args: argparse.Namespace) -> BrokerAccess:
    password = None
    if args.password_credential:
        password = read_secret(args.password_credential).reveal()
    return BrokerAccess(args.broker, args.ca_file, args.username, password, args.prefix)


def _line(message: Received) -> str:
    try:
        body: Any = message.json()
    except (ValueError, UnicodeDecodeError):
        try:
            text = message.payload.decode()
        except UnicodeDecodeError:
            text = ""
        body = (
            text if text.isprintable() and 0 < len(text) < 80 else f"<{len(message.payload)} bytes>"
        )
    if isinstance(body, dict) and "seq" in body and message.topic.endswith("/telemetry"):
        keys = ("seq", "fps", "frames_out", "frames_dropped", "cpu_percent", "backend")
        body = {k: body.get(k) for k in keys} | {"pending": body["uplink"]["outbox"]["pending"]}
    return f"{message.topic} {json.dumps(body) if not isinstance(body, str) else body}"


class LegacyNotice:
    """Says once per vehicle that it still speaks the single-camera topic layout."""

    def __init__(self, topics: FleetTopics, log: Any = sys.stderr) -> None:
        self.topics = topics
        self.log = log
        self.told: set[str] = set()

    def check(self, topic: str) -> bool:
        """True (and one line the first time for its vehicle) when `topic` is of the old layout."""
        if not self.topics.legacy(topic):
            return False
        vehicle = topic.split("/")[1]
        if vehicle not in self.told:
            self.told.add(vehicle)
            print(f"fleet: {legacy_message(topic)}", file=self.log, flush=True)
        return True


async def cmd_watch(args: argparse.Namespace) -> int:
    access = _access(args)
    vehicle = args.vehicle or "+"
    camera = args.camera or "+"
    suffixes = ["status", "telemetry", "events", "replies/#"] + (
        ["frames/+/meta"] if args.frames else []
    )
    while True:
        try:
            async with FleetClient(access) as fleet, fleet.listen() as queue:
                legacy = LegacyNotice(fleet.topics)
                for suffix in suffixes:
                    await fleet.subscribe(fleet.camera_topic(vehicle, camera, suffix))
                await fleet.subscribe(fleet.topic(vehicle, "replies/#"))
                for topic_filter in fleet.topics.legacy_filters(vehicle):
                    await fleet.subscribe(topic_filter)
                where = fleet.camera_topic(vehicle, camera, "…")
                print(f"watching {where} on {access.url}", file=sys.stderr)
                while True:
                    message = await queue.get()
                    if not legacy.check(message.topic):
                        print(_line(message), flush=True)
        except aiomqtt.MqttError as exc:
            print(f"fleet: {exc}; reconnecting in 2 s", file=sys.stderr)
            await asyncio.sleep(2.0)


async def cmd_send(args: argparse.Namespace) -> int:
    try:
        command_args = json.loads(args.args) if args.args else {}
    except json.JSONDecodeError as exc:
        print(f"fleet: --args is not JSON: {exc}", file=sys.stderr)
        return 2
    async with FleetClient(_access(args)) as fleet:
        if args.all_cameras:
            replies, silent = await fleet.send_all(
                args.vehicle,
                args.name,
                command_args,
                command_id=args.id,
                ttl_s=args.ttl,
                timeout_s=args.timeout,
            )
            for camera in sorted(replies):
                print(replies[camera].model_dump_json(indent=2))
            if not replies:
                raise ReplyTimeoutError(args.vehicle, args.name, args.timeout)
            for camera in sorted(silent):
                print(f"fleet: {ReplyTimeoutError(args.vehicle, args.name, args.timeout, camera)}")
            return 0 if not silent and all(r.ok for r in replies.values()) else 1
        reply = await fleet.send(
            args.vehicle,
            args.name,
            command_args,
            camera=args.camera or DEFAULT_CAMERA,
            command_id=args.id,
            ttl_s=args.ttl,
            timeout_s=args.timeout,
        )
    print(reply.model_dump_json(indent=2))
    return 0 if reply.ok else 1


async def cmd_frames(args: argparse.Namespace) -> int:
    out: Path = args.out
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    assembler = FrameAssembler()
    saved = 0
    async with FleetClient(_access(args)) as fleet, fleet.listen() as queue:
        await fleet.subscribe(fleet.camera_topic(args.vehicle, args.camera or "+", "frames/#"))
        while args.count == 0 or saved < args.count:
            message = await queue.get()
            done = assembler.add(message.topic, message.payload)
            if done is None:
                continue
            meta, data = done
            await asyncio.to_thread((out / f"{meta.upload_id}.jpg").write_bytes, data)
            text = meta.model_dump_json(indent=2)
            await asyncio.to_thread((out / f"{meta.upload_id}.json").write_text, text)
            saved += 1
            print(
                f"{meta.upload_id}.jpg {meta.reason} {meta.width}x{meta.height} {meta.size_bytes} B"
            )
    return 0


def collector_id(out: Path, instance: str | None = None) -> str:
    """The collector's MQTT client id: stable per data set (and instance, when several share
    it), so its persistent session (and what the broker queued for it while it was down) is
    found again after a restart."""
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return f"fleet-collector-{digest}" + (f"-{instance}" if instance else "")


def shared(topic_filter: str, group: str | None) -> str:
    """`topic_filter` as an MQTT 5 shared subscription of `group` (each message to one member)."""
    if group is None:
        return topic_filter
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"share group {group!r}: not empty, and no '/', '+' or '#'")
    return f"$share/{group}/{topic_filter}"


async def collect(
    access: BrokerAccess,
    out: Path,
    *,
    vehicle: str = "+",
    camera: str = "+",
    count: int = 0,
    idle_exit_s: float = 0.0,
    session_expiry_s: int = 7 * 24 * 3600,
    share: str | None = None,
    instance: str | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    log: Any = sys.stderr,
) -> CollectStats:
    """Write the uploads of `vehicle`'s `camera` ('+': all) into the data set `out` (tools/dataset.py) until
    `count` new frames (0: no limit) or `idle_exit_s` quiet seconds (0: never; with `stop`,
    counted only once `stop` is set); `ready` is set once the subscription is in place. One line
    per new frame goes to stdout. With `share`, this is one `instance` of several collectors
    on the same data set, each handed a share of the messages (`$share/<share>/…`)."""
    if share is not None:
        shared("", share)  # a bad group is refused before anything connects
        if not instance or not all(c.isalnum() or c in "-_." for c in instance):
            raise ValueError(
                f"a shared collector needs an instance name of letters, digits, '-', '_' or "
                f"'.' (--instance), not {instance!r}"
            )
    writer = await asyncio.to_thread(DatasetWriter, out)
    print(f"collect: {out} holds {writer.frames} frames; listening", file=log)
    client = FleetClient(
        access, client_id=collector_id(out, instance), session_expiry_s=session_expiry_s
    )
    new = 0
    async with client as fleet, fleet.listen() as queue:
        legacy = LegacyNotice(fleet.topics, log)
        await fleet.subscribe(shared(fleet.camera_topic(vehicle, camera, "frames/#"), share))
        # The old layout's uploads are refused, said once per vehicle (never stored blindly).
        await fleet.subscribe(shared(fleet.topic(vehicle, "frames/#"), share))
        if ready is not None:
            ready.set()
        quiet_since = time.monotonic()
        while count == 0 or new < count:
            try:
                message = await wait_for(queue.get(), 0.5 if idle_exit_s else None)
            except TimeoutError:
                if stop is not None and not stop.is_set():
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= idle_exit_s:
                    print(f"collect: nothing for {idle_exit_s:g} s; stopping", file=log)
                    break
                continue
            quiet_since = time.monotonic()
            if legacy.check(message.topic):
                continue
            try:
                entry = await asyncio.to_thread(writer.add, message.topic, message.payload)
            except DatasetError as exc:
                print(f"collect: refused: {exc}", file=log)
                continue
            if entry is not None:
                new += 1
                why = f" ({'; '.join(entry.why)})" if entry.why else ""
                print(f"{entry.path} {entry.reason} {entry.width}x{entry.height}{why}", flush=True)
    stats = writer.stats
    print(
        f"collect: {stats.saved} new ({stats.by_label['good']} good, {stats.by_label['poor']} "
        f"poor), {stats.duplicates} duplicates, {stats.refused} refused, from {stats.messages} "
        "messages",
        file=log,
    )
    return stats


async def cmd_collect(args: argparse.Namespace) -> int:
    """Build a training data set from the fleet's frame uploads (tools/dataset.py)."""
    await collect(
        _access(args),
        args.out,
        vehicle=args.vehicle,
        camera=args.camera,
        count=args.count,
        idle_exit_s=args.idle_exit,
        session_expiry_s=args.session_expiry,
        share=args.share,
        instance=args.instance,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fleet", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--ca-file", type=Path, help="CA of the broker's certificate (mqtts)")
    parser.add_argument("--username", help="operator account")
    parser.add_argument(
        "--password-credential", help="credential name holding the password (see module doc)"
    )
    parser.add_argument("--prefix", default="fleet", help="topic prefix (default: fleet)")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="print status, telemetry, events and replies")
    watch.add_argument("vehicle", nargs="?", help="vehicle id (default: all)")
    watch.add_argument("--camera", help="one camera id (default: every camera)")
    watch.add_argument("--frames", action="store_true", help="also print frame uploads")
    send = sub.add_parser("send", help="send a command and print its reply")
    send.add_argument("vehicle")
    to = send.add_mutually_exclusive_group()
    to.add_argument("--camera", help=f"camera id (default: {DEFAULT_CAMERA})")
    to.add_argument(
        "--all-cameras",
        action="store_true",
        help="send on the vehicle-wide topic; wait for a reply from each online camera",
    )
    send.add_argument("name", help="ping, get_status, clean_lens, set_config, capture_frames, …")
    send.add_argument("--args", help="the command's args as a JSON object")
    send.add_argument("--id", help="command id (default: random)")
    send.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds until it expires")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    frames = sub.add_parser("frames", help="save uploaded frames as JPEG + JSON")
    frames.add_argument("vehicle")
    frames.add_argument("--camera", help="one camera id (default: every camera)")
    frames.add_argument("--out", type=Path, required=True)
    frames.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    collect = sub.add_parser(
        "collect", help="build a training data set (good/poor frames + index) from uploads"
    )
    collect.add_argument("--out", type=Path, required=True, help="data set folder (resumed)")
    collect.add_argument("--vehicle", default="+", help="one vehicle id (default: all)")
    collect.add_argument("--camera", default="+", help="one camera id (default: all)")
    collect.add_argument("--count", type=int, default=0, help="stop after this many new frames")
    collect.add_argument(
        "--idle-exit", type=float, default=0.0, help="stop after this many quiet seconds (0: never)"
    )
    collect.add_argument(
        "--session-expiry",
        type=int,
        default=7 * 24 * 3600,
        help="seconds the broker keeps queuing uploads for a stopped collector (default 7 days)",
    )
    collect.add_argument(
        "--share",
        metavar="GROUP",
        help="one of several collectors on this data set: an MQTT 5 shared subscription "
        "($share/GROUP/…) gives each upload message to one of them (docs/fleet-loop.md)",
    )
    collect.add_argument(
        "--instance", help="this collector's name within --share (its MQTT session's)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {
        "watch": cmd_watch,
        "send": cmd_send,
        "frames": cmd_frames,
        "collect": cmd_collect,
    }[args.command]
    try:
        return compat.run(command(args))
    except ReplyTimeoutError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    except (SecretError, ValueError, aiomqtt.MqttError, TimeoutError) as exc:
        print(f"fleet: {type(exc).__name__}: {exc or 'timed out'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
