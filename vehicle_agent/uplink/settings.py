"""Uplink stage: the `[uplink]` config models (MQTT link, outbox, uploads), beside the code
they set (`vehicle_agent.config` composes them into `Config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vehicle_agent.compat import Self
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.uplink.discovery import HomeAssistantConfig
from vehicle_agent.validation import BROKER_URL, BROKER_URL_FORM, parse_broker_url


class NoUplinkConfig(ConfigModel):
    type: Literal["none"] = Field("none", description="Nothing leaves the vehicle.")


class OutboxConfig(ConfigModel):
    path: Path | None = Field(
        None,
        description=(
            "SQLite file of the outbox, which also keeps sequence numbers, the ledger of commands "
            "already run and settings changed by set_config; none: <agent.state_dir>/uplink.sqlite3."
        ),
    )
    budget_mb: float = Field(
        256.0,
        ge=1.0,
        le=100_000.0,
        description="Disk budget, MiB: the SQLite file and its write-ahead log together stay "
        "within it plus 64 KiB after every write; over it, the lowest-priority, oldest messages "
        "are dropped (and counted).",
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description=(
            "'normal' survives a crash of the daemon; 'full' also a power cut, at the cost of "
            "an fsync per write."
        ),
    )
    ttl_reply_s: float = Field(
        86_400.0, ge=1.0, le=2_592_000.0, description="Command replies older than this are dropped."
    )
    ttl_event_s: float = Field(
        604_800.0,
        ge=1.0,
        le=2_592_000.0,
        description="Events older than this are dropped, seconds.",
    )
    ttl_telemetry_s: float = Field(
        86_400.0,
        ge=1.0,
        le=2_592_000.0,
        description="Telemetry older than this is dropped, seconds.",
    )
    ttl_frame_s: float = Field(
        3_600.0,
        ge=1.0,
        le=2_592_000.0,
        description="Frame uploads older than this are dropped (no stale replay after an outage).",
    )


class UploadConfig(ConfigModel):
    good_frame_every_s: float = Field(
        600.0,
        ge=0.0,
        le=86_400.0,
        description="Upload the first good frame after this many seconds since the last; 0: never.",
    )
    good_min_sharpness: float = Field(
        50.0,
        ge=0.0,
        le=1_000_000.0,
        description="A good frame is at least this sharp (variance of the Laplacian).",
    )
    good_min_brightness: float = Field(
        40.0, ge=0.0, le=255.0, description="A good frame has at least this mean luma (0–255)."
    )
    good_max_brightness: float = Field(
        220.0, ge=0.0, le=255.0, description="A good frame has at most this mean luma (0–255)."
    )
    good_max_adhesion: float = Field(
        0.2, ge=0.0, le=1.0, description="A good frame has at most this adhesion score (0–1)."
    )
    around_cleaning_frames: int = Field(
        2, ge=0, le=10, description="Frames uploaded just before and just after a lens cleaning."
    )
    max_frames_per_hour: int = Field(
        60, ge=0, le=3_600, description="Rate limit of all uploads; 0 uploads nothing."
    )
    content: Literal["raw", "enhanced"] = Field(
        "raw", description="Which picture policy uploads carry: as captured, or enhanced."
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of uploads (30–100).")
    max_width: int = Field(
        1920, ge=64, le=8192, description="Wider frames are downscaled to this width, pixels."
    )
    chunk_kib: int = Field(
        64, ge=1, le=1024, description="Uploads are sent in chunks of this many KiB."
    )

    @model_validator(mode="after")
    def _brightness_range(self) -> Self:
        if self.good_max_brightness < self.good_min_brightness:
            raise ValueError("good_max_brightness is below good_min_brightness")
        return self


class MqttUplinkConfig(ConfigModel):
    type: Literal["mqtt"] = Field("mqtt", description="MQTT 5 link to the fleet broker.")
    broker: str = Field(
        description=(
            "Broker URL: mqtts://HOST[:PORT] (TLS, default port 8883) or mqtt://HOST[:PORT] "
            "(plain TCP, 1883; refused when TLS files are given)."
        ),
    )
    ca_file: Path | None = Field(
        None, description="CA certificate(s) that sign the broker's; required with mqtts://."
    )
    client_cert_file: Path | None = Field(
        None, description="Client certificate (PEM) to authenticate with, instead of a password."
    )
    client_key_file: Path | None = Field(
        None, description="Key of the client certificate, when not inside client_cert_file."
    )
    username: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Username; the broker's ACL expects the vehicle id. None with a certificate.",
    )
    password_credential: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Name of the credential (or VEHICLE_AGENT_<NAME> variable) holding the password.",
    )
    topic_prefix: str = Field(
        "fleet",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="First topic level; the camera's topics are <prefix>/<vehicle_id>/<camera_id>/….",
    )
    keepalive_s: int = Field(
        30, ge=5, le=1200, description="MQTT keepalive: a silent link is declared lost after 1.5×."
    )
    connect_timeout_s: float = Field(
        10.0, ge=0.5, le=120.0, description="A connection not established by then is retried."
    )
    session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=2_592_000,
        description="How long the broker keeps commands for this vehicle while it is offline.",
    )
    reconnect_initial_s: float = Field(
        0.5, ge=0.01, le=60.0, description="First wait before reconnecting, seconds (jittered)."
    )
    reconnect_max_s: float = Field(
        30.0, ge=0.01, le=3_600.0, description="Longest wait between reconnect attempts, seconds."
    )
    max_inflight: int = Field(
        32, ge=1, le=1_000, description="Messages sent and not yet acknowledged, at most."
    )
    telemetry_interval_s: float = Field(
        10.0, ge=0.1, le=3_600.0, description="Seconds between telemetry messages."
    )
    drain_on_close_s: float = Field(
        2.0,
        ge=0.0,
        le=10.0,
        description="On shutdown, time allowed to send what the outbox holds before leaving it.",
    )
    command_max_bytes: int = Field(
        16_384, ge=256, le=1_048_576, description="Larger command payloads are refused, bytes."
    )
    command_memory_s: float = Field(
        604_800.0,
        ge=3_600.0,
        le=31_536_000.0,
        description="How long command ids are remembered to refuse running one twice, seconds.",
    )
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="Durable queue of outgoing messages."
    )
    upload: UploadConfig = Field(
        default_factory=UploadConfig, description="Frame uploads (the fleet's training data)."
    )
    home_assistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant MQTT discovery of the camera (docs/mqtt.md); off by default.",
    )

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        # A plain message: the regular expression itself helps nobody.
        if not BROKER_URL.match(url):
            raise ValueError(f"does not match the pattern {BROKER_URL_FORM}")
        return url

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        tls_files = [
            name
            for name in ("ca_file", "client_cert_file", "client_key_file")
            if getattr(self, name) is not None
        ]
        if self.broker.startswith("mqtt://") and tls_files:
            raise ValueError(
                f"{', '.join(tls_files)} given but the broker URL is plain mqtt://: use "
                "mqtts:// (plain TCP is refused when TLS is configured)"
            )
        if self.broker.startswith("mqtts://") and self.ca_file is None:
            raise ValueError("mqtts:// needs ca_file, the CA that signed the broker's certificate")
        if self.client_key_file is not None and self.client_cert_file is None:
            raise ValueError("client_key_file given without client_cert_file")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s is smaller than reconnect_initial_s")
        parse_broker_url(self.broker)  # the port's range
        return self

    def address(self) -> tuple[bool, str, int]:
        """(tls, host, port) of the broker."""
        address = parse_broker_url(self.broker)
        return address.tls, address.host, address.port


UplinkConfig = Annotated[NoUplinkConfig | MqttUplinkConfig, Field(discriminator="type")]
