"""Simulation, before enhance: a lens that water drops, mist, dust and mud stick to (pure numpy/OpenCV).

`render_adhesion` paints one kind of soiling onto a frame and returns the true mask (drops: small
round out-of-focus lenses showing a wider, upside-down view with a dark rim and a glint; mist:
veiled, washed-out patches creeping in from the border; dust: faint grey smudges; mud: opaque
brown splashes). A `SimulatedLens` plays an injection schedule
(`parse_inject('drops@20s-35s,mud@45s')`) over a replay and keeps what was injected until its
end time or until the fan has blown long enough to clear it (`blow`). The simulator sees the
camera through it with `through_lens` (a `FrameSource` decorator) and feeds it the fan duty with
`LensFan`, so no stage knows the lens is simulated.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.capture.base import FrameSource, RawFrame, SourceInfo
from vehicle_agent.records import FrameRecord, Image, JsonValue, check_image

AdhesionKind: TypeAlias = Literal["drops", "mist", "dust", "mud"]
KINDS: tuple[AdhesionKind, ...] = get_args(AdhesionKind)

Mask: TypeAlias = npt.NDArray[np.bool_]
"""H×W bool: True where something covers the lens."""

FloatMap: TypeAlias = npt.NDArray[np.float32]

DEFAULT_COVERAGE: dict[AdhesionKind, float] = {
    "drops": 0.05,
    "mist": 0.35,
    "dust": 0.06,
    "mud": 0.06,
}
"""Fraction of the frame each kind covers when the spec does not say."""

BLOW_SECONDS: dict[AdhesionKind, float] = {"drops": 3.0, "mist": 2.0, "dust": 5.0, "mud": 12.0}
"""Seconds of fan at full duty that clear each kind (half the duty takes twice as long)."""

MIN_BLOW_DUTY = 0.2
"""Below this duty the airflow moves nothing on the lens."""

COVER_ALPHA = 0.5
"""A pixel counts as covered (true mask) where the soiling's footprint reaches this opacity."""


class InjectSpecError(ValueError):
    """An `--inject` spec that cannot be parsed; `part` is the piece that was wrong."""

    def __init__(self, spec: str, part: str, reason: str) -> None:
        self.spec = spec
        self.part = part
        self.reason = reason
        super().__init__(f"inject spec {spec!r}: {reason} in {part!r}")


@dataclass(frozen=True, slots=True)
class Injection:
    """One kind of soiling put on the lens at `start_s` (seconds of video time)."""

    kind: AdhesionKind
    start_s: float
    end_s: float | None = None
    """When it goes away by itself (dries, wiped); None: it stays until the fan clears it."""
    coverage: float | None = None
    """Fraction of the frame covered; None: the kind's default."""
    seed: int = 0

    @property
    def target_coverage(self) -> float:
        return DEFAULT_COVERAGE[self.kind] if self.coverage is None else self.coverage


_TIME = re.compile(r"^(?:(?P<m>\d+(?:\.\d*)?)m)?(?:(?P<s>\d+(?:\.\d*)?)s?)?$")


def _parse_time(text: str) -> float | None:
    """'20s', '20', '1.5s', '2m', '1m30s' → seconds; None when it is not a time."""
    match = _TIME.match(text.strip())
    if not match or not text.strip() or (text.strip().endswith("m") and match["s"]):
        return None
    minutes = float(match["m"] or 0.0)
    seconds = float(match["s"] or 0.0)
    return minutes * 60.0 + seconds


