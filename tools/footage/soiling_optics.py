"""Footage bank: the `optics` lens soiling family (train), registered in `soiling.render_soiling`.

A third, separately written look, to widen what training sees beyond `sim` and `blurdisc`:

Drops are many small lenses as well as a few big ones (radius from about 1 px at 640 px wide up
to a size that grows with the coverage asked), scattered, in tight clusters, or in sprays of fine
droplets along a few lines (a wheel's spray). Each drop shows a magnified (not inverted), shifted,
defocused copy of the background just behind it, with a slightly irregular outline, a dark rim
where light leaves the drop sideways, a small specular glint towards the light, and a lens-wide
light or dark tone; the smallest read as dark specks with a glint. Mist is condensation that
creeps in from one side or corner of the housing (a ramp from an edge broken up by low-frequency
noise): contrast loss towards a glow of the scene itself (bright areas bloom). Dust is dried
water spots (rings of mineral residue with a faint film inside), soft smudges and wiper streaks
all in one direction: a semi-transparent whitish, beige or grey film, 25–65 % opaque, that also
scatters a little of the scene behind it. Mud is opaque specks, splats with lobed outlines and
smears, down to specks of 1–2 px, in a wide palette (wet soil, clay, red clay, road grime, tar,
sand) with a darker drying ring and mottled albedo; soft 0.5–3 px edges (softer along a smear's
length, which stretches them up to 4.5 times); it washes off element by element.

Masks follow the same truth as the other families: drops and mud their footprint, mist and dust
where their effect reaches half its maximum strength.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from tools.footage.soiling import (
    _EMPTY_BOX,
    RGB,
    Box,
    Family,
    Float,
    Mask,
    Soiling,
    SoilingKind,
    _bbox,
    _blend,
    _clip_box,
    _copy,
    _fbm,
    _fill,
    _fold,
    _grid,
    _keep,
    _scale,
    _smoothstep,
    _top_threshold,
    _wide_blur,
)

FAMILY: Family = "optics"


# ----------------------------------------------------------------------------- shared geometry


@dataclass(frozen=True, slots=True)
class _Blob:
    """One element: an ellipse of radius `r` (aspect `stretch`, turned by `angle`) whose outline
    wobbles by two angular harmonics."""

    x: float
    y: float
    r: float
    stretch: float
    angle: float
    wobble: tuple[float, float, float, float]
    """Amplitudes and phases of the 2nd and 3rd (or 3rd and 5th, for mud) harmonics."""
    edge: float
    """Soft edge in pixels."""
    hold: float
    tone: float
    """Per-element brightness or colour factor."""


def _rho(blob: _Blob, box: Box, lobes: tuple[int, int] = (2, 3)) -> tuple[Float, Float, Float]:
    """Normalised radius (1 on the outline) and the offsets from the centre, over `box`."""
    xs, ys = _grid(box)
    dx, dy = xs - np.float32(blob.x), ys - np.float32(blob.y)
    cos, sin = np.float32(math.cos(blob.angle)), np.float32(math.sin(blob.angle))
    along = (dx * cos + dy * sin) / np.float32(blob.r * blob.stretch)
    across = (dy * cos - dx * sin) / np.float32(blob.r)
    phi = np.arctan2(across, along)
    a1, p1, a2, p2 = blob.wobble
    outline = 1.0 + a1 * np.cos(lobes[0] * phi + p1) + a2 * np.cos(lobes[1] * phi + p2)
    rho = np.sqrt(along * along + across * across) / np.maximum(outline, 0.3)
    return np.asarray(rho, np.float32), dx, dy


def _blob_box(blob: _Blob, height: int, width: int, margin: float = 1.0) -> Box:
    reach = blob.r * max(1.0, blob.stretch) * 1.6 + blob.edge + margin
    return _clip_box(
        blob.x - reach, blob.x + reach, blob.y - reach, blob.y + reach, height=height, width=width
    )


def _blob_alpha(blob: _Blob, height: int, width: int) -> tuple[Box, Float, Float, Float, Float]:
    box = _blob_box(blob, height, width)
    if box == _EMPTY_BOX:
        empty = np.zeros((0, 0), np.float32)
        return box, empty, empty, empty, empty
    rho, dx, dy = _rho(blob, box)
    alpha = np.clip(0.5 + (1.0 - rho) * np.float32(blob.r / blob.edge), 0.0, 1.0)
    return box, np.asarray(alpha, np.float32), rho, dx, dy


def _shrink_blob(blob: _Blob, factor: float) -> _Blob:
    return replace(blob, r=max(0.6, blob.r * factor))


class _Spots:
    """Where elements land: uniformly, in a few tight clusters, or along spray lines."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        self.rng, self.height, self.width = rng, height, width
        self.mode = str(rng.choice(["uniform", "clusters", "spray"], p=[0.35, 0.35, 0.3]))
        count = int(rng.integers(2, 7))
        self.centres = rng.uniform((0.0, 0.0), (width, height), size=(count, 2))
        least = 0.5 * math.sqrt(coverage * height * width / count)
        self.spread = np.maximum(rng.uniform(0.02, 0.08, size=count) * width, least)
        self.directions = rng.uniform(0.0, 2.0 * math.pi, size=count)
        self.lengths = rng.uniform(0.15, 0.5, size=count) * width
        self.drawn = 0

    def point(self) -> tuple[float, float]:
        if self.mode == "uniform":
            x, y = self.rng.uniform((0.0, 0.0), (self.width, self.height))
            return float(x), float(y)
        self.drawn += 1
        if self.drawn % 300 == 0:
            self.spread *= 1.3
            self.lengths *= 1.2
        i = int(self.rng.integers(len(self.centres)))
        cx, cy = self.centres[i]
        if self.mode == "clusters":
            x, y = self.rng.normal((cx, cy), self.spread[i])
        else:
            t = self.rng.uniform(0.0, 1.0) ** 0.7 * self.lengths[i]
            side = self.rng.normal(0.0, 0.25 * self.spread[i] * (0.3 + t / self.lengths[i]))
            turn = self.directions[i]
            x = cx + t * math.cos(turn) - side * math.sin(turn)
            y = cy + t * math.sin(turn) + side * math.cos(turn)
        return _fold(float(x), self.width), _fold(float(y), self.height)


