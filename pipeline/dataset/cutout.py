"""RGBA cutouts: what background-removal users consume, one PNG per item with the foreground colours and alpha.

The colour channels are the **straight** (not premultiplied) foreground colours estimated by the matte
stage (``paths.matte/foreground``), the alpha channel the matte itself, at the matte's bit depth
(``matte.alpha_bits``: 8 or 16). Compositing a decoded cutout over a background ``B`` with the composite
stage's formula ``(a F + (255 - a) B + 127) // 255`` (8-bit ``a = round(alpha16 / 257)`` for 16-bit
cutouts) gives exactly what the composite stage gives for the same foreground and alpha.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CutoutError(ValueError):
    """Foreground and alpha that cannot form a cutout (shapes or sample types)."""


def cutout(foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight RGBA cutout of ``foreground`` (RGB uint8 ``(H, W, 3)``) with ``alpha`` (uint8 or uint16
    ``(H, W)``). Returns ``(H, W, 4)`` of alpha's dtype; for uint16 the colours are scaled by 257
    (``255 -> 65535``, exact). Example: ``cutout(fg, a8)[..., 3] is a8``-equal, ``[..., :3]`` equals ``fg``.
    """
    if foreground.ndim != 3 or foreground.shape[2] != 3 or foreground.dtype != np.uint8:
        raise CutoutError(f"foreground must be RGB uint8 (H, W, 3), got {foreground.dtype} {foreground.shape}")
    if alpha.shape != foreground.shape[:2]:
        raise CutoutError(f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the foreground is "
                          f"{foreground.shape[1]}x{foreground.shape[0]}")
    if alpha.dtype == np.uint8:
        return np.dstack([foreground, alpha])
    if alpha.dtype == np.uint16:
        return np.dstack([foreground.astype(np.uint16) * 257, alpha])
    raise CutoutError(f"alpha must be uint8 or uint16, got {alpha.dtype}")


def read_alpha_native(path: Path) -> np.ndarray:
    """An alpha PNG at its own bit depth: uint8 or uint16 ``(H, W)`` (three equal channels accepted)."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise CutoutError(f"{path}: not a decodable alpha image")
    if arr.ndim == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
            raise CutoutError(f"{path}: alpha has {arr.shape[2]} channels with different values")
        arr = arr[..., 0]
    if arr.dtype not in (np.uint8, np.uint16):
        raise CutoutError(f"{path}: alpha samples are {arr.dtype}, expected 8 or 16 bit")
    return np.ascontiguousarray(arr)


def decode_cutout(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode cutout PNG bytes into straight RGB ``(H, W, 3)`` and alpha ``(H, W)`` (uint8 or uint16)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.shape[2] != 4:
        raise CutoutError("not an RGBA PNG")
    rgba = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
