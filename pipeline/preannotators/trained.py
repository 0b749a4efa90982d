"""``trained``: the loop's own model, promoted by ``maskloop promote`` (``paths.promoted/model.pt``).

A thin wrapper over :mod:`pipeline.learning.segmenter` (the training area's checkpoint format and preprocessing):
:func:`pipeline.learning.segmenter.load_segmenter` validates and loads the checkpoint, and
:func:`pipeline.learning.segmenter.predict_probability` returns the probability (the network runs at the
checkpoint's own square resolution; see that module). Only items not verified by a human at promote time
are pre-annotated again (see :mod:`pipeline.stages.preannotate`).

Refinement (``preannotate.trained.refine``, default ``grabcut``): a small model trained on a few hundred
corrections knows *where* the object is but draws a coarse, low-resolution edge. With ``refine: grabcut``
the model's probability becomes the prior of OpenCV GrabCut. On the same ``work_side`` copy the ``grabcut``
pre-annotator uses, the prior is ``prior_weight`` x the model's probability + (1 - ``prior_weight``) x the
``grabcut`` pre-annotator's own probability (its border prior, :func:`fused_prior`); pixels whose prior is
``>= sure_fg`` are definite foreground, ``< sure_bg`` definite background, the rest probable
foreground/background on either side of the checkpoint's threshold (:func:`prior_labels`). GrabCut then fits colour models to
that start and cuts along colour edges; the result goes back to full size with the ``grabcut``
pre-annotator's edge-aware upsampling (:func:`pipeline.preannotators.grabcut.upsample_refine`, configured by
``preannotate.grabcut``). ``refine: none`` thresholds the model's probability directly.

The model also judges (``preannotate.trained.candidates``): besides its own seeded GrabCut (``model``), the
``grabcut`` pre-annotator's hypotheses (``border``, ``rect``, ``salient``: GrabCut from weight-free starts) may be
candidates; the candidate whose work-size mask agrees best with the model's probability (soft IoU,
:func:`select_candidate`) is upsampled. A model that knows roughly *where* the object is thus picks the start
that cut it cleanly, instead of its own coarse guess having to carry the edge.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.params import Paths, params_digest
from pipeline.preannotators.base import (
    CheckpointArchitectureError,
    CheckpointCorrupt,
    GrabCutParams,
    PreannotateParams,
    PreannotationResult,
    PreannotatorSpec,
    PredictContext,
    TrainedParams,
    confidence_from,
    file_sha256,
    mask_from_probability,
    require_checkpoint,
)

log = logging.getLogger(__name__)

VERSION = "2"
MODEL_NAME = "model.pt"


def load_trained(path: Path, device: Any) -> tuple[Any, Any]:
    """Load a promoted checkpoint through :func:`pipeline.learning.segmenter.load_segmenter`, turning its errors into
    checkpoint errors (corrupt vs wrong architecture) that name the file."""
    from pipeline.learning import segmenter

    require_checkpoint(path, "trained", "paths.promoted (run `maskloop promote`)")
    try:
        return segmenter.load_segmenter(path, device)
    except UserError as exc:
        text = str(exc)
        if "corrupt" in text or "unreadable" in text:
            raise CheckpointCorrupt(text) from exc
        raise CheckpointArchitectureError(text) from exc


# --------------------------------------------------------------------------- pure functions


def prior_labels(prob: np.ndarray, threshold: float, sure_bg: float, sure_fg: float) -> np.ndarray:
    """GrabCut label map uint8 ``(h, w)`` (``cv2.GC_*`` values) from a model probability float ``(h, w)``.

    ``prob >= sure_fg``: definite foreground; ``prob < sure_bg``: definite background; otherwise probable
    foreground when ``prob >= threshold``, else probable background. Requires
    ``0 <= sure_bg <= threshold <= sure_fg <= 1`` (ValueError otherwise).
    """
    if not 0.0 <= sure_bg <= threshold <= sure_fg <= 1.0:
        raise ValueError(f"need 0 <= sure_bg ({sure_bg}) <= threshold ({threshold}) <= sure_fg ({sure_fg}) <= 1")
    labels = np.where(prob >= threshold, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[prob < sure_bg] = cv2.GC_BGD
    labels[prob >= sure_fg] = cv2.GC_FGD
    return labels


def fused_prior(small: np.ndarray, prob_model: np.ndarray, weight: float, grabcut_params: GrabCutParams) -> np.ndarray:
    """The prior for refinement, float32 ``(h, w)`` in [0, 1]: ``weight`` x the model's probability
    ``prob_model`` + (1 - ``weight``) x the ``grabcut`` pre-annotator's probability on ``small`` (RGB uint8
    ``(h, w, 3)``, the work-size copy; border-prior GrabCut). ``weight`` 1 skips GrabCut's border prior."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"prior weight must be in [0, 1], got {weight}")
    if weight >= 1.0:
        return prob_model.astype(np.float32)
    from pipeline.preannotators import grabcut as gc

    _mask, prob_border = gc.segment(small, grabcut_params)
    return (weight * prob_model + (1.0 - weight) * prob_border).astype(np.float32)


