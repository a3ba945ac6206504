"""Analyze stage: per-frame quality metrics on a downscaled grey copy (pure: numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from vehicle_agent.records import Image, QualityMetrics, check_image


def downscale_grey(image: Image, width: int) -> np.ndarray:
    """Luma of `image`, shrunk (area interpolation) to `width` pixels wide when it is wider."""
    check_image(image)
    h, w = image.shape[:2]
    if w > width:
        # Shrink first: converting a 320-pixel copy to grey is cheaper than a full frame.
        size = (width, max(1, round(h * width / w)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def compute_quality(image: Image, analysis_width: int = 320) -> QualityMetrics:
    """Brightness (mean luma), contrast (luma standard deviation), sharpness (Laplacian variance)."""
    grey = downscale_grey(image, analysis_width)
    mean, std = cv2.meanStdDev(grey)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    return QualityMetrics(
        brightness=float(mean[0, 0]),
        contrast=float(std[0, 0]),
        sharpness=float(laplacian.var()),
    )
