"""Uplink stage: the durable outbox, a SQLite (WAL) queue of every message before it is sent.

A message is committed here before the MQTT client sees it and deleted only when the broker
acknowledges it, so neither a broker outage nor a `kill -9` of the daemon loses it. The same
database keeps the camera's sequence numbers, the camera it belongs to (one outbox per camera),
the ledger of commands already run (at most once) and the settings that `set_config` persisted.

Blocking and single-threaded on purpose: `MqttUplink` calls it from one dedicated thread.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vehicle_agent.uplink.topics import PRIORITY, MessageClass

OVERHEAD_BYTES = 96
"""Per-row bytes counted on top of topic and payload (row header, index entry)."""

DropReason = Literal["budget", "expired", "refused", "too_large"]

_COLUMNS = "id, class, topic, payload, retain, content_type, correlation, grp, expires, attempts"

WAL_LIMIT_BYTES = 4 * 1024 * 1024
"""The write-ahead log is checkpointed and truncated at this size, or at a sixteenth of the
budget if that is smaller (at least `WAL_MIN_PAGES` pages)."""
WAL_MIN_PAGES = 8
DISK_MARGIN_BYTES = 64 * 1024
"""The file and its write-ahead log stay within the budget plus this after every write (the
schema's own pages, the command ledger, settings and counters). Within one transaction the log
may grow by what that transaction writes; it is checkpointed right after."""
_DISK_SLACK = 1 / 16
"""Share of the budget freed below the limit when the disk is over it, so that the next writes
do not have to compact again at once."""
_INCREMENTAL = 2
"""`PRAGMA auto_vacuum` value of INCREMENTAL."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    class TEXT NOT NULL,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    content_type TEXT,
    correlation BLOB,
    grp TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_send ON outbox (priority DESC, id);
CREATE INDEX IF NOT EXISTS outbox_expires ON outbox (expires);
CREATE INDEX IF NOT EXISTS outbox_grp ON outbox (grp) WHERE grp IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    received REAL NOT NULL,
    reply BLOB
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owner (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    vehicle TEXT NOT NULL,
    camera TEXT NOT NULL
);
"""


class OutboxError(Exception):
    """The outbox database cannot be opened or written; `path` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"outbox {path}: {reason}")


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to send: where, what, and which class (priority, time to live)."""

    message_class: MessageClass
    topic: str
    payload: bytes
    retain: bool = False
    content_type: str | None = "application/json"
    correlation: bytes | None = None
    group: str | None = None
    """Rows of one group (the meta and chunks of a frame upload) are dropped together."""

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    message: OutMessage
    expires: float
    attempts: int


@dataclass
class OutboxStats:
    pending: int
    pending_bytes: int
    pending_by_class: dict[str, int]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """What `Outbox.claim` found: `legacy` when the outbox predates per-camera topics (it had
    state but no owner), and how many stored messages it moved to the camera's topics."""

    legacy: bool
    migrated: int


@dataclass
class WriteResult:
    """What one `write` did: the ids it stored, what it dropped to stay in budget."""

    ids: list[int]
    dropped: list[tuple[MessageClass, DropReason, int]]
    """(class, reason, count) dropped by this write."""


