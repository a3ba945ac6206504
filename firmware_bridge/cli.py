"""Firmware bridge: the command line: run the simulated module, read one snapshot, drive the outputs.

python -m firmware_bridge sim [--ambient C] [--faults LIST] [--link PATH]
python -m firmware_bridge status --port PORT
python -m firmware_bridge drive --port PORT [--fan DUTY] [--cooler C] [--for S]

Errors are one line on stderr and exit status 1; usage errors exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from firmware_bridge import compat
from firmware_bridge.bridge import McuBridge
from firmware_bridge.errors import McuError
from firmware_bridge.messages import MAX_DURATION_MS, PROTOCOL_VERSION
from firmware_bridge.sim import FaultSwitches, FirmwareConfig, FirmwareSimulator

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

PROG = "firmware_bridge"

FAULTS_HELP = (
    "comma-separated faults to inject: garbage[=P], corrupt[=P], drop[=P] (probabilities, "
    "default 0.1), silence, stuck-sensor, overtemp, sensor-open, fan-stall, and unplug=EVERY:FOR "
    "(unplug every EVERY s for FOR s). Example: --faults garbage=0.05,drop=0.2,unplug=20:3"
)
CONSOLE_HELP = (
    """commands: unplug | replug | fault NAME[=VALUE] | clear NAME | ambient C | state | quit"""
)


def parse_faults(text: str) -> tuple[FaultSwitches, tuple[float, float] | None]:
    """`--faults` → switches and the unplug cycle; ValueError names the bad item."""
    faults = FaultSwitches()
    cycle: tuple[float, float] | None = None
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if name == "unplug":
            every, colon, down = value.partition(":")
            try:
                cycle = (float(every), float(down))
            except ValueError:
                cycle = None
            if not colon or cycle is None or not 0 < cycle[1] < cycle[0]:
                raise ValueError(f"unplug={value}: expected EVERY:FOR seconds with 0 < FOR < EVERY")
            continue
        faults.set(name, value if sep else None)
    return faults, cycle


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The camera module microcontroller's link, and its simulator."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser(
        "sim",
        help="run the simulated module on a pseudo-terminal and print the port to connect to",
        description="Runs until interrupted. The first line of stdout is the port. On a "
        "terminal, stdin takes commands: " + CONSOLE_HELP,
    )
    sim.add_argument("--ambient", type=float, default=25.0, metavar="C", help="ambient °C")
    sim.add_argument("--faults", default="", metavar="LIST", help=FAULTS_HELP)
    sim.add_argument(
        "--link",
        metavar="PATH",
        help="a symlink to the pty that survives unplug/replug (like /dev/serial/by-id/…)",
    )
    sim.add_argument("--serial", default="SIM-00000001", help="serial number it reports")
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="run the thermal model X times faster than real time (the protocol keeps real time)",
    )
    sim.add_argument("--telemetry-period", type=float, default=0.2, metavar="S")
    sim.add_argument("--host-timeout", type=float, default=2.0, metavar="S")
    sim.add_argument("--fan-safe-duty", type=float, default=0.3, metavar="DUTY")
    sim.add_argument(
        "--protocol",
        type=int,
        default=PROTOCOL_VERSION,
        help="protocol version it speaks (another value simulates a mismatched firmware)",
    )
    sim.add_argument("--seed", type=int, help="seed for the noise and the fault dice")

    status = commands.add_parser(
        "status", help="print one telemetry snapshot as JSON (exit 1 if absent or silent)"
    )
    _port_arguments(status)

    drive = commands.add_parser(
        "drive",
        help="drive the fan and/or cooler for a while, printing one JSON line per interval",
        description="Refreshes the outputs every interval (they are sent with a max_duration of "
        "three intervals) and puts them back to their safe state at the end.",
    )
    _port_arguments(drive)
    drive.add_argument("--fan", type=float, metavar="DUTY", help="fan duty, 0–1")
    drive.add_argument("--cooler", type=float, metavar="C", help="cooler setpoint, °C")
    drive.add_argument("--for", dest="duration", type=float, default=30.0, metavar="S")
    drive.add_argument("--every", type=float, default=1.0, metavar="S")
    return parser


def _port_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    parser.add_argument("--baudrate", type=int, default=115_200)
    parser.add_argument(
        "--timeout", type=float, default=3.0, metavar="S", help="give up after S seconds"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        # A one-shot status prints its one error itself; the others also log what recovers.
        level=logging.DEBUG
        if args.verbose
        else logging.ERROR
        if args.command == "status"
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "sim":
            return _sim(args)
        if args.command == "status":
            return compat.run(_status(args))
        return compat.run(_drive(args))
    except McuError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- sim


def _sim(args: argparse.Namespace) -> int:
    faults, cycle = parse_faults(args.faults)
    config = FirmwareConfig(
        serial_number=args.serial,
        protocol=args.protocol,
        telemetry_period_s=args.telemetry_period,
        host_timeout_s=args.host_timeout,
        fan_safe_duty=args.fan_safe_duty,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FirmwareSimulator(
        ambient_c=args.ambient,
        config=config,
        faults=faults,
        link=args.link,
        time_scale=args.time_scale,
        seed=args.seed,
        unplug_cycle=cycle,
    ) as sim:
        print(sim.port, flush=True)
        state = sim.state()
        print(
            f"{PROG} sim: module {config.serial_number} (protocol {config.protocol}) on "
            f"{sim.pts}; sensor {state.sensor_c:.1f} °C, hot side {state.hot_c:.1f} °C, "
            f"ambient {args.ambient:g} °C; faults: {', '.join(faults.active()) or 'none'}"
            f"{f'; unplug every {cycle[0]:g} s for {cycle[1]:g} s' if cycle else ''}. "
            "Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        if sys.stdin.isatty():
            print(CONSOLE_HELP, file=sys.stderr, flush=True)
            threading.Thread(
                target=_console, args=(sim, stop), name="sim-console", daemon=True
            ).start()
        shown = sim.pts
        while not stop.wait(0.2):
            if sim.link is None and sim.pts is not None and sim.pts != shown:
                shown = sim.pts
                print(sim.pts, flush=True)  # replugged under a new name
    return 0


def _console(sim: FirmwareSimulator, stop: threading.Event) -> None:
    """Bench commands from the terminal; one line each, answered on stderr."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            reply = _console_command(sim, words)
        except (ValueError, IndexError) as exc:
            reply = f"error: {exc} ({CONSOLE_HELP})"
        if reply == "quit":
            stop.set()
            return
        print(reply, file=sys.stderr, flush=True)
    # stdin closed: keep running until a signal


