"""The [control] config models: closed, bounded, described (the same rules as every section of
vehicle_agent.config), the fan driver chosen by `driver`, and inconsistent settings refused
with the key named."""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from vehicle_agent.config import ConfigModel
from vehicle_agent.control.settings import (
    ControlConfig,
    ControlLoopConfig,
    GpioZeroFanConfig,
    McuFanConfig,
    SimulatedFanConfig,
    SysfsPwmFanConfig,
    ThermalConfig,
)


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models(a)]


def _is_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_number(a) for a in get_args(annotation))
    return False


def test_every_field_is_described_and_every_number_bounded() -> None:
    seen: list[type[BaseModel]] = []
    stack: list[type[BaseModel]] = [ControlConfig]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.append(model)
        assert issubclass(model, ConfigModel), model
        for name, info in model.model_fields.items():
            stack.extend(_models(info.annotation))
            assert info.description, f"{model.__name__}.{name} has no description"
            if _is_number(info.annotation):
                bounds = {
                    attr
                    for meta in info.metadata
                    for attr in ("ge", "gt", "le", "lt")
                    if getattr(meta, attr, None) is not None
                }
                assert bounds & {"ge", "gt"}, f"{model.__name__}.{name} has no lower bound"
                assert bounds & {"le", "lt"}, f"{model.__name__}.{name} has no upper bound"
    assert len(seen) == 9


def test_defaults_are_a_simulated_fan_without_a_module() -> None:
    config = ControlConfig()
    assert isinstance(config.fan, SimulatedFanConfig)
    assert config.mcu is None


@pytest.mark.parametrize(
    ("fan", "kind"),
    [
        ({"driver": "simulated"}, SimulatedFanConfig),
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
