"""Output stage: where frames end up locally (video file, image folder, per-frame CSV)."""

from __future__ import annotations

import abc
import csv
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Literal

import cv2
import numpy as np

from vehicle_agent.records import FrameRecord, Image

VideoContent = Literal["enhanced", "raw", "side_by_side"]

CODEC_BY_SUFFIX = {".mp4": "h264", ".m4v": "h264", ".mov": "h264", ".mkv": "h264", ".avi": "mjpeg"}
"""The video files the sinks write, by suffix: H.264 (which browsers play) but MJPEG in AVI."""
H264_OPTIONS = {"preset": "veryfast", "crf": "23"}
"""libx264's: ~17 ms a 1536×576 frame on 2 busy cores, visually lossless enough for a bench."""


class SinkError(Exception):
    """A sink cannot write; `path` says where."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def compose(record: FrameRecord, content: VideoContent) -> Image:
    """The picture a sink writes for `record`: raw, enhanced, or both side by side."""
    if content == "raw":
        return record.frame.image
    if content == "enhanced":
        return record.output
    return np.hstack((record.frame.image, record.output))


class FrameSink(abc.ABC):
    """Writes records somewhere. Blocking: the output stage calls it from a thread."""

    @abc.abstractmethod
    def write(self, record: FrameRecord) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class VideoWriter:
    """A video file (PyAV: FFmpeg's encoders) opened on the first frame, whose size (and frame
    rate) it keeps. H.264 in MP4 (moov first, so a browser plays it while it loads), MKV and
    MOV; MJPEG in AVI.

    `fps` may be a function: a camera's frame rate is known only once it has opened.
    """

    def __init__(self, path: Path, fps: float | Callable[[], float]) -> None:
        codec = CODEC_BY_SUFFIX.get(path.suffix.lower())
        if codec is None:
            raise SinkError(
                path,
                f"unsupported video type {path.suffix!r}; use one of {sorted(CODEC_BY_SUFFIX)}",
            )
        self.path = path
        self.fps = fps
        self.codec = codec
        self._container: Any = None
        self._stream: Any = None
        self._frame_from: Callable[..., Any] | None = None
        """`av.VideoFrame.from_ndarray`, once the file is open (no import per frame)."""
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open(self, size: tuple[int, int]) -> None:
        import av  # noqa: PLC0415 - FFmpeg's libraries load only when a video is written

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fps = self.fps() if callable(self.fps) else self.fps
        if not fps or not math.isfinite(fps) or fps <= 0:
            fps = 10.0
        mp4 = self.path.suffix.lower() in {".mp4", ".m4v", ".mov"}
        try:
            container = av.open(
                str(self.path), mode="w", options={"movflags": "+faststart"} if mp4 else {}
            )
        except (OSError, ValueError, av.FFmpegError) as exc:
            raise SinkError(self.path, f"cannot open a video file: {exc}") from exc
        try:
            if self.codec == "h264":
                name = "libx264" if "libx264" in av.codecs_available else "h264"
                stream: Any = container.add_stream(
                    name, rate=Fraction(fps).limit_denominator(1001), options=H264_OPTIONS
                )
                stream.pix_fmt = "yuv420p"
            else:
                stream = container.add_stream("mjpeg", rate=Fraction(fps).limit_denominator(1001))
                stream.pix_fmt = "yuvj420p"
            # 4:2:0 needs even sides: an odd frame gets one edge row or column repeated.
            stream.width, stream.height = size[0] + size[0] % 2, size[1] + size[1] % 2
        except (ValueError, av.FFmpegError) as exc:
            container.close()
            raise SinkError(self.path, f"no {self.codec} encoder here: {exc}") from exc
        self._container, self._stream, self._size = container, stream, size
        self._frame_from = av.VideoFrame.from_ndarray

    def write(self, image: Image) -> None:
        size = (image.shape[1], image.shape[0])
        if self._container is None:
            self._open(size)
        elif size != self._size:
            # A camera that reconnects at another resolution must not break the recording.
            image = np.asarray(cv2.resize(image, self._size), dtype=np.uint8)
        assert self._frame_from is not None  # noqa: S101 - set by _open
        stream = self._stream
        if (stream.width, stream.height) != (image.shape[1], image.shape[0]):
            pad_x, pad_y = stream.width - image.shape[1], stream.height - image.shape[0]
            image = np.asarray(
                cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE), dtype=np.uint8
            )
        frame = self._frame_from(np.ascontiguousarray(image), format="bgr24")
        for packet in stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                for packet in self._stream.encode(None):
                    container.mux(packet)
            finally:
                container.close()


class VideoFileSink(FrameSink):
    def __init__(
        self, path: Path, fps: float | Callable[[], float], content: VideoContent = "enhanced"
    ) -> None:
        self.content = content
        self._video = VideoWriter(path, fps)

    @property
    def path(self) -> Path:
        return self._video.path

    def write(self, record: FrameRecord) -> None:
        self._video.write(compose(record, self.content))

    def close(self) -> None:
        self._video.close()


class ImageFolderSink(FrameSink):
    """Numbered JPEG files (`frame_000042.jpg`, by sequence number), one every `every` frames."""

    def __init__(self, directory: Path, every: int = 1, content: VideoContent = "enhanced") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.every = every
        self.content = content
        self._count = 0

    def write(self, record: FrameRecord) -> None:
        self._count += 1
        if (self._count - 1) % self.every:
            return
        path = self.directory / f"frame_{record.frame.seq:06d}.jpg"
        if not cv2.imwrite(str(path), compose(record, self.content)):
            raise SinkError(path, "cannot write image")

    def close(self) -> None:
        pass


class CsvFrameLog(FrameSink):
    """One row per frame: sequence, times, backend and model, quality, adhesion, fan duty and
    latency per stage.

    `more_columns` adds columns the record does not carry (the simulator's module
    temperatures); it must return the same keys for every record.
    """

    def __init__(
        self, path: Path, more_columns: Callable[[FrameRecord], Mapping[str, object]] | None = None
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.more_columns = more_columns
        self._file: IO[str] = path.open("w", encoding="utf-8", newline="")
        self._writer: csv.DictWriter[str] | None = None

    @staticmethod
    def row(record: FrameRecord) -> dict[str, object]:
        frame = record.frame
        row: dict[str, object] = {
            "frame": frame.seq,
            "t": round(frame.t_video, 6),
            "enhancer": record.enhancer,
        }
        q = record.quality
        row.update(
            {
                "brightness": "" if q is None else round(q.brightness, 3),
                "contrast": "" if q is None else round(q.contrast, 3),
                "sharpness": "" if q is None else round(q.sharpness, 3),
                "noise": "" if q is None else round(q.noise, 3),
                "saturation": "" if q is None else round(q.saturation, 3),
                "clipped_shadows": "" if q is None else round(q.clipped_shadows, 5),
                "clipped_highlights": "" if q is None else round(q.clipped_highlights, 5),
                "haze": "" if q is None else round(q.haze, 3),
                "brisque": "" if q is None or q.brisque is None else round(q.brisque, 3),
                "condition": "" if q is None else q.condition,
            }
        )
        row["model"] = record.model or ""
        a = record.adhesion
        row["adhesion_score"] = "" if a is None else round(a.score, 4)
        row["adhesion_covered"] = "" if a is None else round(a.covered_fraction, 5)
        row["adhesion_detected"] = "" if a is None else int(a.detected)
        row["fan_duty"] = "" if record.actuation is None else record.actuation.fan_duty
        for stage, seconds in record.latency:
            row[f"{stage}_ms"] = round(seconds * 1000.0, 3)
        return row

    def write(self, record: FrameRecord) -> None:
        row = self.row(record)
        if self.more_columns is not None:
            row.update(self.more_columns(record))
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)

    def close(self) -> None:
        self._file.close()
