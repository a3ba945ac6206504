"""Analyze stage: `LearnedAdhesionDetector`, lens soiling found per tile by a small learned CNN.

In the spirit of Valeo's TiledSoilingNet (WoodScape): the analysis copy of the raw frame is
shrunk to the network's width and each 8×8-pixel tile is classified as clean, transparent
soiling (water drops, mist), semi-transparent (dust) or opaque (mud). A single frame cannot tell
a smooth wall from a drop, so the network is fed **temporal evidence** beside the picture
(`SoilFeatures`): a running mean of recent frames, the difference of the frame from it, how much
each pixel changed lately (over half a second and over seconds) and the global motion. What
stays put while the world moves is soiling; when the whole picture stands still (the vehicle
waits at lights) the motion channels say so and the network was trained not to alarm on it.

"Smooth and static" alone is also what a clear sky, a blank wall or a dark pole look like, so the
features carry each place's **onset evidence** too: a long-horizon reference of how textured and
how bright that part of the picture has been over the last tens of seconds (the texture reference
rises within a second and decays over half a minute, a slowly decaying max-hold), and how much
texture and brightness it has lost against that reference now. A drop or mud makes a place that
was textured smooth or dark; a sky tile was always smooth and loses nothing.

On a moving camera the strongest evidence is **edge persistence**: averaged over half a second
or a second, the passing world blurs to nothing while the rim of a drop or the edge of a mud
patch stays as sharp as in each frame. The features carry the texture left in that average as a
share of the frames' own texture, and the texture the average removed. Measured on train
scenes and renderers (per-tile AUC over the first seconds after onset, camera moving), these
channels separate mud 0.96–0.98 and drops 0.80–0.92, where the best v2 channel reached 0.90
and 0.76.

The per-tile soiling log-odds are smoothed over time and thresholded with hysteresis
(`TileDecision`); the thresholds come from the model's manifest, where training calibrated them
on its own validation drives (none is set by hand on a clip). `adhesion_detected` and
`adhesion_cleared` still come from the cleaning policy, from `AdhesionEstimate.detected`.

The network itself is a callable (`TileNet`: features in, per-tile class probabilities out), so
this module stays pure; `vehicle_agent.quality.soilnet_runtime` runs it with onnxruntime or
TensorRT. Training: `python -m tools.soilnet` (docs/training.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.records import AdhesionEstimate, Image

FEATURE_VERSION = 3
"""Bumped whenever `SoilFeatures` computes something else: a model records the version it was
trained with and is refused by a detector that computes another. v2: the onset (reference)
channels 10–15. v3: the edge-persistence channels 16–19."""
CHANNELS = 20
GAIN_INVARIANT: tuple[int, ...] = (11, 15, 16, 18)
"""Channels that are ratios and do not scale with the frame's intensity (all the others are
linear in it, up to the clip at 4): training's gain augmentation leaves these alone."""
TILE = 8
"""Pixels per tile side at the network's input (its output stride)."""
CLASSES: tuple[str, ...] = ("clean", "transparent", "semi_transparent", "opaque")

FeatureMap = npt.NDArray[np.float32]
"""C×H×W float32."""
TileNet = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
"""1×C×H×W features → 1×len(CLASSES)×(H/TILE)×(W/TILE) class probabilities."""

