"""Cloud side: the fleet's frame uploads as a training data set on disk.

`python -m tools.fleet collect --out DATASET` feeds every upload message it receives to a
`DatasetWriter`; the training tools read the result with `read_dataset`. Layout:

    DATASET/
      index.jsonl            one `Entry` per frame (JSON line), appended and fsynced
      good/<vehicle>/<upload_id>.jpg
      poor/<vehicle>/<upload_id>.jpg
      partial/<upload_id>/   meta.json and chunk files of uploads not yet complete

Writes are crash-safe and resumable: chunks are kept in `partial/` as they arrive, so an upload
split across a restart of the collector completes when the rest arrives (the collector keeps a
persistent MQTT session, so the broker holds what comes meanwhile); an image is written to a
temporary file and renamed before its index line is appended, and the index is the truth (an
image without an index line is written again). Duplicates are dropped twice over: by upload id
(a QoS 1 redelivery) and by the JPEG's sha256 (the same picture uploaded again).

Several collectors may write one data set at once (`collect --share GROUP`: an MQTT 5 shared
subscription hands each message to one of them, so the meta and chunks of one upload arrive at
different instances). The pieces meet in `partial/`; whoever completes an upload stores it while
holding `DATASET/.lock` (`flock`), after reading the index lines the others have appended since
it last looked, so an upload or a picture is stored once however the messages were spread. The
folder must be one file system all instances see (a local disk, or NFSv4/EFS, which honour
`flock`).

Frames are sorted into good and poor by their quality metrics, as the patent's processing module
does: good frames are bright enough but not blown out, contrasty and sharp, in the normal scene
condition, with a clean lens. Good frames are the clean side of degraded training pairs (or the
target domain of unpaired training); poor ones are the unpaired input domain.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from vehicle_agent.uplink.topics import FrameMeta

Label = Literal["good", "poor"]
INDEX = "index.jsonl"
PARTIAL = "partial"
LOCK = ".lock"
MAX_CHUNKS = 4096
"""An upload announcing more chunks than this is refused (a 4096 × 64 KiB JPEG is 256 MiB)."""


class DatasetError(ValueError):
    """A message or a data set on disk that cannot be used; the text says which and why."""


@dataclass(frozen=True)
class SortRules:
    """What makes an uploaded frame good (the metrics are the daemon's, at its analysis width)."""

    min_brightness: float = 50.0
    max_brightness: float = 210.0
    min_contrast: float = 20.0
    min_sharpness: float = 30.0
    max_adhesion: float = 0.3
    conditions: tuple[str, ...] = ("normal",)
    """Scene conditions a good frame may have (a frame without a condition is judged on its
    metrics alone)."""

    def judge(self, meta: FrameMeta) -> tuple[Label, list[str]]:
        """'good' or 'poor', and for a poor frame every reason."""
        why: list[str] = []
        q = meta.quality
        if q is None:
            why.append("no quality metrics")
        else:
            if q.brightness < self.min_brightness:
                why.append(f"dark (brightness {q.brightness:.0f} < {self.min_brightness:g})")
            if q.brightness > self.max_brightness:
                why.append(f"bright (brightness {q.brightness:.0f} > {self.max_brightness:g})")
            if q.contrast < self.min_contrast:
                why.append(f"flat (contrast {q.contrast:.1f} < {self.min_contrast:g})")
            if q.sharpness < self.min_sharpness:
                why.append(f"blurred (sharpness {q.sharpness:.0f} < {self.min_sharpness:g})")
        if meta.condition is not None and meta.condition not in self.conditions:
            why.append(f"condition {meta.condition}")
        if meta.adhesion is not None and meta.adhesion.score > self.max_adhesion:
            why.append(f"lens soiled (adhesion {meta.adhesion.score:.2f})")
        return ("poor" if why else "good"), why


@dataclass(frozen=True)
class Entry:
    """One frame of the data set (a line of index.jsonl)."""

    upload_id: str
    vehicle_id: str
    time: float
    """Capture time, Unix seconds."""
    label: Label
    why: list[str]
    path: str
    """Image file, relative to the data set root."""
    sha256: str
    width: int
    height: int
    reason: str
    content: str
    condition: str | None
    model: str | None
    backend: str | None
    quality: dict[str, float] | None
    adhesion: dict[str, float] | None
    frame_seq: int
    t_video: float


@dataclass
class CollectStats:
    saved: int = 0
    duplicates: int = 0
    refused: int = 0
    by_label: dict[str, int] = field(default_factory=lambda: {"good": 0, "poor": 0})
    messages: int = 0
    """Upload messages fed in (of a shared data set: this writer's share)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    Path(tmp.name).replace(path)
    _fsync_dir(path.parent)


def _safe_id(text: str, what: str) -> str:
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_." for c in text):
        raise DatasetError(f"{what} {text[:70]!r} is not a safe identifier")
    if text.startswith("."):
        raise DatasetError(f"{what} {text!r} may not start with a dot")
    return text


def read_dataset(root: Path, label: Label | None = None) -> list[Entry]:
    """The entries of the data set at `root` (only `label` ones when given), oldest first."""
    index = root / INDEX
    if not index.is_file():
        raise DatasetError(f"{root}: not a data set (no {INDEX}); collect one first")
    entries = [e for e in _parse_index(index, index.read_bytes()) if label in (None, e.label)]
    return sorted(entries, key=lambda e: e.time)


def _parse_index(index: Path, data: bytes, first_line: int = 1) -> Iterator[Entry]:
    for number, line in enumerate(data.decode("utf-8").splitlines(), first_line):
        if not line.strip():
            continue
        try:
            yield Entry(**json.loads(line))
        except (ValueError, TypeError) as exc:
            # A line cut by a crash mid-append is the only expected damage: the last one.
            raise DatasetError(f"{index}:{number}: unreadable entry ({exc})") from exc


def load_images(root: Path, entries: Sequence[Entry]) -> list[npt.NDArray[np.uint8]]:
    """The entries' frames as RGB arrays (H×W×3 uint8), for the training tools."""
    images = []
    for entry in entries:
        bgr = cv2.imread(str(root / entry.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"{root / entry.path}: unreadable image in the data set")
        images.append(np.ascontiguousarray(bgr[..., ::-1], dtype=np.uint8))
    return images


def paired_data_line(name: str, provenance: dict[str, Any]) -> str:
    """The manifest's `training.data` for a model trained on a data set's good frames."""
    vehicles = ", ".join(provenance["vehicles"])
    return (
        f"fleet data set {name}: {provenance['good']} good frames (paired by degradation) "
        f"from {vehicles}"
    )


def describe(entries: Sequence[Entry]) -> dict[str, Any]:
    """Provenance for a training manifest: vehicles, time range, counts, models seen."""
    return {
        "frames": len(entries),
        "good": sum(e.label == "good" for e in entries),
        "poor": sum(e.label == "poor" for e in entries),
        "vehicles": sorted({e.vehicle_id for e in entries}),
        "time_from": min((e.time for e in entries), default=None),
        "time_to": max((e.time for e in entries), default=None),
        "models": sorted({e.model for e in entries if e.model}),
    }


class DatasetWriter:
    """Builds a data set from upload messages (`add`); one thread at a time per writer, any
    number of writers (processes, hosts) on one data set (module doc)."""

    def __init__(self, root: Path, rules: SortRules | None = None) -> None:
        self.root = root
        self.rules = rules or SortRules()
        self.stats = CollectStats()
        root.mkdir(parents=True, exist_ok=True)
        (root / PARTIAL).mkdir(exist_ok=True)
        self._ids: set[str] = set()
        self._hashes: set[str] = set()
        self._index_read = 0
        """Bytes of index.jsonl already read into `_ids` and `_hashes`."""
        self._lines_read = 0
        with self._locked():
            self._repair_index()
            self._refresh()  # also drops the chunks of uploads completed just before a crash

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the data set's lock: no other writer stores a frame or repairs the index."""
        with (self.root / LOCK).open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Take in the index lines other writers appended since the last look (whole lines
        only: one being written is read next time), and drop the pieces of their uploads that
        reached this instance late."""
        index = self.root / INDEX
        with index.open("rb") as f:
            f.seek(self._index_read)
            data = f.read()
        data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        for entry in _parse_index(index, data, self._lines_read + 1):
            self._ids.add(entry.upload_id)
            self._hashes.add(entry.sha256)
        for upload_id in self._ids.intersection(self.pending()):
            shutil.rmtree(self.root / PARTIAL / upload_id, ignore_errors=True)
        self._index_read += len(data)
        self._lines_read += data.count(b"\n")

    @property
    def frames(self) -> int:
        """Frames in the data set (done uploads, duplicates of a picture included once)."""
        return len(self._hashes)

    def _repair_index(self) -> None:
        """Drop a last line cut short by a crash (the frame comes again or is lost alone)."""
        index = self.root / INDEX
        if not index.exists():
            index.touch()
            return
        data = index.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            _write_atomic(index, keep)

    def add(self, topic: str, payload: bytes) -> Entry | None:
        """Feed one `…/<vehicle>/frames/<upload_id>/<meta|index>` message; returns the entry when
        it completed a new frame. Raises `DatasetError` for a malformed message (nothing of it
        is kept)."""
        self.stats.messages += 1
        try:
            return self._add(topic, payload)
        except DatasetError:
            self.stats.refused += 1
            raise

    def _add(self, topic: str, payload: bytes) -> Entry | None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[-3] != "frames":
            raise DatasetError(f"{topic}: not a frame upload topic")
        upload_id = _safe_id(parts[-2], "upload id")
        part = parts[-1]
        if upload_id not in self._ids:
            self._refresh()  # another collector may have stored it
        if upload_id in self._ids:
            self.stats.duplicates += int(part == "meta")
            return None
        folder = self.root / PARTIAL / upload_id
        if part == "meta":
            try:
                meta = FrameMeta.model_validate_json(payload)
            except ValidationError as exc:
                raise DatasetError(f"{topic}: bad frame meta: {exc.errors()[0]['msg']}") from exc
            if meta.upload_id != upload_id or not 0 < meta.chunks <= MAX_CHUNKS:
                raise DatasetError(
                    f"{topic}: meta names upload {meta.upload_id!r} with {meta.chunks} chunks"
                )
            _safe_id(meta.vehicle_id, "vehicle id")
            name = "meta.json"
        elif part.isdigit() and int(part) < MAX_CHUNKS:
            name = f"{int(part):05d}.chunk"
        else:
            raise DatasetError(f"{topic}: unknown part {part!r}")
        try:
            _write_atomic(folder / name, payload)
        except FileNotFoundError:  # another collector stored the upload meanwhile: a late copy
            return None
        return self._complete(upload_id, folder)

    def _complete(self, upload_id: str, folder: Path) -> Entry | None:
        if self._pieces(folder) is None:
            return None
        with self._locked():
            self._refresh()
            if upload_id in self._ids:  # another collector completed it first
                return None
            pieces = self._pieces(folder)
            return None if pieces is None else self._store(upload_id, folder, *pieces)

    @staticmethod
    def _pieces(folder: Path) -> tuple[FrameMeta, list[Path]] | None:
        """The meta and chunk files of an upload once all are on disk."""
        try:
            meta = FrameMeta.model_validate_json((folder / "meta.json").read_bytes())
        except FileNotFoundError:
            return None
        chunks = [folder / f"{i:05d}.chunk" for i in range(meta.chunks)]
        return (meta, chunks) if all(c.is_file() for c in chunks) else None

    def _store(
        self, upload_id: str, folder: Path, meta: FrameMeta, chunks: list[Path]
    ) -> Entry | None:
        data = b"".join(c.read_bytes() for c in chunks)
        if len(data) != meta.size_bytes or hashlib.sha256(data).hexdigest() != meta.sha256:
            shutil.rmtree(folder, ignore_errors=True)
            raise DatasetError(
                f"upload {upload_id}: the chunks do not match the meta's size/sha256; dropped"
            )
        if meta.sha256 in self._hashes:
            shutil.rmtree(folder, ignore_errors=True)
            self._ids.add(upload_id)
            self.stats.duplicates += 1
            return None
        label, why = self.rules.judge(meta)
        relative = Path(label) / meta.vehicle_id / f"{upload_id}.jpg"
        _write_atomic(self.root / relative, data)
        entry = Entry(
            upload_id=upload_id,
            vehicle_id=meta.vehicle_id,
            time=meta.time,
            label=label,
            why=why,
            path=relative.as_posix(),
            sha256=meta.sha256,
            width=meta.width,
            height=meta.height,
            reason=meta.reason,
            content=meta.content,
            condition=meta.condition,
            model=meta.model,
            backend=meta.backend,
            quality=None if meta.quality is None else meta.quality.model_dump(),
            adhesion=None if meta.adhesion is None else meta.adhesion.model_dump(),
            frame_seq=meta.frame_seq,
            t_video=meta.t_video,
        )
        line = (json.dumps(asdict(entry), separators=(",", ":")) + "\n").encode()
        with (self.root / INDEX).open("ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._index_read += len(line)  # under the lock: nobody else appended since _refresh
        self._lines_read += 1
        shutil.rmtree(folder, ignore_errors=True)
        self._ids.add(upload_id)
        self._hashes.add(meta.sha256)
        self.stats.saved += 1
        self.stats.by_label[label] += 1
        return entry

    def pending(self) -> Iterator[str]:
        """Upload ids with chunks waiting in `partial/`."""
        return (p.name for p in sorted((self.root / PARTIAL).iterdir()) if p.is_dir())
