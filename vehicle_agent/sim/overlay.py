"""Simulator's output side: the control state per frame and the annotated side-by-side video.

`ControlProbe` watches the act stage (an actuation observer, on the event loop) and keeps the
control loop's snapshot for each frame, so the report sinks, which run later in the output
thread, can show what the module did at that frame: temperatures, cleaning state, fan duty.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from vehicle_agent.control.loop import ControlSnapshot
from vehicle_agent.output.sinks import FrameSink, VideoWriter
from vehicle_agent.records import FrameRecord, Image

TEMPERATURE_COLUMNS = ("sensor_c", "cold_side_c", "hot_side_c")
PROBE_COLUMNS = (*TEMPERATURE_COLUMNS, "fan_readback", "cleaning_state", "thermal_level")
"""The columns `ControlProbe.columns` adds to `frames.csv`."""

KEEP_FRAMES = 4096
"""Snapshots kept: more than the queues between the act and output stages can hold."""

MASK_BGR = (40, 40, 230)
TEXT_BGR = (255, 255, 255)


class ControlProbe:
    """Keeps the control loop's snapshot for each frame the act stage finished."""

    def __init__(self, snapshot: Callable[[], ControlSnapshot | None]) -> None:
        self._snapshot = snapshot
        self._by_seq: OrderedDict[int, ControlSnapshot] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, record: FrameRecord) -> None:
        snapshot = self._snapshot()
        if snapshot is None:
            return
        with self._lock:
            self._by_seq[record.frame.seq] = snapshot
            while len(self._by_seq) > KEEP_FRAMES:
                self._by_seq.popitem(last=False)

    def get(self, seq: int) -> ControlSnapshot | None:
        with self._lock:
            return self._by_seq.get(seq)

    def columns(self, record: FrameRecord) -> Mapping[str, object]:
        """Temperatures (°C), fan readback and states at this frame; '' where unknown."""
        snapshot = self.get(record.frame.seq)
        if snapshot is None:
            return dict.fromkeys(PROBE_COLUMNS, "")
        temps = snapshot.temperatures_c
        row: dict[str, object] = {
            f"{name}_c": round(temps[name], 2) if name in temps else ""
            for name in ("sensor", "cold_side", "hot_side")
        }
        readback = snapshot.fan_readback
        row["fan_readback"] = "" if readback is None else round(readback, 3)
        row["cleaning_state"] = snapshot.cleaning_state
        row["thermal_level"] = snapshot.thermal_level or ""
        return row


def draw_tile_mask(image: Image, mask: np.ndarray) -> Image:
    """`image` with the detector's soiled tiles shaded and outlined.

    The detector tiles a downscaled copy with square tiles, centred; the same layout is drawn
    at full size, so a tile's edge may be off by a pixel or two."""
    out = image.copy()
    rows, cols = mask.shape
    height, width = image.shape[:2]
    tile = min(width / cols, height / rows)
    top, left = (height - rows * tile) / 2, (width - cols * tile) / 2
    shade = out.copy()
    for r, c in zip(*np.nonzero(mask), strict=True):
        y0, x0 = round(top + r * tile), round(left + c * tile)
        y1, x1 = round(top + (r + 1) * tile) - 1, round(left + (c + 1) * tile) - 1
        cv2.rectangle(shade, (x0, y0), (x1, y1), MASK_BGR, thickness=-1)
        cv2.rectangle(out, (x0, y0), (x1, y1), MASK_BGR, thickness=1)
    return np.asarray(cv2.addWeighted(shade, 0.35, out, 0.65, 0.0), dtype=np.uint8)


OUTLINE_OFFSETS = tuple((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)


def _text(image: Image, lines: list[str], *, origin: tuple[int, int]) -> None:
    x, y = origin
    for line in lines:
        # A dark outline first, so the text reads on any picture: the same thin text moved one
        # pixel each way. (Thicker text is not an outline: OpenCV widens each glyph's advance
        # with the thickness, so it drifts off the thin text along the line.)
        for dx, dy in OUTLINE_OFFSETS:
            cv2.putText(
                image, line, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA,
            )  # fmt: skip
        cv2.putText(image, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, TEXT_BGR, 1, cv2.LINE_AA)
        y += 18


def annotate(record: FrameRecord, snapshot: ControlSnapshot | None) -> Image:
    """Raw frame with the adhesion tile mask | enhanced frame, with the control state as text."""
    raw = record.frame.image
    adhesion = record.adhesion
    if adhesion is not None and adhesion.tile_mask is not None and adhesion.tile_mask.any():
        raw = draw_tile_mask(raw, adhesion.tile_mask)
    else:
        raw = raw.copy()
    enhanced = record.output
    if enhanced.shape != raw.shape:
        enhanced = np.asarray(cv2.resize(enhanced, (raw.shape[1], raw.shape[0])), dtype=np.uint8)
    picture = np.hstack((raw, enhanced))
    duty = record.actuation.fan_duty if record.actuation is not None else None
    left = [f"raw  t={record.frame.t_video:6.1f} s  frame {record.frame.seq}"]
    if adhesion is not None:
        flag = "DETECTED" if adhesion.detected else "clear"
        left.append(f"adhesion {adhesion.score:.2f} ({flag}, {adhesion.covered_fraction:.1%})")
    right = [f"enhanced ({record.enhancer or 'none'})"]
    right.append("fan duty " + ("-" if duty is None else f"{duty:.0%}"))
    if snapshot is not None:
        right.append(f"cleaning state: {snapshot.cleaning_state}")
        temps = snapshot.temperatures_c
        if temps:
            short = {"sensor": "sensor", "cold_side": "cold", "hot_side": "hot"}
            right.append(
                "deg C: " + "  ".join(f"{short.get(k, k)} {v:.1f}" for k, v in temps.items())
            )
    _text(picture, left, origin=(8, 20))
    _text(picture, right, origin=(raw.shape[1] + 8, 20))
    return picture


class SideBySideSink(FrameSink):
    """`side_by_side.mp4`: the annotated raw | enhanced picture of every frame."""

    def __init__(
        self, path: Path, fps: float | Callable[[], float], probe: ControlProbe | None = None
    ) -> None:
        self.probe = probe
        self._video = VideoWriter(path, fps)

    @property
    def path(self) -> Path:
        return self._video.path

    def write(self, record: FrameRecord) -> None:
        snapshot = self.probe.get(record.frame.seq) if self.probe is not None else None
        self._video.write(annotate(record, snapshot))

    def close(self) -> None:
        self._video.close()
