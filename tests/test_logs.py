"""Log formats: journald priority prefixes under systemd, JSON otherwise, human on a terminal."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from vehicle_agent.logs import JournaldFormatter, JsonFormatter, resolve_format


def test_auto_picks_journald_when_stderr_is_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    info = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    assert resolve_format("auto") == "journald"
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # another file: not ours
    assert resolve_format("auto") in {"human", "json"}
    assert resolve_format("json") == "json"


def test_journald_lines_carry_the_syslog_priority_and_json() -> None:
    record = logging.makeLogRecord(
        {"name": "vehicle_agent.x", "levelname": "WARNING", "levelno": 30, "msg": "fan stuck"}
    )
    line = JournaldFormatter().format(record)
    assert line.startswith("<4>{")
    payload = json.loads(line[3:])
    assert payload["msg"] == "fan stuck"
    assert payload["level"] == "WARNING"


def test_json_lines_keep_extra_fields_and_exceptions() -> None:
    try:
        raise ValueError("boom")  # noqa: TRY301
    except ValueError:
        record = logging.makeLogRecord(
            {"msg": "failed", "levelname": "ERROR", "exc_info": sys.exc_info(), "stage": "enhance"}
        )
    payload = json.loads(JsonFormatter().format(record))
    assert payload["stage"] == "enhance"
    assert "ValueError: boom" in payload["exc"]
