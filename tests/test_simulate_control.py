"""The bench's simulated camera module: a hot day trips the thermal warning with the fan rising;
a stuck sensor drives the fan to full with an alarm; bad fault options are one clear error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.test_simulate import cut_clip
from vehicle_agent.cli import main


def run(
    tmp_path: Path, *extra: str, seconds: float = 6
) -> tuple[dict[str, object], list[dict[str, object]], list[dict[str, str]]]:
    clip = cut_clip(tmp_path / "clip.mp4", seconds)
    report = tmp_path / "report"
    args = ["simulate", "--video", str(clip), "--report", str(report), "--speed", "realtime"]
    assert main([*args, *extra]) == 0
    summary = json.loads((report / "summary.json").read_text())
    events = [json.loads(line) for line in (report / "events.jsonl").read_text().splitlines()]
    with (report / "frames.csv").open() as f:
        rows = list(csv.DictReader(f))
    return summary, events, rows


def test_a_hot_day_raises_the_fan_and_a_thermal_warning(tmp_path: Path) -> None:
    summary, events, rows = run(tmp_path, "--ambient", "60", "--thermal-speed", "60")
    warnings = [e for e in events if e["type"] == "thermal_warning"]
    assert warnings
    assert warnings[0]["sensor"] == "hot_side"
    duties = [float(r["fan_duty"]) for r in rows]
    assert max(duties) > duties[0]
    control = summary["control"]
    assert isinstance(control, dict)
    assert control["thermal_warnings"] >= 1
    assert control["max_fan_duty"] == pytest.approx(1.0)
    # Fan and cooler end safe.
    safe = [e["actuator"] for e in events if e["type"] == "actuator_safe_state"]
    assert safe == ["fan:mcu", "cooler:mcu"]


def test_a_stuck_sensor_drives_the_fan_to_full_and_raises_an_alarm(tmp_path: Path) -> None:
    summary, events, rows = run(tmp_path, "--mcu-fault", "stuck-sensor@1s", seconds=7)
    faults = [e for e in events if e["type"] == "sensor_fault"]
    assert faults
    assert faults[0]["reason"] == "frozen"
    assert faults[0]["sensor"] == "sensor"
    onset = float(str(faults[0]["t"]))
    after = [float(r["fan_duty"]) for r in rows if float(r["t"]) > onset + 0.5]
    assert after
    assert min(after) == pytest.approx(1.0)
    control = summary["control"]
    assert isinstance(control, dict)
    assert control["sensor_faults"] == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mcu-fault", "meltdown"], "unknown microcontroller fault 'meltdown'"),
        (["--mcu-fault", "overtemp@soon"], "bad start time 'soon'"),
        (["--ambient", "400"], "--ambient 400: expected -40 to 85"),
        (["--fault", "lens-crack@3s"], "--fault: unknown fault 'lens-crack'"),
        (["--fault", "camera-stall@x"], "--fault: bad fault 'camera-stall@x'"),
        (["--fault", "broker-loss@3s"], "--fault broker-loss needs --broker URL"),
    ],
)
def test_bad_bench_hardware_options_are_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(["simulate", "--report", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert words in err[0]