class Outbox:
    """The queue on disk. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        path: Path,
        budget_bytes: int,
        ttl_s: Mapping[MessageClass, float],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.budget_bytes = budget_bytes
        self.ttl_s = dict(ttl_s)
        self.clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(path, str(exc)) from exc
        try:
            # WAL: a commit is one append, readers do not block the writer, and a killed
            # process leaves a consistent database. NORMAL syncs at checkpoints only: safe
            # against a crash of the daemon; FULL also against power loss (an fsync a commit).
            # Space freed by sent messages goes back to the file system (`reclaim`): a vehicle
            # offline for a day must not keep a file the size of its budget for ever. The mode
            # takes effect in a new file; an old one switches with a VACUUM at start (cheap,
            # done only when it still uses the default mode).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(path, f"cannot use WAL journal mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            wal_pages = max(WAL_MIN_PAGES, min(WAL_LIMIT_BYTES, budget_bytes // 16) // page_size)
            self._db.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
            self._db.execute(f"PRAGMA journal_size_limit={wal_pages * page_size}")
            self._db.executescript(_SCHEMA)
            if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                self._db.execute("VACUUM")
            row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(path, str(exc)) from exc
        self._count: int = row[0]
        self._bytes: int = row[1]
        self._page_size = page_size
        self._payload_limit = budget_bytes
        """What the rows may hold: the budget, lowered while the pages they take (B-tree,
        indexes, free pages) would put the file over it; back to the budget once it drains."""

    def close(self) -> None:
        self._db.close()

    def claim(self, vehicle: str, camera: str, migrate: Callable[[str], str | None]) -> Claim:
        """Record that this outbox is camera `camera` of `vehicle`'s, or refuse (`OutboxError`)
        when it is another camera's: two daemons on one outbox would share its sequence numbers
        and command ledger. An outbox without an owner is of the single-camera layout (or new):
        `migrate` maps each stored message's topic to its new one (None: unchanged)."""
        with self._transaction():
            row = self._db.execute("SELECT vehicle, camera FROM owner").fetchone()
            if row is not None:
                if tuple(row) != (vehicle, camera):
                    raise OutboxError(
                        self.path,
                        f"belongs to camera {row[1]!r} of vehicle {row[0]!r}, not camera "
                        f"{camera!r} of vehicle {vehicle!r}: give each camera's daemon its own "
                        "agent.state_dir (or uplink.outbox.path)",
                    )
                return Claim(legacy=False, migrated=0)
            had_state = any(
                self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
                for table in ("outbox", "counters", "commands")
            )
            moved = 0
            for row_id, topic, size in self._db.execute(
                "SELECT id, topic, size FROM outbox"
            ).fetchall():
                new = migrate(topic)
                if new is None or new == topic:
                    continue
                grown = len(new) - len(topic)
                self._db.execute(
                    "UPDATE outbox SET topic = ?, size = ? WHERE id = ?",
                    (new, size + grown, row_id),
                )
                self._bytes += grown
                moved += 1
            self._db.execute(
                "INSERT INTO owner (one, vehicle, camera) VALUES (1, ?, ?)", (vehicle, camera)
            )
        return Claim(legacy=had_state, migrated=moved)

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        messages: Sequence[OutMessage] = (),
        *,
        acked: Iterable[int] = (),
        refused: Iterable[int] = (),
        retry: Iterable[int] = (),
        counters: Mapping[str, int] | None = None,
    ) -> WriteResult:
        """One transaction: store `messages`, delete `acked` (broker confirmed) and `refused`
        (broker said no for good) rows, count a failed attempt on `retry` rows, and raise
        `counters` (sequence numbers) to at least the given values. Then enforce the budget."""
        dropped: list[tuple[MessageClass, DropReason, int]] = []
        ids: list[int] = []
        now = self.clock()
        with self._transaction():
            for row_id in acked:
                self._delete_row(row_id)
            for row_id in refused:
                klass = self._delete_row(row_id)
                if klass is not None:
                    dropped.append((klass, "refused", 1))
            for row_id in retry:
                self._db.execute(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,)
                )
            for name, value in (counters or {}).items():
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                    (name, value),
                )
            for unit in _units(messages):
                ids.extend(self._insert(unit, now, dropped))
            for klass, reason, count in dropped:
                self._add_counter(f"dropped.{klass.value}.{reason}", count)
        self._bound_disk(dropped)
        return WriteResult(ids, dropped)

    def _insert(
        self,
        unit: list[OutMessage],
        now: float,
        dropped: list[tuple[MessageClass, DropReason, int]],
    ) -> list[int]:
        """Store a message, or all messages of a group (a frame upload), or none of them."""
        klass = unit[0].message_class
        size = sum(m.size for m in unit)
        if size > self.budget_bytes:
            dropped.append((klass, "too_large", len(unit)))
            return []
        if not self._make_room(size, PRIORITY[klass], dropped):
            dropped.append((klass, "budget", len(unit)))
            return []
        return [self._insert_row(m, now) for m in unit]

    def _insert_row(self, message: OutMessage, now: float) -> int:
        klass = message.message_class
        size = message.size
        cursor = self._db.execute(
            "INSERT INTO outbox (class, priority, topic, payload, retain, content_type, "
            "correlation, grp, created, expires, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                klass.value,
                PRIORITY[klass],
                message.topic,
                message.payload,
                int(message.retain),
                message.content_type,
                message.correlation,
                message.group,
                now,
                now + self.ttl_s[klass],
                size,
            ),
        )
        self._count += 1
        self._bytes += size
        if cursor.lastrowid is None:  # pragma: no cover - SQLite always sets it after INSERT
            raise OutboxError(self.path, "INSERT gave no row id")
        return cursor.lastrowid

    def _make_room(
        self, size: int, priority: int, dropped: list[tuple[MessageClass, DropReason, int]]
    ) -> bool:
        """Drop the lowest-priority, oldest rows (never above `priority`) until `size` fits."""
        while self._bytes + size > self._payload_limit:
            (lowest,) = self._db.execute("SELECT min(priority) FROM outbox").fetchone()
            if lowest is None or lowest > priority:
                return False
            row_id, klass, group = self._db.execute(
                "SELECT id, class, grp FROM outbox WHERE priority = ? ORDER BY id LIMIT 1",
                (lowest,),
            ).fetchone()
            if group is None:
                self._delete_row(row_id)
                count = 1
            else:
                count = self._delete_group(group)
            dropped.append((MessageClass(klass), "budget", count))
        return True

    def _delete_row(self, row_id: int) -> MessageClass | None:
        row = self._db.execute(
            "DELETE FROM outbox WHERE id = ? RETURNING class, size", (row_id,)
        ).fetchone()
        if row is None:
            return None
        self._count -= 1
        self._bytes -= row[1]
        return MessageClass(row[0])

    def _delete_group(self, group: str) -> int:
        rows = self._db.execute(
            "DELETE FROM outbox WHERE grp = ? RETURNING size", (group,)
        ).fetchall()
        self._count -= len(rows)
        self._bytes -= sum(r[0] for r in rows)
        return len(rows)

    # -- the disk -----------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """The file and its write-ahead log, bytes: what the budget bounds."""
        return disk_bytes(self.path)

    def _compact(self) -> None:
        """Free pages back to the file system, the log checkpointed and emptied."""
        self._db.executescript("PRAGMA incremental_vacuum;")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _bound_disk(self, dropped: list[tuple[MessageClass, DropReason, int]]) -> None:
        """After a write: keep file + log within budget + `DISK_MARGIN_BYTES`, compacting
        first and then dropping the lowest-priority, oldest rows (counted as 'budget')."""
        limit = self.budget_bytes + DISK_MARGIN_BYTES
        slack = int(self.budget_bytes * _DISK_SLACK)
        disk = self.disk_bytes()
        if disk <= limit:
            headroom = limit - disk - slack
            if self._payload_limit < self.budget_bytes and headroom > 0:
                # Room again (sent, expired, or pages packed better): let the rows grow back.
                self._payload_limit = min(self.budget_bytes, self._payload_limit + headroom)
            return
        self._compact()
        for _ in range(16):
            excess = self.disk_bytes() - limit
            if excess <= 0:
                return
            target = max(0, self._bytes - excess - slack)
            self._payload_limit = min(self._payload_limit, target)
            shed: list[tuple[MessageClass, DropReason, int]] = []
            with self._transaction():
                self._make_room(0, max(PRIORITY.values()), shed)
                for klass, reason, count in shed:
                    self._add_counter(f"dropped.{klass.value}.{reason}", count)
            if not shed:
                return  # no row left to drop: what is left is the schema and the ledgers
            dropped.extend(shed)
            self._compact()

    def reclaim(self, min_free_share: float = 0.25) -> int:
        """Give free pages back to the file system when they are at least `min_free_share` of
        the file; returns the bytes given back."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        if not pages or free < min_free_share * pages:
            return 0
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        # executescript runs the pragma to the end; execute() would free one page a call.
        self._db.executescript("PRAGMA incremental_vacuum;")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        left = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((free - left) * page_size)

    def purge_expired(self) -> list[tuple[MessageClass, DropReason, int]]:
        """Drop messages past their time to live; returns (class, 'expired', count)."""
        with self._transaction():
            rows = self._db.execute(
                "DELETE FROM outbox WHERE expires <= ? RETURNING class, size", (self.clock(),)
            ).fetchall()
            by_class: dict[MessageClass, int] = {}
            for klass, size in rows:
                self._count -= 1
                self._bytes -= size
                by_class[MessageClass(klass)] = by_class.get(MessageClass(klass), 0) + 1
            for klass, count in by_class.items():
                self._add_counter(f"dropped.{klass.value}.expired", count)
        return [(klass, "expired", count) for klass, count in by_class.items()]

    # -- reading ------------------------------------------------------------------------------

    def next_batch(self, limit: int, exclude: Iterable[int] = ()) -> list[StoredMessage]:
        """Up to `limit` unexpired messages to send, highest priority first, oldest first,
        leaving out `exclude` (rows already in flight or waiting to be deleted)."""
        skip = sorted(set(exclude))
        marks = ",".join("?" * len(skip))
        not_in = f"AND id NOT IN ({marks}) " if skip else ""
        where = f"expires > ? {not_in}ORDER BY priority DESC, id LIMIT ?"
        query = f"SELECT {_COLUMNS} FROM outbox WHERE {where}"  # noqa: S608 - '?' placeholders only
        rows = self._db.execute(query, (self.clock(), *skip, limit)).fetchall()
        return [
            StoredMessage(
                id=r[0],
                message=OutMessage(
                    MessageClass(r[1]),
                    r[2],
                    bytes(r[3]),
                    retain=bool(r[4]),
                    content_type=r[5],
                    correlation=None if r[6] is None else bytes(r[6]),
                    group=r[7],
                ),
                expires=r[8],
                attempts=r[9],
            )
            for r in rows
        ]

    def stats(self) -> OutboxStats:
        by_class = dict(
            self._db.execute("SELECT class, count(*) FROM outbox GROUP BY class").fetchall()
        )
        dropped: dict[str, dict[str, int]] = {}
        for name, value in self._db.execute(
            "SELECT name, value FROM counters WHERE name LIKE 'dropped.%'"
        ).fetchall():
            _, klass, reason = name.split(".", 2)
            dropped.setdefault(klass, {})[reason] = value
        return OutboxStats(self._count, self._bytes, by_class, dropped)

    @property
    def pending(self) -> int:
        return self._count

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- commands and settings ---------------------------------------------------------------

    def command_reply(self, command_id: str) -> tuple[bool, bytes | None]:
        """(seen, first reply) for a command id; (True, None) if it was started but never
        finished (the daemon stopped while it ran)."""
        row = self._db.execute("SELECT reply FROM commands WHERE id = ?", (command_id,)).fetchone()
        if row is None:
            return False, None
        return True, None if row[0] is None else bytes(row[0])

    def command_started(self, command_id: str, name: str) -> bool:
        """Record that a command starts; False if its id was already recorded."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO commands (id, name, received) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (command_id, name, self.clock()),
            )
        return cursor.rowcount == 1

    def command_finished(self, command_id: str | None, reply: OutMessage) -> WriteResult:
        """Store the reply as the command's first result and queue it, in one transaction."""
        dropped: list[tuple[MessageClass, DropReason, int]] = []
        with self._transaction():
            if command_id is not None:
                self._db.execute(
                    "UPDATE commands SET reply = ? WHERE id = ?", (reply.payload, command_id)
                )
            ids = self._insert([reply], self.clock(), dropped)
            for klass, reason, count in dropped:
                self._add_counter(f"dropped.{klass.value}.{reason}", count)
        self._bound_disk(dropped)
        return WriteResult(ids, dropped)

    def forget_commands(self, older_than_s: float) -> int:
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM commands WHERE received < ?", (self.clock() - older_than_s,)
            )
        return cursor.rowcount

    def settings(self) -> dict[str, object]:
        return {
            key: json.loads(value)
            for key, value in self._db.execute("SELECT key, value FROM settings").fetchall()
        }

    def save_settings(self, changes: Mapping[str, object]) -> None:
        with self._transaction():
            for key, value in changes.items():
                self._db.execute(
                    "INSERT INTO settings (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)),
                )

    def forget_settings(self, keys: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM settings WHERE key = ?", [(k,) for k in keys])

    # -- internals ----------------------------------------------------------------------------

    def _add_counter(self, name: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


def disk_bytes(path: Path) -> int:
    """What the outbox at `path` takes on disk: the file and its write-ahead log, bytes (also
    read from outside the daemon, by `tools.soak`)."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total


def _units(messages: Sequence[OutMessage]) -> list[list[OutMessage]]:
    """Messages to store together: each ungrouped one alone, each group's as one."""
    units: list[list[OutMessage]] = []
    groups: dict[str, list[OutMessage]] = {}
    for message in messages:
        if message.group is None:
            units.append([message])
        elif message.group in groups:
            groups[message.group].append(message)
        else:
            groups[message.group] = [message]
            units.append(groups[message.group])
    return units


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK (and resync the cached totals) on error."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __enter__(self) -> None:
        self.outbox._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self.outbox._db
        if exc_type is None:
            db.execute("COMMIT")
            return
        db.execute("ROLLBACK")
        count, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self.outbox._count = count
        self.outbox._bytes = size