# Time constants of the temporal features, seconds. They define the features (a model is trained
# on them), not decisions: changing one means a new FEATURE_VERSION and a retrained model.
_FAST_MEAN_S = 0.25
_SLOW_MEAN_S = 3.0
_FAST_ACTIVITY_S = 0.5
_SLOW_ACTIVITY_S = 4.0
_ACTIVITY_GAIN = 8.0  # |change| of 1/8 of full scale reads 1.0
_LAPLACIAN_GAIN = 4.0
_TEXTURE_RISE_S = 1.0
"""The texture reference follows more texture within about a second..."""
_TEXTURE_FALL_S = 30.0
"""...and forgets it over half a minute (a slowly decaying max-hold): it says how textured this
place has lately been, so a place that just turned smooth is told from one that always was."""
_TEXTURE_NOW_S = 0.3
"""The current texture is smoothed over this much (a passing smooth patch is brief; soiling
stays)."""
_BRIGHTNESS_REF_S = 20.0
_BRIGHTNESS_BOX = 5
"""Brightness is compared as the mean over this many pixels square (at the network's input);
texture per pixel of channel 7 (already a 3×3 mean): wider, a blob's own rim counts as the
texture of its middle."""
_TEXTURE_FLOOR = 0.1
"""Added to the reference in the texture-loss ratio (in channel 7's units, below sensor noise
on a flat patch): a place with next to no texture to lose reads no loss."""
_BRIGHTNESS_GAIN = 4.0
_PERSIST_S: tuple[float, float] = (0.5, 1.0)
"""Horizons of the edge-persistence channels: the texture of the frame averaged over this long,
against the average texture of the frames. While the camera moves, averaging blurs the world
away, but what sits on the lens keeps its edges."""
_PERSIST_FLOOR = 0.05
"""Added to the average texture in the persistence ratio (channel 7's units, about sensor noise
on a flat patch): a featureless place reads no persistence rather than noise over noise."""


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


def _texture(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Local texture: the Laplacian's magnitude over 3×3 pixels, scaled (channel 7)."""
    laplacian = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))
    return np.asarray(cv2.blur(laplacian, (3, 3)) * np.float32(_LAPLACIAN_GAIN), np.float32)


