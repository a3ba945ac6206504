"""Analyze stage: per-frame quality metrics on a downscaled grey copy (pure: numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from vehicle_agent.records import Image, QualityMetrics, check_image


def downscale_grey(image: Image, width: int) -> np.ndarray:
    """Luma of `image`, shrunk (area interpolation) to `width` pixels wide when it is wider."""
    check_image(image)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if w > width:
        grey = cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return np.asarray(grey)


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
