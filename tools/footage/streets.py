"""Footage bank: street scenes composed from train photos, for training only.

The bank's train scenes are mostly close-ups (fruit, a circuit board, a graffiti wall); a
vehicle camera sees a street: a sky at the top, a road converging on a vanishing point, house
fronts on both sides, kerbs, lane markings, poles, trees and parked cars. A detector trained on
27 close-ups learns those 27 pictures; `compose` draws a new street for every seed, in one-point
perspective, its surfaces textured with crops of train photos (facades from walls, boards and
clutter with windows cut in, the road from gravel or cobbles, foliage from grass and leaves), so
no two drives see the same world and the layout is that of a road.

It is only a picture: the drive synthesiser (`tools.footage.drive`) moves a camera over it as
over any photo. Every photo it reads goes through `catalog.load` (so `splits.note_use` refuses a
held-out one inside a training context), and the caller chooses which train photos it may use
(a leave-scenes-out run passes the others).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.uint8]
Image = npt.NDArray[np.float32]
Point = tuple[float, float]

PREFIX = "street-"
"""Scene names `street-<seed>` in a training plan stand for `compose(seed, ...)`."""
SIZE = (1280, 720)
"""(width, height) of a composed street."""

FACADE = (
    "brick", "graf1", "graf3", "board", "aloeL", "stuff", "box_in_scene", "rubberwhale1",
    "coffee", "aero1", "aero3", "fruits", "camera", "messi5", "basketball1", "rocket",
)  # fmt: skip
"""Train photos whose crops make house fronts, shop windows and far buildings."""
GROUND = ("gravel", "brick", "grass", "graf3", "camera")
"""Train photos whose crops, darkened and desaturated, make asphalt, cobbles and pavements."""
FOLIAGE = ("grass", "squirrel", "butterfly", "aloeL", "chicky")
"""Train photos whose crops make trees and hedges."""


def is_street(name: str) -> bool:
    return name.startswith(PREFIX) and name[len(PREFIX) :].isdigit()


def street_seed(name: str) -> int:
    if not is_street(name):
        raise ValueError(f"{name!r} is not a street scene name ({PREFIX}<seed>)")
    return int(name[len(PREFIX) :])


def pools(allowed: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The texture photos of each role among `allowed`; a role left empty is refused."""
    out = {
        "facade": tuple(n for n in FACADE if n in allowed),
        "ground": tuple(n for n in GROUND if n in allowed),
        "foliage": tuple(n for n in FOLIAGE if n in allowed),
    }
    if empty := [role for role, names in out.items() if not names]:
        raise ValueError(f"no {', '.join(empty)} photos among the allowed scenes")
    return out


