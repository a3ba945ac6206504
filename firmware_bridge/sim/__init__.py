"""Firmware bridge: the camera module's firmware, simulated on the far end of a pseudo-terminal.

Three layers, one module each, so each is tested on its own:
- `plant.Plant`: the physics the MCU sits in (image sensor, thermoelectric cooler, heat sink, fan),
  a lumped first-order thermal model stepped in model seconds; pure.
- `firmware.Firmware`: the MCU's logic as `docs/mcu-protocol.md` requires it (sessions, `max_duration`
  fallbacks, over-temperature protection, periodic reports), bytes in, bytes out, on an
  injected clock; pure, so tests step it without a pty or a thread.
- `pty.FirmwareSimulator`: a `Firmware` on the master side of a real pty pair, run by one thread,
  with unplug/replug. The host opens the slave side (`port`) like any serial port.

The firmware speaks through `protocol.py`, like the host, so both ends share one table.
Fault switches (`FaultSwitches`) are read live, so tests and the `sim` command flip them while
it runs. A thread rather than an asyncio task: the simulator must keep time while the host's
event loop is busy or blocked, as a real MCU does, and it must serve a host in another process.
"""

from firmware_bridge.sim.firmware import FaultSwitches, Firmware, FirmwareConfig, FirmwareState
from firmware_bridge.sim.plant import KELVIN, Plant, PlantParams
from firmware_bridge.sim.pty import FirmwareSimulator

__all__ = [
    "KELVIN",
    "FaultSwitches",
    "Firmware",
    "FirmwareConfig",
    "FirmwareSimulator",
    "FirmwareState",
    "Plant",
    "PlantParams",
]
