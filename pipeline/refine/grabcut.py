"""``grabcut`` refinement engine (weight-free default): clicks as hard seeds, the current mask as the prior.

On a copy of the image whose longer side is ``work_side`` px (cost independent of the photo size; the
downscaled copies are cached per item, so later clicks skip them):

1. **Prior -> labels** (:func:`click_labels`). With a current mask, its inside is probable foreground and its
   outside probable background, but only in a band of ``band`` x the longer side around its edge and in a
   *release disc* around every click that disagrees with it (radius ``release`` x the click's distance to
   the edge + the band): elsewhere the prior is kept as definite labels, so a click changes the mask near
   the click and along the edge, never far away. A *deep* click (distance to the edge >= ``deep`` x the square
   root of the area of the prior's part it lies in: the prior is badly wrong there) releases that whole part
   instead of a disc (:func:`deep_part`); when less than ``deep_keep`` of the part keeps its side after the cut
   (GrabCut's colour models collapsed), the local disc release is cut instead. Inside a disagreeing click's
   release disc, pixels closer to the click than half its distance to the edge take the click's side as
   probable label. With an empty
   canvas (no foreground yet), every pixel is probable background except discs of ``empty_radius`` around
   positive clicks (probable foreground) and the image border (definite background, as the classic GrabCut
   rectangle), unless a box is given: then outside the box is definite background and inside probable
   foreground.
2. **Clicks -> hard seeds**: a disc of ``click_radius`` x the longer side around each click is definite
   foreground (positive) or background (negative), oldest first so a later click wins.
3. ``cv2.grabCut`` (``iterations``, ``GC_INIT_WITH_MASK``); foreground islands smaller than
   ``min_island_frac`` of the largest are dropped unless they hold a positive click.
4. **Back to full size, edge-aware**: the grabcut pre-annotator's fast guided filter
   (:mod:`pipeline.preannotators.grabcut`: coefficients at ``refine_side``, applied on the full-size grey
   image). Outside the pixels GrabCut was allowed to change, the full-resolution current mask is kept bit
   for bit (a human's fine edge is never blurred by a click elsewhere).
5. **Clicks by construction**: a small disc around every click is painted last (:func:`force_clicks`), so
   the clicked pixels are always on the clicked side.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from pipeline.core.params import Paths, params_digest
from pipeline.preannotators import grabcut as gc
from pipeline.preannotators.base import GrabCutParams
from pipeline.refine.base import (
    Box,
    Click,
    GrabCutRefineParams,
    RefineItem,
    RefineParams,
    RefineResult,
    RefinerSpec,
    check_clicks,
    check_mask,
    force_clicks,
)

log = logging.getLogger(__name__)

VERSION = "1"
BORDER_FRAC = 0.03

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small thread-safe LRU map (per-item engine state). ``get_or_make`` builds a missing entry once, even
    when several threads ask for the same key at the same time (the others wait for it); different keys are
    built concurrently."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[K, threading.Lock] = {}

    def get_or_make(self, key: K, make: Callable[[], V]) -> tuple[V, bool]:
        """``(value, was_cached)``."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key], True
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key], True
            try:
                value = make()
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
        return value, False

    def __len__(self) -> int:
        return len(self._data)


# --------------------------------------------------------------------------- per-item state


@dataclass(frozen=True, eq=False)
class Pyramid:
    """An image at three sizes: full RGB ``(H, W, 3)``, its ``refine_side`` copy and its ``work_side`` copy,
    plus the full-size grey guide float32 in [0, 1], the guide at ``refine_side`` and the work copy in CIE Lab
    (uint8, lightly blurred) for the magic wand."""

    full: np.ndarray
    mid: np.ndarray
    small: np.ndarray
    grey_full: np.ndarray
    grey_mid: np.ndarray
    lab: np.ndarray


