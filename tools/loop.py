"""Cloud side: the fleet learning loop end to end (seed 000's idea), on one machine.

    python -m tools.loop --out build/loop                        # a few minutes
    python -m tools.loop --out build/loop --steps 400 --crop 192 --seconds 60

1. A local Mosquitto is started (or `--broker` names one, with the operator's and the vehicles'
   accounts given through credential names; see `LoopBroker`).
2. Vehicle A (`vehicle-agent simulate`, the bundled street clip, lens drops injected so frames
   before and after a cleaning are uploaded too) uploads frames over the fleet link.
3. The collector (`tools.fleet collect`) builds the data set while A drives.
4. A short GAN fine-tuning run (pairs made by degrading good frames, the shipped recipe of
   `tools.gan`) starts from the fleet's active `fast-enhance` and mixes the fleet's good frames
   with the base training set (replay, half the samples each), so the model does not forget
   what it could do. It is exported to ONNX with a manifest that records which vehicles and
   time range the data came from.
5. Champion against challenger: both models are scored on the footage bank's held-out frames
   under every condition (`tools.gan.bench`: low light, fog, rain, blur, noise, clean). The new
   model goes on only if it improves a condition it is trained for (low light or fog), no
   condition's mean PSNR falls by more than `--margin-db` (0.2) and no condition's worst frame
   falls by more than that either. Otherwise nothing is signed or published: the report says
   which condition failed, and the command exits 1.
6. The model is signed with a fresh key and published to vehicle B (`vehicle-agent run` on the
   same footage, trusting that key), which verifies, health-checks and swaps it in, and reports
   `model_swapped` with the new version.
7. `report.json` and `report.md` in `--out`: versions before and after, the data set, the
   training losses, the gate's decision and both models' held-out figures.

With the default budget the run is a demonstration of the loop; the gate is what keeps a
worse model off the fleet. Everything runs on this machine; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from tools import model_update
from tools.dataset import describe, load_images, paired_data_line, read_dataset
from tools.fleet import BrokerAccess, FleetClient, collect
from vehicle_agent import compat
from vehicle_agent.compat import wait_for
from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.secrets import env_name
from vehicle_agent.sim.simulate import sample_video
from vehicle_agent.update.manifest import SignedUpdate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "fast-enhance"
KEY_ID = "loop"
VEHICLES = ("veh-a", "veh-b")
"""Vehicle A (uploads) and vehicle B (receives the new model)."""


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


def vehicle_b_config(
    path: Path, broker: LoopBroker, state: Path, vehicle: str, public_key: str
) -> Path:
    """Vehicle B replays the same footage in a loop and trusts the loop's signing key."""
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
device = "bench"
confirm_after_s = 2.0

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
) -> Trained:
    """Fine-tune fast-enhance from `init_from` (the active model.onnx; None: fresh weights) on
    the data set's good frames mixed with `replay` frames of the base training set (paired by
    degradation), export it and write its manifest with the data's provenance."""
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
    good = [e for e in entries if e.label == "good"]
    if len(good) < 2:
        raise LoopError(f"{dataset}: {len(good)} good frames; the loop needs at least 2")
    images = load_images(dataset, good)
    base = data.training_images(limit=replay) if replay > 0 else []
    replayed = REPLAY_SHARE if base else 0.0
    weights = [(1 - replayed) / len(images)] * len(images)
    weights += [replayed / len(base)] * len(base)
    lr_g = FAST.config.lr_g * (FINE_TUNE_LR if init_from is not None else 1.0)
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
    samples = [data.Sample(e.upload_id, im) for e, im in zip(good, images, strict=True)]
    calibrate(result.generator, samples, out / "train")
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


PSNR_CAP_DB = 60.0
"""Scores above this count as this (a model that leaves a clean frame bit-identical scores ∞;
one that changes it invisibly, 70 dB: neither is worse than the other)."""
GATE_MARGIN_DB = 0.2


@dataclass
class GateDecision:
    """Champion (the active model) against challenger (the new one) on held-out frames."""

    passed: bool
    reasons: list[str]
    """Why it failed (empty when it passed), one per failed check, naming the condition."""
    improved: list[str]
    """Target conditions on which the challenger's mean is higher."""
    scores: dict[str, dict[str, dict[str, float]]]
    """method → condition → {"mean": dB, "worst": dB} (capped at `PSNR_CAP_DB`)."""
    margin_db: float
    frames: int


def decide(
    scores: dict[str, dict[str, dict[str, float]]],
    *,
    targets: Sequence[str],
    margin_db: float = GATE_MARGIN_DB,
    frames: int = 0,
) -> GateDecision:
    """Publish only if the challenger ("new") improves one of `targets` and, on every
    condition, neither its mean nor its worst frame falls more than `margin_db` below the
    champion's ("previous")."""
    old, new = scores["previous"], scores["new"]
    reasons: list[str] = []
    for kind in old:
        for stat in ("mean", "worst"):
            drop = old[kind][stat] - new[kind][stat]
            if drop > margin_db:
                reasons.append(
                    f"{kind}: {stat} {new[kind][stat]:.2f} dB against {old[kind][stat]:.2f} "
                    f"({-drop:+.2f} dB, margin {margin_db:g})"
                )
    improved = [k for k in targets if k in old and new[k]["mean"] > old[k]["mean"]]
    if not improved:
        reasons.append(
            f"no target condition improved ({', '.join(targets)}: "
            + ", ".join(
                f"{new[k]['mean']:.2f} vs {old[k]['mean']:.2f} dB" for k in targets if k in old
            )
            + ")"
        )
    return GateDecision(not reasons, reasons, improved, scores, margin_db, frames)


