"""Pure QA checks over one mask (and its image where needed), each returning a frozen :class:`Finding`.

Every check is a typed function ``check_<name>(...) -> Finding``; thresholds come from :class:`QAParams`
(section ``qa`` of params.yaml) and are relative to the object's size where that is what makes sense.
:func:`run_checks` runs the whole suite on one item and shares the expensive parts (binarisation,
connected components) between checks.

Conventions:

- ``grey``: the mask file's pixels, uint8 ``(H, W)``, 0..255 (may be antialiased or damaged).
- ``fg``: the binary foreground, bool ``(H, W)`` = ``grey >= 128``.
- ``image``: RGB uint8 ``(H, W, 3)``.
- Regions are bounding boxes ``(x0, y0, x1, y1)`` in image pixels, ``x1``/``y1`` exclusive.
- ``severity`` of a failed finding is ``info`` (worth knowing, never queued by default), ``warning``
  (a human should look unless a safe fix resolves it) or ``error`` (the mask cannot be used as is).
  A passed finding has severity ``none``.

Checks (name: what fails it):

==================  =====================================================================================
``readable``        the mask file is missing, unreadable, not single-channel, or not 8/16-bit
``size_mismatch``   mask size differs from the image size
``empty``           no foreground pixel
``full``            every pixel is foreground
``fg_fraction``     foreground fraction outside ``[min_fg_fraction, max_fg_fraction]``
``non_binary``      fraction of pixels outside {0, 255} above ``non_binary_max_fraction`` (fixable)
``islands``         foreground components of at most ``max(island_max_fraction x foreground, island_max_px)``
                    pixels, the largest component excepted (fixable)
``holes``           enclosed background components of at most ``max(hole_max_fraction x foreground,
                    hole_max_px)`` pixels (fixable)
``large_holes``     enclosed background components larger than that: flagged ``info`` only (a mug handle
                    is not an error); a reviewer may apply ``fill_all_holes``
``border``          fraction of the image border covered by foreground above ``border_max_fraction`` (info)
``edge_alignment``  the mask boundary follows image edges worse than the same boundary shifted by a few
                    pixels: ``response(0) / max response over shifts`` below ``edge_min_alignment``
``jaggedness``      fraction of the outline that is stair-stepped above ``jagged_max_fraction``
                    (blocky masks, nearest-neighbour upscaling)
``disagreement``    IoU between pre-annotation and human correction below ``disagreement_min_iou``
                    (boundary F and pixels changed are reported in ``detail``)
``near_duplicate``  another item's image has a perceptual hash within ``phash_max_distance`` bits
                    (cross-item: computed by the curate stage with :mod:`qa.near_duplicates`)
==================  =====================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.core.images import longest_side_scale, shrink_longest
from qa.components import Components, components

SEVERITIES: tuple[str, ...] = ("none", "info", "warning", "error")
"""Severity levels in increasing order."""

SEVERITY_ALIASES: dict[str, str] = {
    "": "none", "ok": "none", "low": "info", "minor": "info", "warn": "warning", "medium": "warning",
    "high": "error", "major": "error", "critical": "error", "fatal": "error",
}
"""Other tools' words for a severity, mapped onto :data:`SEVERITIES` (for review queues not written by curate)."""

CHECKS: tuple[str, ...] = (
    "readable", "size_mismatch", "empty", "full", "fg_fraction", "non_binary", "islands", "holes", "large_holes",
    "border", "edge_alignment", "jaggedness", "disagreement", "near_duplicate",
)
"""Every check name, in report order."""

Region = tuple[int, int, int, int]