def build_pyramid(image: np.ndarray, work_side: int, refine_side: int) -> Pyramid:
    """The :class:`Pyramid` of an RGB uint8 ``(H, W, 3)`` image."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"refine needs an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
    mid = gc.downscale(image, refine_side)
    small = gc.downscale(mid, work_side)
    grey_full = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1.0 / 255.0)
    grey_mid = grey_full if mid.shape[:2] == image.shape[:2] else (
        cv2.cvtColor(mid, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1.0 / 255.0)
    )
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_RGB2LAB)
    return Pyramid(image, mid, small, grey_full, grey_mid, lab)


# --------------------------------------------------------------------------- pure functions


def scale_clicks(clicks: Sequence[Click], full: tuple[int, int], small: tuple[int, int]) -> list[Click]:
    """Clicks in full-image pixels -> the same clicks on a ``small`` ``(h, w)`` copy of a ``full`` ``(H, W)``
    image (pixel centres mapped, clamped inside)."""
    (H, W), (h, w) = full, small
    return [
        Click(min(w - 1, int((c.x + 0.5) * w / W)), min(h - 1, int((c.y + 0.5) * h / H)), c.positive) for c in clicks
    ]


def wand(lab: np.ndarray, allowed: np.ndarray, click: Click, tolerance: float) -> np.ndarray:
    """Magic wand: the 4-connected bool region ``(h, w)`` of ``allowed`` pixels reachable from ``click`` whose
    colour (``lab``: uint8 CIE Lab ``(h, w, 3)``) lies within ``tolerance`` per channel of the clicked pixel's."""
    h, w = allowed.shape
    if tolerance <= 0 or not allowed[click.y, click.x]:
        return np.zeros((h, w), bool)
    fill = np.ones((h + 2, w + 2), np.uint8)
    fill[1:-1, 1:-1][allowed] = 0
    t = (tolerance,) * 3
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (2 << 8)
    cv2.floodFill(lab, fill, (click.x, click.y), (0, 0, 0), t, t, flags)  # type: ignore[call-overload]
    return fill[1:-1, 1:-1] == 2


def deep_part(
    c: Click, inside: bool, d: float, fg_comp: np.ndarray, fg_stats: np.ndarray, bg_comp: np.ndarray,
    bg_stats: np.ndarray, deep: float,
) -> np.ndarray | None:
    """The bool ``(h, w)`` part of the prior (its 8-connected foreground part for a negative click inside it,
    its 4-connected background part for a positive click outside) that a disagreeing click at distance ``d``
    (px) from the prior's edge releases whole, or None: only when ``d >= deep`` x the square root of that
    part's area (the click lies deep inside a large error, relative to the part's size; ``deep`` 0 = off)."""
    if deep <= 0:
        return None
    comp, stats = (fg_comp, fg_stats) if inside else (bg_comp, bg_stats)
    k = int(comp[c.y, c.x])
    if k == 0 or d < deep * float(np.sqrt(stats[k, cv2.CC_STAT_AREA])):
        return None
    return comp == k  # type: ignore[no-any-return]


def deep_released(prior: np.ndarray, clicks: Sequence[Click], params: GrabCutRefineParams) -> np.ndarray:
    """The bool ``(h, w)`` union of the prior's parts that disagreeing clicks release whole (:func:`deep_part`;
    work-size ``prior`` and ``clicks``), as :func:`click_labels` does; empty when ``deep`` is 0."""
    out = np.zeros(prior.shape, bool)
    if params.deep <= 0 or not prior.any():
        return out
    side = max(prior.shape)
    d_in = cv2.distanceTransform(np.pad(prior.astype(np.uint8), 1, constant_values=0), cv2.DIST_L2, 5)[1:-1, 1:-1]
    d_out = cv2.distanceTransform((~prior).astype(np.uint8), cv2.DIST_L2, 5)
    _n, fg_comp, fg_stats, _ = cv2.connectedComponentsWithStats(prior.astype(np.uint8), connectivity=8)
    _n, bg_comp, bg_stats, _ = cv2.connectedComponentsWithStats((~prior).astype(np.uint8), connectivity=4)
    for c in clicks:
        inside = bool(prior[c.y, c.x])
        if inside == c.positive:
            continue
        d = float(d_in[c.y, c.x] if inside else d_out[c.y, c.x])
        if c.positive and d >= params.far * side:
            continue  # a new part (see click_labels)
        part = deep_part(c, inside, d, fg_comp, fg_stats, bg_comp, bg_stats, params.deep)
        if part is not None:
            out |= part
    return out


