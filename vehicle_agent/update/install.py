"""Model updates, on disk: staging, atomic install, the active pointer, rollback, the version ledger.

Everything lives in `<agent.state_dir>/models/`, the model store's update folder:

    <name>                      symlink → .versions/<name>/<version>: the active pointer
                                (absent: the shipped model runs)
    .versions/<name>/<version>/ model.onnx, manifest.json, update.json (the signed offer)
    .staging/<update_id>/       offer.json, chunks/<index> (see transfer.py)
    .staging/outcomes.json      offers already handled (a redelivery is ignored)
    .staging/reports.json       events not yet in the fleet link's outbox (absent when none)
    .ledger.json                versions installed, bad versions, the trial after a swap, the
                                version of each model last reported running

Each step is atomic: a file is written beside its target, fsynced, renamed over it, and the
directory fsynced; the pointer is a new symlink renamed over the old one. So a `kill -9` or a
power cut at any point leaves the old model or the new one active, never neither, never a mix;
`recover()` at start removes what a crash left half made. Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vehicle_agent.enhance.manifest import (
    MANIFEST_FILE,
    ManifestError,
    read_manifest,
    verify_file,
)
from vehicle_agent.update.manifest import (
    SignedUpdate,
    UpdateManifest,
    UpdateRefusedError,
    version_key,
)

logger = logging.getLogger(__name__)

VERSIONS = ".versions"
STAGING = ".staging"
LEDGER = ".ledger.json"
OUTCOMES = "outcomes.json"
"""In staging: offers already handled, so a redelivered one is ignored (refusals write here
only, never outside staging)."""
REPORTS = "reports.json"
"""In staging: the `Report`s kept until the outbox holds them."""
OFFER_FILE = "offer.json"
UPDATE_FILE = "update.json"
TMP_MARK = ".tmp-"
MAX_REMEMBERED_OFFERS = 64
MAX_REPORTS = 32


class InstallError(Exception):
    """The disk refused a step of an install or a rollback; `path` says where."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Report:
    """An event the operator's tools wait for, kept in the ledger until the outbox holds it (so
    a kill in between emits it again at the next start: at least once)."""

    type: str
    data: dict[str, Any]
    id: str = ""


