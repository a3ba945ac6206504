"""Uplink: `Link`, one MQTT 5 connection driven by paho-mqtt from the event loop, and its TLS.

paho-mqtt is driven from the event loop directly, the way aiomqtt does it (socket callbacks,
`loop_read`/`loop_write`/`loop_misc`), because aiomqtt's `publish()` does not tell the PUBACK
reason code, and a refused publish must not count as delivered. Each connection attempt uses a
fresh paho client (a fresh `Link`): its in-memory session is disposable, the outbox is the
truth. `MqttUplink` (`uplink/mqtt.py`) decides what goes over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from vehicle_agent.compat import wait_for
from vehicle_agent.secrets import SecretValue
from vehicle_agent.uplink.commands import COMMAND_WINDOW
from vehicle_agent.uplink.settings import MqttUplinkConfig
from vehicle_agent.uplink.topics import OFFLINE

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0


class UplinkError(Exception):
    """The broker link failed; `reason` says how, `code` is the MQTT reason code if any."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class ConnectError(UplinkError):
    """No connection: unreachable, TLS refused (wrong CA or name), or a negative CONNACK."""


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho leaves a refused socket for the GC."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(config: MqttUplinkConfig) -> ssl.SSLContext:
    """Verify the broker against `ca_file` and its name against the URL's host; TLS ≥ 1.2."""
    context = ssl.create_default_context(cafile=str(config.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    if config.client_cert_file is not None:
        key = str(config.client_key_file) if config.client_key_file is not None else None
        context.load_cert_chain(str(config.client_cert_file), key)
    return context


@dataclass(eq=False)
class _Delivery:
    """A QoS 1 message received and not yet acknowledged."""

    mid: int
    settled: bool = field(default=False)


def nothing() -> None:
    pass


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (nobody may be waiting for it any more)."""
    if not future.cancelled():
        future.exception()


class Link:
    """One connection: a fresh paho client whose socket the event loop watches."""

    def __init__(
        self,
        *,
        client_id: str,
        username: str | None,
        password: SecretValue | None,
        tls: ssl.SSLContext | None,
        will_topic: str,
        keepalive: int,
        connect_timeout: float,
        on_message: Callable[[mqtt.MQTTMessage, Callable[[], None]], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.connect_timeout = connect_timeout
        # Our sender keeps the window (the broker's Receive Maximum); paho must not queue.
        client.max_inflight_messages_set(1000)
        client.enable_logger(logging.getLogger("vehicle_agent.uplink.paho"))
        if username is not None:
            client.username_pw_set(username, password.reveal() if password else None)
        if tls is not None:
            client.tls_set_context(tls)
        client.will_set(will_topic, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda _c, _u, message: self._deliver(message)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self.client = client
        self.keepalive = keepalive
        self._on_lost = on_lost
        self._on_message = on_message
        self._unacked: deque[_Delivery] = deque()
        """Received QoS 1 messages in arrival order; PUBACKs go out in that order."""
        self.window = 65535
        """Messages that may be in flight: the broker's Receive Maximum (MQTT 5)."""
        self.connected: asyncio.Future[bool] = self.loop.create_future()
        self.lost: asyncio.Future[str] = self.loop.create_future()
        self.connected.add_done_callback(_retrieve)
        self.lost.add_done_callback(_retrieve)
        self.inflight: dict[int, int] = {}
        """mid → outbox row id of messages sent and not acknowledged yet."""
        self._acks: dict[int, Callable[[ReasonCode], None]] = {}
        self._subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._fd: int | None = None
        self._misc: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self.connected.done() and not self.connected.exception() and not self.lost.done()

    # -- connecting ---------------------------------------------------------------------------

    async def connect(
        self, host: str, port: int, session_expiry_s: int, max_packet: int, executor: Any
    ) -> bool:
        """Connect and wait for a positive CONNACK; returns whether the broker had a session."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
        properties.MaximumPacketSize = max_packet
        properties.ReceiveMaximum = COMMAND_WINDOW
        connect = functools.partial(
            self.client.connect,
            host,
            port,
            self.keepalive,
            clean_start=False,
            properties=properties,
        )
        # connect() blocks: DNS, TCP and the TLS handshake. Its socket callbacks come from the
        # executor's thread and are passed to the loop (see `_call`).
        future = self.loop.run_in_executor(executor, connect)
        try:
            await future
        except asyncio.CancelledError:
            future.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.abandon))
            raise
        except (OSError, ValueError) as exc:
            # ssl.SSLError and CertificateError are OSError / ValueError.
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return await wait_for(asyncio.shield(self.connected), self.client.connect_timeout)
        except TimeoutError:
            raise ConnectError("no CONNACK in time") from None

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self.connected.done():
            return
        self.window = int(getattr(properties, "ReceiveMaximum", 65535))
        if reason_code.is_failure:
            self.connected.set_exception(
                ConnectError(f"broker refused the connection: {reason_code}", reason_code.value)
            )
        else:
            self.connected.set_result(bool(flags.session_present))

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if flags.is_disconnect_packet_from_server:
            reason = f"the broker disconnected us: {reason_code}"
        elif reason_code.value == 0x80:  # paho's code for a socket that closed or failed
            reason = "connection lost"
        else:
            reason = f"connection lost: {reason_code}"
        if not self.connected.done():
            self.connected.set_exception(ConnectError(reason, reason_code.value))
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
            for future in self._subscribes.values():
                if not future.done():
                    future.set_exception(UplinkError(reason))
            self._on_lost()

    # -- publishing ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        on_ack: Callable[[ReasonCode], None] | None = None,
    ) -> int | None:
        """Send with QoS 1; `on_ack` gets the PUBACK's reason code. None if not sent."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        if on_ack is not None:
            self._acks[info.mid] = on_ack
        return info.mid

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.inflight.pop(mid, None)
        callback = self._acks.pop(mid, None)
        if callback is not None:
            callback(reason_code)

    # -- receiving ----------------------------------------------------------------------------

    def _deliver(self, message: mqtt.MQTTMessage) -> None:
        """Pass a message on with the function that acknowledges it (once, in arrival order:
        MQTT 5 §4.6); one whose handler raises is acknowledged at once."""
        if message.qos == 0:
            self._on_message(message, nothing)
            return
        delivery = _Delivery(message.mid)
        self._unacked.append(delivery)
        settle = functools.partial(self._settle, delivery)
        try:
            self._on_message(message, settle)
        except BaseException:
            settle()
            raise

    def _settle(self, delivery: _Delivery) -> None:
        delivery.settled = True
        while self._unacked and self._unacked[0].settled:
            mid = self._unacked.popleft().mid
            # After the link dropped the broker delivers it again on the next one.
            if not self.lost.done():
                self.client.ack(mid, 1)

    async def subscribe(self, *topics: str) -> list[ReasonCode]:
        """One SUBSCRIBE for `topics`; their reason codes, in order."""
        future: asyncio.Future[list[ReasonCode]] = self.loop.create_future()
        future.add_done_callback(_retrieve)
        rc, mid = self.client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise UplinkError(f"subscribe failed: {mqtt.error_string(rc)}")
        self._subscribes[mid] = future
        return await wait_for(future, SUBSCRIBE_TIMEOUT_S)

    def unsubscribe(self, topic: str) -> None:
        """Fire and forget: a late UNSUBACK changes nothing we track."""
        self.client.unsubscribe(topic)

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        future = self._subscribes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason_codes)

    # -- closing ------------------------------------------------------------------------------

    async def close(self, status_topic: str) -> None:
        """Publish `offline` (retained) and disconnect cleanly, so the Last Will is not sent."""
        try:
            if self.up:
                acked: asyncio.Future[ReasonCode] = self.loop.create_future()
                acked.add_done_callback(_retrieve)

                def on_ack(code: ReasonCode) -> None:
                    if not acked.done():
                        acked.set_result(code)

                mid = self.publish(status_topic, OFFLINE, retain=True, on_ack=on_ack)
                if mid is not None:
                    with contextlib.suppress(TimeoutError):
                        await wait_for(asyncio.shield(acked), CLOSE_TIMEOUT_S)
                self.client.disconnect()
                with contextlib.suppress(TimeoutError):
                    await wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT_S)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close the socket now, whatever state the connection is in."""
        self._lose("closed")
        sock = self.client.socket()
        if sock is not None:
            fd = sock.fileno()
            if fd >= 0:
                self.loop.remove_reader(fd)
                self.loop.remove_writer(fd)
            sock.close()
        self._fd = None
        if self._misc is not None:
            self._misc.cancel()

    # -- the event loop drives paho ----------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        # paho closes the socket of a garbage-collected client whenever the collector runs,
        # on this thread or another, possibly after the loop ended: the loop's readers and
        # tasks went with it, so there is nothing left to watch or unwatch.
        if self.loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed since the check
                self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._call(self._watch, sock.fileno())

    def _watch(self, fd: int) -> None:
        self._fd = fd
        self.loop.add_reader(fd, self._readable)
        self._misc = self.loop.create_task(self._misc_loop(), name="uplink-keepalive")

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._call(self._unwatch, sock.fileno())

    def _unwatch(self, fd: int) -> None:
        if fd >= 0:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
        if self._fd == fd:
            self._fd = None
        if self._misc is not None:
            self._misc.cancel()

    def _on_socket_register_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._call(self._want_write, sock.fileno())

    def _want_write(self, fd: int) -> None:
        if self._fd == fd:
            self.loop.add_writer(fd, self._writable)

    def _on_socket_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._call(self._stop_writing, sock.fileno())

    def _stop_writing(self, fd: int) -> None:
        if fd >= 0:
            self.loop.remove_writer(fd)

    def _readable(self) -> None:
        try:
            while True:
                rc = self.client.loop_read()
                sock = self.client.socket()
                # An SSL socket may hold decoded bytes that select() does not see.
                if rc or not isinstance(sock, ssl.SSLSocket) or sock.pending() == 0:
                    break
        except Exception as exc:
            logger.debug("MQTT read failed", exc_info=True)
            self._lose(f"read failed: {exc}")
            self.abandon()

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            logger.debug("MQTT write failed", exc_info=True)
            self._lose(f"write failed: {exc}")
            self.abandon()
            return
        if self._fd is not None and not self.client.want_write():
            self.loop.remove_writer(self._fd)

    async def _misc_loop(self) -> None:
        """Keepalive: paho sends PINGREQ and notices a silent broker from here."""
        while True:
            if self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            await asyncio.sleep(1.0)


Refused = Callable[[str, str, ReasonCode], None]
"""`refused(topic, what, code)`: the broker refused something (`OutboxPump.refused_event`)."""


class KeptSubscriptions:
    """Topic filters kept across reconnects (the model updates' offer and chunks): subscribed at
    once while a link is up, and again on every new one (`resubscribe`). It is the
    `uplink.base.Subscriptions` a carried part gets."""

    def __init__(self, current: Callable[[], Link | None], refused: Refused) -> None:
        self._current = current
        self._refused = refused
        self.wanted: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def want(self, topic_filter: str) -> None:
        """Subscribe to `topic_filter` now if connected, and after every reconnect."""
        self.wanted.add(topic_filter)
        link = self._current()
        if link is not None and link.up:
            self._subscribe_soon(link, topic_filter)

    def drop(self, topic_filter: str) -> None:
        self.wanted.discard(topic_filter)
        link = self._current()
        if link is not None and link.up:
            link.unsubscribe(topic_filter)

    def refresh(self, topic_filter: str) -> None:
        """Subscribe again: the broker re-sends the retained messages the filter matches."""
        self.want(topic_filter)

    def resubscribe(self, link: Link) -> None:
        """A new connection: every kept filter again."""
        for topic_filter in sorted(self.wanted):
            self._subscribe_soon(link, topic_filter)

    def _subscribe_soon(self, link: Link, topic_filter: str) -> None:
        async def subscribe() -> None:
            try:
                codes = await link.subscribe(topic_filter)
            except (UplinkError, TimeoutError) as exc:
                logger.warning("subscribing to %s failed: %s", topic_filter, exc)
                return
            if codes and codes[0].is_failure:
                self._refused(topic_filter, "subscription", codes[0])

        task = asyncio.get_running_loop().create_task(subscribe(), name="uplink-subscribe")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