def click_labels(
    prior: np.ndarray, clicks: Sequence[Click], params: GrabCutRefineParams, box: Box | None = None,
    lab: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """GrabCut label map uint8 ``(h, w)`` (``cv2.GC_*``) and the bool map of pixels GrabCut may change.

    ``prior``: bool ``(h, w)`` current mask at work size; ``clicks`` and ``box`` in work-size pixels; ``lab``:
    the work copy in CIE Lab uint8 ``(h, w, 3)`` for the magic wand (None: no wand). See the module docstring
    for the rules; click seeds are painted last, oldest first.
    """
    h, w = prior.shape
    side = max(h, w)
    r_click = max(1, round(params.click_radius * side))
    band = params.band * side
    if prior.any():
        labels = np.where(prior, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        d_in = cv2.distanceTransform(np.pad(prior.astype(np.uint8), 1, constant_values=0), cv2.DIST_L2, 5)[1:-1, 1:-1]
        d_out = cv2.distanceTransform((~prior).astype(np.uint8), cv2.DIST_L2, 5)
        free = np.where(prior, d_in, d_out) <= band
        _n_fg, fg_comp, fg_stats, _ = cv2.connectedComponentsWithStats(prior.astype(np.uint8), connectivity=8)
        _n_bg, bg_comp, bg_stats, _ = cv2.connectedComponentsWithStats((~prior).astype(np.uint8), connectivity=4)
        largest_fg = 1 + int(np.argmax(fg_stats[1:, cv2.CC_STAT_AREA]))
        border_bg = set(np.unique(np.concatenate([bg_comp[0], bg_comp[-1], bg_comp[:, 0], bg_comp[:, -1]])).tolist())
        handled: set[int] = set()
        for i, c in enumerate(clicks):
            if c.positive or not prior[c.y, c.x]:
                continue
            # a negative click on a separate foreground part (not the largest, no positive click in it): drop it
            k = int(fg_comp[c.y, c.x])
            if params.whole_parts and k != largest_fg and not any(
                d.positive and fg_comp[d.y, d.x] == k for d in clicks
            ):
                part = fg_comp == k
                labels[part] = cv2.GC_BGD
                handled.add(i)
                free |= cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, round(band))) > 0
        for i, c in enumerate(clicks):
            if not c.positive or prior[c.y, c.x]:
                continue
            # a positive click in an enclosed hole of the prior (no negative click in it): the hole may be filled
            k = int(bg_comp[c.y, c.x])
            if params.whole_parts and k not in border_bg and not any(
                not d.positive and bg_comp[d.y, d.x] == k for d in clicks
            ):
                hole = bg_comp == k
                labels[hole] = cv2.GC_PR_FGD
                free |= hole
                handled.add(i)
        for i, c in enumerate(clicks):
            inside = bool(prior[c.y, c.x])
            if inside == c.positive or i in handled:
                continue  # agrees with the prior (a seed, nothing to free), or handled as a whole part above
            d = float(d_in[c.y, c.x] if inside else d_out[c.y, c.x])
            if c.positive and d >= params.far * side:
                # a positive click far from the prior: a new part of the object, seeded as on an empty canvas
                r_empty = max(r_click, round(params.empty_radius * side))
                disc = np.zeros((h, w), np.uint8)
                cv2.circle(disc, (c.x, c.y), 2 * r_empty, 1, -1)
                free |= disc > 0
                cv2.circle(labels, (c.x, c.y), r_empty, int(cv2.GC_PR_FGD), -1)
                continue
            part = deep_part(c, inside, d, fg_comp, fg_stats, bg_comp, bg_stats, params.deep)
            if part is not None:
                # deep inside a large error: the prior is badly wrong here, its whole part on the click's side
                # is released (probable labels) instead of a disc around the click
                disc = part.astype(np.uint8)
            else:
                radius = round(min(params.release * d, params.max_release * side) + band + r_click)
                disc = np.zeros((h, w), np.uint8)
                cv2.circle(disc, (c.x, c.y), radius, 1, -1)
            free |= disc > 0
            if part is not None and not c.positive and params.deep_near > 0:
                # a deep negative click in a bloated part: its neighbourhood is background whatever the colours
                # (the foreground model, learnt from the blob itself, would otherwise keep it)
                around = np.zeros((h, w), np.uint8)
                cv2.circle(around, (c.x, c.y), max(r_click, round(params.deep_near * d)), 1, -1)
                labels[(around > 0) & part] = cv2.GC_PR_BGD
            near = np.zeros((h, w), np.uint8)
            cv2.circle(near, (c.x, c.y), max(r_click, round(params.near * d)), 1, -1)
            if lab is not None and params.wand > 0:
                region = wand(lab, (disc > 0) & (prior == inside), c, params.wand)
                labels[region] = cv2.GC_PR_FGD if c.positive else cv2.GC_PR_BGD
                labels[region & (near > 0)] = cv2.GC_FGD if c.positive else cv2.GC_BGD
            else:
                labels[near > 0] = cv2.GC_PR_FGD if c.positive else cv2.GC_PR_BGD
        labels[~free & prior] = cv2.GC_FGD
        labels[~free & ~prior] = cv2.GC_BGD
    else:
        labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        free = np.ones((h, w), bool)
        if box is None:
            b = max(1, round(BORDER_FRAC * min(h, w)))
            labels[:b] = labels[-b:] = cv2.GC_BGD
            labels[:, :b] = labels[:, -b:] = cv2.GC_BGD
        r_empty = max(r_click, round(params.empty_radius * side))
        for c in clicks:
            if c.positive:
                cv2.circle(labels, (c.x, c.y), r_empty, int(cv2.GC_PR_FGD), -1)
    if box is not None:
        inside_box = np.zeros((h, w), bool)
        inside_box[box.y0 : box.y1, box.x0 : box.x1] = True
        if not prior.any():
            labels[inside_box & (labels == cv2.GC_PR_BGD)] = cv2.GC_PR_FGD
        labels[~inside_box] = cv2.GC_BGD
        free &= inside_box
    free_u8 = free.astype(np.uint8)
    for c in clicks:
        cv2.circle(labels, (c.x, c.y), r_click, int(cv2.GC_FGD if c.positive else cv2.GC_BGD), -1)
        cv2.circle(free_u8, (c.x, c.y), r_click, 1, -1)
    return labels, free_u8 > 0


