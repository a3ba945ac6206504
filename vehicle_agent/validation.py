"""What was wrong with input, said once: pydantic errors as 'key: message (got value)', and the
broker URL parsed in one place (config, bench and fleet tools alike).

Pure: imports nothing of the daemon, so every stage, the config and the tools can use it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from pydantic import ValidationError

BROKER_URL = re.compile(r"^(mqtts?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?$")
BROKER_URL_FORM = (
    "mqtts://HOST[:PORT] or mqtt://HOST[:PORT] (HOST a name, an IPv4 address or an [IPv6] address)"
)


@dataclass(frozen=True)
class BrokerAddress:
    tls: bool
    host: str
    port: int


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://HOST[:PORT] (plain, 1883) or mqtts://HOST[:PORT] (TLS, 8883); `ValueError` with a
    plain sentence (never the regular expression) otherwise."""
    match = BROKER_URL.match(url)
    if match is None:
        raise ValueError(f"does not match the pattern {BROKER_URL_FORM}")
    scheme, host, port = match.groups()
    tls = scheme == "mqtts"
    number = int(port) if port else (8883 if tls else 1883)
    if not 1 <= number <= 65535:
        raise ValueError(f"broker port out of range 1–65535 in {url!r}")
    return BrokerAddress(tls, host.strip("[]"), number)


def key_path(loc: tuple[int | str, ...]) -> str:
    """('uplink', 'tls', 0, 'file') → 'uplink.tls[0].file'."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts)


def first_problem(
    error: ValidationError, *, skip: Collection[str] = ()
) -> tuple[tuple[int | str, ...], str]:
    """(location, message) of the first problem: the location without the `skip` parts (tags
    of discriminated unions, which are not keys anybody wrote), the message with the value that
    was refused and how many more problems there are."""
    first = error.errors(include_url=False)[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in skip))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] not in {"missing", "extra_forbidden"} and "input" in first:
        value = first["input"]
        if not isinstance(value, dict | list):
            message = f"{message} (got {value!r})"
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = error.error_count() - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return loc, message


def describe_validation(error: ValidationError, *, prefix: str = "") -> str:
    """The first problem as 'key: message' ('message' alone when the input as a whole is)."""
    loc, message = first_problem(error)
    key = key_path(loc)
    if key:
        return f"{prefix}{key}: {message}"
    return f"{prefix.rstrip('.')}: {message}" if prefix else message
