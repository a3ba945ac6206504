"""Logging set-up for every command: human lines, JSON lines, or JSON lines for journald."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal

from vehicle_agent.secrets import redact

LogFormat = Literal["auto", "human", "json", "journald"]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra}`; exceptions as a `exc` string."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(
            {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
        )
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


class JournaldFormatter(JsonFormatter):
    """JSON prefixed with `<N>`, the syslog priority journald reads from a service's stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelname, 6)}>{super().format(record)}"


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.converter = time.localtime

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM names its inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


def resolve_format(fmt: LogFormat) -> LogFormat:
    if fmt != "auto":
        return fmt
    if stderr_is_journal():
        return "journald"
    return "human" if sys.stderr.isatty() else "json"


def configure_logging(level: str = "INFO", fmt: LogFormat = "auto") -> LogFormat:
    """Send every log line to stderr in `fmt`; replaces handlers from an earlier call."""
    resolved = resolve_format(fmt)
    formatter: logging.Formatter = {
        "human": HumanFormatter,
        "json": JsonFormatter,
        "journald": JournaldFormatter,
    }[resolved]()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return resolved