def cut(small: np.ndarray, labels: np.ndarray, clicks: Sequence[Click], params: GrabCutRefineParams) -> np.ndarray:
    """GrabCut on the work copy ``small`` (RGB uint8 ``(h, w, 3)``) from ``labels``: bool foreground ``(h, w)``.

    Without both a foreground and a background label GrabCut cannot fit its two colour models; the labels'
    own foreground side is returned then. Islands under ``min_island_frac`` of the largest are dropped unless
    they hold a positive click."""
    fg_seed = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not fg_seed.any() or fg_seed.all():
        return fg_seed
    out, _bgd, _fgd = gc.run_grabcut(small, labels, params.iterations)
    fg = (out == cv2.GC_FGD) | (out == cv2.GC_PR_FGD)
    if not fg.any():
        return fg
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 2:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = set((np.flatnonzero(areas >= params.min_island_frac * areas.max()) + 1).tolist())
    keep |= {int(comp[c.y, c.x]) for c in clicks if c.positive and comp[c.y, c.x] > 0}
    return np.isin(comp, sorted(keep))


def upsample(soft_small: np.ndarray, pyr: Pyramid, params: GrabCutRefineParams) -> np.ndarray:
    """Work-size soft mask float32 ``(h, w)`` -> full-size float32 ``(H, W)`` (not clipped), edge-aware: the
    guided filter's coefficients at ``refine_side`` applied to the full-size grey image."""
    H, W = pyr.full.shape[:2]
    mh, mw = pyr.mid.shape[:2]
    src_mid = cv2.resize(soft_small, (mw, mh), interpolation=cv2.INTER_LINEAR)
    if params.refine_radius == 0 or max(mh, mw) <= max(soft_small.shape):
        return src_mid if (mh, mw) == (H, W) else cv2.resize(src_mid, (W, H), interpolation=cv2.INTER_LINEAR)
    radius = max(1, round(params.refine_radius * max(mh, mw) / max(soft_small.shape)))
    a, b = gc.guided_coefficients(pyr.grey_mid, src_mid, radius, params.refine_eps)
    if (mh, mw) != (H, W):
        a = cv2.resize(a, (W, H), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (W, H), interpolation=cv2.INTER_LINEAR)
    return cv2.add(cv2.multiply(a, pyr.grey_full), b)  # type: ignore[no-any-return]


