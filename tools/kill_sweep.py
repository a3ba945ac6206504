"""Kill -9 sweep of model updates on a real daemon: every update ends reported, never `timeout`.

    python -m tools.kill_sweep --kills 40 --out build/kill-sweep      # about 10 minutes

A local Mosquitto and one `vehicle-agent run` (the sample clip in a loop, trusting a fresh key;
the vehicle of `tools.loop`). Round after round, a newer version of the shipped `fast-enhance`
is signed and published with `tools.model_update`, and watched as an operator would
(`model_update.watch`, which the sweep does not change). During each round the daemon is killed
with SIGKILL, once or twice, at a point in one of four phases, the phases taken in turn:

    transfer      after the first `model_update_progress` (chunks arriving)
    install       after the last one (assembly, install, health check)
    swap          after `model_update_installed` (the pointer swap, the new chain's first frame)
    confirmation  after `model_swapped`, before `confirm_after_s` (the trial)

and started again at once. A round ends when the watch has its outcome and the vehicle has
settled (`model_update_confirmed` or `model_rolled_back` seen by a second subscriber). The sweep
fails (exit 1) when a round ends `timeout`. `report.json` and `report.md` in `--out` list every
round: its kills (phase, delay), the outcome, which message told it, the seconds it took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from tools import model_update
from tools.fleet import FleetClient, Received
from tools.loop import (
    KEY_ID,
    SHIPPED,
    LoopBroker,
    LoopError,
    local_broker,
    next_version,
    receiver_config,
)
from vehicle_agent import compat
from vehicle_agent.compat import wait_for
from vehicle_agent.enhance.manifest import read_manifest

VEHICLE = "veh-sweep"
CAMERA = "front"
PHASES = ("transfer", "install", "swap", "confirmation")
CONFIRM_AFTER_S = 4.0
CHUNK_BYTES = 8192
"""Small chunks: the fast-enhance file comes in about 55, so the transfer takes a while."""
ROUND_TIMEOUT_S = 120.0
TRIGGER_WAIT_S = 20.0
"""A kill whose trigger has not come by then is skipped (the round went past its phase)."""
SETTLED = {"model_update_confirmed", "model_rolled_back", "model_update_refused"}


@dataclass
class Kill:
    phase: str
    delay_s: float
    killed: bool = False
    """False when the round went past the phase before its trigger came."""


@dataclass
class Round:
    version: str
    kills: list[Kill]
    outcome: str = "timeout"
    told_by: str | None = None
    settled: str | None = None
    seconds: float = 0.0


@dataclass
class SweepReport:
    rounds: list[Round] = field(default_factory=list)

    @property
    def kills(self) -> Counter[str]:
        return Counter(k.phase for r in self.rounds for k in r.kills if k.killed)

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.rounds)

    @property
    def passed(self) -> bool:
        return all(r.outcome != "timeout" and r.settled is not None for r in self.rounds)

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "kills": sum(self.kills.values()),
            "kills_by_phase": dict(self.kills),
            "outcomes": dict(self.outcomes),
            "rounds": [asdict(r) for r in self.rounds],
        }

    def markdown(self) -> str:
        lines = [
            "# Kill sweep of model updates",
            "",
            f"{sum(self.kills.values())} kills in {len(self.rounds)} updates; by phase: "
            + ", ".join(f"{p} {self.kills[p]}" for p in PHASES)
            + "; outcomes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
            + f". **{'PASS' if self.passed else 'FAIL'}**",
            "",
            "| version | kills (phase +delay s) | outcome | told by | settled | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rounds:
            kills = ", ".join(f"{k.phase} +{k.delay_s:.2f}" for k in r.kills if k.killed) or "—"
            lines.append(
                f"| {r.version} | {kills} | {r.outcome} | {r.told_by or '—'} | "
                f"{r.settled or '—'} | {r.seconds:.1f} |"
            )
        return "\n".join(lines) + "\n"


class Daemon:
    """`vehicle-agent run` as a child process, killed with SIGKILL and started again."""

    def __init__(self, config: Path, env: dict[str, str], log: IO[bytes]) -> None:
        self.config, self.env, self.log = config, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        self.log.write(f"\n--- start {self.starts} ---\n".encode())
        self.log.flush()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vehicle_agent",
            "--log-level",
            "INFO",
            "run",
            "--config",
            str(self.config),
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )

    async def kill(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await wait_for(process.wait(), 20.0)
        except TimeoutError:
            await self.kill()


class Spy:
    """A second subscriber: every event of the camera, with the time it arrived."""

    def __init__(self, queue: asyncio.Queue[Received]) -> None:
        self.queue = queue
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            message = await self.queue.get()
            if not message.topic.endswith("/events"):
                continue
            try:
                event = json.loads(message.payload)
                kind, data = str(event["type"]), dict(event.get("data") or {})
            except (ValueError, KeyError, TypeError):
                continue
            self.events.append((time.monotonic(), kind, data))
            self.changed.set()

    async def wait(self, since: float, match: Any, timeout_s: float) -> bool:
        """Wait until an event after `since` matches `match(kind, data)`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(t >= since and match(k, d) for t, k, d in self.events):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self.changed.wait(), remaining)


def trigger(phase: str, label: str) -> Any:
    """The event after which a kill in `phase` is aimed."""

    def match(kind: str, data: dict[str, Any]) -> bool:
        if data.get("model") != label:
            return False
        if phase == "transfer":
            return kind == "model_update_progress" and float(data.get("percent", 0)) < 100
        if phase == "install":
            if kind == "model_update_offered":  # resumed after a kill with every chunk in
                return int(data.get("have_bytes", 0)) >= int(data.get("bytes", 1))
            return kind == "model_update_progress" and float(data.get("percent", 0)) >= 100
        if phase == "swap":
            return kind == "model_update_installed"
        return kind == "model_swapped"

    return match


