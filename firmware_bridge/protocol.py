"""Firmware bridge: sans-IO framing of the MCU link: bytes in, messages out, errors counted.

No I/O, no asyncio, no clock: `encode()` turns a message into the bytes to write, and
`Decoder.feed()` turns whatever bytes arrived into messages plus one `ProtocolError` per bad
frame. `bridge.py` (the host) and `sim.py` (the simulated firmware) both use it, so the two
ends cannot drift apart.

A frame on the wire is `00 | COBS(msg_id, seq, payload, crc16) | 00`:
- COBS removes every 0x00 from the frame, so 0x00 only ever delimits. A receiver that starts
  mid-stream, or sees garbage, loses at most the bytes up to the next 0x00.
- The delimiter is sent before and after each frame: garbage that arrives between two frames
  ends at the next frame's leading 0x00 instead of corrupting that frame. Empty chunks (two
  0x00 in a row) are ignored.
- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR; check value
  0x29B1 for "123456789") over msg_id, seq and payload, appended little-endian.
- A chunk longer than the largest valid encoded frame is dropped as soon as it gets that long,
  without waiting for its delimiter, so a stream without 0x00 cannot grow the buffer.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cobs import cobs

from firmware_bridge.messages import BY_ID, ID_RANGES, MAX_PAYLOAD, Kind, MessageSpec, Value

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

DELIMITER = 0x00
HEADER = struct.Struct("<BB")
"""msg_id, seq."""
CRC = struct.Struct("<H")
CRC_INIT = 0xFFFF
MIN_FRAME = HEADER.size + CRC.size
"""Decoded frame: header and CRC around an empty payload."""
MAX_FRAME = MIN_FRAME + MAX_PAYLOAD
MAX_ENCODED = MAX_FRAME + (MAX_FRAME + 253) // 254
"""Longest COBS encoding of a valid frame, delimiters excluded."""
PREVIEW_BYTES = 24
"""Bytes of a bad frame quoted in its error message."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data` (binascii.crc_hqx is this CRC when started at 0xFFFF)."""
    return binascii.crc_hqx(data, CRC_INIT)


class ErrorReason(enum.Enum):
    """Why a frame was refused. The value is the phrase used in error messages."""

    COBS = "invalid COBS encoding"
    SHORT = "frame shorter than header and CRC"
    OVERLONG = "frame longer than the longest valid frame"
    CRC = "CRC mismatch"
    UNKNOWN_MESSAGE = "unknown message id"
    WRONG_KIND = "message of a kind this end does not accept"
    BAD_LENGTH = "payload length wrong for the message"


FRAMING_REASONS = frozenset({ErrorReason.COBS, ErrorReason.SHORT, ErrorReason.OVERLONG})
"""Errors where the frame boundaries themselves were damaged (garbage, truncation, noise)."""


