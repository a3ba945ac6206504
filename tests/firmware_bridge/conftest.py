"""Firmware bridge fixtures: a simulated module on a real pty, and a bridge with short timeouts
(defined once in tests/mcu.py, shared with the control tests)."""

from tests.mcu import FAST_BRIDGE, FAST_FIRMWARE, mcu, no_simulator_left_running, sim

__all__ = ["FAST_BRIDGE", "FAST_FIRMWARE", "mcu", "no_simulator_left_running", "sim"]
