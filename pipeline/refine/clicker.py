"""The standard simulated annotator of the interactive-segmentation literature (RITM, SimpleClick, DIOS).

Protocol (:func:`next_click`, :func:`simulate`):

- The error of the current mask against the ground truth splits into *missed foreground* (ground truth but
  not mask) and *false foreground* (mask but not ground truth); each splits into 8-connected regions.
- The next click goes to the **largest** error region (by area; ties: missed foreground first, then raster
  order), at its **interior point**: the maximum of its distance transform, with the image border counting
  as the region's edge (ties: the maximum nearest the mean of the tied ones, then raster order). It is
  positive on missed foreground, negative on false foreground.
- Every click is sent to the engine together with all earlier clicks and the engine's previous mask.
- At most ``max_clicks`` (20) clicks. **NoC@t** = the number of clicks after which IoU >= t first holds
  (0 when the start mask already reaches it), ``max_clicks`` when it never does. Simulation stops once the
  highest threshold is reached.
- Starting points: the pipeline's pre-annotation, or an empty canvas (the first click then lands on the
  object's interior point, as in the literature).

Everything here is pure and deterministic: same masks in, same clicks out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.refine.base import Click

MAX_CLICKS = 20
THRESHOLDS = (0.85, 0.90)

Step = Callable[[np.ndarray, Sequence[Click]], np.ndarray]
"""One engine call: (previous mask uint8/bool ``(H, W)``, all clicks so far) -> new mask ``(H, W)``."""


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two ``(H, W)`` masks (nonzero = foreground); 1.0 when both are empty."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else int(np.count_nonzero(p & g)) / union


def interior_point(region: np.ndarray) -> tuple[int, int, float]:
    """``(x, y, depth)``: the distance-transform maximum of the bool ``region`` ``(H, W)`` (the image border
    counts as an edge). Ties (a plateau of maxima): the maximum nearest the plateau's mean, then the first in
    raster order. ``depth`` 0 for an empty region."""
    if not region.any():
        return 0, 0, 0.0
    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    top = float(dist.max())
    ys, xs = np.nonzero(dist >= top - 1e-4)
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    k = int(np.argmin(d2))
    return int(xs[k]), int(ys[k]), top


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The simulated annotator's next click for mask ``pred`` against ground truth ``gt`` (both ``(H, W)``,
    nonzero = foreground), or None when they agree everywhere."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    best: tuple[int, bool, np.ndarray] | None = None
    for positive, err in ((True, g & ~p), (False, p & ~g)):
        if not err.any():
            continue
        _n, labels, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, positive, labels == k)
    if best is None:
        return None
    x, y, _depth = interior_point(best[2])
    return Click(x, y, best[1])


def noc(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Clicks needed to reach IoU >= ``threshold``: ``ious[k]`` is the IoU after ``k`` clicks (``ious[0]`` the
    start). ``max_clicks`` when never reached within ``max_clicks`` clicks."""
    for k, v in enumerate(ious[: max_clicks + 1]):
        if v >= threshold:
            return k
    return max_clicks


@dataclass(frozen=True)
class Trace:
    """One simulated session: IoU after each click (``ious[0]`` = start), the clicks, and each engine
    call's wall time (seconds)."""

    ious: tuple[float, ...]
    clicks: tuple[Click, ...]
    seconds: tuple[float, ...]

    def noc(self, threshold: float, max_clicks: int = MAX_CLICKS) -> int:
        return noc(self.ious, threshold, max_clicks)

    def reached(self, threshold: float) -> bool:
        return any(v >= threshold for v in self.ious)


def simulate(
    step: Step, gt: np.ndarray, start: np.ndarray | None = None, max_clicks: int = MAX_CLICKS,
    stop_at: float = max(THRESHOLDS),
) -> Trace:
    """Run the simulated annotator: from ``start`` (``(H, W)`` mask; None = empty canvas), up to
    ``max_clicks`` clicks or until IoU >= ``stop_at``. ``step`` is the engine (see :data:`Step`)."""
    g = np.asarray(gt) > 0
    mask = np.zeros(g.shape, np.uint8) if start is None else (np.asarray(start) > 0).astype(np.uint8)
    ious = [iou(mask, g)]
    clicks: list[Click] = []
    seconds: list[float] = []
    while len(clicks) < max_clicks and ious[-1] < stop_at:
        c = next_click(mask, g)
        if c is None:
            break
        clicks.append(c)
        t0 = time.perf_counter()
        out = step(mask, tuple(clicks))
        seconds.append(time.perf_counter() - t0)
        if out.shape != g.shape:
            raise ValueError(f"engine returned a {out.shape} mask for a {g.shape} ground truth")
        mask = (np.asarray(out) > 0).astype(np.uint8)
        ious.append(iou(mask, g))
    return Trace(tuple(ious), tuple(clicks), tuple(seconds))


def summarize(traces: Sequence[Trace], max_clicks: int = MAX_CLICKS) -> dict[str, float]:
    """NoC@85, NoC@90 (means), the share of sessions never reaching 0.90, and the mean IoU after 5 clicks."""
    if not traces:
        return {"items": 0, "noc85": math.nan, "noc90": math.nan, "fail90": math.nan, "iou_at5": math.nan}
    return {
        "items": len(traces),
        "noc85": float(np.mean([t.noc(0.85, max_clicks) for t in traces])),
        "noc90": float(np.mean([t.noc(0.90, max_clicks) for t in traces])),
        "fail90": float(np.mean([not t.reached(0.90) for t in traces])),
        "iou_at5": float(np.mean([t.ious[min(5, len(t.ious) - 1)] for t in traces])),
    }