class _Painter:
    def __init__(
        self, seed: int, allowed: Sequence[str], load: Callable[[str], RGB], size: Point
    ) -> None:
        self.rng = np.random.default_rng([seed, 61])
        self.pools = pools(allowed)
        self.load = load
        self.width, self.height = int(size[0]), int(size[1])
        self._photos: dict[str, Image] = {}

    def photo(self, role: str) -> Image:
        names = self.pools[role]
        name = names[int(self.rng.integers(len(names)))]
        if name not in self._photos:
            self._photos[name] = np.asarray(self.load(name), np.float32)
        return self._photos[name]

    def crop(self, role: str, aspect: float, max_side: int = 512) -> Image:
        """A random crop of a `role` photo with width/height `aspect`, at most `max_side` wide
        or high, flipped at random."""
        image = self.photo(role)
        h, w = image.shape[:2]
        ch = int(self.rng.uniform(0.35, 0.9) * min(h, w / aspect))
        cw = max(8, int(ch * aspect))
        ch = max(8, min(ch, h))
        cw = min(cw, w)
        y, x = int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1))
        out = image[y : y + ch, x : x + cw]
        if self.rng.random() < 0.5:
            out = out[:, ::-1]
        scale = min(1.0, max_side / max(out.shape[:2]))
        if scale < 1.0:
            out = np.asarray(
                cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.float32
            )
        return np.ascontiguousarray(out, np.float32)

    def tint(
        self,
        image: Image,
        grey: float,
        colour: Sequence[float] | npt.NDArray[np.float64],
        mean: float,
    ) -> Image:
        """`image` desaturated by `grey` (0–1), its mean moved to `mean`, tinted by `colour`."""
        luma = image.mean(axis=2, keepdims=True)
        mixed = image * (1.0 - grey) + luma * grey
        mixed = mixed * (mean / max(float(mixed.mean()), 1.0))
        return np.asarray(mixed * np.asarray(colour, np.float32), np.float32)

    def paste(
        self, canvas: Image, texture: Image, quad: Sequence[Point], feather: float = 0.7
    ) -> None:
        """`texture` mapped onto the quadrilateral `quad` (top-left, top-right, bottom-right,
        bottom-left in canvas pixels) by a homography, over `canvas`."""
        h, w = texture.shape[:2]
        src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        matrix = cv2.getPerspectiveTransform(src, np.array(quad, np.float32))
        size = (self.width, self.height)
        warped = cv2.warpPerspective(texture, matrix, size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.ones((h, w), np.float32), matrix, size)
        if feather > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), feather)
        m = np.asarray(mask, np.float32)[..., None]
        canvas *= 1.0 - m
        canvas += np.asarray(warped, np.float32) * m

    def blob(self, canvas: Image, texture: Image, centre: Point, radius: Point) -> None:
        """`texture` inside an irregular blob (a tree crown, a hedge) at `centre`."""
        h, w = self.height, self.width
        rx, ry = max(radius[0], 2.0), max(radius[1], 2.0)
        x0, x1 = int(max(0, centre[0] - rx * 1.4)), int(min(w, centre[0] + rx * 1.4))
        y0, y1 = int(max(0, centre[1] - ry * 1.4)), int(min(h, centre[1] + ry * 1.4))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        d = ((xs - centre[0]) / rx) ** 2 + ((ys - centre[1]) / ry) ** 2
        noise = self.rng.standard_normal((y1 - y0, x1 - x0)).astype(np.float32)
        noise = np.asarray(cv2.GaussianBlur(noise, (0, 0), max(2.0, min(rx, ry) / 5)), np.float32)
        noise /= max(float(np.abs(noise).max()), 1e-6)
        inside = np.clip((1.0 - d + 0.5 * noise) * 4.0, 0.0, 1.0)[..., None]
        patch = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        region = canvas[y0:y1, x0:x1]
        region *= 1.0 - inside
        region += np.asarray(patch, np.float32) * inside


def _tiled(texture: Image, across: int, along: int) -> Image:
    """`texture` repeated `across` × `along` times, every other copy mirrored (no seams)."""
    row = [texture if i % 2 == 0 else texture[:, ::-1] for i in range(across)]
    strip = np.concatenate(row, axis=1)
    rows = [strip if j % 2 == 0 else strip[::-1] for j in range(along)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0), np.float32)


def _ground_quad(
    vp: Point, left: float, right: float, bottom: float, depth_ratio: float
) -> list[Point]:
    """The quadrilateral (top-left, top-right, bottom-right, bottom-left) of a strip of ground
    between the lines from `vp` through (`left`, `bottom`) and (`right`, `bottom`), from the
    bottom of the frame to `depth_ratio` times as far away (so it is that much narrower)."""
    top = vp[1] + (bottom - vp[1]) / depth_ratio
    lt = vp[0] + (left - vp[0]) / depth_ratio
    rt = vp[0] + (right - vp[0]) / depth_ratio
    return [(lt, top), (rt, top), (right, bottom), (left, bottom)]


DEPTH_RATIO = 30.0
"""The ground drawn reaches this many times as far as the bottom of the frame."""