def net_size(height: int, width: int, net_width: int) -> tuple[int, int]:
    """(height, width) of the network's input for a frame of this size: `net_width` wide, the
    height following the aspect ratio, both multiples of `TILE`."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size {width}×{height} is empty")
    if net_width % TILE or net_width < 4 * TILE:
        raise ValueError(f"network width {net_width} is not a multiple of {TILE} ≥ {4 * TILE}")
    rows = max(4, round(net_width * height / width / TILE))
    return rows * TILE, net_width


class SoilFeatures:
    """The network's input, frame after frame: the picture plus what changed in it lately.

    Channels (all ~0–1, clipped to 0–4): 0–2 blue, green, red; 3 the slow running mean of the
    grey frame; 4 the grey frame's distance from it; 5, 6 recent change over half a second and
    over seconds; 7 local Laplacian magnitude; 8, 9 the frame-wide means of the two change
    channels (global motion). Onset evidence: 10 the texture reference (local texture, a slowly
    decaying max-hold); 11 texture lost against it, as a share of it (0–1); 12 the brightness
    reference (local grey level over tens of seconds); 13 darker than it; 14 brighter than it;
    15 the frame-wide mean of channel 11 (light falling everywhere, as in a tunnel, is not a
    drop). Edge persistence, over half a second (16, 17) and a second (18, 19): the local
    texture of the running mean of the frames as a share of the running mean of their texture
    (16, 18; 0–1: near 1 where the picture stands still, near 0 where textured content moves
    past), and the texture averaging removed (17, 19; high where the world moves, nil on the
    lens and on featureless places).
    """

    def __init__(self, net_width: int = 192) -> None:
        self.net_width = net_width
        self.reset()

    def reset(self) -> None:
        self._size: tuple[int, int] | None = None
        self._t: float | None = None
        self._fast = np.zeros((0, 0), np.float32)
        self._slow = np.zeros((0, 0), np.float32)
        self._act_fast = np.zeros((0, 0), np.float32)
        self._act_slow = np.zeros((0, 0), np.float32)
        self._texture_now = np.zeros((0, 0), np.float32)
        self._texture_ref = np.zeros((0, 0), np.float32)
        self._bright_ref = np.zeros((0, 0), np.float32)
        self._persist_mean = [np.zeros((0, 0), np.float32) for _ in _PERSIST_S]
        self._persist_texture = [np.zeros((0, 0), np.float32) for _ in _PERSIST_S]

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of the features, once a frame was seen."""
        return self._size

    def update(self, colour: Image, t: float) -> FeatureMap:
        """Features after the frame `colour` (H×W×3 uint8 BGR, any size) at video time `t`."""
        height, width = net_size(colour.shape[0], colour.shape[1], self.net_width)
        small = cv2.resize(colour, (width, height), interpolation=cv2.INTER_AREA)
        bgr = np.asarray(small, np.float32) * np.float32(1 / 255)
        grey = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), np.float32)
        laplacian = _texture(grey)
        texture = laplacian
        bright = np.asarray(cv2.blur(grey, (_BRIGHTNESS_BOX, _BRIGHTNESS_BOX)), np.float32)
        first = self._size != (height, width) or self._t is None or t < self._t
        if first:
            self._size = (height, width)
            self._fast = grey.copy()
            self._slow = grey.copy()
            self._act_fast = np.zeros_like(grey)
            self._act_slow = np.zeros_like(grey)
            self._texture_now = texture.copy()
            self._texture_ref = texture.copy()
            self._bright_ref = bright.copy()
            self._persist_mean = [grey.copy() for _ in _PERSIST_S]
            self._persist_texture = [laplacian.copy() for _ in _PERSIST_S]
            dt = 0.0
        else:
            dt = t - (t if self._t is None else self._t)
        self._t = t
        if dt > 0:
            self._fast += np.float32(_alpha(dt, _FAST_MEAN_S)) * (grey - self._fast)
            self._slow += np.float32(_alpha(dt, _SLOW_MEAN_S)) * (grey - self._slow)
            change_fast = np.abs(grey - self._fast)
            change_slow = np.abs(grey - self._slow)
            self._act_fast += np.float32(_alpha(dt, _FAST_ACTIVITY_S)) * (
                change_fast - self._act_fast
            )
            self._act_slow += np.float32(_alpha(dt, _SLOW_ACTIVITY_S)) * (
                change_slow - self._act_slow
            )
            self._texture_now += np.float32(_alpha(dt, _TEXTURE_NOW_S)) * (
                texture - self._texture_now
            )
            step = self._texture_now - self._texture_ref
            rate = np.where(
                step > 0,
                np.float32(_alpha(dt, _TEXTURE_RISE_S)),
                np.float32(_alpha(dt, _TEXTURE_FALL_S)),
            )
            self._texture_ref += rate * step
            self._bright_ref += np.float32(_alpha(dt, _BRIGHTNESS_REF_S)) * (
                bright - self._bright_ref
            )
            for k, tau in enumerate(_PERSIST_S):
                weight = np.float32(_alpha(dt, tau))
                self._persist_mean[k] += weight * (grey - self._persist_mean[k])
                self._persist_texture[k] += weight * (laplacian - self._persist_texture[k])
        out = np.empty((CHANNELS, height, width), np.float32)
        out[0:3] = bgr.transpose(2, 0, 1)
        out[3] = self._slow
        out[4] = np.abs(grey - self._slow) * np.float32(_ACTIVITY_GAIN / 2)
        out[5] = self._act_fast * np.float32(_ACTIVITY_GAIN)
        out[6] = self._act_slow * np.float32(_ACTIVITY_GAIN)
        out[7] = laplacian
        out[8] = float(out[5].mean())
        out[9] = float(out[6].mean())
        out[10] = self._texture_ref
        loss = np.maximum(self._texture_ref - self._texture_now, 0.0)
        out[11] = loss / (self._texture_ref + np.float32(_TEXTURE_FLOOR))
        out[12] = self._bright_ref
        shift = (bright - self._bright_ref) * np.float32(_BRIGHTNESS_GAIN)
        out[13] = np.maximum(-shift, 0.0)
        out[14] = np.maximum(shift, 0.0)
        out[15] = float(out[11].mean())
        for i, (mean, tex) in enumerate(
            zip(self._persist_mean, self._persist_texture, strict=True)
        ):
            kept = _texture(mean)
            out[16 + 2 * i] = kept / (tex + np.float32(_PERSIST_FLOOR))
            out[17 + 2 * i] = np.maximum(tex - kept, 0.0)
        np.clip(out, 0.0, 4.0, out=out)
        return out


