"""Soak benchmark: the daemon for hours under every fault at once, checked from outside.

    python -m tools.soak --minutes 60 --out build/soak          # what docs/benchmarks.md quotes
    python -m tools.soak --minutes 3 --out build/soak-short     # a quick look

One `vehicle-agent run` on a 720p clip at 30 fps in a loop (the sample clip scaled up; real time),
its fan and cooler on the camera module's microcontroller (the firmware simulator on a real pty),
its fleet link to a local Mosquitto with persistence. Meanwhile:

- the broker is stopped for `--broker-down-s` (30 s) every `--broker-every-min` (5 min);
- the MCU link is unplugged for 10 s every 20 minutes (the simulator's unplug cycle);
- a command (`ping` or `get_status`, in turn) every `--command-every-s` (4 s) while the broker is
  up, each from a fresh operator connection, its reply awaited 10 s;
- a signed model update every 30 minutes (a newer version of the shipped `fast-enhance`),
  watched as `tools.model_update publish --watch` does;
- every 10 s, the daemon's RSS, open file descriptors and threads (from /proc), its outbox on
  disk (file + write-ahead log) and the frame rate (its metrics endpoint).

An independent subscriber (a persistent MQTT session) records every telemetry sequence number,
event and command reply. At the end: telemetry seq lost, commands answered, RSS growth after the
first 10 minutes, file descriptors, outbox size, fps; `report.json`, `report.md` and `soak.png`
(memory, file descriptors, fps over time) in `--out`. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import cv2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_bridge.sim import FirmwareSimulator
from tools import model_update
from tools.fleet import BrokerAccess, FleetClient
from tools.loop import KEY_ID, SHIPPED, LocalMosquitto, LoopError, next_version
from vehicle_agent import compat
from vehicle_agent.compat import wait_for
from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.sim.simulate import sample_video
from vehicle_agent.uplink.outbox import disk_bytes

VEHICLE = "veh-soak"
CAMERA = "front"
SAMPLE_EVERY_S = 10.0
TELEMETRY_INTERVAL_S = 5.0
MCU_UNPLUG = (1200.0, 10.0)
"""(every_s, for_s) of the microcontroller link's unplug cycle."""
UPDATE_EVERY_S = 1800.0
UPDATE_FIRST_S = 150.0
"""The first update, between two broker outages."""
COMMAND_TIMEOUT_S = 10.0
QUIET_BEFORE_OUTAGE_S = COMMAND_TIMEOUT_S + 2.0
"""No command is sent this close to a broker stop (its reply could not come back in time)."""
RSS_GROWTH_LIMIT = 0.05
WARMUP_S = 600.0
"""RSS growth is measured from this far in (model warm-up, caches and buffers settle first)."""


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    outbox_kb: float
    fps: float | None


@dataclass
class Observed:
    """What the independent subscriber saw."""

    telemetry_seq: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    replies: set[str] = field(default_factory=set)
    reconnects: int = 0


def make_clip(path: Path, seconds: float = 20.0, fps: float = 30.0) -> Path:
    """The sample clip scaled to 1280×720 at `fps`, `seconds` long (looped by the daemon)."""
    source = cv2.VideoCapture(str(sample_video()))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (1280, 720))
    try:
        for _ in range(int(seconds * fps)):
            ok, frame = source.read()
            if not ok:
                source.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = source.read()
                if not ok:
                    raise LoopError(f"cannot read {sample_video()}")
            writer.write(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_LINEAR))
    finally:
        writer.release()
        source.release()
    return path


