"""Cloud side: the fleet learning loop end to end (seed 000's idea), on one machine.

    python -m tools.loop --out build/loop                        # about a minute
    python -m tools.loop --out build/loop --scenario broken-challenger
    python -m tools.loop --out build/loop --scenario canary-rollback

1. A local Mosquitto is started (`run_loop` also takes any `LoopBroker`: a TLS broker with the
   operator's and the vehicles' accounts, as the tests use).
2. Vehicle A (`vehicle-agent simulate`, the bundled street clip, lens drops injected so frames
   before and after a cleaning are uploaded too) uploads frames over the fleet link, and two
   collector instances (`tools.fleet collect --share loop`: an MQTT 5 shared subscription)
   build one data set from them, each upload stored once.
3. The held-out suite (`tools.suite`, `--suite`, kept across runs) takes the data set's held-out
   uploads (every third 5 s segment of a vehicle's footage) as a new version.
4. A short GAN fine-tuning run (pairs made by degrading good frames, the shipped recipe of
   `tools.gan`) starts from the fleet's active `fast-enhance` and mixes the fleet's good frames
   outside the held-out share with the base training set (replay, half the samples each), so the
   model does not forget what it could do. It is exported to ONNX with a manifest that records
   which vehicles and time range the data came from.
5. Champion against challenger on the suite: the footage bank's held-out scenes × held-out
   renderers (low light, fog, lens drops, motion blur + noise, rain streaks, clean frames) and
   the fleet's held-out uploads under the same renderers. The new model goes on only if it
   improves a condition it is trained for (low light or fog, on either part), and no condition's
   mean PSNR nor its worst frame falls by more than `--margin-db` (0.2). Otherwise nothing is
   signed or published: the report says which condition failed, and the command exits 1.
6. The model is signed with a fresh key and rolled out in stages (`tools.rollout`) to the
   receiving vehicles (`vehicle-agent run` on the same footage, trusting that key): the canary
   B first, then the wave (C); each verifies, health-checks and swaps it in, and is judged
   healthy after 5 s on it. One failure aborts: the offer is withdrawn and whoever took it rolls
   back, and the next wave is never offered (exit 3).
7. `report.json` and `report.md` in `--out`: versions before and after, the data set and the
   collectors' shares, the suite's version, the training losses, the gate's figures, the
   rollout's verdicts, and every decision in order.

Scenarios (`--scenario`): `fine-tune` (the above); `broken-challenger` (labels corrupted: every
pair's sides swapped, so the challenger learns to degrade at the full learning rate, and the
gate must hold it back); `canary-rollback` (no fine-tuning: the champion's own weights go out
under the next version, so the gate lets it through without an improvement and the run always
reaches the canary, whose health check is configured to fail, `BROKEN_CANARY`: it rolls back and
the rollout aborts before the wave). With the default budget the fine-tuning is small and the
gate is what keeps a worse model off the fleet. Everything runs on this machine; nothing is
downloaded. Exit status: 0 rolled out to every vehicle, 1 held back by the gate, 2 a step
failed, 3 the rollout aborted or paused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import cv2

from tools import model_update
from tools.dataset import describe, load_images, paired_data_line, read_dataset
from tools.fleet import BrokerAccess, FleetClient, collect
from tools.rollout import Policy, Rollout, RolloutError
from tools.rollout import report as rollout_report
from tools.rollout import run as rollout_run
from tools.suite import (
    FLEET,
    GATE_MARGIN_DB,
    PSNR_CAP_DB,
    GateDecision,
    Suite,
    SuiteError,
    decide,
    is_held_out,
    score,
)
from vehicle_agent import compat
from vehicle_agent.compat import wait_for
from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.secrets import env_name
from vehicle_agent.sim.simulate import sample_video
from vehicle_agent.update.manifest import SignedUpdate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "fast-enhance"
KEY_ID = "loop"
VEHICLES = ("veh-a", "veh-b", "veh-c")
"""Vehicle A uploads; B is the rollout's canary, the rest its wave."""


class LoopError(RuntimeError):
    """A step of the loop failed; the text says which and why."""


@dataclass(frozen=True)
class Account:
    username: str
    password: str