def refine_on_pyramid(
    pyr: Pyramid, prior_full: np.ndarray, clicks: Sequence[Click], params: GrabCutRefineParams,
    box: Box | None = None, prior_small: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole engine on one image: (mask uint8 {0, 1}, probability float32 [0, 1]), both ``(H, W)``.

    ``prior_full``: bool ``(H, W)`` current mask; ``clicks``/``box`` in full-image pixels; ``prior_small``:
    an optional soft prior float32 ``(h, w)`` in [0, 1] at work size replacing the downscaled mask (the
    ``trained`` engine's fused model probability)."""
    H, W = pyr.full.shape[:2]
    h, w = pyr.small.shape[:2]
    if min(h, w) < 8:
        raise ValueError(f"image {W}x{H} is too small to refine (needs >= 8 px a side at work size)")
    if prior_small is None:
        soft_prior = cv2.resize(prior_full.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    else:
        soft_prior = prior_small
    prior = soft_prior >= 0.5
    sclicks = scale_clicks(clicks, (H, W), (h, w))
    sbox = None
    if box is not None:
        sx, sy = w / W, h / H
        x0, y0 = int(box.x0 * sx), int(box.y0 * sy)
        sbox = Box(x0, y0, max(x0 + 1, int(np.ceil(box.x1 * sx))), max(y0 + 1, int(np.ceil(box.y1 * sy))))
    labels, free = click_labels(prior, sclicks, params, sbox, pyr.lab)
    fg = cut(pyr.small, labels, sclicks, params)
    released = deep_released(prior, sclicks, params) if prior.any() else None
    if released is not None and released.any():
        # a released part that (almost) all flipped sides: one click is no evidence for that (GrabCut's
        # colour models collapsed) -> the local release instead
        kept = np.count_nonzero(released & (fg == prior))
        if kept < params.deep_keep * np.count_nonzero(released):
            local = dataclasses.replace(params, deep=0.0)
            labels, free = click_labels(prior, sclicks, local, sbox, pyr.lab)
            fg = cut(pyr.small, labels, sclicks, local)
    q = upsample(fg.astype(np.float32), pyr, params)
    new = q >= 0.5
    if prior_small is None and prior_full.any():
        free_full = cv2.resize(free.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
        new = np.where(free_full, new, prior_full)
    mask = new.astype(np.uint8)
    prob = np.clip(q, 0.0, 1.0).astype(np.float32)
    np.maximum(prob, 0.5, out=prob, where=new)
    np.minimum(prob, 0.499, out=prob, where=~new)
    r_full = max(1, round(params.click_radius * max(h, w) * 0.5 * max(H, W) / max(h, w)))
    force_clicks(mask, prob, clicks, r_full)
    return mask, prob


def preannotate_params(params: GrabCutRefineParams) -> GrabCutParams:
    """The pre-annotator's params carrying this engine's upsampling settings (for shared helpers)."""
    return GrabCutParams(work_side=params.work_side, refine_radius=params.refine_radius,
                         refine_side=params.refine_side, refine_eps=params.refine_eps,
                         min_island_frac=params.min_island_frac)


# --------------------------------------------------------------------------- registry class


class GrabCutRefiner:
    """Registry entry ``grabcut`` (no weights). Thread-safe: per-item state sits in a locked LRU."""

    def __init__(self, params: RefineParams, paths: Paths | None = None, **_: Any) -> None:
        self.params = params.grabcut
        self.paths = paths
        self.spec = RefinerSpec(name="grabcut", version=f"grabcut-{VERSION}-{params_digest(self.params)[:8]}")
        self._items: LruCache[str, Pyramid] = LruCache(params.cache_items)

    def pyramid(self, item: RefineItem) -> tuple[Pyramid, bool]:
        """The item's cached :class:`Pyramid` (built on first use); ``(pyramid, was_cached)``."""
        return self._items.get_or_make(
            item.item_id, lambda: build_pyramid(item.load_image(), self.params.work_side, self.params.refine_side)
        )

    def refine(
        self, item: RefineItem, current_mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None = None
    ) -> RefineResult:
        pyr, cached = self.pyramid(item)
        shape = pyr.full.shape[:2]
        prior = check_mask(current_mask, shape, item.item_id)
        check_clicks(clicks, shape, item.item_id)
        box = box.clipped(shape) if box is not None else None
        mask, prob = refine_on_pyramid(pyr, prior, clicks, self.params, box)
        return RefineResult(mask=mask, probability=prob, cached=cached)
