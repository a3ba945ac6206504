"""The durable outbox: nothing committed is lost (not even to `kill -9`), rows leave only when
acknowledged, priorities decide the order and what a full disk budget drops, stale rows expire,
and every drop is counted."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from vehicle_agent.uplink.outbox import DISK_MARGIN_BYTES, OVERHEAD_BYTES, Outbox, OutMessage
from vehicle_agent.uplink.topics import MessageClass

TTL = {
    MessageClass.REPLY: 100.0,
    MessageClass.EVENT: 100.0,
    MessageClass.TELEMETRY: 50.0,
    MessageClass.FRAME: 10.0,
}
R, E, T, F = MessageClass.REPLY, MessageClass.EVENT, MessageClass.TELEMETRY, MessageClass.FRAME


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def msg(klass: MessageClass, n: int, size: int = 100, group: str | None = None) -> OutMessage:
    return OutMessage(klass, f"t/{klass.value}", bytes([n % 256]) * size, group=group)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "uplink.sqlite3"


@pytest.fixture
def outbox(path: Path, clock: Clock) -> Iterator[Outbox]:
    box = Outbox(path, 10**6, TTL, clock=clock)
    yield box
    box.close()


def test_rows_survive_a_reopen_and_leave_only_when_acknowledged(path: Path, clock: Clock) -> None:
    box = Outbox(path, 10**6, TTL, clock=clock)
    ids = box.write([msg(T, i) for i in range(5)], counters={"telemetry_seq": 5}).ids
    box.close()
    box = Outbox(path, 10**6, TTL, clock=clock)
    assert box.pending == 5
    assert box.counter("telemetry_seq") == 5
    box.write(acked=ids[:3])
    assert [m.id for m in box.next_batch(10)] == ids[3:]
    assert box.pending_bytes == 2 * (100 + len("t/telemetry") + OVERHEAD_BYTES)
    box.close()


def test_space_of_sent_messages_goes_back_to_the_file_system(path: Path, clock: Clock) -> None:
    """A day offline fills the outbox; once it is sent, the file shrinks again."""
    box = Outbox(path, 64 * 2**20, TTL, clock=clock)
    ids = box.write([msg(F, i, size=64 * 1024) for i in range(200)]).ids  # 12.5 MiB
    full = path.stat().st_size + path.with_name(path.name + "-wal").stat().st_size
    box.write(acked=ids)
    assert box.reclaim() > 10 * 2**20
    emptied = path.stat().st_size + path.with_name(path.name + "-wal").stat().st_size
    assert emptied < full / 10
    assert box.reclaim() == 0  # nothing left to give back
    box.close()


def test_an_old_file_switches_to_reclaiming_at_start(path: Path, clock: Clock) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.commit()
    db.close()
    box = Outbox(path, 10**6, TTL, clock=clock)
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    db.close()


def test_sequence_counters_only_grow(outbox: Outbox) -> None:
    outbox.write(counters={"telemetry_seq": 7})
    outbox.write(counters={"telemetry_seq": 3})
    assert outbox.counter("telemetry_seq") == 7


def test_batches_go_by_priority_then_age_and_skip_rows_in_flight(outbox: Outbox) -> None:
    ids = outbox.write([msg(F, 0), msg(T, 1), msg(E, 2), msg(R, 3), msg(T, 4)]).ids
    order = [m.message.message_class for m in outbox.next_batch(10)]
    assert order == [R, E, T, T, F]
    assert [m.id for m in outbox.next_batch(10) if m.message.message_class is T] == [ids[1], ids[4]]
    assert [m.id for m in outbox.next_batch(2, exclude={ids[3]})] == [ids[2], ids[1]]


def test_a_full_budget_drops_the_lowest_priority_oldest_first_and_counts_it(
    path: Path, clock: Clock
) -> None:
    row = 100 + len("t/telemetry") + OVERHEAD_BYTES
    box = Outbox(path, 4 * row, TTL, clock=clock)
    first = box.write([msg(T, i) for i in range(4)]).ids
    result = box.write([msg(T, 9)])
    assert result.dropped == [(T, "budget", 1)]
    assert [m.id for m in box.next_batch(10)] == [*first[1:], result.ids[0]]
    # An event may push telemetry out; never the other way round.
    box.write([msg(E, 10)])
    assert sum(m.message.message_class is E for m in box.next_batch(10)) == 1
    box.write([msg(E, i) for i in range(11, 20)])
    assert {m.message.message_class for m in box.next_batch(10)} == {E}
    refused = box.write([msg(T, 30)])
    assert refused.ids == []
    assert refused.dropped == [(T, "budget", 1)]
    stats = box.stats()
    assert stats.dropped["telemetry"]["budget"] == 1 + 4 + 1
    assert box.pending_bytes <= 4 * row
    box.close()


def test_a_frame_upload_is_dropped_as_a_whole(path: Path, clock: Clock) -> None:
    row = 300 + len("t/frame") + OVERHEAD_BYTES
    box = Outbox(path, 9 * row, TTL, clock=clock)  # two uploads of 4 rows fit, not three
    box.write([msg(F, i, 300, group="up-1") for i in range(4)])
    box.write([msg(F, i, 300, group="up-2") for i in range(4)])
    result = box.write([msg(F, i, 300, group="up-3") for i in range(4)])
    assert result.dropped == [(F, "budget", 4)]
    groups = {m.message.group for m in box.next_batch(100)}
    assert groups == {"up-2", "up-3"}
    # An upload that cannot fit as a whole is not stored in part.
    big = box.write([msg(F, i, 300, group="up-4") for i in range(10)])
    assert big.dropped == [(F, "too_large", 10)]
    assert box.pending == 8
    box.close()


def test_a_message_larger_than_the_budget_is_dropped_and_counted(path: Path, clock: Clock) -> None:
    box = Outbox(path, 1000, TTL, clock=clock)
    result = box.write([msg(F, 0, 5000)])
    assert result.dropped == [(F, "too_large", 1)]
    assert box.pending == 0
    box.close()


def test_file_and_log_stay_within_a_1_mib_budget_through_a_long_outage_with_uploads(
    path: Path, clock: Clock
) -> None:
    """Hours offline: telemetry, events and frame uploads (JPEG-sized chunks) keep coming and
    nothing is acknowledged; after every write the file and its write-ahead log together stay
    within the budget plus the stated margin, replies are kept over frames, and every drop
    is counted."""
    budget = 2**20
    box = Outbox(path, budget, TTL, clock=clock)
    worst = 0
    for n in range(1500):  # about 4 h of 10 s telemetry, with an upload every 4th write
        batch = [msg(T, n, 900), msg(E, n, 300)]
        if n % 4 == 0:
            batch += [msg(F, n, 48_000, group=f"up-{n}") for _ in range(3)]
        if n % 50 == 0:
            batch.append(msg(R, n, 200))
        box.write(batch)
        clock.now += 0.001  # nothing expires: the budget alone bounds the outbox
        worst = max(worst, box.disk_bytes())
    assert worst <= budget + DISK_MARGIN_BYTES, f"{worst} bytes on disk"
    assert box.pending_bytes <= budget
    pending = [m.message.message_class for m in box.next_batch(10_000)]
    assert pending.count(R) == 30  # the replies all stayed
    stats = box.stats()
    assert stats.dropped["frame"]["budget"] > 0
    box.close()
    # Reopened: what was kept is all there.
    box = Outbox(path, budget, TTL, clock=clock)
    assert [m.message.message_class for m in box.next_batch(10_000)] == pending
    box.close()


def test_stale_rows_expire_instead_of_being_sent(outbox: Outbox, clock: Clock) -> None:
    outbox.write([msg(F, 0), msg(T, 1), msg(E, 2)])
    clock.now += 20  # past the frame TTL only
    assert {m.message.message_class for m in outbox.next_batch(10)} == {T, E}
    assert outbox.purge_expired() == [(F, "expired", 1)]
    clock.now += 40
    assert outbox.purge_expired() == [(T, "expired", 1)]
    assert outbox.pending == 1
    assert outbox.stats().dropped == {"frame": {"expired": 1}, "telemetry": {"expired": 1}}


def test_refused_rows_are_deleted_and_counted_retried_ones_kept(outbox: Outbox) -> None:
    a, b = outbox.write([msg(T, 0), msg(T, 1)]).ids
    result = outbox.write(refused=[a], retry=[b])
    assert result.dropped == [(T, "refused", 1)]
    (left,) = outbox.next_batch(10)
    assert (left.id, left.attempts) == (b, 1)


def test_settings_and_command_ledger_persist(path: Path, clock: Clock) -> None:
    box = Outbox(path, 10**6, TTL, clock=clock)
    box.save_settings({"telemetry_interval_s": 2.0})
    assert box.command_started("c-1", "ping")
    assert not box.command_started("c-1", "ping")
    box.command_finished("c-1", OutMessage(R, "t/r", b'{"ok": true}'))
    box.close()
    box = Outbox(path, 10**6, TTL, clock=clock)
    assert box.settings() == {"telemetry_interval_s": 2.0}
    assert box.command_reply("c-1") == (True, b'{"ok": true}')
    assert box.command_reply("c-2") == (False, None)
    clock.now += 100
    assert box.forget_commands(50) == 1
    box.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vehicle_agent.uplink.outbox import Outbox, OutMessage
    from vehicle_agent.uplink.topics import MessageClass
    box = Outbox(Path(sys.argv[1]), 10**9, dict.fromkeys(MessageClass, 3600.0))
    seq = 0
    while True:
        seq += 1
        box.write([OutMessage(MessageClass.TELEMETRY, "t", b"x" * 200)], counters={"seq": seq})
        print(seq, flush=True)  # printed only after the commit
    """
)


def test_kill_9_loses_no_committed_row(path: Path) -> None:
    """A writer process killed with SIGKILL mid-stream: every row it reported is on disk."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed = 0
    for line in proc.stdout:
        committed = int(line)
        if committed >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    box = Outbox(path, 10**9, TTL)
    assert box.pending >= committed
    assert box.counter("seq") >= committed
    assert box.counter("seq") == box.pending
    box.close()
