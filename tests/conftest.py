"""Shared fixtures for every test."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator

import pytest

if sys.version_info < (3, 11):
    from taskgroup.tasks import task_factory

    class _BackportTaskPolicy(asyncio.DefaultEventLoopPolicy):
        """Loops whose tasks count their cancellations as 3.11's do, as `compat.run` gives the
        daemon on Python 3.10. Without it the TaskGroup backport swaps the running task, which
        breaks when a fixture enters a group in its setup task and leaves it in its teardown."""

        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            loop.set_task_factory(task_factory)
            return loop

    # Set before pytest-asyncio first reads the policy (its `event_loop_policy` fixture).
    asyncio.set_event_loop_policy(_BackportTaskPolicy())


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`vehicle-agent` commands install root log handlers; keep them from leaking into the next
    test (where they would write into that test's captured stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
