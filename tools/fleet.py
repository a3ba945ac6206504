"""Fleet console (cloud side): watch vehicles' telemetry and events, send commands, save frames.

    python -m tools.fleet --broker mqtts://HOST:8883 --ca-file ca.crt --username operator \
        --password-credential fleet-password watch [VEHICLE]
    python -m tools.fleet … send VEHICLE ping
    python -m tools.fleet … send VEHICLE set_config --args '{"changes": {"telemetry_interval_s": 5}}'
    python -m tools.fleet … frames VEHICLE --out DIR
    python -m tools.fleet … collect --out DATASET [--vehicle VEHICLE] [--idle-exit 30]

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
from vehicle_agent.secrets import SecretError, read_secret
from vehicle_agent.uplink.topics import CommandReply, FrameMeta

DEFAULT_TTL_S = 60.0
JSON_CONTENT_TYPE = "application/json"
"""Content type of every command (and model update offer) the tools publish."""


class ReplyTimeoutError(TimeoutError):
    """No reply to a command in time: the vehicle is offline, or too busy to answer."""

    def __init__(self, vehicle: str, name: str, timeout_s: float) -> None:
        self.vehicle = vehicle
        self.name = name
        self.timeout_s = timeout_s
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for vehicle {vehicle!r} to reply to "
            f"{name!r} (is it online? `watch {vehicle}` shows its status)"
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
        scheme, _, rest = self.url.partition("://")
        if scheme not in {"mqtt", "mqtts"} or not rest:
            raise ValueError(
                f"broker URL must be mqtt://HOST[:PORT] or mqtts://…, got {self.url!r}"
            )
        rest = rest.rstrip("/")
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = tail.removeprefix(":")
        else:
            host, _, port = rest.partition(":")
        tls = scheme == "mqtts"
        context = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        return host, int(port) if port else (8883 if tls else 1883), context


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
    _subscribed_replies: set[str] = field(default_factory=set)
    _listeners: list[asyncio.Queue[Received]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    def new_client(self) -> aiomqtt.Client:
        host, port, context = self.access.address()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        return aiomqtt.Client(
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
            for queue in self._listeners:
                queue.put_nowait(received)

    def topic(self, vehicle: str, suffix: str) -> str:
        return f"{self.access.prefix}/{vehicle}/{suffix}"

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
        correlation: bytes | None = None,
        response_topic: str | None = None,
        ttl_s: float | None = DEFAULT_TTL_S,
    ) -> None:
        """Publish raw command bytes (tests use it for malformed ones), as `application/json`
        like every command (docs/mqtt.md)."""
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = JSON_CONTENT_TYPE
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        if correlation is not None:
            properties.CorrelationData = correlation
        if ttl_s is not None:
            properties.MessageExpiryInterval = max(1, int(ttl_s))
        await self.client.publish(
            self.topic(vehicle, "commands"), payload, qos=1, properties=properties
        )

    async def request(
        self,
        vehicle: str,
        payload: bytes,
        *,
        timeout_s: float = 10.0,
        response_topic: str | None = None,
        ttl_s: float | None = DEFAULT_TTL_S,
    ) -> CommandReply:
        """Publish a command and wait for the reply that carries its correlation data; raise
        `ReplyTimeoutError` (a `TimeoutError`) naming the vehicle when none comes in time."""
        reply_topic = response_topic or self.topic(vehicle, f"replies/{self.client_id}")
        listen_on = self.topic(vehicle, "replies/#")
        if listen_on not in self._subscribed_replies:
            await self.subscribe(listen_on)
            self._subscribed_replies.add(listen_on)
        correlation = secrets.token_bytes(8)
        future: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._replies[correlation] = future
        try:
            await self.publish_command(
                vehicle,
                payload,
                correlation=correlation,
                response_topic=reply_topic,
                ttl_s=ttl_s,
            )
            try:
                received = await wait_for(future, timeout_s)
            except TimeoutError:
                raise ReplyTimeoutError(vehicle, _command_name(payload), timeout_s) from None
        finally:
            self._replies.pop(correlation, None)
        return CommandReply.model_validate_json(received.payload)

    async def send(
        self,
        vehicle: str,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 10.0,
    ) -> CommandReply:
        body = {
            "id": command_id or f"c-{secrets.token_hex(6)}",
            "name": name,
            "args": args or {},
            "expires_at": round(time.time() + ttl_s, 3),
        }
        return await self.request(
            vehicle, json.dumps(body).encode(), timeout_s=timeout_s, ttl_s=ttl_s
        )


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


async def cmd_watch(args: argparse.Namespace) -> int:
    access = _access(args)
    vehicle = args.vehicle or "+"
    suffixes = ["status", "telemetry", "events", "replies/#"] + (
        ["frames/+/meta"] if args.frames else []
    )
    while True:
        try:
            async with FleetClient(access) as fleet, fleet.listen() as queue:
                for suffix in suffixes:
                    await fleet.subscribe(fleet.topic(vehicle, suffix))
                print(f"watching {access.prefix}/{vehicle}/… on {access.url}", file=sys.stderr)
                while True:
                    message = await queue.get()
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
        reply = await fleet.send(
            args.vehicle,
            args.name,
            command_args,
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
        await fleet.subscribe(fleet.topic(args.vehicle, "frames/#"))
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


def collector_id(out: Path) -> str:
    """The collector's MQTT client id: stable per data set, so its persistent session (and what
    the broker queued for it while it was down) is found again after a restart."""
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return f"fleet-collector-{digest}"


async def collect(
    access: BrokerAccess,
    out: Path,
    *,
    vehicle: str = "+",
    count: int = 0,
    idle_exit_s: float = 0.0,
    session_expiry_s: int = 7 * 24 * 3600,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    log: Any = sys.stderr,
) -> CollectStats:
    """Write the uploads of `vehicle` ('+': all) into the data set `out` (tools/dataset.py) until
    `count` new frames (0: no limit) or `idle_exit_s` quiet seconds (0: never; with `stop`,
    counted only once `stop` is set); `ready` is set once the subscription is in place. One line
    per new frame goes to stdout."""
    writer = await asyncio.to_thread(DatasetWriter, out)
    print(f"collect: {out} holds {writer.frames} frames; listening", file=log)
    client = FleetClient(access, client_id=collector_id(out), session_expiry_s=session_expiry_s)
    new = 0
    async with client as fleet, fleet.listen() as queue:
        await fleet.subscribe(fleet.topic(vehicle, "frames/#"))
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
        f"poor), {stats.duplicates} duplicates, {stats.refused} refused",
        file=log,
    )
    return stats


async def cmd_collect(args: argparse.Namespace) -> int:
    """Build a training data set from the fleet's frame uploads (tools/dataset.py)."""
    await collect(
        _access(args),
        args.out,
        vehicle=args.vehicle,
        count=args.count,
        idle_exit_s=args.idle_exit,
        session_expiry_s=args.session_expiry,
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
    watch.add_argument("--frames", action="store_true", help="also print frame uploads")
    send = sub.add_parser("send", help="send a command and print its reply")
    send.add_argument("vehicle")
    send.add_argument("name", help="ping, get_status, clean_lens, set_config, capture_frames, …")
    send.add_argument("--args", help="the command's args as a JSON object")
    send.add_argument("--id", help="command id (default: random)")
    send.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds until it expires")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    frames = sub.add_parser("frames", help="save uploaded frames as JPEG + JSON")
    frames.add_argument("vehicle")
    frames.add_argument("--out", type=Path, required=True)
    frames.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    collect = sub.add_parser(
        "collect", help="build a training data set (good/poor frames + index) from uploads"
    )
    collect.add_argument("--out", type=Path, required=True, help="data set folder (resumed)")
    collect.add_argument("--vehicle", default="+", help="one vehicle id (default: all)")
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
