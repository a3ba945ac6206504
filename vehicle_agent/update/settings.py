"""Model updates: the `[update]` config section (trusted keys, limits, health gate, trial).

Closed and bounded like every section of `vehicle_agent.config` (which splices `UpdateConfig` in
as `Config.update`): `extra="forbid"`, bounds on every number, a description on every field.
"""

from __future__ import annotations

import platform
from pathlib import Path

from pydantic import Field, field_validator

from vehicle_agent.config_base import ConfigModel

_KEY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def default_device() -> str:
    """'<os>-<machine>', e.g. 'linux-aarch64' on a Jetson, 'linux-x86_64' on a bench PC."""
    return f"{platform.system().lower()}-{platform.machine().lower()}"


class UpdateConfig(ConfigModel):
    """`[update]`: signed model updates over the fleet link (docs/model-updates.md)."""

    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        max_length=8,
        description="Key id → Ed25519 public key (base64 of its 32 bytes, as `python -m "
        "tools.model_update keygen` prints it). Updates signed by any of them are accepted "
        "(several at once: key rotation). Empty: the vehicle takes no model updates.",
    )
    device: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="This vehicle's device kind, matched against an update's `devices`; none: "
        "'<os>-<machine>' (e.g. 'linux-aarch64').",
    )
    max_model_mb: float = Field(
        256.0, ge=0.01, le=4096.0, description="Larger model updates are refused, MiB."
    )
    max_chunk_bytes: int = Field(
        262_144,
        ge=1024,
        le=1_048_576,
        description="Updates with larger chunk messages are refused, bytes (the vehicle announces "
        "an MQTT Maximum Packet Size that fits them).",
    )
    window_chunks: int = Field(
        8,
        ge=1,
        le=256,
        description="Chunks requested at a time (one subscription each): the broker sends no "
        "more than this ahead, so a large model floods neither the link nor the broker's queue.",
    )
    progress_interval_s: float = Field(
        2.0,
        ge=0.0,
        le=3600.0,
        description="Seconds between `model_update_progress` events during a transfer.",
    )
    stall_s: float = Field(
        15.0,
        ge=0.5,
        le=3600.0,
        description="A transfer that receives nothing for this long subscribes to its chunks "
        "again (the broker re-sends the retained ones the vehicle lacks), seconds.",
    )
    golden_frames: Path | None = Field(
        None,
        description="Folder of PNG/JPEG frames the new model is checked on before it runs; none "
        "uses frames of the sample street clip shipped with the package.",
    )
    golden_count: int = Field(
        4, ge=1, le=64, description="Golden frames the health check runs (the first ones)."
    )
    golden_width: int = Field(
        640, ge=32, le=4096, description="Golden frames wider than this are shrunk to it, pixels."
    )
    max_latency_ms: float = Field(
        250.0,
        ge=1.0,
        le=60_000.0,
        description="The health check fails when the median time per golden frame exceeds "
        "this, milliseconds (include the slowest vehicle's margin).",
    )
    max_mean_change: float = Field(
        96.0,
        ge=1.0,
        le=255.0,
        description="The health check fails when an output differs from its golden frame by "
        "more than this on average (0–255 scale): an enhancer improves, it does not replace.",
    )
    blank_std: float = Field(
        1.0,
        ge=0.0,
        le=64.0,
        description="Output whose pixel standard deviation is below this, from a golden frame "
        "above it, fails the health check (0–255 scale; 0 turns the check off).",
    )
    confirm_after_s: float = Field(
        120.0,
        ge=0.0,
        le=86_400.0,
        description="After the swap, the new model becomes the rollback floor once the daemon "
        "has run this long with it, seconds.",
    )
    max_crashes: int = Field(
        3,
        ge=1,
        le=100,
        description="Starts after an unclean stop (crash, kill, power cut) before the new model "
        "is confirmed, after which it is rolled back and marked bad.",
    )

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: dict[str, str]) -> dict[str, str]:
        import re  # noqa: PLC0415

        from vehicle_agent.update.manifest import decode_public_key  # noqa: PLC0415

        for key_id, text in keys.items():
            if not re.fullmatch(_KEY_ID, key_id):
                raise ValueError(f"key id {key_id!r} must match {_KEY_ID}")
            try:
                decode_public_key(text)
            except ValueError as exc:
                raise ValueError(f"{key_id}: {exc}") from None
        return keys

    @property
    def device_kind(self) -> str:
        return self.device or default_device()

    @property
    def enabled(self) -> bool:
        return bool(self.trusted_keys)
