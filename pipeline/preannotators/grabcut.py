"""``grabcut``: the weight-free default pre-annotator (OpenCV GrabCut seeded from a background prior).

Plain GrabCut needs a rectangle around the object and costs seconds to minutes at full resolution. Here:

1. **Work small.** The image is downscaled (area interpolation) so its longer side is ``work_side`` px; the
   cost is then independent of the input size.
2. **Seed from the border prior.** Product-style photos have a background that reaches the image border. For
   each of the four border strips (``border_frac`` of the shorter side) the strip's colours are clustered
   (k-means in CIE Lab); a pixel's *contrast* to a side is its Lab distance to the nearest cluster of that
   side. Saliency is the **second-smallest** of the four contrasts, so an object touching one border (a
   person cut at the bottom edge) is still salient, while a background that differs from side to side (sky
   above, floor below) is not. A mild centre prior is multiplied in.
3. **GrabCut with a mask.** The start is the classic 5%-inset rectangle, corrected by the prior both ways
   (:func:`seed_mask`): inside the rectangle, pixels far less salient than the saliency's Otsu threshold
   become probable background (so the first foreground colour model is not polluted by background), and
   salient pixels in the border strip become probable instead of definite background (so an object touching
   the border can keep its edge). ``cv2.grabCut`` runs ``iterations`` times with ``GC_INIT_WITH_MASK``;
   islands smaller than ``min_island_frac`` of the largest region are dropped.
4. **Back to full size, edge-aware.** The small mask is refined with a guided filter (He et al.) whose guide
   is the grey image; its coefficients are computed at ``refine_side`` and upsampled to full size (the "fast
   guided filter"), then thresholded at 0.5: the edge follows the photo's real edges instead of the blocky
   upsampled one, at a cost of a few full-size array operations (under 2 s at 12 MP).

Documented limits: the object must differ in colour from the background near the borders; scenes whose
object fills the frame or touches three or four borders, camouflage, and several objects of different
colours are where it fails (the uncertainty column then puts the item early in the annotation queue).
Measured on ECSSD: ``benchmarks/preannotate.py``.

The probability map is the guided-filter output, kept on the mask's side of 0.5 (``probability >= 0.5`` is
exactly the mask) and pulled towards 0.5 where GrabCut's own colour models are unsure of a pixel
(:func:`colour_posterior`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.core.images import shrink_longest
from pipeline.core.params import Paths, params_digest
from pipeline.preannotators import saliency as S
from pipeline.preannotators.base import (
    GrabCutParams,
    PreannotateParams,
    PreannotationResult,
    PreannotatorSpec,
    PredictContext,
    confidence_from,
)

log = logging.getLogger(__name__)

VERSION = "2"


# --------------------------------------------------------------------------- pure functions


def downscale(image: np.ndarray, side: int) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> a copy whose longer side is at most ``side`` (area interpolation;
    :func:`pipeline.core.images.shrink_longest`)."""
    return shrink_longest(image, side)[0]


