"""Correction effort in clicks: the simulated annotator replayed on the pipeline's own items.

For an item with a pre-annotation and a human correction, :func:`simulated_noc` runs the standard simulated
annotator (:mod:`pipeline.refine.clicker`) with a refinement engine, from the pre-annotation towards the
correction (the correction plays the ground truth): NoC@85 and NoC@90 = the clicks a click-based annotator
would have needed. ``evaluate`` reports their mean per pre-annotating model version next to the pixels a
brush annotator changed, so every promoted model shows what it saves in clicks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.refine.base import Click, RefineItem, RefineParams, Refiner
from pipeline.refine.clicker import MAX_CLICKS, simulate

if TYPE_CHECKING:
    from pipeline.core.params import Paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickEffort:
    """Simulated clicks from the pre-annotation to the correction: NoC@85, NoC@90 (``max_clicks`` when never
    reached), the IoU reached and the clicks actually simulated."""

    noc85: int
    noc90: int
    final_iou: float
    clicks: int


def simulated_noc(
    engine: Refiner, item: RefineItem, pre: np.ndarray, corrected: np.ndarray, max_clicks: int = MAX_CLICKS
) -> ClickEffort:
    """NoC@85/90 of ``engine`` on ``item`` from ``pre`` to ``corrected`` (both ``(H, W)`` masks at the image's
    size, nonzero = foreground). Raises ValueError naming the item when the sizes differ."""
    p, c = np.asarray(pre) > 0, np.asarray(corrected) > 0
    if p.shape != c.shape:
        raise ValueError(f"item {item.item_id}: pre-annotation is {p.shape} but the correction is {c.shape}")

    def step(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        return engine.refine(item, mask, clicks).mask

    trace = simulate(step, c, p, max_clicks=max_clicks)
    return ClickEffort(trace.noc(0.85, max_clicks), trace.noc(0.90, max_clicks), trace.ious[-1], len(trace.clicks))


def effort_clicks(
    paths: Paths, item_ids: Sequence[str], params: RefineParams, engine: str = "grabcut", max_items: int = 50,
    max_clicks: int = MAX_CLICKS,
) -> dict[str, ClickEffort]:
    """Simulated clicks for items that have both a pre-annotation (``paths.preannotate/masks``) and a pulled
    correction (``paths.corrections/masks``): the first ``max_items`` of ``item_ids`` in sorted order (0 = none),
    images found through the manifest. Returns ``{item_id: ClickEffort}``; items without an image in the
    manifest are left out (logged)."""
    from pipeline.core import io
    from pipeline.core.items import ok_items
    from pipeline.refine import build_refiner

    ids = sorted(item_ids)[: max(0, max_items)]
    if not ids:
        return {}
    manifest = Path(paths.manifest)
    sources = {it.item_id: it.source_path for it in ok_items(manifest)} if manifest.is_file() else {}
    refiner = build_refiner(engine, params, paths)
    out: dict[str, ClickEffort] = {}
    for item_id in ids:
        if item_id not in sources:
            log.warning("effort clicks: item %s is not in the manifest %s; no simulated clicks", item_id, manifest)
            continue
        item = RefineItem(item_id, Path(sources[item_id]), paths)
        pre = io.read_mask(Path(paths.preannotate) / "masks" / f"{item_id}.png")
        corrected = io.read_mask(Path(paths.corrections) / "masks" / f"{item_id}.png")
        out[item_id] = simulated_noc(refiner, item, pre, corrected, max_clicks)
    return out
