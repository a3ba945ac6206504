"""Capture: sans-IO YUV4MPEG2 parser that turns the byte stream of a `GstSource` into BGR frames.

Bytes go in with `Y4mParser.feed()`, frames come out of `Y4mParser.next_frame()`; the parser
never reads or waits, so it is tested byte for byte without a pipeline. Only 8-bit 4:2:0 streams
are accepted (C420, C420jpeg, C420mpeg2, C420paldv, or no C tag): that is what the GStreamer
pipeline is told to produce, and the chroma siting the variants differ in is ignored.

Odd sizes: a WxH stream carries chroma planes of ceil(W/2)xceil(H/2), but OpenCV's I420
conversion needs even sizes, so the picture is cropped to floor(W/2)*2 x floor(H/2)*2 (the last
column and/or row are dropped). `Y4mHeader.frame_width`/`frame_height` give the cropped size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy.typing as npt

    from vehicle_agent.records import Image

MAGIC = b"YUV4MPEG2"
FRAME_MAGIC = b"FRAME"
MAX_HEADER_BYTES = 4096
"""A stream or frame header longer than this without a newline is corruption, not slow data."""
MAX_DIMENSION = 16384
"""Bigger sizes are corruption; refusing them avoids allocating gigabytes for a bad header."""
ACCEPTED_CHROMA = ("420", "420jpeg", "420mpeg2", "420paldv")
_INTERLACE_MODES = ("p", "t", "b", "m", "?")


class Y4mError(ValueError):
    """The stream is not YUV4MPEG2 we can decode; `offset` is the stream position of the problem."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"{message} (at byte {offset})")


class Y4mLayout(enum.Enum):
    """How the planes of one frame are laid out after `FRAME\\n`."""

    PACKED = "packed"
    """The YUV4MPEG2 format: planes back to back, no padding."""
    GST_PADDED = "gst-padded"
    """What y4menc of GStreamer 1.22 and older writes for widths that are not a multiple of 8
    or odd heights: GStreamer's default I420 layout (rows padded to 4 bytes, plane heights
    rounded up to even). Newer y4menc removes the padding and writes PACKED."""


@dataclass(frozen=True, slots=True)
class Y4mHeader:
    """The stream header's parameters."""

    width: int
    height: int
    fps_num: int
    """Frame rate numerator; 0 (with `fps_den` 0 or not) when the stream does not say."""
    fps_den: int
    chroma: str
    interlace: str
    """p (progressive), t/b (top/bottom field first), m (per frame) or ? (unknown)."""
    aspect: tuple[int, int]
    """Pixel aspect ratio; (0, 0) when unknown."""
    extensions: tuple[str, ...]
    """X tags and unknown tags, as written (without the leading space)."""

    @property
    def fps(self) -> float | None:
        if self.fps_num <= 0 or self.fps_den <= 0:
            return None
        return self.fps_num / self.fps_den

    @property
    def frame_width(self) -> int:
        """Width of the frames handed out: `width` cropped to even."""
        return self.width // 2 * 2

    @property
    def frame_height(self) -> int:
        """Height of the frames handed out: `height` cropped to even."""
        return self.height // 2 * 2


@dataclass(frozen=True, slots=True)
class Y4mFrame:
    """One decoded frame."""

    index: int
    """0 for the first frame of the stream."""
    image: Image
    """BGR, frame_height x frame_width x 3."""
    i420: npt.NDArray[np.uint8]
    """The cropped I420 planes it was converted from: (frame_height*3/2) x frame_width."""
    params: tuple[str, ...]
    """Frame header parameters (after `FRAME`), usually empty."""


