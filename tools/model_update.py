"""Model updates, the cloud side: make keys, sign a model folder, publish it to vehicles, watch.

    python -m tools.model_update keygen --out keys/ --key-id fleet-2026
    python -m tools.model_update sign models/fast-enhance --key keys/fleet-2026.key \
        --key-id fleet-2026 --version 1.0.1 --out fast-enhance-1.0.1.offer.json
    python -m tools.model_update --broker mqtts://HOST:8883 --ca-file ca.crt \
        --username operator --password-credential fleet-password \
        publish fast-enhance-1.0.1.offer.json models/fast-enhance veh-1 veh-2 --watch
    python -m tools.model_update … watch veh-1 veh-2/rear
    python -m tools.model_update … clear fast-enhance-1.0.1.offer.json veh-1
    python -m tools.model_update … rollout fast-enhance-1.0.1.offer.json models/fast-enhance \
        --state rollout.json --canary veh-1 --wave veh-2,veh-3 --wave veh-4,veh-5

`sign` takes any model folder with `model.onnx` + `manifest.json` (a shipped model, or a training
run's export); `--version` overrides the folder's version (vehicles take only newer ones).
`publish` sends the chunks, then the offer, all retained (chunks expire with the offer), to each
vehicle; `--watch` follows their `model_update_*`, `model_swapped` and `model_rolled_back`
events, and clears the retained messages of each vehicle that is done. An offer is the
vehicle's: every camera of the vehicle takes it. A target is `VEHICLE` (its `front` camera, the
default camera id) or `VEHICLE/CAMERA`; name each camera to watch (`veh-1/front veh-1/rear`): the
retained offer is cleared once every camera named of that vehicle is done. `rollout` offers it
group by group and aborts (withdrawing it) when a group's vehicles fail (tools/rollout.py). See
docs/model-updates.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import aiomqtt
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed where tests run
    raise SystemExit(
        "tools.model_update needs the fleet extra (aiomqtt is not installed): "
        "pip install -e '.[fleet]'"
    ) from exc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tools import rollout
from tools.fleet import DEFAULT_CAMERA, JSON_CONTENT_TYPE, BrokerAccess, FleetClient
from vehicle_agent import compat
from vehicle_agent.compat import UTC, wait_for
from vehicle_agent.enhance.manifest import read_manifest, verify_file
from vehicle_agent.secrets import SecretError, read_secret
from vehicle_agent.update.manifest import (
    SignedUpdate,
    UpdateManifest,
    encode_public_key,
    sign,
)
from vehicle_agent.update.transfer import split

DEFAULT_CHUNK = 65_536
PUBLISH_BATCH = 16
DONE = {"model_update_refused", "model_rolled_back"}


class ToolError(Exception):
    """A problem with the tool's inputs; printed as one line."""


# -- keys and signing ----------------------------------------------------------------------------


