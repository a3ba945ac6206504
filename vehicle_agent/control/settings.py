"""Act stage: the `[control]` config models: fan drivers, MCU link, control loop, cleaning, thermal.

Closed and bounded like every section of `vehicle_agent.config` (which splices `ControlConfig`
in as `Config.control`): `extra="forbid"`, bounds on every number, a description on every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.control.jetson_pins import JETSON_PWM_PINS, JetsonBoard

# -- fan drivers, by `driver` ---------------------------------------------------------------


class NoFanConfig(ConfigModel):
    driver: Literal["none"] = Field(
        "none",
        description="No fan is wired: cleaning and thermal control drive nothing. `run` warns "
        "at start, in events, telemetry and status (alarm `no_real_fan`).",
    )


class SimulatedFanConfig(ConfigModel):
    driver: Literal["simulated"] = Field(
        "simulated",
        description="A fan in memory: `vehicle-agent simulate` and tests only; `run` refuses it.",
    )


class GpioZeroFanConfig(ConfigModel):
    driver: Literal["gpiozero"] = Field(
        "gpiozero",
        description="PWM on a GPIO pin through gpiozero (Raspberry Pi pin factories only).",
    )
    pin: str = Field(
        min_length=1,
        max_length=16,
        pattern=r"^[A-Za-z0-9_:]+$",
        description="gpiozero pin name, e.g. 'GPIO18', 'BOARD12' or '18'.",
    )
    frequency_hz: float = Field(
        100.0,
        ge=1.0,
        le=50_000.0,
        description="PWM frequency, Hz (software PWM factories manage only a few hundred Hz).",
    )
    active_high: bool = Field(default=True, description="True: the fan runs while the pin is high.")
    pin_factory: Literal["default", "lgpio", "rpigpio", "pigpio", "native"] = Field(
        "default",
        description="gpiozero pin factory; 'default' tries lgpio, rpigpio, pigpio, native.",
    )


class SysfsPwmFanConfig(ConfigModel):
    driver: Literal["sysfs"] = Field(
        "sysfs",
        description="Hardware PWM through Linux sysfs (/sys/class/pwm): Jetson boards.",
    )
    board: JetsonBoard | None = Field(
        None,
        description="Jetson carrier board whose 40-pin header `pin` is on: 'orin-nano', "
        "'orin-nx' (p3768/p3509 carriers) or 'agx-orin' (p3737); with `pin`, the PWM controller "
        "and channel come from the board's table (docs/service.md) and `chip`/`channel` are unused.",
    )
    pin: int | None = Field(
        None,
        ge=1,
        le=40,
        description="Header pin (BOARD numbering) of the fan's PWM, e.g. 33 on an Orin Nano; "
        "needs `board`. The pin must be muxed to PWM first (jetson-io).",
    )
    chip: int = Field(
        0, ge=0, le=255, description="PWM chip number N of pwmchipN (without `board`/`pin`)."
    )
    channel: int = Field(
        0, ge=0, le=255, description="Channel M of the chip (pwmM) (without `board`/`pin`)."
    )
    frequency_hz: float = Field(
        25_000.0, ge=1.0, le=1_000_000.0, description="PWM frequency, Hz (4-wire fans: 25 kHz)."
    )
    polarity: Literal["normal", "inversed"] = Field(
        "normal", description="'inversed' for a driver stage that runs the fan on a low level."
    )
    root: Path = Field(
        Path("/sys/class/pwm"),
        validate_default=False,  # a Path already (strict TOML validation takes strings)
        description="The sysfs PWM class directory (tests: a fake tree).",
    )
    tach_path: Path | None = Field(
        None, description="A hwmon fanN_input file giving the fan speed in rpm, if wired."
    )
    export_timeout_s: float = Field(
        2.0,
        ge=0.05,
        le=30.0,
        description="How long to wait for udev to make an exported channel writable, seconds.",
    )

    @model_validator(mode="after")
    def _pin_on_its_board(self) -> SysfsPwmFanConfig:
        if (self.board is None) != (self.pin is None):
            raise ValueError("board and pin go together (or neither: chip and channel)")
        if self.board is not None and self.pin is not None:
            pins = JETSON_PWM_PINS[self.board]
            if self.pin not in pins:
                known = ", ".join(str(p) for p in sorted(pins))
                raise ValueError(f"pin {self.pin} of {self.board} has no PWM; PWM pins: {known}")
        return self


class McuFanConfig(ConfigModel):
    driver: Literal["mcu"] = Field(
        "mcu",
        description="The camera module's microcontroller drives the fan ([control.mcu] link).",
    )


FanDriverConfig = Annotated[
    NoFanConfig | SimulatedFanConfig | GpioZeroFanConfig | SysfsPwmFanConfig | McuFanConfig,
    Field(discriminator="driver"),
]


# -- the microcontroller link ---------------------------------------------------------------


class McuConfig(ConfigModel):
    port: str = Field(
        min_length=1,
        max_length=256,
        description="Serial port of the camera module, e.g. /dev/serial/by-id/usb-…",
    )
    baudrate: int = Field(115_200, ge=1200, le=4_000_000, description="Serial speed, baud.")
    request_timeout_s: float = Field(
        0.25, ge=0.01, le=5.0, description="Wait for one reply before a retry, seconds."
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a request without a reply.")
    poll_interval_s: float = Field(
        0.25,
        ge=0.01,
        le=10.0,
        description="Telemetry is polled when periodic reports stop for this long, seconds.",
    )
    stale_after_polls: int = Field(
        3, ge=1, le=100, description="Telemetry older than this many poll periods is stale."
    )
    ready_timeout_s: float = Field(
        5.0,
        ge=0.0,
        le=120.0,
        description="At start, wait this long for the module; control runs (fail-safe) without it.",
    )


# -- the control loop -----------------------------------------------------------------------


class ControlLoopConfig(ConfigModel):
    refresh_interval_s: float = Field(
        0.5,
        ge=0.02,
        le=10.0,
        description="How often thermal control runs and the MCU's outputs are re-sent, seconds.",
    )
    max_duration_s: float = Field(
        2.0,
        ge=0.1,
        le=60.0,
        description="The MCU reverts the fan and cooler this long after the last refresh, "
        "seconds: how long a dead daemon can leave them on.",
    )
    safe_state_timeout_s: float = Field(
        2.0,
        ge=0.1,
        le=30.0,
        description="Time allowed to put the fan and cooler in their safe state on exit, seconds.",
    )

    @model_validator(mode="after")
    def _refresh_inside_duration(self) -> Self:
        if self.max_duration_s < 3 * self.refresh_interval_s:
            raise ValueError(
                "max_duration_s must be at least 3 × refresh_interval_s, or one late refresh "
                "lets the microcontroller revert the outputs"
            )
        return self


# -- cleaning -------------------------------------------------------------------------------


class CleaningConfig(ConfigModel):
    automatic: bool = Field(
        default=True,
        description="Clean when the adhesion detector reports soiling (manual triggers always work).",
    )
    burst_s: float = Field(
        3.0, ge=0.2, le=60.0, description="Full fan duty for this long per attempt, seconds."
    )
    verify_s: float = Field(
        2.0,
        ge=0.1,
        le=60.0,
        description="After a burst, wait at most this long for the adhesion score to fall, seconds.",
    )
    min_score_drop: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="An attempt succeeds when the adhesion score fell by at least this much.",
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="Further attempts after a failed one, before giving up."
    )
    backoff_s: float = Field(
        300.0,
        ge=0.0,
        le=86_400.0,
        description="After giving up, no automatic cleaning for this long, seconds.",
    )
    min_interval_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="Least time from the end of one automatic cleaning to the start of the "
        "next, seconds.",
    )


# -- thermal --------------------------------------------------------------------------------


class ThermalConfig(ConfigModel):
    enabled: bool = Field(
        default=True,
        description="Thermal control through the microcontroller (needs [control.mcu]).",
    )
    cooler_enabled: bool = Field(
        default=True, description="Regulate the image sensor with the refrigeration chip."
    )
    sensor_setpoint_c: float = Field(
        35.0, ge=-20.0, le=60.0, description="Image sensor temperature the cooler holds, °C."
    )
    sensor_warning_c: float = Field(
        70.0, ge=-20.0, le=150.0, description="Image sensor warning threshold, °C."
    )
    sensor_critical_c: float = Field(
        80.0,
        ge=-20.0,
        le=150.0,
        description="Image sensor critical threshold, °C: cooler off, fan full.",
    )
    hot_warning_c: float = Field(
        60.0, ge=-20.0, le=150.0, description="Cooler hot side warning threshold, °C."
    )
    hot_critical_c: float = Field(
        68.0,
        ge=-20.0,
        le=150.0,
        description="Cooler hot side critical threshold, °C: cooler off, fan full.",
    )
    hysteresis_c: float = Field(
        3.0,
        ge=0.1,
        le=20.0,
        description="A level is left once the temperature is this far below its threshold, °C.",
    )
    hot_target_c: float = Field(
        45.0,
        ge=-20.0,
        le=150.0,
        description="Hot side temperature the fan's PI controller aims for, °C.",
    )
    fan_kp_per_c: float = Field(
        0.05, ge=0.0, le=10.0, description="Fan PI: duty per °C of hot side above target."
    )
    fan_ki_per_c_s: float = Field(
        0.005, ge=0.0, le=10.0, description="Fan PI: duty per °C·s of hot side above target."
    )
    fan_min_duty_cooling: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Least fan duty while the cooler runs (its hot side must shed the heat).",
    )
    stale_after_s: float = Field(
        2.0,
        ge=0.05,
        le=600.0,
        description="Telemetry older than this is stale: fan full, alarm, seconds.",
    )
    frozen_after_s: float = Field(
        30.0,
        ge=0.1,
        le=3600.0,
        description="A reading unchanged for this long while samples arrive is frozen, seconds.",
    )
    frozen_min_change_c: float = Field(
        0.0,
        ge=0.0,
        le=5.0,
        description="A reading must move by more than this to count as changed, °C.",
    )
    valid_min_c: float = Field(
        -35.0,
        ge=-273.15,
        le=200.0,
        description="Readings below this are impossible (a shorted or open thermistor), °C.",
    )
    valid_max_c: float = Field(
        130.0, ge=-273.15, le=200.0, description="Readings above this are impossible, °C."
    )
    recover_after_s: float = Field(
        5.0,
        ge=0.0,
        le=600.0,
        description="A sensor fault clears after the reading has been sound this long, seconds.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.sensor_warning_c < self.sensor_critical_c:
            raise ValueError("sensor_warning_c must be below sensor_critical_c")
        if not self.hot_warning_c < self.hot_critical_c:
            raise ValueError("hot_warning_c must be below hot_critical_c")
        if not self.valid_min_c < self.valid_max_c:
            raise ValueError("valid_min_c must be below valid_max_c")
        if not self.sensor_setpoint_c < self.sensor_warning_c:
            raise ValueError("sensor_setpoint_c must be below sensor_warning_c")
        return self


# -- the section ----------------------------------------------------------------------------


class ControlConfig(ConfigModel):
    fan: FanDriverConfig = Field(
        default_factory=NoFanConfig,
        description="The lens-cleaning fan's driver: 'mcu' (the camera module's "
        "microcontroller, the vehicle default), 'sysfs' (Jetson hardware PWM), 'gpiozero', "
        "'none' (warned about) or 'simulated' (`simulate` and tests only).",
    )
    safe_duty: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Fan duty (0–1) applied at start, on shutdown and whenever control is unsure; "
        "with the 'mcu' driver, the firmware's own fan_safe_duty.",
    )
    loop: ControlLoopConfig = Field(
        default_factory=ControlLoopConfig, description="Refresh timing of the control loop."
    )
    cleaning: CleaningConfig = Field(
        default_factory=CleaningConfig, description="Lens cleaning by the fan's air."
    )
    thermal: ThermalConfig = Field(
        default_factory=ThermalConfig, description="Cooler and fan thermal control."
    )
    mcu: McuConfig | None = Field(
        None,
        description="The camera module's microcontroller; none: no cooler, no temperatures.",
    )

    @model_validator(mode="after")
    def _mcu_when_needed(self) -> Self:
        if isinstance(self.fan, McuFanConfig) and self.mcu is None:
            raise ValueError("fan driver 'mcu' needs [control.mcu] with the module's port")
        if self.mcu is not None:
            # A refresh to a silent module takes all its attempts; the next one must still
            # arrive before the outputs' max_duration runs out.
            worst = self.loop.refresh_interval_s + self.mcu.request_timeout_s * (
                1 + self.mcu.retries
            )
            if self.loop.max_duration_s < worst:
                raise ValueError(
                    f"loop.max_duration_s must be at least {worst:g} s: refresh_interval_s plus "
                    "mcu.request_timeout_s × (1 + mcu.retries)"
                )
        return self
