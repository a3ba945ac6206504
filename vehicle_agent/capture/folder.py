"""Capture: `ImageFolderSource` replays a directory of still images as a recording."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vehicle_agent.capture.base import BadFrameError, FrameSource, RawFrame, SourceError, SourceInfo

if TYPE_CHECKING:
    from vehicle_agent.records import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_FPS = 10.0


def list_images(directory: Path) -> list[Path]:
    """Image files of `directory` (not its subdirectories), sorted by name."""
    return sorted(
        (p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


class ImageFolderSource(FrameSource):
    """The images of a folder in name order, one frame each; not live, frames wait for us.

    Images are read as 8-bit BGR whatever their format. An image that cannot be read or decoded
    raises `BadFrameError` and the next read() goes on with the following one. Images need not
    all have the size SourceInfo gives (that of the first decodable one): each is returned as it
    is. Names sort as strings, so number them with leading zeros (frame_0009 before frame_0010).
    """

    def __init__(self, uri: str, directory: Path | str, fps: float | None = None) -> None:
        """`fps` paces the replay and numbers the timestamps (index / fps); default 10."""
        super().__init__(uri)
        self.directory = Path(directory)
        self.fps = fps or DEFAULT_FPS
        self._lock = threading.Lock()
        self._files: list[Path] | None = None
        self._index = 0

    def open(self) -> SourceInfo:
        self.close()
        if not self.directory.exists():
            raise SourceError(self.uri, f"no such file or directory: {self.directory}")
        if not self.directory.is_dir():
            raise SourceError(self.uri, f"{self.directory} is not a directory")
        try:
            files = list_images(self.directory)
        except OSError as exc:
            raise SourceError(self.uri, f"cannot list {self.directory}: {exc}") from None
        if not files:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(self.uri, f"no images ({suffixes}) in {self.directory}")
        for path in files:
            try:
                first = self._decode(path)
                break
            except BadFrameError:
                continue
        else:
            raise SourceError(self.uri, f"none of the {len(files)} images can be decoded")
        height, width = first.shape[:2]
        with self._lock:
            self._files = files
            self._index = 0
        return SourceInfo(
            width=width,
            height=height,
            fps=self.fps,
            live=False,
            description=(
                f"{self.directory.name}/: {width}x{height} @ {self.fps:g} fps, {len(files)} images"
            ),
        )

    def _decode(self, path: Path) -> Image:
        try:
            data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        except OSError as exc:
            raise BadFrameError(self.uri, f"cannot read {path.name}: {exc.strerror}") from None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise BadFrameError(self.uri, f"cannot decode {path.name}")
        return np.asarray(image, dtype=np.uint8)

    def read(self) -> RawFrame | None:
        with self._lock:
            files = self._files
            if files is None:
                raise SourceError(self.uri, "read() on a source that is not open")
            if self._index >= len(files):
                return None
            index = self._index
            self._index += 1
        # Decoded outside the lock, so close() from another thread never waits for it.
        image = self._decode(files[index])
        return RawFrame(image=image, pts=index / self.fps)

    def rewind(self) -> None:
        with self._lock:
            if self._files is not None:
                self._index = 0
                return
        self.open()

    def close(self) -> None:
        with self._lock:
            self._files = None