def _windows(texture: Image, rng: np.random.Generator) -> None:
    """Cut a grid of windows (dark glass, or lit, with frames) into a facade texture."""
    h, w = texture.shape[:2]
    floors = int(rng.integers(2, 7))
    bays = int(rng.integers(2, 9))
    glass = rng.uniform(5, 45) * rng.uniform(0.8, 1.2, 3)
    lit = rng.uniform(150, 240) * np.array([1.0, 0.92, 0.7])
    frame = rng.uniform(60, 230)
    fw, fh = w / bays, h / floors
    for f in range(floors):
        for b in range(bays):
            if rng.random() < 0.12:
                continue
            x0 = int(b * fw + fw * rng.uniform(0.18, 0.3))
            x1 = int((b + 1) * fw - fw * rng.uniform(0.18, 0.3))
            y0 = int(f * fh + fh * rng.uniform(0.2, 0.3))
            y1 = int((f + 1) * fh - fh * rng.uniform(0.15, 0.3))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            cv2.rectangle(texture, (x0 - 2, y0 - 2), (x1 + 2, y1 + 2), (frame,) * 3, -1)
            colour = lit if rng.random() < 0.1 else glass
            cv2.rectangle(texture, (x0, y0), (x1, y1), tuple(float(c) for c in colour), -1)


def _on_line(vp: Point, through: Point, x: float) -> float:
    """y at `x` on the line from the vanishing point `vp` through `through`."""
    dx = through[0] - vp[0]
    if abs(dx) < 1e-6:
        return through[1]
    return vp[1] + (through[1] - vp[1]) * (x - vp[0]) / dx


