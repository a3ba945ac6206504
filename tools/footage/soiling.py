"""Footage bank: independent renderers of lens soiling (water drops, mist, dust, mud) with true masks.

A soiling detector trained on one renderer learns that renderer's look as much as the soiling, so
each kind here has several renderers written separately, in families that share no look or
parameter choices; training uses some families and the headline judgement uses one it never saw
(the split is `splits.SOILING_SPLIT`). `render_soiling` fixes the geometry once (seeded); the
returned `Soiling` then puts it on any frame of its size, so the world can move behind a lens that
stays soiled. Images are H×W×3 uint8 RGB. Pixel sizes quoted below are at 640 px wide and scale
with the frame width. `amount` (1 all, 0 none) is how much is left after the fan blew.

`sim`: the simulator's own lens model (`vehicle_agent.sim.lens.AdhesionLayer`), wrapped.

`blurdisc`: an appearance model. A drop is a soft-edged disc or egg (running drops are elongated
with a trail above) in which the background is replaced by a heavily blurred copy of itself,
lifted or dimmed a little; sizes follow a power law (many small, few large). Mist is a
low-frequency patchy veil: contrast loss, a small blur and brightening. Dust is a semi-transparent
grey/brown attenuation (20–60 % opacity) shaped by a smudge field and specks, with fine grain in
its opacity. Mud is opaque blobs from thresholded fractal noise, dark brown, khaki or grey with a
2–6 px soft edge and a few spatter dots; it washes off in patches.

`refract`: a physically motivated model. A drop is a thin plano-convex lens: it shows a wider,
inverted view of the scene (sampled by a precomputed remap flipped about the drop's centre,
bending more towards the contact line), out of focus, darkened at the rim where Fresnel
reflection and total internal reflection send light away, with a small specular glint; shapes come
from a metaball height field, so neighbouring drops merge. Mist is condensation spreading from
the lens edges: I = t·J + (1 − t)·blur(J) plus a little airlight, t < 1 where fogged. Dust is a
particle layer: many 1–4 px partially opaque particles whose forward scattering brightens a halo
around them. Mud is opaque splashes (an irregular core, spikes, satellite drops, drip streaks
running down) with an fBm-textured brown albedo and semi-transparent 3–8 px rims; splashes wash
off one by one.

`optics` (in `tools/footage/soiling_optics.py`, which describes it): small magnifying drops
with a dark rim and a glint, clusters and sprays of fine droplets, condensation creeping in from
an edge, water spots, smudges and wiper streaks, opaque specks, splats and smears down to 1–2 px.

Masks are the truth a detector learns: drops and mud their footprint, mist and dust where their
effect reaches half its maximum strength.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from tools.footage import splits
from vehicle_agent.sim import lens

SoilingKind: TypeAlias = Literal["drops", "mist", "dust", "mud"]
SOILING_KINDS: tuple[SoilingKind, ...] = ("drops", "mist", "dust", "mud")
SoilingClass: TypeAlias = Literal["transparent", "semi_transparent", "opaque"]
CLASS_OF: dict[SoilingKind, SoilingClass] = {
    "drops": "transparent",
    "mist": "transparent",
    "dust": "semi_transparent",
    "mud": "opaque",
}
"""The detector's class of each kind."""
Family: TypeAlias = Literal["sim", "blurdisc", "refract", "optics"]
FAMILIES: tuple[Family, ...] = ("sim", "blurdisc", "refract", "optics")
"""New families go at the end: a family's index seeds its random stream."""

MIN_COVERAGE = 0.005
MAX_COVERAGE = 0.6
MIN_SIDE = 16
"""Smallest frame side rendered (pixels)."""

RGB: TypeAlias = npt.NDArray[np.uint8]
"""H×W×3 uint8, RGB."""
Mask: TypeAlias = npt.NDArray[np.bool_]
Float: TypeAlias = npt.NDArray[np.float32]
Box: TypeAlias = tuple[slice, slice]

_REFERENCE_WIDTH = 640.0
_EMPTY_BOX: Box = (slice(0, 0), slice(0, 0))
_E = TypeVar("_E")


# ----------------------------------------------------------------------------------- interface


class Soiling(abc.ABC):
    """One soiled lens: geometry fixed at creation, put onto any frame of its size by `apply`."""

    def __init__(self, kind: SoilingKind, family: Family, mask: Mask) -> None:
        self.kind = kind
        self.family = family
        self.mask = mask
        """H×W truth: True where the soiling covers the lens (at half strength or more)."""
        self.mask.flags.writeable = False

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def apply(self, image: RGB, amount: float = 1.0) -> RGB:
        """`image` (the clean frame seen now) through this lens; `amount` is how much is left."""
        if not isinstance(image, np.ndarray):
            # ValueError, not TypeError: callers handle every bad frame the same way.
            raise ValueError(f"image is {type(image).__name__}, expected a numpy array")  # noqa: TRY004
        if image.dtype != np.uint8:
            raise ValueError(f"image dtype is {image.dtype}, expected uint8")
        if image.shape != (self.height, self.width, 3):
            raise ValueError(
                f"image shape is {image.shape}, expected {(self.height, self.width, 3)}"
            )
        if not (isinstance(amount, (int, float)) and 0.0 <= amount <= 1.0):
            raise ValueError(f"amount {amount!r} is outside [0, 1]")
        if amount == 0.0:
            return _copy(image)
        return self._apply(image, float(amount))

    @abc.abstractmethod
    def _apply(self, image: RGB, amount: float) -> RGB: ...