def seeded_foreground(prob_small: np.ndarray, small: np.ndarray, threshold: float, params: TrainedParams,
                      grabcut_params: GrabCutParams) -> np.ndarray:
    """Model-seeded GrabCut at work size: bool ``(h, w)`` foreground of ``small`` (RGB uint8 ``(h, w, 3)``) from
    the prior ``prob_small`` float32 ``(h, w)`` (:func:`prior_labels`; islands below ``min_island_frac`` of the
    largest dropped). When the prior has no foreground or no background pixel (GrabCut cannot fit two colour
    models), the thresholded prior itself."""
    from pipeline.preannotators import grabcut as gc

    labels = prior_labels(prob_small, threshold, params.sure_bg, params.sure_fg)
    fg_seed = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not fg_seed.any() or fg_seed.all():
        return fg_seed  # type: ignore[no-any-return]
    out, _bgd, _fgd = gc.run_grabcut(small, labels, params.iterations)
    fg = (out == cv2.GC_FGD) | (out == cv2.GC_PR_FGD)
    return gc._largest_components(fg, grabcut_params.min_island_frac) if fg.any() else fg  # type: ignore[no-any-return]


def soft_iou(prob: np.ndarray, fg: np.ndarray) -> float:
    """Soft IoU in [0, 1] of a probability float ``(h, w)`` and a bool mask ``(h, w)``:
    ``sum(min(p, m)) / sum(max(p, m))`` (1 when both are empty)."""
    m = fg.astype(np.float32)
    union = float(np.maximum(prob, m).sum())
    return float(np.minimum(prob, m).sum()) / union if union > 0 else 1.0


def select_candidate(candidates: dict[str, np.ndarray], prob: np.ndarray) -> str:
    """The name of the non-empty candidate mask (bool ``(h, w)`` each) with the highest :func:`soft_iou`
    against the model's probability ``prob`` float ``(h, w)``; ties keep the dict's order; an empty
    candidate only wins when all are empty. Raises ValueError when ``candidates`` is empty."""
    if not candidates:
        raise ValueError("select_candidate needs at least one candidate")
    return max(candidates, key=lambda k: (bool(candidates[k].any()), soft_iou(prob, candidates[k])))