class ModelInstaller:
    """The update folder of the model store: install, activate, roll back, confirm."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / VERSIONS
        self.staging_root = root / STAGING
        self.ledger_path = root / LEDGER
        self.outcomes_path = self.staging_root / OUTCOMES
        self.reports_path = self.staging_root / REPORTS

    # -- ledger --------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        try:
            data: Any = json.loads(self.ledger_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"v": 1, "models": {}, "reports": [], "reported": {}}
        except (OSError, ValueError) as exc:
            # Written atomically, so only a broken disk gets here: start over, but say so.
            logger.error(  # noqa: TRY400 - the reason is the message
                "model update ledger %s unreadable (%s); starting a new one", self.ledger_path, exc
            )
            return {"v": 1, "models": {}, "reports": [], "reported": {}}
        if not isinstance(data, dict):
            return {"v": 1, "models": {}, "reports": [], "reported": {}}
        data.setdefault("models", {})
        data.setdefault("reports", [])
        data.setdefault("reported", {})
        return data

    def _save(self, ledger: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        del ledger["reports"][:-MAX_REPORTS]
        write_atomic(self.ledger_path, json.dumps(ledger, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        ledger = self.ledger()
        yield ledger
        self._save(ledger)

    @staticmethod
    def _model(ledger: dict[str, Any], name: str) -> dict[str, Any]:
        entry: dict[str, Any] = ledger["models"].setdefault(
            name, {"highest": None, "bad": [], "trial": None}
        )
        return entry

    def _outcomes(self) -> dict[str, str]:
        try:
            data: Any = json.loads(self.outcomes_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def offer_outcome(self, update_id: str) -> str | None:
        return self._outcomes().get(update_id)

    def remember_offer(self, update_id: str, outcome: str) -> None:
        outcomes = self._outcomes()
        outcomes.pop(update_id, None)
        outcomes[update_id] = outcome
        while len(outcomes) > MAX_REMEMBERED_OFFERS:
            outcomes.pop(next(iter(outcomes)))  # insertion order: the oldest first
        self.staging_root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.outcomes_path, json.dumps(outcomes, indent=1).encode())

    def _kept_reports(self) -> list[dict[str, Any]]:
        try:
            data: Any = json.loads(self.reports_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            logger.error("kept reports %s unreadable (%s); dropped", self.reports_path, exc)  # noqa: TRY400
            return []
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    def _keep_reports(self, reports: list[dict[str, Any]]) -> None:
        if reports:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.reports_path, json.dumps(reports[-MAX_REPORTS:], indent=1).encode())
        elif self.reports_path.exists():
            self.reports_path.unlink()
            fsync_dir(self.staging_root)

    def add_report(self, report: Report) -> Report:
        """Keep `report` until `drop_reports` (returned with its id). Kept in staging: a
        refusal writes nothing outside it."""
        kept = Report(report.type, dict(report.data), report.id or uuid.uuid4().hex[:12])
        reports = self._kept_reports()
        reports.append({"id": kept.id, "type": kept.type, "data": kept.data})
        self._keep_reports(reports)
        return kept

    def pending_reports(self) -> list[Report]:
        """Reports kept and not yet dropped, oldest first (those an older daemon kept in the
        ledger first)."""
        return [
            Report(str(r["type"]), dict(r["data"]), str(r.get("id", "")))
            for r in [*self.ledger()["reports"], *self._kept_reports()]
        ]

    def drop_reports(self, ids: Collection[str]) -> None:
        """Forget the reports `ids` (the outbox holds them now)."""
        ledger = self.ledger()
        if ledger["reports"]:
            ledger["reports"] = [r for r in ledger["reports"] if str(r.get("id", "")) not in ids]
            self._save(ledger)
        reports = self._kept_reports()
        kept = [r for r in reports if str(r.get("id", "")) not in ids]
        if len(kept) != len(reports):
            self._keep_reports(kept)

    def take_reports(self) -> list[Report]:
        """The pending reports, dropped at once (for callers that need no outbox)."""
        reports = self.pending_reports()
        if reports:
            self.drop_reports({r.id for r in reports})
        return reports

    def reported(self) -> dict[str, str]:
        """Model name → the version last reported to the fleet as the one running."""
        return {str(k): str(v) for k, v in self.ledger()["reported"].items()}

    def set_reported(self, name: str, version: str) -> None:
        with self._editing() as ledger:
            ledger["reported"][name] = version

    def trial(self, name: str) -> dict[str, Any] | None:
        entry = self.ledger()["models"].get(name)
        return dict(entry["trial"]) if entry and entry.get("trial") else None

    def trials(self) -> dict[str, dict[str, Any]]:
        return {
            name: dict(entry["trial"])
            for name, entry in self.ledger()["models"].items()
            if entry.get("trial")
        }

    # -- pointer -------------------------------------------------------------------------------

    def pointer(self, name: str) -> Path:
        return self.root / name

    def active_version(self, name: str) -> str | None:
        """The version the pointer names, or None when there is no pointer (shipped model)."""
        link = self.pointer(name)
        if not link.is_symlink():
            return None
        return link.readlink().name

    def version_dir(self, name: str, version: str) -> Path:
        return self.versions / name / version

    def _point(self, name: str, version: str | None) -> None:
        """Swap the pointer atomically: a new symlink renamed over the old one (or unlinked)."""
        link = self.pointer(name)
        if version is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}{TMP_MARK}{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(Path(VERSIONS) / name / version)
            tmp.replace(link)
        fsync_dir(self.root)

    # -- checks --------------------------------------------------------------------------------

    def check_version(self, manifest: UpdateManifest, running: str | None) -> None:
        """Rollback protection: refuse a version not newer than the installed one (`running`:
        the version the model store resolves now, shipped included) or one marked bad."""
        entry = self.ledger()["models"].get(manifest.name, {})
        if manifest.version in entry.get("bad", []):
            raise UpdateRefusedError(
                "bad_version", f"{manifest.label} failed before and is marked bad"
            )
        floor = [
            v for v in (entry.get("highest"), self.active_version(manifest.name), running) if v
        ]
        newest = max(floor, key=version_key, default=None)
        if newest is not None and manifest.version_key() <= version_key(newest):
            raise UpdateRefusedError(
                "not_newer", f"{manifest.label} is not newer than the installed {newest}"
            )

    # -- staging and install -------------------------------------------------------------------

    def staging(self, update_id: str) -> Path:
        return self.staging_root / update_id

    def stage_offer(self, offer: SignedUpdate) -> Path:
        directory = self.staging(offer.update_id)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / OFFER_FILE, offer.to_bytes())
        fsync_dir(self.staging_root)
        return directory

    def staged_offers(self) -> list[SignedUpdate]:
        found = []
        for path in sorted(self.staging_root.glob(f"*/{OFFER_FILE}")):
            try:
                found.append(SignedUpdate.model_validate_json(path.read_bytes()))
            except (OSError, ValueError):
                logger.warning("dropping unreadable staged offer %s", path.parent)
                _remove(path.parent)
        return found

    def discard(self, update_id: str) -> None:
        _remove(self.staging(update_id))

    def clean_staging(self) -> list[str]:
        """Remove what a crash during a staging cleanup left: a folder without its offer (empty,
        or chunks only), one whose offer was handled already (installed, refused, rolled back,
        superseded), and anything else but the outcomes and reports files. Returns the names removed."""
        if not self.staging_root.is_dir():
            return []
        outcomes = self._outcomes()
        removed = []
        for path in sorted(self.staging_root.iterdir()):
            if path.name in {OUTCOMES, REPORTS}:
                continue
            if path.is_dir() and not path.is_symlink():
                offer = path / OFFER_FILE
                if offer.is_file() and path.name not in outcomes:
                    continue
            _remove(path)
            removed.append(path.name)
        if removed:
            logger.info("removed staging leftovers: %s", ", ".join(removed))
            fsync_dir(self.staging_root)
        return removed

    def install(self, offer: SignedUpdate, manifest: UpdateManifest, onnx_file: Path) -> Path:
        """Move a verified file into `.versions/<name>/<version>/` with its manifest and the
        offer, atomically (a directory rename). Not active yet: see `activate`."""
        target = self.version_dir(manifest.name, manifest.version)
        package = self.staging(offer.update_id) / f"package{TMP_MARK}{os.getpid()}"
        try:
            _remove(package)
            package.mkdir(parents=True)
            onnx_file.replace(package / "model.onnx")
            model = manifest.model_manifest()
            text = json.dumps(model.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
            write_atomic(package / MANIFEST_FILE, text.encode())
            write_atomic(package / UPDATE_FILE, offer.to_bytes())
            with (package / "model.onnx").open("rb") as f:
                os.fsync(f.fileno())
            fsync_dir(package)
            verify_file(package, read_manifest(package))
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.active_version(manifest.name) == manifest.version:
                raise InstallError(target, "this version is active; refusing to overwrite it")
            _remove(target)
            package.replace(target)
            fsync_dir(target.parent)
        except (OSError, ManifestError) as exc:
            _remove(package)
            raise InstallError(target, f"{type(exc).__name__}: {exc}") from exc
        return target

    def activate(self, manifest: UpdateManifest) -> str | None:
        """Make an installed version the active one: the trial is recorded first (so a crash
        loop after the swap can be undone), then the pointer swapped. Returns the previous
        pointer's version (None: the shipped model)."""
        name = manifest.name
        previous = self.active_version(name)
        with self._editing() as ledger:
            self._model(ledger, name)["trial"] = {
                "version": manifest.version,
                "previous": previous,
                "crashes": 0,
                "running": True,
                "since": round(time.time(), 3),
            }
        self._point(name, manifest.version)
        return previous

    def confirm(self, name: str) -> str | None:
        """The trial version ran long enough: it becomes the rollback floor; older versions
        other than the previous one are removed. Returns the confirmed version."""
        with self._editing() as ledger:
            entry = self._model(ledger, name)
            trial = entry.get("trial")
            if not trial or self.active_version(name) != trial["version"]:
                entry["trial"] = None
                return None
            entry["trial"] = None
            # What a later withdrawal of this version goes back to (its trial is over).
            entry["confirmed"] = {"version": trial["version"], "previous": trial.get("previous")}
            highest = entry.get("highest")
            if highest is None or version_key(trial["version"]) > version_key(highest):
                entry["highest"] = trial["version"]
            keep = {trial["version"], trial.get("previous")}
        for old in (self.versions / name).glob("*"):
            if old.name not in keep:
                _remove(old)
        return str(trial["version"])

    def rollback(self, name: str, version: str, reason: str) -> str | None:
        """Undo the swap to `version` (if it is active) and mark it bad. Returns the version
        the pointer names afterwards (None: the shipped model).

        In three durable steps, each safe to be cut by a crash: the version is marked bad (the
        trial kept, so `recover` finishes the rollback), the pointer swapped back, the trial
        ended."""
        with self._editing() as ledger:
            entry = self._model(ledger, name)
            trial = entry.get("trial") or {}
            if version not in entry["bad"]:
                entry["bad"].append(version)
        confirmed = entry.get("confirmed") or {}
        if trial.get("version") == version:
            previous = trial.get("previous")
        elif confirmed.get("version") == version:
            previous = confirmed.get("previous")  # withdrawn after it was confirmed
        else:
            previous = None
        if self.active_version(name) == version:
            restore = previous
            if restore is not None and not self.version_dir(name, restore).is_dir():
                restore = None
            self._point(name, restore)
        with self._editing() as ledger:
            entry = self._model(ledger, name)
            if (entry.get("trial") or {}).get("version") == version:
                entry["trial"] = None
        logger.warning("model %s@%s rolled back: %s", name, version, reason)
        _remove(self.version_dir(name, version))
        return self.active_version(name)

    def mark_bad(self, name: str, version: str) -> None:
        with self._editing() as ledger:
            bad = self._model(ledger, name)["bad"]
            if version not in bad:
                bad.append(version)

    def mark_clean_exit(self) -> None:
        """A clean shutdown during a trial does not count as a crash at the next start."""
        self._set_running(running=False)

    def mark_running(self) -> None:
        """A run (again, after a pipeline restart in the same process) during a trial."""
        self._set_running(running=True)

    def _set_running(self, *, running: bool) -> None:
        ledger = self.ledger()
        changed = False
        for entry in ledger["models"].values():
            trial = entry.get("trial")
            if trial and bool(trial.get("running")) != running:
                trial["running"] = running
                changed = True
        if changed:
            self._save(ledger)

    # -- start-up ------------------------------------------------------------------------------

    def recover(self, max_crashes: int) -> list[Report]:
        """At start, before any model loads: remove half-made files, end trials whose swap never
        happened, count a crash for each trial whose previous run did not end cleanly, and roll
        back those that crashed `max_crashes` times. Returns the rollbacks (also kept in the
        ledger for the fleet link)."""
        if not self.root.is_dir():
            return []
        for leftover in self.root.rglob(f"*{TMP_MARK}*"):
            _remove(leftover)
        self.clean_staging()
        ledger = self.ledger()
        reports: list[Report] = []
        for name, entry in ledger["models"].items():
            trial = entry.get("trial")
            if not trial:
                continue
            if self.active_version(name) != trial["version"]:
                entry["trial"] = None  # crashed before the swap: the old model stayed
                continue
            if trial["version"] in entry.get("bad", []):
                # A rollback was cut short after marking it bad: finish it.
                reports.append(
                    Report(
                        "model_rolled_back",
                        {
                            "model": f"{name}@{trial['version']}",
                            "restored": trial.get("previous"),
                            "stage": "swap",
                            "reason": "a rollback was interrupted; finished at start",
                        },
                    )
                )
                continue
            if trial.get("running"):
                trial["crashes"] = int(trial.get("crashes", 0)) + 1
            trial["running"] = True
            if trial["crashes"] >= max_crashes:
                reports.append(
                    Report(
                        "model_rolled_back",
                        {
                            "model": f"{name}@{trial['version']}",
                            "restored": trial.get("previous"),
                            "stage": "crash_loop",
                            "reason": f"the daemon stopped {trial['crashes']} times without a "
                            "clean shutdown after the swap",
                        },
                    )
                )
        self._save(ledger)
        for report in reports:
            name, _, version = str(report.data["model"]).partition("@")
            self.add_report(report)  # first: a kill during the rollback still reports it
            restored = self.rollback(name, version, str(report.data["reason"]))
            report.data["restored"] = f"{name}@{restored}" if restored else None
        # Versions no pointer, trial or rollback target names (an install cut short).
        ledger = self.ledger()
        for name_dir in self.versions.glob("*"):
            entry = ledger["models"].get(name_dir.name) or {}
            trial = entry.get("trial") or {}
            keep = {self.active_version(name_dir.name), trial.get("previous")}
            for version_dir in name_dir.glob("*"):
                if version_dir.name not in keep:
                    _remove(version_dir)
        return reports
