"""ImageFolderSource: name order, undecodable images skipped one by one, empty folders refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.capture.media import frame_value, grey, write_image
from vehicle_agent.capture.base import BadFrameError, SourceError
from vehicle_agent.capture.folder import ImageFolderSource

if TYPE_CHECKING:
    from pathlib import Path

    from vehicle_agent.capture.base import RawFrame


def read_all(source: ImageFolderSource) -> list[RawFrame | BadFrameError]:
    results: list[RawFrame | BadFrameError] = []
    while True:
        try:
            frame = source.read()
        except BadFrameError as exc:
            results.append(exc)
            continue
        if frame is None:
            return results
        results.append(frame)


def test_images_come_in_name_order_at_the_configured_rate(image_folder: Path) -> None:
    source = ImageFolderSource("file://images", image_folder, fps=5.0)
    info = source.open()
    assert (info.width, info.height, info.fps, info.live) == (64, 48, 5.0, False)
    assert info.description == "images/: 64x48 @ 5 fps, 3 images"
    frames = read_all(source)
    assert [int(f.image.mean()) for f in frames if not isinstance(f, Exception)] == [
        frame_value(i) for i in range(3)
    ]
    assert [f.pts for f in frames if not isinstance(f, Exception)] == [0.0, 0.2, 0.4]
    assert source.read() is None


def test_every_image_suffix_in_any_case_is_read_and_other_files_ignored(tmp_path: Path) -> None:
    names = ["a.jpg", "b.JPEG", "c.png", "d.bmp", "e.TIF", "f.tiff", "g.webp"]
    for name in names:
        write_image(tmp_path / name, grey(128))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    source = ImageFolderSource("file://dir", tmp_path)
    assert source.open().description.endswith("7 images")
    frames = read_all(source)
    assert len(frames) == len(names)
    assert all(not isinstance(f, Exception) and f.image.shape == (48, 64, 3) for f in frames)


def test_undecodable_image_raises_bad_frame_then_the_next_one_comes(image_folder: Path) -> None:
    (image_folder / "01b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    source = ImageFolderSource("file://images", image_folder)
    source.open()
    assert source.read() is not None
    assert source.read() is not None
    with pytest.raises(BadFrameError, match=r"cannot decode 01b\.png") as caught:
        source.read()
    assert caught.value.uri == "file://images"
    frame = source.read()
    assert frame is not None
    assert int(frame.image.mean()) == frame_value(2)
    assert frame.pts == pytest.approx(3 / 10), "the bad image keeps its place in time"
    assert source.read() is None


def test_size_comes_from_the_first_decodable_image_and_others_keep_theirs(tmp_path: Path) -> None:
    (tmp_path / "0.png").write_bytes(b"")
    write_image(tmp_path / "1.png", grey(50, (32, 16)))
    write_image(tmp_path / "2.png", grey(60, (40, 20)))
    source = ImageFolderSource("file://dir", tmp_path)
    info = source.open()
    assert (info.width, info.height) == (32, 16)
    results = read_all(source)
    assert isinstance(results[0], BadFrameError)
    shapes = [r.image.shape for r in results[1:] if not isinstance(r, Exception)]
    assert shapes == [(16, 32, 3), (20, 40, 3)]


def test_grey_and_alpha_images_come_out_bgr(tmp_path: Path) -> None:
    write_image(tmp_path / "0.png", np.full((8, 8), 77, dtype=np.uint8))
    write_image(tmp_path / "1.png", np.full((8, 8, 4), 99, dtype=np.uint8))
    source = ImageFolderSource("file://dir", tmp_path)
    source.open()
    frames = read_all(source)
    assert all(not isinstance(f, Exception) and f.image.shape == (8, 8, 3) for f in frames)


def test_empty_folder_fails_open(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=r"no images .* in"):
        ImageFolderSource("file://dir", tmp_path).open()


def test_folder_of_only_undecodable_images_fails_open(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"nope")
    with pytest.raises(SourceError, match="none of the 1 images can be decoded"):
        ImageFolderSource("file://dir", tmp_path).open()


def test_missing_folder_fails_open(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        ImageFolderSource("file://gone", tmp_path / "gone").open()


def test_rewind_starts_again_and_close_stops(image_folder: Path) -> None:
    source = ImageFolderSource("file://images", image_folder)
    source.open()
    read_all(source)
    source.rewind()
    frame = source.read()
    assert frame is not None
    assert frame.pts == 0.0
    source.close()
    source.close()
    with pytest.raises(SourceError, match="not open"):
        source.read()
