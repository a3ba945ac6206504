"""Secrets (broker password, keys) resolved at run time, never read from the config file.

A config key ending in `_credential` holds a *name*. `read_secret(name)` looks it up:
1. `$CREDENTIALS_DIRECTORY/<name>`: systemd's `LoadCredential=` (the service's way);
2. the environment variable `VEHICLE_AGENT_<NAME>` (name upper-cased, `-` and `.` as `_`), for the
   bench and tests.
Secret values are wrapped in `SecretValue`, whose repr never shows them, so they cannot leak
into logs or error messages by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
ENV_PREFIX = "VEHICLE_AGENT_"


_REVEALED: set[str] = set()
"""Values of every secret read so far: log formatters replace them with `***`."""
_MIN_REDACT_LENGTH = 4


def redact(text: str) -> str:
    """`text` with every secret value read by this process replaced by `***`."""
    for value in _REVEALED:
        if value in text:
            text = text.replace(value, "***")
    return text


class SecretError(Exception):
    """A named secret is missing or unreadable; the message names it, never its value."""


class SecretValue:
    """A secret that prints as `SecretValue('***')`; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= _MIN_REDACT_LENGTH:
            _REVEALED.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('***')"

    __str__ = __repr__


def env_name(name: str) -> str:
    return ENV_PREFIX + re.sub(r"[-.]", "_", name).upper()


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> SecretValue:
    """The secret called `name`, from the credentials directory, else the environment."""
    if not NAME_PATTERN.match(name):
        raise SecretError(f"invalid credential name {name!r}: letters, digits, '_', '-', '.'")
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        if path.is_file():
            try:
                return SecretValue(path.read_text(encoding="utf-8").rstrip("\r\n"))
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(f"credential {name!r}: cannot read {path}: {exc}") from None
    value = env.get(env_name(name))
    if value is not None:
        return SecretValue(value)
    where = f"{directory}/{name} or " if directory else ""
    raise SecretError(f"credential {name!r} not found: expected {where}${env_name(name)}")