def _sky(p: _Painter) -> Image:
    rng = p.rng
    h, w = p.height, p.width
    kind = str(rng.choice(["clear", "overcast", "hazy", "evening"], p=[0.4, 0.3, 0.2, 0.1]))
    top = {
        "clear": rng.uniform([60, 110, 170], [120, 170, 240]),
        "overcast": rng.uniform(150, 215) * rng.uniform(0.95, 1.05, 3),
        "hazy": rng.uniform([170, 180, 190], [220, 225, 235]),
        "evening": rng.uniform([120, 90, 110], [200, 140, 150]),
    }[kind]
    low = np.clip(top + rng.uniform(15, 55, 3), 0, 255)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    sky = top[None, None, :] * (1 - t) + low[None, None, :] * t
    sky = np.broadcast_to(sky, (h, w, 3)).astype(np.float32).copy()
    if kind in ("clear", "overcast") and rng.random() < 0.6:
        clouds = rng.standard_normal((h // 8, w // 8)).astype(np.float32)
        clouds = np.asarray(cv2.resize(cv2.GaussianBlur(clouds, (0, 0), 4.0), (w, h)), np.float32)
        sky += (np.asarray(clouds, np.float32) * rng.uniform(20, 60))[..., None]
    return np.asarray(sky, np.float32)


def _road(p: _Painter, canvas: Image, vp: Point) -> tuple[float, float]:
    """Road and pavements below the vanishing point; returns the two kerb lines' x at the bottom."""
    rng = p.rng
    h, w = p.height, p.width
    half = rng.uniform(0.35, 0.9) * w
    left, right = (
        vp[0] - half + rng.uniform(-0.1, 0.1) * w,
        vp[0] + half + rng.uniform(-0.1, 0.1) * w,
    )
    # The ground beyond the kerbs (pavement, verge) first, then the carriageway over it.
    for side in (-1, 1):
        verge = p.tint(
            p.crop("ground", 0.5),
            rng.uniform(0.3, 1.0),
            rng.uniform(0.9, 1.1, 3),
            rng.uniform(80, 170),
        )
        edge = left if side < 0 else right
        outer = edge + side * rng.uniform(0.8, 2.5) * w
        a, b = (outer, edge) if side < 0 else (edge, outer)
        along = max(2, round(DEPTH_RATIO * 0.8 * verge.shape[1] / verge.shape[0] / 3))
        p.paste(canvas, _tiled(verge, 3, along), _ground_quad(vp, a, b, h, DEPTH_RATIO))
    asphalt = p.tint(
        p.crop("ground", 0.5),
        rng.uniform(0.8, 1.0),
        rng.uniform(0.95, 1.05, 3),
        rng.uniform(55, 115),
    )
    # The carriageway's texture: the crop tiled to the road's proportions (as long as
    # DEPTH_RATIO road widths less the near part), lane markings painted on it.
    asphalt = np.asarray(cv2.resize(asphalt, (128, 256), interpolation=cv2.INTER_AREA), np.float32)
    asphalt = _tiled(np.asarray(asphalt, np.float32), 2, 24)
    length = asphalt.shape[0]
    lanes = int(rng.integers(1, 4))
    paint = rng.uniform(170, 235)
    dash, gap = int(rng.integers(40, 90)), int(rng.integers(40, 120))
    for k in range(1, lanes + 1):
        x = int(256 * k / (lanes + 1))  # the tiled texture is 256 wide
        solid = rng.random() < 0.2
        for y in range(0, length, dash + gap):
            end = length if solid else y + dash
            cv2.rectangle(asphalt, (x - 3, y), (x + 3, min(end, length)), (paint,) * 3, -1)
            if solid:
                break
    if rng.random() < 0.7:  # edge lines
        for x in (8, 248):
            cv2.rectangle(asphalt, (x - 2, 0), (x + 2, length), (paint * 0.9,) * 3, -1)
    p.paste(canvas, asphalt, _ground_quad(vp, left, right, h, DEPTH_RATIO))
    return left, right


def _facades(p: _Painter, canvas: Image, vp: Point, kerb: float, side: int) -> None:
    """House fronts along one side, from the near edge of the frame to near the vanishing point:
    a row of buildings of their own heights and textures, windows cut in."""
    rng = p.rng
    h, w = p.height, p.width
    near_x = 0.0 if side < 0 else float(w)
    # The facades stand a pavement's width beyond the kerb; their foot is on that line.
    foot_x = kerb + side * rng.uniform(0.15, 0.6) * w
    foot = (foot_x, float(h))
    stop = vp[0] + side * rng.uniform(0.03, 0.12) * w
    xs = [near_x]
    # Buildings shrink towards the vanishing point: split by a geometric progression in depth.
    n = int(rng.integers(2, 6))
    for k in range(1, n):
        u = 1.0 - (1.0 - k / n) ** 0.4
        xs.append(near_x + (stop - near_x) * u)
    xs.append(stop)
    for x_a, x_b in itertools.pairwise(xs):
        roof_y = -rng.uniform(0.0, 1.2) * h
        roof = (foot[0], roof_y)
        quad_x = (x_a, x_b) if side < 0 else (x_b, x_a)
        top_a, top_b = _on_line(vp, roof, quad_x[0]), _on_line(vp, roof, quad_x[1])
        bot_a, bot_b = _on_line(vp, foot, quad_x[0]), _on_line(vp, foot, quad_x[1])
        aspect = max(0.3, abs(x_b - x_a) / max(abs(bot_a - top_a), 1.0) * 3.0)
        texture = p.crop("facade", min(aspect, 3.0))
        texture = p.tint(
            texture, rng.uniform(0.0, 0.7), rng.uniform(0.85, 1.15, 3), rng.uniform(70, 190)
        )
        if rng.random() < 0.75:
            _windows(texture, rng)
        p.paste(
            canvas,
            texture,
            [(quad_x[0], top_a), (quad_x[1], top_b), (quad_x[1], bot_b), (quad_x[0], bot_a)],
        )


def _objects(p: _Painter, canvas: Image, vp: Point, kerbs: tuple[float, float]) -> None:
    """Poles, trees and parked cars along the kerbs, smaller towards the vanishing point."""
    rng = p.rng
    h = p.height
    for _ in range(int(rng.integers(2, 9))):
        side = -1 if rng.random() < 0.5 else 1
        kerb = (kerbs[0] if side < 0 else kerbs[1], float(h))
        depth = rng.uniform(0.08, 1.0)  # 1: at the bottom of the frame, → 0 at the horizon
        x = vp[0] + (kerb[0] - vp[0]) * depth + side * rng.uniform(0.0, 0.08) * p.width * depth
        y = _on_line(vp, kerb, x) if abs(kerb[0] - vp[0]) > 1 else vp[1]
        size = depth * h
        what = str(rng.choice(["pole", "tree", "car", "sign"], p=[0.3, 0.35, 0.25, 0.1]))
        if what in ("pole", "sign"):
            width = max(1.0, size * 0.025)
            top = y - size * rng.uniform(0.8, 1.6)
            shade = rng.uniform(20, 110)
            cv2.rectangle(
                canvas, (int(x - width), int(top)), (int(x + width), int(y)), (shade,) * 3, -1
            )
            if what == "sign":
                colour = [(200, 30, 30), (30, 60, 170), (230, 200, 40)][int(rng.integers(3))]
                cv2.circle(
                    canvas, (int(x), int(top)), max(2, int(size * 0.08)), colour, -1, cv2.LINE_AA
                )
        elif what == "tree":
            trunk = max(1.0, size * 0.03)
            crown_y = y - size * rng.uniform(0.9, 1.5)
            cv2.rectangle(
                canvas, (int(x - trunk), int(crown_y)), (int(x + trunk), int(y)), (40, 32, 25), -1
            )
            leaves = p.tint(
                p.crop("foliage", 1.0, 256),
                rng.uniform(0.0, 0.4),
                (0.8, 1.05, 0.7),
                rng.uniform(50, 120),
            )
            p.blob(
                canvas,
                leaves,
                (x, crown_y),
                (size * rng.uniform(0.25, 0.5), size * rng.uniform(0.25, 0.45)),
            )
        else:
            car_h, car_w = size * 0.35, size * rng.uniform(0.5, 0.8)
            body = rng.choice(
                [[20, 20, 22], [150, 150, 155], [130, 20, 15], [20, 35, 90], [210, 210, 205]]
            )
            paint = tuple(float(c) for c in body * rng.uniform(0.8, 1.1))
            x0, x1 = int(x - car_w / 2), int(x + car_w / 2)
            cv2.rectangle(canvas, (x0, int(y - car_h)), (x1, int(y)), paint, -1, cv2.LINE_AA)
            glass = (25.0, 30.0, 35.0)
            cv2.rectangle(
                canvas,
                (x0 + (x1 - x0) // 6, int(y - car_h)),
                (x1 - (x1 - x0) // 6, int(y - car_h * 0.6)),
                glass,
                -1,
            )


def compose(
    seed: int,
    allowed: Sequence[str],
    load: Callable[[str], RGB],
    size: tuple[int, int] = SIZE,
) -> RGB:
    """A street scene (H×W×3 uint8 RGB) for `seed`, textured only with photos among `allowed`
    (read with `load`, a name → RGB photo function that goes through `catalog.load`)."""
    p = _Painter(seed, allowed, load, size)
    rng = p.rng
    w, h = p.width, p.height
    vp = (w * (0.5 + rng.uniform(-0.1, 0.1)), h * rng.uniform(0.38, 0.5))
    horizon = vp[1]
    canvas = _sky(p)
    if rng.random() < 0.5:  # a far block closing the street, or distant buildings
        far = p.tint(
            p.crop("facade", 3.0),
            rng.uniform(0.3, 0.9),
            rng.uniform(0.9, 1.1, 3),
            rng.uniform(100, 190),
        )
        top = horizon - rng.uniform(0.05, 0.25) * h
        p.paste(canvas, far, [(0, top), (w, top), (w, horizon + 2), (0, horizon + 2)])
    kerbs = _road(p, canvas, vp)
    for side in (-1, 1):
        if rng.random() < 0.8:
            _facades(p, canvas, vp, kerbs[0] if side < 0 else kerbs[1], side)
        else:  # an open side: a hedge or a row of trees instead of houses
            leaves = p.tint(
                p.crop("foliage", 1.0, 256), 0.2, (0.8, 1.05, 0.7), rng.uniform(50, 110)
            )
            leaves = _tiled(leaves, 12, 2)
            edge = 0.0 if side < 0 else float(w)
            inner = vp[0] + side * 4.0
            quad = (
                [
                    (edge, horizon - 0.3 * h),
                    (inner, horizon - 2),
                    (inner, horizon + 2),
                    (edge, horizon + 0.25 * h),
                ]
                if side < 0
                else [
                    (inner, horizon - 2),
                    (edge, horizon - 0.3 * h),
                    (edge, horizon + 0.25 * h),
                    (inner, horizon + 2),
                ]
            )
            p.paste(canvas, leaves, quad)
    _objects(p, canvas, vp, kerbs)
    gamma = rng.uniform(0.85, 1.15)
    out = 255.0 * (np.clip(canvas, 0.0, 255.0) / 255.0) ** gamma
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
