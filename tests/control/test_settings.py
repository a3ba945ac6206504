"""The [control] config models: closed, bounded, described (the same rules as every section of
vehicle_agent.config), the fan driver chosen by `driver`, and inconsistent settings refused
with the key named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.test_config import all_models
from vehicle_agent.control.settings import (
    ControlConfig,
    ControlLoopConfig,
    GpioZeroFanConfig,
    McuFanConfig,
    NoFanConfig,
    SimulatedFanConfig,
    SysfsPwmFanConfig,
    ThermalConfig,
)


def test_every_control_model_is_checked_by_the_config_walker() -> None:
    """`tests/test_config.py` checks descriptions and bounds of every model under `Config`;
    the control section's nine models must all be reached from there."""
    walked = set(all_models())
    control = {m for m in walked if m.__module__ == "vehicle_agent.control.settings"}
    assert ControlConfig in control
    assert len(control) == 10  # NoFanConfig joined the drivers (issue 22)


def test_defaults_are_no_fan_without_a_module() -> None:
    # Issue 22: the default used to be the simulated fan, which a vehicle's `run` then built.
    config = ControlConfig()
    assert isinstance(config.fan, NoFanConfig)
    assert config.mcu is None


@pytest.mark.parametrize(
    ("fan", "kind"),
    [
        ({"driver": "simulated"}, SimulatedFanConfig),
        ({"driver": "none"}, NoFanConfig),
        ({"driver": "sysfs", "board": "orin-nx", "pin": 15}, SysfsPwmFanConfig),
        ({"driver": "gpiozero", "pin": "GPIO18"}, GpioZeroFanConfig),
        ({"driver": "sysfs", "chip": 1, "channel": 2}, SysfsPwmFanConfig),
    ],
)
def test_the_driver_key_picks_the_model(fan: dict[str, object], kind: type) -> None:
    assert isinstance(ControlConfig.model_validate({"fan": fan}).fan, kind)


def test_mcu_driver_with_its_port() -> None:
    config = ControlConfig.model_validate(
        {"fan": {"driver": "mcu"}, "safe_duty": 0.3, "mcu": {"port": "/dev/ttyACM0"}}
    )
    assert isinstance(config.fan, McuFanConfig)
    assert config.mcu is not None
    assert config.mcu.port == "/dev/ttyACM0"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"fan": {"driver": "mcu"}}, r"needs \[control\.mcu\]"),
        ({"fan": {"driver": "pwm"}}, "does not match any of the expected tags"),
        ({"fan": {"driver": "gpiozero", "pin": "GPIO18", "pwm": 1}}, "Extra inputs"),
        ({"fan": {"driver": "sysfs", "chip": 999}}, "less than or equal to 255"),
        ({"fan": {"driver": "sysfs", "board": "orin-nano"}}, "board and pin go together"),
        ({"fan": {"driver": "sysfs", "board": "orin-nano", "pin": 12}}, "PWM pins: 15, 32, 33"),
        ({"fan": {"driver": "sysfs", "board": "tx2", "pin": 32}}, "orin-nano"),
        ({"loop": {"refresh_interval_s": 1.0, "max_duration_s": 2.0}}, "3 × refresh_interval_s"),
        ({"thermal": {"hot_warning_c": 70.0, "hot_critical_c": 65.0}}, "hot_warning_c"),
        ({"thermal": {"sensor_warning_c": 90.0}}, "sensor_warning_c must be below"),
        ({"thermal": {"sensor_setpoint_c": 60.0, "sensor_warning_c": 55.0}}, "setpoint"),
        ({"thermal": {"valid_min_c": 50.0, "valid_max_c": 40.0}}, "valid_min_c"),
        ({"cleaning": {"burst_s": float("nan")}}, "finite"),
        (
            {"loop": {"max_duration_s": 1.5}, "mcu": {"port": "/dev/ttyACM0", "retries": 5}},
            "at least 2 s",
        ),
        ({"cleaning": {"max_retries": -1}}, "greater than or equal to 0"),
    ],
)
def test_inconsistent_settings_are_refused(data: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ControlConfig.model_validate(data)


def test_sections_are_immutable() -> None:
    with pytest.raises(ValidationError):
        ControlLoopConfig().refresh_interval_s = 1.0  # type: ignore[misc]
    assert ThermalConfig().hot_warning_c < ThermalConfig().hot_critical_c