@dataclass(frozen=True)
class LoopBroker:
    """Where the loop's vehicles and cloud tools meet. Accounts are optional (an anonymous local
    broker); with them, the vehicles' passwords reach the daemons as credentials."""

    url: str
    ca_file: Path | None = None
    operator: Account | None = None
    vehicles: dict[str, Account] = field(default_factory=dict)

    def access(self) -> BrokerAccess:
        op = self.operator
        return BrokerAccess(
            self.url, self.ca_file, op.username if op else None, op.password if op else None
        )

    def uplink_toml(self, vehicle: str) -> str:
        lines = ['type = "mqtt"', f'broker = "{self.url}"']
        if self.ca_file is not None:
            lines.append(f'ca_file = "{self.ca_file}"')
        account = self.vehicles.get(vehicle)
        if account is not None:
            lines += [f'username = "{account.username}"', f'password_credential = "mqtt-{vehicle}"']
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        return {env_name(f"mqtt-{v}"): a.password for v, a in self.vehicles.items()}


class LocalMosquitto:
    """A Mosquitto on a free loopback port, anonymous, that can be stopped and started again on
    the same port. With `persistence`, sessions and their queued messages are saved in `work`
    and survive a restart (tools.soak); without, nothing is kept (as tools/demo.sh)."""

    def __init__(self, work: Path, *, persistence: bool = False) -> None:
        self.mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.mosquitto).exists():
            raise LoopError("mosquitto not found; run `bash tools/setup.sh` (Debian package)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.work = work
        self.conf = work / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {work}/",
                "autosave_interval 10",
                # Run as root, mosquitto drops to its own user and then cannot save the
                # sessions in `work` (each restart would lose a vehicle's queued commands).
                f"user {getpass.getuser()}",
            ]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        with (self.work / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.mosquitto, "-c", str(self.conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10.0
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                break
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise LoopError(f"mosquitto did not start; see {self.work / 'mosquitto.log'}")
            time.sleep(0.05)
        time.sleep(0.2)  # it may ignore a signal sent right after start-up (field notes)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def local_broker(work: Path) -> Iterator[LoopBroker]:
    """A Mosquitto on a free loopback port, anonymous, no persistence (as tools/demo.sh)."""
    broker = LocalMosquitto(work)
    broker.start()
    try:
        yield LoopBroker(broker.url)
    finally:
        broker.stop()


# -- the vehicles ---------------------------------------------------------------------------------


def vehicle_a_config(path: Path, broker: LoopBroker, state: Path, vehicle: str) -> Path:
    """Vehicle A uploads a good frame every half second (and the frames around a cleaning)."""
    path.write_text(
        f"""[agent]
vehicle_id = "{vehicle}"
state_dir = "{state}"

[uplink]
{broker.uplink_toml(vehicle)}
telemetry_interval_s = 5

[uplink.upload]
good_frame_every_s = 0.5
max_frames_per_hour = 3600
around_cleaning_frames = 2
"""
    )
    return path


BROKEN_CANARY = {"golden_width": 1280, "max_latency_ms": 1.0}
"""The canary's [update] settings in the canary-rollback scenario: its health check runs the
new model on full-width golden frames and allows 1 ms a frame, so the swap fails on a 2-core
machine and the vehicle rolls back to the model it had."""


def receiver_config(
    path: Path,
    broker: LoopBroker,
    state: Path,
    vehicle: str,
    public_key: str,
    *,
    update: dict[str, Any] | None = None,
) -> Path:
    """A receiving vehicle replays the same footage in a loop and trusts the loop's signing key;
    `update` adds or overrides `[update]` settings."""
    settings = {"device": "bench", "confirm_after_s": 2.0, **(update or {})}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path.write_text(
        f"""[agent]
vehicle_id = "{vehicle}"
state_dir = "{state}"

[capture]
uri = "{sample_video()}"
on_end = "loop"

[service]
metrics_port = 0

[update]
{lines}

[update.trusted_keys]
{KEY_ID} = "{public_key}"

[uplink]
{broker.uplink_toml(vehicle)}
telemetry_interval_s = 5

[uplink.upload]
good_frame_every_s = 0
"""
    )
    return path


def _agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "vehicle_agent", "--log-level", "WARNING", *args]


# -- training -------------------------------------------------------------------------------------


def next_version(version: str) -> str:
    """1.0.0 → 1.0.1 (pre-release and build tags dropped)."""
    parts = [int(p) for p in re.split(r"[-+]", version, maxsplit=1)[0].split(".")]
    parts[-1] += 1
    return ".".join(str(p) for p in parts)


@dataclass
class Trained:
    model_dir: Path
    version: str
    seconds: float
    losses: dict[str, float]
    max_abs_diff: float


REPLAY_SHARE = 0.5
"""Share of the fine-tuning samples drawn from the base training set (the rest: the fleet's)."""
FINE_TUNE_LR = 0.25
"""The fine-tuning generator's learning rate, as a share of the shipped recipe's."""


def _identity_gate(model_file: Path | None) -> float | None:
    """The dead-zone gate the model's manifest records (`training.identity_gate`), if any."""
    if model_file is None:
        return None
    value = getattr(read_manifest(model_file.parent).training, "identity_gate", None)
    return float(value) if isinstance(value, int | float) else None


def train_model(
    dataset: Path,
    out: Path,
    *,
    steps: int,
    crop: int,
    seed: int,
    version: str,
    progress: bool,
    init_from: Path | None = None,
    replay: int = 24,
    held_out: set[str] | None = None,
    lr_scale: float = FINE_TUNE_LR,
    corrupt: bool = False,
) -> Trained:
    """Fine-tune fast-enhance from `init_from` (the active model.onnx; None: fresh weights) on
    the data set's good frames mixed with `replay` frames of the base training set (paired by
    degradation), export it and write its manifest with the data's provenance. Frames whose
    upload id or sha256 is in `held_out` (the gate's suite), or that `suite.is_held_out` sets
    aside, are never trained on. `lr_scale`: the generator's learning rate as a share of the
    shipped recipe's (when fine-tuning). `corrupt`: train on corrupted labels (each pair's sides
    swapped, so the model learns to degrade: the loop's broken-challenger scenario, a model the
    gate must stop)."""
    import torch  # noqa: PLC0415 - the train extra; imported only when training

    from tools.gan import data  # noqa: PLC0415
    from tools.gan.export import (  # noqa: PLC0415
        MODEL_FILE,
        OPSET,
        ManifestInfo,
        check_onnx,
        export_onnx,
        write_manifest,
    )
    from tools.gan.ship import FAST, calibrate  # noqa: PLC0415
    from tools.gan.train import train  # noqa: PLC0415

    entries = read_dataset(dataset)
    held_out = held_out or set()
    good = [
        e
        for e in entries
        if e.label == "good"
        and not is_held_out(e)
        and e.upload_id not in held_out
        and e.sha256 not in held_out
    ]
    if len(good) < 2:
        raise LoopError(
            f"{dataset}: {len(good)} good frames outside the held-out share; the loop needs 2"
        )
    images = load_images(dataset, good)
    base = data.training_images(limit=replay) if replay > 0 else []
    replayed = REPLAY_SHARE if base else 0.0
    weights = [(1 - replayed) / len(images)] * len(images)
    weights += [replayed / len(base)] * len(base)
    lr_g = FAST.config.lr_g * (lr_scale if init_from is not None else 1.0)
    config = FAST.config.model_copy(
        update={
            "height": crop,
            "frame_width": crop,
            "batch_size": 4,
            "epochs": 1,
            "steps_per_epoch": steps,
            "d_pretrain_steps": min(steps, 20),
            "seed": seed,
            "lr_g": lr_g,
            "corrupt_labels": corrupt,
        }
    )
    started = time.perf_counter()
    result = train(
        config,
        out / "train",
        images=[*images, *(s.image for s in base)],
        weights=weights,
        resume=False,
        progress=progress,
        init_from=init_from,
    )
    result.generator.eval()
    # The dead zone is widened on every frame trained on, as the shipped recipe does on its
    # whole training set (the fleet's few frames alone give a narrower one: clean frames then
    # get nudged, which the gate's clean rows catch).
    samples = [data.Sample(e.upload_id, im) for e, im in zip(good, images, strict=True)]
    gate = calibrate(result.generator, [*samples, *base], out / "train")
    # … and never narrower than the model it was fine-tuned from (calibrated on the whole base
    # set): a few dozen frames give a lower 99th percentile, which would wake the curve on good
    # frames the active model leaves alone.
    before = _identity_gate(init_from)
    if gate is not None and before is not None and before > gate:
        gate = before
        setattr(result.generator, "gate", gate)  # noqa: B010 - FastCurveGenerator's calibrated gate
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(result.generator, model_dir / MODEL_FILE)
    diff = check_onnx(result.generator, model_dir / MODEL_FILE, images=[images[0]])
    seconds = time.perf_counter() - started
    provenance = describe(entries)
    training = {
        "architecture": config.arch,
        "data": paired_data_line(dataset.name, provenance)
        + (f"; replay: {len(base)} frames of the base training set" if base else ""),
        "fine_tuned_from": None if init_from is None else str(init_from.parent.name),
        "dataset": provenance,
        "seed": seed,
        "command": "python -m tools.loop",
        "framework": f"torch {torch.__version__}",
        "seconds": round(seconds, 1),
        "identity_gate": gate,
        "config": config.model_dump(mode="json"),
    }
    losses = result.history[-1] if result.history else {}
    info = ManifestInfo(
        name=config.name,
        version=version,
        task=FAST.task,
        stride=result.generator.stride,
        opset=OPSET,
        training=training,
        metrics={"onnx_max_abs_diff": diff},
    )
    write_manifest(model_dir, info)
    return Trained(
        model_dir,
        version,
        seconds,
        {
            k: round(float(v), 4)
            for k, v in losses.items()
            if isinstance(v, int | float) and k not in {"epoch", "seconds"}
        },
        diff,
    )


# -- the loop -------------------------------------------------------------------------------------


SCENARIOS = ("fine-tune", "broken-challenger", "canary-rollback")
"""`fine-tune`: the loop as a fleet runs it. `broken-challenger`: the challenger is trained on
corrupted labels (each pair's sides swapped, the full learning rate), which the gate must hold
back.
`canary-rollback`: no fine-tuning; the challenger is the champion's own weights under the next
version (so the gate, which still checks every condition, lets it through without an
improvement), and the canary vehicle is configured so its health check fails
(`BROKEN_CANARY`): it rolls back and the rollout aborts before the wave is offered."""


@dataclass
class LoopReport:
    previous_version: str
    new_version: str
    scenario: str
    dataset: dict[str, Any]
    collectors: dict[str, Any]
    suite: dict[str, Any]
    training: dict[str, Any]
    swap: dict[str, Any]
    """The canary's outcome ('swapped', 'rolled back', 'not published', …) and every vehicle's."""
    quality: dict[str, dict[str, dict[str, float]]]
    """method → condition → {"mean": dB, "worst": dB} on the held-out suite."""
    gate: dict[str, Any]
    rollout: dict[str, Any] | None
    """`tools.rollout.report` of the staged rollout (None when nothing was published)."""
    decisions: list[dict[str, Any]]
    """Every decision the loop took, in order, with its figures."""
    timings_s: dict[str, float]

    @property
    def published(self) -> bool:
        return bool(self.gate["passed"])

    @property
    def rolled_out(self) -> bool:
        return self.rollout is not None and self.rollout["status"] == "done"

    def markdown(self) -> str:
        q = self.quality
        kinds = list(next(iter(q.values())))
        rows = "\n".join(
            f"| {m} | "
            + " | ".join(f"{q[m][k]['mean']:.2f} / {q[m][k]['worst']:.2f}" for k in kinds)
            + " |"
            for m in q
        )
        improves = (
            f"improves {', '.join(self.gate['improved'])}"
            if self.gate["improved"]
            else "the champion's own weights"
        )
        verdict = (
            f"**passed**: {improves}; no condition falls more than {self.gate['margin_db']:g} dB"
            if self.published
            else "**held back**: " + "; ".join(self.gate["reasons"])
        )
        decisions = "\n".join(
            f"{i}. **{d['step']}**: {d['decision']}"
            + (f": {d['reason']}" if d.get("reason") else "")
            for i, d in enumerate(self.decisions, 1)
        )
        vehicles = ", ".join(f"{v}: {o}" for v, o in self.swap.get("vehicles", {}).items())
        suite = self.suite
        made = (
            f"fine-tuned from {self.previous_version} on the fleet's uploads and "
            f"{self.training['replay']} replayed base frames"
            if self.training["fine_tuned"]
            else f"the weights of {self.previous_version} under a new version: not fine-tuned"
        )
        trained = (
            f"{self.training['steps']} steps on {self.training['crop']} px crops, "
            f"{self.training['seconds']:.0f} s; last losses {self.training['losses']}"
            if self.training["fine_tuned"]
            else "none"
        )
        return f"""# Fleet learning loop

Scenario `{self.scenario}`. Gate (champion against challenger): {verdict}

| | |
|---|---|
| model before | fast-enhance {self.previous_version} (shipped) |
| challenger | fast-enhance {self.new_version} ({made}) |
| data set | {self.dataset["frames"]} frames ({self.dataset["good"]} good, \
{self.dataset["poor"]} poor) from {", ".join(self.dataset["vehicles"])}; collectors \
{self.collectors["instances"]} |
| suite | version {suite["version"]} (sha256 {suite["sha256"][:12]}…): the footage bank's held-out \
set and {suite["fleet_frames"]} held-out fleet frames ({suite["added"]} added by this run) |
| training | {trained} |
| vehicles | {vehicles or "nothing published: every vehicle keeps " + self.previous_version} |

Decisions:

{decisions}

Held-out quality, PSNR dB mean / worst frame on the suite's {self.gate["frames"]} pairs (raw \
models; capped at {PSNR_CAP_DB:g} dB; `fleet …` rows: the fleet's held-out uploads):

| model | {" | ".join(kinds)} |
|---|{"---:|" * len(kinds)}
{rows}

Timings (s): {json.dumps(self.timings_s)}
"""


def cut_clip(source: Path, path: Path, seconds: float) -> Path:
    """The first `seconds` of `source` (the whole clip when it is shorter)."""
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    writer: cv2.VideoWriter | None = None
    try:
        for _ in range(max(1, round(seconds * fps))):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise LoopError(f"{source}: no frames to replay")
    return path


async def _run_vehicle_a(broker: LoopBroker, work: Path, vehicle: str, seconds: float) -> None:
    config = vehicle_a_config(work / "vehicle-a.toml", broker, work / "state-a", vehicle)
    clip = cut_clip(sample_video(), work / "vehicle-a.mp4", seconds)
    command = _agent(
        "simulate",
        "--config",
        str(config),
        "--video",
        str(clip),
        "--broker",
        broker.url,
        "--report",
        str(work / "vehicle-a-report"),
        "--speed",
        "max",
        "--inject",
        f"drops@{seconds * 0.5:g}s",
    )
    env = {**os.environ, **broker.env()}
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise LoopError(f"vehicle A failed ({process.returncode}): {err.decode()[-2000:]}")


@contextlib.asynccontextmanager
async def _receivers(
    broker: LoopBroker,
    work: Path,
    vehicles: Sequence[str],
    public: str,
    updates: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[None]:
    """`vehicle-agent run` for each receiving vehicle (state in `work/state-<vehicle>`, log in
    `work/<vehicle>.log`); `updates` adds [update] settings per vehicle."""
    env = {**os.environ, **broker.env(), "NOTIFY_SOCKET": ""}
    processes: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        for vehicle in vehicles:
            config = receiver_config(
                work / f"{vehicle}.toml",
                broker,
                work / f"state-{vehicle}",
                vehicle,
                public,
                update=(updates or {}).get(vehicle),
            )
            log = (work / f"{vehicle}.log").open("wb")
            logs.append(log)
            processes.append(
                await asyncio.create_subprocess_exec(
                    *_agent("run", "--config", str(config)), env=env, stdout=log, stderr=log
                )
            )
        yield
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await wait_for(process.wait(), 20.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        for log in logs:
            log.close()


LOOP_POLICY = Policy(health_s=5.0, timeout_s=120.0, abort_share=0.0, abort_min=1)
"""The loop's rollout: a vehicle is healthy after 5 s on the new model; one failure aborts."""


def outcome(state: dict[str, Any] | None, withdrawn: bool) -> str:
    """What happened to one receiving vehicle, in the report's words: 'swapped' (healthy on the
    new model), 'rolled back', 'withdrawn' (it took the update, the abort took it back),
    'failed: …', 'no answer' or 'never offered'."""
    if state is None:
        return "never offered"
    verdict, detail = state["verdict"], str(state["detail"])
    if verdict == "healthy":
        return "swapped"
    if verdict == "failed":
        return "rolled back" if detail.startswith("rolled back") else f"failed: {detail}"
    if withdrawn:
        return "withdrawn"
    return "no answer" if verdict in {"waiting", "timeout"} else verdict


async def roll_out(
    broker: LoopBroker,
    out: Path,
    model_dir: Path,
    *,
    canary: Sequence[str],
    waves: Sequence[Sequence[str]],
    policy: Policy = LOOP_POLICY,
    updates: dict[str, dict[str, Any]] | None = None,
    version: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sign `model_dir` with a fresh key and roll it out (`tools.rollout`) to the receiving
    vehicles, started here: `canary` first, then each wave, each judged on its health. Returns
    the rollout's report and the swap summary (the canary's outcome, every vehicle's).
    `version` re-versions the offer (the manifest's otherwise)."""
    private, public = model_update.keygen(out / "keys", KEY_ID)
    offer: SignedUpdate = model_update.make_offer(
        model_dir,
        model_update.load_private_key(private),
        KEY_ID,
        version=version,
        devices=("bench",),
    )
    offer_file = out / "offer.json"
    offer_file.write_bytes(offer.to_bytes())
    groups = [("canary", list(canary))] + [
        (f"wave-{i}", list(w)) for i, w in enumerate(waves, 1) if w
    ]
    receivers = [v for _, targets in groups for v in targets]
    plan = Rollout.plan(offer, offer_file, model_dir / "model.onnx", groups, policy)
    state_file = out / "rollout.json"
    lines = cast("TextIO", _Lines(log))
    t0 = time.perf_counter()
    async with (
        _receivers(broker, out, receivers, public, updates),
        FleetClient(broker.access()) as fleet,
    ):
        await rollout_run(
            fleet, plan, offer, model_dir / "model.onnx", state_file, log=lines, reply_s=30.0
        )
    seconds = round(time.perf_counter() - t0, 1)
    summary = rollout_report(plan)
    states = {t: v for g in summary["groups"] for t, v in g["verdicts"].items()}
    vehicles = {v: outcome(states.get(v), v in plan.withdrawn) for v in receivers}
    swap = {
        "vehicle": receivers[0],
        "outcome": vehicles[receivers[0]],
        "seconds": seconds,
        "vehicles": vehicles,
    }
    return summary, swap


class _Lines(io.TextIOBase):
    """A text stream that hands each line to `log` (the rollout writes to a stream)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.log("    " + line)
        return len(text)


async def run_loop(
    broker: LoopBroker,
    out: Path,
    *,
    suite_dir: Path | None = None,
    scenario: str = "fine-tune",
    seconds: float = 30.0,
    steps: int = 60,
    crop: int = 128,
    seed: int = 0,
    margin_db: float = GATE_MARGIN_DB,
    replay: int = 24,
    lr_scale: float = FINE_TUNE_LR,
    vehicles: Sequence[str] = VEHICLES,
    policy: Policy = LOOP_POLICY,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> LoopReport:
    """Run the whole loop (module docstring) in `out`, judging on the suite in `suite_dir`
    (default `out/suite`; made when missing); raises `LoopError` on a failed step. A challenger
    that fails the gate is not published: the report says why (`published` False)."""
    if scenario not in SCENARIOS:
        raise LoopError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if len(vehicles) < 3:
        raise LoopError("the loop needs an uploading vehicle, a canary and at least one more")
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    suite_dir = suite_dir or out / "suite"
    timings: dict[str, float] = {}
    decisions: list[dict[str, Any]] = []
    uploader, canary, *wave = vehicles
    previous = read_manifest(SHIPPED).version
    version = next_version(previous)
    dataset = out / "dataset"

    t0 = time.perf_counter()
    log(f"1/6 vehicle {uploader} drives {seconds:g} s and uploads; two shared collectors listen")
    ready = [asyncio.Event(), asyncio.Event()]
    driven = asyncio.Event()
    collectors = [
        asyncio.create_task(
            collect(
                broker.access(),
                dataset,
                idle_exit_s=3.0,
                share="loop",
                instance=f"c{i + 1}",
                ready=ready[i],
                stop=driven,
                log=sys.stderr,
            )
        )
        for i in range(2)
    ]
    await wait_for(asyncio.gather(*(r.wait() for r in ready)), 30.0)
    try:
        await _run_vehicle_a(broker, out, uploader, seconds)
    finally:
        driven.set()  # the collectors stop once the last uploads have come (3 s quiet)
    stats = await asyncio.gather(*collectors)
    entries = read_dataset(dataset)
    timings["drive_and_collect"] = round(time.perf_counter() - t0, 1)
    shares = {f"c{i + 1}": s.messages for i, s in enumerate(stats)}
    collected = {
        "instances": shares,
        "saved": sum(s.saved for s in stats),
        "duplicates": sum(s.duplicates for s in stats),
        "refused": sum(s.refused for s in stats),
    }
    decisions.append(
        {
            "step": "collect",
            "decision": f"{collected['saved']} frames stored",
            "reason": f"messages per collector {shares}, {collected['duplicates']} duplicates",
        }
    )
    log(f"    data set: {collected['saved']} frames in {dataset}; messages per collector {shares}")

    suite = await asyncio.to_thread(Suite.open, suite_dir)
    added = await asyncio.to_thread(suite.add, dataset)
    suite_info = {**suite.describe(), "added": added, "folder": str(suite_dir)}
    decisions.append(
        {
            "step": "suite",
            "decision": f"version {suite.version}",
            "reason": f"{added} held-out fleet frames added ({len(suite.fleet)} in all)",
        }
    )
    log(f"2/6 held-out suite {suite_dir}: version {suite.version}, {added} fleet frames added")

    t0 = time.perf_counter()
    broken = scenario == "broken-challenger"
    same = scenario == "canary-rollback"
    if same:
        log(
            f"3/6 no fine-tuning (canary-rollback): the challenger {version} is the champion's "
            "own weights, so the run reaches the canary whatever a short fine-tuning would give"
        )
        trained = Trained(SHIPPED, version, 0.0, {}, 0.0)
    else:
        log(
            f"3/6 fine-tuning fast-enhance {previous} → {version}: {steps} steps on {crop} px "
            f"crops, the fleet's good frames and {replay} replayed base frames"
            + (" (labels corrupted: broken-challenger)" if broken else "")
        )
        trained = await asyncio.to_thread(
            train_model,
            dataset,
            out,
            steps=steps,
            crop=crop,
            seed=seed,
            version=version,
            progress=progress,
            init_from=SHIPPED / "model.onnx",
            replay=replay,
            held_out=suite.held_out_ids(),
            lr_scale=1.0 if broken else lr_scale,
            corrupt=broken,
        )
    timings["train_export"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log(f"4/6 champion {previous} against challenger {version} on suite v{suite.version}")
    gate = await asyncio.to_thread(
        gate_models, suite, SHIPPED, trained.model_dir, margin_db, require_improvement=not same
    )
    timings["gate"] = round(time.perf_counter() - t0, 1)
    verdict = (
        f"improves {', '.join(gate.improved)}"
        if gate.improved
        else "the champion's own weights (no improvement asked)"
    )
    decisions.append(
        {
            "step": "gate",
            "decision": "publish" if gate.passed else "hold back",
            "reason": (
                f"{verdict}; nothing falls more than {margin_db:g} dB"
                if gate.passed
                else "; ".join(gate.reasons)
            ),
            "improved": gate.improved,
            "reasons": gate.reasons,
        }
    )
    training = {
        "fine_tuned": not same,
        "steps": 0 if same else steps,
        "crop": crop,
        "replay": replay,
        "lr_scale": 1.0 if broken else lr_scale,
        "corrupted_labels": broken,
        "seconds": round(trained.seconds, 1),
        "losses": trained.losses,
        "onnx_max_abs_diff": trained.max_abs_diff,
    }

    def finish(swap: dict[str, Any], rollout: dict[str, Any] | None) -> LoopReport:
        report = LoopReport(
            previous_version=previous,
            new_version=version,
            scenario=scenario,
            dataset=describe(entries),
            collectors=collected,
            suite=suite_info,
            training=training,
            swap=swap,
            quality=gate.scores,
            gate={k: v for k, v in gate.__dict__.items() if k != "scores"},
            rollout=rollout,
            decisions=decisions,
            timings_s=timings,
        )
        (out / "report.json").write_text(json.dumps(report.__dict__, indent=2) + "\n")
        (out / "report.md").write_text(report.markdown())
        log(report.markdown())
        log(f"report: {out / 'report.md'}")
        return report

    if not gate.passed:
        log("    held back: " + "; ".join(gate.reasons))
        return finish({"vehicle": canary, "outcome": "not published", "seconds": 0.0}, None)
    log(f"    passed: {verdict}")

    log(f"5/6 signed; staged rollout: canary {canary}, then {', '.join(wave)}")
    t0 = time.perf_counter()
    updates = {canary: BROKEN_CANARY} if same else None
    summary, swap = await roll_out(
        broker, out, trained.model_dir, canary=[canary], waves=[wave], policy=policy,
        updates=updates, version=version if same else None, log=log,
    )  # fmt: skip
    timings["rollout"] = round(time.perf_counter() - t0, 1)
    decisions += [{"step": f"rollout {d['group']}", **d} for d in summary["decisions"]]
    log(f"6/6 rollout {summary['status']}: {swap['vehicles']}")
    return finish(swap, summary)


def gate_models(
    suite: Suite,
    previous: Path,
    new: Path,
    margin_db: float = GATE_MARGIN_DB,
    *,
    require_improvement: bool = True,
) -> GateDecision:
    """Champion (`previous`) against challenger (`new`) on every pair of `suite`: the new model
    must improve fast-enhance's conditions (low light or fog, on the footage bank's held-out
    set or on the fleet's held-out uploads) and regress on none (`decide`)."""
    from tools.gan.ship import FAST  # noqa: PLC0415

    scores, pairs = score(suite, {"previous": previous, "new": new})
    targets = [*FAST.conditions, *(FLEET + c for c in FAST.conditions)]
    return decide(
        scores,
        targets=targets,
        margin_db=margin_db,
        frames=pairs,
        require_improvement=require_improvement,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loop", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("build/loop"), help="work folder")
    parser.add_argument(
        "--suite",
        type=Path,
        default=Path("build/loop-suite"),
        help="the held-out suite folder (kept across runs; made when missing)",
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="fine-tune")
    parser.add_argument("--seconds", type=float, default=30.0, help="vehicle A's drive")
    parser.add_argument("--steps", type=int, default=60, help="training steps")
    parser.add_argument("--crop", type=int, default=128, help="training crop side, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lr-scale",
        type=float,
        default=FINE_TUNE_LR,
        help="fine-tuning learning rate as a share of the shipped recipe's",
    )
    parser.add_argument(
        "--margin-db",
        type=float,
        default=GATE_MARGIN_DB,
        help="largest fall of any condition's mean or worst frame the gate lets through (dB)",
    )
    parser.add_argument(
        "--replay", type=int, default=24, help="base training frames mixed into fine-tuning"
    )
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, local_broker(Path(tmp)) as broker:
            report = compat.run(
                run_loop(
                    broker,
                    args.out,
                    suite_dir=args.suite,
                    scenario=args.scenario,
                    seconds=args.seconds,
                    steps=args.steps,
                    crop=args.crop,
                    seed=args.seed,
                    margin_db=args.margin_db,
                    replay=args.replay,
                    lr_scale=args.lr_scale,
                )
            )
    except (LoopError, SuiteError, RolloutError) as exc:
        print(f"loop: {exc}", file=sys.stderr)
        return 2
    if not report.published:
        print(
            f"loop: fast-enhance {report.new_version} held back: "
            + "; ".join(report.gate["reasons"]),
            file=sys.stderr,
        )
        return 1
    if not report.rolled_out:
        print(f"loop: rollout {report.swap['vehicles']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