def render_soiling(  # noqa: PLR0917 - the footage bank's agreed call shape
    kind: SoilingKind, family: Family, height: int, width: int, coverage: float, seed: int
) -> Soiling:
    """A lens with `kind` soiling of `family` covering about `coverage` of a height×width frame.

    Same arguments → same geometry and the same output bytes for the same image. Achieved
    `mask.mean()` is within ±30 % of `coverage` (for coverage ≥ 0.02; smaller targets are met
    as closely as a few elements allow).
    """
    # The split guard needs a known name, so kind and family are checked just before it.
    if family not in FAMILIES or kind not in SOILING_KINDS:
        bad = f"family {family!r}" if family not in FAMILIES else f"kind {kind!r}"
        raise ValueError(f"unknown soiling {bad}; families {FAMILIES}, kinds {SOILING_KINDS}")
    splits.note_use("soiling", family)
    for name, side in (("height", height), ("width", width)):
        if isinstance(side, bool) or not isinstance(side, int) or side < MIN_SIDE:
            raise ValueError(f"{name} {side!r} is not an integer ≥ {MIN_SIDE}")
    if not (isinstance(coverage, (int, float)) and MIN_COVERAGE <= coverage <= MAX_COVERAGE):
        raise ValueError(f"coverage {coverage!r} is outside [{MIN_COVERAGE}, {MAX_COVERAGE}]")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed {seed!r} is not an integer")  # noqa: TRY004
    if family == "sim":
        return _SimSoiling(kind, height, width, float(coverage), int(seed))
    # One stream per (family, kind, seed): the same seed gives unrelated looks across families.
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, FAMILIES.index(family), _KIND_CODE[kind]])
    if family == "optics":
        # Its own module builds on the helpers here, so it is imported when first asked for.
        from tools.footage import soiling_optics  # noqa: PLC0415

        return soiling_optics.BUILDERS[kind](rng, height, width, float(coverage))
    builder = _BUILDERS[family, kind]
    return builder(rng, height, width, float(coverage))


_KIND_CODE: dict[SoilingKind, int] = {kind: i for i, kind in enumerate(SOILING_KINDS)}


# ------------------------------------------------------------------------------ shared helpers


def _scale(width: int) -> float:
    return width / _REFERENCE_WIDTH


def _smoothstep(edge0: float, edge1: float, x: Float) -> Float:
    y = np.clip((x - np.float32(edge0)) / np.float32(edge1 - edge0), 0.0, 1.0)
    return np.asarray(y * y * (3.0 - 2.0 * y), np.float32)


def _standardise(field: Float) -> Float:
    std = float(field.std())
    return np.asarray((field - field.mean()) / (std if std > 0 else 1.0), np.float32)


