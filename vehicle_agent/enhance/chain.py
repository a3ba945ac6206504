"""Enhance stage runtime: backends in a fallback chain, the model chosen by scene condition.

`EnhancerChain` is itself an `Enhancer`, so the pipeline runs it like any backend. For each
frame it asks the `Gate` what to run (a model, 'classical' or 'none', from the latest analysed
frame's condition), then tries the chain's backends in order: the first ready one whose output
passes the checks (no exception, no NaN, not blank) gives the frame; passthrough is always the
floor, so a frame always comes out. That frame then passes the `HarmGuard` (unless the chain was
built with `guard=None`), which falls back towards the input where the output is unlikely to
help; passthrough frames skip it. A backend that fails to load, fails on a frame, or is slower
than `max_latency_ms` for `slow_frames` frames in a row is demoted; `promote_after_s` later a
health check (a fresh load, warmed up, then one probe frame) runs in the background and, if it
passes, promotes it back between two frames; each failed check is reported and doubles the wait
before the next, up to `promote_max_s`. Loads and checks never block the frame path.

A backend whose load first needs slow one-time work (`PreparedEnhancer`: a TensorRT engine
build) is not loaded in `load`: its work runs on the loader thread while the next backend of the
chain serves the frames, and it is promoted between two frames once it is done (a build that
fails is a demotion like any load failure). `close` cancels work still running.
Built with `floor=False` (offline, where the user named the backend or the model), passthrough
is no floor: when the last backend that could give a frame fails, `EnhancerError` says why,
instead of an unchanged copy coming out.

Everything that changes state runs on the enhance thread (or in `load`, before frames flow);
the loader thread only builds new backends. Events are queued and the pipeline emits them on
the event loop (`drain_events`), since the event bus is not thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vehicle_agent.backoff import backoff_delay
from vehicle_agent.enhance.base import (
    BackendUnavailableError,
    Enhancer,
    EnhancerError,
    EnhancerEvent,
    PreparedEnhancer,
    create_enhancer,
)
from vehicle_agent.enhance.guard import GuardParams, HarmGuard
from vehicle_agent.enhance.model import ModelEnhancer, NonFiniteOutputError
from vehicle_agent.enhance.settings import (
    GATE_WORDS,
    MODEL_BACKENDS,
    EnhanceConfig,
    EnhanceHealthConfig,
)
from vehicle_agent.enhance.store import ModelStore, default_dirs
from vehicle_agent.records import Image, JsonValue

logger = logging.getLogger(__name__)

PASSTHROUGH = "passthrough"
DemotionKind = Literal["load", "unavailable", "error", "nan", "blank", "slow"]
DEFAULT_GUARD = GuardParams()


class HealthCheckError(Exception):
    """A candidate's output or speed failed a check; `kind` says which."""

    def __init__(self, kind: DemotionKind, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One entry of the chain: its type key, its config, and whether it runs a model."""

    type: str
    config: Any
    needs_model: bool


class Gate:
    """Scene condition → what runs: a model name, 'classical' or 'none'.

    `observe` runs on the enhance thread for every frame, before it is enhanced, with the
    condition judged on that raw frame; `current` is read there too (and by status on the
    loop). A new choice takes effect after `switch_after` frames in a row ask for it.
    """

    def __init__(self, default_model: str, table: Mapping[str, str], switch_after: int = 1) -> None:
        self.default_model = default_model
        self.table = dict(table)
        self.switch_after = switch_after
        # One tuple, replaced whole: the enhance thread never sees a half-made change.
        self._state: tuple[str, str | None] = (self.choice_for(None), None)
        self._pending: str | None = None
        self._count = 0

    def choice_for(self, condition: str | None) -> str:
        if condition is None:
            return self.default_model
        return self.table.get(condition, self.default_model)

    def observe(self, condition: str | None) -> None:
        choice = self.choice_for(condition)
        current, _ = self._state
        if choice == current:
            self._pending, self._count = None, 0
            self._state = (current, condition)
            return
        if choice != self._pending:
            self._pending, self._count = choice, 0
        self._count += 1
        if self._count >= self.switch_after:
            self._state = (choice, condition)
            self._pending, self._count = None, 0

    @property
    def current(self) -> tuple[str, str | None]:
        """(choice, condition that led to it)."""
        return self._state

    def models(self) -> list[str]:
        """Every model the gate may ask for, the current choice first."""
        ordered = [self._state[0], self.default_model, *self.table.values()]
        return list(dict.fromkeys(m for m in ordered if m not in GATE_WORDS))


@dataclass(eq=False)
class Candidate:
    """A backend of the chain running one model (or none): its health and its instance."""

    slot: int
    spec: BackendSpec
    model: str | None
    enhancer: Enhancer | None = None
    state: Literal["idle", "building", "ready", "demoted", "unavailable"] = "idle"
    """'building': its one-time preparation (an engine build) runs in the background."""
    job: Future[Enhancer] | None = None
    cancel: threading.Event | None = None
    """Set by `close` to stop the job's preparation (an engine build) early."""
    building_since: float | None = None
    retry_at: float = 0.0
    demoted_at: float | None = None
    reason: str = ""
    slow_run: int = 0
    frames: int = 0
    checks_failed: int = 0
    history: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.spec.type}:{self.model}" if self.model else self.spec.type