def _radii(
    rng: np.random.Generator, width: int, target: float, smallest: float, frame_side: int
) -> Callable[[], float]:
    """A draw of element radii: a power law from `smallest` up to a size that grows with the
    coverage asked (small targets are many small elements, large ones include big ones)."""
    share = rng.uniform(0.03, 0.3)
    largest = max(2.5 * smallest, min(0.14 * frame_side, math.sqrt(share * target / math.pi)))
    tail = rng.uniform(1.3, 2.4)

    def draw() -> float:
        return float(min(largest, smallest * (1.0 - rng.random()) ** (-1.0 / tail)))

    del width
    return draw


def _wobble(rng: np.random.Generator, amount: float) -> tuple[float, float, float, float]:
    a1, a2 = rng.uniform(0.0, amount, 2)
    p1, p2 = rng.uniform(0.0, 2.0 * math.pi, 2)
    return float(a1), float(p1), float(a2), float(p2)


# -------------------------------------------------------------------------------------- drops


class _OpticsDrops(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width
        spots = _Spots(rng, height, width, coverage)
        smallest = max(0.7, rng.uniform(1.0, 2.2) * scale)
        radius = _radii(rng, width, target, smallest, min(height, width))
        spray = spots.mode == "spray"
        round_ness = rng.uniform(0.0, 0.15)

        def drops() -> Iterator[_Blob]:
            while True:
                r = radius() * (0.6 if spray else 1.0)
                x, y = spots.point()
                yield _Blob(
                    x=x,
                    y=y,
                    r=max(0.6, r),
                    stretch=float(rng.uniform(0.85, 1.25)),
                    angle=float(rng.uniform(0.0, math.pi)),
                    wobble=_wobble(rng, round_ness),
                    edge=float(rng.uniform(0.5, 1.1)),
                    hold=float(rng.uniform(0.05, 1.0)),
                    tone=float(rng.normal(0.0, 1.0)),
                )

        def footprint(blob: _Blob) -> tuple[Box, Mask]:
            box, alpha, *_ = _blob_alpha(blob, height, width)
            return box, alpha >= 0.5

        placed = _fill(target, (height, width), drops(), footprint, _shrink_blob)
        magnify = rng.uniform(0.3, 0.8)  # < 1: a small area behind the drop fills all of it
        bulge = rng.uniform(0.0, 0.8)
        shift = rng.uniform(0.0, 0.6)
        shift_turn = rng.normal(-math.pi / 2, 0.8)  # drops mostly show what is above them
        light_turn = rng.normal(-math.pi / 2 - 0.5, 0.7)
        glint = rng.uniform(0.0, 110.0)
        rim_px = rng.uniform(0.8, 2.5) * scale
        rim_dark = rng.uniform(0.3, 0.85)
        tone = rng.uniform(-1.0, 1.0)  # this lens's drops a little lighter (> 0) or darker
        alpha = np.zeros((height, width), np.float32)
        map_x, map_y = _grid((slice(0, height), slice(0, width)))
        shade = np.ones((height, width), np.float32)
        glow = np.zeros((height, width), np.float32)
        hold = np.ones((height, width), np.float32)
        for blob in placed:
            box, patch, rho, dx, dy = _blob_alpha(blob, height, width)
            if box == _EMPTY_BOX:
                continue
            top = patch > alpha[box]
            alpha[box] = np.maximum(alpha[box], patch)
            zoom = np.float32(magnify) * (1.0 + np.float32(bulge) * np.minimum(rho, 1.0) ** 2)
            offset = shift * blob.r
            sx = np.float32(blob.x + offset * math.cos(shift_turn)) + dx * zoom
            sy = np.float32(blob.y + offset * math.sin(shift_turn)) + dy * zoom
            band = max(0.15, min(1.0, rim_px / blob.r))
            dark = rim_dark * _smoothstep(1.0 - band, 1.0, rho)
            gain = 1.0 + 0.08 * tone + 0.04 * blob.tone
            spot_x = blob.x + 0.45 * blob.r * math.cos(light_turn)
            spot_y = blob.y + 0.45 * blob.r * math.sin(light_turn)
            spread = max(0.5, 0.2 * blob.r)
            xs, ys = dx + np.float32(blob.x - spot_x), dy + np.float32(blob.y - spot_y)
            spot = np.exp(-(xs * xs + ys * ys) / np.float32(2.0 * spread * spread))
            strength = glint * float(rng.uniform(0.4, 1.0))
            for arr, value in (
                (map_x, sx),
                (map_y, sy),
                (shade, np.float32(gain) * (1.0 - dark)),
                (glow, np.float32(strength) * spot),
                (hold, np.full_like(patch, blob.hold)),
            ):
                arr[box][top] = np.asarray(value, np.float32)[top]
        self._box = _bbox(alpha > 0)
        self._alpha, self._shade, self._glow, self._hold = (
            np.ascontiguousarray(m[self._box]) for m in (alpha, shade, glow, hold)
        )
        self._map_x = np.ascontiguousarray(map_x[self._box])
        self._map_y = np.ascontiguousarray(map_y[self._box])
        self._sigma = max(0.5, rng.uniform(0.5, 2.0) * scale)
        super().__init__("drops", FAMILY, alpha >= 0.5)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        # The drop is out of focus: what it magnifies is blurred, and the magnification widens it.
        soft = cv2.GaussianBlur(image, (0, 0), self._sigma)
        seen = cv2.remap(
            soft, self._map_x, self._map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        ).astype(np.float32)
        layer = seen * self._shade[..., None] + self._glow[..., None]
        alpha = _keep(self._alpha, self._hold, amount, 0.04)
        return _blend(image, self._box, alpha, layer)


# --------------------------------------------------------------------------------------- mist


class _OpticsMist(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        xs, ys = _grid((slice(0, height), slice(0, width)))
        u, v = xs / np.float32(width - 1), ys / np.float32(height - 1)
        # Condensation starts where the housing is coldest: one edge, or a corner.
        ramps = (1.0 - u, u, 1.0 - v, v)
        first = int(rng.integers(4))
        ramp = ramps[first]
        if rng.random() < 0.5:
            second = int(rng.choice([i for i in range(4) if i // 2 != first // 2]))
            ramp = np.maximum(ramp, ramps[second])
        noise = _fbm(rng, (height, width), rng.uniform(1.0, 3.0), 2, 0.5)
        field = np.asarray(ramp * np.float32(rng.uniform(2.0, 4.0)) + 0.6 * noise, np.float32)
        level = _top_threshold(field, coverage)
        soft = rng.uniform(0.25, 0.6)
        peak = rng.uniform(0.55, 0.9)
        self._strength = np.asarray(
            peak * _smoothstep(level - soft, level + soft, field), np.float32
        )
        self._glow_sigma = max(2.0, rng.uniform(0.03, 0.08) * width)
        self._gain = np.float32(rng.uniform(0.95, 1.25))
        self._lift = np.float32(rng.uniform(15.0, 60.0))
        super().__init__("mist", FAMILY, field >= level)

    def _apply(self, image: RGB, amount: float) -> RGB:
        box = (slice(None), slice(None))
        veil = _wide_blur(image, self._glow_sigma) * self._gain + self._lift
        return _blend(image, box, self._strength * np.float32(amount), veil)


# --------------------------------------------------------------------------------------- dust


_OPTICS_DUST_COLOURS = np.array(
    [[205, 202, 192], [178, 162, 136], [140, 138, 132], [150, 126, 96], [188, 184, 170]]
)


def _dust_profile(blob: _Blob, height: int, width: int, ring: float) -> tuple[Box, Float]:
    """An element's opacity (its own peak 1 × `tone`): a ring with a faint film (`ring` > 0) or
    a soft flat-topped smudge / streak."""
    box = _blob_box(blob, height, width)
    if box == _EMPTY_BOX:
        return box, np.zeros((0, 0), np.float32)
    rho, _, _ = _rho(blob, box)
    edge = np.float32(blob.edge / blob.r)
    inside = np.clip(0.5 + (1.0 - rho) / edge, 0.0, 1.0)
    if ring > 0:
        band = np.exp(-(((rho - np.float32(1.0 - ring / 2)) / np.float32(ring / 2)) ** 2))
        profile = np.maximum(0.3 * inside, band * inside)
    else:
        profile = inside
    return box, np.asarray(profile * np.float32(blob.tone), np.float32)


class _OpticsDust(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width
        spots = _Spots(rng, height, width, coverage)
        radius = _radii(rng, width, target, max(0.8, rng.uniform(1.5, 4.0) * scale), height)
        shares = rng.dirichlet([1.0, 1.0, 1.0])  # water spots, smudges, streaks
        wipe = rng.uniform(0.0, math.pi)
        ring = rng.uniform(0.25, 0.5)

        def elements() -> Iterator[tuple[_Blob, float]]:
            while True:
                which = int(rng.choice(3, p=shares))
                x, y = spots.point()
                r = radius()
                stretch = 1.0 if which == 0 else rng.uniform(1.0, 2.0)
                angle = rng.uniform(0.0, math.pi)
                if which == 2:
                    r, stretch, angle = r * 0.5, rng.uniform(4.0, 10.0), wipe + rng.normal(0, 0.1)
                blob = _Blob(
                    x=x,
                    y=y,
                    r=max(0.8, r),
                    stretch=float(stretch),
                    angle=float(angle),
                    wobble=_wobble(rng, 0.2),
                    edge=float(max(0.6, rng.uniform(0.8, 3.0) * scale)),
                    hold=float(rng.uniform(0.05, 1.0)),
                    tone=float(rng.uniform(0.7, 1.0)),
                )
                yield blob, (ring if which == 0 else 0.0)

        def footprint(element: tuple[_Blob, float]) -> tuple[Box, Mask]:
            box, profile = _dust_profile(element[0], height, width, element[1])
            return box, profile >= 0.5

        def shrink(element: tuple[_Blob, float], factor: float) -> tuple[_Blob, float]:
            return _shrink_blob(element[0], factor), element[1]

        placed = _fill(target, (height, width), elements(), footprint, shrink)
        peak = rng.uniform(0.25, 0.65)
        opacity = np.zeros((height, width), np.float32)
        hold = np.ones((height, width), np.float32)
        for blob, ring_width in placed:
            box, profile = _dust_profile(blob, height, width, ring_width)
            if box == _EMPTY_BOX:
                continue
            top = profile > opacity[box]
            opacity[box] = np.maximum(opacity[box], profile)
            hold[box][top] = blob.hold
        mask = opacity >= 0.5
        # Uneven deposit: the film is thicker in places (mask stays the element footprints).
        mottle = _fbm(rng, (height, width), rng.uniform(6.0, 16.0), 3, 0.6)
        opacity = opacity * np.float32(peak) * np.clip(1.0 + 0.2 * mottle, 0.6, 1.4)
        self._box = _bbox(opacity > 0.002)
        self._opacity = np.ascontiguousarray(opacity[self._box], np.float32)
        self._hold = np.ascontiguousarray(hold[self._box], np.float32)
        base = _OPTICS_DUST_COLOURS[rng.integers(len(_OPTICS_DUST_COLOURS))]
        self._colour = np.asarray(base + rng.normal(0.0, 6.0, 3), np.float32)
        self._scatter = np.float32(rng.uniform(0.1, 0.35))
        self._sigma = max(0.8, rng.uniform(1.0, 3.0) * scale)
        super().__init__("dust", FAMILY, mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        # A deposit scatters some of the light behind it: part of the layer is the scene, spread.
        spread = _wide_blur(image, self._sigma)[self._box]
        layer = self._colour * (1.0 - self._scatter) + spread * self._scatter
        opacity = _keep(self._opacity, self._hold, amount, 0.05)
        return _blend(image, self._box, opacity, layer)


# ---------------------------------------------------------------------------------------- mud


_OPTICS_MUD_COLOURS = np.array(
    [
        [52, 40, 30],  # wet soil
        [96, 70, 48],  # brown
        [140, 112, 82],  # dry clay
        [122, 72, 50],  # red clay
        [72, 72, 70],  # road grime
        [32, 30, 28],  # tar, oil
        [158, 142, 112],  # sand
    ]
)


def _mud_alpha(blob: _Blob, height: int, width: int) -> tuple[Box, Float, Float]:
    box = _blob_box(blob, height, width)
    if box == _EMPTY_BOX:
        empty = np.zeros((0, 0), np.float32)
        return box, empty, empty
    rho, _, _ = _rho(blob, box, lobes=(3, 5))
    alpha = np.clip(0.5 + (1.0 - rho) * np.float32(blob.r / blob.edge), 0.0, 1.0)
    return box, np.asarray(alpha, np.float32), rho


class _OpticsMud(Soiling):
    def __init__(self, rng: np.random.Generator, height: int, width: int, coverage: float) -> None:
        scale = _scale(width)
        target = coverage * height * width
        spots = _Spots(rng, height, width, coverage)
        mode = str(rng.choice(["specks", "splats", "mixed"]))
        smallest = max(0.7, rng.uniform(0.8, 2.0) * scale)
        radius = _radii(rng, width, target, smallest, min(height, width))
        splats = int(rng.integers(1, 5))
        splat_r = math.sqrt(target / (splats * math.pi))
        drawn = 0

        def elements() -> Iterator[_Blob]:
            nonlocal drawn
            while True:
                drawn += 1
                big = mode == "splats" or (mode == "mixed" and drawn <= splats)
                r = splat_r * rng.uniform(0.6, 1.1) if big else radius()
                stretch = rng.uniform(1.0, 1.4) if rng.random() < 0.7 else rng.uniform(2.0, 4.5)
                x, y = spots.point()
                yield _Blob(
                    x=x,
                    y=y,
                    r=max(0.7, float(r) / math.sqrt(stretch)),
                    stretch=float(stretch),
                    angle=float(rng.uniform(0.0, math.pi)),
                    wobble=_wobble(rng, 0.3 if big else 0.15),
                    edge=float(max(0.5, rng.uniform(0.5, 3.0) * scale)),
                    hold=float(rng.uniform(0.05, 1.0)),
                    tone=float(rng.uniform(0.8, 1.2)),
                )

        def footprint(blob: _Blob) -> tuple[Box, Mask]:
            box, alpha, _ = _mud_alpha(blob, height, width)
            return box, alpha >= 0.5

        placed = _fill(target, (height, width), elements(), footprint, _shrink_blob)
        base = _OPTICS_MUD_COLOURS[rng.integers(len(_OPTICS_MUD_COLOURS))]
        base = np.asarray(base + rng.normal(0.0, 8.0, 3), np.float32)
        ring_dark = rng.uniform(0.0, 0.3)  # drying: the edge stays wetter and darker
        alpha = np.zeros((height, width), np.float32)
        shade = np.ones((height, width), np.float32)
        hold = np.ones((height, width), np.float32)
        for blob in placed:
            box, patch, rho = _mud_alpha(blob, height, width)
            if box == _EMPTY_BOX:
                continue
            top = patch > alpha[box]
            alpha[box] = np.maximum(alpha[box], patch)
            ringed = blob.tone * (1.0 - ring_dark * _smoothstep(0.55, 1.0, rho))
            shade[box][top] = np.asarray(ringed, np.float32)[top]
            hold[box][top] = blob.hold
        mask = alpha >= 0.5
        mottle = _fbm(rng, (height, width), rng.uniform(15.0, 45.0), 3, 0.6)
        shade = shade * np.clip(1.0 + 0.1 * mottle, 0.7, 1.3)
        self._box = _bbox(alpha > 0)
        colour = shade[..., None] * base[None, None, :]
        self._colour = np.ascontiguousarray(colour[self._box], np.float32)
        self._alpha = np.ascontiguousarray(alpha[self._box], np.float32)
        self._hold = np.ascontiguousarray(hold[self._box], np.float32)
        super().__init__("mud", FAMILY, mask)

    def _apply(self, image: RGB, amount: float) -> RGB:
        if self._box == _EMPTY_BOX:
            return _copy(image)
        alpha = _keep(self._alpha, self._hold, amount, 0.04)
        return _blend(image, self._box, alpha, self._colour)


BUILDERS: dict[SoilingKind, Callable[[np.random.Generator, int, int, float], Soiling]] = {
    "drops": _OpticsDrops,
    "mist": _OpticsMist,
    "dust": _OpticsDust,
    "mud": _OpticsMud,
}
