"""Enhance stage, model backends' common part: resolve and verify the model, pre/post, warm-up.

`ModelEnhancer` does what every runtime shares (the manifest's sha256 and input spec checked
before the first frame, shared pre/post-processing, NaN detection); a runtime adds `_open`
(load the model, report its inputs and outputs) and `infer` (tensor in, tensor out).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vehicle_agent.enhance.base import Enhancer, EnhancerError
from vehicle_agent.enhance.manifest import Manifest, ManifestError
from vehicle_agent.enhance.prepost import Crop, Postprocessor, Preprocessor, Tensor, TensorError
from vehicle_agent.enhance.store import ModelNotFoundError, ModelRef, ModelStore, default_dirs
from vehicle_agent.records import Image

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "fast-enhance"
"""Model a backend runs when it was built alone (not by a chain) and told none."""


class NonFiniteOutputError(EnhancerError):
    """The model produced NaN or infinite values."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A model input or output as the runtime declares it: dims are ints, or None when dynamic."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    """'float32', 'float16', … (numpy names)."""


def check_io(
    manifest: Manifest, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> None:
    """Refuse a model whose declared tensors disagree with its manifest (before any frame)."""
    problems: list[str] = []
    if len(inputs) != 1:
        problems.append(f"has {len(inputs)} inputs, expected 1")
    if not outputs:
        problems.append("has no output")
    spec = manifest.input
    if not spec.dynamic_hw:
        problems.append("manifest says dynamic_hw = false; the runtime pads frames, so it needs it")
    for role, tensors, want_dtype in (
        ("input", inputs[:1], spec.dtype),
        ("output", outputs[:1], manifest.output.dtype),
    ):
        for info in tensors:
            if len(info.shape) != 4:
                problems.append(f"{role} {info.name!r} has rank {len(info.shape)}, expected NCHW")
                continue
            channels = info.shape[1]
            if channels is not None and channels != 3:
                problems.append(f"{role} {info.name!r} has {channels} channels, expected 3")
            if info.dtype != want_dtype:
                problems.append(f"{role} {info.name!r} is {info.dtype}, manifest says {want_dtype}")
            if spec.dynamic_hw and role == "input" and None not in info.shape[2:]:
                problems.append(
                    f"input {info.name!r} is fixed at {info.shape[2]}×{info.shape[3]} but the "
                    "manifest says dynamic_hw"
                )
    if problems:
        raise ManifestError(manifest.file, "input spec mismatch: " + "; ".join(problems))


class ModelEnhancer(Enhancer):
    """A backend that runs one ONNX model; subclasses implement `_open` and `infer`."""

    backend = "model"
    warmup_size: tuple[int, int] = (64, 64)

    def __init__(
        self,
        config: Any = None,
        *,
        model: ModelRef | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.state_dir = state_dir
        self.name = self.backend
        self.pre: Preprocessor | None = None
        self.post: Postprocessor | None = None
        self.load_s = 0.0
        self.warmup_ms = 0.0

    @property
    def model_label(self) -> str | None:
        return self.model.label if self.model is not None and self.pre is not None else None

    @abc.abstractmethod
    def _open(self, model: ModelRef) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """Load the model into the runtime; return its declared inputs and outputs."""

    @abc.abstractmethod
    def infer(self, tensor: Tensor) -> npt.NDArray[np.generic]:
        """Run the model on one input tensor."""

    def resolve_model(self) -> ModelRef:
        """The model to run: the one given, else the store's `DEFAULT_MODEL` (verified)."""
        if self.model is None:
            try:
                self.model = ModelStore(default_dirs(self.state_dir)).resolve(DEFAULT_MODEL)
            except (ModelNotFoundError, ManifestError) as exc:
                raise EnhancerError(self.backend, str(exc)) from exc
        return self.model

    def load(self) -> None:
        """Find and verify the model, open it, check its tensors, and warm up."""
        start = time.perf_counter()
        model = self.resolve_model()
        inputs, outputs = self._open(model)
        try:
            check_io(model.manifest, inputs, outputs)
        except ManifestError as exc:
            self.close()
            raise EnhancerError(self.name, f"{model.label}: {exc.reason}") from exc
        self.pre = Preprocessor(model.manifest.input)
        self.post = Postprocessor(model.manifest.output)
        self.name = f"{self.backend}:{model.name}"
        self.load_s = time.perf_counter() - start
        warm = time.perf_counter()
        self.enhance(np.zeros((*self.warmup_size, 3), np.uint8))
        self.warmup_ms = (time.perf_counter() - warm) * 1000
        logger.info(
            "%s loaded %s (%s) in %.2f s, warm-up %.1f ms",
            self.backend,
            model.label,
            model.onnx_path,
            self.load_s,
            self.warmup_ms,
        )

    def _enhance(self, image: Image) -> Image:
        if self.pre is None or self.post is None:
            raise EnhancerError(self.name, "enhance() before load()")
        tensor, crop = self.pre.to_tensor(image)
        return self._to_frame(self.infer(tensor), crop)

    def _to_frame(self, output: npt.NDArray[np.generic], crop: Crop) -> Image:
        """The model's output as a frame; NaN/inf raise `NonFiniteOutputError`."""
        if self.post is None:
            raise EnhancerError(self.name, "enhance() before load()")
        try:
            return self.post.to_image(output, crop)
        except TensorError as exc:
            if exc.non_finite:
                raise NonFiniteOutputError(self.name, str(exc)) from exc
            raise EnhancerError(self.name, str(exc)) from exc
