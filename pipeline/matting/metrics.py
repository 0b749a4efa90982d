"""Matting metrics with the standard definitions (Rhemann et al., CVPR 2009; alphamatting.com / Deep
Image Matting evaluation code), all computed inside the trimap's unknown region.

Every function takes ``pred`` and ``gt`` alpha as float ``(H, W)`` in ``[0, 1]`` and a ``region`` bool
``(H, W)`` (the unknown pixels, :func:`unknown_region`):

- **SAD**: ``sum |pred - gt| / 1000``.
- **MSE**: ``mean (pred - gt)^2`` over the region.
- **Gradient**: ``sum (|grad pred| - |grad gt|)^2 / 1000``, gradients from first-order Gaussian
  derivative filters with ``sigma = 1.4``.
- **Connectivity**: thresholds ``0, 0.1, ..., 1``; for every pixel, the highest threshold at which it is
  still in the largest 8-connected component of ``(pred >= t) & (gt >= t)`` gives ``l``;
  ``phi = 1 - d * (d >= 0.15)`` with ``d = alpha - l``; ``sum |phi_pred - phi_gt| / 1000``.

Lower is better for all four.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GRADIENT_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15


@dataclass(frozen=True)
class MattingScores:
    """The four standard matting errors of one matte (lower is better)."""

    sad: float
    mse: float
    grad: float
    conn: float
    n_unknown: int


def unknown_region(trimap: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: pixels of a uint8 trimap that are neither 0 nor 255 (i.e. 128)."""
    return (trimap != 0) & (trimap != 255)


def _check(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.shape != region.shape or pred.ndim != 2:
        raise ValueError(
            f"pred {pred.shape}, gt {gt.shape} and region {region.shape} must be equal 2-D shapes"
        )


def sad(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> float:
    """Sum of absolute differences inside ``region``, divided by 1000."""
    _check(pred, gt, region)
    return float(np.abs(pred.astype(np.float64) - gt)[region].sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> float:
    """Mean squared error inside ``region`` (0 when the region is empty)."""
    _check(pred, gt, region)
    n = int(np.count_nonzero(region))
    if n == 0:
        return 0.0
    return float(((pred.astype(np.float64) - gt) ** 2)[region].sum() / n)


def _grad_magnitude(alpha: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    a = alpha.astype(np.float64)
    gx = ndimage.gaussian_filter(a, sigma, order=(0, 1), mode="nearest")
    gy = ndimage.gaussian_filter(a, sigma, order=(1, 0), mode="nearest")
    return np.sqrt(gx * gx + gy * gy)


def gradient(pred: np.ndarray, gt: np.ndarray, region: np.ndarray, sigma: float = GRADIENT_SIGMA) -> float:
    """Gradient error: ``sum ((|grad pred| - |grad gt|)^2)`` inside ``region``, divided by 1000."""
    _check(pred, gt, region)
    diff = _grad_magnitude(pred, sigma) - _grad_magnitude(gt, sigma)
    return float((diff * diff)[region].sum() / 1000.0)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def connectivity(
    pred: np.ndarray, gt: np.ndarray, region: np.ndarray, step: float = CONN_STEP, theta: float = CONN_THETA
) -> float:
    """Connectivity error inside ``region``, divided by 1000 (see the module docstring)."""
    _check(pred, gt, region)
    p = pred.astype(np.float64)
    g = gt.astype(np.float64)
    thresholds = np.arange(0.0, 1.0 + step / 2, step)
    level = np.full(p.shape, -1.0)
    for i in range(1, len(thresholds)):
        omega = _largest_component((p >= thresholds[i]) & (g >= thresholds[i]))
        flag = (level == -1.0) & ~omega
        level[flag] = thresholds[i - 1]
    level[level == -1.0] = 1.0
    dp = p - level
    dg = g - level
    phi_p = 1.0 - dp * (dp >= theta)
    phi_g = 1.0 - dg * (dg >= theta)
    return float(np.abs(phi_p - phi_g)[region].sum() / 1000.0)


def score(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> MattingScores:
    """All four errors of ``pred`` against ``gt`` (float ``(H, W)`` in ``[0, 1]``) inside the unknown
    region of ``trimap`` (uint8 ``(H, W)`` in ``{0, 128, 255}``)."""
    region = unknown_region(trimap)
    return MattingScores(
        sad=sad(pred, gt, region),
        mse=mse(pred, gt, region),
        grad=gradient(pred, gt, region),
        conn=connectivity(pred, gt, region),
        n_unknown=int(np.count_nonzero(region)),
    )
