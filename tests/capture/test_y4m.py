"""YUV4MPEG2 parser, byte for byte: headers, frames, odd sizes, padding, truncation, corruption."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vehicle_agent.capture.y4m import (
    MAX_HEADER_BYTES,
    Y4mError,
    Y4mFrame,
    Y4mLayout,
    Y4mParser,
    parse_stream_header,
)


def planes(width: int, height: int, seed: int) -> tuple[bytes, bytes, bytes]:
    """Random Y, U, V planes of a packed 4:2:0 frame (chroma ceil(w/2) x ceil(h/2))."""
    rng = np.random.default_rng(seed)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return (
        rng.integers(0, 256, width * height, dtype=np.uint8).tobytes(),
        rng.integers(0, 256, cw * ch, dtype=np.uint8).tobytes(),
        rng.integers(0, 256, cw * ch, dtype=np.uint8).tobytes(),
    )


def stream(
    width: int,
    height: int,
    frames: list[tuple[bytes, bytes, bytes]],
    header_extra: str = " F30:1 Ip A1:1 C420jpeg",
) -> bytes:
    data = f"YUV4MPEG2 W{width} H{height}{header_extra}\n".encode()
    for y, u, v in frames:
        data += b"FRAME\n" + y + u + v
    return data


def expected_i420(width: int, height: int, yuv: tuple[bytes, bytes, bytes]) -> np.ndarray:
    """The even-cropped I420 buffer the parser must hand to cv2."""
    y, u, v = (np.frombuffer(p, dtype=np.uint8) for p in yuv)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    w, h = width // 2 * 2, height // 2 * 2
    parts = [
        y.reshape(height, width)[:h, :w],
        u.reshape(ch, cw)[: h // 2, : w // 2],
        v.reshape(ch, cw)[: h // 2, : w // 2],
    ]
    return np.concatenate([p.reshape(-1) for p in parts]).reshape(h * 3 // 2, w)


def parse_all(data: bytes, layout: Y4mLayout = Y4mLayout.PACKED) -> list[Y4mFrame]:
    parser = Y4mParser(layout)
    parser.feed(data)
    frames = list(parser)
    assert parser.buffered == 0
    return frames


# -- stream header --------------------------------------------------------------------------


def test_header_fields_are_parsed() -> None:
    header = parse_stream_header(
        b"YUV4MPEG2 W320 H240 F30000:1001 It A4:3 C420mpeg2 XYSCSS=420 Zfoo"
    )
    assert (header.width, header.height) == (320, 240)
    assert (header.fps_num, header.fps_den) == (30000, 1001)
    assert header.fps == pytest.approx(29.97, abs=1e-3)
    assert header.interlace == "t"
    assert header.aspect == (4, 3)
    assert header.chroma == "420mpeg2"
    assert header.extensions == ("XYSCSS=420", "Zfoo")


def test_header_defaults_when_tags_are_absent() -> None:
    header = parse_stream_header(b"YUV4MPEG2 W4 H2")
    assert header.chroma == "420"
    assert header.fps is None
    assert header.interlace == "?"
    assert header.aspect == (0, 0)


def test_unknown_frame_rate_gives_no_fps() -> None:
    assert parse_stream_header(b"YUV4MPEG2 W4 H2 F0:0").fps is None
    assert parse_stream_header(b"YUV4MPEG2 W4 H2 F0:1").fps is None


@pytest.mark.parametrize("chroma", ["420", "420jpeg", "420mpeg2", "420paldv"])
def test_every_8bit_420_chroma_is_accepted(chroma: str) -> None:
    assert parse_stream_header(f"YUV4MPEG2 W4 H2 C{chroma}".encode()).chroma == chroma


@pytest.mark.parametrize("chroma", ["444", "422", "411", "mono", "420p10", "444alpha"])
def test_other_chroma_is_refused_by_name(chroma: str) -> None:
    with pytest.raises(Y4mError, match=f"chroma C{chroma} is not supported"):
        parse_stream_header(f"YUV4MPEG2 W4 H2 C{chroma}".encode())


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"YUV4MPEG3 W4 H2", "does not start with 'YUV4MPEG2'"),
        (b"YUV4MPEG2 H2", "no W"),
        (b"YUV4MPEG2 W4", "no H"),
        (b"YUV4MPEG2 W0 H2", "W'0' is not a size"),
        (b"YUV4MPEG2 Wabc H2", "W'abc' is not a size"),
        (b"YUV4MPEG2 W4 H99999", "H'99999' is not a size"),
        (b"YUV4MPEG2 W1 H2", "1x2 is smaller than 2x2"),
        (b"YUV4MPEG2 W4 H2 F30", "F'30' is not Fnum:den"),
        (b"YUV4MPEG2 W4 H2 F30:x", "F'30:x' is not Fnum:den"),
        (b"YUV4MPEG2 W4 H2 A1", "A'1' is not Anum:den"),
        (b"YUV4MPEG2 W4 H2 Ix", "unknown interlacing Ix"),
        (b"YUV4MPEG2 W4 H2 X\xff", "not ASCII"),
    ],
)
def test_malformed_header_is_refused_saying_why(line: bytes, complaint: str) -> None:
    with pytest.raises(Y4mError) as caught:
        parse_stream_header(line)
    assert complaint in str(caught.value)


def test_parser_reports_header_errors_from_feed_with_the_offset() -> None:
    parser = Y4mParser()
    with pytest.raises(Y4mError, match=r"chroma C444 .*\(at byte 0\)"):
        parser.feed(b"YUV4MPEG2 W4 H2 C444\n")


def test_wrong_magic_is_reported_on_the_first_bytes() -> None:
    """Corruption is reported at once, not after MAX_HEADER_BYTES more bytes arrived."""
    parser = Y4mParser()
    parser.feed(b"YUV")
    with pytest.raises(Y4mError, match="does not start with 'YUV4MPEG2'"):
        parser.feed(b"X")


def test_header_without_newline_is_refused_after_max_header_bytes() -> None:
    parser = Y4mParser()
    parser.feed(b"YUV4MPEG2 W4 H2 X" + b"a" * (MAX_HEADER_BYTES - 100))
    assert parser.header is None
    with pytest.raises(Y4mError, match="longer than"):
        parser.feed(b"a" * 100)


def test_header_is_available_as_soon_as_it_is_fed() -> None:
    parser = Y4mParser()
    parser.feed(b"YUV4MPEG2 W4 H2 F25:1\n")
    assert parser.header is not None
    assert parser.header.fps == 25.0
    assert parser.next_frame() is None


# -- frames ---------------------------------------------------------------------------------


def test_frame_planes_and_bgr_are_exact() -> None:
    yuv = [planes(8, 6, seed) for seed in range(3)]
    frames = parse_all(stream(8, 6, yuv))
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, source in zip(frames, yuv, strict=True):
        i420 = expected_i420(8, 6, source)
        np.testing.assert_array_equal(frame.i420, i420)
        np.testing.assert_array_equal(frame.image, cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420))
        assert frame.image.shape == (6, 8, 3)
        assert frame.image.dtype == np.uint8


def test_colours_come_out_as_bgr() -> None:
    """Pure red in BT.601 limited range (Y=81, U=90, V=240) is high in channel 2, not 0."""
    red = (bytes([81] * 16), bytes([90] * 4), bytes([240] * 4))
    (frame,) = parse_all(stream(4, 4, [red]))
    b, g, r = frame.image.reshape(-1, 3).mean(axis=0)
    assert r > 200
    assert b < 50
    assert g < 50


@pytest.mark.parametrize(("width", "height"), [(5, 3), (7, 4), (6, 5), (321, 241)])
def test_odd_sizes_are_cropped_to_even(width: int, height: int) -> None:
    """Chroma planes are ceil(w/2) x ceil(h/2); the last column/row of the picture is dropped."""
    yuv = planes(width, height, seed=7)
    (frame,) = parse_all(stream(width, height, [yuv]))
    assert frame.image.shape == (height // 2 * 2, width // 2 * 2, 3)
    np.testing.assert_array_equal(frame.i420, expected_i420(width, height, yuv))


def test_frame_parameters_are_kept() -> None:
    yuv = planes(4, 2, seed=1)
    data = stream(4, 2, []) + b"FRAME Ip Xfoo=1\n" + b"".join(yuv)
    (frame,) = parse_all(data)
    assert frame.params == ("Ip", "Xfoo=1")


def pad_gst(width: int, height: int, yuv: tuple[bytes, bytes, bytes]) -> bytes:
    """The frame as GStreamer <= 1.22 y4menc writes it: rows padded to 4, heights to even."""

    def padded(plane: bytes, w: int, h: int, stride: int, rows: int) -> bytes:
        out = np.full((rows, stride), 0xEE, dtype=np.uint8)
        out[:h, :w] = np.frombuffer(plane, dtype=np.uint8).reshape(h, w)
        return out.tobytes()

    def up(v: int, m: int) -> int:
        return (v + m - 1) // m * m

    cw, ch = (width + 1) // 2, (height + 1) // 2
    c_stride = up(up(width, 2) // 2, 4)
    return (
        padded(yuv[0], width, height, up(width, 4), up(height, 2))
        + padded(yuv[1], cw, ch, c_stride, ch)
        + padded(yuv[2], cw, ch, c_stride, ch)
    )


@pytest.mark.parametrize(("width", "height"), [(5, 3), (6, 4), (321, 241), (8, 2)])
def test_gst_padded_layout_gives_the_same_picture(width: int, height: int) -> None:
    yuv = [planes(width, height, seed) for seed in range(2)]
    packed = parse_all(stream(width, height, yuv))
    data = stream(width, height, []) + b"".join(b"FRAME\n" + pad_gst(width, height, p) for p in yuv)
    padded = parse_all(data, Y4mLayout.GST_PADDED)
    for a, b in zip(packed, padded, strict=True):
        np.testing.assert_array_equal(a.i420, b.i420)
        np.testing.assert_array_equal(a.image, b.image)


def test_gst_padded_layout_refuses_interlaced_streams() -> None:
    parser = Y4mParser(Y4mLayout.GST_PADDED)
    with pytest.raises(Y4mError, match="add a deinterlace element"):
        parser.feed(b"YUV4MPEG2 W6 H4 It\n")


# -- truncation and corruption --------------------------------------------------------------


def test_truncated_frame_waits_for_more_bytes() -> None:
    data = stream(4, 2, [planes(4, 2, seed=3)])
    parser = Y4mParser()
    parser.feed(data[:-1])
    assert parser.next_frame() is None
    assert parser.buffered == len(b"FRAME\n") + 4 * 2 + 2 * 2 - 1
    parser.feed(data[-1:])
    frame = parser.next_frame()
    assert frame is not None
    assert parser.buffered == 0
    assert parser.next_frame() is None


def test_truncated_frame_header_waits_for_more_bytes() -> None:
    parser = Y4mParser()
    parser.feed(stream(4, 2, []) + b"FRA")
    assert parser.next_frame() is None
    parser.feed(b"ME\n" + b"".join(planes(4, 2, seed=0)))
    assert parser.next_frame() is not None


@pytest.mark.parametrize("junk", [b"FRAMX\n", b"XRAME\n", b"FRAMEX\n", b"frame\n", b"\n"])
def test_frame_header_that_is_not_frame_is_corruption(junk: bytes) -> None:
    good = stream(4, 2, [planes(4, 2, seed=0)])
    parser = Y4mParser()
    parser.feed(good + junk)
    assert parser.next_frame() is not None
    with pytest.raises(Y4mError, match="frame header does not start with 'FRAME'") as caught:
        parser.next_frame()
    assert caught.value.offset == len(good)


def test_corruption_is_sticky() -> None:
    """After corruption frame boundaries are lost: every later call raises the same error."""
    parser = Y4mParser()
    parser.feed(stream(4, 2, []) + b"JUNK")
    with pytest.raises(Y4mError) as first:
        parser.next_frame()
    with pytest.raises(Y4mError) as again:
        parser.feed(b"FRAME\n" + b"".join(planes(4, 2, seed=0)))
    assert again.value is first.value
    with pytest.raises(Y4mError):
        parser.next_frame()


def test_plane_bytes_that_spell_frame_do_not_confuse_the_parser() -> None:
    """Frames are cut by size, never by searching for FRAME in the data."""
    y = b"FRAME\nFR"
    (frame,) = parse_all(stream(4, 2, [(y, b"FR", b"\nF")]))
    assert frame.i420.tobytes() == y + b"FR\nF"


def test_frame_header_without_newline_is_refused_after_max_header_bytes() -> None:
    parser = Y4mParser()
    parser.feed(stream(4, 2, []) + b"FRAME " + b"x" * MAX_HEADER_BYTES)
    with pytest.raises(Y4mError, match="frame header longer than"):
        parser.next_frame()


# -- split feeds ----------------------------------------------------------------------------


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Y4mFrame]:
    parser = Y4mParser()
    frames: list[Y4mFrame] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        parser.feed(data[start:cut])
        frames.extend(parser)
        start = cut
    assert parser.buffered == 0
    return frames


def assert_same_frames(a: list[Y4mFrame], b: list[Y4mFrame]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.index == y.index
        assert x.params == y.params
        np.testing.assert_array_equal(x.i420, y.i420)
        np.testing.assert_array_equal(x.image, y.image)


def test_feeding_one_byte_at_a_time_gives_the_same_frames() -> None:
    data = stream(5, 3, [planes(5, 3, seed) for seed in range(3)])
    assert_same_frames(feed_in_pieces(data, list(range(len(data)))), parse_all(data))


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(2, 9),
    height=st.integers(2, 9),
    count=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_any_split_of_the_stream_gives_the_same_frames(
    width: int, height: int, count: int, seed: int, data: st.DataObject
) -> None:
    raw = stream(width, height, [planes(width, height, seed + i) for i in range(count)])
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    frames = feed_in_pieces(raw, cuts)
    assert len(frames) == count
    assert_same_frames(frames, parse_all(raw))
