"""Enhance stage, around every model: frame → input tensor and output tensor → frame, written once.

Every model backend (onnxruntime, TensorRT, the tests' fakes) feeds its model through
`Preprocessor` and reads it back through `Postprocessor`, driven by the manifest's tensor specs:
colour order, NCHW layout, value range, and padding of height and width up to the model's
stride. Both work plane by plane with OpenCV, which converts, scales and saturates in one pass
per plane (`python -m tools.bench_enhance` measures them: a few milliseconds at 720p).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from vehicle_agent.enhance.manifest import InputSpec, OutputSpec
from vehicle_agent.records import Image

Tensor = npt.NDArray[np.float32]


class TensorError(ValueError):
    """A model output that cannot become a frame (wrong shape, NaN or infinite values)."""

    def __init__(self, reason: str, *, non_finite: bool = False) -> None:
        self.non_finite = non_finite
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Crop:
    """The frame's own size inside the padded tensor (padding is added right and bottom)."""

    height: int
    width: int


def padded_size(height: int, width: int, stride: int, min_size: int) -> tuple[int, int]:
    """Smallest (H, W) ≥ the frame and ≥ min_size that are multiples of stride."""

    def up(n: int) -> int:
        n = max(n, min_size)
        return -(-n // stride) * stride

    return up(height), up(width)


class Preprocessor:
    """uint8 BGR H×W×3 frame → float32 1×3×H'×W' tensor as the model's input spec says."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        low, high = spec.range
        self.scale = (high - low) / 255.0
        self.offset = low
        # cv2.split gives B, G, R: the planes to write, in the model's channel order.
        self.order = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)
        self._buffer: Tensor | None = None

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return padded_size(height, width, self.spec.stride, self.spec.min_size)

    def buffer(self, height: int, width: int) -> Tensor:
        """A reusable input tensor for a padded (H, W); reallocated only when the size changes."""
        shape = (1, 3, height, width)
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = np.empty(shape, np.float32)
        return self._buffer

    def pad(self, image: Image) -> Image:
        """`image` padded right and bottom to the model's stride (mirrored, so edges stay real)."""
        h, w = image.shape[:2]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) == (h, w):
            return image
        # Mirroring needs a border smaller than the image; tiny frames repeat their edge.
        mode = cv2.BORDER_REFLECT_101 if ph - h < h and pw - w < w else cv2.BORDER_REPLICATE
        return np.asarray(cv2.copyMakeBorder(image, 0, ph - h, 0, pw - w, mode), dtype=np.uint8)

    def to_tensor(self, image: Image, out: Tensor | None = None) -> tuple[Tensor, Crop]:
        """The input tensor for `image` (written into `out` when given, e.g. page-locked memory)."""
        crop = Crop(image.shape[0], image.shape[1])
        padded = self.pad(image)
        ph, pw = padded.shape[:2]
        if out is None:
            out = self.buffer(ph, pw)
        elif out.shape != (1, 3, ph, pw) or out.dtype != np.float32:
            raise TensorError(
                f"input buffer is {out.dtype} {out.shape}, need float32 1×3×{ph}×{pw}"
            )
        planes = cv2.split(padded)
        for channel, source in enumerate(self.order):
            plane = planes[source]
            # x·scale + offset, converted to float32, straight into the tensor's plane.
            cv2.addWeighted(plane, self.scale, plane, 0.0, self.offset, out[0, channel], cv2.CV_32F)
        return out, crop


class Postprocessor:
    """float32 N×3×H'×W' tensor → uint8 BGR H×W×3 frame (cropped, scaled, saturated)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        low, high = spec.range
        self.scale = 255.0 / (high - low)
        self.offset = -low * self.scale
        # Tensor channels, in the order B, G, R that the frame needs.
        self.order = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)

    def to_image(self, tensor: npt.NDArray[np.generic], crop: Crop) -> Image:
        """The frame in `tensor`'s top-left `crop`; raises `TensorError` on a bad shape or NaN."""
        if tensor.ndim != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
            raise TensorError(f"model output has shape {tensor.shape}, expected 1×3×H×W")
        if tensor.shape[2] < crop.height or tensor.shape[3] < crop.width:
            raise TensorError(
                f"model output is {tensor.shape[2]}×{tensor.shape[3]}, "
                f"smaller than the frame {crop.height}×{crop.width}"
            )
        data = np.asarray(tensor, dtype=np.float32)
        planes = []
        for channel in self.order:
            plane = data[0, channel, : crop.height, : crop.width]
            # One reduction per plane finds NaN and ±inf (they poison the sum); a saturating
            # conversion would silently turn them into black or white pixels.
            if not np.isfinite(cv2.sumElems(plane)[0]):
                raise TensorError("model output has NaN or infinite values", non_finite=True)
            planes.append(
                cv2.addWeighted(plane, self.scale, plane, 0.0, self.offset, None, cv2.CV_8U)
            )
        return np.asarray(cv2.merge(planes), dtype=np.uint8)