class ProtocolError(ValueError):
    """Bytes that are not a valid frame, refused. Nothing else is lost: decoding goes on.

    `offset` is the stream position of the chunk's first byte; `msg_id`, `seq` and `payload`
    are known (not None) when the frame itself was intact (CRC good) but its content was not.
    """

    def __init__(
        self,
        reason: ErrorReason,
        offset: int,
        data: bytes,
        *,
        msg_id: int | None = None,
        seq: int | None = None,
        payload: bytes | None = None,
        detail: str = "",
    ) -> None:
        self.reason = reason
        self.offset = offset
        self.data = data[:PREVIEW_BYTES]
        self.length = len(data)
        self.msg_id = msg_id
        self.seq = seq
        self.payload = payload
        preview = self.data.hex(" ") + (" …" if len(data) > PREVIEW_BYTES else "")
        what = f"{reason.value}{f' ({detail})' if detail else ''}"
        super().__init__(f"{what}: {len(data)} bytes at stream offset {offset}: {preview}")


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its spec, sequence number and physical field values."""

    spec: MessageSpec
    seq: int
    values: Mapping[str, Value]

    @property
    def name(self) -> str:
        return self.spec.name

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def __repr__(self) -> str:
        return f"Message({self.spec.name}, seq={self.seq}, {dict(self.values)})"


def encode(spec: MessageSpec, seq: int, values: Mapping[str, Value] | None = None) -> bytes:
    """The bytes to write for one message, delimiters included.

    Raises ValueError naming the field when a value is missing, extra or out of range: a
    message that could not be decoded at the other end is never sent.
    """
    return encode_frame(spec.msg_id, seq, spec.pack(values or {}))


def encode_frame(msg_id: int, seq: int, payload: bytes) -> bytes:
    """Frame raw bytes (for tests and fault injection; `encode()` is the normal way)."""
    if not 0 <= msg_id <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"msg_id {msg_id} and seq {seq} must fit in one byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = HEADER.pack(msg_id, seq) + payload
    body += CRC.pack(crc16(body))
    return b"\x00" + bytes(cobs.encode(body)) + b"\x00"


@dataclass(frozen=True, slots=True)
class Feed:
    """What one `Decoder.feed()` found, in stream order within each list."""

    messages: list[Message] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)


class Decoder:
    """Incremental decoder: `feed()` any bytes as they arrive, get messages and errors back.

    Truncated data only means "not yet". A bad frame becomes one `ProtocolError` (also
    counted in `errors`), and decoding resumes at the next delimiter: a valid frame is never
    lost because of the bytes around it. `accept` restricts the message kinds: the host
    accepts replies and reports, the firmware requests.
    """

    def __init__(self, accept: Collection[Kind] = (Kind.REPLY, Kind.REPORT)) -> None:
        self.accept = frozenset(accept)
        self.frames = 0
        """Valid messages decoded."""
        self.errors: Counter[ErrorReason] = Counter()
        self.bytes_in = 0
        self.bytes_discarded = 0
        """Bytes that were part of no valid frame (garbage, damaged frames)."""
        self._chunk = bytearray()
        self._chunk_offset = 0
        self._skipping = False
        """True after an over-long chunk, until the next delimiter ends it."""

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held until its delimiter arrives."""
        return len(self._chunk)

    def feed(self, data: bytes) -> Feed:
        out = Feed()
        start = 0
        while start < len(data):
            end = data.find(DELIMITER, start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._skipping:
                self.bytes_discarded += len(piece)
            elif len(self._chunk) + len(piece) > MAX_ENCODED:
                # Refuse now: waiting for a delimiter that may never come would let a stream
                # of garbage grow the buffer without bound.
                chunk = bytes(self._chunk) + piece
                self._reject(out, ProtocolError(ErrorReason.OVERLONG, self._chunk_offset, chunk))
                self.bytes_discarded += len(chunk)
                self._chunk.clear()
                self._skipping = True
            else:
                self._chunk += piece
            if end < 0:
                self.bytes_in += len(data) - start
                break
            self.bytes_in += end + 1 - start
            if self._skipping:
                self._skipping = False
            elif self._chunk:
                chunk = bytes(self._chunk)
                self._chunk.clear()
                result = self._decode(chunk, self._chunk_offset)
                if isinstance(result, ProtocolError):
                    self._reject(out, result)
                    self.bytes_discarded += len(chunk)
                else:
                    self.frames += 1
                    out.messages.append(result)
            start = end + 1
            self._chunk_offset = self.bytes_in
        return out

    def _reject(self, out: Feed, error: ProtocolError) -> None:
        self.errors[error.reason] += 1
        out.errors.append(error)

    def _decode(self, encoded: bytes, offset: int) -> Message | ProtocolError:
        """The message in one chunk between delimiters, or why there is none."""
        try:
            frame = cobs.decode(encoded)
        except cobs.DecodeError as exc:
            return ProtocolError(ErrorReason.COBS, offset, encoded, detail=str(exc))
        if len(frame) < MIN_FRAME:
            return ProtocolError(ErrorReason.SHORT, offset, encoded)
        if len(frame) > MAX_FRAME:
            return ProtocolError(ErrorReason.OVERLONG, offset, encoded)
        body, (received,) = frame[: -CRC.size], CRC.unpack(frame[-CRC.size :])
        computed = crc16(body)
        if received != computed:
            detail = f"received {received:#06x}, computed {computed:#06x}"
            return ProtocolError(ErrorReason.CRC, offset, encoded, detail=detail)
        msg_id, seq = HEADER.unpack(body[: HEADER.size])
        payload = body[HEADER.size :]
        spec = BY_ID.get(msg_id)
        kind = spec.kind if spec else next((k for k, r in ID_RANGES.items() if msg_id in r), None)
        if kind is not None and kind not in self.accept:
            what = spec.name if spec else f"id {msg_id:#04x}"
            detail = f"{what} is a {kind.value}"
            return ProtocolError(
                ErrorReason.WRONG_KIND,
                offset,
                encoded,
                msg_id=msg_id,
                seq=seq,
                payload=payload,
                detail=detail,
            )
        if spec is None:
            detail = f"id {msg_id:#04x}"
            return ProtocolError(
                ErrorReason.UNKNOWN_MESSAGE,
                offset,
                encoded,
                msg_id=msg_id,
                seq=seq,
                payload=payload,
                detail=detail,
            )
        if len(payload) != spec.size:
            detail = f"{spec.name} has {spec.size} bytes, got {len(payload)}"
            return ProtocolError(
                ErrorReason.BAD_LENGTH,
                offset,
                encoded,
                msg_id=msg_id,
                seq=seq,
                payload=payload,
                detail=detail,
            )
        return Message(spec, seq, spec.unpack(payload))
