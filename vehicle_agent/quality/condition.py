"""Analyze stage: the scene condition (normal, low light, fog, blur, rain) with hysteresis (pure).

`classify` judges one frame's metrics; thresholds differ for entering and leaving a condition,
so a metric hovering at a threshold does not toggle it. `ConditionTracker` adds time: a new
condition must hold for a while (frame time, not wall time) before it is reported.

Thresholds were read off real photographs and their degraded copies (blur: Gaussian σ 4 px at
768 px wide; fog: 55 % veil; dark: ×0.15), measured at 320 px wide:

- low light: mean luma below 90 (leave above 105). This one was chosen on the footage bank's
  train split (enter 50–100 swept, the default chain scored on every row; docs/benchmarks.md,
  "restore 1.3.0"): below it the gated restore model runs, and it leaves frames it cannot help;
- fog / haze: low contrast and low saturation with a dark channel close to the mean luma (the
  haze veil lifts the darkest pixels), on a picture that is not dark;
- blur: Laplacian variance small for the picture's contrast (sharpness / contrast² below 0.03;
  sharp street and nature photos measure 0.13–0.75, blurred copies 0.002–0.012);
- rain: the adhesion detector reports something on the lens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from vehicle_agent.records import QualityMetrics

Condition = Literal["normal", "low_light", "fog", "blur", "rain"]
CONDITIONS: tuple[Condition, ...] = get_args(Condition)


@dataclass(frozen=True, slots=True)
class ConditionThresholds:
    """Enter/leave thresholds of each condition (0–255 luma scales unless noted)."""

    low_light_enter: float = 90.0
    low_light_exit: float = 105.0
    fog_contrast_enter: float = 35.0
    fog_contrast_exit: float = 42.0
    fog_haze_enter: float = 0.75
    """Dark channel / mean luma at or above which the picture looks hazy."""
    fog_haze_exit: float = 0.65
    fog_saturation_enter: float = 70.0
    fog_saturation_exit: float = 85.0
    fog_min_brightness: float = 80.0
    blur_enter: float = 0.03
    """Laplacian variance / contrast² below which the picture looks blurred."""
    blur_exit: float = 0.05
    blur_min_contrast: float = 10.0
    """Below this contrast (a uniform or black picture) sharpness means nothing."""


DEFAULT_THRESHOLDS = ConditionThresholds()


def classify(
    metrics: QualityMetrics,
    current: str | None = None,
    adhesion_detected: bool = False,
    thresholds: ConditionThresholds = DEFAULT_THRESHOLDS,
) -> Condition:
    """The condition `metrics` show; `current` selects the leave thresholds for itself.

    Priority: low light, rain, fog, blur, normal (a dark picture is judged dark first).
    """
    th = thresholds
    m = metrics
    dark_limit = th.low_light_exit if current == "low_light" else th.low_light_enter
    if m.brightness < dark_limit:
        return "low_light"
    if adhesion_detected:
        return "rain"
    fog = current == "fog"
    hazy = m.haze >= (th.fog_haze_exit if fog else th.fog_haze_enter) * m.brightness
    flat = m.contrast < (th.fog_contrast_exit if fog else th.fog_contrast_enter)
    grey = m.saturation < (th.fog_saturation_exit if fog else th.fog_saturation_enter)
    if hazy and flat and grey and m.brightness >= th.fog_min_brightness:
        return "fog"
    if m.contrast >= th.blur_min_contrast:
        limit = th.blur_exit if current == "blur" else th.blur_enter
        if m.sharpness < limit * m.contrast * m.contrast:
            return "blur"
    return "normal"


class ConditionTracker:
    """The reported scene condition: a new one must hold `hold_s` of frame time first
    (`low_light_hold_s` for entering low light, which the brightness thresholds already
    separate well). The first frame's condition is taken at once. One thread drives it."""

    def __init__(
        self,
        thresholds: ConditionThresholds = DEFAULT_THRESHOLDS,
        hold_s: float = 1.0,
        low_light_hold_s: float = 0.2,
    ) -> None:
        self.thresholds = thresholds
        self.hold_s = hold_s
        self.low_light_hold_s = low_light_hold_s
        self.condition: Condition | None = None
        self._pending: Condition | None = None
        self._since = 0.0
        self._last_t: float | None = None

    def update(
        self, metrics: QualityMetrics, t: float, adhesion_detected: bool = False
    ) -> Condition:
        """The condition after a frame at video time `t` with these metrics."""
        raw = classify(metrics, self.condition, adhesion_detected, self.thresholds)
        if self._last_t is not None and t < self._last_t:
            self._pending = None  # time went back (a new recording): start the wait again
        self._last_t = t
        if self.condition is None:
            self.condition = raw
            return raw
        if raw == self.condition:
            self._pending = None
            return raw
        if raw != self._pending:
            self._pending, self._since = raw, t
        hold = self.low_light_hold_s if raw == "low_light" else self.hold_s
        if t - self._since >= hold:
            self.condition, self._pending = raw, None
        return self.condition
