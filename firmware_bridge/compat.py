"""Firmware bridge: the Python 3.11+ features it uses, also on Python 3.10 (JetPack 6.2).

A copy of the four shims of `vehicle_agent/compat.py` this package needs, because
`firmware_bridge` never imports `vehicle_agent`; tests/test_compat.py holds both to one contract.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

# `# novm`: vermin is told these lines run on 3.11+ only; the 3.10 branch stays checked.
if sys.version_info >= (3, 11):
    from asyncio import TaskGroup  # novm
    from typing import Self  # novm
else:
    import taskgroup
    from taskgroup import TaskGroup
    from typing_extensions import Self

__all__ = ["Self", "TaskGroup", "run", "wait_for"]

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
