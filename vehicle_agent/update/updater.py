"""Model updates, the vehicle's side on the event loop: offer → transfer → install → health check →
swap → confirm, with a refusal or a rollback reported at whichever step fails.

`ModelUpdater` receives the fleet link's messages on `update/…` topics (`on_message`, called on
the loop, returns at once) and asks the link for subscriptions through `Subscriptions`; disk work
and the health check run on one worker thread. The swap itself is the pipeline's: `reload`
rebuilds the enhance chain (the model store now resolves the new version) and switches between
two frames. `recover_at_start` runs before the pipeline loads any model (crash-loop rollback).

What the operator's tools wait for is reported at least once, across any kill: a refusal or a
rollback is kept in the ledger (`Report`) before it is emitted and dropped only once `flushed`
says the outbox holds it; at start, what is kept is emitted again, and a model whose running
version differs from the one last reported (a kill between the pointer swap and the
`model_swapped` of the next frame) is announced as `model_swapped` with reason `reconciled`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vehicle_agent.compat import wait_for
from vehicle_agent.config import MODEL_BACKENDS, Config
from vehicle_agent.enhance.manifest import ManifestError
from vehicle_agent.enhance.store import ModelNotFoundError, ModelStore, default_dirs
from vehicle_agent.records import Image, JsonValue
from vehicle_agent.update.activate import (
    HealthCheckFailedError,
    HealthLimits,
    golden_frames,
    health_check,
    model_ref,
)
from vehicle_agent.update.install import InstallError, ModelInstaller, Report
from vehicle_agent.update.manifest import (
    SignedUpdate,
    UpdateManifest,
    UpdateRefusedError,
    decode_public_key,
    parse_offer,
    verify_offer,
    version_key,
)
from vehicle_agent.update.transfer import ChunkError, Transfer
from vehicle_agent.uplink.base import Subscriptions
from vehicle_agent.uplink.topics import Topics

logger = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_SIZE = 256
"""Messages waiting for the worker; a chunk dropped here comes again when the transfer stalls."""

_recovered: set[Path] = set()


def _staged_version(offer: SignedUpdate) -> tuple[int, ...]:
    try:
        return version_key(str(offer.manifest.get("version", "0")))
    except ValueError:
        return (0,)  # unreadable: it sorts first and is discarded, or refused as malformed


def _raw_key(payload: bytes) -> str:
    return "raw-" + hashlib.sha256(payload).hexdigest()[:16]


Emit = Callable[..., object]
"""`emit(type_, **fields)`: an event of `UPDATE_EVENTS` (or `model_swapped`)."""
Flush = Callable[[], Awaitable[None]]
"""Wait until every event emitted so far is in the fleet link's outbox (survives a kill)."""
Reload = Callable[[str], Awaitable[str | None]]
"""Rebuild and load the enhance chain, swap it in between two frames (the argument is the
`model_swapped` reason); returns the name@version it runs."""


def models_root(config: Config) -> Path:
    return config.agent.state_dir / "models"


def recover_at_start(config: Config) -> list[Report]:
    """Once per process, before any model loads: clean leftovers and roll back a model that
    crashed the daemon `update.max_crashes` times after its swap."""
    root = models_root(config)
    if root in _recovered:
        return []
    _recovered.add(root)
    try:
        reports = ModelInstaller(root).recover(config.update.max_crashes)
    except OSError:
        logger.exception("model update recovery in %s failed", root)
        return []
    for report in reports:
        logger.error("model update: %s %s", report.type, report.data)
    return reports


@dataclass
class _Transferring:
    offer: SignedUpdate
    manifest: UpdateManifest
    transfer: Transfer
    started: float = field(default_factory=time.monotonic)
    last_chunk: float = field(default_factory=time.monotonic)
    last_progress: float = 0.0
    window: set[int] = field(default_factory=set)
    """Chunk indices subscribed to now (each chunk is its own retained topic)."""
    cursor: int = 0

    @property
    def update_id(self) -> str:
        return self.offer.update_id


