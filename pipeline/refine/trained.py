"""``trained`` refinement engine: the promoted model's probability as the prior, refined like ``grabcut``.

The loop's own model (``paths.promoted/model.pt``, promoted by ``maskloop promote``; loaded as the
``trained`` pre-annotator loads it) predicts the item's foreground probability once, on the ``grabcut``
engine's work-size copy (cached per item with the downscaled copies). For each request the prior is
``prior_weight`` x that probability + the rest x the current mask (the model's probability alone on an
empty canvas), and the ``grabcut`` engine's machinery runs on it
(:func:`pipeline.refine.grabcut.refine_on_pyramid`: clicks as hard seeds, the prior kept away from the edge
and the clicks, GrabCut on colour, edge-aware upsampling, clicks painted in). Settings: ``refine.trained``
and ``refine.grabcut``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core.params import Paths, params_digest
from pipeline.refine.base import (
    Box,
    Click,
    RefineItem,
    RefineParams,
    RefineResult,
    RefinerSpec,
    check_clicks,
    check_mask,
)
from pipeline.refine.grabcut import LruCache, Pyramid, build_pyramid, refine_on_pyramid

log = logging.getLogger(__name__)

VERSION = "1"
MODEL_NAME = "model.pt"


@dataclass(frozen=True, eq=False)
class TrainedState:
    """Per-item state: the image pyramid and the model's probability float32 ``(h, w)`` at work size."""

    pyramid: Pyramid
    probability: np.ndarray


def fused_prior(model_prob: np.ndarray, current: np.ndarray, weight: float) -> np.ndarray:
    """Prior float32 ``(h, w)`` in [0, 1]: ``weight`` x ``model_prob`` + (1 - ``weight``) x ``current`` (the
    current mask, bool/float ``(h, w)``); the model's probability alone when the current mask is empty."""
    if not current.any():
        return model_prob.astype(np.float32)
    return (weight * model_prob + (1.0 - weight) * current.astype(np.float32)).astype(np.float32)


class TrainedRefiner:
    """Registry entry ``trained``: loads the promoted model in the constructor."""

    def __init__(self, params: RefineParams, paths: Paths, **_: Any) -> None:
        from pipeline.learning.torch_utils import select_device, set_threads
        from pipeline.preannotators.trained import load_trained

        set_threads(params.threads)
        self.params = params.trained
        self.grabcut = params.grabcut
        self.device = select_device(params.device)
        path = Path(paths.promoted) / MODEL_NAME
        self.model, self.meta = load_trained(path, self.device)
        from pipeline.preannotators.base import file_sha256

        sha = file_sha256(path)
        self.spec = RefinerSpec(
            name="trained",
            version=f"trained-{sha[:12]}-v{VERSION}-{params_digest(self.params)[:8]}-{params_digest(self.grabcut)[:8]}",
            checkpoint_sha256=sha,
        )
        self._items: LruCache[str, TrainedState] = LruCache(params.cache_items)

    def _make(self, item: RefineItem) -> TrainedState:
        from pipeline.learning import segmenter

        pyr = build_pyramid(item.load_image(), self.grabcut.work_side, self.grabcut.refine_side)
        prob = segmenter.predict_probability(self.model, self.meta, pyr.small, self.device)
        return TrainedState(pyr, np.clip(prob, 0.0, 1.0).astype(np.float32))

    def refine(
        self, item: RefineItem, current_mask: np.ndarray | None, clicks: Sequence[Click], box: Box | None = None
    ) -> RefineResult:
        st, cached = self._items.get_or_make(item.item_id, lambda: self._make(item))
        pyr = st.pyramid
        shape = pyr.full.shape[:2]
        prior_full = check_mask(current_mask, shape, item.item_id)
        check_clicks(clicks, shape, item.item_id)
        box = box.clipped(shape) if box is not None else None
        h, w = pyr.small.shape[:2]
        current = cv2.resize(prior_full.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        prior = fused_prior(st.probability, current, self.params.prior_weight)
        mask, prob = refine_on_pyramid(pyr, prior_full, clicks, self.grabcut, box, prior_small=prior)
        return RefineResult(mask=mask, probability=prob, cached=cached)