@dataclass(frozen=True, slots=True)
class _Plane:
    offset: int
    stride: int
    rows: int


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _planes(header: Y4mHeader, layout: Y4mLayout) -> tuple[tuple[_Plane, _Plane, _Plane], int]:
    """Y, U, V planes and the frame's payload size in bytes."""
    w, h = header.width, header.height
    if layout is Y4mLayout.PACKED:
        y_stride, y_rows = w, h
        c_stride, c_rows = (w + 1) // 2, (h + 1) // 2
    else:
        # gst_video_info_set_format() for I420, progressive.
        y_stride, y_rows = _round_up(w, 4), _round_up(h, 2)
        c_stride, c_rows = _round_up(_round_up(w, 2) // 2, 4), _round_up(h, 2) // 2
    u_offset = y_stride * y_rows
    v_offset = u_offset + c_stride * c_rows
    size = v_offset + c_stride * c_rows
    return (
        _Plane(0, y_stride, y_rows),
        _Plane(u_offset, c_stride, c_rows),
        _Plane(v_offset, c_stride, c_rows),
    ), size


def _ratio(tag: str, value: str, offset: int) -> tuple[int, int]:
    num, sep, den = value.partition(":")
    if not sep or not num.isdigit() or not den.isdigit():
        raise Y4mError(f"stream header: {tag}{value!r} is not {tag}num:den", offset)
    return int(num), int(den)


def parse_stream_header(line: bytes, offset: int = 0) -> Y4mHeader:
    """Parse a stream header line (without its newline). Raises `Y4mError` naming the bad part."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise Y4mError("stream header is not ASCII", offset) from None
    words = text.split(" ")
    if words[0] != MAGIC.decode():
        raise Y4mError(f"stream does not start with {MAGIC.decode()!r}", offset)
    width = height = None
    fps = (0, 0)
    aspect = (0, 0)
    chroma = "420"
    interlace = "?"
    extensions: list[str] = []
    for word in words[1:]:
        if not word:
            continue  # tolerate doubled spaces
        tag, value = word[0], word[1:]
        if tag in "WH":
            if not value.isdigit() or not 0 < int(value) <= MAX_DIMENSION:
                raise Y4mError(
                    f"stream header: {tag}{value!r} is not a size from 1 to {MAX_DIMENSION}", offset
                )
            if tag == "W":
                width = int(value)
            else:
                height = int(value)
        elif tag == "F":
            fps = _ratio(tag, value, offset)
        elif tag == "A":
            aspect = _ratio(tag, value, offset)
        elif tag == "C":
            if value not in ACCEPTED_CHROMA:
                accepted = ", ".join(f"C{c}" for c in ACCEPTED_CHROMA)
                raise Y4mError(
                    f"stream header: chroma C{value} is not supported (only 8-bit 4:2:0: "
                    f"{accepted})",
                    offset,
                )
            chroma = value
        elif tag == "I":
            if value not in _INTERLACE_MODES:
                raise Y4mError(f"stream header: unknown interlacing I{value}", offset)
            interlace = value
        else:
            extensions.append(word)
    if width is None or height is None:
        raise Y4mError("stream header has no W (width) or no H (height)", offset)
    if width < 2 or height < 2:
        raise Y4mError(f"stream header: {width}x{height} is smaller than 2x2", offset)
    return Y4mHeader(
        width=width,
        height=height,
        fps_num=fps[0],
        fps_den=fps[1],
        chroma=chroma,
        interlace=interlace,
        aspect=aspect,
        extensions=tuple(extensions),
    )


class Y4mParser:
    """Incremental YUV4MPEG2 parser: `feed()` bytes as they arrive, take frames with `next_frame()`.

    Truncated data only means "not yet"; data that cannot be YUV4MPEG2 (bad magic, a frame that
    does not start with `FRAME`, an over-long header) raises `Y4mError`, and every later call
    raises it again: after corruption the frame boundaries are lost.
    """

    def __init__(self, layout: Y4mLayout = Y4mLayout.PACKED) -> None:
        self.layout = layout
        self.header: Y4mHeader | None = None
        """Set by the `feed()` that completes the stream header."""
        self.frames_parsed = 0
        self._buffer = bytearray()
        self._consumed = 0
        """Stream offset of `_buffer[0]`, for error messages."""
        self._planes: tuple[_Plane, _Plane, _Plane] | None = None
        self._frame_size = 0
        self._error: Y4mError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (non-zero at the end: truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add bytes from the stream; parses the stream header as soon as it is complete."""
        self._raise_if_broken()
        self._buffer += data
        if self.header is None:
            self._parse_header()

    def next_frame(self) -> Y4mFrame | None:
        """The next complete frame, or None until more bytes are fed."""
        self._raise_if_broken()
        if self.header is None or self._planes is None:
            return None
        newline = self._find_line_end(FRAME_MAGIC, "frame header")
        if newline < 0:
            return None
        end = newline + 1 + self._frame_size
        if len(self._buffer) < end:
            return None
        params = self._buffer[len(FRAME_MAGIC) : newline].decode("ascii", "replace").split()
        # One copy out of the buffer; the temporary view is gone before the buffer shrinks.
        payload = np.frombuffer(
            self._buffer, dtype=np.uint8, count=self._frame_size, offset=newline + 1
        ).copy()
        del self._buffer[:end]
        self._consumed += end
        i420 = _crop_i420(payload, self.header, self._planes)
        image = np.asarray(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), dtype=np.uint8)
        frame = Y4mFrame(index=self.frames_parsed, image=image, i420=i420, params=tuple(params))
        self.frames_parsed += 1
        return frame

    def frames(self) -> Iterator[Y4mFrame]:
        """Every complete frame buffered now."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def __iter__(self) -> Iterator[Y4mFrame]:
        return self.frames()

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, message: str) -> Y4mError:
        self._error = Y4mError(message, self._consumed)
        return self._error

    def _find_line_end(self, magic: bytes, what: str) -> int:
        """Index of the newline ending the header at the buffer's start, or -1 to wait.

        Checks the magic on as many bytes as have arrived, so corruption is reported at once
        rather than after MAX_HEADER_BYTES more bytes.
        """
        start = bytes(self._buffer[: len(magic) + 1])
        if not (magic + b" ").startswith(start) and not (magic + b"\n").startswith(start):
            raise self._fail(f"{what} does not start with {magic.decode()!r}: {start!r}")
        newline = self._buffer.find(b"\n", 0, MAX_HEADER_BYTES)
        if newline < 0 and len(self._buffer) >= MAX_HEADER_BYTES:
            raise self._fail(f"{what} longer than {MAX_HEADER_BYTES} bytes")
        return newline

    def _parse_header(self) -> None:
        newline = self._find_line_end(MAGIC, "stream")
        if newline < 0:
            return
        try:
            header = parse_stream_header(bytes(self._buffer[:newline]), self._consumed)
        except Y4mError as exc:
            self._error = exc
            raise
        if self.layout is Y4mLayout.GST_PADDED and header.interlace in "tbm":
            # GStreamer pads interlaced I420 differently; nothing upstream of us produces it.
            raise self._fail(
                f"interlaced stream (I{header.interlace}) from a GStreamer y4menc that pads "
                "frames: add a deinterlace element to the pipeline"
            )
        del self._buffer[: newline + 1]
        self._consumed += newline + 1
        self._planes, self._frame_size = _planes(header, self.layout)
        self.header = header


def _crop_i420(
    payload: npt.NDArray[np.uint8], header: Y4mHeader, planes: tuple[_Plane, _Plane, _Plane]
) -> npt.NDArray[np.uint8]:
    """The even-cropped, unpadded I420 buffer that cv2.cvtColor expects."""
    w, h = header.frame_width, header.frame_height
    y, u, v = planes
    if y.stride == w and y.rows == h and u.stride == w // 2 and u.rows == h // 2:
        # The common case (even size, no padding): the payload already is that buffer.
        return payload.reshape(h * 3 // 2, w)
    out = np.empty(w * h * 3 // 2, dtype=np.uint8)
    quarter = (w // 2) * (h // 2)
    out[: w * h] = _plane_view(payload, y)[:h, :w].reshape(-1)
    out[w * h : w * h + quarter] = _plane_view(payload, u)[: h // 2, : w // 2].reshape(-1)
    out[w * h + quarter :] = _plane_view(payload, v)[: h // 2, : w // 2].reshape(-1)
    return out.reshape(h * 3 // 2, w)


def _plane_view(payload: npt.NDArray[np.uint8], plane: _Plane) -> npt.NDArray[np.uint8]:
    return payload[plane.offset : plane.offset + plane.stride * plane.rows].reshape(
        plane.rows, plane.stride
    )
