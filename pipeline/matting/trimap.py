"""Trimaps: an unknown band around each curated mask's boundary.

For every curated item (``paths.curated/curated.parquet``, ``included == True``) the mask
``paths.curated/masks/<id>.png`` is eroded and dilated with an **elliptical** kernel of radius ``r``:
pixels inside the eroded mask are foreground (255), outside the dilated mask background (0), the rest
unknown (128). ``r`` is ``trimap.band_px`` (``mode: fixed``) or ``band_fraction * sqrt(object area)``
clamped to ``[min_band_px, max_band_px]`` (``mode: relative``). With ``texture.enabled`` the band is
widened by ``texture.extra_px`` where the boundary is highly textured (hair, fur): boundary pixels whose
incoherent gradient energy (:func:`texture_map`) exceeds ``texture.threshold``.

Outputs: ``paths.trimap/trimaps/<id>.png`` (exactly {0, 128, 255}) and ``paths.trimap/trimaps.parquet``
(``item_id, band_px, extra_px, unknown_fraction, textured_fraction``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

TRIMAP_COLUMNS = ("item_id", "band_px", "extra_px", "unknown_fraction", "textured_fraction")


class TrimapError(ValueError):
    """A mask from which no usable trimap can be made (empty, full, wrong size)."""


@dataclass(frozen=True)
class TextureParams:
    """Widen the band where the boundary is highly textured (hair, fur)."""

    enabled: bool = True
    threshold: float = 0.08  # incoherent gradient energy (texture_map) in [0, 1] units
    extra_px: int = 8
    window_px: int = 7

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError(f"texture.threshold must be > 0, got {self.threshold}")
        if self.extra_px < 0:
            raise ValueError(f"texture.extra_px must be >= 0, got {self.extra_px}")
        if self.window_px < 1 or self.window_px % 2 == 0:
            raise ValueError(f"texture.window_px must be odd and >= 1, got {self.window_px}")


@dataclass(frozen=True)
class TrimapParams:
    """Section ``trimap`` of params.yaml (band radius ``r``: the band is about ``2 r`` pixels wide)."""

    mode: Literal["fixed", "relative"] = "fixed"
    band_px: int = 10
    band_fraction: float = 0.02
    min_band_px: int = 3
    max_band_px: int = 60
    texture: TextureParams = field(default_factory=TextureParams)

    def __post_init__(self) -> None:
        if self.band_px < 1:
            raise ValueError(f"band_px must be >= 1, got {self.band_px}")
        if not 0.0 < self.band_fraction < 1.0:
            raise ValueError(f"band_fraction must be in (0, 1), got {self.band_fraction}")
        if not 1 <= self.min_band_px <= self.max_band_px:
            raise ValueError(f"need 1 <= min_band_px <= max_band_px, got {self.min_band_px}, {self.max_band_px}")


@dataclass(frozen=True)
class TrimapResult:
    """A trimap (uint8 ``(H, W)`` in {0, 128, 255}) and how it was made."""

    trimap: np.ndarray
    band_px: int
    extra_px: int
    textured_fraction: float

    @property
    def unknown_fraction(self) -> float:
        return float(np.count_nonzero(self.trimap == 128) / self.trimap.size)


def ellipse(radius: int) -> np.ndarray:
    """Elliptical (disc) structuring element of the given radius, uint8 ``(2r+1, 2r+1)``."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def band_radius(mask: np.ndarray, params: TrimapParams) -> int:
    """Band radius in pixels for ``mask`` (uint8 ``(H, W)`` {0, 255})."""
    if params.mode == "fixed":
        return params.band_px
    area = float(np.count_nonzero(mask))
    r = round(params.band_fraction * math.sqrt(area))
    return min(max(r, params.min_band_px), params.max_band_px)


def texture_map(image: np.ndarray, window_px: int) -> np.ndarray:
    """Incoherent gradient energy of ``image`` (RGB uint8 ``(H, W, 3)``): float32 ``(H, W)`` in ``[0, 1]``.

    ``mean |g| - |mean g|`` over a ``window_px`` window (Sobel gradients of the grey image, 1 = a full
    black/white step). A clean object edge has aligned gradients and scores near 0 however strong it is;
    hair, fur and foliage have gradients in every direction and score high.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gx = np.asarray(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), dtype=np.float32) / np.float32(4.0)
    gy = np.asarray(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3), dtype=np.float32) / np.float32(4.0)
    k = (window_px, window_px)
    mag_mean = np.asarray(cv2.blur(np.sqrt(gx * gx + gy * gy), k), dtype=np.float32)
    mx = np.asarray(cv2.blur(gx, k), dtype=np.float32)
    my = np.asarray(cv2.blur(gy, k), dtype=np.float32)
    return np.clip(mag_mean - np.sqrt(mx * mx + my * my), 0.0, 1.0)


def make_trimap(mask: np.ndarray, params: TrimapParams, image: np.ndarray | None = None) -> TrimapResult:
    """Trimap of a binary ``mask`` (uint8 ``(H, W)`` {0, 255}); ``image`` (RGB uint8, same size) enables
    the texture widening. Raises :class:`TrimapError` for an empty or full mask or a size mismatch."""
    if mask.ndim != 2:
        raise TrimapError(f"mask must be 2-D, got shape {mask.shape}")
    fg = mask > 0
    if not fg.any():
        raise TrimapError("mask has no foreground pixels: nothing to matte")
    if fg.all():
        raise TrimapError("mask covers the whole image: no boundary, so no unknown band")
    if image is not None and image.shape[:2] != mask.shape:
        raise TrimapError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}"
        )
    r = band_radius(mask, params)
    m = fg.astype(np.uint8)
    k = ellipse(r)
    sure_fg = cv2.erode(m, k, borderType=cv2.BORDER_REPLICATE) > 0
    maybe_fg = cv2.dilate(m, k, borderType=cv2.BORDER_REPLICATE) > 0
    unknown = maybe_fg & ~sure_fg
    extra = 0
    textured_fraction = 0.0
    tp = params.texture
    if image is not None and tp.enabled and tp.extra_px > 0:
        edge = (cv2.dilate(m, ellipse(1)) > 0) & ~(cv2.erode(m, ellipse(1)) > 0)
        tex = texture_map(image, tp.window_px)
        hot = edge & (tex > tp.threshold)
        n_edge = int(np.count_nonzero(edge))
        textured_fraction = float(np.count_nonzero(hot) / n_edge) if n_edge else 0.0
        if hot.any():
            extra = tp.extra_px
            unknown |= cv2.dilate(hot.astype(np.uint8), ellipse(r + extra)) > 0
    trimap = np.zeros(mask.shape, dtype=np.uint8)
    trimap[fg] = 255
    trimap[unknown] = 128
    if not (trimap == 255).any():
        raise TrimapError(
            f"the object is thinner than the band (radius {r} px): no sure foreground left; lower trimap.band_px"
        )
    return TrimapResult(trimap=trimap, band_px=r, extra_px=extra, textured_fraction=textured_fraction)

