"""Firmware simulator, the physics: `Plant`, the lumped thermal model of the camera module
(image sensor, thermoelectric cooler, heat sink, fan) that the simulated MCU sits in.

Pure: stepped in model seconds by `Firmware`, so tests drive it without a clock or a thread.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

logger = logging.getLogger(__name__)

KELVIN = 273.15


@dataclass(frozen=True, slots=True)
class PlantParams:
    """Lumped parameters of a small cooled camera module. Defaults give plausible figures: a
    sensor some 10 °C above ambient with everything off, a hot side 15–25 °C above ambient
    with the cooler working and the fan off, a few degrees with the fan at full speed."""

    sensor_power_w: float = 1.5
    """Heat dissipated by the image sensor while it streams."""
    sensor_capacity_j_per_k: float = 4.0
    cold_capacity_j_per_k: float = 8.0
    """Cold plate and the cooler's cold face."""
    hot_capacity_j_per_k: float = 40.0
    """Heat sink and the cooler's hot face."""
    sensor_to_cold_w_per_k: float = 0.8
    sensor_to_ambient_w_per_k: float = 0.04
    cold_to_ambient_w_per_k: float = 0.15
    """Leak through the insulation around the cold plate."""
    hot_to_ambient_w_per_k: float = 0.35
    """Heat sink by natural convection (fan stopped)."""
    fan_w_per_k: float = 1.6
    """Extra heat-sink conductance at the fan's full speed (proportional to speed)."""
    tec_seebeck_v_per_k: float = 0.025
    tec_resistance_ohm: float = 1.2
    tec_conductance_w_per_k: float = 0.12
    """Back-conduction through the cooler from hot to cold face."""
    tec_max_current_a: float = 2.5
    """Current at drive 1.0."""
    fan_max_rpm: float = 6000.0
    fan_start_duty: float = 0.12
    """Below this duty the motor does not turn."""
    fan_spin_up_s: float = 0.7
    """Time constant of the rotor speeding up."""
    fan_spin_down_s: float = 1.5
    overtemp_load_w: float = 30.0
    """Heat on the heat sink while the `overtemp` fault is on (a blocked sink in full sun)."""
    max_step_s: float = 0.2
    """Longest explicit-Euler step (the fastest time constant here is ~4.7 s)."""


class Plant:
    """Sensor, cold plate, heat sink and fan, stepped by `step()` in model seconds.

    Heat flows: the sensor heats itself and leaks to the cold plate and the air; the cooler
    pumps heat from the cold plate to the heat sink (Peltier: Qc = S·I·Tc − I²R/2 − K·ΔT, and
    the hot side receives Qc plus the electrical power); the heat sink loses heat to the air,
    much faster with the fan turning.
    """

    def __init__(self, params: PlantParams | None = None, ambient_c: float = 25.0) -> None:
        self.params = params or PlantParams()
        self.ambient_c = ambient_c
        self.extra_hot_w = 0.0
        self.fan_blocked = False
        self.sensor_c = self.cold_c = self.hot_c = ambient_c
        self.fan_rpm = 0.0
        self.settle()

    def settle(self, cooler_drive: float = 0.0, fan_duty: float = 0.0) -> None:
        """Jump to the steady state for these inputs (so a run does not start with a warm-up)."""
        for _ in range(4000):  # ~30 time constants of the slowest node at 1 s steps
            self._euler(1.0, cooler_drive, fan_duty)
        self.fan_rpm = self._rpm_target(fan_duty)

    def step(self, dt_s: float, cooler_drive: float, fan_duty: float) -> None:
        """Advance by `dt_s` model seconds with these inputs held constant."""
        while dt_s > 0:
            h = min(dt_s, self.params.max_step_s)
            self._euler(h, cooler_drive, fan_duty)
            dt_s -= h

    def tec_heat_w(self, cooler_drive: float) -> tuple[float, float]:
        """(heat pumped from the cold plate, heat delivered to the heat sink) in W, now."""
        p = self.params
        current = max(0.0, min(1.0, cooler_drive)) * p.tec_max_current_a
        delta = self.hot_c - self.cold_c
        joule = current * current * p.tec_resistance_ohm
        peltier = p.tec_seebeck_v_per_k * current * (self.cold_c + KELVIN)
        q_cold = peltier - joule / 2 - p.tec_conductance_w_per_k * delta
        electrical = joule + p.tec_seebeck_v_per_k * current * delta
        return q_cold, q_cold + electrical

    def _rpm_target(self, duty: float) -> float:
        p = self.params
        if self.fan_blocked or duty < p.fan_start_duty:
            return 0.0
        return p.fan_max_rpm * duty

    def _euler(self, h: float, cooler_drive: float, fan_duty: float) -> None:
        p = self.params
        q_cold, q_hot = self.tec_heat_w(cooler_drive)
        sink = p.hot_to_ambient_w_per_k + p.fan_w_per_k * self.fan_rpm / p.fan_max_rpm
        to_cold = p.sensor_to_cold_w_per_k * (self.sensor_c - self.cold_c)
        d_sensor = (
            p.sensor_power_w
            - to_cold
            - p.sensor_to_ambient_w_per_k * (self.sensor_c - self.ambient_c)
        )
        d_cold = to_cold - q_cold - p.cold_to_ambient_w_per_k * (self.cold_c - self.ambient_c)
        d_hot = q_hot + self.extra_hot_w - sink * (self.hot_c - self.ambient_c)
        self.sensor_c += h * d_sensor / p.sensor_capacity_j_per_k
        self.cold_c += h * d_cold / p.cold_capacity_j_per_k
        self.hot_c += h * d_hot / p.hot_capacity_j_per_k
        if self.fan_blocked:
            self.fan_rpm = 0.0  # a jammed rotor stops at once; it does not coast
            return
        target = self._rpm_target(fan_duty)
        tau = p.fan_spin_up_s if target > self.fan_rpm else p.fan_spin_down_s
        self.fan_rpm += (target - self.fan_rpm) * (1.0 - math.exp(-h / tau))
