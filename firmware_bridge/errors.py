"""Firmware bridge: what a request to the MCU can fail with, each error carrying its context.

Bad bytes are not an error a caller sees: `protocol.ProtocolError` is counted and logged by the
bridge, and the frame is simply lost (the request it answered times out and is retried).
"""

from __future__ import annotations


class McuError(Exception):
    """Base of the errors a bridge call raises; `port` names the serial port."""

    def __init__(self, message: str, port: str) -> None:
        self.port = port
        super().__init__(f"{port}: {message}")


class McuUnavailableError(McuError):
    """The port cannot be opened (absent, unplugged, busy, no permission); `reason` says why."""

    def __init__(self, port: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"port unavailable: {reason}", port)


class McuTimeoutError(McuError, TimeoutError):
    """No valid reply to `request` within `attempts` tries of `timeout_s` each."""

    def __init__(self, port: str, request: str, attempts: int, timeout_s: float) -> None:
        self.request = request
        self.attempts = attempts
        self.timeout_s = timeout_s
        super().__init__(
            f"no reply to {request} from the microcontroller "
            f"({attempts} attempt(s) of {timeout_s:g} s)",
            port,
        )


class McuRefusedError(McuError):
    """The MCU answered `nak`: `request` was refused with `code` (an `ErrorCode`) and `detail`."""

    def __init__(self, port: str, request: str, code: int, detail: int, explanation: str) -> None:
        self.request = request
        self.code = code
        self.detail = detail
        super().__init__(f"microcontroller refused {request}: {explanation}", port)


class McuVersionError(McuError):
    """The firmware speaks another protocol version; nothing is sent to it but `identify`."""

    def __init__(
        self,
        port: str,
        host_protocol: int,
        mcu_protocol: int,
        firmware: str | None = None,
        serial_number: str | None = None,
    ) -> None:
        self.host_protocol = host_protocol
        self.mcu_protocol = mcu_protocol
        self.firmware = firmware
        self.serial_number = serial_number
        module = ""
        if serial_number or firmware:
            module = f" (module {serial_number or '?'}, firmware {firmware or '?'})"
        super().__init__(
            f"protocol mismatch: this host speaks protocol {host_protocol}, the microcontroller"
            f"{module} speaks protocol {mcu_protocol}; update the firmware or the host",
            port,
        )
