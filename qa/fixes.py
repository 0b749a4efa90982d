"""Auto-fixes for QA findings: pure functions ``grey mask -> FixResult`` in the :data:`FIXES` registry.

Safe fixes (applied automatically by the curate stage, ``curate.auto_fixes``) only touch what the
matching check flagged under its threshold:

- ``binarise``: every pixel to {0, 255} at 128 (antialiased or JPEG-damaged masks).
- ``remove_islands``: foreground components of at most :func:`qa.checks.island_limit` pixels removed
  (never the largest component).
- ``fill_holes``: enclosed background components of at most :func:`qa.checks.hole_limit` pixels filled.

Review-only fixes (a reviewer applies them with a ``fix`` decision; never automatic):

- ``fill_all_holes``: every enclosed background component filled (a mug handle becomes solid).
- ``keep_largest``: only the largest foreground component kept.

Every fix returns a new mask (the input is never modified), uint8 ``(H, W)`` in {0, 255}, plus the number
of pixels it changed, so the stage can record which fixes were applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from qa.checks import QAParams, binarise, enclosed, hole_limit, island_limit
from qa.components import Components, components


@dataclass(frozen=True)
class FixResult:
    """A fixed mask (uint8 ``(H, W)`` {0, 255}) and how many pixels the fix changed."""

    fix: str
    mask: np.ndarray
    changed: int


FixFn = Callable[[np.ndarray, QAParams], FixResult]


def _to_mask(fg: np.ndarray) -> np.ndarray:
    return np.where(fg, np.uint8(255), np.uint8(0))


def _paint(fg: np.ndarray, comps: Components, value: bool, connectivity: int) -> np.ndarray:
    """Set the pixels of the selected components to ``value`` (re-labelled inside each component's box)."""
    out = fg.copy()
    for x0, y0, x1, y1, area in zip(comps.x0.tolist(), comps.y0.tolist(), comps.x1.tolist(), comps.y1.tolist(),
                                    comps.area.tolist(), strict=True):
        # the component is the connected set of `not value` pixels in its box with exactly this area and box
        crop = (out[y0:y1, x0:x1] != value).view(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=connectivity)
        for k in range(1, n):
            x, y, w, h, a = stats[k]
            if a == area and x == 0 and y == 0 and w == x1 - x0 and h == y1 - y0:
                out[y0:y1, x0:x1][labels == k] = value
                break
    return out


def binarise_fix(grey: np.ndarray, params: QAParams) -> FixResult:
    """All pixels to {0, 255}, threshold 128."""
    out = _to_mask(binarise(grey))
    return FixResult("binarise", out, int(np.count_nonzero(out != grey)))


def remove_islands(grey: np.ndarray, params: QAParams) -> FixResult:
    """Remove foreground components of at most :func:`qa.checks.island_limit` px (not the largest)."""
    fg = binarise(grey)
    n = int(np.count_nonzero(fg))
    fg_comps, _ = components(fg, params.connectivity, params.hole_connectivity)
    if fg_comps.count <= 1:
        return FixResult("remove_islands", _to_mask(fg), 0)
    keep = fg_comps.area <= island_limit(n, params)
    keep[int(np.argmax(fg_comps.area))] = False
    islands = fg_comps.select(keep)
    out = _paint(fg, islands, False, params.connectivity)
    return FixResult("remove_islands", _to_mask(out), int(islands.area.sum()))


def _fill(grey: np.ndarray, params: QAParams, all_holes: bool, name: str) -> FixResult:
    fg = binarise(grey)
    n = int(np.count_nonzero(fg))
    _, bg_comps = components(fg, params.connectivity, params.hole_connectivity)
    holes = enclosed(bg_comps)
    if not all_holes:
        holes = holes.select(holes.area <= hole_limit(n, params))
    out = _paint(fg, holes, True, params.hole_connectivity)
    return FixResult(name, _to_mask(out), int(holes.area.sum()))


def fill_holes(grey: np.ndarray, params: QAParams) -> FixResult:
    """Fill enclosed background components of at most :func:`qa.checks.hole_limit` px."""
    return _fill(grey, params, False, "fill_holes")


def fill_all_holes(grey: np.ndarray, params: QAParams) -> FixResult:
    """Fill every enclosed background component (review-only)."""
    return _fill(grey, params, True, "fill_all_holes")


def keep_largest(grey: np.ndarray, params: QAParams) -> FixResult:
    """Keep only the largest foreground component (review-only)."""
    fg = binarise(grey)
    fg_comps, _ = components(fg, params.connectivity, params.hole_connectivity)
    if fg_comps.count <= 1:
        return FixResult("keep_largest", _to_mask(fg), 0)
    drop = np.ones(fg_comps.count, dtype=bool)
    drop[int(np.argmax(fg_comps.area))] = False
    others = fg_comps.select(drop)
    out = _paint(fg, others, False, params.connectivity)
    return FixResult("keep_largest", _to_mask(out), int(others.area.sum()))


FIXES: dict[str, FixFn] = {
    "binarise": binarise_fix,
    "remove_islands": remove_islands,
    "fill_holes": fill_holes,
    "fill_all_holes": fill_all_holes,
    "keep_largest": keep_largest,
}
"""Every fix by name (the names ``fix`` review decisions and ``curate.auto_fixes`` use)."""

SAFE_FIXES: tuple[str, ...] = ("binarise", "remove_islands", "fill_holes")
"""Fixes that may run automatically: they only change what a check flagged under its threshold."""


def get_fix(name: str) -> FixFn:
    """The fix called ``name`` (ValueError listing the known fixes otherwise)."""
    try:
        return FIXES[name]
    except KeyError:
        raise ValueError(f"unknown fix {name!r}; known fixes: {sorted(FIXES)}") from None


def apply_fixes(grey: np.ndarray, names: Sequence[str], params: QAParams) -> tuple[np.ndarray, tuple[FixResult, ...]]:
    """Apply fixes in order; returns the final mask (uint8 {0, 255}) and the fixes that changed pixels.

    The mask is always binarised at the end, so the result is a valid mask whatever ``names`` holds.
    """
    applied: list[FixResult] = []
    cur = grey
    for name in names:
        res = get_fix(name)(cur, params)
        if res.changed:
            applied.append(res)
        cur = res.mask
    final = _to_mask(binarise(cur))
    return final, tuple(applied)
