"""Commands without a broker: every refusal names its problem and changes nothing; an id runs
at most once and a redelivery gets the first reply; set_config is validated with config bounds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vehicle_agent.catalogue import EVENT_TYPES
from vehicle_agent.config import MqttUplinkConfig
from vehicle_agent.uplink.command_table import CaptureFramesArgs, NoArgs
from vehicle_agent.uplink.commands import (
    Admitted,
    CommandFailedError,
    CommandProcessor,
    IncomingCommand,
    Outcome,
    SettingsError,
    apply_settings,
    current_settings,
)
from vehicle_agent.uplink.outbox import Outbox, OutMessage
from vehicle_agent.uplink.topics import CommandReply, MessageClass, Topics

TOPICS = Topics("fleet", "veh-1", "front")
TTL = dict.fromkeys(MessageClass, 3600.0)


class OutboxLedger:
    """The real outbox tables, called directly (the uplink calls them on its DB thread)."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path, 10**8, TTL)
        self.queued: list[OutMessage] = []

    async def first_reply(self, command_id: str) -> tuple[bool, bytes | None]:
        return self.outbox.command_reply(command_id)

    async def started(self, command_id: str, name: str) -> bool:
        return self.outbox.command_started(command_id, name)

    async def finished(self, command_id: str | None, reply: OutMessage) -> None:
        self.outbox.command_finished(command_id, reply)
        self.queued.append(reply)


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def ping(self, _args: NoArgs, cid: str) -> dict[str, Any]:
        self.calls.append(("ping", cid))
        return {"pong": True}

    async def capture(self, args: CaptureFramesArgs, _cid: str) -> dict[str, Any]:
        self.calls.append(("capture_frames", args.count))
        return {"scheduled": args.count}

    async def clean(self, _args: Any, _cid: str) -> dict[str, Any]:
        raise CommandFailedError("unavailable", "no lens cleaner configured on this vehicle")

    async def boom(self, _args: Any, _cid: str) -> dict[str, Any]:
        raise RuntimeError("driver fell over")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[OutboxLedger]:
    ledger = OutboxLedger(tmp_path / "uplink.sqlite3")
    yield ledger
    ledger.outbox.close()


@pytest.fixture
def calls() -> Calls:
    return Calls()


def processor(ledger: OutboxLedger, calls: Calls, clock: float | None = None) -> CommandProcessor:
    return CommandProcessor(
        TOPICS,
        "veh-1",
        ledger,
        {
            "ping": calls.ping,
            "capture_frames": calls.capture,
            "clean_lens": calls.clean,
            "get_status": calls.boom,
        },
        max_bytes=1024,
        clock=(lambda: clock) if clock is not None else time.time,
    )


def command(name: str = "ping", cid: str = "c-1", **fields: Any) -> bytes:
    body: dict[str, Any] = {"id": cid, "name": name, "args": {}, "expires_at": time.time() + 60}
    body.update(fields)
    return json.dumps(body).encode()


async def handle(
    proc: CommandProcessor,
    payload: bytes,
    response_topic: str | None = "fleet/veh-1/replies/console",
    correlation: bytes | None = b"corr",
) -> tuple[Outcome, CommandReply]:
    outcome = await proc.handle(IncomingCommand(payload, response_topic, correlation))
    return outcome, CommandReply.model_validate_json(outcome.reply.payload)


async def test_ping_replies_on_the_response_topic_with_the_correlation_data(
    ledger: OutboxLedger, calls: Calls
) -> None:
    outcome, reply = await handle(processor(ledger, calls), command())
    assert reply.ok
    assert reply.result == {"pong": True}
    assert (reply.id, reply.name, reply.vehicle_id) == ("c-1", "ping", "veh-1")
    assert outcome.reply.topic == "fleet/veh-1/replies/console"
    assert outcome.reply.correlation == b"corr"
    assert outcome.reply.message_class is MessageClass.REPLY
    assert ledger.outbox.pending == 1  # the reply is in the outbox