def _fbm(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int, gain: float
) -> Float:
    """Fractal noise (zero mean, unit std): octaves of bicubic-upsampled random grids."""
    height, width = shape
    total = np.zeros(shape, np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        across = cells * 2.0**octave
        grid_w = int(min(width, max(2, round(across)))) + 1
        grid_h = int(min(height, max(2, round(across * height / width)))) + 1
        grid = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
        up = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += np.float32(amplitude) * np.asarray(up, np.float32)
        amplitude *= gain
    return _standardise(total)


def _top_threshold(field: Float, coverage: float, already: Mask | None = None) -> float:
    """The level above which `field` (joined with `already`) covers `coverage` of the frame."""
    need = round(coverage * field.size)
    values = field.ravel()
    if already is not None:
        need -= int(already.sum())
        values = field[~already]
    if need <= 0 or values.size == 0:
        return math.inf
    need = min(need, values.size)
    return float(np.partition(values, values.size - need)[values.size - need])


def _bbox(region: Mask, pad: int = 0) -> Box:
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    if rows.size == 0:
        return _EMPTY_BOX
    height, width = region.shape
    return (
        slice(max(0, int(rows[0]) - pad), min(height, int(rows[-1]) + 1 + pad)),
        slice(max(0, int(cols[0]) - pad), min(width, int(cols[-1]) + 1 + pad)),
    )


def _clip_box(x0: float, x1: float, y0: float, y1: float, *, height: int, width: int) -> Box:
    left, right = max(0, math.floor(x0)), min(width, math.ceil(x1) + 1)
    top, bottom = max(0, math.floor(y0)), min(height, math.ceil(y1) + 1)
    if left >= right or top >= bottom:
        return _EMPTY_BOX
    return (slice(top, bottom), slice(left, right))


def _grid(box: Box) -> tuple[Float, Float]:
    ys, xs = np.mgrid[box[0], box[1]]
    return xs.astype(np.float32), ys.astype(np.float32)


def _signed_distance(mask: Mask) -> Float:
    """Pixels inside (> 0) or outside (< 0) the mask's edge, which lies half a pixel out."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return np.asarray(np.where(mask, inside - 0.5, 0.5 - outside), np.float32)


def _wide_blur(image: RGB | Float, sigma: float) -> Float:
    """Gaussian blur as float; wide ones run on a shrunk copy (the result is smooth anyway)."""
    height, width = image.shape[:2]
    step = max(1, int(sigma / 2.5))
    if step == 1:
        return np.asarray(cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma), np.float32)
    small = cv2.resize(
        image, (max(2, width // step), max(2, height // step)), interpolation=cv2.INTER_AREA
    ).astype(np.float32)
    smooth = cv2.GaussianBlur(small, (0, 0), sigma / step)
    return np.asarray(
        cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
    )


def _keep(alpha: Float, hold: Float | None, amount: float, ramp: float) -> Float:
    """`alpha` with what the fan removed taken away: pixels whose hold is below the part gone."""
    if amount >= 1.0:
        return alpha
    if hold is None:
        return np.asarray(alpha * np.float32(amount), np.float32)
    left = np.clip((hold - np.float32(1.0 - amount)) / np.float32(ramp), 0.0, 1.0)
    return np.asarray(alpha * left, np.float32)


def _copy(image: RGB) -> RGB:
    out: RGB = image.copy()  # annotated: numpy's stubs, see [tool.mypy]
    return out


def _blend(image: RGB, box: Box, alpha: Float, layer: Float, add: Float | None = None) -> RGB:
    """`image` with `layer` over it at `alpha` (both cut to `box`), plus light `add`ed on top."""
    out = _copy(image)
    base = np.ascontiguousarray(image[box])
    if add is not None:
        mixed = base.astype(np.float32)
        mixed += alpha[..., None] * (layer - mixed) + add
        out[box] = np.clip(mixed + np.float32(0.5), 0, 255).astype(np.uint8)
        return out
    # One pass in OpenCV: this runs on most of the frame for veils, every frame.
    top = np.clip(layer + np.float32(0.5), 0, 255).astype(np.uint8)
    weight = np.ascontiguousarray(alpha, np.float32)
    out[box] = cv2.blendLinear(top, base, weight, np.float32(1.0) - weight)
    return out


class _Scatter:
    """Where elements land: anywhere in the frame, or clustered around a few spots (by seed)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        self.rng = rng
        self.height = height
        self.width = width
        self.clustered = bool(rng.random() < 0.5)
        count = int(rng.integers(1, 4))
        self.centres = rng.uniform((0.0, 0.0), (width, height), size=(count, 2))
        # A cluster must be able to hold its share of the coverage.
        least = 0.6 * math.sqrt(coverage * height * width / count)
        self.spread = np.maximum(rng.uniform(0.06, 0.22, size=count) * max(height, width), least)
        self.drawn = 0

    def point(self) -> tuple[float, float]:
        if not self.clustered:
            x, y = self.rng.uniform((0.0, 0.0), (self.width, self.height))
            return float(x), float(y)
        self.drawn += 1
        if self.drawn % 400 == 0:
            self.spread *= 1.3  # elements keep landing on covered ground: spread out
        index = int(self.rng.integers(len(self.centres)))
        x, y = self.centres[index] + self.rng.normal(0.0, self.spread[index], size=2)
        # Folding back keeps the cluster's density instead of piling elements on the border.
        return _fold(float(x), self.width), _fold(float(y), self.height)


def _fold(value: float, size: int) -> float:
    period = 2.0 * (size - 1)
    value = abs(value) % period
    return period - value if value > size - 1 else value


def _fill(
    target: float,
    shape: tuple[int, int],
    elements: Iterator[_E],
    footprint: Callable[[_E], tuple[Box, Mask]],
    shrink: Callable[[_E, float], _E],
    *,
    limit: int = 20000,
) -> list[_E]:
    """Elements, in order, until their union covers `target` pixels; the last one is shrunk
    when it would overshoot, so small targets are met by element-based kinds too."""
    canvas = np.zeros(shape, np.bool_)
    count = 0
    placed: list[_E] = []
    for first in itertools.islice(elements, limit):
        element = first
        box, patch = footprint(element)
        gained = int((patch & ~canvas[box]).sum())
        if count + gained > target * 1.08 and gained > 0:
            element = shrink(element, math.sqrt(max(target - count, 1.0) / gained))
            box, patch = footprint(element)
            gained = int((patch & ~canvas[box]).sum())
        if gained == 0:
            continue
        canvas[box] |= patch
        count += gained
        placed.append(element)
        if count >= target * 0.97:
            break
    return placed


# --------------------------------------------------------------------------------- sim family


class _SimSoiling(Soiling):
    """The simulator's lens model; its `remaining` is our `amount`.

    It paints in the daemon's BGR order (its mud colours are BGR), so frames are flipped on the
    way in and out. Its coverage is approximate (overlaps, mist's soft edge), so the requested
    coverage is corrected a couple of times until the true mask hits the target.
    """

    def __init__(
        self, kind: SoilingKind, height: int, width: int, coverage: float, seed: int
    ) -> None:
        blank = np.zeros((height, width, 3), np.uint8)
        asked = coverage
        best: tuple[float, lens.AdhesionLayer, Mask] | None = None
        for _ in range(4):
            layer = lens.AdhesionLayer(kind, asked, seed, aspect=width / height)
            # The true mask does not depend on the picture: read it off a blank frame.
            _, mask = layer.render(blank)
            achieved = float(mask.mean())
            error = abs(math.log(max(achieved, 1e-6) / coverage))
            if best is None or error < best[0]:
                best = (error, layer, np.array(mask, np.bool_))
            if error < 0.05 or achieved <= 0.0:
                break
            asked = min(0.95, max(1e-4, asked * coverage / achieved))
        assert best is not None  # noqa: S101 - the loop runs at least once
        _, self._layer, mask = best
        super().__init__(kind, "sim", mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        out, _ = self._layer.render(np.ascontiguousarray(image[..., ::-1]), amount)
        return np.ascontiguousarray(np.asarray(out, np.uint8)[..., ::-1])


# ---------------------------------------------------------------------------- blurdisc family


@dataclass(frozen=True, slots=True)
class _Disc:
    """One blurdisc drop: an ellipse whose upper half may be longer (a running drop's trail)."""

    x: float
    y: float
    half_width: float
    below: float
    above: float
    angle: float
    edge: float
    """Soft edge width in pixels."""
    gain: float
    lift: float
    hold: float


def _disc_alpha(disc: _Disc, height: int, width: int) -> tuple[Box, Float]:
    reach = max(disc.half_width, disc.below, disc.above) + disc.edge + 1.0
    box = _clip_box(
        disc.x - reach, disc.x + reach, disc.y - reach, disc.y + reach, height=height, width=width
    )
    if box == _EMPTY_BOX:
        return box, np.zeros((0, 0), np.float32)
    xs, ys = _grid(box)
    dx, dy = xs - np.float32(disc.x), ys - np.float32(disc.y)
    cos, sin = np.float32(math.cos(disc.angle)), np.float32(math.sin(disc.angle))
    across = dx * cos + dy * sin
    along = dy * cos - dx * sin
    vertical = np.where(along < 0, np.float32(disc.above), np.float32(disc.below))
    rho = np.sqrt((across / np.float32(disc.half_width)) ** 2 + (along / vertical) ** 2)
    size = min(disc.half_width, disc.below)
    alpha = np.clip(0.5 + (1.0 - rho) * np.float32(size / disc.edge), 0.0, 1.0)
    return box, np.asarray(alpha, np.float32)


def _discs(rng: np.random.Generator, height: int, width: int, target: float) -> Iterator[_Disc]:
    scatter = _Scatter(rng, height, width, target / (height * width))
    small = max(0.8, rng.uniform(0.006, 0.014) * width)
    largest = max(2.0 * small, min(0.16 * min(height, width), math.sqrt(0.2 * target / math.pi)))
    tail = rng.uniform(1.7, 2.6)  # Pareto exponent of the radii: many small, few large
    running = rng.uniform(0.0, 0.35)  # share of drops that have started to run down
    tone = rng.uniform(-1.0, 1.0)  # this lens's drops read a little lighter (> 0) or darker
    while True:
        radius = min(largest, small * (1.0 - rng.random()) ** (-1.0 / tail))
        x, y = scatter.point()
        if rng.random() < running:
            half, below = radius * rng.uniform(0.55, 0.8), radius
            above, angle = radius * rng.uniform(1.6, 3.4), rng.normal(0.0, 0.12)
        else:
            half, angle = radius, rng.uniform(0.0, math.pi)
            below = above = radius * rng.uniform(0.75, 1.3)
        yield _Disc(
            x=x,
            y=y,
            half_width=half,
            below=below,
            above=above,
            angle=angle,
            edge=max(0.7, radius * rng.uniform(0.2, 0.5)),
            gain=1.0 + 0.1 * tone + rng.normal(0.0, 0.04),
            lift=8.0 * tone + rng.normal(0.0, 3.0),
            hold=rng.uniform(0.05, 1.0),
        )


def _shrink_disc(disc: _Disc, factor: float) -> _Disc:
    return replace(
        disc,
        half_width=max(0.5, disc.half_width * factor),
        below=max(0.5, disc.below * factor),
        above=max(0.5, disc.above * factor),
    )


class _BlurDiscDrops(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        target = coverage * height * width

        def footprint(disc: _Disc) -> tuple[Box, Mask]:
            box, alpha = _disc_alpha(disc, height, width)
            return box, alpha >= 0.5

        discs = _fill(
            target, (height, width), _discs(rng, height, width, target), footprint, _shrink_disc
        )
        alpha = np.zeros((height, width), np.float32)
        gain = np.ones((height, width), np.float32)
        lift = np.zeros((height, width), np.float32)
        hold = np.ones((height, width), np.float32)
        for disc in discs:
            box, patch = _disc_alpha(disc, height, width)
            # Where drops overlap, the more opaque one's tone wins.
            top = patch > alpha[box]
            alpha[box] = np.maximum(alpha[box], patch)
            gain[box][top], lift[box][top], hold[box][top] = disc.gain, disc.lift, disc.hold
        self._box = _bbox(alpha > 0)
        self._alpha, self._gain, self._lift, self._hold = (
            m[self._box] for m in (alpha, gain, lift, hold)
        )
        self._sigma = max(1.5, rng.uniform(0.018, 0.032) * width)
        super().__init__("drops", "blurdisc", alpha >= 0.5)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        # One large blur of the whole frame: a drop far out of focus smears what is behind it.
        blurred = _wide_blur(image, self._sigma)[self._box]
        layer = blurred * self._gain[..., None] + self._lift[..., None]
        alpha = _keep(self._alpha, self._hold, amount, 0.04)
        return _blend(image, self._box, alpha, layer)


class _BlurDiscMist(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        field = _fbm(rng, (height, width), rng.uniform(1.5, 4.0), 3, 0.45)
        level = _top_threshold(field, coverage)
        soft = rng.uniform(0.2, 0.5)  # in units of the field's std: how gradual the patch edges are
        self._strength = _smoothstep(level - soft, level + soft, field)
        self._contrast_loss = rng.uniform(0.35, 0.7)
        grey = rng.uniform(175.0, 230.0)
        self._veil = np.array([grey - 4.0, grey, grey + rng.uniform(0.0, 10.0)], np.float32)
        self._sigma = max(0.8, rng.uniform(0.004, 0.012) * width)
        super().__init__("mist", "blurdisc", field >= level)

    def _apply(self, image: RGB, amount: float) -> RGB:
        box = (slice(None), slice(None))
        veil = _wide_blur(image, self._sigma) * np.float32(1.0 - self._contrast_loss)
        veil += self._veil * np.float32(self._contrast_loss)
        return _blend(image, box, self._strength * np.float32(amount), veil)


_DUST_COLOURS = np.array([[128, 124, 118], [138, 116, 88], [108, 100, 92], [150, 136, 112]])
_MUD_COLOURS = np.array([[66, 48, 32], [118, 102, 76], [90, 88, 84], [84, 62, 40]])


class _BlurDiscDust(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        peak = rng.uniform(0.2, 0.6)
        smudge = _fbm(rng, (height, width), rng.uniform(3.0, 8.0), 4, 0.55)
        # Specks: dust grains big enough to see, most where the smudge is, some anywhere.
        specks = np.zeros((height, width), np.float32)
        count = int(coverage * height * width * rng.uniform(0.002, 0.008)) + 2
        for _ in range(count):
            x, y = int(rng.integers(width)), int(rng.integers(height))
            if smudge[y, x] < 0.5 and rng.random() < 0.7:
                continue
            radius = max(1, round(rng.uniform(0.6, 2.2) * scale * 2) // 2)
            cv2.circle(specks, (x, y), radius, float(peak * rng.uniform(0.6, 1.0)), -1)
        speck_mask = specks >= 0.5 * peak
        level = _top_threshold(smudge, coverage, speck_mask)
        soft = rng.uniform(0.25, 0.6)
        profile = np.maximum(peak * _smoothstep(level - soft, level + soft, smudge), specks)
        mask = profile >= 0.5 * peak
        # Fine grain: dust is not a film; its opacity flickers from pixel to pixel.
        grain = cv2.GaussianBlur(
            rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.7
        )
        opacity = np.clip(profile * (1.0 + 0.9 * np.asarray(grain, np.float32)), 0.0, 0.75)
        self._box = _bbox(opacity > 0.002)
        self._opacity = np.asarray(opacity[self._box], np.float32)
        base = _DUST_COLOURS[rng.integers(len(_DUST_COLOURS))] + rng.normal(0.0, 8.0, 3)
        self._colour = np.asarray(base, np.float32)
        super().__init__("dust", "blurdisc", mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        layer = np.broadcast_to(self._colour, (*self._opacity.shape, 3))
        return _blend(image, self._box, self._opacity * np.float32(amount), layer)


class _BlurDiscMud(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width
        blobs = int(rng.integers(1, 7))
        xs, ys = _grid((slice(0, height), slice(0, width)))
        envelope = np.zeros((height, width), np.float32)
        scatter = _Scatter(rng, height, width, target / (height * width))
        centres = [scatter.point() for _ in range(blobs)]
        for cx, cy in centres:
            sigma = math.sqrt(target / (blobs * math.pi)) * rng.uniform(0.6, 1.3)
            bump = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / np.float32(2.0 * sigma * sigma))
            envelope = np.maximum(envelope, bump.astype(np.float32))
        field = envelope + np.float32(rng.uniform(0.25, 0.55)) * _fbm(
            rng, (height, width), rng.uniform(4.0, 10.0), 5, 0.55
        )
        spatter = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(2, 12))):
            cx, cy = centres[int(rng.integers(blobs))]
            reach = math.sqrt(target / blobs) * rng.uniform(0.6, 1.4)
            turn = rng.uniform(0.0, 2.0 * math.pi)
            at = (round(cx + reach * math.cos(turn)), round(cy + reach * math.sin(turn)))
            cv2.circle(spatter, at, max(1, round(rng.uniform(1.0, 3.5) * scale)), 1, -1)
        dots = spatter.astype(np.bool_)
        mask = (field >= _top_threshold(field, coverage, dots)) | dots
        edge = max(0.75, rng.uniform(2.0, 6.0) * scale)
        alpha = np.clip(0.5 + _signed_distance(mask) / np.float32(edge), 0.0, 1.0)
        self._box = _bbox(alpha > 0)
        inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
        # Thicker mud in the middle of a blob is darker; a faint mottling keeps it from looking
        # like a flat paint fill.
        depth = np.clip(inside / np.float32(4.0 * edge + 1.0), 0.0, 1.0)
        mottle = _fbm(rng, (height, width), rng.uniform(20.0, 40.0), 2, 0.5)
        shade = 1.05 - 0.2 * depth + 0.04 * mottle
        base = _MUD_COLOURS[rng.integers(len(_MUD_COLOURS))] + rng.normal(0.0, 7.0, 3)
        colour = shade[..., None] * base.astype(np.float32)[None, None, :]
        self._colour = np.asarray(colour[self._box], np.float32)
        self._alpha = np.asarray(alpha[self._box], np.float32)
        # It washes off in patches, not uniformly thinner.
        hold = 0.1 + 0.9 * _smoothstep(-2.0, 2.0, _fbm(rng, (height, width), 5.0, 2, 0.5))
        self._hold = np.asarray(hold[self._box], np.float32)
        super().__init__("mud", "blurdisc", mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        alpha = _keep(self._alpha, self._hold, amount, 0.1)
        return _blend(image, self._box, alpha, self._colour)


# ----------------------------------------------------------------------------- refract family


class _RefractDrops(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width
        scatter = _Scatter(rng, height, width, target / (height * width))
        # Metaballs: a sum of Gaussian bumps, cut at one level; close drops merge into one.
        # Beside the height, each pixel keeps its bumps' weighted centre, size and optical
        # strength, so a merged drop bends light like the drops it grew from.
        shape = (height, width)
        field, weight_x, weight_y, weight_r, weight_k = (
            np.zeros(shape, np.float32) for _ in range(5)
        )
        bumps: list[tuple[float, float, float]] = []
        small = max(0.9, rng.uniform(3.0, 7.0) * scale)
        largest = max(1.5 * small, min(0.09 * min(height, width), math.sqrt(0.12 * target) / 2.1))
        tail = rng.uniform(2.0, 3.2)
        level, laid = 0.0, 0.0
        while level < 0.2 and len(bumps) < 20000:
            while laid < target * 1.4 and len(bumps) < 20000:
                sigma = min(largest, small * (1.0 - rng.random()) ** (-1.0 / tail))
                x, y = scatter.point()
                # How much wider than itself a drop's view is: a short focal length.
                widen = rng.uniform(1.6, 3.0)
                reach = 3.5 * sigma
                box = _clip_box(
                    x - reach, x + reach, y - reach, y + reach, height=height, width=width
                )
                if box != _EMPTY_BOX:
                    gx, gy = _grid(box)
                    d2 = (gx - np.float32(x)) ** 2 + (gy - np.float32(y)) ** 2
                    bump = np.exp(-d2 / np.float32(2.0 * sigma * sigma))
                    field[box] += bump
                    weight_x[box] += bump * np.float32(x)
                    weight_y[box] += bump * np.float32(y)
                    weight_r[box] += bump * np.float32(sigma)
                    weight_k[box] += bump * np.float32(widen)
                    bumps.append((x, y, sigma))
                laid += math.pi * (1.18 * sigma) ** 2  # a lone bump's area above half height
            level = _top_threshold(field, coverage)
            laid -= target * 0.3  # too much overlap lowered the level: lay some more
        level = max(level, 1e-3)
        mask = field >= level
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        inside = np.asarray(
            cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5), np.float32
        )

        self._box = _bbox(mask, pad=3)
        box = self._box
        xs, ys = _grid(box)
        inner = mask[box]
        total = np.maximum(field[box], np.float32(1e-6))
        centre_x, centre_y = weight_x[box] / total, weight_y[box] / total
        # A lone bump of width σ is cut at this radius by the level.
        radius = np.maximum(
            weight_r[box] / total * np.float32(math.sqrt(2.0 * math.log(max(1.0 / level, 1.01)))),
            np.float32(1.0),
        )
        rel = 1.0 - np.clip(inside[box] / radius, 0.0, 1.0)
        # An inverted view (negative gain about the centre), bending harder near the rim, and
        # looking a little off-axis (drops nearer the frame edge see further out).
        k = weight_k[box] / total * (1.0 + 0.6 * rel * rel)
        look_x = np.float32(rng.uniform(-0.15, 0.15)) * (centre_x - width / 2)
        look_y = np.float32(rng.uniform(-0.15, 0.15)) * (centre_y - height / 2)
        self._map_x = np.asarray(
            np.where(inner, centre_x + look_x - k * (xs - centre_x), xs), np.float32
        )
        self._map_y = np.asarray(
            np.where(inner, centre_y + look_y - k * (ys - centre_y), ys), np.float32
        )

        edge = max(0.7, 1.2 * scale)
        self._alpha = np.asarray(
            np.clip(0.5 + _signed_distance(mask)[box] / np.float32(edge), 0.0, 1.0), np.float32
        )
        # Fresnel rim: near the contact line the surface is steep, little light gets through.
        rim_width = np.maximum(0.8, 0.2 * radius)
        rim_strength, transmission = rng.uniform(0.35, 0.65), rng.uniform(0.88, 1.0)
        rim = np.exp(-np.where(inner, inside[box], 0.0) / rim_width)
        self._shade = np.asarray(transmission - rim_strength * rim, np.float32)
        # A glint of the sky on each drop's cap, all from one light direction.
        light = rng.uniform(0.0, 2.0 * math.pi)
        spec = np.zeros(shape, np.float32)
        for x, y, sigma in bumps:
            # A bump buried in a merged drop is no cap of its own: no glint of its own.
            if field[min(height - 1, round(y)), min(width - 1, round(x))] > 1.5:
                continue
            r = sigma * 1.18
            gx0 = x + 0.45 * r * math.cos(light)
            gy0 = y + 0.45 * r * math.sin(light)
            size = max(0.6, 0.14 * r)
            spot = _clip_box(
                gx0 - 3 * size,
                gx0 + 3 * size,
                gy0 - 3 * size,
                gy0 + 3 * size,
                height=height,
                width=width,
            )
            if (
                spot != _EMPTY_BOX
                and mask[min(height - 1, max(0, round(gy0))), min(width - 1, max(0, round(gx0)))]
            ):
                sx, sy = _grid(spot)
                d2 = (sx - np.float32(gx0)) ** 2 + (sy - np.float32(gy0)) ** 2
                spec[spot] = np.maximum(
                    spec[spot],
                    rng.uniform(90.0, 180.0) * np.exp(-d2 / np.float32(2.0 * size * size)),
                )
        self._spec = np.asarray(spec[box] * inner, np.float32)
        # Blowing thins drops from the contact line inwards, and some drops (merged ones
        # together) cling harder than others.
        hold_of = rng.uniform(0.0, 1.0, count).astype(np.float32)
        hold = 0.5 * hold_of[labels[box]] + 0.5 * (1.0 - rel)
        self._hold = np.asarray(0.05 + 0.95 * hold, np.float32)
        self._defocus = max(0.6, rng.uniform(1.0, 2.5) * scale)
        super().__init__("drops", "refract", mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        seen = cv2.remap(
            image, self._map_x, self._map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        # The drop sits centimetres from the lens: far out of focus.
        seen = cv2.GaussianBlur(seen, (0, 0), self._defocus).astype(np.float32)
        layer = seen * self._shade[..., None] + self._spec[..., None]
        alpha = _keep(self._alpha, self._hold, amount, 0.04)
        return _blend(image, self._box, alpha, layer)


class _RefractMist(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        xs, ys = _grid((slice(0, height), slice(0, width)))
        # Condensation starts where the housing is coldest, at the edges; some edges more.
        reach = rng.uniform(0.3, 1.5, 4).astype(np.float32)
        side = np.float32(min(height, width))
        distances = np.stack(
            [
                xs / reach[0],
                (width - 1 - xs) / reach[1],
                ys / reach[2],
                (height - 1 - ys) / reach[3],
            ]
        )
        inward = distances.min(axis=0) / side
        field = _fbm(rng, (height, width), rng.uniform(2.0, 5.0), 4, 0.5) * np.float32(
            rng.uniform(0.08, 0.25)
        ) - np.asarray(inward, np.float32)
        level = _top_threshold(field, coverage)
        soft = rng.uniform(0.03, 0.08)
        strength = _smoothstep(level - soft, level + soft, field)
        self._fog = np.asarray(strength * np.float32(1.0 - rng.uniform(0.1, 0.35)), np.float32)
        self._airlight = np.float32(rng.uniform(0.08, 0.2)) * np.array(
            [rng.uniform(225, 245), 240.0, rng.uniform(235, 255)], np.float32
        )
        self._sigma = max(2.0, rng.uniform(0.03, 0.05) * width)
        super().__init__("mist", "refract", field >= level)

    def _apply(self, image: RGB, amount: float) -> RGB:
        box = (slice(None), slice(None))
        # I = t·J + (1 − t)·(blur(J) + airlight): blend towards a scattered, lifted view.
        scattered = _wide_blur(image, self._sigma) + self._airlight
        return _blend(image, box, self._fog * np.float32(amount), scattered)


class _RefractDust(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        field = _fbm(rng, (height, width), rng.uniform(2.0, 6.0), 3, 0.5)
        level = _top_threshold(field, coverage)
        density = _smoothstep(level - 0.15, level + 0.15, field)
        mask = field >= level
        # Particles land with a probability that follows the density (squared: sharper sides).
        fill = rng.uniform(0.15, 0.35)
        sizes = np.array([1, 2, 3, 4])
        share = np.array([0.45, 0.3, 0.15, 0.1])
        mean_area = float((share * (np.maximum(1, np.round(sizes * scale)) ** 2)).sum())
        wanted = fill * max(1.0, float(mask.sum())) / mean_area
        accept = density**2
        trials = int(wanted / max(float(accept.mean()), 1e-6) * 1.1) + 1
        px = rng.integers(0, width, trials)
        py = rng.integers(0, height, trials)
        kept = rng.random(trials) < accept[py, px]
        px, py = px[kept], py[kept]
        size_of = rng.choice(len(sizes), size=px.size, p=share)
        opacity_of = rng.uniform(0.3, 0.9, px.size).astype(np.float32)
        tone_of = rng.uniform(0.75, 1.2, px.size).astype(np.float32)
        opacity = np.zeros((height, width), np.float32)
        tone = np.ones((height, width), np.float32)
        for which, diameter in enumerate(sizes):
            pixels = max(1, round(diameter * scale))
            chosen = size_of == which
            layer = np.zeros((height, width), np.float32)
            shade = np.zeros((height, width), np.float32)
            np.maximum.at(layer, (py[chosen], px[chosen]), opacity_of[chosen])
            shade[py[chosen], px[chosen]] = tone_of[chosen]
            if pixels > 1:
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (pixels, pixels))
                layer = np.asarray(cv2.dilate(layer, kernel), np.float32)
                shade = np.asarray(cv2.dilate(shade, kernel), np.float32)
            top = layer > opacity
            opacity = np.maximum(opacity, layer)
            tone[top] = shade[top]
        # Forward scattering: light bent around each grain makes a faint glow about it.
        halo = cv2.GaussianBlur(opacity, (0, 0), max(1.0, 3.0 * scale))
        glow = rng.uniform(25.0, 55.0) / max(fill, 1e-3)
        self._box = _bbox((opacity > 0) | (halo > 1e-3))
        box = self._box
        self._opacity = np.asarray(opacity[box], np.float32)
        self._halo = np.asarray(halo[box] * np.float32(glow), np.float32)[..., None]
        base = np.array([rng.uniform(70, 130), 0.0, 0.0])
        base[1], base[2] = base[0] * rng.uniform(0.85, 0.97), base[0] * rng.uniform(0.7, 0.9)
        self._colour = np.asarray(tone[box][..., None] * base[None, None, :], np.float32)
        super().__init__("dust", "refract", mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        a = np.float32(amount)
        return _blend(image, self._box, self._opacity * a, self._colour, self._halo * a)


@dataclass(frozen=True, slots=True)
class _Splash:
    """One mud splash: an irregular core with spikes, satellite drops and drips running down."""

    x: float
    y: float
    radius: float
    harmonics: tuple[tuple[float, float], ...]
    """(amplitude, phase) of the outline's harmonics 2, 3, …"""
    spikes: tuple[tuple[float, float, float], ...]
    """(angle, length, angular width); length in radii."""
    satellites: tuple[tuple[float, float, float], ...]
    """(angle, distance, radius) in radii."""
    drips: tuple[tuple[float, float, float], ...]
    """(x offset, length, width) in radii."""


def _splashes(
    rng: np.random.Generator, height: int, width: int, target: float
) -> Iterator[_Splash]:
    scatter = _Scatter(rng, height, width, target / (height * width))
    typical = math.sqrt(target / (math.pi * rng.uniform(1.0, 6.0)))
    while True:
        x, y = scatter.point()
        harmonics = tuple(
            (rng.uniform(0.0, 0.18 / k), rng.uniform(0.0, 2.0 * math.pi)) for k in range(2, 7)
        )
        spikes = tuple(
            (rng.uniform(0.0, 2.0 * math.pi), rng.uniform(0.3, 1.2), rng.uniform(0.06, 0.2))
            for _ in range(int(rng.integers(0, 7)))
        )
        satellites = tuple(
            (rng.uniform(0.0, 2.0 * math.pi), rng.uniform(1.3, 2.4), rng.uniform(0.06, 0.2))
            for _ in range(int(rng.integers(0, 6)))
        )
        drips = tuple(
            (rng.uniform(-0.6, 0.6), rng.uniform(0.8, 3.0), rng.uniform(0.12, 0.3))
            for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.6 else 0)
        )
        yield _Splash(x, y, typical * rng.uniform(0.5, 1.3), harmonics, spikes, satellites, drips)


def _splash_footprint(splash: _Splash, height: int, width: int) -> tuple[Box, Mask]:
    r = splash.radius
    theta = np.linspace(0.0, 2.0 * math.pi, 120, endpoint=False)
    radial = np.ones_like(theta)
    for k, (amplitude, phase) in enumerate(splash.harmonics, start=2):
        radial += amplitude * np.cos(k * theta + phase)
    for angle, length, spread in splash.spikes:
        gap = np.angle(np.exp(1j * (theta - angle)))
        radial += length * np.exp(-((gap / spread) ** 2))
    outline = np.stack(
        [splash.x + r * radial * np.cos(theta), splash.y + r * radial * np.sin(theta)], 1
    )
    reach_x = r * (float(radial.max()) + 2.6)
    reach_down = r * (max([d[1] for d in splash.drips], default=0.0) + 2.6)
    box = _clip_box(
        splash.x - reach_x,
        splash.x + reach_x,
        splash.y - reach_x,
        splash.y + reach_down,
        height=height,
        width=width,
    )
    if box == _EMPTY_BOX:
        return box, np.zeros((0, 0), np.bool_)
    canvas = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.uint8)
    origin = np.array([box[1].start, box[0].start], np.float64)
    shift = 4  # sub-pixel vertices: small splashes stay round

    def points(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
        return np.round((xy - origin) * (1 << shift)).astype(np.int32)

    def disc(x: float, y: float, radius: float) -> None:
        centre = (round((x - origin[0]) * 16), round((y - origin[1]) * 16))
        cv2.circle(canvas, centre, max(8, round(radius * 16)), 1, -1, cv2.LINE_8, shift)

    cv2.fillPoly(canvas, [points(outline)], 1, cv2.LINE_8, shift)
    for angle, distance, size in splash.satellites:
        disc(
            splash.x + r * distance * math.cos(angle),
            splash.y + r * distance * math.sin(angle),
            r * size,
        )
    for offset, length, thickness in splash.drips:
        x0, y0, y1 = splash.x + offset * r, splash.y + 0.3 * r, splash.y + (0.8 + length) * r
        half0, half1 = thickness * r, 0.5 * thickness * r
        quad = np.array([[x0 - half0, y0], [x0 + half0, y0], [x0 + half1, y1], [x0 - half1, y1]])
        cv2.fillPoly(canvas, [points(quad)], 1, cv2.LINE_8, shift)
        disc(x0, y1, 1.3 * half1)  # the bead gathering at a drip's end
    return box, canvas.astype(np.bool_)


class _RefractMud(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width

        def footprint(splash: _Splash) -> tuple[Box, Mask]:
            return _splash_footprint(splash, height, width)

        def shrink(splash: _Splash, factor: float) -> _Splash:
            return replace(splash, radius=splash.radius * factor)

        splashes = _fill(
            target, (height, width), _splashes(rng, height, width, target), footprint, shrink
        )
        hard = np.zeros((height, width), np.bool_)
        hold = np.ones((height, width), np.float32)
        for splash in splashes:
            box, patch = footprint(splash)
            hard[box] |= patch
            hold[box][patch] = rng.uniform(0.1, 1.0)
        rim = max(1.0, rng.uniform(3.0, 8.0) * scale)
        fade = max(0.8, 0.4 * rim)
        distance = _signed_distance(hard)
        # Opaque core, a thinner semi-transparent rim inside the edge, a short fade outside.
        alpha = np.where(
            distance >= 0,
            0.55 + 0.45 * _smoothstep(0.0, rim, distance),
            0.55 * np.clip(1.0 + distance / np.float32(fade), 0.0, 1.0),
        ).astype(np.float32)
        self._box = _bbox(alpha > 0)
        box = self._box
        hold = np.where(hard, hold, cv2.dilate(hold * hard, np.ones((5, 5), np.uint8)))
        # Water washes a splash from its thin edge inwards, and some splashes stick harder.
        depth = np.clip(distance / np.float32(3.0 * rim), 0.0, 1.0)
        hold = 0.5 * hold + 0.5 * depth
        self._hold = np.asarray(np.maximum(hold[box], 0.05), np.float32)
        self._alpha = np.asarray(alpha[box], np.float32)
        texture = _fbm(rng, (height, width), rng.uniform(12.0, 30.0), 4, 0.6)[box]
        base = rng.uniform(85.0, 125.0)
        brown = np.array([base, base * rng.uniform(0.68, 0.8), base * rng.uniform(0.42, 0.58)])
        albedo = (1.0 + 0.22 * texture)[..., None] * brown.astype(np.float32)
        self._albedo = np.asarray(np.clip(albedo, 0, 255), np.float32)
        super().__init__("mud", "refract", alpha >= 0.5)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        alpha = _keep(self._alpha, self._hold, amount, 0.04)
        return _blend(image, self._box, alpha, self._albedo)


_Builder: TypeAlias = Callable[[np.random.Generator, int, int, float], Soiling]
_BUILDERS: dict[tuple[Family, SoilingKind], _Builder] = {
    ("blurdisc", "drops"): _BlurDiscDrops,
    ("blurdisc", "mist"): _BlurDiscMist,
    ("blurdisc", "dust"): _BlurDiscDust,
    ("blurdisc", "mud"): _BlurDiscMud,
    ("refract", "drops"): _RefractDrops,
    ("refract", "mist"): _RefractMist,
    ("refract", "dust"): _RefractDust,
    ("refract", "mud"): _RefractMud,
}