def _capped(values: Sequence[float]) -> list[float]:
    return [min(v, PSNR_CAP_DB) for v in values] or [0.0]


def champion_vs_challenger(
    previous: Path, new: Path, frames: int, margin_db: float = GATE_MARGIN_DB
) -> GateDecision:
    """Score both models (and identity, for reference) on `frames` held-out frames of the
    footage bank under every condition of `tools.gan.bench`, then `decide`."""
    from tools.gan import bench, data  # noqa: PLC0415
    from tools.gan.ship import FAST  # noqa: PLC0415

    held_out = data.held_out_images()[:frames]
    methods = {
        "identity": bench.identity,
        "previous": bench.onnx_model(previous / "model.onnx"),
        "new": bench.onnx_model(new / "model.onnx"),
    }
    report = bench.evaluate(methods, held_out, metric_ssim=False)
    scores: dict[str, dict[str, dict[str, float]]] = {
        m: {
            str(k): {
                "mean": round(statistics.fmean(_capped(report.scores[(m, k)].psnr)), 2),
                "worst": round(min(_capped(report.scores[(m, k)].psnr)), 2),
            }
            for k in report.kinds
        }
        for m in methods
    }
    return decide(scores, targets=FAST.conditions, margin_db=margin_db, frames=len(held_out))


# -- the loop -------------------------------------------------------------------------------------


