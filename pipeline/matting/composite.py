"""Composites: the Deep Image Matting recipe, made reproducible.

Each matted item's foreground colours ``F`` and alpha ``a`` (from the matte stage) are placed over
``composite.per_item`` backgrounds drawn from the pool: every image file in ``paths.backgrounds``
(sorted) plus ``composite.procedural`` deterministic colour backgrounds (``procedural:<k>``). For each
composite a random generator seeded with ``(composite.seed, item id, composite index)`` picks the
background, a scale in ``scale_range``, a horizontal flip (probability ``flip_prob``), a translation of at
most ``max_shift`` of the canvas side, and optionally a colour harmonisation and a synthetic shadow.
The same seed and inputs give byte-identical files, whatever the worker count and whatever other items
exist (each item's randomness depends only on its own id).

Composition, in integers so it is exact and platform-independent (``a`` uint8)::

    I = (a * F + (255 - a) * B + 127) // 255

The canvas is the foreground photo's size; the background is resized to cover it (then centre-cropped).
Outputs per matted item: two **strips**, ``image_strips/<item>.png`` (RGB) and ``alpha_strips/<item>.png``
(8-bit grey), each the item's ``per_item`` composites stacked top to bottom in order ``k = 0 .. per_item - 1``
(all of an item's composites have the canvas size, the item's photo size, so tile ``k`` is rows
``k*H .. (k+1)*H - 1``); and per composite ``<item>_<k>`` a row of ``paths.composite/lineage.parquet``
(composite_id, item_id, tile, background, scale, dx, dy, flip, seed, harmonize, shadow; ``tile`` = ``k``, its
place in the strips). :func:`read_composite` is the one read path (export, ``maskloop materialize`` and the
review dashboard use it). Vertical, not side by side: a tile is then a contiguous run of PNG rows and of
memory (a view, no copy), and PNG's per-row filters see one composite per row.
A composite's mask (``a >= 128``) and trimap (unknown = ``0 < a < 255`` dilated by
``trimap_px``, :func:`trimap_from_alpha`) are functions of the alpha: not stored, export derives them.
A composite belongs to the split of its ``item_id`` (export must never put it in
another split).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.matting.trimap import ellipse

log = logging.getLogger(__name__)

LINEAGE_COLUMNS = (
    "composite_id", "item_id", "tile", "background", "scale", "dx", "dy", "flip", "seed", "harmonize", "shadow",
)
PROCEDURAL_PREFIX = "procedural:"
IMAGE_STRIPS = "image_strips"
ALPHA_STRIPS = "alpha_strips"


@dataclass(frozen=True)
class CompositeParams:
    """Section ``composite`` of params.yaml."""

    seed: int = 0
    per_item: int = 4
    procedural: int = 4               # procedural colour backgrounds added to the pool
    procedural_size: tuple[int, int] = (1024, 768)
    scale_range: tuple[float, float] = (0.7, 1.0)
    flip_prob: float = 0.5
    max_shift: float = 0.15           # fraction of the canvas side
    harmonize_prob: float = 0.0       # probability of shifting the foreground's mean colour toward B
    harmonize_strength: float = 0.3
    shadow_prob: float = 0.0          # probability of a synthetic drop shadow
    shadow_opacity: float = 0.4
    shadow_blur_px: int = 15
    shadow_offset_px: int = 12
    trimap_px: int = 5

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        for name in ("flip_prob", "harmonize_prob", "shadow_prob", "harmonize_strength", "shadow_opacity"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.per_item < 1 or self.procedural < 0 or not 0.0 <= self.max_shift < 1.0:
            raise ValueError("per_item must be >= 1, procedural >= 0, max_shift in [0, 1)")
        if min(self.procedural_size) < 8 or self.shadow_blur_px < 0 or self.trimap_px < 0:
            raise ValueError("procedural_size sides must be >= 8; shadow_blur_px, trimap_px >= 0")


@dataclass(frozen=True)
class Transform:
    """Placement of a foreground on its canvas: scale about the centre, optional flip, then shift."""

    scale: float
    dx: int
    dy: int
    flip: bool


@dataclass(frozen=True)
class Composite:
    """One composite: image RGB uint8 ``(H, W, 3)``, alpha/mask/trimap uint8 ``(H, W)``."""

    image: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    trimap: np.ndarray


# --------------------------------------------------------------------------- pure functions


def blend(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Exact integer compositing ``(a F + (255 - a) B + 127) // 255`` of uint8 arrays
    (``fg``, ``bg``: ``(H, W, 3)``; ``alpha``: ``(H, W)``) -> uint8 ``(H, W, 3)``."""
    if fg.shape != bg.shape or fg.shape[:2] != alpha.shape:
        raise ValueError(f"shapes differ: fg {fg.shape}, bg {bg.shape}, alpha {alpha.shape}")
    a = alpha.astype(np.uint32)[:, :, None]
    out = (a * fg.astype(np.uint32) + (255 - a) * bg.astype(np.uint32) + 127) // 255
    return out.astype(np.uint8)