async def test_a_redelivered_command_gets_the_first_reply_and_does_not_run_twice(
    ledger: OutboxLedger, calls: Calls
) -> None:
    proc = processor(ledger, calls)
    payload = command("capture_frames", "c-dup", args={"count": 2})
    first, _ = await handle(proc, payload)
    again, _ = await handle(proc, payload, correlation=b"other")
    assert calls.calls == [("capture_frames", 2)]
    assert again.duplicate
    assert not first.duplicate
    assert again.reply.payload == first.reply.payload
    assert again.reply.correlation == b"other"
    # Even after the command expired, and with another processor (a restarted daemon).
    restarted = OutboxLedger(ledger.outbox.path)
    later = processor(restarted, calls, clock=time.time() + 3600)
    third, _ = await handle(later, payload)
    restarted.outbox.close()
    assert third.reply.payload == first.reply.payload
    assert calls.calls == [("capture_frames", 2)]


async def test_a_command_interrupted_by_a_restart_is_not_run_again(
    ledger: OutboxLedger, calls: Calls
) -> None:
    ledger.outbox.command_started("c-int", "capture_frames")  # the daemon died while it ran
    outcome, reply = await handle(processor(ledger, calls), command("capture_frames", "c-int"))
    assert calls.calls == []
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.code == "interrupted"
    assert outcome.duplicate


# Payloads are built when each test runs: built at collection they could expire before a test of
# a long run executes.
BAD_COMMANDS: list[tuple[Callable[[], bytes], str, str]] = [
    (lambda: b"x" * 2000, "too_large", "2000 bytes, limit 1024"),
    (lambda: b"{not json", "malformed", "not JSON"),
    (lambda: b"[1, 2]", "malformed", "not a JSON object"),
    (lambda: command(expires_at=None), "malformed", "expires_at"),
    (lambda: command(cid="has space"), "malformed", "id: String should match pattern"),
    (lambda: command(colour="red"), "malformed", "colour: unknown key"),
    (lambda: command("self_destruct"), "unknown_command", "unknown command 'self_destruct'"),
    (lambda: command(expires_at=time.time() - 5), "expired", "expired"),
    (lambda: command("capture_frames", args={"count": 99}), "invalid_args", "count"),
    (
        lambda: command("capture_frames", args={"count": 1, "fps": 3}),
        "invalid_args",
        "fps: unknown",
    ),
    (lambda: command("set_config", args={"changes": {}}), "invalid_args", "changes"),
    (lambda: command("set_enhancement"), "invalid_args", "mode: Field required"),
    (lambda: command("set_enhancement", args={"mode": "bypass"}), "unavailable", "no handler"),
    (lambda: command("clean_lens"), "unavailable", "no lens cleaner"),
    (lambda: command("get_status"), "failed", "RuntimeError: driver fell over"),
]


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    BAD_COMMANDS,
    ids=[f"{i}-{code}" for i, (_, code, _) in enumerate(BAD_COMMANDS)],
)
async def test_bad_commands_get_an_error_reply_that_names_the_problem(
    ledger: OutboxLedger, calls: Calls, payload: Callable[[], bytes], code: str, words: str
) -> None:
    outcome, reply = await handle(processor(ledger, calls), payload())
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.code == code
    assert words in reply.error.message
    assert outcome.error == code
    assert calls.calls == []
    assert outcome.reply.correlation == b"corr"


async def test_the_id_is_echoed_when_only_the_rest_is_malformed(
    ledger: OutboxLedger, calls: Calls
) -> None:
    _, reply = await handle(processor(ledger, calls), command(args="nope"))
    assert reply.id == "c-1"
    assert reply.error is not None
    assert reply.error.code == "malformed"


async def test_a_response_topic_outside_replies_is_refused_on_the_default_topic(
    ledger: OutboxLedger, calls: Calls
) -> None:
    for topic in (
        "fleet/veh-1/front/telemetry",
        "fleet/veh-2/replies",
        "fleet/veh-1/replies/#",
        "fleet/veh-1/rear/replies/x",  # another camera's
    ):
        outcome, reply = await handle(processor(ledger, calls), command(cid="c-t"), topic)
        assert outcome.reply.topic == "fleet/veh-1/front/replies"
        assert reply.error is not None
        assert reply.error.code == "bad_response_topic"
    assert calls.calls == []


