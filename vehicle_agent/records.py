"""Immutable records that the pipeline stages pass to each other through bounded queues."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Image: TypeAlias = npt.NDArray[np.uint8]
"""An H×W×3 BGR frame, uint8, as OpenCV gives it."""
Grey: TypeAlias = npt.NDArray[np.uint8]
"""An H×W luma image, uint8."""

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None

STAGES = ("capture", "enhance", "analyze", "act", "uplink", "output")
"""The stages a record passes, in flow order (the names in `FrameRecord.latency`, the metrics'
`stage` label, `vehicle-agent status`)."""


def frozen_image(image: Image) -> Image:
    """Return `image` marked read-only, so a stage cannot change a frame another stage holds."""
    if image.flags.writeable:
        image = image.view()
        image.flags.writeable = False
    return image


def check_image(image: object) -> Image:
    """Refuse anything that is not an H×W×3 uint8 frame, naming what was wrong."""
    if not isinstance(image, np.ndarray):
        raise InvalidFrameError(f"frame is {type(image).__name__}, expected a numpy array")
    if image.dtype != np.uint8:
        raise InvalidFrameError(f"frame dtype is {image.dtype}, expected uint8")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidFrameError(f"frame shape is {image.shape}, expected H×W×3")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InvalidFrameError(f"frame shape is {image.shape}, too small")
    return image


class InvalidFrameError(ValueError):
    """A frame that cannot be processed (wrong type, dtype or shape)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame, stamped by the capture stage."""

    seq: int
    """Sequence number, increasing for the life of the daemon (across reconnects and loops)."""
    t_mono: float
    """`time.monotonic()` when the frame was captured, in seconds."""
    t_video: float
    """Seconds of video time: the recording's timestamp on the bench, time since start live."""
    image: Image
    source: str
    """URI of the source that delivered it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", frozen_image(check_image(self.image)))


@dataclass(frozen=True, slots=True)
class QualityMetrics:
    """Per-frame image quality, computed on a downscaled copy (0–255 scales unless noted)."""

    brightness: float
    """Mean luma."""
    contrast: float
    """Standard deviation of luma."""
    sharpness: float
    """Variance of the Laplacian of luma."""
    condition: str = "normal"
    """Scene condition, with hysteresis: 'normal', 'low_light', 'fog', 'blur' or 'rain'
    (`vehicle_agent.quality.condition`); judged on the raw frame, so enhancement never feeds
    back into it."""
    noise: float = 0.0
    """Sensor noise: standard deviation of luma on the flattest areas (Immerkær's estimate)."""
    saturation: float = 0.0
    """Mean HSV saturation."""
    clipped_shadows: float = 0.0
    """Fraction of pixels (0–1) at luma ≤ 4."""
    clipped_highlights: float = 0.0
    """Fraction of pixels (0–1) at luma ≥ 251."""
    haze: float = 0.0
    """Mean dark channel (minimum of B, G, R over 7×7 pixels): high in fog and haze."""
    brisque: float | None = None
    """No-reference BRISQUE score (lower is better, about 0–100); None when unavailable."""

    def as_dict(self) -> dict[str, float]:
        """The headline metrics (brightness, contrast, sharpness), as the fleet summary has them."""
        return {
            "brightness": self.brightness,
            "contrast": self.contrast,
            "sharpness": self.sharpness,
        }

    def as_json(self) -> dict[str, JsonValue]:
        """Every metric and the condition; `brisque` is None when it was not computed."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class AnalysisImage:
    """A frame shrunk for analysis: colour (BGR) and grey, at most the analysis width wide."""

    colour: Image
    grey: Grey


@dataclass(frozen=True, slots=True)
class Scene:
    """The raw frame as the camera sees it, judged before enhance (`QualityMonitor.judge`):
    its analysis copy, shrunk once for every judge of the raw frame (the adhesion detector
    too), and its metrics with the scene condition that gates the enhancer."""

    small: AnalysisImage
    metrics: QualityMetrics


@dataclass(frozen=True, slots=True)
class AdhesionEstimate:
    """What sits on the lens: a score in [0, 1] and the fraction of the image covered."""

    score: float
    """covered / (covered + alarm fraction): 0 clean, 0.5 at the alarm threshold, → 1."""
    covered_fraction: float
    """Fraction of the frame (0–1) on soiled tiles."""
    detected: bool = False
    """The detector's alarm (with hysteresis): something sits on the lens."""
    tile_mask: npt.NDArray[np.bool_] | None = field(default=None, compare=False, repr=False)
    """Rows × cols of the detector's tile grid, True where soiled (read-only)."""
    observable_fraction: float = 1.0
    """Fraction of the tiles with enough texture to be judged (uniform or dark areas are not)."""


@dataclass(frozen=True, slots=True)
class Actuation:
    """The actuators' state after the act stage looked at this frame."""

    fan_duty: float
    """Fan duty cycle in [0, 1]."""
    fan_driver: str = ""
    """The fan driver's name ('mcu', 'sysfs', 'none', …); empty when unknown."""
    alarms: tuple[str, ...] = ()
    """Control alarms active at this frame (`ControlLoop.alarms`)."""
    lens_service_required: bool = False
    """The cleaning retries were spent; latched until a cleaning succeeds or a command clears it."""


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """A frame on its way through the pipeline; each stage returns a copy with its part filled."""

    frame: Frame
    scene: Scene | None = None
    """The raw frame's analysis copy, metrics and condition, judged before enhance (None when
    `[quality]` is off)."""
    enhanced: Image | None = None
    enhancer: str = ""
    """Name of the backend that produced `enhanced`."""
    model: str | None = None
    """'name@version' of the model that produced `enhanced`; None when no model ran."""
    quality: QualityMetrics | None = None
    adhesion: AdhesionEstimate | None = None
    actuation: Actuation | None = None
    latency: tuple[tuple[str, float], ...] = ()
    """(stage, seconds) for every stage the record went through, in order."""

    def __post_init__(self) -> None:
        if self.enhanced is not None:
            object.__setattr__(self, "enhanced", frozen_image(check_image(self.enhanced)))

    @property
    def condition(self) -> str | None:
        """The scene condition judged on the raw frame before enhance; None when not judged."""
        return None if self.scene is None else self.scene.metrics.condition

    @property
    def output(self) -> Image:
        """The picture the vehicle shows: the enhanced frame, or the raw one when none."""
        return self.frame.image if self.enhanced is None else self.enhanced

    def replace(self, **changes: object) -> FrameRecord:
        """A copy with `changes` applied (a stage's result)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def after(self, stage: str, seconds: float, **changes: object) -> FrameRecord:
        """A copy with `changes` applied and the stage's latency appended."""
        return dataclasses.replace(
            self,
            latency=(*self.latency, (stage, seconds)),
            **changes,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, as written to `events.jsonl` and sent to the fleet."""

    type: str
    t: float
    """Seconds of video time (see `Frame.t_video`)."""
    frame: int | None = None
    """Sequence number of the frame it concerns, when it concerns one."""
    data: Mapping[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.t):
            raise ValueError(f"event {self.type!r} has a non-finite time {self.t!r}")

    def as_json(self) -> dict[str, JsonValue]:
        return {"t": round(self.t, 6), "frame": self.frame, "type": self.type, **self.data}
