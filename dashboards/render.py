"""Pictures for the review dashboard: pure functions that return new images, plus an on-disk thumbnail cache.

Conventions (as in :mod:`pipeline.core.io`): images are RGB ``uint8`` ``(H, W, 3)``; masks ``uint8`` ``(H, W)``
``{0, 255}`` (any non-zero value counts as foreground here); trimaps ``{0, 128, 255}``; alpha ``uint8``
``0..255``. No function modifies its inputs.

Example::

    >>> img = np.zeros((4, 4, 3), np.uint8); m = np.zeros((4, 4), np.uint8); m[1:3, 1:3] = 255
    >>> overlay(img, m, opacity=1.0, outline=False)[1, 1].tolist()
    [255, 64, 64]
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.images import shrink_longest

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

MASK_COLOUR: RGB = (255, 64, 64)
ADDED_COLOUR: RGB = (40, 200, 80)  # foreground the annotator added to the pre-annotation
REMOVED_COLOUR: RGB = (230, 40, 200)  # foreground the annotator removed
KEPT_COLOUR: RGB = (80, 140, 255)  # foreground in both
UNKNOWN_COLOUR: RGB = (255, 200, 0)
THUMB_VERSION = "1"  # bump when thumbnail rendering changes (invalidates the disk cache)


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be RGB uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


def _check_plane(plane: np.ndarray, shape: tuple[int, int], name: str) -> None:
    if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8 or plane.ndim != 2:
        raise ValueError(f"{name} must be uint8 (H, W), got {getattr(plane, 'dtype', type(plane))} "
                         f"{getattr(plane, 'shape', '')}")
    if plane.shape != shape:
        raise ValueError(f"{name} is {plane.shape[1]}x{plane.shape[0]} but the image is {shape[1]}x{shape[0]}")


def _blend(image: np.ndarray, where: np.ndarray, colour: RGB, opacity: float) -> None:
    """In place: mix ``colour`` into ``image`` at ``where`` with ``opacity`` (0..1)."""
    if not where.any():
        return
    c = np.asarray(colour, np.float32)
    px = image[where].astype(np.float32)
    image[where] = np.clip(px * (1.0 - opacity) + c * opacity + 0.5, 0, 255).astype(np.uint8)


def _check_opacity(opacity: float) -> None:
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")


def outline_of(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean ``(H, W)``: foreground pixels within ``width`` px of the background (the mask's contour)."""
    fg = (mask > 0).astype(np.uint8)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    eroded = cv2.erode(fg, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (fg > 0) & (eroded == 0)


def overlay(
    image: np.ndarray, mask: np.ndarray, opacity: float = 0.45, colour: RGB = MASK_COLOUR, outline: bool = True
) -> np.ndarray:
    """``image`` with the mask's foreground tinted by ``colour`` at ``opacity`` (0 = invisible, 1 = solid) and,
    with ``outline``, its contour drawn solid so thin errors stay visible at low opacity. Returns a new array."""
    _check_image(image)
    _check_plane(mask, image.shape[:2], "mask")
    _check_opacity(opacity)
    out = image.copy()
    _blend(out, mask > 0, colour, opacity)
    if outline:
        width = max(1, round(max(image.shape[:2]) / 400))
        out[outline_of(mask, width)] = colour
    return out


@dataclass(frozen=True)
class DiffStats:
    """Pixel counts of a pre-annotation -> correction change (``iou`` is 1.0 when both are empty)."""

    added: int
    removed: int
    kept: int
    iou: float

    @property
    def changed(self) -> int:
        return self.added + self.removed


def diff_stats(before: np.ndarray, after: np.ndarray) -> DiffStats:
    """How much ``after`` (the correction) differs from ``before`` (the pre-annotation); same-shape masks."""
    _check_plane(after, before.shape[:2], "correction mask")
    b, a = before > 0, after > 0
    added = int(np.count_nonzero(a & ~b))
    removed = int(np.count_nonzero(b & ~a))
    kept = int(np.count_nonzero(a & b))
    union = added + removed + kept
    return DiffStats(added, removed, kept, kept / union if union else 1.0)


def diff_overlay(
    image: np.ndarray, before: np.ndarray, after: np.ndarray, opacity: float = 0.55, show_kept: bool = True
) -> np.ndarray:
    """The annotator's change on ``image``: pixels added by the correction in green, removed in magenta, and
    (with ``show_kept``) unchanged foreground lightly tinted blue. Returns a new array."""
    _check_image(image)
    _check_plane(before, image.shape[:2], "pre-annotation mask")
    _check_plane(after, image.shape[:2], "correction mask")
    _check_opacity(opacity)
    b, a = before > 0, after > 0
    out = image.copy()
    if show_kept:
        _blend(out, a & b, KEPT_COLOUR, opacity * 0.4)
    _blend(out, a & ~b, ADDED_COLOUR, opacity)
    _blend(out, b & ~a, REMOVED_COLOUR, opacity)
    return out


def trimap_view(image: np.ndarray, trimap: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """``image`` with the trimap's background darkened and its unknown band tinted amber."""
    _check_image(image)
    _check_plane(trimap, image.shape[:2], "trimap")
    _check_opacity(opacity)
    out = image.copy()
    bg = trimap == 0
    out[bg] = (out[bg].astype(np.float32) * (1.0 - 0.7 * opacity)).astype(np.uint8)
    _blend(out, (trimap > 0) & (trimap < 255), UNKNOWN_COLOUR, opacity)
    return out


def checkerboard(height: int, width: int, cell: int = 12, light: int = 230, dark: int = 190) -> np.ndarray:
    """RGB uint8 ``(height, width, 3)`` checkerboard, the usual backdrop for showing transparency."""
    if height <= 0 or width <= 0 or cell <= 0:
        raise ValueError(f"checkerboard needs positive sizes, got {height}x{width} cell {cell}")
    yy, xx = np.indices((height, width))
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, light, dark).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


def cutout(image: np.ndarray, alpha: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """``image`` composited by ``alpha`` (0..255, or a {0,255} mask) over ``background`` (RGB, same size;
    a checkerboard by default): ``out = a * image + (1 - a) * background``."""
    _check_image(image)
    _check_plane(alpha, image.shape[:2], "alpha")
    bg = checkerboard(*image.shape[:2]) if background is None else background
    _check_image(bg, "background")
    if bg.shape != image.shape:
        raise ValueError(f"background is {bg.shape} but the image is {image.shape}")
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    return np.clip(image.astype(np.float32) * a + bg.astype(np.float32) * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def to_rgb(plane: np.ndarray) -> np.ndarray:
    """A single-channel uint8 plane (mask, alpha, trimap) as a grey RGB image."""
    if plane.ndim == 3:
        return plane
    return np.repeat(plane[:, :, None], 3, axis=2)


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so its longer side is at most ``max_side``; never upscaled."""
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    return shrink_longest(image, max_side)[0]


def fit_box(image: np.ndarray, max_width: int, max_height: int, max_upscale: float = 3.0) -> np.ndarray:
    """``image`` scaled (up to ``max_upscale`` x, or down) to the largest size inside ``max_width`` x
    ``max_height`` keeping its aspect ratio: area interpolation down, linear up."""
    if max_width <= 0 or max_height <= 0 or max_upscale <= 0:
        raise ValueError(f"fit_box needs positive limits, got {max_width}x{max_height} up to {max_upscale}x")
    h, w = image.shape[:2]
    scale = min(max_width / w, max_height / h, max_upscale)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image.copy()
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def letterbox(image: np.ndarray, width: int, height: int, value: int = 245) -> np.ndarray:
    """``image`` fitted inside ``width`` x ``height`` (see :func:`fit_box`) and centred on a ``value`` grey
    canvas of exactly that size, so thumbnails of any aspect ratio line up in a grid."""
    _check_image(image)
    fitted = fit_box(image, width, height)
    canvas = np.full((height, width, 3), value, np.uint8)
    y0 = (height - fitted.shape[0]) // 2
    x0 = (width - fitted.shape[1]) // 2
    canvas[y0 : y0 + fitted.shape[0], x0 : x0 + fitted.shape[1]] = fitted
    return canvas


def side_by_side(images: Sequence[np.ndarray], height: int | None = None, gap: int = 8,
                 gap_value: int = 255) -> np.ndarray:
    """RGB images (planes are converted to grey RGB) scaled to one ``height`` (default: the smallest) and
    placed left to right with ``gap`` px between them."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    rgb = [to_rgb(im) for im in images]
    for i, im in enumerate(rgb):
        _check_image(im, f"image {i}")
    h = height or min(im.shape[0] for im in rgb)
    parts: list[np.ndarray] = []
    for i, im in enumerate(rgb):
        if im.shape[0] != h:
            w = max(1, round(im.shape[1] * h / im.shape[0]))
            interp = cv2.INTER_AREA if im.shape[0] > h else cv2.INTER_LINEAR
            im = cv2.resize(im, (w, h), interpolation=interp)
        if i:
            parts.append(np.full((h, gap, 3), gap_value, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


# --------------------------------------------------------------------------- thumbnails


def _stat_token(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


class ThumbnailCache:
    """JPEG thumbnails on disk under ``root``, keyed by the source files' path, size and mtime plus the render
    settings, so a changed mask or image gets a fresh thumbnail and an unchanged one is read back (~1 ms).

    The cache is disposable (it lives outside DVC outputs, e.g. ``.maskloop/thumbs``); deleting it is safe.
    Writes are atomic, so reviewers sharing it never read half a file."""

    def __init__(self, root: Path, quality: int = 85) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        self.root = Path(root)
        self.quality = quality

    def key(self, sources: Sequence[Path | None], settings: str) -> str:
        blob = "\0".join([THUMB_VERSION, settings, *(_stat_token(p) for p in sources)])
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jpg"

    def get(self, sources: Sequence[Path | None], settings: str, make: Callable[[], np.ndarray]) -> bytes:
        """JPEG bytes of the thumbnail for ``sources`` + ``settings``, rendering with ``make()`` (RGB uint8)
        and storing it when not cached."""
        from pipeline.core import io

        path = self.path_for(self.key(sources, settings))
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            pass
        data = io.encode_jpeg(make(), quality=self.quality)
        try:
            io.write_bytes(path, data)
        except OSError as exc:  # a read-only or full cache must not break reviewing
            log.warning("thumbnail cache %s not writable: %s", self.root, exc)
        return data