def keygen(out: Path, key_id: str) -> tuple[Path, str]:
    """A new Ed25519 key pair: `<out>/<key_id>.key` (PKCS#8 PEM, mode 0600) and the public key
    as base64 (also written to `<key_id>.pub`). Refuses to overwrite a key."""
    out.mkdir(parents=True, exist_ok=True)
    private = out / f"{key_id}.key"
    if private.exists():
        raise ToolError(f"{private} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = encode_public_key(key.public_key())
    (out / f"{key_id}.pub").write_text(public + "\n")
    return private, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ToolError(f"{path}: cannot read the private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ToolError(f"{path}: not an Ed25519 key")
    return key


def make_offer(
    model_dir: Path,
    key: Ed25519PrivateKey,
    key_id: str,
    *,
    version: str | None = None,
    devices: Sequence[str] = ("*",),
    backends: Sequence[str] = ("onnxruntime", "tensorrt"),
    expires_in_s: float = 30 * 86_400,
    chunk_size: int = DEFAULT_CHUNK,
    now: float | None = None,
) -> SignedUpdate:
    """Sign the model in `model_dir` (its file's sha256 checked against its manifest first)."""
    manifest = read_manifest(model_dir)
    onnx_path = verify_file(model_dir, manifest)
    model = manifest.model_dump(mode="json")
    if version is not None:
        model["version"] = version
    now = time.time() if now is None else now
    update = UpdateManifest.model_validate(
        {
            "name": manifest.name,
            "version": model["version"],
            "sha256": manifest.sha256,
            "size": onnx_path.stat().st_size,
            "chunk_size": chunk_size,
            "devices": list(devices),
            "backends": list(backends),
            "issued_at": int(now),
            "expires_at": int(now + expires_in_s),
            "model": model,
        }
    )
    return sign(update, key, key_id)


def read_offer(path: Path) -> tuple[SignedUpdate, UpdateManifest]:
    try:
        offer = SignedUpdate.model_validate_json(path.read_bytes())
        return offer, UpdateManifest.model_validate(offer.manifest)
    except (OSError, ValueError) as exc:
        raise ToolError(f"{path}: not a signed offer: {exc}") from None


# -- publishing ----------------------------------------------------------------------------------


def target(text: str) -> tuple[str, str]:
    """`VEHICLE` or `VEHICLE/CAMERA` → (vehicle, camera); the camera defaults to `front`."""
    vehicle, _, camera = text.partition("/")
    for label, part in (("vehicle", vehicle), ("camera", camera or DEFAULT_CAMERA)):
        if not part or "/" in part or "+" in part or "#" in part:
            raise ToolError(f"target {text!r}: {label} id {part!r} is not a topic level")
    return vehicle, camera or DEFAULT_CAMERA


def vehicles_of(targets: Sequence[str]) -> list[str]:
    """The vehicles of the targets, each once, in order (offers go to vehicles)."""
    return list(dict.fromkeys(target(t)[0] for t in targets))


def _retained(expires_at: float, content_type: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = max(1, int(expires_at - time.time()))
    properties.ContentType = content_type
    return properties


async def publish(
    fleet: FleetClient, offer: SignedUpdate, model_file: Path, vehicles: Sequence[str]
) -> None:
    """Chunks first (retained, expiring with the offer), then the offer, to each vehicle."""
    manifest = UpdateManifest.model_validate(offer.manifest)
    data = await asyncio.to_thread(model_file.read_bytes)
    if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ToolError(f"{model_file} is not the file the offer was signed for")
    # The offer is JSON like every command; the chunks are the model file's bytes.
    properties = _retained(manifest.expires_at, "application/octet-stream")
    offer_properties = _retained(manifest.expires_at, JSON_CONTENT_TYPE)
    chunks = split(data, manifest.chunk_size)
    for vehicle in vehicles_of(vehicles):
        # Several in flight at once: each publish waits for its PUBACK.
        for start in range(0, len(chunks), PUBLISH_BATCH):
            await asyncio.gather(
                *(
                    fleet.client.publish(
                        fleet.topic(vehicle, f"update/data/{offer.update_id}/{index}"),
                        chunks[index],
                        qos=1,
                        retain=True,
                        properties=properties,
                    )
                    for index in range(start, min(start + PUBLISH_BATCH, len(chunks)))
                )
            )
        await fleet.client.publish(
            fleet.topic(vehicle, "update/offer"),
            offer.to_bytes(),
            qos=1,
            retain=True,
            properties=offer_properties,
        )


async def clear(fleet: FleetClient, offer: SignedUpdate, vehicle: str) -> None:
    """Remove the retained offer and chunks of `offer` for `vehicle` (empty retained messages)."""
    manifest = UpdateManifest.model_validate(offer.manifest)
    for index in range(manifest.chunks):
        topic = fleet.topic(vehicle, f"update/data/{offer.update_id}/{index}")
        await fleet.client.publish(topic, b"", qos=1, retain=True)
    await fleet.client.publish(fleet.topic(vehicle, "update/offer"), b"", qos=1, retain=True)


async def watch(
    fleet: FleetClient,
    vehicles: Sequence[str],
    *,
    label: str | None,
    timeout_s: float,
    offer: SignedUpdate | None = None,
    out: Any = sys.stdout,
    then: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, str]:
    """Print update events until each target (`VEHICLE` or `VEHICLE/CAMERA`) runs `label`
    (`model_swapped` or `model_update_confirmed` with it, or telemetry whose `model` is it: the
    vehicle's own state, should an event have been missed), refuses it or rolls it back.
    Returns target → 'swapped', 'refused', 'rolled_back' or 'timeout'. `then` runs once the
    subscriptions are in place (the publish, so no event is missed). With `offer`, a
    vehicle's retained offer is cleared once all its targets are done."""
    outcomes: dict[str, str] = {}
    by_camera = {target(t): t for t in vehicles}
    deadline = time.monotonic() + timeout_s
    async with fleet.listen() as queue:
        for vehicle, camera in by_camera:
            await fleet.subscribe(fleet.camera_topic(vehicle, camera, "events"))
            if label is not None:
                await fleet.subscribe(fleet.camera_topic(vehicle, camera, "telemetry"))
        if then is not None:
            await then()
        while len(outcomes) < len(by_camera):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            address = fleet.topics.parse(message.topic)
            if address is None or address.camera_id is None:
                continue
            name = by_camera.get((address.vehicle_id, address.camera_id))
            if name is None or name in outcomes:
                continue
            try:
                event = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            data: Any
            if address.suffix == "telemetry":
                if event.get("model") != label:
                    continue
                kind, data = "telemetry", {"model": label}
            else:
                kind, data = str(event.get("type", "")), event.get("data", {})
            if not isinstance(data, dict):
                continue
            wanted = kind.startswith("model_update") or kind in {"model_swapped", "telemetry"}
            if not (wanted or kind in DONE):
                continue
            print(f"{name} {kind} {json.dumps(data)}", file=out, flush=True)
            if label is not None and data.get("model") != label:
                continue
            if kind in {"model_swapped", "model_update_confirmed", "telemetry"}:
                outcomes[name] = "swapped"
            elif kind == "model_update_refused":
                outcomes[name] = "refused"
            elif kind == "model_rolled_back":
                outcomes[name] = "rolled_back"
            vehicle = address.vehicle_id
            done = all(t in outcomes for (v, _), t in by_camera.items() if v == vehicle)
            if name in outcomes and done and offer is not None:
                await clear(fleet, offer, vehicle)
    for name in by_camera.values():
        outcomes.setdefault(name, "timeout")
    return outcomes


# -- command line --------------------------------------------------------------------------------


def _access(args: argparse.Namespace) -> BrokerAccess:
    if not args.broker:
        raise ToolError("--broker is required for this command")
    password = None
    if args.password_credential:
        password = read_secret(args.password_credential).reveal()
    return BrokerAccess(args.broker, args.ca_file, args.username, password, args.prefix)


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = keygen(args.out, args.key_id)
    print(f"private key: {private} (keep it off the vehicles)", file=sys.stderr)
    print(f'[update.trusted_keys]\n"{args.key_id}" = "{public}"')
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    offer = make_offer(
        args.model_dir,
        load_private_key(args.key),
        args.key_id,
        version=args.version,
        devices=args.devices.split(","),
        backends=args.backends.split(","),
        expires_in_s=args.expires_in_days * 86_400,
        chunk_size=args.chunk_size,
    )
    args.out.write_bytes(offer.to_bytes() + b"\n")
    manifest = UpdateManifest.model_validate(offer.manifest)
    expires = datetime.fromtimestamp(manifest.expires_at, UTC).isoformat()
    print(
        f"{args.out}: {manifest.label} {manifest.size} B in {manifest.chunks} chunks, "
        f"update id {offer.update_id}, key {args.key_id}, expires {expires}"
    )
    return 0


async def cmd_publish(args: argparse.Namespace) -> int:
    offer, manifest = read_offer(args.offer)
    model_file = args.model if args.model.is_file() else args.model / "model.onnx"
    async with FleetClient(_access(args)) as fleet:

        async def send() -> None:
            start = time.monotonic()
            await publish(fleet, offer, model_file, args.vehicles)
            print(
                f"published {manifest.label} ({offer.update_id}) to {', '.join(args.vehicles)} "
                f"in {time.monotonic() - start:.2f} s",
                file=sys.stderr,
            )

        if not args.watch:
            await send()
            return 0
        outcomes = await watch(
            fleet,
            args.vehicles,
            label=manifest.label,
            timeout_s=args.timeout,
            offer=offer,
            then=send,
        )
    print(json.dumps(outcomes))
    return 0 if all(v == "swapped" for v in outcomes.values()) else 1


async def cmd_watch(args: argparse.Namespace) -> int:
    async with FleetClient(_access(args)) as fleet:
        outcomes = await watch(fleet, args.vehicles, label=args.model, timeout_s=args.timeout)
    print(json.dumps(outcomes))
    return 0 if all(v == "swapped" for v in outcomes.values()) else 1


async def cmd_clear(args: argparse.Namespace) -> int:
    offer, _ = read_offer(args.offer)
    async with FleetClient(_access(args)) as fleet:
        for vehicle in vehicles_of(args.vehicles):
            await clear(fleet, offer, vehicle)
    return 0


async def cmd_rollout(args: argparse.Namespace) -> int:
    if args.state.exists() and args.offer is None:
        plan = rollout.Rollout.load(args.state)
        offer_file, model_file = Path(plan.offer_file), Path(plan.model_file)
        print(f"rollout: resuming {plan.model} from {args.state} ({plan.status})", file=sys.stderr)
    elif args.offer is None or args.model is None:
        raise ToolError(f"{args.state} does not exist: give OFFER and MODEL to start a rollout")
    elif args.state.exists():
        raise ToolError(f"{args.state} exists: resume with --state alone, or name another file")
    else:
        offer_file, model_file = args.offer, args.model
        plan = None
    offer, _ = read_offer(offer_file)
    model_path = model_file if model_file.is_file() else model_file / "model.onnx"
    if plan is None:
        groups = ([("canary", args.canary.split(","))] if args.canary else []) + [
            (f"wave {i}", wave.split(",")) for i, wave in enumerate(args.wave, 1)
        ]
        for _, targets in groups:
            for name in targets:
                target(name)
        policy = rollout.Policy(
            health_s=args.health,
            timeout_s=args.timeout,
            abort_share=args.abort_share,
            abort_min=args.abort_min,
            pause_share=args.pause_share,
            timeouts_fail=not args.timeouts_ok,
        )
        plan = rollout.Rollout.plan(offer, offer_file, model_path, groups, policy)
        plan.save(args.state)
    async with FleetClient(_access(args)) as fleet:
        status = await rollout.run(fleet, plan, offer, model_path, args.state)
    print(json.dumps(rollout.report(plan), indent=2))
    return {"done": 0, "aborted": 1, "paused": 3}.get(status, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.model_update", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    parser.add_argument("--ca-file", type=Path, help="CA of the broker's certificate (mqtts)")
    parser.add_argument("--username", help="operator account")
    parser.add_argument("--password-credential", help="credential name holding the password")
    parser.add_argument("--prefix", default="fleet", help="topic prefix (default: fleet)")
    sub = parser.add_subparsers(dest="command", required=True)
    key = sub.add_parser("keygen", help="make an Ed25519 key pair; prints the config lines")
    key.add_argument("--out", type=Path, required=True, help="folder for <key-id>.key/.pub")
    key.add_argument("--key-id", required=True)
    sig = sub.add_parser("sign", help="sign a model folder into an offer file")
    sig.add_argument("model_dir", type=Path, help="folder with model.onnx and manifest.json")
    sig.add_argument("--key", type=Path, required=True, help="private key (PEM) from keygen")
    sig.add_argument("--key-id", required=True)
    sig.add_argument("--out", type=Path, required=True, help="the offer file to write")
    sig.add_argument("--version", help="version to publish (default: the manifest's)")
    sig.add_argument("--devices", default="*", help="comma-separated device kinds, '*' any")
    sig.add_argument("--backends", default="onnxruntime,tensorrt", help="comma-separated")
    sig.add_argument("--expires-in-days", type=float, default=30.0)
    sig.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="bytes per chunk")
    pub = sub.add_parser("publish", help="publish an offer and its model to vehicles")
    pub.add_argument("offer", type=Path)
    pub.add_argument("model", type=Path, help="the model folder or its model.onnx")
    pub.add_argument(
        "vehicles",
        nargs="+",
        help="VEHICLE or VEHICLE/CAMERA (a group: several; the offer goes to the vehicle, "
        "--watch follows the cameras named, `front` when none is)",
    )
    pub.add_argument("--watch", action="store_true", help="follow progress until done")
    pub.add_argument("--timeout", type=float, default=600.0, help="seconds to watch")
    wat = sub.add_parser("watch", help="follow vehicles' model update events")
    wat.add_argument("vehicles", nargs="+", help="VEHICLE (its front camera) or VEHICLE/CAMERA")
    wat.add_argument("--model", help="name@version to wait for")
    wat.add_argument("--timeout", type=float, default=600.0)
    clr = sub.add_parser("clear", help="remove an offer's retained messages")
    clr.add_argument("offer", type=Path)
    clr.add_argument("vehicles", nargs="+", help="vehicle ids (VEHICLE/CAMERA: its vehicle)")
    rol = sub.add_parser(
        "rollout",
        help="offer an update group by group (canary, waves), aborting on failures",
        description=rollout.__doc__.split("\n\n")[0] if rollout.__doc__ else None,
    )
    rol.add_argument("offer", type=Path, nargs="?", help="the offer file (omit to resume)")
    rol.add_argument("model", type=Path, nargs="?", help="the model folder or its model.onnx")
    rol.add_argument("--state", type=Path, required=True, help="the rollout's state file")
    rol.add_argument("--canary", help="comma-separated targets offered first")
    rol.add_argument(
        "--wave", action="append", default=[], help="comma-separated targets (repeat: in order)"
    )
    rol.add_argument("--health", type=float, default=120.0, help="seconds on the model to pass")
    rol.add_argument("--timeout", type=float, default=900.0, help="seconds to take or refuse it")
    rol.add_argument("--abort-share", type=float, default=0.1, help="failure share that aborts")
    rol.add_argument("--abort-min", type=int, default=1, help="failures needed to abort")
    rol.add_argument("--pause-share", type=float, help="failure share that pauses (default off)")
    rol.add_argument(
        "--timeouts-ok", action="store_true", help="a target that never answers is not a failure"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "sign":
            return cmd_sign(args)
        if args.command == "rollout":
            return compat.run(cmd_rollout(args))
        command = {"publish": cmd_publish, "watch": cmd_watch, "clear": cmd_clear}[args.command]
        for name in args.vehicles:
            target(name)  # a bad target is refused before any connection
        return compat.run(command(args))
    except (
        ToolError,
        rollout.RolloutError,
        SecretError,
        ValueError,
        aiomqtt.MqttError,
        TimeoutError,
    ) as exc:
        print(f"model_update: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