def procedural_background(index: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Deterministic colour background ``index`` (RGB uint8, ``size = (W, H)``): a two-colour
    gradient at a random angle with low-frequency noise."""
    w, h = size
    rng = np.random.default_rng([seed, 7919, index])
    c0, c1 = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(theta) * xx / w + np.sin(theta) * yy / h)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    noise = rng.normal(0, 1, size=(max(h // 32, 2), max(w // 32, 2))).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * 12.0
    img = c0[None, None, :] * (1 - t[:, :, None]) + c1[None, None, :] * t[:, :, None] + noise[:, :, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def cover(bg: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize ``bg`` (RGB uint8) to cover ``shape = (H, W)`` and centre-crop it to exactly that size."""
    h, w = shape
    bh, bw = bg.shape[:2]
    s = max(h / bh, w / bw)
    nh, nw = max(h, round(bh * s)), max(w, round(bw * s))
    resized = cv2.resize(bg, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(resized[y0 : y0 + h, x0 : x0 + w])


def place(arr: np.ndarray, t: Transform, interpolation: int) -> np.ndarray:
    """Apply ``t`` to ``arr`` (``(H, W)`` or ``(H, W, 3)``) on a canvas of the same size (zeros outside)."""
    h, w = arr.shape[:2]
    src = arr[:, ::-1] if t.flip else arr
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    m = np.array([[t.scale, 0, cx - t.scale * cx + t.dx], [0, t.scale, cy - t.scale * cy + t.dy]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(src), m, (w, h), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def harmonize(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, strength: float) -> np.ndarray:
    """Shift ``fg``'s alpha-weighted mean Lab colour toward ``bg``'s mean by ``strength`` (0..1)."""
    w = alpha.astype(np.float32)[:, :, None] / 255.0
    if float(w.sum()) <= 0:
        return fg
    lab_f = cv2.cvtColor(fg, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_b = cv2.cvtColor(bg, cv2.COLOR_RGB2LAB).astype(np.float32)
    mean_f = (lab_f * w).sum(axis=(0, 1)) / w.sum()
    mean_b = lab_b.reshape(-1, 3).mean(axis=0)
    shifted = np.clip(np.rint(lab_f + strength * (mean_b - mean_f)), 0, 255).astype(np.uint8)
    return np.asarray(cv2.cvtColor(shifted, cv2.COLOR_LAB2RGB), dtype=np.uint8)


def add_shadow(bg: np.ndarray, alpha: np.ndarray, opacity: float, blur_px: int, offset: tuple[int, int]) -> np.ndarray:
    """Darken ``bg`` under a blurred, shifted copy of ``alpha`` (a soft drop shadow)."""
    h, w = alpha.shape
    m = np.array([[1, 0, offset[0]], [0, 1, offset[1]]], np.float64)
    sh = cv2.warpAffine(alpha, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0).astype(np.float32) / 255.0
    if blur_px > 0:
        k = 2 * blur_px + 1
        sh = np.asarray(cv2.GaussianBlur(sh, (k, k), 0), dtype=np.float32)
    factor = 1.0 - opacity * sh
    return np.clip(np.rint(bg.astype(np.float32) * factor[:, :, None]), 0, 255).astype(np.uint8)


def trimap_from_alpha(alpha: np.ndarray, dilate_px: int) -> np.ndarray:
    """Trimap (uint8 {0, 128, 255}) of a uint8 alpha: unknown where ``0 < a < 255``, dilated."""
    tri = np.where(alpha == 255, 255, 0).astype(np.uint8)
    unknown = (alpha > 0) & (alpha < 255)
    if dilate_px > 0:
        unknown = cv2.dilate(unknown.astype(np.uint8), ellipse(dilate_px)) > 0
    tri[unknown] = 128
    return tri


def compose(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, t: Transform, params: CompositeParams,
            rng: np.random.Generator) -> tuple[Composite, bool, bool]:
    """One composite of ``fg`` (RGB uint8) with ``alpha`` (uint8) over ``bg`` (any size) placed by ``t``.
    Returns the composite and whether harmonisation / a shadow were applied."""
    shape = alpha.shape
    b = cover(bg, shape)
    f = place(fg, t, cv2.INTER_LINEAR)
    a = place(alpha, t, cv2.INTER_LINEAR)
    do_harm = bool(rng.random() < params.harmonize_prob)
    do_shadow = bool(rng.random() < params.shadow_prob)
    if do_harm:
        f = harmonize(f, a, b, params.harmonize_strength)
    if do_shadow:
        off = (params.shadow_offset_px, params.shadow_offset_px)
        b = add_shadow(b, a, params.shadow_opacity, params.shadow_blur_px, off)
    image = blend(f, b, a)
    mask = np.where(a >= 128, 255, 0).astype(np.uint8)
    return Composite(image, a, mask, trimap_from_alpha(a, params.trimap_px)), do_harm, do_shadow


def item_rng(seed: int, item_id: str, k: int) -> np.random.Generator:
    """The generator of composite ``k`` of ``item_id``: depends on nothing else (incremental-safe)."""
    digest = int(hashlib.sha256(item_id.encode()).hexdigest()[:15], 16)
    return np.random.default_rng([seed, digest, k])


def draw_transform(rng: np.random.Generator, shape: tuple[int, int], params: CompositeParams) -> Transform:
    h, w = shape
    lo, hi = params.scale_range
    scale = float(round(rng.uniform(lo, hi), 4))
    flip = bool(rng.random() < params.flip_prob)
    dx = int(rng.integers(-int(params.max_shift * w), int(params.max_shift * w) + 1))
    dy = int(rng.integers(-int(params.max_shift * h), int(params.max_shift * h) + 1))
    return Transform(scale=scale, dx=dx, dy=dy, flip=flip)


def load_background(name: str, folder: Path, params: CompositeParams) -> np.ndarray:
    """Pixels of pool entry ``name`` (a file in ``folder`` or ``procedural:<k>``)."""
    if name.startswith(PROCEDURAL_PREFIX):
        return procedural_background(int(name[len(PROCEDURAL_PREFIX):]), params.procedural_size, params.seed)
    return io.read_image(Path(folder) / name)


def background_pool(folder: Path, params: CompositeParams) -> list[str]:
    """Sorted file names of images in ``folder`` followed by the procedural entries."""
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in io.IMAGE_EXTENSIONS
                   ) if folder.is_dir() else []
    pool = files + [f"{PROCEDURAL_PREFIX}{k}" for k in range(params.procedural)]
    if not pool:
        raise UserError(
            f"{folder}: background pool is empty (no images there and composite.procedural is 0); "
            "add background photos to paths.backgrounds or set composite.procedural > 0"
        )
    return pool



# --------------------------------------------------------------------------- strips: layout and the read path


@dataclass(frozen=True)
class CompositeRef:
    """Where composite ``composite_id`` lives: tile ``tile`` of the ``count`` tiles in its item's strips."""

    composite_id: str
    item_id: str
    tile: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.tile < self.count:
            raise ValueError(f"composite {self.composite_id}: tile {self.tile} outside 0..{self.count - 1}")


def strip_paths(root: Path, item_id: str) -> tuple[Path, Path]:
    """The image strip and alpha strip of ``item_id`` under the composite stage's folder ``root``."""
    return Path(root) / IMAGE_STRIPS / f"{item_id}.png", Path(root) / ALPHA_STRIPS / f"{item_id}.png"


def composite_refs(lineage: Any, where: Path | str = "lineage.parquet") -> dict[str, CompositeRef]:
    """``composite_id -> CompositeRef`` from a lineage table (``composite_id, item_id, tile`` columns).

    Raises :class:`UserError` naming ``where`` and the item when a column is missing or an item's tiles are not
    exactly ``0 .. n-1`` (a lineage from before strips, or one out of step with the strips)."""
    missing = {"composite_id", "item_id", "tile"} - set(getattr(lineage, "columns", ()))
    if missing:
        raise UserError(f"{where}: lineage lacks columns {sorted(missing)} (written before composite strips?); "
                        "re-run `dvc repro composite`")
    by_item: dict[str, list[tuple[int, str]]] = {}
    for cid, item, tile in zip(lineage["composite_id"], lineage["item_id"], lineage["tile"], strict=True):
        by_item.setdefault(str(item), []).append((int(tile), str(cid)))
    refs: dict[str, CompositeRef] = {}
    for item, tiles in sorted(by_item.items()):
        if sorted(t for t, _ in tiles) != list(range(len(tiles))):
            raise UserError(f"{where}: item {item}: composite tiles {sorted(t for t, _ in tiles)} are not "
                            f"0..{len(tiles) - 1}; re-run `dvc repro composite`")
        for tile, cid in tiles:
            refs[cid] = CompositeRef(cid, item, tile, len(tiles))
    return refs


def composite_mask(alpha: np.ndarray) -> np.ndarray:
    """A composite's binary mask ``{0, 255}`` from its ``(H, W)`` uint8 alpha: 255 where ``alpha >= 128``, exactly
    as :func:`compose` makes it (the export's ``matting/mask`` file and the training read path use this)."""
    return np.where(alpha >= 128, 255, 0).astype(np.uint8)


def read_composite(root: Path, ref: CompositeRef) -> tuple[np.ndarray, np.ndarray]:
    """Composite ``ref``'s image (RGB uint8 ``(H, W, 3)``) and alpha (uint8 ``(H, W)``) from its item's strips
    under ``root`` (read-only views). Raises :class:`pipeline.core.io.ImageError` naming the strip file and the
    composite when a strip is missing, corrupt, of the wrong kind, or not ``ref.count`` tiles, or when the
    image and alpha tiles differ in size."""
    image_path, alpha_path = strip_paths(root, ref.item_id)
    what = f"composite {ref.composite_id} (tile {ref.tile} of {ref.count})"
    image = io.read_strip_tile(image_path, ref.tile, ref.count, what)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise io.ImageError(image_path, f"{what}: image strip is {image.dtype} {image.shape[1:]}, expected RGB uint8")
    alpha = io.read_strip_tile(alpha_path, ref.tile, ref.count, what)
    if alpha.ndim != 2 or alpha.dtype != np.uint8:
        raise io.ImageError(alpha_path, f"{what}: alpha strip is {alpha.dtype} {alpha.shape[1:]}, expected grey uint8")
    if alpha.shape != image.shape[:2]:
        raise io.ImageError(alpha_path, f"{what}: alpha tile is {alpha.shape[1]}x{alpha.shape[0]}, image tile "
                            f"{image.shape[1]}x{image.shape[0]} ({image_path})")
    return image, alpha

