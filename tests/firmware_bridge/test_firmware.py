"""The simulated firmware, stepped on a fake clock without a pty: everything docs/mcu-protocol.md
requires of the MCU (sessions, max_duration fallbacks, protection, faults) and the thermal plant."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from firmware_bridge import messages as m
from firmware_bridge.protocol import Decoder, Message, encode, encode_frame
from firmware_bridge.sim import FaultSwitches, Firmware, FirmwareConfig, Plant


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host:
    """Talks to a `Firmware` in memory: requests in, replies out, reports collected."""

    def __init__(self, firmware: Firmware, clock: FakeClock) -> None:
        self.firmware = firmware
        self.clock = clock
        self.decoder = Decoder()
        self.seq = 0
        self.reports: list[Message] = []

    def _collect(self) -> list[Message]:
        feed = self.decoder.feed(self.firmware.take_output())
        assert feed.errors == []
        replies: list[Message] = []
        for message in feed.messages:
            (self.reports if message.spec.kind is m.Kind.REPORT else replies).append(message)
        return replies

    def send_raw(self, data: bytes) -> list[Message]:
        self.firmware.receive(data)
        return self._collect()

    def request(self, spec: m.MessageSpec, values: dict[str, m.Value] | None = None) -> Message:
        self.seq = (self.seq + 1) & 0xFF
        replies = self.send_raw(encode(spec, self.seq, values))
        assert len(replies) == 1, replies
        assert replies[0].seq == self.seq
        return replies[0]

    def identify(self) -> Message:
        reply = self.request(m.IDENTIFY, {"host_protocol": m.PROTOCOL_VERSION})
        assert reply.spec is m.IDENTIFY_REPLY
        return reply

    def run(self, seconds: float, step: float = 0.01, keepalive: bool = True) -> None:
        """Let time pass with the firmware ticking, as the simulator thread does; with
        `keepalive`, send a heartbeat every 0.5 s as the bridge does."""
        end = self.clock.now + seconds
        last = self.clock.now
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + step)
            self.firmware.tick()
            self._collect()
            if keepalive and self.clock.now - last >= 0.5 and self.firmware.state().session:
                self.request(m.HEARTBEAT)
                last = self.clock.now

    def telemetry(self) -> Message:
        reply = self.request(m.GET_TELEMETRY)
        assert reply.spec is m.TELEMETRY
        return reply


CONFIG = FirmwareConfig(telemetry_period_s=0.1, host_timeout_s=1.0, fan_safe_duty=0.3)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def faults() -> FaultSwitches:
    return FaultSwitches()


@pytest.fixture
def host(clock: FakeClock, faults: FaultSwitches) -> Host:
    plant = Plant(ambient_c=25.0)
    plant.settle(0.0, CONFIG.fan_safe_duty)
    firmware = Firmware(plant, CONFIG, faults, clock=clock, rng=random.Random(3))
    return Host(firmware, clock)


def num(value: m.Value) -> int:
    """A decoded integer field (the table types values loosely)."""
    assert isinstance(value, int)
    return value


def nak(reply: Message) -> tuple[int, m.ErrorCode, int]:
    assert reply.spec is m.NAK
    return num(reply["request_id"]), m.ErrorCode(num(reply["code"])), num(reply["detail"])


# -- sessions ----------------------------------------------------------------------------------


def test_nothing_but_identify_is_served_before_a_session(host: Host) -> None:
    assert nak(host.request(m.GET_TELEMETRY)) == (0x02, m.ErrorCode.NOT_IDENTIFIED, 0)
    assert nak(host.request(m.SET_FAN, {"duty": 1.0, "max_duration_ms": 100})) == (
        0x03,
        m.ErrorCode.NOT_IDENTIFIED,
        0,
    )
    host.run(1.0)
    assert host.reports == [], "no reports without a session"


def test_identify_reports_version_serial_timing_and_limits(host: Host) -> None:
    reply = host.identify()
    assert dict(reply.values) == {
        "protocol": m.PROTOCOL_VERSION,
        "fw_major": 1,
        "fw_minor": 0,
        "fw_patch": 0,
        "serial_number": "SIM-00000001",
        "telemetry_period_ms": 100,
        "host_timeout_ms": 1000,
        "fan_safe_duty": 0.3,
        "sensor_limit": 85.0,
        "hot_limit": 70.0,
    }


def test_a_mismatched_protocol_is_refused_with_the_firmware_version(host: Host) -> None:
    reply = host.request(m.IDENTIFY, {"host_protocol": m.PROTOCOL_VERSION + 1})
    assert nak(reply) == (0x01, m.ErrorCode.VERSION_MISMATCH, m.PROTOCOL_VERSION)
    assert nak(host.request(m.HEARTBEAT))[1] is m.ErrorCode.NOT_IDENTIFIED


def test_reports_come_every_period_with_consecutive_seq(host: Host) -> None:
    host.identify()
    host.run(1.0)
    assert 9 <= len(host.reports) <= 11
    seqs = [r.seq for r in host.reports]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    uptimes = [num(r["uptime_ms"]) for r in host.reports]
    assert uptimes == sorted(uptimes)


def test_host_silence_ends_the_session_and_makes_outputs_safe(host: Host) -> None:
    host.identify()
    host.request(m.SET_FAN, {"duty": 0.9, "max_duration_ms": 60_000})
    host.request(m.SET_COOLER, {"enable": 1, "setpoint": 15.0, "max_duration_ms": 60_000})
    host.run(0.9, keepalive=False)
    assert host.firmware.state().session
    host.run(0.2, keepalive=False)
    state = host.firmware.state()
    assert not state.session
    assert state.fan_duty == 0.3
    assert not state.cooler_enabled
    assert m.Fault.HOST_TIMEOUT in state.faults
    count = len(host.reports)
    host.run(1.0, keepalive=False)
    assert len(host.reports) == count, "reports stop with the session"


def test_any_valid_frame_keeps_the_session_alive(host: Host) -> None:
    host.identify()
    for _ in range(5):
        host.run(0.6, keepalive=False)
        host.request(m.HEARTBEAT)
    assert host.firmware.state().session


# -- fan -----------------------------------------------------------------------------------------


def test_fan_reverts_to_its_safe_duty_when_max_duration_expires(host: Host) -> None:
    host.identify()
    assert host.request(m.SET_FAN, {"duty": 0.8, "max_duration_ms": 500}).spec is m.ACK
    host.run(0.2)
    telemetry = host.telemetry()
    assert telemetry["fan_duty"] == 0.8
    assert 290 <= num(telemetry["fan_hold_ms"]) <= 300
    assert m.State.FAN_HELD & num(telemetry["state"])
    host.run(0.31)
    telemetry = host.telemetry()
    assert telemetry["fan_duty"] == 0.3
    assert telemetry["fan_hold_ms"] == 0
    assert m.Fault.FAN_TIMEOUT & num(telemetry["faults"])


def test_refreshing_set_fan_keeps_the_duty(host: Host) -> None:
    host.identify()
    for _ in range(10):
        host.request(m.SET_FAN, {"duty": 0.8, "max_duration_ms": 300})
        host.run(0.2)
    assert host.firmware.state().fan_duty == 0.8
    assert not host.firmware.state().faults


def test_the_safe_duty_needs_no_refresh(host: Host) -> None:
    host.identify()
    host.request(m.SET_FAN, {"duty": 0.3, "max_duration_ms": 10})
    host.run(0.5)
    assert host.firmware.state().fan_duty == 0.3
    assert m.Fault.FAN_TIMEOUT not in host.firmware.state().faults


def test_out_of_range_values_are_refused_with_the_field_index(host: Host) -> None:
    host.identify()
    bad_duration = encode_frame(m.SET_FAN.msg_id, 9, b"\xe8\x03\x00\x00")  # duty 1.0, 0 ms
    (reply,) = host.send_raw(bad_duration)
    assert nak(reply) == (0x03, m.ErrorCode.BAD_VALUE, 1)
    bad_duty = encode_frame(m.SET_FAN.msg_id, 10, b"\xe9\x03\x10\x00")  # duty 1.001
    (reply,) = host.send_raw(bad_duty)
    assert nak(reply) == (0x03, m.ErrorCode.BAD_VALUE, 0)
    assert host.firmware.state().fan_duty == 0.3, "a refused request has no effect"


def test_unknown_and_wrong_length_requests_are_refused(host: Host) -> None:
    (reply,) = host.send_raw(encode_frame(0x3A, 5, b""))
    assert nak(reply) == (0x3A, m.ErrorCode.UNKNOWN_MESSAGE, 0)
    (reply,) = host.send_raw(encode_frame(m.SET_FAN.msg_id, 6, b"\x01"))
    assert nak(reply) == (0x03, m.ErrorCode.BAD_LENGTH, 4)


def test_damaged_frames_get_no_reply_and_are_counted(host: Host) -> None:
    frame = bytearray(encode(m.IDENTIFY, 1, {"host_protocol": 1}))
    frame[4] ^= 0x10
    assert host.send_raw(bytes(frame)) == []
    assert host.send_raw(b"\x00garbage\x00") == []
    assert host.firmware.rx_errors == 2
    host.identify()
    assert host.telemetry()["rx_errors"] == 2


def test_fan_spins_up_and_the_tach_follows(host: Host) -> None:
    host.identify()
    host.request(m.SET_FAN, {"duty": 1.0, "max_duration_ms": 10_000})
    host.run(0.1)
    early = num(host.telemetry()["fan_rpm"])
    host.run(3.0)
    late = num(host.telemetry()["fan_rpm"])
    assert 1800 < early < 3000, "part way up after 0.1 s (was at 30 %)"
    assert 5800 <= late <= 6200


def test_a_blocked_fan_latches_fan_stall(host: Host, faults: FaultSwitches) -> None:
    host.identify()
    faults.fan_stall = True
    host.request(m.SET_FAN, {"duty": 1.0, "max_duration_ms": 10_000})
    host.run(1.0)
    assert m.Fault.FAN_STALL not in host.firmware.state().faults
    host.run(4.0)
    assert m.Fault.FAN_STALL in host.firmware.state().faults
    assert host.telemetry()["fan_rpm"] == 0


# -- cooler and protection -----------------------------------------------------------------------


def keep_cooling(host: Host, seconds: float, setpoint: float = 15.0, fan: float = 1.0) -> None:
    for _ in range(round(seconds / 0.5)):
        host.request(m.SET_FAN, {"duty": fan, "max_duration_ms": 2000})
        host.request(m.SET_COOLER, {"enable": 1, "setpoint": setpoint, "max_duration_ms": 2000})
        host.run(0.5, step=0.05)


def test_cooler_regulates_the_sensor_to_its_setpoint(host: Host) -> None:
    host.identify()
    host.firmware.time_scale = 10.0
    keep_cooling(host, 30.0)  # five model minutes
    telemetry = host.telemetry()
    assert telemetry["sensor_temp"] == pytest.approx(15.0, abs=0.5)
    drive = telemetry["cooler_drive"]
    assert isinstance(drive, float)
    assert 0.0 < drive < 1.0
    assert m.State.COOLER_ON & num(telemetry["state"])


def test_cooler_switches_off_when_max_duration_expires(host: Host) -> None:
    host.identify()
    host.request(m.SET_COOLER, {"enable": 1, "setpoint": 10.0, "max_duration_ms": 300})
    host.run(0.2)
    assert host.firmware.state().cooler_drive > 0
    host.run(0.15)
    state = host.firmware.state()
    assert not state.cooler_enabled
    assert state.cooler_drive == 0
    assert m.Fault.COOLER_TIMEOUT in state.faults


def test_hot_side_over_temperature_cuts_the_cooler_and_forces_the_fan(
    host: Host, faults: FaultSwitches
) -> None:
    host.identify()
    host.firmware.time_scale = 20.0
    faults.overtemp = True
    for _ in range(40):
        host.request(m.SET_FAN, {"duty": 0.3, "max_duration_ms": 60_000})
        host.request(m.SET_COOLER, {"enable": 1, "setpoint": 10.0, "max_duration_ms": 60_000})
        host.run(0.5, step=0.05)
        if host.firmware.state().protecting:
            break
    state = host.firmware.state()
    assert state.protecting
    assert m.Fault.HOT_OVERTEMP in state.faults
    assert state.fan_duty == 1.0
    assert not state.cooler_enabled
    reply = host.request(m.SET_COOLER, {"enable": 1, "setpoint": 10.0, "max_duration_ms": 1000})
    assert nak(reply)[1:] == (m.ErrorCode.FAULT_ACTIVE, int(m.Fault.HOT_OVERTEMP))
    assert host.request(m.CLEAR_FAULTS, {"mask": int(m.ALL_FAULTS)}).spec is m.ACK
    assert m.Fault.HOT_OVERTEMP in host.firmware.state().faults, "its condition is present"
    # The load goes away; the fan at full brings the hot side under limit − hysteresis.
    faults.overtemp = False
    for _ in range(120):
        host.request(m.HEARTBEAT)
        host.run(0.5, step=0.05)
        if not host.firmware.state().protecting:
            break
    state = host.firmware.state()
    assert not state.protecting
    assert state.hot_c < 70.0 - m.OVERTEMP_HYSTERESIS_C + 0.5
    assert state.fan_duty == 0.3, "the host's duty applies again"
    assert m.Fault.HOT_OVERTEMP in state.faults, "latched until cleared"
    assert host.request(m.CLEAR_FAULTS, {"mask": int(m.ALL_FAULTS)}).spec is m.ACK
    assert host.firmware.state().faults == m.Fault(0)


def test_an_over_temperature_report_is_sent_at_once(host: Host) -> None:
    host.identify()
    host.run(0.05)
    host.reports.clear()
    host.firmware.plant.hot_c = 80.0
    host.run(0.01)
    assert len(host.reports) == 1
    assert m.Fault.HOT_OVERTEMP & num(host.reports[0]["faults"])


def test_an_open_thermistor_reports_no_reading_and_blocks_the_cooler(
    host: Host, faults: FaultSwitches
) -> None:
    host.identify()
    host.request(m.SET_COOLER, {"enable": 1, "setpoint": 15.0, "max_duration_ms": 5000})
    faults.sensor_open = True
    host.run(0.05)
    telemetry = host.telemetry()
    assert telemetry["sensor_temp"] is None
    assert m.Fault.SENSOR_FAULT & num(telemetry["faults"])
    assert not host.firmware.state().cooler_enabled
    reply = host.request(m.SET_COOLER, {"enable": 1, "setpoint": 15.0, "max_duration_ms": 5000})
    assert nak(reply)[1] is m.ErrorCode.FAULT_ACTIVE


def test_a_stuck_sensor_repeats_one_value_while_the_real_temperature_moves(
    host: Host, faults: FaultSwitches
) -> None:
    host.identify()
    host.run(0.1)
    faults.stuck_sensor = True
    host.firmware.time_scale = 20.0
    readings = set()
    for _ in range(10):
        host.request(m.SET_COOLER, {"enable": 1, "setpoint": 5.0, "max_duration_ms": 5000})
        host.run(0.3)
        readings.add(host.telemetry()["sensor_temp"])
    assert len(readings) == 1
    (reading,) = readings
    assert isinstance(reading, float)
    assert abs(host.firmware.plant.sensor_c - reading) > 3.0


def test_readings_carry_noise_so_a_steady_sensor_is_not_bit_identical(host: Host) -> None:
    host.identify()
    values = set()
    for _ in range(20):
        host.run(0.05)
        values.add(host.telemetry()["sensor_temp"])
    assert len(values) > 3


# -- faults on the way out -------------------------------------------------------------------------


def test_silence_sends_nothing_but_requests_still_act(host: Host, faults: FaultSwitches) -> None:
    host.identify()
    faults.silence = True
    assert host.send_raw(encode(m.SET_FAN, 50, {"duty": 0.7, "max_duration_ms": 5000})) == []
    host.run(0.5)
    assert host.reports == []
    assert host.firmware.state().fan_duty == 0.7


def test_dropped_replies_are_counted(host: Host, faults: FaultSwitches) -> None:
    host.identify()
    faults.drop = 1.0
    assert host.send_raw(encode(m.HEARTBEAT, 51)) == []
    assert host.firmware.replies_dropped == 1


# -- the plant -----------------------------------------------------------------------------------


def test_idle_module_is_a_few_degrees_above_ambient() -> None:
    plant = Plant(ambient_c=25.0)
    plant.settle(cooler_drive=0.0, fan_duty=0.3)
    assert 28.0 < plant.sensor_c < 40.0
    assert 25.0 < plant.hot_c < 28.0


def test_the_hot_side_cools_when_the_fan_runs() -> None:
    plant = Plant(ambient_c=25.0)
    plant.settle(cooler_drive=0.5, fan_duty=0.0)
    before = plant.hot_c
    plant.step(60.0, cooler_drive=0.5, fan_duty=1.0)
    assert before - plant.hot_c > 10.0
    assert plant.fan_rpm == pytest.approx(6000, rel=0.01)


def test_the_cooler_pumps_heat_from_the_sensor_to_the_hot_side() -> None:
    off, on = Plant(ambient_c=25.0), Plant(ambient_c=25.0)
    off.settle(cooler_drive=0.0, fan_duty=1.0)
    on.settle(cooler_drive=0.6, fan_duty=1.0)
    assert on.sensor_c < off.sensor_c - 15.0
    assert on.cold_c < on.sensor_c < on.ambient_c
    assert on.hot_c > off.hot_c


def test_ambient_temperature_shifts_everything() -> None:
    cold, hot = Plant(ambient_c=-10.0), Plant(ambient_c=45.0)
    assert hot.sensor_c - cold.sensor_c == pytest.approx(55.0, abs=0.5)


def test_fan_does_not_start_below_its_start_duty() -> None:
    plant = Plant()
    plant.step(5.0, cooler_drive=0.0, fan_duty=0.1)
    assert plant.fan_rpm == 0.0


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"host_timeout_s": 100.0}, "host_timeout_ms: 100000 ms is outside"),
        ({"fan_safe_duty": 1.5}, "fan_safe_duty"),
        ({"serial_number": "X" * 17}, "serial_number"),
        ({"protocol": 300}, "protocol"),
    ],
)
def test_a_config_the_protocol_cannot_carry_is_refused_by_name(
    changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=f"firmware config: .*{complaint}"):
        dataclasses.replace(FirmwareConfig(), **changes)


def test_an_intact_but_refused_frame_still_keeps_the_session(host: Host) -> None:
    host.identify()
    for seq in range(4):
        host.run(0.6, keepalive=False)
        (reply,) = host.send_raw(encode_frame(0x3A, seq, b""))
        assert nak(reply)[1] is m.ErrorCode.UNKNOWN_MESSAGE
    assert host.firmware.state().session
