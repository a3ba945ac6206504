"""The one message table and the document generated from it: ids, sizes, ranges, units, and a
docs/mcu-protocol.md whose tables match the code."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from firmware_bridge import gen_docs
from firmware_bridge import messages as m

if TYPE_CHECKING:
    from pathlib import Path


def test_ids_sit_in_the_range_of_their_kind() -> None:
    for spec in m.MESSAGES:
        assert spec.msg_id in m.ID_RANGES[spec.kind], spec.name


def test_every_request_names_an_existing_reply_of_kind_reply() -> None:
    for spec in m.MESSAGES:
        if spec.kind is m.Kind.REQUEST:
            assert spec.reply is not None
            assert m.BY_NAME[spec.reply].kind is m.Kind.REPLY


def test_every_field_has_a_unit_or_is_a_plain_count_and_a_description() -> None:
    for spec in m.MESSAGES:
        for f in spec.fields:
            assert f.description, f"{spec.name}.{f.name}"
            if f.scale != 1.0:
                assert f.unit, f"{spec.name}.{f.name} is scaled but has no unit"


def test_temperatures_are_centidegrees_and_duties_thousandths() -> None:
    for spec in m.MESSAGES:
        for f in spec.fields:
            if f.unit == "°C":
                assert (f.code, f.scale) == ("h", 0.01), f.name
            if f.unit == "fraction":
                assert (f.code, f.scale, f.bounds()) == ("H", 0.001, (0.0, 1.0)), f.name


def test_report_and_reply_telemetry_share_one_layout() -> None:
    assert m.TELEMETRY.fields == m.TELEMETRY_REPORT.fields


def test_frozen_parts_keep_their_ids_and_layouts() -> None:
    """identify, nak and byte 0 of identify_reply must never change: the handshake relies on them."""
    assert (m.IDENTIFY.msg_id, m.IDENTIFY.size) == (0x01, 1)
    assert (m.NAK.msg_id, m.NAK.field_names()) == (0x41, ("request_id", "code", "detail"))
    assert m.IDENTIFY_REPLY.msg_id == 0x42
    assert (m.IDENTIFY_REPLY.fields[0].name, m.IDENTIFY_REPLY.fields[0].code) == ("protocol", "B")


def test_every_code_and_flag_has_a_meaning() -> None:
    for kind in (m.ErrorCode, m.Fault, m.State):
        for member in kind:
            assert m.MEANINGS[kind][member], member


def test_first_out_of_range_gives_the_field_index() -> None:
    values = {"enable": 1, "setpoint": 99.0, "max_duration_ms": 10}
    assert m.SET_COOLER.first_out_of_range(values) == 1
    assert m.SET_COOLER.first_out_of_range({**values, "setpoint": 20.0}) is None


def test_values_at_the_resolution_limit_are_accepted() -> None:
    duty = m.SET_FAN.fields[0]
    assert duty.to_wire(0.3) == 300
    assert duty.to_wire(1.0004) == 1000  # within half a step of the maximum
    with pytest.raises(ValueError, match="outside"):
        duty.to_wire(1.001)


# -- the document ----------------------------------------------------------------------------


def test_the_protocol_document_tables_are_current() -> None:
    """CI guard: docs/mcu-protocol.md matches messages.py (run python -m firmware_bridge.gen_docs)."""
    assert gen_docs.is_current(), "run `python -m firmware_bridge.gen_docs`"


def test_the_document_describes_every_message_code_and_flag() -> None:
    text = gen_docs.DOC.read_text(encoding="utf-8")
    for spec in m.MESSAGES:
        assert f"### `{spec.name}`" in text
        for f in spec.fields:
            assert f"`{f.name}`" in text
    for kind in (m.ErrorCode, m.Fault, m.State):
        for member in kind:
            assert f"`{member.name}`" in text


def test_check_mode_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "mcu-protocol.md"
    text = gen_docs.DOC.read_text(encoding="utf-8")
    stale.write_text(text.replace("payload 27 bytes", "payload 28 bytes"), encoding="utf-8")
    assert gen_docs.main(["--check", "--path", str(stale)]) == 1
    assert gen_docs.main(["--path", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == text
    assert gen_docs.main(["--check", "--path", str(stale)]) == 0


def test_render_refuses_unknown_and_missing_blocks() -> None:
    text = gen_docs.DOC.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        gen_docs.render(text + "\n<!-- generated:nope -->\n<!-- /generated:nope -->\n")
    without = re.sub(
        r"<!-- generated:example -->.*?<!-- /generated:example -->", "", text, flags=re.DOTALL
    )
    with pytest.raises(ValueError, match="lacks generated block"):
        gen_docs.render(without)
