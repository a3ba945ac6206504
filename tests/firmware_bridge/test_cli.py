"""The command line: `sim` prints its port and stops cleanly, `status` prints one JSON snapshot or
one clear error line with exit status 1, `drive` holds the outputs (and the hot side cools when
the fan runs), `--faults` is parsed strictly."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from firmware_bridge.cli import _console_command, main, parse_faults
from firmware_bridge.messages import PROTOCOL_VERSION
from firmware_bridge.sim import FirmwareConfig, FirmwareSimulator
from tests.firmware_bridge.conftest import FAST_FIRMWARE

if TYPE_CHECKING:
    from pathlib import Path


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    assert ready, f"no output within {timeout_s} s"
    return process.stdout.readline().strip()


def test_sim_prints_its_port_serves_status_and_stops_on_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "camera-mcu"
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", "sim", "--link", str(link), "--ambient", "30"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(sim, 10.0) == str(link)
        status = subprocess.run(
            [sys.executable, "-m", "firmware_bridge", "status", "--port", str(link)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["firmware"]["protocol"] == PROTOCOL_VERSION
        assert report["firmware"]["version"] == "1.0.0"
        assert 30.0 < report["telemetry"]["sensor_c"] < 50.0
        assert 30.0 < report["telemetry"]["hot_side_c"] < 35.0
        assert report["telemetry"]["fan_duty"] == 0.3
        assert report["stale"] is False
        assert report["counters"]["crc_errors"] == 0
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0
        assert not link.exists(), "the link goes with the simulator"
        _, err = sim.communicate()
        assert "module SIM-00000001" in err
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.communicate()


def test_status_prints_temperatures_fan_cooler_firmware_and_counters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu") as sim:
        assert main(["status", "--port", sim.port]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["port"] == str(tmp_path / "mcu")
    assert report["firmware"]["serial_number"] == "SIM-00000001"
    telemetry = report["telemetry"]
    for key in ("sensor_c", "cold_side_c", "hot_side_c", "fan_duty", "fan_rpm", "cooler_drive"):
        assert isinstance(telemetry[key], int | float), key
    assert telemetry["state"] == ["SESSION"]
    assert telemetry["faults"] == []
    assert report["round_trip_ms"] > 0
    assert set(report["counters"]) >= {"crc_errors", "timeouts", "retries", "reconnects"}


def test_status_on_an_absent_port_exits_1_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = tmp_path / "ttyACM9"
    assert main(["status", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"firmware_bridge status: {port}: port unavailable: No such file or directory"


def test_status_on_a_silent_port_exits_1_naming_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu") as sim:
        sim.faults.silence = True
        started = time.monotonic()
        assert main(["status", "--port", sim.port, "--timeout", "2"]) == 1
        assert time.monotonic() - started < 5.0
    err = capsys.readouterr().err
    assert "no reply to identify from the microcontroller (3 attempt(s) of 0.25 s)" in err


def test_status_refuses_a_firmware_speaking_another_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = FirmwareConfig(protocol=PROTOCOL_VERSION + 1, serial_number="CAM-42")
    with FirmwareSimulator(config=config, link=tmp_path / "mcu") as sim:
        assert main(["status", "--port", sim.port]) == 1
    err = capsys.readouterr().err
    assert f"this host speaks protocol {PROTOCOL_VERSION}" in err
    assert f"speaks protocol {PROTOCOL_VERSION + 1}" in err


def drive(port: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["drive", "--port", port, *args]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "counters" in lines[-1]
    return lines[:-1]


def test_the_hot_side_cools_when_the_fan_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's acceptance check, at 60× thermal speed: cooler on, then the fan added."""
    with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu", time_scale=60) as sim:
        still = drive(
            sim.port, capsys, "--cooler", "15", "--fan", "0", "--for", "1", "--every", "0.1"
        )
        blowing = drive(
            sim.port, capsys, "--cooler", "15", "--fan", "1", "--for", "1", "--every", "0.1"
        )
        state = sim.state()
    assert still[-1]["hot_side_c"] > still[0]["hot_side_c"] + 3.0, "the cooler heats the hot side"
    assert blowing[-1]["fan_rpm"] > 5000
    assert blowing[-1]["hot_side_c"] < blowing[0]["hot_side_c"] - 3.0, "the fan cools it"
    assert all(not line["stale"] for line in still + blowing)
    assert state.fan_duty == 0.3, "drive leaves the fan at its safe duty"
    assert not state.cooler_enabled


def test_drive_needs_something_to_drive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drive", "--port", "/dev/null"]) == 2
    assert "give --fan DUTY and/or --cooler C" in capsys.readouterr().err


def test_faults_are_parsed_by_name_with_rates_and_an_unplug_cycle() -> None:
    faults, cycle = parse_faults("garbage=0.05, drop, silence,stuck-sensor,unplug=20:3")
    assert faults.garbage == 0.05
    assert faults.drop == 0.1
    assert faults.silence
    assert faults.stuck_sensor
    assert not faults.overtemp
    assert cycle == (20.0, 3.0)
    assert faults.active() == ["garbage", "drop", "silence", "stuck-sensor"]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("sparks", "unknown fault 'sparks'"),
        ("garbage=2", r"rate 2 is not within \[0, 1\]"),
        ("silence=maybe", "'maybe' is not on/off"),
        ("unplug=5", "expected EVERY:FOR"),
        ("unplug=3:5", "expected EVERY:FOR"),
    ],
)
def test_bad_faults_are_refused_by_name(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_faults(text)


def test_sim_with_bad_faults_exits_2_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--faults", "sparks"]) == 2
    assert "unknown fault 'sparks'" in capsys.readouterr().err


def test_bench_console_commands_drive_the_simulator(tmp_path: Path) -> None:
    with FirmwareSimulator(config=FAST_FIRMWARE, link=tmp_path / "mcu") as sim:
        assert _console_command(sim, ["fault", "drop=0.5"]) == "faults: drop"
        assert sim.faults.drop == 0.5
        assert _console_command(sim, ["clear", "drop"]) == "faults: none"
        assert _console_command(sim, ["ambient", "40"]) == "ambient 40 °C"
        assert sim.plant.ambient_c == 40.0
        assert _console_command(sim, ["unplug"]) == "unplugged"
        assert not sim.plugged
        assert not (tmp_path / "mcu").exists()
        assert _console_command(sim, ["replug"]).startswith("replugged on /dev/pts/")
        assert (tmp_path / "mcu").is_symlink()
        state = json.loads(_console_command(sim, ["state"]))
        assert state["session"] is False
        assert _console_command(sim, ["quit"]) == "quit"
        with pytest.raises(ValueError, match="unknown command 'fly'"):
            _console_command(sim, ["fly"])