class ModelUpdater:
    """The vehicle's side of model updates (see the module doc)."""

    def __init__(self, config: Config, topics: Topics, emit: Emit) -> None:
        self.config = config
        self.settings = config.update
        self.topics = topics
        self.emit = emit
        self.installer = ModelInstaller(models_root(config))
        self.trusted = {k: decode_public_key(v) for k, v in self.settings.trusted_keys.items()}
        self.backends = [c for c in config.enhance.chain if str(c.type) in MODEL_BACKENDS]
        self.subscriptions: Subscriptions | None = None
        self.reload: Reload | None = None
        self.flushed: Flush | None = None
        self.limits = HealthLimits(
            self.settings.max_latency_ms, self.settings.blank_std, self.settings.max_mean_change
        )
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_SIZE)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model-update")
        self._current: _Transferring | None = None
        self._confirm_at: dict[str, float] = {}
        self._golden: list[Image] | None = None
        self.dropped = 0
        """Messages dropped because the queue was full (counted since start)."""
        self._lost = False
        self._busy = asyncio.Lock()
        """Held while a message, a timer or a withdrawal is worked on (one at a time)."""

    # -- the link's side -----------------------------------------------------------------------

    @property
    def max_message_bytes(self) -> int:
        return self.settings.max_chunk_bytes + 1024

    def bind(self, subscriptions: Subscriptions, flushed: Flush, reload: Reload | None) -> None:
        """What the fleet link carrying the updates offers (`uplink.base.Updates`)."""
        self.subscriptions = subscriptions
        self.flushed = flushed
        self.reload = reload

    def wants(self, topic: str) -> bool:
        return self.topics.is_update_topic(topic)

    def on_message(self, topic: str, payload: bytes) -> None:
        """A message on `update/…` (on the event loop; returns at once)."""
        current = self._current
        if current is not None and self.topics.is_update_chunk(topic):
            index = topic.rsplit("/", 1)[-1]
            if index.isdigit() and int(index) in current.transfer.have:
                return  # re-sent after a refresh: it never takes a place in the queue
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            self._lost = True

    async def run(self) -> None:
        await self._start()
        while True:
            try:
                topic, payload = await wait_for(self._queue.get(), self._next_timer())
            except TimeoutError:
                topic = None
            async with self._busy:
                if topic == self.topics.update_offer:
                    await self._on_offer(payload)
                elif topic is not None:
                    await self._on_chunk(topic, payload)
                if self._lost and self._queue.empty():
                    # Chunks were dropped here: ask for the rest at once, not after `stall_s`.
                    self._lost = False
                    if self._current is not None:
                        self._current.last_chunk = -float("inf")
                await self._timers()

    async def withdraw(self, label: str, reason: str) -> dict[str, JsonValue]:
        """The fleet withdraws `label` (`name@version`; the `withdraw_update` command, sent by a
        rollout that aborts). Running: it is rolled back to the version before it (reported as
        `model_rolled_back`, stage 'withdrawn'); being transferred: the transfer ends (refused,
        'withdrawn'); either way, and also when it never came, the version is marked bad and
        never taken. Returns what was done and what runs now."""
        name, _, version = label.partition("@")
        async with self._busy:
            current = self._current
            if current is not None and current.manifest.label == label:
                await self._give_up(current, UpdateRefusedError("withdrawn", reason))
                await self._disk(self.installer.mark_bad, name, version)
                action = "transfer_stopped"
            elif await self._disk(self.installer.active_version, name) == version:
                await self._roll_back(name, version, "withdrawn", reason, reload=True)
                action = "rolled_back"
            else:
                await self._disk(self.installer.mark_bad, name, version)
                action = "marked_bad"
        running = await self._disk(self._running_label, name)
        logger.warning("model %s withdrawn by the fleet (%s): %s", label, reason, action)
        return {"model": label, "action": action, "running": running}

    async def _roll_back(
        self, name: str, version: str, stage: str, reason: str, *, reload: bool
    ) -> None:
        """Undo an installed version (kept report first, then the pointer, then the swap back),
        and report what runs now."""
        label = f"{name}@{version}"
        self._confirm_at.pop(name, None)
        kept = await self._keep(
            "model_rolled_back",
            model=label,
            restored=None,  # filled in once rolled back (or at the next start, after a kill)
            stage=stage,
            reason=reason,
        )
        await self._disk(self.installer.rollback, name, version, reason)
        if reload and self.reload is not None and name in self._enhance_models():
            try:
                await self.reload("rollback")
            except Exception:
                logger.exception("reloading the previous model after %s failed", label)
        kept.data["restored"] = await self._disk(self._running_label, name)
        await self._report(kept)

    async def close(self) -> None:
        """A clean stop: a trial running now does not count as a crash at the next start."""
        try:
            await self._disk(self.installer.mark_clean_exit)
        except OSError:
            logger.exception("could not record the clean stop in the update ledger")
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- helpers -------------------------------------------------------------------------------

    async def _disk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _event(self, type_: str, **data: JsonValue) -> None:
        self.emit(type_, **data)

    async def _keep(self, type_: str, **data: JsonValue) -> Report:
        """Keep a report in the ledger before the step it reports (see the module doc)."""
        return await self._disk(self.installer.add_report, Report(type_, dict(data)))

    async def _report(self, *reports: Report) -> None:
        """Emit kept reports, and drop them once the outbox holds them. A rollback reported
        also tells what runs now (nothing left to reconcile)."""
        for report in reports:
            self._event(report.type, **report.data)
        await self._durable()
        for report in reports:
            if report.type == "model_rolled_back":
                name = str(report.data["model"]).partition("@")[0]
                running = await self._disk(self._running_version, name)
                if running is not None:
                    await self._disk(self.installer.set_reported, name, running)
        await self._disk(self.installer.drop_reports, {r.id for r in reports})

    async def _durable(self) -> None:
        if self.flushed is not None:
            await self.flushed()

    def _enhance_models(self) -> set[str]:
        enhance = self.config.enhance
        return {enhance.model, *enhance.gating.values()}

    def _running_version(self, name: str) -> str | None:
        """The version the model store resolves for `name` now (shipped models included; reads
        manifests: call on the worker thread)."""
        dirs = default_dirs(self.config.agent.state_dir, self.config.enhance.model_dirs)
        try:
            return ModelStore(dirs).find(name)[1].version
        except (ModelNotFoundError, ManifestError):
            return None

    def _running_label(self, name: str) -> str | None:
        version = self._running_version(name)
        return f"{name}@{version}" if version else None

    def _check_version(self, manifest: UpdateManifest) -> None:
        self.installer.check_version(manifest, self._running_version(manifest.name))

    def _want(self, topic_filter: str) -> None:
        if self.subscriptions is not None:
            self.subscriptions.want(topic_filter)

    def _drop(self, topic_filter: str) -> None:
        if self.subscriptions is not None:
            self.subscriptions.drop(topic_filter)

    # -- start ---------------------------------------------------------------------------------

    async def _start(self) -> None:
        reports = await self._disk(self.installer.pending_reports)
        for report in reports:
            if report.type == "model_rolled_back":
                name = str(report.data["model"]).partition("@")[0]
                report.data["restored"] = await self._disk(self._running_label, name)
        if reports:
            await self._report(*reports)
        await self._reconcile()
        await self._disk(self.installer.mark_running)
        now = time.monotonic()
        for name in await self._disk(self.installer.trials):
            self._confirm_at[name] = now + self.settings.confirm_after_s
        await self._disk(self.installer.clean_staging)
        staged = []
        for offer in await self._disk(self.installer.staged_offers):
            model, version = str(offer.manifest.get("name")), offer.manifest.get("version")
            active = await self._disk(self.installer.active_version, model)
            if active is not None and active == version:
                # Installed and swapped; the daemon stopped before it cleared staging.
                await self._disk(self.installer.remember_offer, offer.update_id, "installed")
                await self._disk(self.installer.discard, offer.update_id)
            else:
                staged.append(offer)
        staged.sort(key=_staged_version)
        for offer in staged[:-1]:
            await self._disk(self.installer.discard, offer.update_id)
        if staged:
            await self._accept(staged[-1], resumed=True)
        self._want(self.topics.update_offer)

    async def _reconcile(self) -> None:
        """Announce a running version the fleet has not been told of (see the module doc).
        Without a record, only an installed update needs announcing (not the shipped model)."""
        reported = await self._disk(self.installer.reported)
        for name in sorted(self._enhance_models()):
            running = await self._disk(self._running_version, name)
            last = reported.get(name)
            if running is None or running == last:
                continue
            if last is None and await self._disk(self.installer.active_version, name) is None:
                continue  # the shipped model, and no update of it was ever reported
            logger.info("model %s runs %s, last reported %s: reconciled", name, running, last)
            self._event(
                "model_swapped",
                previous=None if last is None else f"{name}@{last}",
                current=f"{name}@{running}",
                reason="reconciled",
                condition=None,
                model=f"{name}@{running}",
            )
            await self._durable()
            await self._disk(self.installer.set_reported, name, running)

    # -- offers --------------------------------------------------------------------------------

    async def _on_offer(self, payload: bytes) -> None:
        if not payload:
            return  # the retained offer was cleared
        try:
            offer = parse_offer(payload)
        except UpdateRefusedError as exc:
            key = _raw_key(payload)
            if await self._disk(self.installer.offer_outcome, key) is None:
                await self._refuse(key, None, exc, remember_as=key)
            return
        current = self._current
        if current is not None and current.update_id == offer.update_id:
            return  # redelivered (reconnect): the transfer goes on
        # Outcomes of verified offers go by update_id; refusals before the signature was
        # verified by the offer's bytes, so a forged offer cannot shadow the genuine one.
        for key in (offer.update_id, _raw_key(offer.to_bytes())):
            if await self._disk(self.installer.offer_outcome, key) is not None:
                logger.debug("update %s was handled before; ignored", offer.update_id)
                return
        await self._accept(offer, resumed=False)

    async def _accept(self, offer: SignedUpdate, *, resumed: bool) -> None:
        label = f"{offer.manifest.get('name')}@{offer.manifest.get('version')}"
        try:
            manifest = verify_offer(
                offer,
                self.trusted,
                device=self.settings.device_kind,
                backends={str(c.type) for c in self.backends},
                max_size=int(self.settings.max_model_mb * 2**20),
                max_chunk=self.settings.max_chunk_bytes,
            )
            await self._disk(self._check_version, manifest)
        except UpdateRefusedError as exc:
            unverified = exc.reason in {"malformed", "unsigned", "unknown_key", "bad_signature"}
            if not unverified:
                await self._disk(self.installer.discard, offer.update_id)
            remember = _raw_key(offer.to_bytes()) if unverified else offer.update_id
            await self._refuse(offer.update_id, label, exc, remember_as=remember)
            return
        current = self._current
        if current is not None:
            if manifest.version_key() <= current.manifest.version_key():
                await self._refuse(
                    offer.update_id,
                    label,
                    UpdateRefusedError(
                        "not_newer", f"{current.manifest.label} is being transferred"
                    ),
                )
                return
            await self._abandon(current)
        try:
            staging = await self._disk(self.installer.stage_offer, offer)
            transfer = await self._disk(Transfer, staging, manifest)
        except OSError as exc:
            await self._refuse(
                offer.update_id, label, UpdateRefusedError("install_failed", str(exc))
            )
            return
        self._current = _Transferring(offer, manifest, transfer)
        self._event(
            "model_update_offered",
            update_id=offer.update_id,
            model=manifest.label,
            key_id=offer.key_id,
            bytes=manifest.size,
            chunks=manifest.chunks,
            have_bytes=transfer.received_bytes,
        )
        logger.info(
            "model update %s (%s): %s",
            manifest.label,
            offer.update_id,
            "resuming" if resumed else "accepted",
        )
        if transfer.complete:
            await self._finish()
        else:
            self._fill_window(self._current)

    def _fill_window(self, current: _Transferring) -> None:
        """Subscribe to missing chunks until `window_chunks` are requested: the broker sends no
        more than that ahead, so even a large model never floods the link (a PINGRESP never
        waits behind megabytes) nor the broker's queue for this client."""
        chunks = current.manifest.chunks
        have = current.transfer.have
        scanned = 0
        while len(current.window) < self.settings.window_chunks and scanned < chunks:
            index = current.cursor
            current.cursor = (current.cursor + 1) % chunks
            scanned += 1
            if index not in have and index not in current.window:
                current.window.add(index)
                self._want(self.topics.update_chunk(current.update_id, index))

    def _close_window(self, current: _Transferring) -> None:
        for index in sorted(current.window):
            self._drop(self.topics.update_chunk(current.update_id, index))
        current.window.clear()

    async def _abandon(self, current: _Transferring) -> None:
        self._close_window(current)
        self._current = None
        await self._disk(self.installer.discard, current.update_id)
        await self._disk(self.installer.remember_offer, current.update_id, "superseded")

    async def _give_up(self, current: _Transferring, exc: UpdateRefusedError) -> None:
        """End a transfer for good: no more subscriptions, staging removed, the refusal
        reported and remembered (a redelivered offer is ignored). Remembered before staging
        goes, so that what a crash between the two leaves is removed at start."""
        self._close_window(current)
        self._current = None
        await self._refuse(current.update_id, current.manifest.label, exc)
        await self._disk(self.installer.discard, current.update_id)

    async def _refuse(
        self,
        update_id: str,
        label: str | None,
        exc: UpdateRefusedError,
        *,
        remember_as: str | None = None,
    ) -> None:
        logger.warning("model update %s refused: %s", label or update_id, exc)
        report = await self._keep(
            "model_update_refused",
            update_id=update_id,
            model=label,
            reason=exc.reason,
            detail=exc.detail,
        )
        key = remember_as or update_id
        await self._disk(self.installer.remember_offer, key, f"refused:{exc.reason}")
        await self._report(report)

    # -- chunks --------------------------------------------------------------------------------

    async def _on_chunk(self, topic: str, payload: bytes) -> None:
        current = self._current
        parts = topic.rsplit("/", 2)
        if current is None or len(parts) != 3 or parts[1] != current.update_id:
            return
        if not parts[2].isdigit():
            return
        index = int(parts[2])
        try:
            added = await self._disk(current.transfer.add, index, payload)
        except ChunkError as exc:
            # Retained, it would come back the same at every refresh until the offer expires.
            m = current.manifest
            detail = f"{exc} ({m.chunks} chunks of {m.chunk_size} bytes, {m.size} in all)"
            await self._give_up(current, UpdateRefusedError("bad_chunk", detail))
            return
        except OSError as exc:
            await self._give_up(current, UpdateRefusedError("install_failed", f"staging: {exc}"))
            return
        if index in current.window:
            current.window.discard(index)
            self._drop(topic)
        if not current.transfer.complete:
            self._fill_window(current)
        if not added:
            return
        now = time.monotonic()
        current.last_chunk = now
        complete = current.transfer.complete
        if complete or now - current.last_progress >= self.settings.progress_interval_s:
            current.last_progress = now
            received = current.transfer.received_bytes
            self._event(
                "model_update_progress",
                update_id=current.update_id,
                model=current.manifest.label,
                received_bytes=received,
                total_bytes=current.manifest.size,
                percent=round(100 * received / current.manifest.size, 1),
            )
        if complete:
            await self._finish()

    # -- install, health check, swap -----------------------------------------------------------

    async def _finish(self) -> None:
        current = self._current
        assert current is not None  # noqa: S101 - called with a transfer
        self._current = None
        self._close_window(current)
        offer, manifest = current.offer, current.manifest
        transfer_s = round(time.monotonic() - current.started, 3)
        name = manifest.name
        try:
            assembled = await self._disk(current.transfer.assemble)
            await self._disk(self._check_version, manifest)
            directory = await self._disk(self.installer.install, offer, manifest, assembled)
        except UpdateRefusedError as exc:
            await self._disk(self.installer.discard, offer.update_id)
            await self._refuse(offer.update_id, manifest.label, exc)
            return
        except (InstallError, OSError) as exc:
            await self._disk(self.installer.discard, offer.update_id)
            await self._refuse(
                offer.update_id, manifest.label, UpdateRefusedError("install_failed", str(exc))
            )
            return
        previous = await self._disk(self._running_label, name)
        try:
            if self._golden is None:
                s = self.settings
                self._golden = await self._disk(
                    golden_frames, s.golden_frames, s.golden_count, s.golden_width
                )
            report = await self._disk(
                health_check,
                await self._disk(model_ref, directory),
                [c for c in self.backends if str(c.type) in manifest.backends],
                self._golden,
                self.limits,
                state_dir=self.config.agent.state_dir,
            )
        except HealthCheckFailedError as exc:
            kept = await self._keep(
                "model_rolled_back",
                model=manifest.label,
                restored=previous,
                stage="health_check",
                reason=str(exc),
            )
            await self._disk(self.installer.rollback, name, manifest.version, str(exc))
            await self._disk(self.installer.remember_offer, offer.update_id, "rolled_back")
            await self._disk(self.installer.discard, offer.update_id)
            await self._report(kept)
            return
        await self._disk(self.installer.activate, manifest)
        await self._disk(self.installer.remember_offer, offer.update_id, "installed")
        await self._disk(self.installer.discard, offer.update_id)
        self._event(
            "model_update_installed",
            update_id=offer.update_id,
            model=manifest.label,
            previous=previous,
            backend=report.backend,
            median_ms=report.median_ms,
            transfer_s=transfer_s,
        )
        self._confirm_at[name] = time.monotonic() + self.settings.confirm_after_s
        enhance = self.config.enhance
        if self.reload is None or name not in self._enhance_models():
            return  # no pipeline, or a model it does not run (yet): nothing to swap
        try:
            running = await self.reload("update")
        except Exception as exc:
            running = None
            logger.exception("swapping to %s failed", manifest.label)
            failure = f"{type(exc).__name__}: {exc}"
        else:
            failure = f"the enhance stage runs {running or 'no model'} instead"
        if running == manifest.label or (running is not None and name != enhance.model):
            return  # (a gated model runs only in its scene condition: not checkable here)
        await self._roll_back(name, manifest.version, "swap", failure, reload=True)

    # -- timers --------------------------------------------------------------------------------

    def _next_timer(self) -> float:
        now = time.monotonic()
        deadlines = list(self._confirm_at.values())
        if self._current is not None:
            deadlines.append(self._current.last_chunk + self.settings.stall_s)
        if not deadlines:
            return 3600.0
        return max(0.01, min(deadlines) - now)

    async def _timers(self) -> None:
        now = time.monotonic()
        current = self._current
        if current is not None and now - current.last_chunk >= self.settings.stall_s:
            current.last_chunk = now
            if current.manifest.expires_at <= time.time():
                await self._abandon(current)
                await self._refuse(
                    current.update_id,
                    current.manifest.label,
                    UpdateRefusedError("expired", "expired before its transfer completed"),
                )
                return
            logger.info(
                "model update %s stalled at %d/%d chunks; asking for the rest again",
                current.update_id,
                len(current.transfer.have),
                current.manifest.chunks,
            )
            if self.subscriptions is not None:
                for index in sorted(current.window):
                    topic = self.topics.update_chunk(current.update_id, index)
                    self.subscriptions.refresh(topic)
        for name, at in list(self._confirm_at.items()):
            if now >= at:
                del self._confirm_at[name]
                confirmed = await self._disk(self.installer.confirm, name)
                if confirmed is not None:
                    self._event("model_update_confirmed", model=f"{name}@{confirmed}")
                    # The swap's own model_swapped left with the frames since; once the outbox
                    # holds both, a restart has nothing to reconcile.
                    await self._durable()
                    await self._disk(self.installer.set_reported, name, confirmed)