class _InlineExecutor:
    """Runs jobs at once on the calling thread (offline use and tests that want no thread)."""

    def submit(self, fn: Callable[[], Enhancer]) -> Future[Enhancer]:
        future: Future[Enhancer] = Future()
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        del wait, cancel_futures


class EnhancerChain(Enhancer):
    """The enhance stage's runtime: fallback chain + condition gate + health checks."""

    def __init__(
        self,
        specs: Sequence[BackendSpec],
        gate: Gate,
        store: ModelStore,
        health: EnhanceHealthConfig | None = None,
        *,
        state_dir: Path | None = None,
        background: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        factory: Callable[..., Enhancer] = create_enhancer,
        guard: GuardParams | None = DEFAULT_GUARD,
        floor: bool = True,
    ) -> None:
        """`guard`: the parameters of this chain's own `HarmGuard` (it smooths over this
        stream's frames), or None to return backend outputs unchecked. `floor=False`: no
        passthrough after the last backend (see the module)."""
        self.specs = list(specs)
        self.gate = gate
        self.store = store
        self.health = health or EnhanceHealthConfig()
        self.state_dir = state_dir
        self.clock = clock
        self.timer = clock
        self.factory = factory
        self.background = background
        self.guard = HarmGuard(guard) if guard is not None else None
        self.floor = floor
        self.name = PASSTHROUGH
        self.candidates: dict[tuple[int, str | None], Candidate] = {}
        self._events: deque[EnhancerEvent] = deque()
        self._executor: ThreadPoolExecutor | _InlineExecutor | None = None
        self._active: Candidate | None = None
        self._choice = gate.current[0]
        self.frames_by: dict[str, int] = {}
        self.closed = False

    # -- candidates ----------------------------------------------------------------------------

    def candidate(self, slot: int, model: str | None) -> Candidate:
        key = (slot, model)
        found = self.candidates.get(key)
        if found is None:
            found = Candidate(slot, self.specs[slot], model)
            self.candidates[key] = found
        return found

    def candidates_for(self, choice: str) -> list[Candidate]:
        """The backends that may give a frame for `choice`, in order (passthrough is implied).

        A gated model other than the default one is followed, on every model backend, by the
        default model before any model-free backend: when the gated model is slow, broken or
        missing (a restoration model on a CPU), the frame gets the default model, not CLAHE.
        Not without the floor (offline, where the user named the model: no silent fallback)."""
        if choice == "none":
            return []
        found = []
        for slot, spec in enumerate(self.specs):
            if spec.needs_model:
                if choice != "classical":
                    found.append(self.candidate(slot, choice))
            else:
                found.append(self.candidate(slot, None))
        default = self.gate.default_model
        if self.floor and choice not in ("classical", default):
            fallback = [
                self.candidate(slot, default)
                for slot, spec in enumerate(self.specs)
                if spec.needs_model
            ]
            after = max(i for i, c in enumerate(found) if c.model == choice) + 1 if fallback else 0
            found[after:after] = fallback
        return found

    # -- loading -------------------------------------------------------------------------------

    def _create(self, cand: Candidate) -> Enhancer:
        context: dict[str, Any] = {}
        if cand.spec.needs_model:
            assert cand.model is not None  # noqa: S101 - model candidates always name one
            context = {"model": self.store.resolve(cand.model), "state_dir": self.state_dir}
        return self.factory(cand.spec.config, **context)

    def _build(
        self,
        cand: Candidate,
        probe: Image | None,
        enhancer: Enhancer | None = None,
        cancel: threading.Event | None = None,
    ) -> Enhancer:
        """Load a fresh instance (model verified, prepared, warmed up) and check it on `probe`
        if given; `enhancer`: one already made.

        Runs on the loader thread: it touches nothing but the new instance."""
        if enhancer is None:
            enhancer = self._create(cand)
        try:
            if cancel is not None and isinstance(enhancer, PreparedEnhancer):
                enhancer.prepare(cancel)
            enhancer.load()
            if probe is not None:
                self._probe(enhancer, probe)
        except BaseException:
            enhancer.close()
            raise
        return enhancer

    def _probe(self, enhancer: Enhancer, image: Image) -> None:
        """A health check's frame: it must pass the output checks, in time."""
        start = self.clock()
        self._checked(enhancer, image)
        elapsed_ms = (self.clock() - start) * 1000
        if elapsed_ms > self.health.max_latency_ms:
            raise HealthCheckError(
                "slow", f"health check took {elapsed_ms:.0f} ms > {self.health.max_latency_ms:g}"
            )

    def _checked(self, enhancer: Enhancer, image: Image) -> Image:
        try:
            out = enhancer.enhance(image)
        except NonFiniteOutputError as exc:
            raise HealthCheckError("nan", str(exc)) from exc
        except Exception as exc:
            raise HealthCheckError("error", f"{type(exc).__name__}: {exc}") from exc
        if self._blank(image, out):
            raise HealthCheckError(
                "blank", f"blank output (pixel std < {self.health.blank_std:g}) from a real frame"
            )
        return out

    def _blank(self, image: Image, out: Image) -> bool:
        threshold = self.health.blank_std
        if threshold <= 0:
            return False
        step = max(1, min(image.shape[0], image.shape[1]) // 64)
        if float(np.std(out[::step, ::step])) >= threshold:
            return False
        return float(np.std(image[::step, ::step])) >= threshold

    def _submit(
        self, cand: Candidate, probe: Image | None, enhancer: Enhancer | None = None
    ) -> None:
        if self._executor is None:
            self._executor = (
                ThreadPoolExecutor(1, thread_name_prefix="enhance-loader")
                if self.background
                else _InlineExecutor()
            )
        cancel = threading.Event()
        cand.cancel = cancel
        cand.job = self._executor.submit(lambda: self._build(cand, probe, enhancer, cancel))
        self._harvest(cand)

    def _harvest(self, cand: Candidate) -> None:
        job = cand.job
        if job is None or not job.done():
            return
        cand.job = None
        cand.cancel = None
        now = self.timer()
        try:
            enhancer = job.result()
        except BackendUnavailableError as exc:
            self._demote(cand, "unavailable", str(exc))
            return
        except HealthCheckError as exc:
            self._check_failed(cand, exc.kind, exc.reason, now)
            return
        except Exception as exc:
            self._check_failed(cand, "load", f"{type(exc).__name__}: {exc}", now)
            return
        cand.enhancer = enhancer
        prepared = cand.state == "building"
        cand.state = "ready"
        cand.slow_run = 0
        cand.checks_failed = 0
        if isinstance(enhancer, ModelEnhancer) and enhancer.model is not None:
            model = enhancer.model
            self._record(
                "model_loaded",
                backend=cand.spec.type,
                model=model.label,
                sha256=model.manifest.sha256[:12],
                load_s=round(enhancer.load_s, 3),
                warmup_ms=round(enhancer.warmup_ms, 1),
            )
        if prepared and cand.building_since is not None:
            prepare_s = self.clock() - cand.building_since
            logger.info(
                "enhance: %s prepared in %.1f s; it takes the next frame", cand.label, prepare_s
            )
            self._record(
                "enhancer_prepared",
                backend=cand.spec.type,
                model=cand.model,
                prepare_s=round(prepare_s, 3),
            )
        cand.building_since = None
        if cand.demoted_at is not None:
            demoted_s = now - cand.demoted_at
            cand.demoted_at = None
            logger.info("enhance: %s passed its health check; promoted", cand.label)
            self._record(
                "enhancer_promoted",
                backend=cand.spec.type,
                model=cand.model,
                demoted_s=round(demoted_s, 3),
            )

    def _check_failed(self, cand: Candidate, kind: DemotionKind, reason: str, now: float) -> None:
        if cand.state == "demoted":
            # Already demoted: the next check waits twice as long (up to the cap).
            cand.checks_failed += 1
            delay = self._retry_delay(cand)
            cand.retry_at = now + delay
            logger.warning(
                "enhance: health check %d of %s failed (%s): %s; next in %.0f s",
                cand.checks_failed,
                cand.label,
                kind,
                reason,
                delay,
            )
            self._record(
                "enhancer_check_failed",
                backend=cand.spec.type,
                model=cand.model,
                kind=kind,
                reason=reason,
                failed_checks=cand.checks_failed,
                retry_in_s=delay,
            )
            return
        self._demote(cand, kind, reason)

    def _retry_delay(self, cand: Candidate) -> float:
        health = self.health
        return backoff_delay(cand.checks_failed, health.promote_after_s, health.promote_max_s)

    def _kick(self, cand: Candidate, image: Image) -> None:
        """Start a first load, or a health check when a demoted candidate is due."""
        if cand.job is not None:
            self._harvest(cand)
            return
        if cand.state == "idle":
            self._submit(cand, None)
        elif cand.state == "demoted" and self.timer() >= cand.retry_at:
            self._submit(cand, image)

    def load(self) -> None:
        """Load, before the first frame, one working backend for every model the gate may ask
        for (so a condition change switches at once) and every model-free backend."""
        for choice in [*self.gate.models(), "classical"]:
            for cand in self.candidates_for(choice):
                if cand.state == "idle":
                    self._load_now(cand)
                if cand.state == "ready" and cand.model is not None:
                    break  # this model has its runtime; lower ones load only when needed
        self.name = self._first_ready_label(self.gate.current[0])
        self._choice = self.gate.current[0]
        logger.info("enhance: chain %s; running %s", self.describe(), self.name)

    def _load_now(self, cand: Candidate) -> None:
        """Load `cand` at once, unless it first needs slow preparation: that starts in the
        background (the chain's next backend serves meanwhile) and promotes it when done."""
        try:
            enhancer = self._create(cand)
        except Exception as exc:
            self._failed_now(cand, exc)
            return
        try:
            pending = self._preparation(enhancer)
        except Exception as exc:
            enhancer.close()
            self._failed_now(cand, exc)
            return
        if pending is not None:
            cand.state = "building"
            cand.building_since = self.clock()
            logger.info("enhance: %s prepares in the background: %s", cand.label, pending)
            self._record(
                "enhancer_preparing", backend=cand.spec.type, model=cand.model, reason=pending
            )
            self._submit(cand, None, enhancer)
            return
        cand.job = _InlineExecutor().submit(lambda: self._build(cand, None, enhancer))
        self._harvest(cand)

    def _failed_now(self, cand: Candidate, exc: Exception) -> None:
        failed: Future[Enhancer] = Future()
        failed.set_exception(exc)
        cand.job = failed
        self._harvest(cand)

    def _preparation(self, enhancer: Enhancer) -> str | None:
        """What slow work `enhancer` needs before it loads, when the chain can defer it."""
        if not self.background or not isinstance(enhancer, PreparedEnhancer):
            return None
        return enhancer.preparation_needed()

    def _first_ready_label(self, choice: str) -> str:
        for cand in self.candidates_for(choice):
            if cand.state == "ready":
                return cand.label
        return PASSTHROUGH

    # -- health --------------------------------------------------------------------------------

    def _demote(self, cand: Candidate, kind: DemotionKind, reason: str) -> None:
        if not self.floor and not self._others_left(cand):
            if kind == "slow":
                cand.slow_run = 0  # nothing to fall back to: a slow frame is still a frame
                return
            raise EnhancerError(cand.label, reason)
        now = self.timer()
        permanent = kind == "unavailable"
        cand.state = "unavailable" if permanent else "demoted"
        cand.reason = reason
        cand.demoted_at = now
        delay = self._retry_delay(cand)
        cand.retry_at = now + delay
        cand.slow_run = 0
        cand.building_since = None
        cand.history.append(kind)
        if cand.enhancer is not None:
            try:
                cand.enhancer.close()
            except Exception:
                logger.exception("closing demoted %s failed", cand.label)
            cand.enhancer = None
        logger.warning("enhance: %s demoted (%s): %s", cand.label, kind, reason)
        self._record(
            "enhancer_demoted",
            backend=cand.spec.type,
            model=cand.model,
            kind=kind,
            reason=reason,
            retry_in_s=None if permanent else delay,
        )

    def _try(self, cand: Candidate, image: Image) -> Image | None:
        assert cand.enhancer is not None  # noqa: S101 - ready candidates hold an instance
        start = self.clock()
        try:
            out = self._checked(cand.enhancer, image)
        except HealthCheckError as exc:
            self._demote(cand, exc.kind, exc.reason)
            return None
        elapsed_ms = (self.clock() - start) * 1000
        cand.frames += 1
        if elapsed_ms > self.health.max_latency_ms:
            cand.slow_run += 1
            if cand.slow_run >= self.health.slow_frames:
                # This frame is good, so it is used; the next ones go to the next backend.
                self._demote(
                    cand,
                    "slow",
                    f"{cand.slow_run} frames in a row over {self.health.max_latency_ms:g} ms "
                    f"(last {elapsed_ms:.0f} ms)",
                )
        else:
            cand.slow_run = 0
        return out

    # -- frames --------------------------------------------------------------------------------

    def _enhance(self, image: Image) -> Image:
        for cand in self.candidates.values():
            if cand.job is not None:
                self._harvest(cand)
        choice, condition = self.gate.current
        for cand in self.candidates_for(choice):
            if cand.state != "ready":
                self._kick(cand, image)
            if cand.state == "ready":
                out = self._try(cand, image)
                if out is not None:
                    self._activate(cand, choice, condition)
                    if self.guard is None or out.shape != image.shape:
                        return out  # the guard compares like with like only
                    return self.guard.apply(image, out)
        if not self.floor and self.candidates_for(choice):
            raise EnhancerError(self.name, f"no backend of {self.describe()} gave the frame")
        self._activate(None, choice, condition)
        return image

    def _activate(self, cand: Candidate | None, choice: str, condition: str | None) -> None:
        label = cand.label if cand is not None else PASSTHROUGH
        self.frames_by[label] = self.frames_by.get(label, 0) + 1
        if label != self.name:
            previous = self._active
            if choice != self._choice:
                reason = "condition"
            elif previous is not None and previous.state != "ready":
                reason = "fallback"
            else:
                reason = "promoted"
            logger.info("enhance: %s → %s (%s)", self.name, label, reason)
            self._record(
                "model_swapped",
                previous=self.name,
                current=label,
                reason=reason,
                condition=condition,
            )
            self.name = label
        self._active = cand
        self._choice = choice

    # -- loop side -----------------------------------------------------------------------------

    def set_condition(self, condition: str | None) -> None:
        self.gate.observe(condition)

    def use_timer(self, timer: Callable[[], float]) -> None:
        self.timer = timer

    def reset_guard(self) -> None:
        if self.guard is not None:
            self.guard.reset()

    def _record(self, type_: str, **data: JsonValue) -> None:
        self._events.append(EnhancerEvent(type_, data))

    def drain_events(self) -> list[EnhancerEvent]:
        drained = []
        while self._events:
            drained.append(self._events.popleft())
        return drained

    def _others_left(self, cand: Candidate) -> bool:
        """Whether another backend may still give the current choice's frames."""
        return any(
            other is not cand and other.state in ("idle", "ready")
            for other in self.candidates_for(self.gate.current[0])
        )

    def describe(self) -> str:
        floor = [PASSTHROUGH] if self.floor else []
        return " → ".join([*(s.type for s in self.specs), *floor])

    @property
    def model_label(self) -> str | None:
        """The active backend's model; before the first frame, the one `load` made ready."""
        active = self._active
        if active is None:
            active = next(
                (c for c in self.candidates_for(self.gate.current[0]) if c.state == "ready"), None
            )
        return active.enhancer.model_label if active is not None and active.enhancer else None

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait for background loads and checks to finish (tests, tools); harvest happens on
        the next frame."""
        deadline = time.monotonic() + timeout_s
        for cand in list(self.candidates.values()):
            job = cand.job
            if job is not None:
                job.exception(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for cand in self.candidates.values():
            if cand.cancel is not None:
                cand.cancel.set()  # an engine build stops at its next step
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for cand in self.candidates.values():
            job, cand.job = cand.job, None
            if job is not None and job.done() and not job.cancelled() and job.exception() is None:
                job.result().close()
            if cand.enhancer is not None:
                cand.enhancer.close()
                cand.enhancer = None


def chain_specs(configs: Iterable[Any]) -> list[BackendSpec]:
    return [BackendSpec(str(c.type), c, str(c.type) in MODEL_BACKENDS) for c in configs]


def build_enhancer(
    enhance: EnhanceConfig,
    state_dir: Path | None = None,
    *,
    chain: Sequence[Any] | None = None,
    background: bool = True,
    guard: GuardParams | None = DEFAULT_GUARD,
    floor: bool = True,
) -> EnhancerChain:
    """The enhance stage's runtime for `[enhance]` (or for `chain`, e.g. one backend that a
    fleet command asked for, keeping the config's models and gating); `guard=None` or
    `[enhance] guard = false` turns the harm guard off; `floor=False` raises instead of
    passing frames through unchanged (offline, for a backend or model the user named)."""
    return EnhancerChain(
        chain_specs(chain if chain is not None else enhance.chain),
        Gate(enhance.model, enhance.gating, enhance.switch_after_frames),
        ModelStore(default_dirs(state_dir, enhance.model_dirs)),
        enhance.health,
        state_dir=state_dir,
        background=background,
        guard=guard if enhance.guard else None,
        floor=floor,
    )
