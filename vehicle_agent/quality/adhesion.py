"""Analyze stage: `AdhesionDetector`, what sits on the lens (drops, mist, dust, mud), over time.

Generic quality scores do not tell lens soiling from a clean frame, so the detector works on
what soiling does that the world does not. The downscaled grey frame is cut into a grid of tiles;
each tile keeps references of its own texture (Laplacian energy), its long-term background and
its usual motion. A tile is soiled when, after the detector has learnt it:

1. **Onset**: its texture fell abruptly to a fraction of its own reference and of its
   neighbours' (a drop or splash blurs what was sharp), or its picture changed abruptly from a
   quiet, settled background into something unlike its surroundings (a drop or mud over a
   smooth area) — never gradually, and never back to the long-term background (an object
   leaving reveals the background; soiling hides it);
2. **Static after the onset**: nothing moved inside the tile since the change began (someone
   walking in and stopping keeps moving; a drop lands in one frame and sits), and neither the
   tiles that changed with it nor the whole smooth area that differs from the long-term
   background grow, shrink or move (a passing truck's body does all three; a tile flickering
   at a drop's rim does not count);
3. **Confirmed**: both hold for `confirm_s` (about half a second).

A soiled tile stays soiled while it keeps the look (mean level, texture) it had when flagged:
soiling does not change by itself, so when the fan blows a drop away the tile is released after
`release_s`.

With the camera moving, backgrounds mean nothing; a tile then counts only when, for several
seconds, its texture stays far below both its own reference and that of the tiles around it
while the rest of the picture changes (`moving_confirm_s`). A still scene (a single frame
repeated, a standing vehicle with nothing moving) has no onset and never alarms; uniform or dark
tiles have no texture to lose and are not judged (`observable_fraction`).

Cost: a handful of whole-image operations on the downscaled grey (a few hundred kilopixels at
most) and arithmetic on the grid: `python -m tools.bench_analysis` (docs/benchmarks.md).
Thresholds were set on the bundled clip and checked on the rest of opencv-doc's vtest.avi with
`python -m tools.eval_adhesion`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.quality.settings import AdhesionConfig
from vehicle_agent.records import AdhesionEstimate

_T = TypeVar("_T", bound=np.generic)
FloatGrid = npt.NDArray[np.float32]
BoolGrid = npt.NDArray[np.bool_]
TimeGrid = npt.NDArray[np.float64]

# Immerkær's noise kernel: its response on a flat area is pure noise (1996, "Fast noise
# variance estimation").
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_NOISE_SCALE = math.sqrt(math.pi / 2) / 6
# Energy of the 4-neighbour Laplacian of white noise of unit variance.
_LAPLACIAN_NOISE_GAIN = 20.0

# Internal time constants and thresholds, seconds and ratios; the configurable ones live in
# `AdhesionConfig` (`quality/settings.py`, `[adhesion]`). They were set on real street footage
# with rendered soiling (`tools/eval_adhesion.py`); see docs/benchmarks.md.
_SMOOTH_TAU_S = 0.15  # short smoothing of texture and motion
_REF_UP_TAU_S = 30.0  # a tile's texture reference rises slowly (passing objects add texture)...
_REF_DOWN_TAU_S = 8.0  # ...and falls faster
_REF_UP_CLIP = 0.5  # at most ×1.65 per update towards a sudden rise (log domain)
_SOILED_TAU_S = 300.0  # a soiled tile forgets its clean reference over minutes
_LOOK_TAU_S = 5.0  # a soiled tile's own look follows slow light changes
_LOOK_ENERGY = math.log(2.5)  # texture this far (log) from the soiled look: something changed
_BG_TAU_S = 10.0  # short-term background
_LONG_TAU_S = 60.0  # long-term background (what the tile shows when nothing is on it)
_MIN_TEXTURE = 20.0  # Laplacian energy below which a tile has no texture to lose
_FALL_RATIO = 0.8  # texture below this share of its reference: the tile may be changing
_NEIGHBOUR_RATIO = 0.4  # soiled tiles are smoother than their neighbours' references
_PEAK_TAU_S = 1.5
_PEAK_MAX = 1.8  # texture well above reference a moment ago: an object was there, not soiling
_ABRUPT_TAU_S = 1.0
_ABRUPT_HIGH = 0.65  # ...and within about a second before the fall it was near its reference
_CHANGE_ON = 10.0  # grey levels of change from the short-term background
_ANOMALY_ON = 8.0  # ...that differ from the change around the tile (not a global light change)
_QUIET_S = 2.0  # a change counts only on a tile quiet for this long before
_LONG_ON = 6.0  # grey levels from the long-term background: not a revert to it
_SETTLED_S = 3.0  # the long-term background must have explained the tile this long
_ACTIVE_K = 3.0  # motion above this multiple of the tile's usual motion is activity
_ACTIVE_FLOOR = 2.0
_CALM_S = 0.4  # no activity inside the tile for this long
_REGION_QUIET_S = 0.3  # the changed region did not grow or shrink for this long
_REGION_CALM_S = 0.2
_CHANGED_STILL_S = 0.5  # a large changed area around a tile kept its shape this long
_LARGE_REGION = 0.03  # share of the tiles above which a changed area is large (a truck's body)
_CHURN_SHARE = 0.02  # ...and changes shape when this share of it joins or leaves in a frame
_MOVING_MIN = 1.5  # median frame difference (grey levels) above which the camera is moving
_MOVE_WINDOW_S = 2.0
_MOVE_NEIGHBOUR_RATIO = 0.15
_DYNAMIC_FLOOR = 2.0
_DYNAMIC_TAU_S = 5.0
_NEIGHBOURHOOD = 5  # tiles, for the neighbour comparisons (median filter size)
_DIM_LEVEL = 45.0  # mean grey level below which the scene is too dark for the change cue
_FLICKER_S = 0.3  # falling for less than this, or again within this, is flicker
_TOGETHER_S = 0.5  # neighbouring tiles that changed within this of each other are one thing
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
_FILL_MAX = 0.1  # a confirmed tile vouches for its changed region up to this share of tiles


def _alpha(dt: float, tau: float) -> float:
    return 1.0 - math.exp(-dt / tau) if tau > 0 else 1.0


def _cells(image: npt.NDArray[np.float32], size: tuple[int, int]) -> FloatGrid:
    """Mean of `image` over each tile (area interpolation)."""
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.float32)


def _median5(grid: FloatGrid) -> FloatGrid:
    return np.asarray(cv2.medianBlur(np.ascontiguousarray(grid, np.float32), _NEIGHBOURHOOD))


def noise_sigma(grey: npt.NDArray[np.float32], size: tuple[int, int]) -> float:
    """Sensor noise (grey levels): Immerkær's estimate on the flattest tenth of the tiles."""
    response = np.abs(cv2.filter2D(grey, -1, _NOISE_KERNEL))
    return _NOISE_SCALE * float(np.percentile(_cells(response, size), 10))


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Square tiles of `tile` pixels over the centre of an analysis image (the few pixels left
    over at the borders are not judged): `rows` × `cols` tiles from (`top`, `left`)."""

    rows: int
    cols: int
    tile: int
    top: int
    left: int
    height: int
    """Height of the analysis image the grid was fitted to."""
    width: int

    @classmethod
    def fit(cls, height: int, width: int, cols: int) -> TileGrid:
        tile = max(1, width // max(1, cols))
        cols = max(1, width // tile)
        rows = max(1, height // tile)
        return cls(
            rows, cols, tile, (height - rows * tile) // 2, (width - cols * tile) // 2, height, width
        )

    def crop(self, image: npt.NDArray[_T]) -> npt.NDArray[_T]:
        return image[
            self.top : self.top + self.rows * self.tile,
            self.left : self.left + self.cols * self.tile,
        ]

    def coverage(self, mask: npt.NDArray[np.bool_]) -> FloatGrid:
        """Share (0–1) of each tile that `mask` covers; `mask` may have the full frame's size."""
        small = cv2.resize(
            mask.astype(np.float32), (self.width, self.height), interpolation=cv2.INTER_AREA
        )
        return _cells(self.crop(np.asarray(small, np.float32)), (self.cols, self.rows))


