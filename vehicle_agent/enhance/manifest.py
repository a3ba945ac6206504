"""Enhance stage, model store: the schema of `models/<name>/manifest.json`, shared with training.

A model is a directory `models/<name>/` holding `model.onnx`, `manifest.json` (this schema) and
`MODEL_CARD.md`. The training tools write the manifest with `write_manifest`; the daemon reads
it with `read_manifest` and verifies the sha256 and the input spec before the first frame.

Strict where the runtime depends on a value (layout, colour order, range, stride), tolerant where
it only records (extra keys under `training` and `metrics`).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vehicle_agent.compat import UTC

MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
RESERVED_NAMES = frozenset({"none", "classical", "passthrough", "default"})
"""Words the gating table uses for "no model"; no model may be called so."""
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
TASKS = ("low_light", "dehaze", "derain", "denoise", "deblur", "general")

Task = Literal["low_light", "dehaze", "derain", "denoise", "deblur", "general"]


class ManifestError(Exception):
    """A manifest that cannot be read or does not match its model; `path` says which."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """How a model's output tensor is laid out and scaled."""

    layout: Literal["NCHW"] = Field("NCHW", description="Batch, channels, height, width.")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order.")
    range: tuple[float, float] = Field(
        (0.0, 1.0), description="Values that pixel 0 and pixel 255 map to."
    )
    dtype: Literal["float32"] = Field("float32", description="Element type.")
    dynamic_hw: bool = Field(
        default=True, description="Height and width may vary from call to call."
    )

    @field_validator("range")
    @classmethod
    def _range_increases(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not high > low:
            raise ValueError(f"range must increase, got [{low}, {high}]")
        if max(abs(low), abs(high)) > 1e4:
            raise ValueError(f"range [{low}, {high}] is out of bounds (±1e4)")
        return value


class InputSpec(TensorSpec):
    """How a model's input tensor is laid out and scaled, and what sizes it accepts."""

    stride: int = Field(
        8, ge=1, le=512, description="Height and width are padded up to a multiple of this."
    )
    min_size: int = Field(
        16, ge=1, le=4096, description="Height and width are padded up to at least this."
    )

    @model_validator(mode="after")
    def _min_size_fits_stride(self) -> InputSpec:
        if self.min_size % self.stride:
            raise ValueError(
                f"min_size ({self.min_size}) must be a multiple of stride ({self.stride})"
            )
        return self


class OutputSpec(TensorSpec):
    pass


class TrainingInfo(BaseModel):
    """How the model was made: enough to make it again. Extra keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    data: str = Field(description="Training data: source and how pairs were made.")
    seed: int = Field(description="Random seed.")
    command: str = Field(description="Command line that trained it.")
    architecture: str = Field(description="Network architecture, e.g. 'unet3-16' or 'dce-lowres'.")


Sha256 = Annotated[str, Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


class Manifest(_Strict):
    """`models/<name>/manifest.json`: what the model is, how to feed it, where it came from."""

    name: str = Field(pattern=NAME_PATTERN, description="Model name; the directory's name.")
    version: str = Field(
        pattern=r"^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$",
        description="Version: '1.0.0' or a monotonic integer such as '3'.",
    )
    file: str = Field(
        "model.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$", description="ONNX file beside it."
    )
    sha256: Sha256 = Field(description="sha256 of the ONNX file, lowercase hex.")
    task: Task = Field(description="What it repairs.")
    input: InputSpec = Field(default_factory=InputSpec, description="Input tensor.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Output tensor.")
    opset: int = Field(ge=7, le=30, description="ONNX opset the file was exported with.")
    training: TrainingInfo = Field(description="How it was trained.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Evaluation results, free form (name → value)."
    )
    created: datetime = Field(description="When it was exported (ISO 8601).")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is reserved (gating uses it); choose another name")
        return value

    @property
    def label(self) -> str:
        """'name@version', as events and logs name the model."""
        return f"{self.name}@{self.version}"

    def version_key(self) -> tuple[int, ...]:
        """Numeric parts of the version, for 'newer than' comparisons."""
        core = re.split(r"[-+]", self.version, maxsplit=1)[0]
        return tuple(int(p) for p in core.split("."))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (models can be tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> Manifest:
    """Parse `path` (a manifest.json, or the model directory holding one)."""
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(path, f"cannot read: {exc}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"])
        more = exc.error_count() - 1
        tail = f" (and {more} more)" if more else ""
        raise ManifestError(path, f"{key}: {first['msg']}{tail}") from None


def build_manifest(
    onnx_path: Path,
    *,
    name: str,
    version: str,
    task: str,
    opset: int,
    training: TrainingInfo | dict[str, Any],
    input_spec: InputSpec | None = None,
    output_spec: OutputSpec | None = None,
    metrics: dict[str, float] | None = None,
    created: datetime | None = None,
) -> Manifest:
    """A manifest for an exported ONNX file: its name and sha256 filled in from the file."""
    return Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "file": onnx_path.name,
            "sha256": sha256_file(onnx_path),
            "task": task,
            "input": input_spec or InputSpec(),
            "output": output_spec or OutputSpec(),
            "opset": opset,
            "training": training,
            "metrics": metrics or {},
            "created": created or datetime.now(UTC),
        }
    )


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    """Write `manifest.json` into `model_dir` (sorted keys, so diffs stay readable)."""
    path = model_dir / MANIFEST_FILE
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def verify_file(model_dir: Path, manifest: Manifest) -> Path:
    """The ONNX file, after checking it exists and its sha256 is the manifest's."""
    onnx_path = model_dir / manifest.file
    if not onnx_path.is_file():
        raise ManifestError(onnx_path, "model file missing")
    actual = sha256_file(onnx_path)
    if actual != manifest.sha256:
        raise ManifestError(
            onnx_path,
            f"sha256 mismatch: file is {actual[:12]}…, manifest says {manifest.sha256[:12]}… "
            "(corrupt or replaced; refusing to run it)",
        )
    return onnx_path


__all__ = [
    "MANIFEST_FILE",
    "MODEL_CARD_FILE",
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "TASKS",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "OutputSpec",
    "TensorSpec",
    "TrainingInfo",
    "build_manifest",
    "read_manifest",
    "sha256_file",
    "verify_file",
    "write_manifest",
]