def severity_rank(severity: str) -> int:
    """Position of ``severity`` in :data:`SEVERITIES` (ValueError for an unknown level)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}") from None


@dataclass(frozen=True)
class Finding:
    """The result of one check on one mask.

    ``value`` is the measured quantity and ``threshold`` the limit it was compared with (NaN when
    not meaningful); ``fixable`` names whether a safe fix in :mod:`qa.fixes` addresses the problem and
    ``fix`` which one (``""`` if none); ``region`` is where the problem is (None when not localised).
    """

    check: str
    passed: bool
    severity: str
    value: float
    threshold: float
    fixable: bool = False
    fix: str = ""
    region: Region | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r}; expected one of {CHECKS}")
        severity_rank(self.severity)
        if self.passed and self.severity != "none":
            raise ValueError(f"{self.check}: a passed finding has severity 'none', got {self.severity!r}")
        if not self.passed and self.severity == "none":
            raise ValueError(f"{self.check}: a failed finding needs a severity")

    def region_str(self) -> str:
        """``"x0,y0,x1,y1"`` or ``""`` (the form stored in qa_report.parquet)."""
        return "" if self.region is None else ",".join(str(v) for v in self.region)


@dataclass(frozen=True)
class QAParams:
    """Section ``qa`` of params.yaml: thresholds of every check (fractions are of the foreground area
    unless said otherwise)."""

    connectivity: int = 8
    hole_connectivity: int = 8
    island_max_fraction: float = 0.001
    island_max_px: int = 4
    hole_max_fraction: float = 0.0005
    hole_max_px: int = 4
    min_fg_fraction: float = 0.005
    max_fg_fraction: float = 0.95
    non_binary_max_fraction: float = 0.0
    border_max_fraction: float = 0.0
    edge_max_side: int = 400
    edge_max_shift: int = 32
    edge_min_alignment: float = 0.9
    jagged_min_run: int = 5
    jagged_window: int = 8
    jagged_max_fraction: float = 0.15
    jagged_max_side: int = 1000
    disagreement_min_iou: float = 0.5
    boundary_tolerance: float = 0.008
    phash_max_distance: int = 8

    def __post_init__(self) -> None:
        for name in ("connectivity", "hole_connectivity"):
            if getattr(self, name) not in (4, 8):
                raise ValueError(f"{name} must be 4 or 8, got {getattr(self, name)}")
        if self.island_max_px < 0 or self.hole_max_px < 0:
            raise ValueError("island_max_px and hole_max_px must be >= 0")
        for name in ("island_max_fraction", "hole_max_fraction", "min_fg_fraction", "max_fg_fraction",
                     "non_binary_max_fraction", "border_max_fraction", "edge_min_alignment", "jagged_max_fraction",
                     "disagreement_min_iou", "boundary_tolerance"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.min_fg_fraction > self.max_fg_fraction:
            raise ValueError(f"min_fg_fraction {self.min_fg_fraction} > max_fg_fraction {self.max_fg_fraction}")
        if self.edge_max_side < 32:
            raise ValueError(f"edge_max_side must be >= 32, got {self.edge_max_side}")
        if not 1 <= self.edge_max_shift <= 64:
            raise ValueError(f"edge_max_shift must be in [1, 64], got {self.edge_max_shift}")
        if self.jagged_min_run < 2 or self.jagged_window < 2:
            raise ValueError("jagged_min_run and jagged_window must be >= 2")
        if self.jagged_max_side < 32:
            raise ValueError(f"jagged_max_side must be >= 32, got {self.jagged_max_side}")
        if not 0 <= self.phash_max_distance <= 64:
            raise ValueError(f"phash_max_distance must be in [0, 64], got {self.phash_max_distance}")


def _passed(check: str, value: float, threshold: float, detail: str = "") -> Finding:
    return Finding(check, True, "none", float(value), float(threshold), detail=detail)


def _box(region: Sequence[int] | None) -> Region | None:
    if region is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in region)
    return (x0, y0, x1, y1)


def binarise(grey: np.ndarray) -> np.ndarray:
    """Foreground of a grey mask: bool ``(H, W)``, True where ``grey >= 128``."""
    _require_2d(grey)
    return np.asarray(grey) >= 128


def _require_2d(arr: np.ndarray) -> None:
    if arr.ndim != 2:
        raise ValueError(f"expected a single-channel (H, W) mask, got shape {arr.shape}")


# --------------------------------------------------------------------------- pixel-value checks


def check_readable(error: str) -> Finding:
    """``error`` is ``""`` when the mask loaded, else the reason it did not (missing, unreadable...)."""
    if not error:
        return _passed("readable", 0.0, 0.0)
    return Finding("readable", False, "error", 1.0, 0.0, detail=error)


def check_size(mask_shape: tuple[int, int], image_shape: tuple[int, int]) -> Finding:
    """Fails when the mask's ``(H, W)`` differs from the image's (value 1, not fixable)."""
    if tuple(mask_shape) == tuple(image_shape):
        return _passed("size_mismatch", 0.0, 0.0)
    return Finding(
        "size_mismatch", False, "error", 1.0, 0.0,
        detail=f"mask is {mask_shape[1]}x{mask_shape[0]}, image is {image_shape[1]}x{image_shape[0]}",
    )


def check_non_binary(grey: np.ndarray, params: QAParams) -> Finding:
    """Fraction of pixels outside {0, 255} (antialiased or JPEG-damaged masks); fixable by ``binarise``."""
    _require_2d(grey)
    if grey.dtype != np.uint8:
        raise ValueError(f"non_binary needs a uint8 mask, got {grey.dtype}")
    soft = cv2.inRange(grey, np.array([1]), np.array([254]))
    n = cv2.countNonZero(soft)
    frac = n / grey.size if grey.size else 0.0
    if frac <= params.non_binary_max_fraction:
        return _passed("non_binary", frac, params.non_binary_max_fraction)
    x, y, w, h = cv2.boundingRect(soft)
    return Finding("non_binary", False, "warning", frac, params.non_binary_max_fraction, True, "binarise",
                   (x, y, x + w, y + h), f"{n} pixels outside {{0, 255}}")


def check_empty_full(fg_count: int, size: int) -> tuple[Finding, Finding]:
    """``empty`` (no foreground) and ``full`` (all foreground) findings; errors, not fixable."""
    empty = (Finding("empty", False, "error", 0.0, 0.0, detail="the mask has no foreground pixel")
             if fg_count == 0 else _passed("empty", fg_count, 0.0))
    full = (Finding("full", False, "error", 1.0, 1.0, detail="every pixel is foreground")
            if size and fg_count == size else _passed("full", fg_count / size if size else 0.0, 1.0))
    return empty, full


def check_fg_fraction(fg_count: int, size: int, params: QAParams) -> Finding:
    """Foreground fraction of the image; fails (warning) outside ``[min_fg_fraction, max_fg_fraction]``."""
    frac = fg_count / size if size else 0.0
    if frac < params.min_fg_fraction:
        return Finding("fg_fraction", False, "warning", frac, params.min_fg_fraction,
                       detail=f"foreground is {frac:.4%} of the image, below {params.min_fg_fraction:.4%}")
    if frac > params.max_fg_fraction:
        return Finding("fg_fraction", False, "warning", frac, params.max_fg_fraction,
                       detail=f"foreground is {frac:.2%} of the image, above {params.max_fg_fraction:.2%}")
    return _passed("fg_fraction", frac, params.max_fg_fraction)


# --------------------------------------------------------------------------- components


def island_limit(fg_count: int, params: QAParams) -> float:
    """Largest area (px) still counted as an island: ``max(island_max_fraction x fg, island_max_px)``."""
    return max(params.island_max_fraction * fg_count, float(params.island_max_px))


def hole_limit(fg_count: int, params: QAParams) -> float:
    """Largest area (px) still counted as a small hole: ``max(hole_max_fraction x fg, hole_max_px)``."""
    return max(params.hole_max_fraction * fg_count, float(params.hole_max_px))


def check_islands(fg_comps: Components, fg_count: int, params: QAParams) -> Finding:
    """Foreground components of at most :func:`island_limit` pixels (the largest component never counts).
    ``value`` = number of islands; fixable by ``remove_islands``."""
    limit = island_limit(fg_count, params)
    if fg_comps.count <= 1:
        return _passed("islands", 0, limit)
    keep = fg_comps.area <= limit
    keep[int(np.argmax(fg_comps.area))] = False
    islands = fg_comps.select(keep)
    if islands.count == 0:
        return _passed("islands", 0, limit)
    return Finding("islands", False, "warning", islands.count, limit, True, "remove_islands",
                   _box(islands.union_box()),
                   f"{islands.count} foreground components of at most {limit:.1f} px "
                   f"({int(islands.area.sum())} px in total)")


def enclosed(bg_comps: Components) -> Components:
    """Background components that do not touch the image border (holes of any size)."""
    return bg_comps.select(~bg_comps.border)


def check_holes(bg_comps: Components, fg_count: int, params: QAParams) -> tuple[Finding, Finding]:
    """``holes``: enclosed background components of at most :func:`hole_limit` pixels (warning, fixable by
    ``fill_holes``); ``large_holes``: the larger ones (info only: often legitimate)."""
    limit = hole_limit(fg_count, params)
    holes = enclosed(bg_comps)
    small = holes.select(holes.area <= limit)
    large = holes.select(holes.area > limit)
    if small.count:
        f_small = Finding("holes", False, "warning", small.count, limit, True, "fill_holes",
                          _box(small.union_box()),
                          f"{small.count} enclosed background components of at most {limit:.1f} px "
                          f"({int(small.area.sum())} px in total)")
    else:
        f_small = _passed("holes", 0, limit)
    if large.count:
        f_large = Finding("large_holes", False, "info", large.count, limit, False, "fill_all_holes",
                          _box(large.union_box()),
                          f"{large.count} enclosed background regions above {limit:.1f} px "
                          f"(largest {int(large.area.max())} px); legitimate for handles, rings, gaps")
    else:
        f_large = _passed("large_holes", 0, limit)
    return f_small, f_large


def check_border(fg: np.ndarray, params: QAParams) -> Finding:
    """Fraction of the image's border pixels that are foreground (the object may be cut off); info."""
    _require_2d(fg)
    h, w = fg.shape
    top, bottom, left, right = fg[0], fg[h - 1], fg[:, 0], fg[:, w - 1]
    n_border = 2 * w + 2 * h - 4 if h > 1 and w > 1 else h * w
    touched = int(top.sum() + left.sum()) + (int(bottom.sum() + right.sum()) if h > 1 and w > 1 else 0)
    if h > 1 and w > 1:  # corners were counted twice
        touched -= int(fg[0, 0]) + int(fg[0, w - 1]) + int(fg[h - 1, 0]) + int(fg[h - 1, w - 1])
    frac = touched / n_border if n_border else 0.0
    if frac <= params.border_max_fraction:
        return _passed("border", frac, params.border_max_fraction)
    sides = [name for name, arr in (("top", top), ("bottom", bottom), ("left", left), ("right", right)) if arr.any()]
    xs = np.concatenate([np.flatnonzero(top), np.flatnonzero(bottom), np.zeros(int(left.sum()), np.int64),
                         np.full(int(right.sum()), w - 1, np.int64)])
    ys = np.concatenate([np.zeros(int(top.sum()), np.int64), np.full(int(bottom.sum()), h - 1, np.int64),
                         np.flatnonzero(left), np.flatnonzero(right)])
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    return Finding("border", False, "info", frac, params.border_max_fraction, region=(x0, y0, x1, y1),
                   detail=f"foreground touches the {', '.join(sides)} border ({frac:.1%} of border pixels)")


