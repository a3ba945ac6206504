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
from pathlib import Path, PurePath
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    Field,
    ValidationError,
    field_validator,
)

from vehicle_agent.capture.settings import (
    CaptureConfig,
    ReconnectConfig,
)
from vehicle_agent.compat import tomllib
from vehicle_agent.config_base import ConfigModel
from vehicle_agent.control.settings import ControlConfig
from vehicle_agent.enhance.settings import (
    DEFAULT_GATING,
    GATE_WORDS,
    MODEL_BACKENDS,
    ClassicalEnhancerConfig,
    EnhanceConfig,
    EnhanceHealthConfig,
    EnhancerConfig,
    OnnxRuntimeEnhancerConfig,
    PassthroughEnhancerConfig,
    TensorRtEnhancerConfig,
)
from vehicle_agent.quality.settings import AdhesionConfig, QualityConfig
from vehicle_agent.update.settings import UpdateConfig
from vehicle_agent.uplink.settings import (
    MqttUplinkConfig,
    NoUplinkConfig,
    OutboxConfig,
    UplinkConfig,
    UploadConfig,
)
from vehicle_agent.uplink.topics import camera_id_problem
from vehicle_agent.validation import (
    first_problem,
    key_path,
)

__all__ = [
    "DEFAULT_GATING",
    "GATE_WORDS",
    "MODEL_BACKENDS",
    "AdhesionConfig",
    "CaptureConfig",
    "ClassicalEnhancerConfig",
    "Config",
    "ConfigError",
    "ConfigModel",
    "ControlConfig",
    "EnhanceConfig",
    "EnhanceHealthConfig",
    "EnhancerConfig",
    "MqttUplinkConfig",
    "NoUplinkConfig",
    "OnnxRuntimeEnhancerConfig",
    "OutboxConfig",
    "PassthroughEnhancerConfig",
    "QualityConfig",
    "ReconnectConfig",
    "TensorRtEnhancerConfig",
    "UplinkConfig",
    "UploadConfig",
    "load_config",
    "parse_config",
]

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
