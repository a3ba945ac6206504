"""Model updates, the offer: a signed update manifest (Ed25519 over canonical JSON) and its checks.

The cloud signs `UpdateManifest` with one of the fleet's keys; the vehicle trusts the public keys
its config lists (several at once, for key rotation). The signature covers the canonical JSON of
the manifest object: UTF-8, keys sorted, no whitespace (`canonical_json`). Every check that can
refuse an offer raises `UpdateRefusedError` with a `reason` code from `REFUSAL_REASONS`, before
anything is written outside the staging directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vehicle_agent.enhance.manifest import NAME_PATTERN, Manifest
from vehicle_agent.enhance.settings import ModelBackend
from vehicle_agent.validation import describe_validation

SCHEMA_VERSION: Final = 1
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$"
ANY_DEVICE = "*"

RefusalReason = Literal[
    "malformed",
    "unsigned",
    "unknown_key",
    "bad_signature",
    "expired",
    "incompatible",
    "oversize",
    "not_newer",
    "bad_version",
    "hash_mismatch",
    "bad_chunk",
    "install_failed",
    "withdrawn",
]
REFUSAL_REASONS: Mapping[str, str] = {
    "malformed": "not a signed update (JSON, fields or bounds); the message names the field",
    "unsigned": "no signature or key id",
    "unknown_key": "signed with a key the vehicle does not trust (`update.trusted_keys`)",
    "bad_signature": "the signature does not match the manifest (altered, or another key)",
    "expired": "`expires_at` has passed",
    "incompatible": "not for this device (`update.device`) or none of its backends is in the "
    "vehicle's enhance chain",
    "oversize": "larger than `update.max_model_mb`, or chunks larger than `update.max_chunk_bytes`",
    "not_newer": "version not newer than the installed one (rollback protection, kept across "
    "restarts)",
    "bad_version": "this version failed its health check or crashed the daemon before",
    "hash_mismatch": "the transferred file's size or sha256 differs from the manifest",
    "bad_chunk": "a chunk of another length than the manifest says, or with an index beyond its "
    "chunks: the sender breaks the protocol, and a retained chunk would come back the same",
    "install_failed": "the disk refused the staging or the install (message says why)",
    "withdrawn": "the fleet withdrew this update (`withdraw_update`, a rollout's abort) before "
    "it was installed; it is not taken again",
}


class UpdateRefusedError(Exception):
    """An offer or a transfer that must not be installed; `reason` is a `REFUSAL_REASONS` code."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def canonical_json(data: Any) -> bytes:
    """The bytes that are signed: UTF-8 JSON, keys sorted, no whitespace, no NaN."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def version_key(version: str) -> tuple[int, ...]:
    """Numeric parts of a version ('1.0.2' → (1, 0, 2)), as the model store compares them."""
    core = re.split(r"[-+]", version, maxsplit=1)[0]
    return tuple(int(p) for p in core.split("."))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class UpdateManifest(_Strict):
    """What the cloud signs: which model file, for which vehicles, until when."""

    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version.")
    name: str = Field(pattern=NAME_PATTERN, description="Model name (the model store's name).")
    version: str = Field(
        pattern=VERSION_PATTERN,
        description="Model version; must be newer than the vehicle's ('1.0.2' > '1.0.1').",
    )
    sha256: Sha256 = Field(description="sha256 of the ONNX file, lowercase hex.")
    size: int = Field(ge=1, le=4 << 30, description="Size of the ONNX file, bytes.")
    chunk_size: int = Field(
        ge=1024, le=1 << 20, description="Bytes per chunk message (the last one may be shorter)."
    )
    devices: list[str] = Field(
        min_length=1,
        max_length=32,
        description="Device kinds it may run on (the vehicle's `update.device`); '*' is any.",
    )
    backends: list[ModelBackend] = Field(
        min_length=1, description="Backends it was validated with."
    )
    issued_at: int = Field(ge=0, description="When it was signed, Unix seconds.")
    expires_at: int = Field(ge=0, description="Refused after this, Unix seconds.")
    model: dict[str, Any] = Field(
        description="The model's manifest.json (docs: enhance manifest), installed beside the file."
    )

    @model_validator(mode="after")
    def _model_matches(self) -> UpdateManifest:
        model = self.model_manifest()
        for key in ("name", "version", "sha256"):
            if getattr(model, key) != getattr(self, key):
                raise ValueError(
                    f"model.{key} is {getattr(model, key)!r} but the update says "
                    f"{getattr(self, key)!r}"
                )
        return self

    def model_manifest(self) -> Manifest:
        return Manifest.model_validate(self.model)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def version_key(self) -> tuple[int, ...]:
        return version_key(self.version)


class SignedUpdate(_Strict):
    """The offer as it travels: the manifest object, the key's id and the signature."""

    manifest: dict[str, Any] = Field(description="An UpdateManifest object.")
    key_id: str | None = Field(None, description="Which trusted key signed it.")
    signature: str | None = Field(
        None, description="Ed25519 signature of canonical_json(manifest), base64."
    )

    @property
    def update_id(self) -> str:
        """16 hex digits naming this signed manifest (topics, staging folders)."""
        return hashlib.sha256(canonical_json(self.manifest)).hexdigest()[:16]

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def decode_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes (what `tools.model_update keygen`
    prints)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def encode_public_key(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(manifest: UpdateManifest, key: Ed25519PrivateKey, key_id: str) -> SignedUpdate:
    """The offer for `manifest`, signed with `key` (cloud side)."""
    body = manifest.model_dump(mode="json")
    signature = base64.b64encode(key.sign(canonical_json(body))).decode()
    return SignedUpdate(manifest=body, key_id=key_id, signature=signature)


def parse_offer(payload: bytes) -> SignedUpdate:
    try:
        return SignedUpdate.model_validate_json(payload)
    except ValidationError as exc:
        raise UpdateRefusedError("malformed", describe_validation(exc)) from None


def verify_offer(
    offer: SignedUpdate,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    device: str,
    backends: Collection[str],
    max_size: int,
    max_chunk: int,
    now: float | None = None,
) -> UpdateManifest:
    """The manifest of a correctly signed, current offer for this vehicle; else
    `UpdateRefusedError`. Version checks need the install ledger (see `install.py`)."""
    if not offer.signature or not offer.key_id:
        raise UpdateRefusedError("unsigned", "the offer carries no signature or no key_id")
    key = trusted.get(offer.key_id)
    if key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise UpdateRefusedError(
            "unknown_key", f"key_id {offer.key_id!r} is not trusted (trusted: {known})"
        )
    try:
        signature = base64.b64decode(offer.signature, validate=True)
        key.verify(signature, canonical_json(offer.manifest))
    except (binascii.Error, ValueError, InvalidSignature):
        raise UpdateRefusedError(
            "bad_signature", f"signature does not verify with key {offer.key_id!r}"
        ) from None
    try:
        manifest = UpdateManifest.model_validate(offer.manifest)
    except ValidationError as exc:
        raise UpdateRefusedError(
            "malformed", describe_validation(exc, prefix="manifest.")
        ) from None
    now = time.time() if now is None else now
    if manifest.expires_at <= now:
        raise UpdateRefusedError(
            "expired", f"{manifest.label} expired {now - manifest.expires_at:.0f} s ago"
        )
    if ANY_DEVICE not in manifest.devices and device not in manifest.devices:
        raise UpdateRefusedError(
            "incompatible",
            f"{manifest.label} is for devices {manifest.devices}, this one is {device!r}",
        )
    if not set(manifest.backends) & set(backends):
        raise UpdateRefusedError(
            "incompatible",
            f"{manifest.label} is for backends {manifest.backends}; the enhance chain has "
            f"{sorted(backends) or 'no model backend'}",
        )
    if manifest.size > max_size:
        raise UpdateRefusedError(
            "oversize", f"{manifest.label} is {manifest.size} bytes, the limit is {max_size}"
        )
    if manifest.chunk_size > max_chunk:
        raise UpdateRefusedError(
            "oversize",
            f"{manifest.label} has {manifest.chunk_size}-byte chunks, the limit is {max_chunk}",
        )
    return manifest