async def test_without_response_topic_the_reply_goes_to_replies(
    ledger: OutboxLedger, calls: Calls
) -> None:
    outcome, reply = await handle(processor(ledger, calls), command(), None)
    assert reply.ok
    assert outcome.reply.topic == "fleet/veh-1/front/replies"
    assert reply.camera_id == "front"


async def test_commands_run_one_at_a_time_in_arrival_order(
    ledger: OutboxLedger, calls: Calls
) -> None:
    proc = processor(ledger, calls)
    await asyncio.gather(*(handle(proc, command(cid=f"c-{i}")) for i in range(5)))
    assert sorted(c[1] for c in calls.calls) == [f"c-{i}" for i in range(5)]


def test_set_config_validates_with_the_config_bounds_and_names_the_key() -> None:
    base = MqttUplinkConfig(broker="mqtt://localhost")
    changed = apply_settings(base, {"telemetry_interval_s": 2.5, "upload.content": "enhanced"})
    assert changed.telemetry_interval_s == 2.5
    assert current_settings(changed)["upload.content"] == "enhanced"
    for changes, words in (
        ({"telemetry_interval_s": 0}, "telemetry_interval_s: Input should be greater"),
        ({"upload.jpeg_quality": 101}, "upload.jpeg_quality"),
        ({"broker": "mqtt://evil"}, "broker: not settable"),
        ({"telemetry_interval_s": True}, "expected a number"),
        ({"upload.good_min_brightness": 250}, "good_max_brightness is below"),
    ):
        with pytest.raises(SettingsError, match=words):
            apply_settings(base, changes)


async def test_deeply_nested_json_gets_one_malformed_reply_not_a_recursion_error(
    ledger: OutboxLedger, calls: Calls
) -> None:
    """5,000 nested brackets (10 kB, under the size limit) used to raise RecursionError past the
    handler; 100 levels parse but are still refused; nesting inside `args` counts too."""
    proc = processor(ledger, calls)
    proc.max_bytes = 16_384
    deep = b"[" * 5000 + b"]" * 5000
    assert len(deep) == 10_000
    nested_args: dict[str, Any] = {}
    node = nested_args
    for _ in range(100):
        node["a"] = {}
        node = node["a"]
    for payload in (
        deep,
        b'{"id": "c-1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"a": ' * 100 + b"1" + b"}" * 100,
        command(args=nested_args),
    ):
        outcome, reply = await handle(proc, payload)
        assert reply.error is not None
        assert reply.error.code == "malformed"
        assert "nested deeper than 32 levels" in reply.error.message
        assert outcome.reply.correlation == b"corr"
    assert calls.calls == []
    _, ok = await handle(proc, command(cid="c-after"))
    assert ok.ok  # and the processor goes on


