"""Firmware bridge: generates the tables of docs/mcu-protocol.md from `messages` and `protocol`.

The document's prose is written by hand; every table that restates the code (messages, byte
layouts, error codes, flags, limits, a worked example) sits between markers and is rewritten
from the code, so the document cannot drift from what the bridge and the simulator speak:

    <!-- generated:NAME -->
    ...
    <!-- /generated:NAME -->

python -m firmware_bridge.gen_docs          # rewrite the tables in docs/mcu-protocol.md
python -m firmware_bridge.gen_docs --check  # exit 1 if they are not current (CI)
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cobs import cobs

from firmware_bridge import messages as m
from firmware_bridge.protocol import (
    CRC,
    CRC_INIT,
    HEADER,
    MAX_ENCODED,
    MAX_FRAME,
    MIN_FRAME,
    crc16,
    encode,
)

if TYPE_CHECKING:
    from collections.abc import Callable

DOC = Path(__file__).resolve().parent.parent / "docs" / "mcu-protocol.md"
_BLOCK = re.compile(
    r"(?P<open><!-- generated:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(?P<close><!-- /generated:(?P=name) -->)",
    re.DOTALL,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def constants() -> str:
    rows = [
        ("protocol version", str(m.PROTOCOL_VERSION), "`messages.PROTOCOL_VERSION`"),
        ("header", f"{HEADER.size} bytes: msg_id (u8), seq (u8)", "`protocol.HEADER`"),
        ("CRC", f"{CRC.size} bytes, little-endian, init {CRC_INIT:#06x}", "`protocol.CRC`"),
        ("largest payload", f"{m.MAX_PAYLOAD} bytes", "`messages.MAX_PAYLOAD`"),
        ("frame (decoded)", f"{MIN_FRAME}–{MAX_FRAME} bytes", "`protocol.MAX_FRAME`"),
        (
            "frame (COBS-encoded, delimiters excluded)",
            f"at most {MAX_ENCODED} bytes",
            "`protocol.MAX_ENCODED`",
        ),
        ("longest `max_duration_ms`", f"{m.MAX_DURATION_MS} ms", "`messages.MAX_DURATION_MS`"),
        (
            "over-temperature hysteresis",
            f"{_num(m.OVERTEMP_HYSTERESIS_C)} °C",
            "`messages.OVERTEMP_HYSTERESIS_C`",
        ),
        (
            "fan stall",
            (
                f"duty ≥ {_num(m.FAN_STALL_DUTY)} and tach < {m.FAN_STALL_RPM} rpm for "
                f"{_num(m.FAN_STALL_S)} s"
            ),
            "`messages.FAN_STALL_*`",
        ),
    ]
    out = ["| constant | value | defined in |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def summary() -> str:
    out = [
        "| id | message | kind | payload | answered by | purpose |",
        "|---|---|---|---|---|---|",
    ]
    for spec in m.MESSAGES:
        reply = f"`{spec.reply}` or `nak`" if spec.reply else "—"
        first = spec.description.split(". ")[0].rstrip(".") + "."
        out.append(
            f"| `{spec.msg_id:#04x}` | [`{spec.name}`](#{spec.name}) | {spec.kind.value} | "
            f"{spec.size} B | {reply} | {_cell(first)} |"
        )
    return "\n".join(out)


def _range(f: m.Field) -> str:
    if f.code == "s":
        return "ASCII, NUL-padded"
    low, high = f.bounds()
    text = f"{_num(low)} … {_num(high)}"
    if f.invalid is not None:
        text += f"; `{f.invalid & 0xFFFF:#06x}` = no reading"
    return text


def _meaning(f: m.Field) -> str:
    text = f.description
    if f.flags is not None:
        text += f" ([{f.flags.__name__}](#{f.flags.__name__.lower()}))"
    return _cell(text)


def layouts() -> str:
    out: list[str] = []
    for spec in m.MESSAGES:
        out += [f"### `{spec.name}`", ""]
        out += [
            f"Id `{spec.msg_id:#04x}`, {spec.kind.value}, payload {spec.size} "
            f"byte{'' if spec.size == 1 else 's'}."
            + (f" Answered by `{spec.reply}` or `nak`." if spec.reply else ""),
            "",
            _cell(spec.description),
            "",
        ]
        if not spec.fields:
            out += ["Empty payload.", ""]
            continue
        out += [
            "| offset | field | type | unit | resolution | valid range | meaning |",
            "|---|---|---|---|---|---|---|",
        ]
        offset = 0
        for f in spec.fields:
            resolution = "—" if f.code == "s" or f.scale == 1.0 else _num(f.scale)
            out.append(
                f"| {offset} | `{f.name}` | {f.wire_type} | {f.unit or '—'} | {resolution} | "
                f"{_range(f)} | {_meaning(f)} |"
            )
            offset += f.size
        out.append("")
    return "\n".join(out).rstrip()


def _enum_table(kind: type[enum.IntEnum | enum.IntFlag], hex_width: int) -> str:
    out = ["| value | name | meaning |", "|---|---|---|"]
    out += [
        f"| `{int(member):#0{hex_width}x}` | `{member.name}` | {_cell(m.MEANINGS[kind][member])} |"
        for member in kind
    ]
    return "\n".join(out)


def error_codes() -> str:
    return _enum_table(m.ErrorCode, 4)


def faults() -> str:
    return _enum_table(m.Fault, 6)


def state() -> str:
    return _enum_table(m.State, 4)


def example() -> str:
    # 1024 ms is 00 04 on the wire: the example shows COBS removing a zero.
    values: dict[str, m.Value] = {"duty": 0.5, "max_duration_ms": 1024}
    seq = 7
    body = HEADER.pack(m.SET_FAN.msg_id, seq) + m.SET_FAN.pack(values)
    crc = crc16(body)
    framed = body + CRC.pack(crc)
    wire = encode(m.SET_FAN, seq, values)
    return "\n".join(
        [
            f"`set_fan` with duty 0.5 (wire {round(0.5 / 0.001)}) and max_duration_ms 1024, seq {seq}:",
            "",
            "```",
            f"header + payload  {body.hex(' ')}",
            f"CRC-16            {crc:#06x} → appended little-endian: {CRC.pack(crc).hex(' ')}",
            f"frame             {framed.hex(' ')}",
            f"COBS              {bytes(cobs.encode(framed)).hex(' ')}",
            f"on the wire       {wire.hex(' ')}",
            "```",
            "",
            f'CRC check value: CRC-16 of ASCII "123456789" = `{crc16(b"123456789"):#06x}`.',
        ]
    )


SECTIONS: dict[str, Callable[[], str]] = {
    "constants": constants,
    "summary": summary,
    "layouts": layouts,
    "error_codes": error_codes,
    "faults": faults,
    "state": state,
    "example": example,
}


def render(text: str) -> str:
    """`text` with every generated block rewritten; ValueError for an unknown or missing block."""
    seen: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise ValueError(f"unknown generated block {name!r} (known: {', '.join(SECTIONS)})")
        seen.add(name)
        return f"{match.group('open')}{SECTIONS[name]()}\n{match.group('close')}"

    result = _BLOCK.sub(replace, text)
    missing = SECTIONS.keys() - seen
    if missing:
        raise ValueError(f"the document lacks generated block(s): {', '.join(sorted(missing))}")
    return result


def is_current(path: Path = DOC) -> bool:
    text = path.read_text(encoding="utf-8")
    return render(text) == text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the tables are not current")
    parser.add_argument("--path", type=Path, default=DOC, help=f"default: {DOC}")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    rendered = render(text)
    if rendered == text:
        return 0
    if args.check:
        print(f"{args.path} not current: run `python -m firmware_bridge.gen_docs`", file=sys.stderr)
        return 1
    args.path.write_text(rendered, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
