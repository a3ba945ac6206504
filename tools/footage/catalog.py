"""Footage bank: every real recording and photo available offline, with its source and licence.

Nothing is downloaded from the web. The items come from three places:
- Debian's `opencv-doc` package (OpenCV's sample data: `vtest.avi`, `tree.avi`, the handheld
  clips `box.mp4.gz` and `cup.mp4.gz`, and its real photos), found installed or extracted from
  `apt-get download opencv-doc` into the cache folder;
- scikit-image's bundled photos (`skimage.data`, the `train` extra);
- the clip the project bundles (`vehicle_agent/sim/samples/street_vtest.mp4`, vtest frames 0–299).

Each `Item` records where it comes from, its licence, resolution, frame rate, whether the camera
moves, and its `group`: items that show the same place (vtest and the bundled clip, the two
views of a stereo pair) share a group, so the split can never put one view in training and the
other in evaluation. `load` returns RGB frames and tells the split (`splits.note_use`) what was
read, which is how training entry points are kept off held-out scenes.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.uint8]
"""H×W×3 uint8, RGB."""

ItemKind = Literal["video", "photo"]
Origin = Literal["opencv-doc", "skimage", "bundled"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vehicle-agent"
OPENCV_DOC_ROOT = Path("usr/share/doc/opencv-doc")
OPENCV_DOC_DATA = OPENCV_DOC_ROOT / "examples" / "data"
OPENCV_DOC_HTML = OPENCV_DOC_ROOT / "opencv4" / "html"
BUNDLED_CLIP = (
    Path(__file__).resolve().parents[2] / "vehicle_agent" / "sim" / "samples" / "street_vtest.mp4"
)

OPENCV_LICENCE = (
    "Apache-2.0 AND BSD-3-Clause (Debian opencv-doc 4.6.0 copyright, stanza 'Files: *'; "
    "© Intel, Willow Garage, NVIDIA, AMD, OpenCV Foundation, Itseez and contributors)"
)
SKIMAGE_CC0 = "CC0 (skimage.data docstring)"
SKIMAGE_PD = "public domain (skimage.data docstring)"
MIDDLEBURY = "Middlebury 2014 stereo (Scharstein et al.) via scikit-image; no licence stated"


class FootageError(Exception):
    """A bank item that cannot be found or read; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Item:
    """One real recording or photo of the bank."""

    name: str
    kind: ItemKind
    origin: Origin
    source: str
    """Where it is read from: a path inside opencv-doc, a `skimage.data` function, a repo path."""
    licence: str
    width: int
    height: int
    fps: float | None
    """Frames per second of a video; None for a photo."""
    frames: int
    moving: bool
    """Whether the camera itself moves (handheld); False for a fixed camera or a photo."""
    group: str
    """Items showing the same place share a group (and so a split)."""
    content: str
    """What is in it, in a few words."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "origin": self.origin,
            "source": self.source,
            "licence": self.licence,
            "resolution": f"{self.width}x{self.height}",
            "fps": self.fps,
            "frames": self.frames,
            "camera_moves": self.moving,
            "group": self.group,
            "content": self.content,
        }


def _video(  # noqa: PLR0917 - one row of the catalog table
    name: str,
    source: str,
    size: tuple[int, int],
    fps: float,
    frames: int,
    group: str,
    content: str,
    *,
    moving: bool,
    origin: Origin = "opencv-doc",
) -> Item:
    licence = OPENCV_LICENCE
    return Item(
        name,
        "video",
        origin,
        source,
        licence,
        *size,
        fps,
        frames,
        moving=moving,
        group=group,
        content=content,
    )


def _cv_photo(name: str, file: str, size: tuple[int, int], content: str, group: str = "") -> Item:
    source = str(OPENCV_DOC_DATA / file)
    return Item(
        name, "photo", "opencv-doc", source, OPENCV_LICENCE, *size, None, 1, moving=False,
        group=group or name, content=content,
    )  # fmt: skip


def _sk_photo(  # noqa: PLR0917 - one row of the catalog table
    name: str, func: str, size: tuple[int, int], content: str, licence: str, group: str = ""
) -> Item:
    source = f"skimage.data.{func}"
    return Item(
        name,
        "photo",
        "skimage",
        source,
        licence,
        *size,
        None,
        1,
        moving=False,
        group=group or name,
        content=content,
    )


CATALOG: tuple[Item, ...] = (
    # Real video.
    _video(
        "vtest", str(OPENCV_DOC_DATA / "vtest.avi"), (768, 576), 10.0, 795, "vtest-street",
        "pedestrian street with passing cars, fixed surveillance camera", moving=False,
    ),
    _video(
        "street_vtest", "vehicle_agent/sim/samples/street_vtest.mp4", (768, 576), 10.0, 300,
        "vtest-street", "the bundled sample: vtest.avi frames 0–299", moving=False,
        origin="bundled",
    ),
    _video(
        "tree", str(OPENCV_DOC_DATA / "tree.avi"), (320, 240), 15.0, 68, "tree",
        "a tree outside; a hand covers the lens (68 of the 444 frames in its header decode)",
        moving=False,
    ),
    _video(
        "box", str(OPENCV_DOC_HTML / "box.mp4.gz"), (640, 480), 30.0, 455, "box",
        "handheld camera around a box on a desk: real camera motion, sensor noise, compression",
        moving=True,
    ),
    _video(
        "cup", str(OPENCV_DOC_HTML / "cup.mp4.gz"), (640, 480), 26.8, 217, "cup",
        "handheld camera around a cup indoors: real camera motion, sensor noise, compression",
        moving=True,
    ),
    # Real photos, opencv-doc (synthetic drawings, charts and calibration boards left out).
    _cv_photo("aero1", "aero1.jpg", (640, 480), "aerial view of a town and river", "aero"),
    _cv_photo("aero3", "aero3.jpg", (640, 480), "aerial view of the same town", "aero"),
    _cv_photo("baboon", "baboon.jpg", (512, 512), "baboon face close-up"),
    _cv_photo("building", "building.jpg", (868, 600), "hotel facade, lawn and trees, daylight"),
    _cv_photo("fruits", "fruits.jpg", (512, 480), "fruit close-up"),
    _cv_photo("home", "home.jpg", (512, 384), "palace towers against a blue sky"),
    _cv_photo("leuvenA", "leuvenA.jpg", (751, 563), "cobbled street between brick houses", "leuven"),
    _cv_photo("leuvenB", "leuvenB.jpg", (751, 563), "the same street, another view", "leuven"),
    _cv_photo("messi5", "messi5.jpg", (548, 342), "footballer on a floodlit pitch"),
    _cv_photo("orange", "orange.jpg", (512, 512), "an orange"),
    _cv_photo("apple", "apple.jpg", (512, 512), "an apple"),
    _cv_photo("board", "board.jpg", (640, 480), "circuit board"),
    _cv_photo("graf1", "graf1.png", (800, 640), "graffiti wall", "graf"),
    _cv_photo("graf3", "graf3.png", (800, 640), "the same wall, oblique", "graf"),
    _cv_photo("squirrel", "squirrel_cls.jpg", (535, 426), "squirrel on a branch, foliage"),
    _cv_photo("butterfly", "butterfly.jpg", (493, 356), "butterfly on a leaf"),
    _cv_photo("basketball1", "basketball1.png", (640, 480), "two people indoors, grey"),
    _cv_photo("rubberwhale1", "rubberwhale1.png", (584, 388), "toys on cloth, indoor light"),
    _cv_photo("aloeL", "aloeL.jpg", (1282, 1110), "aloe plant on patterned cloth"),
    _cv_photo("stuff", "stuff.jpg", (640, 480), "objects on a table, grey"),
    _cv_photo("box_in_scene", "box_in_scene.png", (512, 384), "cluttered objects, grey"),
    _cv_photo("chicky", "chicky_512.png", (512, 512), "a dog's face"),
    # Real photos, scikit-image.
    _sk_photo("astronaut", "astronaut", (512, 512), "portrait with flag", SKIMAGE_PD),
    _sk_photo("coffee", "coffee", (600, 400), "cup of coffee on a table", SKIMAGE_CC0),
    _sk_photo("chelsea", "chelsea", (451, 300), "a cat, indoors", SKIMAGE_CC0),
    _sk_photo("rocket", "rocket", (640, 427), "rocket on a launch pad, sky", SKIMAGE_PD),
    _sk_photo("camera", "camera", (512, 512), "photographer on a lawn, grey", SKIMAGE_CC0),
    _sk_photo("coins", "coins", (384, 303), "coins, grey", "no known copyright restrictions (skimage.data)"),
    _sk_photo("grass", "grass", (512, 512), "grass texture, grey", SKIMAGE_CC0),
    _sk_photo("gravel", "gravel", (512, 512), "gravel texture, grey", SKIMAGE_CC0),
    _sk_photo("brick", "brick", (512, 512), "brick wall, grey", SKIMAGE_CC0),
    _sk_photo("clock", "clock", (400, 300), "clock with real motion blur, grey", SKIMAGE_PD),
    _sk_photo(
        "motorcycle_left", "stereo_motorcycle", (741, 500), "motorcycle in a workshop, left view",
        MIDDLEBURY, "motorcycle",
    ),
    _sk_photo(
        "motorcycle_right", "stereo_motorcycle", (741, 500), "the same, right view",
        MIDDLEBURY, "motorcycle",
    ),
)  # fmt: skip
"""Every item of the bank, in the order docs/footage.md lists them."""

BY_NAME: dict[str, Item] = {item.name: item for item in CATALOG}


def item(name: str) -> Item:
    """The bank item called `name`; an unknown name is refused with the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise FootageError(f"unknown footage item {name!r}; known: {', '.join(BY_NAME)}") from None