def parse_inject(spec: str, seed: int = 0) -> tuple[Injection, ...]:
    """Parse 'KIND@START[-END][:COVERAGE%]' items separated by commas.

    `drops@20s-35s,mud@45s:10%` puts drops on the lens from 20 s to 35 s and mud from 45 s until
    the fan clears it, covering 10 % of the frame. Times are seconds of video time ('20', '20s',
    '1m30s'). Errors name the part that is wrong.
    """
    if not spec.strip():
        raise InjectSpecError(spec, spec, "empty spec, expected e.g. 'drops@20s-35s,mud@45s'")
    injections: list[Injection] = []
    for index, raw in enumerate(spec.split(",")):
        part = raw.strip()
        if not part:
            raise InjectSpecError(spec, raw, "empty item")
        kind, at, when = part.partition("@")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise InjectSpecError(spec, part, f"unknown kind {kind!r}, expected one of {KINDS}")
        if not at or not when.strip():
            raise InjectSpecError(spec, part, "missing '@START', e.g. 'drops@20s'")
        when, colon, cover_text = when.partition(":")
        coverage: float | None = None
        if colon:
            cover_text = cover_text.strip()
            try:
                coverage = float(cover_text.removesuffix("%")) / 100.0
            except ValueError:
                raise InjectSpecError(
                    spec, part, f"bad coverage {cover_text!r}, expected e.g. '5%'"
                ) from None
            if not 0.0 < coverage <= 0.9:
                raise InjectSpecError(
                    spec, part, f"coverage {cover_text!r} out of range, expected 0–90 %"
                )
        start_text, dash, end_text = when.partition("-")
        start = _parse_time(start_text)
        if start is None:
            raise InjectSpecError(spec, part, f"bad start time {start_text!r}, expected e.g. '20s'")
        end: float | None = None
        if dash:
            end = _parse_time(end_text)
            if end is None:
                raise InjectSpecError(spec, part, f"bad end time {end_text!r}, expected e.g. '35s'")
            if end <= start:
                raise InjectSpecError(spec, part, "end time is not after the start time")
        kind_checked: AdhesionKind = kind
        injections.append(Injection(kind_checked, start, end, coverage, seed * 1000 + index))
    return tuple(injections)


# -- geometry: generated once per injection in normalised coordinates, rasterised per size ----


@dataclass(frozen=True, slots=True)
class _Element:
    """One drop, speck or splash: an ellipse (centre, radii in units of the frame height)."""

    cx: float
    """Horizontal centre in units of the frame height (0 … width/height)."""
    cy: float
    rx: float
    ry: float
    opacity: float
    hold: float
    """Fraction of the full blowing dose this element resists (elements go one by one)."""
    wobble: tuple[float, ...] = ()
    """Radial irregularity (mud): amplitudes of a few harmonics."""
    phase: tuple[float, ...] = ()
    colour: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(slots=True)
class _Raster:
    """An element set drawn at one frame size (cached; frames of one replay share a size)."""

    alpha: FloatMap
    """Opacity 0–1 per pixel (soft edges)."""
    footprint: FloatMap
    """Shape 0–1 per pixel, regardless of how opaque it is (the true mask is footprint ≥ 0.5)."""
    map_x: FloatMap | None = None
    map_y: FloatMap | None = None
    shade: FloatMap | None = None
    colour: FloatMap | None = None
    hold: FloatMap | None = None
    drop_radius: float = 0.0
    """Median drop radius in pixels (sets how out of focus the drops look)."""
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    """(top, bottom, left, right) of the pixels the soiling touches."""


def _smoothstep(edge0: float, edge1: float, x: FloatMap) -> FloatMap:
    y = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return np.asarray(y * y * (3.0 - 2.0 * y), dtype=np.float32)


