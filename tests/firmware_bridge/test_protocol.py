"""Sans-IO framing, byte for byte: golden bytes, round trips, truncation, bad CRC, over-long
frames, garbage between frames. A bad frame costs only itself and never raises."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge.protocol import (
    MAX_ENCODED,
    Decoder,
    ErrorReason,
    Message,
    ProtocolError,
    crc16,
    encode,
    encode_frame,
)

SET_FAN_WIRE = bytes.fromhex("00 05 03 07 f4 01 04 04 2c 85 00")
"""set_fan duty 0.5, max_duration_ms 1024, seq 7: the worked example of docs/mcu-protocol.md."""


def host_decoder() -> Decoder:
    return Decoder(accept=(m.Kind.REPLY, m.Kind.REPORT))


def telemetry_values(**changes: m.Value) -> dict[str, m.Value]:
    values: dict[str, m.Value] = {
        "uptime_ms": 123_456,
        "sensor_temp": 31.25,
        "cold_side_temp": 12.5,
        "hot_side_temp": None,
        "cooler_setpoint": 15.0,
        "cooler_drive": 0.4,
        "fan_duty": 0.3,
        "fan_rpm": 1800,
        "fan_hold_ms": 0,
        "cooler_hold_ms": 900,
        "state": int(m.State.SESSION | m.State.COOLER_ON),
        "faults": int(m.Fault.FAN_TIMEOUT),
        "rx_errors": 3,
    }
    values.update(changes)
    return values


# -- golden bytes -------------------------------------------------------------------------------


def test_crc_is_ccitt_false_with_its_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF
    assert crc16(b"\x03\x07") == binascii.crc_hqx(b"\x03\x07", 0xFFFF)


def test_encode_matches_the_documented_example_byte_for_byte() -> None:
    assert encode(m.SET_FAN, 7, {"duty": 0.5, "max_duration_ms": 1024}) == SET_FAN_WIRE


def test_documented_example_decodes_to_the_message() -> None:
    feed = Decoder(accept=(m.Kind.REQUEST,)).feed(SET_FAN_WIRE)
    assert feed.errors == []
    assert [(x.name, x.seq, dict(x.values)) for x in feed.messages] == [
        ("set_fan", 7, {"duty": 0.5, "max_duration_ms": 1024})
    ]


def test_an_empty_payload_frame_is_header_and_crc_only() -> None:
    wire = encode(m.GET_TELEMETRY, 0x42)
    body = bytes([m.GET_TELEMETRY.msg_id, 0x42])
    crc = crc16(body).to_bytes(2, "little")
    assert len(wire) == 2 + 1 + len(body) + len(crc)  # delimiters, COBS code byte
    assert b"\x00" not in wire[1:-1]


def test_no_zero_byte_inside_any_encoded_frame() -> None:
    wire = encode(m.TELEMETRY, 0, telemetry_values(uptime_ms=0, fan_rpm=0, rx_errors=0))
    assert wire[0] == 0
    assert wire[-1] == 0
    assert 0 not in wire[1:-1]


# -- values ----------------------------------------------------------------------------------


def test_invalid_temperature_travels_as_0x8000_and_decodes_as_none() -> None:
    wire = encode(m.TELEMETRY_REPORT, 1, telemetry_values(hot_side_temp=None))
    (message,) = host_decoder().feed(wire).messages
    assert message["hot_side_temp"] is None
    payload = m.TELEMETRY_REPORT.pack(telemetry_values(hot_side_temp=None))
    assert payload[8:10] == b"\x00\x80"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"duty": 1.2, "max_duration_ms": 100}, r"duty: 1\.2 fraction is outside \[0, 1\]"),
        ({"duty": 0.5, "max_duration_ms": 0}, r"max_duration_ms: 0 ms is outside \[1, 60000\]"),
        ({"duty": float("nan"), "max_duration_ms": 5}, "duty: expected a finite number"),
        ({"duty": 0.5}, r"missing field\(s\) \['max_duration_ms'\]"),
        ({"duty": 0.5, "max_duration_ms": 5, "x": 1}, r"unexpected field\(s\) \['x'\]"),
        ({"duty": 0.5, "max_duration_ms": 5.5}, "expected a whole number"),
    ],
)
def test_encode_refuses_bad_values_naming_the_field(
    values: dict[str, m.Value], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        encode(m.SET_FAN, 1, values)


def test_text_field_is_ascii_and_at_most_16_bytes() -> None:
    field = m.IDENTIFY_REPLY.fields[4]
    wire = field.to_wire("SIM-1")
    assert wire == b"SIM-1"
    assert field.from_wire(b"SIM-1".ljust(16, b"\x00")) == "SIM-1"
    with pytest.raises(ValueError, match="not ASCII text"):
        field.to_wire("x" * 17)
    with pytest.raises(UnicodeEncodeError):
        field.to_wire("é")


# -- refusals ------------------------------------------------------------------------------------


def test_bad_crc_is_refused_and_counted_and_the_next_frame_survives() -> None:
    good = encode(m.ACK, 1, {"request_id": 3})
    bad = bytearray(encode(m.ACK, 2, {"request_id": 3}))
    bad[3] ^= 0x01  # the seq byte (after delimiter and COBS code): 2 becomes 3, never 0
    decoder = host_decoder()
    feed = decoder.feed(bytes(bad) + good)
    assert [x.seq for x in feed.messages] == [1]
    assert [e.reason for e in feed.errors] == [ErrorReason.CRC]
    assert decoder.errors[ErrorReason.CRC] == 1
    assert "CRC mismatch" in str(feed.errors[0])
    assert "at stream offset 1" in str(feed.errors[0])  # after the leading delimiter


def test_truncated_frame_is_refused_when_the_next_frame_starts() -> None:
    good = encode(m.ACK, 9, {"request_id": 3})
    cut = encode(m.TELEMETRY, 8, telemetry_values())[:-9]  # lost its tail and delimiter
    decoder = host_decoder()
    feed = decoder.feed(cut + good)
    assert [x.seq for x in feed.messages] == [9]
    assert len(feed.errors) == 1
    assert feed.errors[0].reason in {ErrorReason.COBS, ErrorReason.SHORT, ErrorReason.CRC}


def test_truncated_data_only_means_not_yet() -> None:
    wire = encode(m.TELEMETRY, 8, telemetry_values())
    decoder = host_decoder()
    assert decoder.feed(wire[:-1]).messages == []
    assert decoder.buffered > 0
    assert [x.seq for x in decoder.feed(wire[-1:]).messages] == [8]
    assert decoder.errors.total() == 0


def test_short_frame_is_refused() -> None:
    feed = host_decoder().feed(b"\x00\x02\x40\x00")
    assert [e.reason for e in feed.errors] == [ErrorReason.SHORT]


def test_over_long_chunk_is_refused_before_its_delimiter_arrives() -> None:
    decoder = host_decoder()
    feed = decoder.feed(b"\x01" * (MAX_ENCODED + 1))
    assert [e.reason for e in feed.errors] == [ErrorReason.OVERLONG]
    assert decoder.buffered == 0
    # The rest of that chunk is dropped silently, then decoding resumes.
    feed = decoder.feed(b"\x01" * 10_000 + encode(m.ACK, 5, {"request_id": 1}))
    assert feed.errors == []
    assert [x.seq for x in feed.messages] == [5]
    assert decoder.errors[ErrorReason.OVERLONG] == 1
    assert decoder.bytes_discarded == MAX_ENCODED + 1 + 10_000


def test_a_frame_of_exactly_the_largest_encoded_size_is_accepted() -> None:
    payload = bytes(range(1, m.MAX_PAYLOAD + 1))
    wire = encode_frame(0x7F, 1, payload)
    assert len(wire) - 2 <= MAX_ENCODED
    feed = host_decoder().feed(wire)
    # It is intact, so it gets as far as the id check: an unknown reply, not a framing error.
    assert [e.reason for e in feed.errors] == [ErrorReason.UNKNOWN_MESSAGE]
    assert feed.errors[0].msg_id == 0x7F
    assert feed.errors[0].payload == payload


def test_wrong_payload_length_is_refused_with_id_seq_and_payload() -> None:
    feed = host_decoder().feed(encode_frame(m.ACK.msg_id, 4, b"\x01\x02"))
    (error,) = feed.errors
    assert error.reason is ErrorReason.BAD_LENGTH
    assert (error.msg_id, error.seq, error.payload) == (m.ACK.msg_id, 4, b"\x01\x02")
    assert "ack has 1 bytes, got 2" in str(error)


def test_a_request_arriving_at_the_host_is_refused_as_the_wrong_kind() -> None:
    feed = host_decoder().feed(encode(m.HEARTBEAT, 1))
    assert [e.reason for e in feed.errors] == [ErrorReason.WRONG_KIND]
    feed = Decoder(accept=(m.Kind.REQUEST,)).feed(encode(m.ACK, 1, {"request_id": 1}))
    assert [e.reason for e in feed.errors] == [ErrorReason.WRONG_KIND]


def test_unknown_request_id_at_the_firmware_keeps_id_and_seq_for_a_nak() -> None:
    feed = Decoder(accept=(m.Kind.REQUEST,)).feed(encode_frame(0x3E, 77, b""))
    (error,) = feed.errors
    assert (error.reason, error.msg_id, error.seq) == (ErrorReason.UNKNOWN_MESSAGE, 0x3E, 77)


def test_error_message_quotes_at_most_a_preview_of_the_bytes() -> None:
    error = ProtocolError(ErrorReason.COBS, 10, bytes(range(1, 100)))
    assert error.length == 99
    assert len(error.data) == 24
    assert str(error).endswith("…")


# -- properties ----------------------------------------------------------------------------------


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """Any MCU → host message with valid values (drawn as wire integers, so exact)."""
    spec = draw(st.sampled_from([s for s in m.MESSAGES if s.kind is not m.Kind.REQUEST]))
    values: dict[str, m.Value] = {}
    for f in spec.fields:
        if f.code == "s":
            text = draw(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=16))
            values[f.name] = text
            continue
        low, high = f.bounds()
        wire = draw(st.integers(round(low / f.scale), round(high / f.scale)))
        values[f.name] = f.from_wire(wire)
    return Message(spec, draw(st.integers(0, 255)), values)


def same(a: Message, b: Message) -> bool:
    return (a.spec, a.seq, dict(a.values)) == (b.spec, b.seq, dict(b.values))


@given(st.lists(messages(), max_size=8), st.data())
@settings(max_examples=100)
def test_any_messages_round_trip_however_the_bytes_are_split(
    sent: list[Message], data: st.DataObject
) -> None:
    stream = b"".join(encode(x.spec, x.seq, x.values) for x in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = host_decoder()
    received: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        feed = decoder.feed(stream[start:end])
        assert feed.errors == []
        received += feed.messages
    assert len(received) == len(sent)
    assert all(same(a, b) for a, b in zip(sent, received, strict=True))
    assert decoder.buffered == 0


@given(st.lists(st.tuples(st.binary(max_size=80), messages()), min_size=1, max_size=6))
@settings(max_examples=100)
def test_garbage_between_frames_never_costs_a_valid_frame(
    pieces: list[tuple[bytes, Message]],
) -> None:
    stream = b"".join(garbage + encode(x.spec, x.seq, x.values) for garbage, x in pieces)
    decoder = host_decoder()
    received = decoder.feed(stream).messages
    sent = [x for _, x in pieces]
    assert len(received) == len(sent)
    assert all(same(a, b) for a, b in zip(sent, received, strict=True))


@given(
    st.lists(messages(), min_size=2, max_size=6),
    st.data(),
)
@settings(max_examples=100)
def test_a_damaged_frame_costs_only_itself(sent: list[Message], data: st.DataObject) -> None:
    frames = [bytearray(encode(x.spec, x.seq, x.values)) for x in sent]
    victim = data.draw(st.integers(0, len(frames) - 1))
    position = data.draw(st.integers(1, len(frames[victim]) - 2))
    frames[victim][position] ^= data.draw(st.integers(1, 255))
    decoder = host_decoder()
    feed = decoder.feed(b"".join(frames))
    survivors = [x for i, x in enumerate(sent) if i != victim]
    assert len(feed.messages) == len(survivors)
    assert all(same(a, b) for a, b in zip(survivors, feed.messages, strict=True))
    assert feed.errors
    assert decoder.errors.total() == len(feed.errors)


@given(st.lists(st.binary(max_size=300), max_size=10))
@settings(max_examples=200)
def test_arbitrary_bytes_never_raise_and_never_grow_the_buffer(chunks: list[bytes]) -> None:
    decoder = host_decoder()
    for chunk in chunks:
        feed = decoder.feed(chunk)
        assert all(isinstance(e, ProtocolError) for e in feed.errors)
        assert decoder.buffered <= MAX_ENCODED
    assert decoder.bytes_in == sum(map(len, chunks))
