"""Secrets come from systemd's credentials directory or the environment and never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from vehicle_agent.secrets import SecretError, env_name, read_secret


def test_credentials_directory_wins_over_the_environment(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "VEHICLE_AGENT_MQTT_PASSWORD": "from-env"}
    assert read_secret("mqtt-password", env).reveal() == "from-systemd"


def test_environment_is_the_fallback() -> None:
    assert env_name("mqtt-password") == "VEHICLE_AGENT_MQTT_PASSWORD"
    secret = read_secret("mqtt-password", {"VEHICLE_AGENT_MQTT_PASSWORD": "s3cret"})
    assert secret.reveal() == "s3cret"
    assert "s3cret" not in repr(secret)
    assert "s3cret" not in f"{secret}"


def test_missing_secret_names_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as info:
        read_secret("mqtt-password", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    message = str(info.value)
    assert f"{tmp_path}/mqtt-password" in message
    assert "$VEHICLE_AGENT_MQTT_PASSWORD" in message


def test_names_cannot_escape_the_credentials_directory(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="invalid credential name"):
        read_secret("../etc/shadow", {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_a_secret_that_reaches_a_log_line_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    import logging  # noqa: PLC0415

    from vehicle_agent.logs import HumanFormatter, JsonFormatter  # noqa: PLC0415

    secret = read_secret("broker-pass", {"VEHICLE_AGENT_BROKER_PASS": "correct-horse"})
    record = logging.makeLogRecord({"msg": "connecting with %s", "args": (secret.reveal(),)})
    for formatter in (HumanFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert "correct-horse" not in line
        assert "***" in line