def daemon_config(
    out: Path, broker: LocalMosquitto, *, clip: Path, mcu: str, public: str, metrics: int
) -> Path:
    path = out / "vehicle.toml"
    path.write_text(
        f"""[agent]
vehicle_id = "{VEHICLE}"
camera_id = "{CAMERA}"
state_dir = "{out / "state"}"

[capture]
uri = "file://{clip}"
on_end = "loop"
pacing = "realtime"

[control.fan]
driver = "mcu"

[control.mcu]
port = "{mcu}"

[service]
metrics_port = {metrics}

[update]
device = "bench"
confirm_after_s = 30.0

[update.trusted_keys]
{KEY_ID} = "{public}"

[uplink]
type = "mqtt"
broker = "{broker.url}"
telemetry_interval_s = {TELEMETRY_INTERVAL_S}

[uplink.upload]
good_frame_every_s = 60
"""
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_process(pid: int, outbox: Path) -> tuple[float, int, int, float]:
    """(RSS MiB, open fds, threads, outbox KiB) of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return rss / 1024, fds, threads, disk_bytes(outbox) / 1024


def frames_out(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(r"^vehicle_agent_frames_out_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def subscriber(broker: LocalMosquitto, seen: Observed, stop: asyncio.Event) -> None:
    """A persistent session on telemetry, events and replies, reconnecting across outages."""
    base = f"fleet/{VEHICLE}/{CAMERA}"
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 7200
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                identifier="soak-observer",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=properties,
            ) as client:
                for suffix in ("telemetry", "events", "replies/#"):
                    await client.subscribe(f"{base}/{suffix}", qos=1)
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    topic = str(message.topic)
                    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                        body = json.loads(payload)
                        if topic.endswith("/telemetry"):
                            seen.telemetry_seq.append(int(body["seq"]))
                        elif topic.endswith("/events"):
                            seen.events[str(body["type"])] += 1
                        elif "/replies/" in topic and body.get("id"):
                            seen.replies.add(str(body["id"]))
        except aiomqtt.MqttError:
            seen.reconnects += 1
            await asyncio.sleep(1.0)


@dataclass
class Commands:
    sent: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    failed_to_send: int = 0


async def commander(
    broker: LocalMosquitto, every_s: float, quiet: Any, log: Commands, stop: asyncio.Event
) -> None:
    n = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        if not broker.up or quiet():
            continue
        n += 1
        name = "ping" if n % 2 else "get_status"
        command_id = f"soak-{n}"
        try:
            async with FleetClient(BrokerAccess(broker.url)) as fleet:
                log.sent.append(command_id)
                reply = await fleet.send(
                    VEHICLE, name, command_id=command_id, timeout_s=COMMAND_TIMEOUT_S
                )
                log.answered.add(str(reply.id))
        except TimeoutError:
            pass  # the subscriber may still see the reply; counted at the end
        except aiomqtt.MqttError:
            if log.sent and log.sent[-1] == command_id:
                log.sent.pop()  # never published
            log.failed_to_send += 1


async def soak(
    out: Path,
    *,
    minutes: float,
    broker_every_min: float,
    broker_down_s: float,
    command_every_s: float,
) -> dict[str, Any]:
    duration = minutes * 60.0
    broker = LocalMosquitto(out, persistence=True)
    outages = 0
    broker.start()
    clip = make_clip(out / "clip-720p.mp4")
    private, public = model_update.keygen(out / "keys", KEY_ID)
    key = model_update.load_private_key(private)
    metrics = free_port()
    samples: list[Sample] = []
    seen, commands = Observed(), Commands()
    updates: list[dict[str, Any]] = []
    stop, stop_commands = asyncio.Event(), asyncio.Event()
    start = time.monotonic()
    outage_every = broker_every_min * 60.0

    def quiet() -> bool:
        into = (time.monotonic() - start) % outage_every
        return into > outage_every - QUIET_BEFORE_OUTAGE_S

    with FirmwareSimulator(link=out / "mcu", unplug_cycle=MCU_UNPLUG, seed=0) as mcu:
        config = daemon_config(
            out, broker, clip=clip, mcu=str(mcu.port), public=public, metrics=metrics
        )
        env = {**os.environ, "NOTIFY_SOCKET": "", "PYTHONUNBUFFERED": "1"}
        log = (out / "daemon.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vehicle_agent", "--log-level", "WARNING",
            "run", "--config", str(config), env=env, stdout=log, stderr=log,
        )  # fmt: skip
        tasks = [
            asyncio.create_task(subscriber(broker, seen, stop)),
            asyncio.create_task(commander(broker, command_every_s, quiet, commands, stop_commands)),
        ]
        outbox = out / "state" / "uplink.sqlite3"
        version = read_manifest(SHIPPED).version
        next_sample = next_update = next_outage = 0.0
        next_update, next_outage = UPDATE_FIRST_S, outage_every
        last_frames: tuple[float, float] | None = None
        update_task: asyncio.Task[None] | None = None
        try:
            while (now := time.monotonic() - start) < duration:
                if daemon.returncode is not None:
                    raise LoopError(
                        f"the daemon exited ({daemon.returncode}); see {out / 'daemon.log'}"
                    )
                if now >= next_sample:
                    next_sample += SAMPLE_EVERY_S
                    rss, fds, threads, disk = sample_process(daemon.pid, outbox)
                    count, fps = frames_out(metrics), None
                    if count is not None:
                        if last_frames is not None and now > last_frames[0]:
                            fps = round((count - last_frames[1]) / (now - last_frames[0]), 2)
                        last_frames = (now, count)
                    samples.append(
                        Sample(round(now, 1), round(rss, 1), fds, threads, round(disk, 1), fps)
                    )
                if now >= next_outage:
                    next_outage += outage_every
                    await asyncio.to_thread(broker.stop)
                    outages += 1
                    await asyncio.sleep(broker_down_s)
                    await asyncio.to_thread(broker.start)
                if now >= next_update and (update_task is None or update_task.done()):
                    next_update += UPDATE_EVERY_S
                    version = next_version(version)
                    update_task = asyncio.create_task(_update(broker, key, version, updates))
                await asyncio.sleep(0.5)
            if update_task is not None:
                with contextlib.suppress(Exception):
                    await wait_for(update_task, 150.0)
        finally:
            stop_commands.set()  # the last command is answered before the daemon stops
            with contextlib.suppress(TimeoutError):
                await wait_for(asyncio.shield(tasks[1]), COMMAND_TIMEOUT_S + 5.0)
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    await wait_for(daemon.wait(), 30.0)
                except TimeoutError:
                    daemon.kill()
                    await daemon.wait()
            await asyncio.sleep(3.0)  # the last telemetry and replies reach the subscriber
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.close()
            broker.stop()
    return summarise(
        samples,
        seen=seen,
        commands=commands,
        updates=updates,
        outages=outages,
        duration=duration,
        returncode=daemon.returncode,
    )


async def _update(
    broker: LocalMosquitto, key: Any, version: str, updates: list[dict[str, Any]]
) -> None:
    offer = model_update.make_offer(SHIPPED, key, KEY_ID, version=version)
    label = f"fast-enhance@{version}"
    started = time.monotonic()
    outcome = "error"
    try:
        async with FleetClient(BrokerAccess(broker.url)) as fleet:

            async def send() -> None:
                await model_update.publish(fleet, offer, SHIPPED / "model.onnx", [VEHICLE])

            result = await model_update.watch(
                fleet, [VEHICLE], label=label, timeout_s=120.0, offer=offer,
                out=io.StringIO(), then=send,
            )  # fmt: skip
            outcome = result[VEHICLE]
    except aiomqtt.MqttError as exc:
        outcome = f"link: {exc}"
    updates.append(
        {"model": label, "outcome": outcome, "seconds": round(time.monotonic() - started, 1)}
    )


def summarise(
    samples: list[Sample],
    *,
    seen: Observed,
    commands: Commands,
    updates: list[dict[str, Any]],
    outages: int,
    duration: float,
    returncode: int | None,
) -> dict[str, Any]:
    seqs = sorted(set(seen.telemetry_seq))
    lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else None
    answered = commands.answered | (seen.replies & set(commands.sent))
    unanswered = [c for c in commands.sent if c not in answered]
    warm = [s for s in samples if s.t_s >= min(WARMUP_S, duration / 3)]
    rss_from, rss_to = (warm[0].rss_mb, warm[-1].rss_mb) if warm else (None, None)
    growth = (rss_to - rss_from) / rss_from if rss_from and rss_to else None
    settled = [s for s in samples if s.t_s >= 60.0] or samples
    fds = [s.fds for s in settled]
    # A leak climbs; a fault only dips (the broker's socket or the MCU's pty closed while it is
    # out). So the count after the warm-up must never pass the highest count within it.
    fds_warm = [s.fds for s in settled if s.t_s < warm[0].t_s] if warm else []
    fds_after = [s.fds for s in warm]
    fps = [s.fps for s in samples if s.fps is not None]
    checks = {
        "telemetry_seq_lost_0": lost == 0,
        "every_command_answered": not unanswered and bool(commands.sent),
        "rss_growth_under_5_percent": growth is not None and growth < RSS_GROWTH_LIMIT,
        "fds_flat": bool(fds_warm) and bool(fds_after) and max(fds_after) <= max(fds_warm),
        "updates_swapped": bool(updates) and all(u["outcome"] == "swapped" for u in updates),
        "clean_exit": returncode == 0,
    }
    return {
        "minutes": round(duration / 60, 1),
        "passed": all(checks.values()),
        "checks": checks,
        "telemetry": {
            "received": len(seqs),
            "first": seqs[0] if seqs else None,
            "last": seqs[-1] if seqs else None,
            "lost": lost,
            "duplicates": len(seen.telemetry_seq) - len(seqs),
        },
        "commands": {
            "sent": len(commands.sent),
            "answered": len(commands.sent) - len(unanswered),
            "unanswered": unanswered,
            "not_sent_link_errors": commands.failed_to_send,
        },
        "updates": updates,
        "broker_outages": outages,
        "mcu_unplugs_expected": int(duration // MCU_UNPLUG[0]),
        "events": dict(seen.events),
        "observer_reconnects": seen.reconnects,
        "rss_mb": {
            "from": rss_from,
            "to": rss_to,
            "growth": None if growth is None else round(growth, 4),
            "max": max(s.rss_mb for s in samples) if samples else None,
        },
        "fds": {
            "min": min(fds) if fds else None,
            "max": max(fds) if fds else None,
            "warm_up_max": max(fds_warm) if fds_warm else None,
            "after_warm_up_max": max(fds_after) if fds_after else None,
            "typical": statistics.mode(fds) if fds else None,
        },
        "threads": {
            "min": min((s.threads for s in settled), default=None),
            "max": max((s.threads for s in settled), default=None),
        },
        "outbox_kb_max": max(s.outbox_kb for s in samples) if samples else None,
        "fps": {
            "median": statistics.median(fps) if fps else None,
            "min": min(fps) if fps else None,
        },
        "samples": [asdict(s) for s in samples],
    }


def markdown(report: dict[str, Any]) -> str:
    t, c, r, fd = report["telemetry"], report["commands"], report["rss_mb"], report["fds"]
    telemetry = f"{t['received']} (seq {t['first']}–{t['last']}) / {t['lost']} / {t['duplicates']}"
    updates = ", ".join(
        f"{u['model']} {u['outcome']} ({u['seconds']} s)" for u in report["updates"]
    )
    faults = f"{report['broker_outages']} / {report['mcu_unplugs_expected']}"
    rss = f"{r['from']} → {r['to']}, {100 * (r['growth'] or 0):.2f} %"
    lines = [
        f"# Soak, {report['minutes']} minutes: **{'PASS' if report['passed'] else 'FAIL'}**",
        "",
        "| check | |",
        "|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in report["checks"].items()],
        "",
        "| figure | value |",
        "|---|---|",
        f"| telemetry received / lost / duplicates | {telemetry} |",
        f"| commands sent / answered | {c['sent']} / {c['answered']} |",
        f"| model updates | {updates or '—'} |",
        f"| broker outages / MCU unplugs (cycle) | {faults} |",
        f"| RSS after warm-up → end (MiB), growth | {rss} |",
        f"| file descriptors after 1 min: range (typical) | {fd['min']}–{fd['max']} ({fd['typical']}) |",
        f"| file descriptors, max in warm-up / after it | {fd['warm_up_max']} / {fd['after_warm_up_max']} |",
        f"| threads | {report['threads']['min']}–{report['threads']['max']} |",
        f"| outbox on disk, max (KiB) | {report['outbox_kb_max']} |",
        f"| fps, median (min) | {report['fps']['median']} ({report['fps']['min']}) |",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    samples = report["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True)
    axes[0].plot(minutes, [s["rss_mb"] for s in samples])
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(minutes, [s["fds"] for s in samples], label="fds")
    axes[1].plot(minutes, [s["threads"] for s in samples], label="threads")
    axes[1].legend(loc="lower right")
    axes[1].set_ylabel("count")
    axes[2].plot(minutes, [s["fps"] if s["fps"] is not None else float("nan") for s in samples])
    axes[2].set_ylabel("fps")
    axes[2].set_xlabel("minutes")
    faults = report.get("faults", {})
    outage = (
        f"broker down {faults['broker_down_s']:g} s every {faults['broker_every_min']:g} min"
        if faults
        else "broker outages"
    )
    fig.suptitle(f"vehicle-agent soak, {report['minutes']} min ({outage})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("build/soak"))
    parser.add_argument("--broker-every-min", type=float, default=5.0)
    parser.add_argument("--broker-down-s", type=float, default=30.0)
    parser.add_argument("--command-every-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.broker_every_min <= 0 or args.broker_down_s < 0:
        parser.error(
            "--minutes and --broker-every-min must be positive, --broker-down-s not negative"
        )
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    try:
        report = compat.run(
            soak(
                args.out,
                minutes=args.minutes,
                broker_every_min=args.broker_every_min,
                broker_down_s=args.broker_down_s,
                command_every_s=args.command_every_s,
            )
        )
    except LoopError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    report["faults"] = {
        "broker_every_min": args.broker_every_min,
        "broker_down_s": args.broker_down_s,
        "mcu_unplug_every_s": MCU_UNPLUG[0],
        "mcu_unplug_for_s": MCU_UNPLUG[1],
        "command_every_s": args.command_every_s,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    plot(report, args.out / "soak.png")
    print(markdown(report))
    print(f"report: {args.out / 'report.md'}, plot: {args.out / 'soak.png'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
