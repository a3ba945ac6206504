"""Model update test helpers: keys, tiny model folders (good, NaN, blank), signed offers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.enhance.helpers import model_dir
from tools.model_update import make_offer
from vehicle_agent.enhance.manifest import read_manifest, sha256_file, write_manifest
from vehicle_agent.update.manifest import SignedUpdate, UpdateManifest, encode_public_key

NAME = "tiny"


class Keys:
    """Two trusted keys (rotation) and one the vehicle does not know."""

    def __init__(self) -> None:
        self.old = Ed25519PrivateKey.generate()
        self.new = Ed25519PrivateKey.generate()
        self.stranger = Ed25519PrivateKey.generate()

    def trusted(self) -> dict[str, str]:
        return {
            "fleet-old": encode_public_key(self.old.public_key()),
            "fleet-new": encode_public_key(self.new.public_key()),
        }


def tiny_model(root: Path, version: str = "1.0.0", kind: str = "good", name: str = NAME) -> Path:
    """`root/<name>/`: a 1×1 convolution; 'nan' outputs NaN, 'blank' a flat grey, 'other'
    different weights (another file, another sha256)."""
    weights: dict[str, Any] = {}
    if kind == "nan":
        weights = {"weights": np.full((3, 3), np.nan, np.float32)}
    elif kind == "blank":
        weights = {
            "weights": np.zeros((3, 3), np.float32),
            "bias": np.full(3, 0.5, np.float32),
        }
    elif kind == "other":
        weights = {"weights": np.eye(3, dtype=np.float32) * 0.9}
    directory = model_dir(root, name, version, **weights)
    # Padded to a few KiB so that transfers come in several 1 KiB chunks.
    proto = onnx.load(str(directory / "model.onnx"))
    proto.doc_string = f"test model {kind} " + "." * 5000
    onnx.save(proto, str(directory / "model.onnx"))
    manifest = read_manifest(directory)
    write_manifest(
        directory, manifest.model_copy(update={"sha256": sha256_file(directory / "model.onnx")})
    )
    return directory


def offer_for(
    model: Path,
    key: Ed25519PrivateKey,
    key_id: str = "fleet-new",
    *,
    version: str | None = None,
    chunk_size: int = 1024,
    **fields: Any,
) -> SignedUpdate:
    return make_offer(model, key, key_id, version=version, chunk_size=chunk_size, **fields)


def resign(
    offer: SignedUpdate, key: Ed25519PrivateKey, key_id: str, **changes: Any
) -> SignedUpdate:
    """The same offer with manifest fields changed, signed again."""
    from vehicle_agent.update.manifest import sign  # noqa: PLC0415

    manifest = UpdateManifest.model_validate({**offer.manifest, **changes})
    return sign(manifest, key, key_id)


def expired_in(seconds: float) -> int:
    return int(time.time() + seconds)