# ---------------------------------------------------------------------------------------------
# Finding files


def _opencv_doc_file(relative: Path, extract: bool = True) -> Path:
    """A file of opencv-doc: installed, extracted before, or extracted now into the cache."""
    if "VEHICLE_AGENT_VTEST" in os.environ and relative.name == "vtest.avi":
        return Path(os.environ["VEHICLE_AGENT_VTEST"])
    candidates = [
        Path("/") / relative,
        CACHE / "opencv-doc" / relative,
        Path("/tmp/ocvdoc") / relative,  # noqa: S108 - where the field notes extracted it
    ]
    for path in candidates:
        if path.is_file():
            return path
    if not extract:
        raise FootageError(f"{relative} not found; install opencv-doc (apt-get install opencv-doc)")
    _extract_opencv_doc()
    path = CACHE / "opencv-doc" / relative
    if not path.is_file():
        raise FootageError(f"opencv-doc was extracted but holds no {relative}")
    return path


def _extract_opencv_doc() -> None:
    """Every file the bank uses from opencv-doc, from one `apt-get download` (~96 MB)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FootageError("opencv-doc is not installed and apt-get/dpkg-deb are missing")
    dest = CACHE / "opencv-doc"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = sorted(
        {f"./{Path(i.source)}" for i in CATALOG if i.origin == "opencv-doc"}
        | {f"./{OPENCV_DOC_ROOT / 'copyright'}"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", "opencv-doc"]
        if subprocess.run(download, cwd=tmp, check=False).returncode != 0:
            # A fresh machine may have no package lists yet.
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
            subprocess.run(download, cwd=tmp, check=True)
        debs = sorted(Path(tmp).glob("opencv-doc_*.deb"))
        if not debs:
            raise FootageError("apt-get download opencv-doc produced no .deb")
        tar = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(debs[0])], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", *wanted], cwd=dest, input=tar, check=True)


def locate(entry: Item) -> Path:
    """The readable file behind a video or an opencv-doc photo (a gzipped clip is unpacked
    once into the cache)."""
    if entry.origin == "bundled":
        return BUNDLED_CLIP
    if entry.origin != "opencv-doc":
        raise FootageError(f"{entry.name} comes from {entry.source}, not a file")
    path = _opencv_doc_file(Path(entry.source.lstrip("/")))
    if path.suffix != ".gz":
        return path
    unpacked = CACHE / "unpacked" / path.stem
    if not unpacked.is_file() or unpacked.stat().st_size == 0:
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        partial = unpacked.with_suffix(unpacked.suffix + ".part")
        with gzip.open(path, "rb") as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(unpacked)
    return unpacked


def fetch() -> list[Path]:
    """Make every file-backed item readable now (extracting opencv-doc once if needed)."""
    return [locate(entry) for entry in CATALOG if entry.origin != "skimage"]


# ---------------------------------------------------------------------------------------------
# Reading frames


def _skimage(entry: Item) -> RGB:
    from skimage import data  # noqa: PLC0415 - optional heavy import, train extra only

    func = entry.source.removeprefix("skimage.data.")
    if func == "stereo_motorcycle":
        stereo: Callable[[], tuple[RGB, RGB, Any]] = data.stereo_motorcycle
        left, right, _ = stereo()
        image = np.asarray(left if entry.name.endswith("left") else right)
    else:
        image = np.asarray(getattr(data, func)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def _read_video(path: Path, name: str, start: int, stop: int | None, step: int) -> list[RGB]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FootageError(f"{name}: cannot open {path}")
    frames: list[RGB] = []
    index = 0
    try:
        while stop is None or index < stop:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start and (index - start) % step == 0:
                frames.append(np.ascontiguousarray(frame[..., ::-1], dtype=np.uint8))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise FootageError(f"{name}: no frames decoded from {path}")
    return frames


def load(
    name: str, start: int = 0, stop: int | None = None, step: int = 1, *, purpose: str = ""
) -> list[RGB]:
    """The frames of a bank item as RGB (a photo: one frame), frames `start:stop:step` of a
    video. `purpose` names the caller for the split's record of what was used."""
    from tools.footage import splits  # noqa: PLC0415 - splits imports the catalog

    entry = item(name)
    splits.note_use("scene", name, purpose)
    if step < 1 or start < 0 or (stop is not None and stop <= start):
        raise FootageError(f"{name}: bad frame range {start}:{stop}:{step}")
    if entry.origin == "skimage":
        return [_skimage(entry)]
    path = locate(entry)
    if entry.kind == "video":
        return _read_video(path, name, start, stop, step)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FootageError(f"{name}: cannot read {path}")
    return [np.ascontiguousarray(image[..., ::-1], dtype=np.uint8)]