class _State:
    """Everything the detector remembers between frames, for one frame size."""

    def __init__(
        self,
        grey: npt.NDArray[np.float32],
        lap: npt.NDArray[np.float32],
        energy: FloatGrid,
        t: float,
    ) -> None:
        shape = energy.shape
        self.shape = grey.shape
        self.t0 = t
        self.t_prev = t
        self.grey_prev = grey
        self.lap_prev = lap
        self.background = grey.copy()
        self.long_background = grey.copy()
        self.energy = energy.copy()
        self.log_ref = np.log1p(energy)
        self.motion = np.zeros(shape, np.float32)
        self.motion_base = np.ones(shape, np.float32)
        self.motion_long = np.zeros(shape, np.float32)
        self.motion_level = 0.0
        self.moving = False
        self.window_max = energy.copy()
        self.window_ratio = np.ones(shape, np.float32)
        self.peak = np.ones(shape, np.float32)
        self.recent_high = np.ones(shape, np.float32)
        self.recent_low_change = np.zeros(shape, np.float32)
        self.veto = np.zeros(shape, np.bool_)
        self.onset_ok = np.zeros(shape, np.bool_)
        self.settled = np.zeros(shape, np.float32)
        self.bg_since = np.full(shape, t)
        self.last_disturbed = np.full(shape, t)
        self.calm_since = np.full(shape, t)
        self.cand_since = np.full(shape, np.inf)
        self.clear_since = np.full(shape, np.inf)
        self.changed = np.zeros(shape, np.bool_)
        self.falling = np.zeros(shape, np.bool_)
        self.fell_at = np.full(shape, -1e9)
        self.rose_at = np.full(shape, -1e9)
        self.fell_for = np.zeros(shape)
        self.region_calm = np.full(shape, -np.inf)
        self.held = np.zeros(shape, np.bool_)
        self.shape_changed = np.full(shape, -np.inf)
        self.soiled = np.zeros(shape, np.bool_)
        self.look_mean = np.zeros(shape, np.float32)
        self.look_energy = np.zeros(shape, np.float32)
        self.observable = np.zeros(shape, np.bool_)
        self.detected = False