# --------------------------------------------------------------------------- geometry / image


def shrink(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``arr`` ((H, W) or (H, W, C) uint8) resized so its longer side is at most ``max_side``; returns
    ``(resized, scale)``. Large reductions first take every k-th pixel (down to twice the target size),
    then area-average: ~3x faster on 12 MP than area averaging alone, and smooth enough for gradients."""
    return shrink_longest(arr, max_side, copy=False, subsample=True)


def shrink_mask(fg: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Bool mask ``fg`` shrunk like :func:`shrink` (re-thresholded at half coverage)."""
    h, w = fg.shape
    scale = longest_side_scale(h, w, max_side)
    if scale >= 1.0:
        return fg, 1.0
    k = int(1.0 / (2.0 * scale))
    sub = fg[::k, ::k] if k >= 2 else fg
    u8 = np.ascontiguousarray(sub).view(np.uint8) * np.uint8(255)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(u8, size, interpolation=cv2.INTER_AREA) >= 128, scale


def edge_response(image: np.ndarray, fg: np.ndarray, max_side: int, max_shift: int) -> tuple[np.ndarray, float]:
    """Mean image-gradient magnitude along the mask boundary for every shift of the boundary.

    Works at a scale where the longer side is at most ``max_side``. Returns ``(response, scale)``:
    ``response`` float64 ``(2S+1, 2S+1)`` indexed ``[dy + S, dx + S]`` (S = ``max_shift``), the mean
    gradient under the boundary moved by ``(dx, dy)`` analysis pixels.
    """
    small_img, scale = shrink(image, max_side)
    small_fg, _ = shrink_mask(fg, max_side)
    grey = cv2.GaussianBlur(cv2.cvtColor(small_img, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    grad = cv2.magnitude(gx, gy)
    u8 = small_fg.view(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    band = (cv2.dilate(u8, kernel) != cv2.erode(u8, kernel)).astype(np.float32)  # 2-px boundary band
    s = max_shift
    grad_p = cv2.copyMakeBorder(grad, s, s, s, s, cv2.BORDER_REFLECT)
    n = float(cv2.countNonZero(band))
    if n == 0:
        return np.zeros((2 * s + 1, 2 * s + 1)), scale
    # correlation of the band with the gradient for every shift: response[dy+S, dx+S]
    resp = cv2.matchTemplate(grad_p, band, cv2.TM_CCORR)
    return resp.astype(np.float64) / n, scale


def check_edge_alignment(image: np.ndarray, fg: np.ndarray, params: QAParams) -> Finding:
    """How well the mask boundary follows image edges: ``value`` = gradient under the boundary as it is,
    divided by the best gradient under the boundary shifted by up to ``edge_max_shift`` analysis pixels
    (1 = no shift does better). A shifted or misaligned mask scores well below 1."""
    if image.shape[:2] != fg.shape:
        raise ValueError(f"edge_alignment: image {image.shape[:2]} and mask {fg.shape} differ in size")
    resp, scale = edge_response(image, fg, params.edge_max_side, params.edge_max_shift)
    s = params.edge_max_shift
    best = float(resp.max())
    if best <= 0:
        return _passed("edge_alignment", 1.0, params.edge_min_alignment, "no boundary or no image edges")
    score = float(resp[s, s]) / best
    dy, dx = np.unravel_index(int(np.argmax(resp)), resp.shape)
    dx_px, dy_px = (int(dx) - s) / scale, (int(dy) - s) / scale
    detail = f"best boundary offset dx={dx_px:+.0f}px dy={dy_px:+.0f}px"
    if score >= params.edge_min_alignment:
        return _passed("edge_alignment", score, params.edge_min_alignment, detail)
    return Finding("edge_alignment", False, "warning", score, params.edge_min_alignment, detail=detail)


def stair_fraction(contour: np.ndarray, min_run: int, window: int) -> tuple[int, int]:
    """Stair-stepped points of one closed 8-connected contour (``(N, 2)`` int x, y, as from
    ``cv2.findContours(..., CHAIN_APPROX_NONE)``).

    A point is stair-stepped when it lies in a run of at least ``min_run`` identical horizontal or vertical
    steps while the outline around it (the chord from ``window`` points before to ``window`` points after)
    runs diagonally (20-70 degrees from the axes). A smooth diagonal edge is rasterised as runs of 1-2
    axis steps; a staircase from a blocky or nearest-neighbour-upscaled mask has long axis runs.
    Returns ``(stair_points, points)``.
    """
    pts = contour.reshape(-1, 2).astype(np.int64)
    n = len(pts)
    if n < 2 * window + 2:
        return 0, n
    step = np.roll(pts, -1, axis=0) - pts
    code = (step[:, 0] + 1) * 3 + (step[:, 1] + 1)  # 0..8, one value per direction
    axis = (step[:, 0] == 0) ^ (step[:, 1] == 0)
    change = np.flatnonzero(code != np.roll(code, 1))
    runlen = np.empty(n, dtype=np.int64)
    if change.size == 0:
        runlen[:] = n
    else:
        # run lengths of identical consecutive steps (circular)
        bounds = np.concatenate([change, [change[0] + n]])
        lengths = np.diff(bounds)
        ids = np.repeat(np.arange(lengths.size), lengths)
        order = (np.arange(change[0], change[0] + n)) % n
        runlen[order] = lengths[ids]
    chord = np.roll(pts, -window, axis=0) - np.roll(pts, window, axis=0)
    ang = np.degrees(np.arctan2(np.abs(chord[:, 1]), np.abs(chord[:, 0])))
    diagonal = (ang > 20) & (ang < 70)
    return int(np.count_nonzero(axis & (runlen >= min_run) & diagonal)), n


def check_jaggedness(fg: np.ndarray, params: QAParams) -> Finding:
    """Stair-stepping of the boundary: the fraction of outer-contour points in long horizontal/vertical
    runs along diagonal stretches of the outline (see :func:`stair_fraction`), at a scale where the longer
    side is at most ``jagged_max_side``. Smooth hand-drawn or polygon boundaries score near 0; masks
    rebuilt from a coarse grid (blocky, nearest-neighbour upscaled) score well above ``jagged_max_fraction``."""
    small, _ = shrink_mask(fg, params.jagged_max_side)
    u8 = np.ascontiguousarray(small).view(np.uint8)
    contours, _ = cv2.findContours(u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    stair = total = 0
    for c in contours:
        s_, n_ = stair_fraction(c, params.jagged_min_run, params.jagged_window)
        stair += s_
        total += n_
    value = stair / total if total else 0.0
    if value <= params.jagged_max_fraction:
        return _passed("jaggedness", value, params.jagged_max_fraction)
    return Finding("jaggedness", False, "warning", value, params.jagged_max_fraction,
                   detail=f"{value:.1%} of the outline is stair-stepped (axis runs of {params.jagged_min_run}+ px "
                          "along diagonal edges)")


@dataclass(frozen=True)
class Disagreement:
    """Pre-annotation vs human correction: IoU (1 when both are empty), boundary F-measure with a tolerance
    of ``tolerance_px``, and the number and fraction (of the image) of pixels the human changed."""

    iou: float
    boundary_f: float
    pixels_changed: int
    changed_fraction: float
    tolerance_px: int


def _boundary(fg: np.ndarray) -> np.ndarray:
    u8 = fg.view(np.uint8)
    return (u8 != cv2.erode(u8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)).view(bool)


def disagreement(pre: np.ndarray, corrected: np.ndarray, tolerance: float, max_side: int = 1000) -> Disagreement:
    """Compare two bool ``(H, W)`` masks; ``tolerance`` is the boundary-F tolerance as a fraction of the
    image diagonal (at least 1 px), as in the DAVIS benchmark. IoU and changed pixels are exact; the
    boundary F is measured at a size whose longer side is at most ``max_side`` (tolerance scaled alike)."""
    if pre.shape != corrected.shape:
        raise ValueError(f"pre-annotation {pre.shape} and correction {corrected.shape} differ in size")
    a, b = pre.view(np.uint8), corrected.view(np.uint8)
    inter = cv2.countNonZero(cv2.bitwise_and(a, b))
    changed = cv2.countNonZero(cv2.bitwise_xor(a, b))
    union = inter + changed
    iou = inter / union if union else 1.0
    h, w = pre.shape
    tol = max(1, round(tolerance * math.hypot(h, w)))
    # boundary F at a working size (longer side <= max_side) with the tolerance scaled alike
    small_a, scale = shrink_mask(pre, max_side)
    small_b, _ = shrink_mask(corrected, max_side)
    tol_s = max(1, round(tol * scale))
    ba, bb = _boundary(np.ascontiguousarray(small_a)), _boundary(np.ascontiguousarray(small_b))
    na, nb = int(np.count_nonzero(ba)), int(np.count_nonzero(bb))
    if na == 0 and nb == 0:
        bf = 1.0
    elif na == 0 or nb == 0:
        bf = 0.0
    else:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tol_s + 1, 2 * tol_s + 1))
        da = cv2.dilate(ba.view(np.uint8), k).view(bool)
        db = cv2.dilate(bb.view(np.uint8), k).view(bool)
        precision = float(np.count_nonzero(bb & da)) / nb
        recall = float(np.count_nonzero(ba & db)) / na
        bf = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Disagreement(iou, bf, changed, changed / pre.size if pre.size else 0.0, tol)


def check_disagreement(d: Disagreement, params: QAParams) -> Finding:
    """Fails (warning) when the human correction's IoU with the pre-annotation is below
    ``disagreement_min_iou``: a large change deserves a second look."""
    detail = (f"IoU {d.iou:.3f}, boundary F {d.boundary_f:.3f} (±{d.tolerance_px}px), "
              f"{d.pixels_changed} pixels changed ({d.changed_fraction:.2%})")
    if d.iou >= params.disagreement_min_iou:
        return _passed("disagreement", d.iou, params.disagreement_min_iou, detail)
    return Finding("disagreement", False, "warning", d.iou, params.disagreement_min_iou, detail=detail)


# --------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class MaskReport:
    """What :func:`run_checks` returns: the findings (report order) and the disagreement figures."""

    findings: tuple[Finding, ...]
    disagreement: Disagreement | None = None

    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed)

    def get(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)


def run_checks(
    grey: np.ndarray,
    params: QAParams,
    image: np.ndarray | None = None,
    image_shape: tuple[int, int] | None = None,
    pre: np.ndarray | None = None,
) -> MaskReport:
    """Every per-item check on one mask.

    ``grey``: uint8 ``(H, W)`` mask pixels; ``image``: RGB uint8 ``(H, W, 3)`` (enables ``edge_alignment``);
    ``image_shape``: ``(H, W)`` to compare against when the image itself is not given; ``pre``: the
    pre-annotation, bool or uint8 ``(H, W)`` (enables ``disagreement``). Checks that cannot run (no image,
    size mismatch) are left out of the result rather than reported as passed.
    """
    _require_2d(grey)
    if grey.dtype != np.uint8:
        raise ValueError(f"expected a uint8 mask, got {grey.dtype}")
    out: list[Finding] = [check_readable("")]
    expected = image.shape[:2] if image is not None else image_shape
    size_ok = True
    if expected is not None:
        f = check_size(grey.shape, (int(expected[0]), int(expected[1])))
        size_ok = f.passed
        out.append(f)
    fg = binarise(grey)
    fg_count = int(np.count_nonzero(fg))
    empty, full = check_empty_full(fg_count, fg.size)
    out += [empty, full, check_fg_fraction(fg_count, fg.size, params), check_non_binary(grey, params)]
    fg_comps, bg_comps = components(fg, params.connectivity, params.hole_connectivity)
    out.append(check_islands(fg_comps, fg_count, params))
    out += list(check_holes(bg_comps, fg_count, params))
    out.append(check_border(fg, params))
    if image is not None and size_ok and 0 < fg_count < fg.size:
        out.append(check_edge_alignment(image, fg, params))
    if fg_count:
        out.append(check_jaggedness(fg, params))
    d = None
    if pre is not None and pre.shape == fg.shape:
        d = disagreement(pre.astype(bool, copy=False) if pre.dtype == bool else pre >= 128, fg,
                         params.boundary_tolerance, params.jagged_max_side)
        out.append(check_disagreement(d, params))
    return MaskReport(tuple(out), d)


def max_severity(findings: Sequence[Finding]) -> str:
    """The highest severity among ``findings`` (``none`` when all passed)."""
    return max((f.severity for f in findings), key=severity_rank, default="none")
