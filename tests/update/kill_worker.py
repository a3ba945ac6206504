"""The process the kill -9 sweep kills: it installs model updates in a loop, as fast as it can.

Each round stages an offer, writes the chunks, assembles and verifies them, installs the
version, swaps the pointer, then confirms it (or, every third round, rolls it back), alternating
two different model files, so a mix of two versions could not pass the sha256 check. `step`
tells the parent where the loop was when it was killed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vehicle_agent.enhance.manifest import read_manifest
from vehicle_agent.update.install import ModelInstaller
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest, version_key
from vehicle_agent.update.transfer import Transfer, split

STEPS = ("stage", "chunks", "assemble", "install", "activate", "settle", "idle")


def _next_version(installer: ModelInstaller, name: str) -> int:
    entry = installer.ledger()["models"].get(name, {})
    seen = [entry.get("highest"), installer.active_version(name), *entry.get("bad", [])]
    versions = [version_key(v) for v in seen if v]
    return max((v[-1] for v in versions), default=0) + 1


def _offer(source: Path, version: str) -> tuple[SignedUpdate, UpdateManifest, bytes]:
    model = read_manifest(source).model_dump(mode="json")
    model["version"] = version
    data = (source / "model.onnx").read_bytes()
    manifest = UpdateManifest.model_validate(
        {
            "name": model["name"],
            "version": version,
            "sha256": model["sha256"],
            "size": len(data),
            "chunk_size": 1024,
            "devices": ["*"],
            "backends": ["onnxruntime"],
            "issued_at": 0,
            "expires_at": 2**40,
            "model": model,
        }
    )
    return SignedUpdate(manifest=manifest.model_dump(mode="json")), manifest, data


def run(root: str, sources: list[str], ready: Any, step: Any) -> None:
    installer = ModelInstaller(Path(root))
    installer.recover(max_crashes=1_000_000)
    ready.set()
    while True:
        n = _next_version(installer, "tiny")
        offer, manifest, data = _offer(Path(sources[n % 2]), f"1.0.{n}")
        step.value = 0
        staging = installer.stage_offer(offer)
        step.value = 1
        transfer = Transfer(staging, manifest)
        for index, chunk in enumerate(split(data, manifest.chunk_size)):
            transfer.add(index, chunk)
        step.value = 2
        assembled = transfer.assemble()
        step.value = 3
        installer.install(offer, manifest, assembled)
        installer.discard(offer.update_id)
        step.value = 4
        installer.activate(manifest)
        step.value = 5
        if n % 3 == 0:
            installer.rollback("tiny", manifest.version, "sweep")
        else:
            installer.confirm("tiny")
        step.value = 6