class AdhesionDetector:
    """Stateful over frames: call `update(grey, t)` with each frame's downscaled grey and its
    video time; only one thread may call it. See the module docstring for the cues."""

    def __init__(self, params: AdhesionConfig | None = None) -> None:
        self.params = params or AdhesionConfig()
        self._state: _State | None = None

    def reset(self) -> None:
        """Forget everything (e.g. after the camera was replaced)."""
        self._state = None

    def grid(self, height: int, width: int) -> TileGrid:
        """The tile grid the detector uses on a `height`×`width` analysis image."""
        return TileGrid.fit(height, width, self.params.grid_cols)

    def update(self, grey: npt.NDArray[np.uint8], t: float) -> AdhesionEstimate:
        """The estimate after the frame `grey` (H×W uint8 luma, downscaled) at video time `t`."""
        if grey.ndim != 2 or grey.shape[0] < 2 or grey.shape[1] < 2:
            raise ValueError(f"expected an H×W grey image, got shape {grey.shape}")
        p = self.params
        grid = self.grid(*grey.shape)
        g = grid.crop(grey).astype(np.float32)
        size = (grid.cols, grid.rows)
        lap = np.asarray(cv2.Laplacian(g, cv2.CV_32F), np.float32)
        energy = _cells(lap * lap, size)
        sigma = noise_sigma(g, size)
        noise_energy = _LAPLACIAN_NOISE_GAIN * sigma * sigma
        s = self._state
        if s is None or s.shape != g.shape or t < s.t_prev - 1.0:
            # First frame, a new frame size, or time jumped back: learn from scratch.
            self._state = _State(g, lap, energy, t)
            return self._estimate(self._state)
        dt = min(max(t - s.t_prev, 1e-3), 1.0)
        s.t_prev = t
        elapsed = max(t - s.t0, dt)
        diff = _cells(np.abs(g - s.grey_prev), size)
        change = _cells(np.abs(g - s.background), size)
        change_long = _cells(np.abs(g - s.long_background), size)
        lap_diff = _cells(np.abs(lap - s.lap_prev), size)
        mean = _cells(g, size)
        mean_bg = _cells(s.background, size)
        s.grey_prev, s.lap_prev = g, lap

        # -- texture relative to the tile's reference and to its neighbours
        a = _alpha(dt, _SMOOTH_TAU_S)
        s.energy += a * (energy - s.energy)
        s.motion += a * (diff - s.motion)
        signal = s.energy - noise_energy
        reference = np.expm1(s.log_ref) - noise_energy
        floor = max(3.0 * noise_energy, _MIN_TEXTURE)
        observable = reference > floor
        ratio = np.maximum(signal, 0.0) / np.maximum(reference, 1e-3)
        pool = observable & ~s.soiled
        # A global loss of texture (dusk, fog, auto-exposure) is not soiling: normalise by it.
        overall = float(np.median(ratio[pool])) if pool.sum() >= 0.1 * ratio.size else 1.0
        overall = min(max(overall, 1e-3), 1.0)
        ratio = ratio / overall
        ratio_now = np.maximum(energy - noise_energy, 0.0) / np.maximum(reference, 1e-3) / overall
        low = np.minimum(ratio, ratio_now)
        neighbours = np.expm1(_median5(s.log_ref)) - noise_energy
        smoother = np.maximum(signal, 0.0) / np.maximum(neighbours, floor)

        # -- motion: is the camera moving, is the tile active
        median_motion = float(np.median(s.motion))
        s.motion_level += _alpha(dt, 0.5) * (median_motion - s.motion_level)
        threshold = max(_MOVING_MIN, 2.0 * sigma) * (0.8 if s.moving else 1.0)
        s.moving = moving = s.motion_level > threshold
        if moving:
            s.bg_since[:] = t
            s.settled[:] = 0.0
        active = lap_diff > np.maximum(_ACTIVE_K * s.motion_base, _ACTIVE_FLOOR + 5.0 * sigma)
        rate = np.where(lap_diff > s.motion_base, _alpha(dt, 20.0), _alpha(dt, 2.0))
        s.motion_base += rate.astype(np.float32) * (lap_diff - s.motion_base)
        s.calm_since[active] = t

        # -- change from the backgrounds
        delta = mean - mean_bg
        anomaly = np.abs(delta - _median5(delta))
        changed_now = change - 2.0 * sigma - s.motion
        blur_falling = observable & (low < _FALL_RATIO)
        # In the dark, noise and slow dim shapes look like changes: only blur counts there.
        lit = not moving and float(mean.mean()) >= _DIM_LEVEL
        change_cue = lit & (changed_now > _CHANGE_ON) & (anomaly > _ANOMALY_ON)
        falling = blur_falling | change_cue
        s.veto &= falling
        s.peak = np.maximum(low, s.peak * math.exp(-dt / _PEAK_TAU_S))
        s.veto |= blur_falling & ~change_cue & (s.peak > _PEAK_MAX) & ~s.soiled
        blurred = observable & (ratio < p.blur_ratio) & (smoother < _NEIGHBOUR_RATIO)
        long_on = max(_LONG_ON, 3.0 * sigma)
        changed_long = change_long > long_on
        warm = t - s.t0 >= p.warmup_s

        # -- the two paths to a candidate tile
        still_path = (blurred | change_cue) & changed_long & ((s.settled >= _SETTLED_S) | s.soiled)
        still_path &= not moving
        s.window_max = np.maximum(s.energy, s.window_max * math.exp(-dt / _MOVE_WINDOW_S))
        around = _median5(s.window_max)
        window_smoother = np.maximum(s.window_max - noise_energy, 0.0) / np.maximum(
            around - noise_energy, floor
        )
        dynamic = s.motion_long > max(_DYNAMIC_FLOOR, 3.0 * sigma)
        moving_path = (
            observable
            & moving
            & dynamic
            & (window_smoother < _MOVE_NEIGHBOUR_RATIO)
            & (s.window_ratio < p.blur_ratio)
        )
        cand = (still_path | moving_path) & ~s.veto & warm
        abrupt_blur = blurred & (s.recent_high >= _ABRUPT_HIGH)
        quiet = (t - s.last_disturbed) >= _QUIET_S + dt
        abrupt_change = change_cue & quiet & (s.recent_low_change <= _CHANGE_ON * 0.5)
        starting = cand & ~np.isfinite(s.cand_since)
        s.onset_ok[starting] = (abrupt_blur | abrupt_change | moving_path)[starting]
        s.onset_ok[~cand] = False
        cand &= ~(starting & ~s.onset_ok)
        # Soiling lands in one frame and then sits still; someone walking in and stopping
        # keeps moving inside the tile after the change began: not an onset.
        restless = cand & ~starting & ~moving_path & (s.calm_since > s.cand_since + 0.5 * dt)
        s.onset_ok[restless] = False
        cand &= ~restless
        s.last_disturbed[active | (np.abs(changed_now) > _CHANGE_ON * 0.5)] = t
        s.window_ratio = np.maximum(low, s.window_ratio * math.exp(-dt / _MOVE_WINDOW_S))
        k = math.exp(-dt / _ABRUPT_TAU_S)
        s.recent_high = np.maximum(np.minimum(low, 1.5), s.recent_high * k)
        s.recent_low_change = np.minimum(
            np.maximum(changed_now, 0.0), s.recent_low_change + (1.0 - k) * 50.0
        )
        s.cand_since[cand & ~np.isfinite(s.cand_since)] = t
        s.cand_since[~cand] = np.inf

        # -- what changed together must be still: it neither grows, shrinks nor moves
        held = changed_long | (s.changed & (change_long > 0.6 * long_on))
        s.changed = held
        # A tile flickering in and out (the rim of a drop) keeps the time it first fell, and its
        # brief exits do not count as something leaving.
        started = falling & ~s.falling & ((t - s.rose_at) > _FLICKER_S)
        s.fell_at[started] = t
        rising = s.falling & ~falling
        s.rose_at[rising] = t
        s.fell_for[rising] = t - s.fell_at[rising]
        s.falling = falling
        # The whole smooth area that differs from the long-term background (a truck's body too,
        # whose plain paint has no texture to lose) must keep its shape: tiles joining or
        # leaving it mean something is moving through, not sitting on the lens. Textured change
        # (people walking past a drop) stays out of it.
        self._track_shape(s, held & (blur_falling | ~observable), t)
        region_ok = (t - s.shape_changed) >= _CHANGED_STILL_S
        labels: npt.NDArray[np.int32] | None = None
        count = 0
        if cand.any() or s.soiled.any():
            # Neighbouring tiles that began to change at about the same time are one thing: a
            # drop lands at once; a truck's tiles change one column after the other (a chain
            # that keeps growing while it moves, and loses tiles at its tail); a passer-by next
            # to a drop changed at another time and stays apart.
            # Textured tiles busy with motion (people walking past a drop) stay out of it.
            busy = (t - s.calm_since < _CALM_S) & observable & ~blur_falling
            members = (falling & ~busy) | s.soiled
            count, labels = _groups(members, s.fell_at)
            youngest = np.full(count, -np.inf)
            np.maximum.at(youngest, labels[members], s.fell_at[members])
            still = (t - youngest) >= _REGION_QUIET_S
            still[np.unique(labels[active & members])] = False
            left = ~members & ~busy & ((t - s.rose_at) < _REGION_QUIET_S)
            left &= (s.fell_for >= _FLICKER_S) & ~held  # it left and shows the background again
            # ...a tile that fell together with its neighbour and has left again: the tail of
            # something moving through (someone who walked past a drop fell at another time).
            still[_left_together(left, members, s.fell_at, labels)] = False
            still[0] = True
            s.region_calm[~still[labels]] = t
            region_ok &= (t - s.region_calm) >= _REGION_CALM_S
        region_ok |= moving_path

        # -- promote and release
        calm = t - s.calm_since >= _CALM_S
        confirm = np.where(moving_path, p.moving_confirm_s, p.confirm_s)
        promote = cand & (t - s.cand_since >= confirm) & calm & region_ok & warm
        if labels is not None and lit:
            # A confirmed tile vouches for the rest of what changed with it: the whole drop or
            # splash, its bright rim and glint included (when that is drop-sized).
            vouched = np.zeros(count, np.bool_)
            vouched[labels[s.soiled | promote]] = True
            vouched[0] = False
            vouched &= np.bincount(labels.ravel(), minlength=count) <= _FILL_MAX * labels.size
            promote |= vouched[labels] & (held | falling) & region_ok & calm & warm
        # On a still camera a soiled tile stays soiled while it differs from its background.
        # ...and while it still looks as it did when it was flagged: soiling does not change by
        # itself, so a tile whose look departed for `release_s` (the fan blew the drop away)
        # is released. This also frees tiles held only by a long-term background learnt while
        # someone stood there. With the camera moving, the look means nothing: texture decides.
        log_energy = np.log1p(s.energy)
        departed = (np.abs(mean - s.look_mean) > long_on) | (
            np.abs(log_energy - s.look_energy) > _LOOK_ENERGY
        )
        keep = s.soiled & ~departed & ((ratio < p.clear_ratio) | held | change_cue)
        if moving:
            keep = s.soiled & (ratio < p.clear_ratio)
        clearing = s.soiled & ~keep
        s.clear_since[clearing & ~np.isfinite(s.clear_since)] = t
        s.clear_since[~clearing] = np.inf
        released = clearing & (t - s.clear_since >= p.release_s)
        fresh = promote & ~s.soiled
        s.soiled = (s.soiled & ~released) | promote
        s.look_mean[fresh] = mean[fresh]
        s.look_energy[fresh] = log_energy[fresh]
        follow = s.soiled & ~fresh & ~departed
        k_look = _alpha(dt, _LOOK_TAU_S)
        s.look_mean[follow] += k_look * (mean[follow] - s.look_mean[follow])
        s.look_energy[follow] += k_look * (log_energy[follow] - s.look_energy[follow])
        s.observable = observable

        # -- references learn, except where something is being judged
        hold = (cand | falling) & ~s.soiled
        self._learn(
            s,
            g=g,
            energy=energy,
            diff=diff,
            change_long=change_long,
            sigma=sigma,
            t=t,
            dt=dt,
            elapsed=elapsed,
            hold=hold,
        )
        return self._estimate(s)

    @staticmethod
    def _track_shape(s: _State, held: BoolGrid, t: float) -> None:
        """Stamp `t` on every large connected part of `held` that gained or lost tiles (two or
        more and 2 % of it, so tiles flickering at the rim of mist or mud do not count). Small
        parts are left to the grouping by onset time: people walking past drops join and leave
        their parts."""
        count, labels = cv2.connectedComponents(held.astype(np.uint8), connectivity=4)
        joined = held & ~s.held
        left = s.held & ~held
        near_left = cv2.dilate(left.astype(np.uint8), _CROSS).astype(np.bool_) & held
        churn = np.bincount(labels[joined | near_left], minlength=count)
        churn += np.bincount(labels[joined], minlength=count)  # a joined tile weighs double
        area = np.bincount(labels.ravel(), minlength=count)
        changing = (churn >= np.maximum(2.0, _CHURN_SHARE * area)) & (
            area >= _LARGE_REGION * labels.size
        )
        changing[0] = False
        s.shape_changed[changing[labels]] = t
        s.held = held

    @staticmethod
    def _learn(
        s: _State,
        *,
        g: npt.NDArray[np.float32],
        energy: FloatGrid,
        diff: FloatGrid,
        change_long: FloatGrid,
        sigma: float,
        t: float,
        dt: float,
        elapsed: float,
        hold: BoolGrid,
    ) -> None:
        log_energy = np.log1p(energy)
        up = _alpha(dt, min(_REF_UP_TAU_S, elapsed))
        down = _alpha(dt, min(_REF_DOWN_TAU_S, elapsed))
        rate = np.where(log_energy > s.log_ref, up, down).astype(np.float32)
        rate[hold] = 0.0
        rate[s.soiled] = _alpha(dt, _SOILED_TAU_S)
        s.log_ref += rate * np.minimum(log_energy - s.log_ref, _REF_UP_CLIP)
        frozen = hold | s.soiled
        dyn = np.full(hold.shape, _alpha(dt, min(_DYNAMIC_TAU_S, elapsed)), np.float32)
        dyn[frozen] = 0.0
        s.motion_long += dyn * (diff - s.motion_long)
        height, width = g.shape  # the cropped grid area
        bg = np.full(hold.shape, _alpha(dt, min(_BG_TAU_S, elapsed)), np.float32)
        bg[hold] = 0.0
        bg[s.soiled] = _alpha(dt, _SOILED_TAU_S)
        s.background += _upsample(bg, width, height) * (g - s.background)
        # The long-term background learns only quiet tiles nothing is suspected on; after the
        # camera moved it starts again, quickly at first.
        tau = np.minimum(_LONG_TAU_S, np.maximum(t - s.bg_since, dt))
        long_rate = (1.0 - np.exp(-dt / tau)).astype(np.float32)
        long_rate[frozen | (t - s.last_disturbed < 1.0)] = 0.0
        s.long_background += _upsample(long_rate, width, height) * (g - s.long_background)
        explained = (change_long < max(_LONG_ON * 0.5, 2.0 * sigma)) & (t - s.last_disturbed >= 0.5)
        s.settled[explained] = np.minimum(s.settled[explained] + dt, 2.0 * _SETTLED_S)

    def _estimate(self, s: _State) -> AdhesionEstimate:
        p = self.params
        covered = float(s.soiled.mean())
        if not s.detected and covered >= p.alarm_fraction:
            s.detected = True
        elif s.detected and covered < p.clear_fraction:
            s.detected = False
        mask = s.soiled.copy()
        mask.flags.writeable = False
        return AdhesionEstimate(
            score=covered / (covered + p.alarm_fraction),
            covered_fraction=covered,
            detected=s.detected,
            tile_mask=mask,
            observable_fraction=float(s.observable.mean()),
        )