def finish_mask(image: np.ndarray, fg_small: np.ndarray, prob_small: np.ndarray,
                grabcut_params: GrabCutParams) -> tuple[np.ndarray, np.ndarray]:
    """Work-size foreground bool ``(h, w)`` -> full size, edge-aware
    (:func:`pipeline.preannotators.grabcut.upsample_refine`): (mask uint8 {0, 255}, probability float32
    [0, 1]), both ``(H, W)`` of ``image``. The probability is the mean of ``prob_small`` (resized) and the
    soft mask, kept on the mask's side of 0.5 so ``probability >= 0.5`` is exactly the mask."""
    from pipeline.preannotators import grabcut as gc

    h, w = image.shape[:2]
    soft = gc.upsample_refine(fg_small.astype(np.float32), image, grabcut_params)
    mask = mask_from_probability(soft, 0.5)
    prob_full = cv2.resize(prob_small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    prob = (0.5 * (soft + prob_full)).astype(np.float32)
    fg_full = mask > 0
    np.maximum(prob, 0.5, out=prob, where=fg_full)
    np.minimum(prob, 0.499, out=prob, where=~fg_full)
    np.clip(prob, 0.0, 1.0, out=prob)
    return mask, prob


def refine_with_grabcut(
    image: np.ndarray, prob_small: np.ndarray, small: np.ndarray, threshold: float, params: TrainedParams,
    grabcut_params: GrabCutParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Model-seeded GrabCut: (mask uint8 {0, 255}, probability float32 [0, 1]), both ``(H, W)`` of ``image``.

    ``image``: the full RGB uint8 ``(H, W, 3)`` photo; ``small``: its ``work_side`` copy ``(h, w, 3)``;
    ``prob_small``: the prior (model or :func:`fused_prior`) float32 ``(h, w)`` on ``small``
    (:func:`seeded_foreground`, then :func:`finish_mask`).
    """
    fg = seeded_foreground(prob_small, small, threshold, params, grabcut_params)
    return finish_mask(image, fg, prob_small, grabcut_params)


# --------------------------------------------------------------------------- registry class


class TrainedPreannotator:
    """Registry entry ``trained``."""

    def __init__(self, params: PreannotateParams, paths: Paths, **_: Any) -> None:
        from pipeline.learning.torch_utils import select_device, set_threads

        set_threads(params.threads)
        self.device = select_device(params.device)
        self.params = params.trained
        self.grabcut_params = params.grabcut
        path = Path(paths.promoted) / MODEL_NAME
        self.model, self.meta = load_trained(path, self.device)
        threshold = float(self.meta.threshold)
        if self.params.refine == "grabcut" and not self.params.sure_bg <= threshold <= self.params.sure_fg:
            raise UserError(
                f"{path}: checkpoint threshold {threshold} is outside preannotate.trained.sure_bg "
                f"({self.params.sure_bg}) .. sure_fg ({self.params.sure_fg}); widen them or set refine: none"
            )
        sha = file_sha256(path)
        settings = params_digest(self.params)[:8]
        if self.params.refine == "grabcut":
            settings += "-" + params_digest(self.grabcut_params)[:8]
        self.spec = PreannotatorSpec(
            name="trained", version=f"trained-{self.meta.arch}-{sha[:12]}-v{VERSION}-{settings}",
            checkpoint_sha256=sha,
        )

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult:
        from pipeline.learning import segmenter
        from pipeline.preannotators import grabcut as gc
        from pipeline.preannotators.grabcut import downscale

        if self.params.refine == "none":
            prob = segmenter.predict_probability(self.model, self.meta, image, self.device)
            mask = mask_from_probability(prob, float(self.meta.threshold))
            prob = np.clip(prob, 0.0, 1.0).astype(np.float32)
            return PreannotationResult(mask=mask, probability=prob, confidence=confidence_from(prob, mask))
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"trained needs an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
        small = downscale(downscale(image, self.grabcut_params.refine_side), self.grabcut_params.work_side)
        if min(small.shape[:2]) < 8:
            raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small to refine (needs >= 8 px a side)")
        prob_model = segmenter.predict_probability(self.model, self.meta, small, self.device)
        prior = prob_model
        found: dict[str, np.ndarray] = {}
        if "model" in self.params.candidates:
            prior = fused_prior(small, prob_model, self.params.prior_weight, self.grabcut_params)
            found["model"] = seeded_foreground(prior, small, float(self.meta.threshold), self.params,
                                               self.grabcut_params)
        others = tuple(c for c in self.params.candidates if c != "model")
        if others:
            for hyp in gc.hypotheses(small, replace(self.grabcut_params, hypotheses=others)):
                found[hyp.name] = hyp.fg
        best = select_candidate({c: found[c] for c in self.params.candidates}, prob_model)
        mask, prob = finish_mask(image, found[best], prior, self.grabcut_params)
        return PreannotationResult(mask=mask, probability=prob, confidence=confidence_from(prob, mask))
