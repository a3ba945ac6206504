"""The daemon's configuration: TOML read with tomllib, validated by closed, bounded pydantic models.

Every field has a description (docs/configuration.md is generated from them) and every number
has bounds. Secrets never sit in the file: fields ending in `_credential` name a systemd
credential or environment variable that `vehicle_agent.secrets` resolves at run time.

Values read from TOML are validated strictly (`keepalive_s = "30"` is an error, not 30), and
`load_config` also checks what a config file names outside itself (the capture URI's form, the
files and folders that must exist), so what `check-config` accepts, `run` starts with.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vehicle_agent.compat import Self, tomllib
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.control.settings import ControlConfig
from vehicle_agent.quality.settings import AdhesionConfig, QualityConfig
from vehicle_agent.update.settings import UpdateConfig
from vehicle_agent.uplink.discovery import HomeAssistantConfig
from vehicle_agent.uplink.topics import camera_id_problem
from vehicle_agent.validation import (
    BROKER_URL,
    BROKER_URL_FORM,
    first_problem,
    key_path,
    parse_broker_url,
)

__all__ = ["Config", "ConfigError", "ConfigModel", "ControlConfig", "load_config", "parse_config"]

SECRET_KEY_WORDS = ("password", "passwd", "secret", "token", "private_key", "api_key")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""

    def __init__(self, path: Path | str | None, key: str | None, message: str) -> None:
        self.path = str(path) if path is not None else None
        self.key = key
        self.message = message
        where = ": ".join(p for p in (self.path, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class AgentConfig(ConfigModel):
    vehicle_id: str = Field(
        "bench-vehicle",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Identifier of this vehicle in the fleet (letters, digits, '-' and '_').",
    )
    camera_id: str = Field(
        "front",
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Identifier of the camera this daemon controls (letters, digits, '-' and "
        "'_'; not a word of the fleet link's topics, see docs/mqtt.md). Each camera of a "
        "vehicle runs its own daemon with its own camera_id and state_dir.",
    )
    state_dir: Path = Field(
        Path("/var/lib/vehicle-agent"),
        # A Path already; validated, it would fail parse_config's strict (JSON) mode.
        validate_default=False,
        description="Directory for persistent state (outbox, models, counters); one per camera.",
    )

    @field_validator("camera_id")
    @classmethod
    def _camera_topic_level(cls, camera_id: str) -> str:
        problem = camera_id_problem(camera_id)
        if problem is not None:
            raise ValueError(problem)
        return camera_id


class ReconnectConfig(ConfigModel):
    initial_s: float = Field(
        0.5, ge=0.01, le=60.0, description="First wait before reopening a lost source, seconds."
    )
    max_s: float = Field(
        10.0, ge=0.01, le=600.0, description="Longest wait between reopen attempts, seconds."
    )
    multiplier: float = Field(
        2.0, ge=1.0, le=10.0, description="Factor applied to the wait after each failed attempt."
    )
    jitter: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Random fraction of the wait added or removed so a fleet does not retry in step.",
    )
    max_attempts: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Give up after this many failed attempts in a row; 0 retries forever.",
    )

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Self:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) is smaller than initial_s ({self.initial_s})")
        return self


class CaptureConfig(ConfigModel):
    uri: str = Field(
        "v4l2:///dev/video0",
        min_length=1,
        description=(
            "Where frames come from: file://PATH (video), file://DIR or a bare DIR (image folder), "
            "v4l2:///dev/videoN, csi://N (Jetson CSI camera) or gst://PIPELINE (GStreamer)."
        ),
    )
    pacing: Literal["realtime", "max"] = Field(
        "realtime",
        description=(
            "Recorded media only: 'realtime' replays at the recording's frame rate (a full queue "
            "drops the oldest frame, as with a camera); 'max' goes as fast as the pipeline takes "
            "frames and never drops."
        ),
    )
    on_end: Literal["auto", "stop", "loop", "reconnect"] = Field(
        "auto",
        description=(
            "What to do when the source ends: 'stop' the pipeline, 'loop' a recording from the "
            "start, or 'reconnect' as for a lost camera. 'auto' stops for recordings and "
            "reconnects for cameras and GStreamer pipelines."
        ),
    )
    width: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Requested frame width for cameras; none keeps the default.",
    )
    height: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Requested frame height for cameras; none keeps the default.",
    )
    fps: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description=(
            "Frame rate: requested from cameras, and used to pace image folders and recordings "
            "that do not state one (none: the source's own, else 10)."
        ),
    )
    gst_backend: Literal["auto", "opencv", "subprocess"] = Field(
        "auto",
        description=(
            "How gst:// and csi:// pipelines run: inside OpenCV ('opencv', needs a cv2 built "
            "with GStreamer), as a gst-launch-1.0 process that can be killed when a camera "
            "wedges ('subprocess'), or 'auto': OpenCV when it has GStreamer, else the process."
        ),
    )
    open_timeout_s: float = Field(
        20.0,
        ge=1.0,
        le=300.0,
        description="Opening a source that takes longer than this counts as a failed attempt.",
    )
    stall_timeout_s: float = Field(
        3.0,
        ge=0.1,
        le=120.0,
        description="A source that delivers no frame for this long is reported lost and reopened.",
    )
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Backoff when a source is lost."
    )


class PipelineConfig(ConfigModel):
    queue_size: int = Field(
        4,
        ge=1,
        le=64,
        description="Frames each queue between stages holds; a full queue drops its oldest frame.",
    )
    shutdown_timeout_s: float = Field(
        4.0,
        ge=0.5,
        le=5.0,
        description="On SIGTERM/SIGINT, stages get this long to drain before they are cancelled.",
    )
    stall_s: float = Field(
        5.0,
        ge=0.5,
        le=600.0,
        description="A stage on one frame for longer than this is stalled: the service stops "
        "its systemd watchdog pings (so systemd restarts it after WatchdogSec) and emits "
        "stage_stalled. Keep it below WatchdogSec.",
    )


class PassthroughEnhancerConfig(ConfigModel):
    type: Literal["passthrough"] = Field(
        "passthrough", description="Frames go out as they came in."
    )


class ClassicalEnhancerConfig(ConfigModel):
    type: Literal["classical"] = Field(
        "classical", description="Contrast-limited histogram equalisation and gamma, no model."
    )
    clip_limit: float = Field(
        2.0, ge=0.1, le=40.0, description="CLAHE clip limit: higher gives more local contrast."
    )
    tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side.")
    target_brightness: float = Field(
        110.0,
        ge=1.0,
        le=254.0,
        description="Mean luma (0–255) that the gamma correction aims for on dark frames.",
    )
    max_gamma_gain: float = Field(
        2.5,
        ge=1.0,
        le=10.0,
        description="Limit of the brightening: 1/gamma never exceeds this.",
    )


class OnnxRuntimeEnhancerConfig(ConfigModel):
    type: Literal["onnxruntime"] = Field(
        "onnxruntime",
        description="The model run by onnxruntime: CUDA provider when present, else the CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="'auto': the CUDA provider when onnxruntime has it, else the CPU; 'cuda' "
        "makes a missing CUDA provider a load failure (the chain falls back).",
    )
    intra_op_threads: int = Field(
        2,
        ge=0,
        le=64,
        description="Threads one operator may use; 0 lets onnxruntime take one per core.",
    )
    inter_op_threads: int = Field(
        1, ge=1, le=64, description="Operators run in parallel (1: sequential, the usual best)."
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let idle worker threads spin: lower latency, but they burn cores that "
        "capture and analysis share.",
    )


class TensorRtEnhancerConfig(ConfigModel):
    type: Literal["tensorrt"] = Field(
        "tensorrt",
        description="The model as a TensorRT engine (NVIDIA GPU, tensorrt + pycuda), built "
        "from the ONNX file once and cached.",
    )
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16",
        description="Engine precision; 'int8' calibrates on calibration_dir (FP16 where INT8 "
        "has no kernel).",
    )
    calibration_dir: Path | None = Field(
        None, description="Folder of typical frames (JPEG/PNG) for INT8 calibration."
    )
    calibration_images: int = Field(
        64, ge=1, le=10_000, description="Calibration uses at most this many images."
    )
    workspace_mb: int = Field(
        1024, ge=16, le=65_536, description="Scratch memory the engine builder may use, MiB."
    )
    opt_width: int = Field(
        1280, ge=16, le=8192, description="Width the engine is tuned for (the camera's)."
    )
    opt_height: int = Field(
        720, ge=16, le=8192, description="Height the engine is tuned for (the camera's)."
    )
    max_width: int = Field(
        1920, ge=16, le=8192, description="Widest frame the engine accepts, pixels."
    )
    max_height: int = Field(
        1088, ge=16, le=8192, description="Tallest frame the engine accepts, pixels."
    )
    engine_dir: Path | None = Field(
        None, description="Where built engines are cached; none: <agent.state_dir>/engines."
    )
    device: int = Field(0, ge=0, le=15, description="CUDA device index.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.precision == "int8" and self.calibration_dir is None:
            raise ValueError("precision 'int8' needs calibration_dir (a folder of frames)")
        if self.max_width < self.opt_width or self.max_height < self.opt_height:
            raise ValueError("max_width/max_height must be at least opt_width/opt_height")
        return self


EnhancerConfig = Annotated[
    PassthroughEnhancerConfig
    | ClassicalEnhancerConfig
    | OnnxRuntimeEnhancerConfig
    | TensorRtEnhancerConfig,
    Field(discriminator="type"),
]


def _default_chain() -> list[EnhancerConfig]:
    return [OnnxRuntimeEnhancerConfig(), ClassicalEnhancerConfig()]


MODEL_BACKENDS = frozenset({"onnxruntime", "tensorrt"})
"""Backend types that run a model (the others need none)."""
GATE_WORDS = frozenset({"none", "classical"})
"""Gating values that name no model: 'none' passes frames unchanged, 'classical' skips models."""
DEFAULT_GATING: dict[str, str] = {"rain": "none"}
"""Nothing on lens drops (the fan's job), `model` (fast-enhance) elsewhere. The restoration
model is opt-in (`low_light = "restore"`, `blur = "restore"`): on the held-out footage it does
not beat fast-enhance yet, and on a CPU it is too slow for the frame rate (models/restore)."""

_MODEL_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # the same as vehicle_agent.enhance.manifest
_CONDITION = r"^[a-z][a-z0-9_]{0,31}$"


class EnhanceHealthConfig(ConfigModel):
    max_latency_ms: float = Field(
        60.0,
        ge=1.0,
        le=60_000.0,
        description="A backend slower than this on a frame had a slow frame, milliseconds.",
    )
    slow_frames: int = Field(
        30,
        ge=1,
        le=100_000,
        description="Slow frames in a row after which a backend is demoted to the next one.",
    )
    promote_after_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="A demoted backend gets a health check this long after its demotion; "
        "passing it promotes it back.",
    )
    promote_max_s: float = Field(
        900.0,
        ge=0.0,
        le=86_400.0,
        description="Each failed health check doubles the wait before the next one, from "
        "promote_after_s up to this (never below promote_after_s), seconds.",
    )
    blank_std: float = Field(
        1.0,
        ge=0.0,
        le=64.0,
        description="Output whose pixel standard deviation is below this, from an input above "
        "it, is blank: the backend failed (0–255 scale).",
    )


class EnhanceConfig(ConfigModel):
    """`[enhance]`: the backend chain, the models and which one runs for which scene."""

    chain: list[EnhancerConfig] = Field(
        default_factory=_default_chain,
        min_length=1,
        max_length=8,
        description="Backends in order of preference (`[[enhance.chain]]` tables, each chosen by "
        "'type'); a backend that fails is demoted to the next one, and passthrough always ends "
        "the chain, so a frame always comes out.",
    )
    backend: EnhancerConfig = Field(
        default_factory=ClassicalEnhancerConfig,
        description="Short form: `[enhance.backend]` alone is a chain of that one backend. "
        "Not allowed together with `chain`.",
    )
    model: str = Field(
        "fast-enhance",
        pattern=_MODEL_NAME,
        description="Model that model backends run when `gating` names none for the scene "
        "condition (and before the first condition is known).",
    )
    gating: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_GATING),
        max_length=32,
        description="Scene condition (from the quality monitor: 'normal', 'low_light', 'fog', "
        "'rain', 'blur', …) → model name, 'classical' (no model: the chain's model-free "
        "backends) or 'none' (frames pass unchanged). Unlisted conditions run `model`.",
    )
    switch_after_frames: int = Field(
        3,
        ge=1,
        le=1000,
        description="A new condition must hold for this many analysed frames before the model "
        "switches (no flicker at a threshold).",
    )
    model_dirs: list[Path] = Field(
        default_factory=list,
        max_length=16,
        description="Extra model folders, searched with <agent.state_dir>/models (updates) and "
        "the models shipped with the package; the highest version of a name wins.",
    )
    health: EnhanceHealthConfig = Field(
        default_factory=EnhanceHealthConfig,
        description="When a backend is demoted and promoted back.",
    )
    guard: bool = Field(
        default=True,
        description="Check every model/classical output against its input and fall back towards "
        "the input where it is unlikely to help (the input was already good; the output darkens "
        "a frame that is not bright, clips, flattens, or amplifies noise); smoothed over a few "
        "frames. Off: outputs are shown as the backend gives them.",
    )

    @field_validator("gating")
    @classmethod
    def _gating_names(cls, table: dict[str, str]) -> dict[str, str]:
        for condition, choice in table.items():
            if not re.fullmatch(_CONDITION, condition):
                raise ValueError(f"condition {condition!r} must match {_CONDITION}")
            if not re.fullmatch(_MODEL_NAME, choice):
                raise ValueError(
                    f"{condition} = {choice!r}: a model name, 'classical' or 'none' "
                    f"(matching {_MODEL_NAME})"
                )
        return table

    @model_validator(mode="after")
    def _backend_is_a_chain_of_one(self) -> Self:
        if "backend" in self.model_fields_set:
            if "chain" in self.model_fields_set:
                raise ValueError("give either [enhance.backend] or [[enhance.chain]], not both")
            # Frozen model: set the derived field once, here, while it is being built.
            object.__setattr__(self, "chain", [self.backend])
        return self


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


class OutputConfig(ConfigModel):
    video: Path | None = Field(
        None, description="Write the output to this video file (.mp4 or .avi); none writes none."
    )
    video_content: Literal["enhanced", "raw", "side_by_side"] = Field(
        "enhanced", description="What the video shows; 'side_by_side' is raw | enhanced."
    )
    video_fps: float | None = Field(
        None,
        gt=0.0,
        le=240.0,
        description="Frame rate written into the video; none uses the source's.",
    )
    image_dir: Path | None = Field(
        None, description="Write output frames as numbered JPEG files into this directory."
    )
    image_every: int = Field(
        1, ge=1, le=100_000, description="Write one image out of this many frames."
    )
    events: Path | None = Field(None, description="Append every event as a JSON line to this file.")


class LoggingConfig(ConfigModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    format: Literal["auto", "human", "json", "journald"] = Field(
        "auto",
        description=(
            "'human' lines, one 'json' object per line, or 'journald' (JSON with syslog priority "
            "prefixes that the journal understands). 'auto': journald when systemd captures "
            "stderr, human on a terminal, JSON otherwise."
        ),
    )


class ServiceConfig(ConfigModel):
    metrics_host: Literal["127.0.0.1", "::1", "localhost"] = Field(
        "127.0.0.1", description="Loopback address of the Prometheus endpoint (never exposed)."
    )
    metrics_port: int = Field(
        9108,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint on metrics_host; 0 turns it off.",
    )


class Config(ConfigModel):
    """The whole configuration file."""

    agent: AgentConfig = Field(default_factory=AgentConfig, description="Who this daemon is.")
    capture: CaptureConfig = Field(
        default_factory=CaptureConfig, description="Frame source and reconnect."
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig, description="Queues between stages and shutdown."
    )
    enhance: EnhanceConfig = Field(default_factory=EnhanceConfig, description="Frame enhancement.")
    quality: QualityConfig = Field(
        default_factory=QualityConfig, description="Image quality monitor."
    )
    adhesion: AdhesionConfig = Field(
        default_factory=AdhesionConfig, description="Lens adhesion detector."
    )
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="Lens-cleaning fan and thermal protection."
    )
    uplink: UplinkConfig = Field(
        default_factory=NoUplinkConfig, description="Link to the fleet backend."
    )
    update: UpdateConfig = Field(
        default_factory=UpdateConfig, description="Signed model updates over the fleet link."
    )
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="Video, images and event log written locally."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    service: ServiceConfig = Field(
        default_factory=ServiceConfig, description="systemd integration and metrics endpoint."
    )

    def digest(self) -> str:
        """Short sha256 of the effective configuration, for logs and telemetry."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _describe(error: ValidationError, path: Path | str | None) -> ConfigError:
    # Discriminated unions add the tag ("classical") to the location; it is not a key the user wrote.
    loc, message = first_problem(error, skip=_UNION_TAGS)
    return ConfigError(path, key_path(loc) or None, message)


def _union_tags() -> set[str]:
    """Values of the discriminator fields ('type', 'driver') of every config section."""
    tags: set[str] = set()
    stack: list[type[ConfigModel]] = [ConfigModel]
    while stack:
        model = stack.pop()
        stack.extend(model.__subclasses__())
        for name in ("type", "driver"):
            field = model.model_fields.get(name)
            if field is not None and get_origin(field.annotation) is Literal:
                tags.update(str(a) for a in get_args(field.annotation))
    return tags


_UNION_TAGS = _union_tags()


def _find_secret(data: Any, prefix: str = "") -> str | None:
    """Key path of the first key that looks like a secret written into the file."""
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        lowered = str(key).lower()
        if not lowered.endswith("_credential") and any(w in lowered for w in SECRET_KEY_WORDS):
            return path
        found = _find_secret(value, path)
        if found:
            return found
    return None


def _not_json(data: Any, prefix: str = "") -> str | None:
    """Key path of the first value JSON cannot carry (a TOML date or time)."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = _not_json(value, f"{prefix}.{key}" if prefix else str(key))
            if found is not None:
                return found
        return None
    if isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found = _not_json(value, f"{prefix}[{i}]")
            if found is not None:
                return found
        return None
    if data is None or isinstance(data, str | int | float | PurePath):
        return None
    return prefix


def parse_config(data: dict[str, Any], path: Path | str | None = None) -> Config:
    """Validate a decoded TOML document; errors name `path` and the key.

    Strictly: TOML has types, so a string where a number belongs (`keepalive_s = "30"`), a
    float where an integer belongs or a boolean where a number belongs is an error, as pydantic
    validates JSON in strict mode (strings for paths, integers for floats)."""
    secret = _find_secret(data)
    if secret is not None:
        key = secret.rsplit(".", 1)[-1]
        raise ConfigError(
            path,
            secret,
            "secrets never sit in the config file: remove it and name a systemd credential "
            f"or environment variable in '{key}_credential' instead",
        )
    odd = _not_json(data)
    if odd is not None:
        raise ConfigError(path, odd or None, "dates and times are not configuration values")
    document = json.dumps(data, default=str)  # str: paths given as Path objects (callers)
    try:
        return Config.model_validate_json(document, strict=True)
    except ValidationError as exc:
        raise _describe(exc, path) from None


def check_references(config: Config, path: Path | str | None = None) -> None:
    """Refuse what a config names outside itself and cannot work: a capture URI no source
    reads, and files or folders that must exist. `load_config` runs it; `parse_config` does not
    (a document in a test or a tool may name files of another machine)."""
    # Imported here: the capture registry brings OpenCV, which plain config users do not need.
    from vehicle_agent.capture.base import SourceError  # noqa: PLC0415
    from vehicle_agent.capture.uri import open_source  # noqa: PLC0415

    try:
        open_source(config.capture.uri, config.capture)  # the form only; nothing is opened
    except SourceError as exc:
        raise ConfigError(path, "capture.uri", exc.reason) from None
    for key, value, kind in _referenced_paths(config):
        if kind == "file" and not value.is_file():
            what = "is not a file" if value.exists() else "no such file"
            raise ConfigError(path, key, f"{what}: {value}")
        if kind == "folder" and not value.is_dir():
            what = "is not a folder" if value.exists() else "no such folder"
            raise ConfigError(path, key, f"{what}: {value}")


def _referenced_paths(config: Config) -> list[tuple[str, Path, Literal["file", "folder"]]]:
    """(key, path, kind) of every path the config names that must exist before the daemon
    starts (those it creates itself, such as state_dir or the outbox, are not listed)."""
    found: list[tuple[str, Path, Literal["file", "folder"]]] = []
    uplink = config.uplink
    if isinstance(uplink, MqttUplinkConfig):
        for name in ("ca_file", "client_cert_file", "client_key_file"):
            value = getattr(uplink, name)
            if value is not None:
                found.append((f"uplink.{name}", value, "file"))
    enhance = config.enhance
    for i, folder in enumerate(enhance.model_dirs):
        found.append((f"enhance.model_dirs[{i}]", folder, "folder"))
    chain_key = "enhance.backend" if "backend" in enhance.model_fields_set else "enhance.chain"
    for i, backend in enumerate(enhance.chain):
        if isinstance(backend, TensorRtEnhancerConfig) and backend.calibration_dir is not None:
            key = chain_key if chain_key == "enhance.backend" else f"{chain_key}[{i}]"
            found.append((f"{key}.calibration_dir", backend.calibration_dir, "folder"))
    if config.quality.brisque_model_dir is not None:
        found.append(("quality.brisque_model_dir", config.quality.brisque_model_dir, "folder"))
    return found


def load_config(path: Path | str) -> Config:
    """Read and validate a TOML config file, and what it names (`check_references`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"invalid TOML: {exc}") from None
    config = parse_config(data, path)
    check_references(config, path)
    return config