async def test_a_command_without_correlation_data_is_refused_with_a_reply_naming_it(
    ledger: OutboxLedger, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    outcome, reply = await handle(processor(ledger, calls), command(cid="c-nc"), correlation=None)
    assert calls.calls == []
    assert (reply.id, reply.name, reply.ok) == ("c-nc", "ping", False)
    assert reply.error is not None
    assert reply.error.code == "malformed"
    assert "no Correlation Data" in reply.error.message
    assert outcome.reply.topic == "fleet/veh-1/replies/console"
    assert outcome.reply.correlation is None
    assert "has no Correlation Data" in caplog.text
    # Refused, not recorded: sent again with Correlation Data it runs.
    _, again = await handle(processor(ledger, calls), command(cid="c-nc"))
    assert again.ok


class Slow:
    """A background command (`clean_lens`) that runs until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def clean(self, _args: Any, cid: str) -> dict[str, Any]:
        self.started.append(cid)
        await self.release.wait()
        return {"cleaned": cid}


def background_processor(ledger: OutboxLedger, calls: Calls, slow: Slow) -> CommandProcessor:
    return CommandProcessor(
        TOPICS,
        "veh-1",
        ledger,
        {"ping": calls.ping, "clean_lens": slow.clean},
        max_bytes=1024,
    )


async def test_a_background_command_runs_beside_short_ones_and_its_twin_is_busy(
    ledger: OutboxLedger, calls: Calls
) -> None:
    slow = Slow()
    proc = background_processor(ledger, calls, slow)
    admitted = await proc.admit(IncomingCommand(command("clean_lens", "c-long"), None, b"long"))
    assert isinstance(admitted, Admitted)
    assert admitted.background
    running = asyncio.create_task(proc.execute(admitted))
    await asyncio.sleep(0)
    # While it runs: short commands are answered, another clean_lens is busy, and a redelivery
    # of the same id waits for the first reply.
    _, pong = await handle(proc, command(cid="c-ping"))
    assert pong.ok
    busy, busy_reply = await handle(proc, command("clean_lens", "c-long-2"))
    assert busy.error == "busy"
    assert busy_reply.error is not None
    assert "clean_lens c-long is running" in busy_reply.error.message
    again = await proc.admit(IncomingCommand(command("clean_lens", "c-long"), None, b"again"))
    assert isinstance(again, Admitted)
    twin = asyncio.create_task(proc.execute(again))
    await asyncio.sleep(0.05)
    assert not running.done()
    assert not twin.done()
    slow.release.set()
    first, second = await running, await twin
    assert slow.started == ["c-long"]  # run once
    assert first.ok
    assert second.duplicate
    assert second.reply.payload == first.reply.payload
    assert second.reply.correlation == b"again"
    # Done: the next clean_lens is admitted again.
    slow.release.clear()
    nxt = await proc.admit(IncomingCommand(command("clean_lens", "c-long-3"), None, b"n"))
    assert isinstance(nxt, Admitted)


async def test_a_cancelled_background_command_stores_interrupted_as_its_first_reply(
    ledger: OutboxLedger, calls: Calls
) -> None:
    slow = Slow()
    proc = background_processor(ledger, calls, slow)
    admitted = await proc.admit(IncomingCommand(command("clean_lens", "c-stop"), None, b"s"))
    assert isinstance(admitted, Admitted)
    task = asyncio.create_task(proc.execute(admitted))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = CommandReply.model_validate_json(ledger.queued[-1].payload)
    assert stored.error is not None
    assert (stored.id, stored.error.code) == ("c-stop", "interrupted")
    assert ledger.queued[-1].correlation == b"s"
    seen, first = ledger.outbox.command_reply("c-stop")
    assert seen
    assert first == ledger.queued[-1].payload


def test_a_refusal_without_the_ledger_names_the_id_when_it_can(
    ledger: OutboxLedger, calls: Calls
) -> None:
    proc = processor(ledger, calls)
    incoming = IncomingCommand(command(cid="c-b"), "fleet/veh-1/replies/x", b"b")
    outcome = proc.refusal(incoming, "busy", "64 commands are waiting")
    reply = CommandReply.model_validate_json(outcome.reply.payload)
    assert (reply.id, reply.name, outcome.error) == ("c-b", "ping", "busy")
    assert (outcome.reply.topic, outcome.reply.correlation) == ("fleet/veh-1/replies/x", b"b")
    deep = proc.refusal(IncomingCommand(b"[" * 5000, None, b"d"), "busy", "full")
    assert deep.id is None


def test_the_daemon_has_a_handler_for_every_command_and_none_for_a_command_that_does_not_exist(
    tmp_path: Path, ledger: OutboxLedger, calls: Calls
) -> None:
    from vehicle_agent.config import parse_config  # noqa: PLC0415
    from vehicle_agent.events import EventBus  # noqa: PLC0415
    from vehicle_agent.uplink.command_table import COMMANDS  # noqa: PLC0415
    from vehicle_agent.uplink.mqtt import MqttUplink  # noqa: PLC0415

    config = parse_config({"uplink": {"type": "mqtt", "broker": "mqtt://127.0.0.1:1883"}})
    uplink = MqttUplink.from_config(
        config, EventBus(EVENT_TYPES), outbox_path=tmp_path / "o.sqlite3"
    )
    assert set(uplink.commands.handlers()) == set(COMMANDS)
    with pytest.raises(ValueError, match="do not exist: pnig"):
        CommandProcessor(TOPICS, "veh-1", ledger, {"pnig": calls.ping}, max_bytes=1024)