@dataclass(frozen=True, slots=True)
class DecisionParams:
    """How per-tile probabilities become soiled tiles and the alarm. The probability thresholds
    come from the model's manifest (calibrated in training); the alarm fractions from
    `[adhesion]`."""

    on: float = 0.6
    """A tile becomes soiled when its smoothed soiling probability reaches this..."""
    off: float = 0.35
    """...and clean again when it falls below this."""
    smooth_s: float = 0.3
    """Time constant of the per-tile smoothing of the soiling log-odds, seconds."""
    warmup_s: float = 1.5
    """Nothing is flagged before the temporal features have this much history."""
    alarm_fraction: float = 0.005
    """`detected` rises when this share of the frame is on soiled tiles..."""
    clear_fraction: float = 0.0025
    """...and falls below this."""


def hysteresis_off(on: float) -> float:
    """The `off` line that goes with an `on` line: a band of 0.25 below it, never under 0.15
    (the rule training's calibration writes into a manifest)."""
    return round(max(0.15, on - 0.25), 3)


_LOGIT_LIMIT = 8.0
"""The network's per-tile log-odds are clipped to ±this before smoothing (odds of about 3000 to
1): a tile the network is very sure is clean still turns within a few tenths of a second once
the evidence changes."""


def _log_odds(p: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    q = np.clip(np.asarray(p, np.float32), 1e-6, 1.0 - 1e-6)
    return np.asarray(np.clip(np.log(q / (1.0 - q)), -_LOGIT_LIMIT, _LOGIT_LIMIT), np.float32)


@dataclass
class TileDecision:
    """Per-tile probabilities → soiled tiles (hysteresis) → covered fraction and alarm.

    The smoothing averages each tile's soiling **log-odds** over time, not its probability: the
    thresholds sit near certainty (0.98), where an average of probabilities creeps up for more
    than a second even when the network is sure at once (from 0 towards 1 with a 0.3 s time
    constant, it passes 0.98 after 0.3 s × ln 50 ≈ 1.2 s), while the log-odds of a sure network
    pass the same line within about half a second. A single confident frame still moves the
    average by only a fraction of the way."""

    params: DecisionParams = field(default_factory=DecisionParams)
    _logit: npt.NDArray[np.float32] | None = None
    _soiled: npt.NDArray[np.bool_] | None = None
    _classes: npt.NDArray[np.int8] | None = None
    _t: float | None = None
    _start: float | None = None
    _detected: bool = False

    def reset(self) -> None:
        self._logit = self._soiled = self._classes = None
        self._t = self._start = None
        self._detected = False

    def update(self, probabilities: npt.NDArray[np.float32], t: float) -> AdhesionEstimate:
        """`probabilities`: len(CLASSES)×rows×cols for the frame at `t`."""
        p = self.params
        logit = _log_odds(1.0 - probabilities[0])
        if (
            self._logit is None
            or self._logit.shape != logit.shape
            or self._t is None
            or t < self._t
        ):
            self._logit = logit
            self._soiled = np.zeros(logit.shape, np.bool_)
            self._start = t
        else:
            self._logit += np.float32(_alpha(t - self._t, p.smooth_s)) * (logit - self._logit)
        self._t = t
        soiled = self._soiled
        if soiled is None:  # set with _logit
            soiled = self._soiled = np.zeros(logit.shape, np.bool_)
        self._classes = np.asarray(np.argmax(probabilities[1:], axis=0) + 1, np.int8)
        start = t if self._start is None else self._start
        if t - start < p.warmup_s:
            soiled[:] = False
        else:
            soiled |= self._logit >= _log_odds(np.float32(p.on))
            soiled &= self._logit >= _log_odds(np.float32(p.off))
        return self.estimate()

    def estimate(self) -> AdhesionEstimate:
        p = self.params
        if self._soiled is None:
            return AdhesionEstimate(score=0.0, covered_fraction=0.0)
        covered = float(self._soiled.mean())
        if not self._detected and covered >= p.alarm_fraction:
            self._detected = True
        elif self._detected and covered < p.clear_fraction:
            self._detected = False
        mask = self._soiled.copy()
        mask.flags.writeable = False
        return AdhesionEstimate(
            score=covered / (covered + p.alarm_fraction),
            covered_fraction=covered,
            detected=self._detected,
            tile_mask=mask,
        )

    @property
    def tile_classes(self) -> npt.NDArray[np.int8] | None:
        """Per tile: the most likely soiling class index (1–3) where soiled, 0 where clean."""
        if self._classes is None or self._soiled is None:
            return None
        return np.where(self._soiled, self._classes, 0).astype(np.int8)


class LearnedAdhesionDetector:
    """Features every frame, the network every `every`-th frame, the decision every frame.

    `update(colour, t)` takes the analysis copy (BGR) of the raw frame, as the monitor has it.
    """

    def __init__(
        self,
        net: TileNet,
        decision: DecisionParams | None = None,
        net_width: int = 192,
        every: int = 2,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be ≥ 1, got {every}")
        self.net = net
        self.features = SoilFeatures(net_width)
        self.decision = TileDecision(decision or DecisionParams())
        self.every = every
        self._count = 0
        self._latest: npt.NDArray[np.float32] | None = None

    def reset(self) -> None:
        self.features.reset()
        self.decision.reset()
        self._count = 0
        self._latest = None

    @property
    def latest(self) -> npt.NDArray[np.float32] | None:
        """The per-tile class probabilities the decision last saw (None before the first
        frame); read-only."""
        if self._latest is None:
            return None
        view: npt.NDArray[np.float32] = self._latest.view()
        view.flags.writeable = False
        return view

    def probabilities(self, features: FeatureMap) -> npt.NDArray[np.float32]:
        """The network's per-tile class probabilities for one feature map."""
        out = np.asarray(self.net(features[None]), np.float32)
        rows, cols = features.shape[1] // TILE, features.shape[2] // TILE
        if out.shape != (1, len(CLASSES), rows, cols):
            raise ValueError(
                f"soiling network returned {out.shape}, expected (1, {len(CLASSES)}, {rows}, {cols})"
            )
        return np.asarray(out[0], np.float32)

    def update(self, colour: Image, t: float) -> AdhesionEstimate:
        features = self.features.update(colour, t)
        if self._latest is None or self._count % self.every == 0:
            self._latest = self.probabilities(features)
        self._count += 1
        return self.decision.update(self._latest, t)


def tile_texture(grey: npt.NDArray[np.float32], tile: int = TILE) -> npt.NDArray[np.float32]:
    """Per tile: the standard deviation of a grey image (0–1) at the network's input size."""
    height, width = grey.shape
    rows, cols = height // tile, width // tile
    blocks = grey[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile)
    return np.asarray(blocks.std(axis=(1, 3)), np.float32)


LABEL_COVER = 0.3
"""Default share of a tile that soiling must cover for the tile to be taught as soiled
(`tile_truth`'s `min_cover`; under a tenth of it, clean; between, ignored)."""


def tile_truth(
    class_map: npt.NDArray[np.int8],
    tile: int = TILE,
    min_cover: float = LABEL_COVER,
    visible: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """Per-tile training labels from a per-pixel class map (0 clean, 1–3 soiling classes) at the
    network's input size: the most common soiling class of a tile where soiling covers at least
    `min_cover` of it, clean where it covers under a tenth of that, −1 (ignored) in between.
    `visible` (rows × cols): where the clean picture behind the lens has something soiling could
    hide; soiling over a featureless patch (clear sky, a blank wall) hides nothing and cannot be
    seen in the temporal evidence, so it is ignored rather than taught as soiling."""
    height, width = class_map.shape
    rows, cols = height // tile, width // tile
    blocks = class_map[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile)
    counts = np.stack([(blocks == c).mean(axis=(1, 3)) for c in range(len(CLASSES))])
    soiled = 1.0 - counts[0]
    label = np.argmax(counts[1:], axis=0) + 1
    out = np.full((rows, cols), -1, np.int64)
    out[soiled >= min_cover] = label[soiled >= min_cover]
    out[soiled < min_cover / 10] = 0
    if visible is not None:
        out[(out > 0) & ~visible] = -1
    return out