class AdhesionLayer:
    """One kind of soiling: its elements (seeded), drawn onto frames of any size."""

    def __init__(
        self,
        kind: AdhesionKind,
        coverage: float | None = None,
        seed: int = 0,
        aspect: float = 4 / 3,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown adhesion kind {kind!r}, expected one of {KINDS}")
        self.kind = kind
        self.coverage = DEFAULT_COVERAGE[kind] if coverage is None else coverage
        self.seed = seed
        self.aspect = aspect
        self.elements = self._generate(np.random.default_rng(seed))
        self._rasters: dict[tuple[int, int], _Raster] = {}

    # -- generation ----------------------------------------------------------------------------

    def _generate(self, rng: np.random.Generator) -> list[_Element]:
        """Elements until their area (in units of height²) reaches the target coverage."""
        target = self.coverage * self.aspect  # frame area is aspect × 1 in height units
        elements: list[_Element] = []
        area = 0.0
        # Overlaps eat area, so aim a little higher; the raster measures the true coverage.
        while area < target * 1.1 and len(elements) < 2000:
            element = self._element(rng)
            elements.append(element)
            # Mist patches sit on the frame's border: about half of each is inside.
            inside = 0.5 if self.kind == "mist" else 1.0
            area += math.pi * element.rx * element.ry * inside
        return elements

    def _element(self, rng: np.random.Generator) -> _Element:
        width = self.aspect
        hold = float(rng.uniform(0.0, 1.0))
        if self.kind == "drops":
            r = float(rng.uniform(0.025, 0.07))
            return _Element(
                cx=float(rng.uniform(0.05, width - 0.05)),
                cy=float(rng.uniform(0.05, 0.95)),
                rx=r,
                ry=r * float(rng.uniform(1.0, 1.25)),  # drops sag a little
                opacity=1.0,
                hold=hold,
            )
        if self.kind == "mist":
            # Condensation creeps in from an edge: large soft patches on the border, each about
            # half the asked coverage (at most 0.45 of the height in radius).
            size = math.sqrt(self.coverage * self.aspect / (math.pi * 1.3))
            r = min(0.45, size * float(rng.uniform(0.7, 1.0)))
            side = rng.integers(4)
            cx = float(rng.uniform(0.0, width)) if side < 2 else (0.0 if side == 2 else width)
            cy = float(rng.uniform(0.0, 1.0)) if side >= 2 else (0.0 if side == 0 else 1.0)
            return _Element(cx, cy, r * 1.3, r, float(rng.uniform(0.75, 0.95)), hold)
        if self.kind == "dust":
            # Out-of-focus dust: faint round smudges, a few larger clumps.
            r = float(rng.uniform(0.02, 0.05))
            grey = float(rng.uniform(0.25, 0.45))
            return _Element(
                float(rng.uniform(0.03, width - 0.03)),
                float(rng.uniform(0.03, 0.97)),
                r,
                r * float(rng.uniform(0.8, 1.2)),
                float(rng.uniform(0.55, 0.8)),
                hold,
                colour=(grey * 255.0, grey * 255.0, grey * 255.0),
            )
        # mud: opaque irregular splashes, brown with a darker core
        r = float(rng.uniform(0.04, 0.1))
        harmonics = 5
        return _Element(
            float(rng.uniform(0.06, width - 0.06)),
            float(rng.uniform(0.06, 0.94)),
            r,
            r * float(rng.uniform(0.7, 1.3)),
            float(rng.uniform(0.9, 1.0)),
            hold,
            wobble=tuple(float(a) for a in rng.uniform(0.0, 0.18, harmonics)),
            phase=tuple(float(p) for p in rng.uniform(0.0, 2 * math.pi, harmonics)),
            colour=(
                float(rng.uniform(25, 45)),
                float(rng.uniform(45, 65)),
                float(rng.uniform(65, 95)),
            ),
        )

    # -- rasterising ---------------------------------------------------------------------------

    def _raster(self, height: int, width: int) -> _Raster:
        key = (height, width)
        raster = self._rasters.get(key)
        if raster is None:
            raster = self._draw(height, width)
            self._rasters[key] = raster
        return raster

    def _draw(self, height: int, width: int) -> _Raster:
        scale = float(height)
        x_scale = width / (self.aspect * height)  # stretch when the frame's aspect differs
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        footprint = np.zeros((height, width), np.float32)
        alpha = np.zeros((height, width), np.float32)
        hold = np.zeros((height, width), np.float32)
        map_x = xs.copy() if self.kind == "drops" else None
        map_y = ys.copy() if self.kind == "drops" else None
        shade = np.ones((height, width), np.float32) if self.kind == "drops" else None
        colour = np.zeros((height, width, 3), np.float32) if self.kind in ("dust", "mud") else None
        soft = {"drops": 0.12, "mist": 0.6, "dust": 0.5, "mud": 0.08}[self.kind]
        for e in self.elements:
            cx, cy = e.cx * scale * x_scale, e.cy * scale
            rx, ry = e.rx * scale * x_scale, e.ry * scale
            # Work on the element's bounding box only.
            pad = 1.0 + soft
            x0, x1 = max(0, int(cx - rx * pad) - 1), min(width, int(cx + rx * pad) + 2)
            y0, y1 = max(0, int(cy - ry * pad) - 1), min(height, int(cy + ry * pad) + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            u = (xs[y0:y1, x0:x1] - cx) / rx
            v = (ys[y0:y1, x0:x1] - cy) / ry
            rho = np.sqrt(u * u + v * v)
            if e.wobble:
                theta = np.arctan2(v, u)
                bump = np.ones_like(rho)
                for k, (amp, ph) in enumerate(zip(e.wobble, e.phase, strict=True), start=2):
                    bump += amp * np.sin(k * theta + ph)
                rho = rho / bump
            # Footprint: 1 inside, falling to 0 across a soft edge centred on rho = 1.
            shape = _smoothstep(1.0 + soft / 2, 1.0 - soft / 2, rho)
            fp = footprint[y0:y1, x0:x1]
            np.maximum(fp, shape, out=fp)
            a = alpha[y0:y1, x0:x1]
            np.maximum(a, shape * e.opacity, out=a)
            hold[y0:y1, x0:x1][shape > 0.01] = e.hold
            if map_x is not None and map_y is not None and shade is not None:
                inside = shape > 0.0
                # A drop is a tiny wide-angle lens: it shows a wider, upside-down view of the
                # scene around it, magnified ×magnify outwards from its centre.
                magnify = 2.5
                mx = map_x[y0:y1, x0:x1]
                my = map_y[y0:y1, x0:x1]
                mx[inside] = (cx - magnify * (xs[y0:y1, x0:x1] - cx))[inside]
                my[inside] = (cy - magnify * (ys[y0:y1, x0:x1] - cy))[inside]
                # Dark rim where light is bent away, a bright glint near the top.
                rim = 1.0 - 0.45 * _smoothstep(0.6, 1.0, rho)
                glint = 1.0 + 0.35 * np.exp(-((u + 0.35) ** 2 + (v + 0.45) ** 2) / 0.04)
                sh = shade[y0:y1, x0:x1]
                sh[inside] = (rim * glint)[inside]
            if colour is not None:
                c = colour[y0:y1, x0:x1]
                c[shape > 0.0] = e.colour
        if self.kind == "mud":
            # Mud is not flat: a coarse grain modulates its colour.
            rng = np.random.default_rng(self.seed + 1)
            grain = rng.normal(1.0, 0.15, (max(1, height // 8), max(1, width // 8)))
            shade = np.asarray(
                cv2.resize(
                    grain.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
                ),
                np.float32,
            )
        if self.kind in ("dust", "mist"):
            # Scattering soft-edges everything a little more than the shapes.
            alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(1.0, height / 200)), np.float32)
        radii = [e.rx * scale * x_scale for e in self.elements]
        radius = float(np.median(radii)) if radii else 0.0
        rows = np.flatnonzero(alpha.max(axis=1) > 1e-3)
        cols = np.flatnonzero(alpha.max(axis=0) > 1e-3)
        box = (
            (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            if rows.size
            else (0, 0, 0, 0)
        )
        return _Raster(alpha, footprint, map_x, map_y, shade, colour, hold, radius, box)

    # -- drawing -------------------------------------------------------------------------------

    def render(self, image: Image, remaining: float = 1.0) -> tuple[Image, Mask]:
        """`image` with this soiling on it, and the true mask (footprint ≥ 0.5).

        `remaining` in [0, 1] is how much is left after blowing: elements whose `hold` is below
        `1 - remaining` are gone (drops and splashes go one by one, mist thins out).
        """
        check_image(image)
        height, width = image.shape[:2]
        raster = self._raster(height, width)
        gone = 1.0 - remaining
        if remaining <= 0.0:
            return image, np.zeros((height, width), np.bool_)
        alpha, footprint = raster.alpha, raster.footprint
        if gone > 0.0 and raster.hold is not None and self.kind != "mist":
            keep = (raster.hold >= gone).astype(np.float32)
            alpha = alpha * keep
            footprint = footprint * keep
        elif self.kind == "mist":
            alpha = alpha * np.float32(remaining)
            footprint = footprint * np.float32(remaining >= COVER_ALPHA)
        mask = footprint >= COVER_ALPHA
        y0, y1, x0, x1 = raster.box
        if y0 >= y1 or x0 >= x1:
            return image, mask
        # Only the box around the soiling is redrawn; blurs read a margin around it.
        box = (slice(y0, y1), slice(x0, x1))
        if self.kind == "drops":
            assert raster.map_x is not None  # noqa: S101 - drawn for drops
            assert raster.map_y is not None  # noqa: S101
            assert raster.shade is not None  # noqa: S101
            refracted = cv2.remap(
                image,
                raster.map_x[box],
                raster.map_y[box],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            # Drops sit far out of focus: the refracted view is blurred, more in bigger drops.
            drop = _blur(np.asarray(refracted, np.uint8), max(1.0, 0.2 * raster.drop_radius))
            drop *= raster.shade[box][..., None]
            drop += 12.0  # water scatters a little light: a faint lift
        elif self.kind == "mist":
            blurred = _blurred_box(image, box, max(2.0, height / 40))
            drop = blurred * 0.45 + 200.0 * 0.55  # veil: scattered light over a washed-out view
        elif self.kind == "dust":
            assert raster.colour is not None  # noqa: S101
            blurred = _blurred_box(image, box, max(1.0, height / 120))
            drop = blurred * 0.5 + raster.colour[box] * 0.5
        else:
            assert raster.colour is not None  # noqa: S101
            assert raster.shade is not None  # noqa: S101
            drop = raster.colour[box] * raster.shade[box][..., None]
        a = np.ascontiguousarray(alpha[box])
        out = image.copy()
        soil = np.clip(drop, 0, 255).astype(np.uint8)
        out[box] = cv2.blendLinear(soil, np.ascontiguousarray(image[box]), a, 1.0 - a)
        return out, mask


def _blurred_box(image: Image, box: tuple[slice, slice], sigma: float) -> FloatMap:
    """`image` blurred with `sigma`, over `box` only (reading a 3σ margin around it)."""
    height, width = image.shape[:2]
    pad = int(3 * sigma) + 1
    ys, xs = box
    top, left = max(0, (ys.start or 0) - pad), max(0, (xs.start or 0) - pad)
    bottom, right = min(height, ys.stop + pad), min(width, xs.stop + pad)
    blurred = _blur(np.ascontiguousarray(image[top:bottom, left:right]), sigma)
    return blurred[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]


def _blur(image: Image, sigma: float) -> FloatMap:
    """Gaussian blur as float; wide blurs run on a shrunk copy (the result is smooth anyway)."""
    factor = int(min(8, sigma // 2))
    if factor < 2:
        return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), np.float32)
    height, width = image.shape[:2]
    small = cv2.resize(
        image,
        (max(1, width // factor), max(1, height // factor)),
        interpolation=cv2.INTER_AREA,
    )
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma / factor)
    return np.asarray(
        cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), np.float32
    )


def render_adhesion(
    image: Image, kind: AdhesionKind, coverage: float | None = None, seed: int = 0
) -> tuple[Image, Mask]:
    """`image` with `kind` soiling covering about `coverage` of it, and the true mask."""
    height, width = image.shape[:2]
    layer = AdhesionLayer(kind, coverage, seed, aspect=width / height)
    return layer.render(image)


# -- the simulated lens --------------------------------------------------------------------


@dataclass(slots=True)
class _Active:
    injection: Injection
    layer: AdhesionLayer | None = None
    dose_s: float = 0.0
    """Seconds of full-duty blowing received."""
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str = ""
    max_covered: float = 0.0

    @property
    def remaining(self) -> float:
        return max(0.0, 1.0 - self.dose_s / BLOW_SECONDS[self.injection.kind])


class SimulatedLens:
    """A lens that injected soiling sticks to, until its end time or until the fan clears it.

    `apply(image, t)` paints what is on the lens at video time `t` and returns the true mask;
    `blow(duty, seconds)` is the fan: at full duty each kind clears after `BLOW_SECONDS`,
    elements going one by one. The capture thread calls `apply` while the act stage calls
    `blow`: a lock keeps them apart.
    """

    def __init__(self, injections: Sequence[Injection]) -> None:
        self.injections = tuple(injections)
        self._items = [_Active(i) for i in self.injections]
        self._lock = threading.Lock()

    def blow(self, duty: float, seconds: float) -> None:
        """Airflow over the lens: `duty` in [0, 1] for `seconds`."""
        if not math.isfinite(duty) or not math.isfinite(seconds) or seconds <= 0:
            return
        duty = min(max(duty, 0.0), 1.0)
        if duty < MIN_BLOW_DUTY:
            return
        with self._lock:
            for item in self._items:
                if item.started_at is not None and item.ended_at is None:
                    needed = BLOW_SECONDS[item.injection.kind]
                    item.dose_s = min(needed, item.dose_s + duty * seconds)

    def apply(self, image: Image, t: float) -> tuple[Image, Mask]:
        """The frame as the soiled lens sees it at video time `t`, and the true covered mask."""
        check_image(image)
        height, width = image.shape[:2]
        mask = np.zeros((height, width), np.bool_)
        with self._lock:
            for item in self._items:
                inj = item.injection
                if item.ended_at is not None or t < inj.start_s:
                    continue
                if inj.end_s is not None and t >= inj.end_s:
                    item.ended_at, item.end_reason = t, "ended"
                    continue
                if item.remaining <= 0.0:
                    item.ended_at, item.end_reason = t, "blown_clear"
                    continue
                if item.layer is None:
                    item.started_at = t
                    item.layer = AdhesionLayer(inj.kind, inj.coverage, inj.seed, width / height)
                image, layer_mask = item.layer.render(image, item.remaining)
                item.max_covered = max(item.max_covered, float(layer_mask.mean()))
                mask |= layer_mask
        return image, mask

    def ground_truth(self) -> list[dict[str, JsonValue]]:
        """What was injected and when it went, for the bench report (`summary.json`)."""
        out: list[dict[str, JsonValue]] = []
        with self._lock:
            for item in self._items:
                inj = item.injection
                reason = item.end_reason or (
                    "still_on_lens" if item.started_at is not None else "never_reached"
                )
                out.append(
                    {
                        "kind": inj.kind,
                        "start_s": inj.start_s,
                        "end_s": inj.end_s,
                        "appeared_s": item.started_at,
                        "gone_s": item.ended_at,
                        "gone_reason": reason,
                        "target_coverage": round(inj.target_coverage, 4),
                        "covered_fraction": round(item.max_covered, 4),
                        "blown_s": round(item.dose_s, 3),
                    }
                )
        return out


class LensClock:
    """Video time for the lens, as the capture stage stamps it: the recording's timestamps,
    continued across loops (`rewound`). Shared by every source instance of one run."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.last = 0.0
        self.fps = 10.0

    def time(self, pts: float | None, index: int) -> float:
        t = self.offset + (pts if pts is not None else index / self.fps)
        self.last = t
        return t

    def rewound(self) -> None:
        self.offset = self.last + 1.0 / self.fps


class LensSource(FrameSource):
    """A frame source seen through a `SimulatedLens` (a decorator: the simulator wraps the
    source factory with it, so no stage knows the lens is simulated)."""

    def __init__(self, inner: FrameSource, lens: SimulatedLens, clock: LensClock) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.lens = lens
        self.clock = clock
        self._index = 0

    def open(self) -> SourceInfo:
        info = self.inner.open()
        self.clock.fps = info.fps or self.clock.fps
        self._index = 0
        return info

    def read(self) -> RawFrame | None:
        raw = self.inner.read()
        if raw is None:
            return None
        t = self.clock.time(raw.pts, self._index)
        self._index += 1
        image, _ = self.lens.apply(raw.image, t)
        return RawFrame(image, raw.pts)

    def close(self) -> None:
        self.inner.close()

    def rewind(self) -> None:
        self.inner.rewind()
        self.clock.rewound()
        self._index = 0


def through_lens(
    open_source: Callable[[], FrameSource], lens: SimulatedLens
) -> Callable[[], FrameSource]:
    """The source factory `open_source`, every source it makes seen through `lens`."""
    clock = LensClock()
    return lambda: LensSource(open_source(), lens, clock)


class LensFan:
    """Blows the simulated lens with the fan duty each analysed frame reports (an act-stage
    observer: `record.actuation.fan_duty` over the video time since the previous frame)."""

    def __init__(self, lens: SimulatedLens) -> None:
        self.lens = lens
        self._last_t: float | None = None

    def __call__(self, record: FrameRecord) -> None:
        t = record.frame.t_video
        if self._last_t is not None and record.actuation is not None and t > self._last_t:
            self.lens.blow(record.actuation.fan_duty, t - self._last_t)
        self._last_t = t
