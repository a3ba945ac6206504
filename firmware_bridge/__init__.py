"""Firmware bridge: the host side of the camera module microcontroller's serial protocol.

Usable on its own: it never imports `vehicle_agent`. `messages` is the one table of messages,
`protocol` the sans-IO framing, `transport` the byte stream (`SerialTransport`), `state` what
the host knows of the MCU, `bridge` the asyncio client (`McuBridge`), `sim` a simulated
firmware on a pseudo-terminal, `cli` the `python -m firmware_bridge` commands. The protocol is
documented in docs/mcu-protocol.md, whose tables `gen_docs` generates from `messages`.
"""

from firmware_bridge.bridge import McuBridge
from firmware_bridge.errors import (
    McuError,
    McuRefusedError,
    McuTimeoutError,
    McuUnavailableError,
    McuVersionError,
)
from firmware_bridge.messages import PROTOCOL_VERSION, ErrorCode, Fault, State
from firmware_bridge.protocol import ProtocolError
from firmware_bridge.state import BridgeCounters, Identity, Snapshot, Telemetry
from firmware_bridge.transport import SerialTransport, Transport, TransportClosedError

__all__ = [
    "PROTOCOL_VERSION",
    "BridgeCounters",
    "ErrorCode",
    "Fault",
    "Identity",
    "McuBridge",
    "McuError",
    "McuRefusedError",
    "McuTimeoutError",
    "McuUnavailableError",
    "McuVersionError",
    "ProtocolError",
    "SerialTransport",
    "Snapshot",
    "State",
    "Telemetry",
    "Transport",
    "TransportClosedError",
]