def _console_command(sim: FirmwareSimulator, words: list[str]) -> str:
    command = words[0]
    if command in {"quit", "exit"}:
        return "quit"
    if command == "unplug":
        sim.unplug()
        return "unplugged"
    if command == "replug":
        sim.replug()
        return f"replugged on {sim.pts}"
    if command == "fault":
        name, sep, value = words[1].partition("=")
        sim.faults.set(name, value if sep else None)
        return f"faults: {', '.join(sim.faults.active()) or 'none'}"
    if command == "clear":
        sim.faults.clear(words[1])
        return f"faults: {', '.join(sim.faults.active()) or 'none'}"
    if command == "ambient":
        sim.set_ambient(float(words[1]))
        return f"ambient {float(words[1]):g} °C"
    if command == "state":
        return json.dumps(_state_dict(sim))
    raise ValueError(f"unknown command {command!r}")


def _state_dict(sim: FirmwareSimulator) -> dict[str, Any]:
    s = sim.state()
    return {
        "session": s.session,
        "sensor_c": round(s.sensor_c, 2),
        "cold_side_c": round(s.cold_c, 2),
        "hot_side_c": round(s.hot_c, 2),
        "fan_duty": s.fan_duty,
        "fan_rpm": round(s.fan_rpm),
        "cooler_drive": round(s.cooler_drive, 3),
        "faults": [f.name for f in type(s.faults) if f in s.faults],
    }


# -- status and drive


def _bridge(args: argparse.Namespace) -> McuBridge:
    return McuBridge(args.port, baudrate=args.baudrate)


async def _status(args: argparse.Namespace) -> int:
    async with _bridge(args) as mcu:
        identity = await mcu.wait_ready(args.timeout, retry=False)
        telemetry = await mcu.get_telemetry()
        snapshot = mcu.latest()
        report = {
            "port": args.port,
            "firmware": {
                "protocol": identity.protocol,
                "version": identity.firmware_version,
                "serial_number": identity.serial_number,
                "telemetry_period_s": identity.telemetry_period_s,
                "host_timeout_s": identity.host_timeout_s,
                "fan_safe_duty": identity.fan_safe_duty,
                "sensor_limit_c": identity.sensor_limit_c,
                "hot_limit_c": identity.hot_limit_c,
            },
            "telemetry": telemetry.as_dict(),
            "stale": snapshot.stale if snapshot else True,
            "round_trip_ms": None if mcu.last_rtt_s is None else round(mcu.last_rtt_s * 1000, 3),
            "counters": mcu.counters.as_dict(),
        }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


async def _drive(args: argparse.Namespace) -> int:
    if args.fan is None and args.cooler is None:
        raise ValueError("give --fan DUTY and/or --cooler C")
    if not 0.05 <= args.every <= MAX_DURATION_MS / 3000:
        raise ValueError(f"--every must be within [0.05, {MAX_DURATION_MS / 3000:g}] s")
    hold_s = 3 * args.every
    async with _bridge(args) as mcu:
        await mcu.wait_ready(args.timeout, retry=False)
        await mcu.get_telemetry()  # so the first line is printed at once
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < args.duration:
                if args.fan is not None:
                    await mcu.set_fan(args.fan, hold_s)
                if args.cooler is not None:
                    await mcu.set_cooler(
                        enabled=True, setpoint_c=args.cooler, max_duration_s=hold_s
                    )
                snapshot = mcu.latest()
                if snapshot is not None:
                    t = snapshot.telemetry
                    line = {
                        "t_s": round(elapsed, 2),
                        "sensor_c": t.sensor_c,
                        "cold_side_c": t.cold_side_c,
                        "hot_side_c": t.hot_side_c,
                        "cooler_drive": t.cooler_drive,
                        "fan_duty": t.fan_duty,
                        "fan_rpm": t.fan_rpm,
                        "faults": t.as_dict()["faults"],
                        "stale": snapshot.stale,
                    }
                    print(json.dumps(line, ensure_ascii=False), flush=True)
                await asyncio.sleep(args.every)
        finally:
            if mcu.ready:
                await mcu.safe_state()
        print(json.dumps({"counters": mcu.counters.as_dict()}), flush=True)
    return 0