@dataclass
class LoopReport:
    previous_version: str
    new_version: str
    dataset: dict[str, Any]
    training: dict[str, Any]
    swap: dict[str, Any]
    quality: dict[str, dict[str, dict[str, float]]]
    """method → condition → {"mean": dB, "worst": dB} on the held-out frames."""
    gate: dict[str, Any]
    timings_s: dict[str, float]

    @property
    def published(self) -> bool:
        return bool(self.gate["passed"])

    def markdown(self) -> str:
        q = self.quality
        kinds = list(next(iter(q.values())))
        rows = "\n".join(
            f"| {m} | "
            + " | ".join(f"{q[m][k]['mean']:.2f} / {q[m][k]['worst']:.2f}" for k in kinds)
            + " |"
            for m in q
        )
        verdict = (
            f"**published**: improves {', '.join(self.gate['improved'])}; no condition falls "
            f"more than {self.gate['margin_db']:g} dB"
            if self.published
            else "**not published**: " + "; ".join(self.gate["reasons"])
        )
        swap = (
            f"{self.swap['outcome']} ({self.swap['seconds']:.1f} s from publish)"
            if self.published
            else "nothing published: it keeps " + self.previous_version
        )
        return f"""# Fleet learning loop

Gate (champion against challenger): {verdict}

| | |
|---|---|
| model before | fast-enhance {self.previous_version} (shipped) |
| model after | fast-enhance {self.new_version} (fine-tuned from {self.previous_version} on the \
fleet's uploads and {self.training["replay"]} replayed base frames) |
| data set | {self.dataset["frames"]} frames ({self.dataset["good"]} good, \
{self.dataset["poor"]} poor) from {", ".join(self.dataset["vehicles"])} |
| training | {self.training["steps"]} steps on {self.training["crop"]} px crops, \
{self.training["seconds"]:.0f} s; last losses {self.training["losses"]} |
| vehicle B | {swap} |

Held-out quality, PSNR dB mean / worst frame on {self.gate["frames"]} frames (tools.gan.bench; \
capped at {PSNR_CAP_DB:g} dB):

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
async def _vehicle_b(
    broker: LoopBroker, work: Path, vehicle: str, public: str
) -> AsyncIterator[None]:
    config = vehicle_b_config(work / "vehicle-b.toml", broker, work / "state-b", vehicle, public)
    env = {**os.environ, **broker.env(), "NOTIFY_SOCKET": ""}
    log = (work / "vehicle-b.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *_agent("run", "--config", str(config)), env=env, stdout=log, stderr=log
    )
    try:
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await wait_for(process.wait(), 20.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def run_loop(
    broker: LoopBroker,
    out: Path,
    *,
    seconds: float = 30.0,
    steps: int = 60,
    crop: int = 128,
    seed: int = 0,
    bench_frames: int = 6,
    margin_db: float = GATE_MARGIN_DB,
    replay: int = 24,
    vehicles: tuple[str, str] = VEHICLES,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> LoopReport:
    """Run the whole loop (module docstring) in `out`; raises `LoopError` on a failed step. A
    challenger that fails the gate is not published: the report says why (`published` False)."""
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    vehicle_a, vehicle_b = vehicles
    previous = read_manifest(SHIPPED).version
    version = next_version(previous)
    dataset = out / "dataset"

    t0 = time.perf_counter()
    log(f"1/5 vehicle {vehicle_a} drives {seconds:g} s and uploads; the collector listens")
    ready, driven = asyncio.Event(), asyncio.Event()
    collector = asyncio.create_task(
        collect(broker.access(), dataset, idle_exit_s=3.0, ready=ready, stop=driven, log=sys.stderr)
    )
    await wait_for(ready.wait(), 30.0)
    try:
        await _run_vehicle_a(broker, out, vehicle_a, seconds)
    finally:
        driven.set()  # the collector stops once the last uploads have come (3 s quiet)
    stats = await collector
    entries = read_dataset(dataset)
    timings["drive_and_collect"] = round(time.perf_counter() - t0, 1)
    log(f"    data set: {stats.saved} frames ({stats.by_label}) in {dataset}")

    t0 = time.perf_counter()
    log(
        f"2/5 fine-tuning fast-enhance {previous} → {version}: {steps} steps on {crop} px crops, "
        f"the fleet's good frames and {replay} replayed base frames"
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
    )
    timings["train_export"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log(f"3/5 champion {previous} against challenger {version} on {bench_frames} held-out frames")
    gate = await asyncio.to_thread(
        champion_vs_challenger, SHIPPED, trained.model_dir, bench_frames, margin_db
    )
    timings["gate"] = round(time.perf_counter() - t0, 1)
    training = {
        "steps": steps,
        "crop": crop,
        "replay": replay,
        "seconds": round(trained.seconds, 1),
        "losses": trained.losses,
        "onnx_max_abs_diff": trained.max_abs_diff,
        "bench_frames": bench_frames,
    }

    def finish(swap: dict[str, Any]) -> LoopReport:
        report = LoopReport(
            previous_version=previous,
            new_version=version,
            dataset=describe(entries),
            training=training,
            swap=swap,
            quality=gate.scores,
            gate={k: v for k, v in gate.__dict__.items() if k != "scores"},
            timings_s=timings,
        )
        (out / "report.json").write_text(json.dumps(report.__dict__, indent=2) + "\n")
        (out / "report.md").write_text(report.markdown())
        log(report.markdown())
        log(f"report: {out / 'report.md'}")
        return report

    if not gate.passed:
        log("    not published: " + "; ".join(gate.reasons))
        return finish({"vehicle": vehicle_b, "outcome": "not published", "seconds": 0.0})
    log(f"    passed: improves {', '.join(gate.improved)}")

    log("4/5 signing and publishing to vehicle B")
    private, public = model_update.keygen(out / "keys", KEY_ID)
    offer: SignedUpdate = model_update.make_offer(
        trained.model_dir,
        model_update.load_private_key(private),
        KEY_ID,
        devices=("bench",),
    )
    (out / "offer.json").write_bytes(offer.to_bytes())
    label = f"fast-enhance@{version}"
    t0 = time.perf_counter()
    async with _vehicle_b(broker, out, vehicle_b, public), FleetClient(broker.access()) as fleet:

        async def send() -> None:
            await model_update.publish(fleet, offer, trained.model_dir / "model.onnx", [vehicle_b])

        outcomes = await model_update.watch(
            fleet,
            [vehicle_b],
            label=label,
            timeout_s=120.0,
            offer=offer,
            out=sys.stderr,
            then=send,
        )
    swap_s = time.perf_counter() - t0
    timings["publish_to_swap"] = round(swap_s, 1)
    if outcomes[vehicle_b] != "swapped":
        raise LoopError(
            f"vehicle B did not swap to {label}: {outcomes[vehicle_b]}; see {out / 'vehicle-b.log'}"
        )
    log(f"5/5 vehicle B reported model_swapped to {label} after {swap_s:.1f} s")
    return finish(
        {"vehicle": vehicle_b, "outcome": outcomes[vehicle_b], "seconds": round(swap_s, 1)}
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.loop", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("build/loop"), help="work folder")
    parser.add_argument("--seconds", type=float, default=30.0, help="vehicle A's drive")
    parser.add_argument("--steps", type=int, default=60, help="training steps")
    parser.add_argument("--crop", type=int, default=128, help="training crop side, pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--margin-db",
        type=float,
        default=GATE_MARGIN_DB,
        help="largest fall of any condition's mean or worst frame the gate lets through (dB)",
    )
    parser.add_argument(
        "--replay", type=int, default=24, help="base training frames mixed into fine-tuning"
    )
    parser.add_argument("--bench-frames", type=int, default=6, help="held-out frames judged")
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
                    seconds=args.seconds,
                    steps=args.steps,
                    crop=args.crop,
                    seed=args.seed,
                    bench_frames=args.bench_frames,
                    margin_db=args.margin_db,
                    replay=args.replay,
                )
            )
    except LoopError as exc:
        print(f"loop: {exc}", file=sys.stderr)
        return 1
    if not report.published:
        print(
            f"loop: fast-enhance {report.new_version} not published: "
            + "; ".join(report.gate["reasons"]),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
