"""Act stage: which Jetson 40-pin header pins carry hardware PWM, and on which controller (data, no I/O).

`/sys/class/pwm/pwmchipN` numbers are given out at boot in probe order and differ between
boards and L4T releases, so a pin is mapped to its PWM controller's device name (the
`/sys/devices/platform/<name>` the chip links to) and a channel, and the chip number is found
at start (`SysfsPwmFan.find_chip`).

Source: NVIDIA's Jetson.GPIO library (`lib/python/Jetson/GPIO/gpio_pin_data.py`, the
`*_PIN_DEFS` tables' "PWM chip sysfs directory" and "PWM ID" columns for JETSON_ORIN_NX,
JETSON_ORIN_NANO and JETSON_ORIN). Not verified on hardware by this project. Every pin must be
muxed to its PWM function first (`sudo /opt/nvidia/jetson-io/jetson-io.py`, see
docs/service.md), or the controller drives nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

JetsonBoard = Literal["orin-nano", "orin-nx", "agx-orin"]

_ORIN_NX_NANO: Mapping[int, tuple[str, int]] = {
    15: ("3280000.pwm", 0),  # GPIO12 / PWM1
    32: ("32e0000.pwm", 0),  # GPIO07 / PWM7
    33: ("32c0000.pwm", 0),  # GPIO13 / PWM5
}

JETSON_PWM_PINS: Mapping[str, Mapping[int, tuple[str, int]]] = {
    # Orin Nano and Orin NX modules (p3767) on the p3768 dev kit or p3509 carrier.
    "orin-nano": _ORIN_NX_NANO,
    "orin-nx": _ORIN_NX_NANO,
    # AGX Orin (p3701) on the p3737 dev kit carrier.
    "agx-orin": {
        15: ("3280000.pwm", 0),  # GPIO27 / PWM1
        18: ("32c0000.pwm", 0),  # GPIO35 / PWM5
    },
}
"""Board → header pin (BOARD numbering) → (PWM controller device name, channel)."""
