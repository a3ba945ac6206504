"""Shared mechanism: the Python 3.11+ features the packages use, also on Python 3.10 (JetPack 6.2).

Import them from here, never from the standard library, so each 3.10 workaround exists once.
CI runs `vermin -t=3.10-` over the packages; ruff refuses `asyncio.wait_for`, whose 3.10 timeout
is not the built-in `TimeoutError`. `firmware_bridge/compat.py` carries its own copy of
`Self`, `TaskGroup`, `wait_for` and `run`, since `firmware_bridge` never imports `vehicle_agent`.
Drop a shim when the oldest supported Python has the feature.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Coroutine
from datetime import timezone
from enum import Enum
from typing import Any, TypeVar

# `# novm`: vermin is told these lines run on 3.11+ only; the 3.10 branch stays checked.
if sys.version_info >= (3, 11):
    from asyncio import TaskGroup, timeout  # novm
    from builtins import BaseExceptionGroup, ExceptionGroup  # novm
    from enum import StrEnum  # novm
    from typing import Self  # novm

    import tomllib  # novm
else:
    import taskgroup
    import tomli as tomllib
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup
    from taskgroup import TaskGroup, timeout
    from typing_extensions import Self

    class StrEnum(str, Enum):
        """`enum.StrEnum` of Python 3.11: members are their values for `str()` and `format()`."""

        def __str__(self) -> str:
            return str.__str__(self)

        def __format__(self, format_spec: str) -> str:
            return str.__format__(self, format_spec)

        @staticmethod
        def _generate_next_value_(
            name: str,
            start: int,  # noqa: ARG004 - Enum's signature
            count: int,  # noqa: ARG004
            last_values: list[str],  # noqa: ARG004
        ) -> str:
            return name.lower()


__all__ = [
    "UTC",
    "BaseExceptionGroup",
    "ExceptionGroup",
    "Self",
    "StrEnum",
    "TaskGroup",
    "run",
    "timeout",
    "tomllib",
    "wait_for",
]

UTC = timezone.utc
"""`datetime.UTC` (3.11) is this same object."""

_T = TypeVar("_T")


async def wait_for(aw: Awaitable[_T], timeout: float | None) -> _T:
    """`asyncio.wait_for`, raising the built-in `TimeoutError` on every Python (3.10's own
    `asyncio.TimeoutError` is another class, which `except TimeoutError` would miss)."""
    if sys.version_info >= (3, 11):
        return await asyncio.wait_for(aw, timeout)  # noqa: TID251 - the one allowed use
    try:
        return await asyncio.wait_for(aw, timeout)  # noqa: TID251 - the one allowed use
    except asyncio.TimeoutError as exc:  # noqa: TID251 - the class it converts
        raise TimeoutError(*exc.args) from exc


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run`; on Python 3.10 with the backport's task factory, so every task counts its
    cancellations as 3.11's do and `TaskGroup`/`timeout` never have to swap the running task."""
    if sys.version_info >= (3, 11):
        return asyncio.run(main)  # noqa: TID251 - the one allowed use
    # The backport's `run` has no annotations.
    return taskgroup.run(main)  # type: ignore[no-any-return,no-untyped-call]