def delay_for(phase: str, rng: random.Random) -> float:
    return {
        "transfer": rng.uniform(0.0, 0.3),
        "install": rng.uniform(0.0, 0.6),
        "swap": rng.uniform(0.0, 0.15),
        "confirmation": rng.uniform(0.2, CONFIRM_AFTER_S * 0.8),
    }[phase]


async def _killer(daemon: Daemon, spy: Spy, label: str, kills: list[Kill], since: float) -> None:
    for kill in kills:
        if not await spy.wait(since, trigger(kill.phase, label), TRIGGER_WAIT_S):
            continue  # the phase passed before its trigger came (or never came)
        await asyncio.sleep(kill.delay_s)
        await daemon.kill()
        kill.killed = True
        since = time.monotonic()
        await daemon.start()


async def sweep(
    broker: LoopBroker, out: Path, *, kills: int, seed: int = 0, vehicle: str = VEHICLE
) -> SweepReport:
    rng = random.Random(seed)  # noqa: S311 - kill timing, not secrets
    private, public = model_update.keygen(out / "keys", KEY_ID)
    key = model_update.load_private_key(private)
    config = receiver_config(
        out / "vehicle.toml",
        broker,
        out / "state",
        vehicle,
        public,
        update={"confirm_after_s": CONFIRM_AFTER_S, "max_crashes": 3},
    )
    env = {**os.environ, **broker.env(), "NOTIFY_SOCKET": "", "PYTHONUNBUFFERED": "1"}
    report = SweepReport()
    version = read_manifest(SHIPPED).version
    made = 0
    phase_at = 0
    with (out / "daemon.log").open("ab") as log:
        daemon = Daemon(config, env, log)
        async with FleetClient(broker.access()) as fleet, fleet.listen() as queue:
            await fleet.subscribe(fleet.camera_topic(vehicle, CAMERA, "events"))
            spy = Spy(queue)
            spying = asyncio.create_task(spy.run())
            await daemon.start()
            try:
                if not await spy.wait(0.0, lambda k, _: k == "pipeline_started", 60.0):
                    raise LoopError(f"the daemon did not start; see {out / 'daemon.log'}")
                while made < kills:
                    version = next_version(version)
                    label = f"fast-enhance@{version}"
                    count = 1 if rng.random() < 0.5 else 2
                    phases = sorted(
                        {PHASES[(phase_at + i) % len(PHASES)] for i in range(count)},
                        key=PHASES.index,
                    )
                    phase_at += count
                    plan = [Kill(p, round(delay_for(p, rng), 3)) for p in phases]
                    result = await _round(
                        fleet, daemon, spy, key, vehicle=vehicle, version=version, plan=plan
                    )
                    report.rounds.append(result)
                    made += sum(k.killed for k in plan)
                    print(
                        f"{label}: kills {[k.phase for k in plan if k.killed]} → "
                        f"{result.outcome} ({result.told_by}), settled {result.settled}, "
                        f"{result.seconds:.1f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                spying.cancel()
                await daemon.stop()
    return report


async def _round(
    fleet: FleetClient,
    daemon: Daemon,
    spy: Spy,
    key: Any,
    *,
    vehicle: str,
    version: str,
    plan: list[Kill],
) -> Round:
    offer = model_update.make_offer(SHIPPED, key, KEY_ID, version=version, chunk_size=CHUNK_BYTES)
    label = f"fast-enhance@{version}"
    result = Round(version, plan)
    lines = io.StringIO()
    since = time.monotonic()

    async def send() -> None:
        await model_update.publish(fleet, offer, SHIPPED / "model.onnx", [vehicle])

    killer = asyncio.create_task(_killer(daemon, spy, label, plan, since))
    try:
        outcomes = await model_update.watch(
            fleet,
            [vehicle],
            label=label,
            timeout_s=ROUND_TIMEOUT_S,
            offer=offer,
            out=lines,
            then=send,
        )
        if outcomes[vehicle] == "swapped":
            await killer  # a kill in the trial may be still to come
    finally:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    result.outcome = outcomes[vehicle]
    told = [line.split(" ", 2) for line in lines.getvalue().splitlines()]
    if told and len(told[-1]) == 3 and result.outcome != "timeout":
        _, kind, data = told[-1]
        reason = json.loads(data).get("reason") if kind == "model_swapped" else None
        result.told_by = f"{kind} ({reason})" if reason else kind

    def settled(kind: str, data: dict[str, Any]) -> bool:
        return kind in SETTLED and data.get("model") == label

    if await spy.wait(since, settled, ROUND_TIMEOUT_S):
        last = [k for t, k, d in spy.events if t >= since and settled(k, d)]
        result.settled = last[-1]
    result.seconds = round(time.monotonic() - since, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.kill_sweep", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kills", type=int, default=40, help="kills in all (at least)")
    parser.add_argument("--out", type=Path, default=Path("build/kill-sweep"), help="work folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, local_broker(Path(tmp)) as broker:
            report = compat.run(sweep(broker, args.out, kills=args.kills, seed=args.seed))
    except LoopError as exc:
        print(f"kill_sweep: {exc}", file=sys.stderr)
        return 1
    (args.out / "report.json").write_text(json.dumps(report.as_json(), indent=2) + "\n")
    (args.out / "report.md").write_text(report.markdown())
    print(report.markdown())
    print(f"report: {args.out / 'report.md'}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