def border_saliency(image: np.ndarray, border_frac: float, k: int = 3, seed: int = 0) -> np.ndarray:
    """Colour contrast to the image border, float32 ``(h, w)`` in [0, 1] (1 = unlike the background).

    ``image``: RGB uint8 ``(h, w, 3)``. For each of the four border strips, k-means (``k`` clusters, fixed
    ``seed``) models the strip's Lab colours; a pixel's contrast to a side is the distance to the nearest
    centre. The per-pixel saliency is the second-smallest of the four contrasts (robust to an object touching
    one side), times a mild centre prior, normalised by its 99th percentile.
    """
    h, w = image.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    b = max(2, round(border_frac * min(h, w)))
    strips = [lab[:b].reshape(-1, 3), lab[-b:].reshape(-1, 3), lab[:, :b].reshape(-1, 3), lab[:, -b:].reshape(-1, 3)]
    flat = lab.reshape(-1, 3)
    dists = []
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    for strip in strips:
        kk = min(k, len(strip))
        _c, _labels, centres = cv2.kmeans(strip, kk, None, criteria, 2, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload]
        d = np.sqrt(((flat[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
        dists.append(d)
    stacked = np.sort(np.stack(dists, axis=1), axis=1)
    sal = stacked[:, 1].reshape(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre = np.exp(-(((yy - h / 2) / (0.6 * h)) ** 2 + ((xx - w / 2) / (0.6 * w)) ** 2))
    sal = sal * (0.5 + 0.5 * centre)
    scale = float(np.percentile(sal, 99)) or 1.0
    return np.clip(sal / scale, 0.0, 1.0).astype(np.float32)


def _largest_components(fg: np.ndarray, min_frac: float) -> np.ndarray:
    """Keep connected components of the bool mask ``fg`` whose area is >= ``min_frac`` x the largest."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= min_frac * areas.max()) + 1
    return np.isin(labels, keep)


def seed_mask(saliency: np.ndarray, border_frac: float, inset: float = 0.05, bg_ratio: float = 0.3) -> np.ndarray:
    """GrabCut label map uint8 ``(h, w)`` (``cv2.GC_*`` values) from a border-contrast saliency map.

    Start from the classic rectangle (probable foreground inside a rectangle inset ``inset``, definite
    background outside), then use the background prior both ways: inside the rectangle, pixels whose
    saliency is below ``bg_ratio`` x the Otsu threshold (they look like the border) become probable
    background, so GrabCut's first foreground colour model is not polluted by background; in the border
    strip, salient pixels (an object touching the border) become probable background instead of definite
    background, so the cut may reach the image edge.
    """
    h, w = saliency.shape
    s8 = np.clip(saliency * 255.0, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    labels = rectangle_labels((h, w), inset)
    inside = labels == cv2.GC_PR_FGD
    labels[inside & (s8 < t * bg_ratio)] = cv2.GC_PR_BGD
    labels[~inside & (s8 >= t)] = cv2.GC_PR_BGD
    if not (labels == cv2.GC_PR_FGD).any():
        labels[inside] = cv2.GC_PR_FGD
    return labels


def rectangle_labels(shape: tuple[int, int], inset: float = 0.05) -> np.ndarray:
    """The classic GrabCut start: probable foreground inside a rectangle inset ``inset`` from each border."""
    h, w = shape
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    y0, x0 = round(inset * h), round(inset * w)
    labels[y0 : max(y0 + 1, h - y0), x0 : max(x0 + 1, w - x0)] = cv2.GC_PR_FGD
    return labels


def run_grabcut(image: np.ndarray, labels: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.grabCut`` with a label map; returns (final labels, background GMM, foreground GMM).

    OpenCV's GMM initialisation (k-means++) draws from its global RNG, which is re-seeded here: the result
    depends only on the inputs, not on what ran before."""
    cv2.setRNGSeed(0)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    out = labels.copy()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, out, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    return out, bgd, fgd


def _gmm_likelihood(model: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Likelihood of BGR float pixels ``(N, 3)`` under OpenCV's 5-component GrabCut GMM (``(1, 65)`` array)."""
    m = model.reshape(-1)
    k = 5
    weights = m[:k]
    means = m[k : k + 3 * k].reshape(k, 3)
    covs = m[k + 3 * k :].reshape(k, 3, 3)
    total = np.zeros(len(pixels))
    for i in range(k):
        if weights[i] <= 0:
            continue
        cov = covs[i] + np.eye(3) * 1e-3
        inv = np.linalg.inv(cov)
        det = max(float(np.linalg.det(cov)), 1e-12)
        diff = pixels - means[i]
        expo = -0.5 * np.einsum("ni,ij,nj->n", diff, inv, diff)
        total += weights[i] * np.exp(expo) / np.sqrt(det)
    return total


def colour_posterior(image: np.ndarray, bgd: np.ndarray, fgd: np.ndarray) -> np.ndarray:
    """Foreground posterior float32 ``(h, w)`` in [0, 1] from GrabCut's two colour models (equal priors)."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).reshape(-1, 3).astype(np.float64)
    lf = _gmm_likelihood(fgd, pixels)
    lb = _gmm_likelihood(bgd, pixels)
    post = (lf + 1e-30) / (lf + lb + 2e-30)
    return post.reshape(image.shape[:2]).astype(np.float32)


def guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear coefficients ``(a, b)`` of the guided filter, already box-averaged: ``q = a * guide + b``."""
    ksize = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, ksize, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a), box(b)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey guided filter (He, Sun, Tang): ``guide`` and ``src`` float32 ``(H, W)`` in [0, 1] -> float32."""
    if radius <= 0:
        return src
    a, b = guided_coefficients(guide, src, radius, eps)
    return a * guide + b


def _refine_parts(
    soft_small: np.ndarray, image: np.ndarray, mid: np.ndarray, params: GrabCutParams
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Guided-filter output at ``mid`` size, plus the coefficients ``(a, b)`` to apply at full size (None
    when ``mid`` is the full image or refinement is off)."""
    mh, mw = mid.shape[:2]
    src_mid = cv2.resize(soft_small, (mw, mh), interpolation=cv2.INTER_LINEAR)
    if params.refine_radius == 0 or max(mh, mw) <= max(soft_small.shape):
        return np.clip(src_mid, 0.0, 1.0), None, None
    guide_mid = cv2.cvtColor(mid, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    radius = max(1, round(params.refine_radius * max(mh, mw) / max(soft_small.shape)))
    a, b = guided_coefficients(guide_mid, src_mid, radius, params.refine_eps)
    q_mid = np.clip(a * guide_mid + b, 0.0, 1.0)
    if mid.shape[:2] == image.shape[:2]:
        return q_mid, None, None
    return q_mid, a, b


def _full_mask(q_mid: np.ndarray, a: np.ndarray | None, b: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    """Full-size mask uint8 {0, 255}: the guided filter applied at full size with upsampled coefficients."""
    h, w = image.shape[:2]
    if a is None or b is None:
        q = q_mid if q_mid.shape == (h, w) else cv2.resize(q_mid, (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.compare(q, 0.5, cv2.CMP_GE)  # type: ignore[call-overload,no-any-return]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    a_up = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    b_up = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    q = cv2.scaleAdd(cv2.multiply(a_up, grey), 1.0 / 255.0, b_up)
    return cv2.compare(q, 0.5, cv2.CMP_GE)  # type: ignore[call-overload,no-any-return]


def upsample_refine(soft_small: np.ndarray, image: np.ndarray, params: GrabCutParams) -> np.ndarray:
    """Small soft mask float32 ``(h, w)`` -> full-size float32 ``(H, W)`` in [0, 1], edge-refined on ``image``.

    The guided filter's coefficients are computed on a copy of the image whose longer side is at most
    ``refine_side`` and upsampled bilinearly (the "fast guided filter").
    """
    h, w = image.shape[:2]
    mid = downscale(image, params.refine_side)
    q_mid, a, b = _refine_parts(soft_small, image, mid, params)
    if a is None or b is None:
        return q_mid if q_mid.shape == (h, w) else cv2.resize(q_mid, (w, h), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    a_up = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    b_up = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(a_up * grey + b_up, 0.0, 1.0).astype(np.float32)


HYPOTHESES = ("border", "salient", "rect")
"""GrabCut starts tried by :func:`segment` (``grabcut.hypotheses``): ``border`` = :func:`seed_mask` of the
border prior; ``salient`` = :func:`salient_labels` of the salient-object map; ``rect`` = the classic inset
rectangle. Each also gets the salient map's :func:`~pipeline.preannotators.saliency.foreground_core` as
definite foreground."""


def salient_labels(saliency: np.ndarray, border_frac: float, ratio: float = 0.7) -> np.ndarray:
    """GrabCut label map uint8 ``(h, w)`` from a salient-object map in [0, 1]: probable foreground above
    ``ratio`` x Otsu's threshold, probable background below, definite background for the non-salient pixels
    of the border strip (``border_frac`` of the shorter side)."""
    h, w = saliency.shape
    t = ratio * S.otsu_threshold(saliency)
    labels = np.where(saliency > t, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    border = np.ones((h, w), bool)
    b = max(2, round(border_frac * min(h, w)))
    border[b:-b, b:-b] = False
    labels[border & (saliency <= t)] = cv2.GC_BGD
    return labels


def border_contact(fg: np.ndarray, frac: float = 0.02) -> float:
    """Fraction of a band ``frac`` of the shorter side wide along the image border that ``fg`` (bool
    ``(h, w)``) covers, in [0, 1]; the hypothesis score (less is better: ECSSD's objects rarely fill the frame)."""
    h, w = fg.shape
    b = max(1, round(frac * min(h, w)))
    band = np.ones((h, w), bool)
    band[b:-b, b:-b] = False
    return float(fg[band].mean())


@dataclass(frozen=True)
class Hypothesis:
    """One GrabCut start and its result at work size: ``fg`` bool ``(h, w)``, GrabCut's colour models."""

    name: str
    fg: np.ndarray
    bgd: np.ndarray
    fgd: np.ndarray
    score: float


def hypotheses(small: np.ndarray, params: GrabCutParams) -> list[Hypothesis]:
    """Every hypothesis of ``params.hypotheses`` run through GrabCut on the work-size RGB uint8 image
    ``small``, best first (least :func:`border_contact`, ties in the configured order)."""
    h, w = small.shape[:2]
    sal = S.salient_map(small)
    core = S.foreground_core(sal)
    starts: dict[str, Any] = {
        "border": lambda: seed_mask(border_saliency(small, params.border_frac), params.border_frac),
        "salient": lambda: salient_labels(sal, params.border_frac),
        "rect": lambda: rectangle_labels((h, w)),
    }
    out = []
    for name in params.hypotheses:
        labels = starts[name]()
        labels[core] = cv2.GC_FGD
        res, bgd, fgd = run_grabcut(small, labels, params.iterations)
        fg = (res == cv2.GC_FGD) | (res == cv2.GC_PR_FGD)
        if fg.any():
            fg = _largest_components(fg, params.min_island_frac)
        out.append(Hypothesis(name, fg, bgd, fgd, border_contact(fg) if fg.any() else math.inf))
    return sorted(out, key=lambda hy: hy.score)  # stable: ties keep the configured order


def segment(image: np.ndarray, params: GrabCutParams) -> tuple[np.ndarray, np.ndarray]:
    """Foreground of an RGB uint8 ``(H, W, 3)`` photo: (mask uint8 {0,255}, probability float32 [0,1]),
    both ``(H, W)``. See :func:`segment_with_note`."""
    mask, prob, _note = segment_with_note(image, params)
    return mask, prob


def segment_with_note(image: np.ndarray, params: GrabCutParams) -> tuple[np.ndarray, np.ndarray, str]:
    """Foreground of an RGB uint8 ``(H, W, 3)`` photo: (mask uint8 {0,255}, probability float32 [0,1], note),
    both arrays ``(H, W)``. Deterministic (fixed k-means seed; GrabCut is deterministic for a given start).

    The best :func:`hypotheses` result that is not empty at full size is kept; ``note`` is ``""`` when it is
    the best-scored one, else says which hypothesis was empty and what was used instead (the mask is never
    empty: the last resort is the salient map's core, nearest-upsampled). Full-size work is limited to a
    handful of array operations: the mask comes from the guided filter applied at full size; the probability
    is computed at ``refine_side`` and resized.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"grabcut needs an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
    mid = downscale(image, params.refine_side)
    small = downscale(mid, params.work_side)
    h, w = small.shape[:2]
    if min(h, w) < 8:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small for grabcut (needs >= 8 px a side)")
    H, W = image.shape[:2]
    tried = hypotheses(small, params)
    empty: list[str] = []
    for hyp in tried:
        if not hyp.fg.any():
            empty.append(hyp.name)
            continue
        q_mid, a, b = _refine_parts(hyp.fg.astype(np.float32), image, mid, params)
        mask = _full_mask(q_mid, a, b, image)
        if not mask.any():  # a sliver the edge-aware upsampling erased: keep it, blocky
            mask = cv2.resize(hyp.fg.astype(np.uint8) * 255, (W, H), interpolation=cv2.INTER_NEAREST)
            q_mid = np.where(cv2.resize(mask, (q_mid.shape[1], q_mid.shape[0]), interpolation=cv2.INTER_NEAREST) > 0,
                             1.0, 0.0).astype(np.float32)
        note = f"fallback: hypotheses {', '.join(empty)} were empty, used {hyp.name}" if empty else ""
        break
    else:  # cannot happen with a core seeded as definite foreground; kept as the documented last resort
        core = S.foreground_core(S.salient_map(small))
        mask = cv2.resize(core.astype(np.uint8) * 255, (W, H), interpolation=cv2.INTER_NEAREST)
        q_mid = cv2.resize(mask, (mid.shape[1], mid.shape[0]), interpolation=cv2.INTER_NEAREST).astype(np.float32) / 255
        hyp = tried[0]
        note = f"fallback: hypotheses {', '.join(empty)} were empty, used the salient core"
    if hyp.bgd.any() and hyp.fgd.any():
        agree = np.abs(2.0 * colour_posterior(small, hyp.bgd, hyp.fgd) - 1.0)
    else:
        agree = np.ones((h, w), np.float32)
    gain = cv2.resize(0.5 + 0.5 * agree, (q_mid.shape[1], q_mid.shape[0]), interpolation=cv2.INTER_LINEAR)
    # magnitude from how sure the colour models are; the side of 0.5 is then forced to match the mask
    p_mid = ((q_mid - 0.5) * gain + 0.5).astype(np.float32)
    prob = p_mid if p_mid.shape == (H, W) else cv2.resize(p_mid, (W, H), interpolation=cv2.INTER_LINEAR)
    fg_full = mask > 0
    np.maximum(prob, 0.5, out=prob, where=fg_full)
    np.minimum(prob, 0.499, out=prob, where=~fg_full)
    np.clip(prob, 0.0, 1.0, out=prob)
    return mask, prob, note


def plain_grabcut(image: np.ndarray, inset: float = 0.05, iterations: int = 5) -> np.ndarray:
    """The baseline: ``cv2.grabCut`` on the full image, rectangle inset ``inset``; mask uint8 {0, 255}."""
    h, w = image.shape[:2]
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    mask = np.zeros((h, w), np.uint8)
    rect = (round(inset * w), round(inset * h), w - 2 * round(inset * w), h - 2 * round(inset * h))
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    return np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- registry class


class GrabCutPreannotator:
    """Registry entry ``grabcut`` (no weights)."""

    def __init__(self, params: PreannotateParams, paths: Paths | None = None, **_: Any) -> None:
        self.params = params.grabcut
        self.spec = PreannotatorSpec(name="grabcut", version=f"grabcut-{VERSION}-{params_digest(self.params)[:8]}")

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult:
        mask, prob, note = segment_with_note(image, self.params)
        if note:
            log.info("item %s: %s", context.item_id or "?", note)
        return PreannotationResult(mask=mask, probability=prob, confidence=confidence_from(prob, mask), note=note)
