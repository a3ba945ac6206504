"""Threads a hung call cannot hold up (the stage threads, and closing what a stage may still
use), and memory given back after a model is closed.

A `ThreadPoolExecutor` is the wrong tool where a call may never return (a driver or a model
runtime stuck in C): leaving its `with` block waits for the call, and the interpreter joins its
threads at exit, so a daemon with one stuck frame never stops and systemd has to kill it after
`TimeoutStopSec`, with the fan never put in its safe state. A `StageThread` is one daemon
thread: shutting it down never waits, and a stuck call dies with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from vehicle_agent.compat import wait_for

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


class StageThread(Executor):
    """An executor of one daemon thread, for `loop.run_in_executor`. `busy_s` says how long the
    call it runs now has been running (None: idle)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._started_at: float | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError(f"stage thread {self.name} is shut down")
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with `wait`, wait for the work queued so far (never at exit)."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not _STOP:
                    job[0].cancel()
        self._jobs.put(_STOP)
        if wait:
            self._thread.join()

    @property
    def busy_s(self) -> float | None:
        started = self._started_at
        return None if started is None else time.monotonic() - started

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            self._started_at = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting coroutine
                future.set_exception(exc)
            else:
                future.set_result(result)
            finally:
                self._started_at = None


async def call_detached(fn: Callable[[], object], timeout_s: float, what: str) -> bool:
    """Run `fn` on a daemon thread of its own and wait at most `timeout_s`; False (logged) when
    it did not return in time: it is left running and cannot hold up the exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop may be gone by then
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name=f"detached-{what}", daemon=True).start()
    try:
        await wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        logger.error("%s did not return within %.1f s; left running", what, timeout_s)  # noqa: TRY400
        return False
    return True


_LIBC: Any = None


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc's `malloc_trim(0)`; elsewhere nothing).

    Closing a model runtime frees megabytes scattered over the heap, which glibc keeps: without
    this, every model swap (an update, a reload) grew the daemon's RSS by 10–30 MiB for good
    (onnxruntime, fast-enhance at 720p: 129 → 242 MiB after six swaps; with it, 130 flat). Call
    it after a model was closed, not per frame."""
    global _LIBC  # noqa: PLW0603 - loaded once
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is not None:
        trim(0)