def _groups(members: BoolGrid, when: TimeGrid) -> tuple[int, npt.NDArray[np.int32]]:
    """Label 4-connected `members` whose neighbours' `when` differ by at most `_TOGETHER_S`
    (0: not a member); returns (labels in use + 1, labels)."""
    rows, cols = members.shape
    index = np.arange(1, members.size + 1, dtype=np.int32).reshape(rows, cols)
    lab = np.where(members, index, np.int32(members.size + 1))
    big = np.int32(members.size + 1)
    across = members[:, :-1] & members[:, 1:] & (np.abs(when[:, :-1] - when[:, 1:]) <= _TOGETHER_S)
    down = members[:-1, :] & members[1:, :] & (np.abs(when[:-1, :] - when[1:, :]) <= _TOGETHER_S)
    for _ in range(members.size):
        new = lab.copy()
        new[:, 1:] = np.where(across, np.minimum(new[:, 1:], lab[:, :-1]), new[:, 1:])
        new[:, :-1] = np.where(across, np.minimum(new[:, :-1], lab[:, 1:]), new[:, :-1])
        new[1:, :] = np.where(down, np.minimum(new[1:, :], lab[:-1, :]), new[1:, :])
        new[:-1, :] = np.where(down, np.minimum(new[:-1, :], lab[1:, :]), new[:-1, :])
        if np.array_equal(new, lab):
            break
        lab = new
    lab[~members] = 0
    lab[lab == big] = 0
    _, compact = np.unique(lab, return_inverse=True)
    labels = np.asarray(compact.reshape(rows, cols), np.int32)
    if members.all():
        labels += 1  # no non-members: label 0 stays unused
    return int(labels.max()) + 1, labels


def _left_together(
    left: BoolGrid, members: BoolGrid, fell_at: TimeGrid, labels: npt.NDArray[np.int32]
) -> npt.NDArray[np.int32]:
    """Labels of the member tiles that have a `left` 4-neighbour which fell within
    `_TOGETHER_S` of them."""
    found: list[npt.NDArray[np.int32]] = []
    for a, b in (
        (np.s_[:, :-1], np.s_[:, 1:]),
        (np.s_[:, 1:], np.s_[:, :-1]),
        (np.s_[:-1, :], np.s_[1:, :]),
        (np.s_[1:, :], np.s_[:-1, :]),
    ):
        pair = left[a] & members[b] & (np.abs(fell_at[a] - fell_at[b]) <= _TOGETHER_S)
        found.append(labels[b][pair])
    return np.unique(np.concatenate(found))


def _upsample(grid: FloatGrid, width: int, height: int) -> FloatGrid:
    """Each tile's value over its pixels."""
    return np.asarray(
        cv2.resize(grid, (width, height), interpolation=cv2.INTER_NEAREST), np.float32
    )
