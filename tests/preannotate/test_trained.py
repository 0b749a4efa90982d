"""The ``trained`` pre-annotator: model-seeded GrabCut refinement (``preannotate.trained``) and its errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.core.params import Paths
from pipeline.preannotators.base import GrabCutParams, PreannotateParams, PredictContext, TrainedParams
from pipeline.preannotators.trained import (
    TrainedPreannotator,
    fused_prior,
    prior_labels,
    refine_with_grabcut,
    select_candidate,
    soft_iou,
)
from tests.preannotate.conftest import object_on_background


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_prior_labels_from_probability() -> None:
    prob = np.array([[0.0, 0.05, 0.3, 0.5], [0.7, 0.9, 0.95, 1.0]], np.float32)
    labels = prior_labels(prob, 0.5, 0.1, 0.9)
    expected = [[cv2.GC_BGD, cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD],
                [cv2.GC_PR_FGD, cv2.GC_FGD, cv2.GC_FGD, cv2.GC_FGD]]
    assert labels.dtype == np.uint8
    assert labels.tolist() == expected


def test_prior_labels_rejects_unordered_thresholds() -> None:
    with pytest.raises(ValueError, match="sure_bg"):
        prior_labels(np.zeros((2, 2), np.float32), 0.5, 0.6, 0.9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"refine": "crf"}, "refine must be grabcut or none"), ({"sure_bg": 0.6, "sure_fg": 0.5}, "sure_bg < sure_fg"),
     ({"sure_fg": 1.5}, "sure_bg < sure_fg"), ({"iterations": 0}, "iterations"),
     ({"prior_weight": 1.2}, "prior_weight"), ({"prior_weight": -0.1}, "prior_weight"),
     ({"candidates": ()}, "candidates"), ({"candidates": ("model", "sam")}, "candidates"),
     ({"candidates": ("rect", "rect")}, "candidates")],
)
def test_trained_params_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainedParams(**kwargs)  # type: ignore[arg-type]


def test_refinement_snaps_a_coarse_prior_to_the_object() -> None:
    """A blocky, shifted, low-resolution probability (what a small model gives) becomes the object's shape."""
    image, gt = object_on_background()
    h, w = gt.shape
    coarse = cv2.resize(gt.astype(np.float32), (8, 6), interpolation=cv2.INTER_AREA)
    coarse = np.roll(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST), 12, axis=1)
    prob = np.clip(0.15 + 0.7 * coarse, 0, 1).astype(np.float32)  # never "sure": all probable labels
    plain = prob >= 0.5
    mask, p = refine_with_grabcut(image, prob, image, 0.5, TrainedParams(), GrabCutParams())
    assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert p.shape == (h, w) and p.dtype == np.float32
    assert np.array_equal(p >= 0.5, mask > 0)
    assert _iou(mask > 0, gt) > 0.95 > _iou(plain, gt) + 0.05


def test_fused_prior_mixes_model_and_border_prior() -> None:
    from pipeline.preannotators.grabcut import segment

    image, gt = object_on_background(60, 80)
    model = np.full(gt.shape, 0.2, np.float32)
    assert np.array_equal(fused_prior(image, model, 1.0, GrabCutParams()), model)
    _mask, border = segment(image, GrabCutParams())
    mixed = fused_prior(image, model, 0.25, GrabCutParams())
    assert mixed.dtype == np.float32 and mixed.shape == gt.shape
    np.testing.assert_allclose(mixed, 0.25 * model + 0.75 * border, atol=1e-6)
    assert mixed[gt].mean() > 0.5 > mixed[~gt].mean()  # the border prior finds the ellipse
    with pytest.raises(ValueError, match="prior weight"):
        fused_prior(image, model, 1.5, GrabCutParams())


def test_refinement_without_foreground_falls_back_to_the_model() -> None:
    image, _gt = object_on_background()
    prob = np.full(image.shape[:2], 0.2, np.float32)
    mask, p = refine_with_grabcut(image, prob, image, 0.5, TrainedParams(), GrabCutParams())
    assert not mask.any() and (p < 0.5).all()


def test_the_model_selects_the_candidate_it_agrees_with() -> None:
    """soft IoU against the model's probability picks the candidate; an empty one never beats a drawn one."""
    prob = np.zeros((4, 6), np.float32)
    prob[1:3, 1:4] = 0.8  # the model sees a 2x3 object, not quite sure
    exact = prob > 0
    wide = np.zeros((4, 6), bool)
    wide[:, :5] = True
    empty = np.zeros((4, 6), bool)
    assert soft_iou(prob, exact) == pytest.approx(0.8)
    assert soft_iou(prob, wide) == pytest.approx(4.8 / 20)
    assert soft_iou(np.zeros((2, 2), np.float32), np.zeros((2, 2), bool)) == 1.0
    assert select_candidate({"border": wide, "model": exact}, prob) == "model"
    assert select_candidate({"rect": empty, "border": wide}, np.zeros((4, 6), np.float32)) == "border"
    assert select_candidate({"rect": exact, "border": exact.copy()}, prob) == "rect"  # tie: configured order
    with pytest.raises(ValueError, match="at least one candidate"):
        select_candidate({}, prob)


@pytest.fixture()
def promoted(tmp_path: Path) -> Paths:
    from pipeline.learning import segmenter

    paths = Paths(promoted=tmp_path / "promoted")
    model = segmenter.build_segmenter("lraspp_mobilenet_v3_large", None)
    segmenter.save_checkpoint(tmp_path / "promoted" / "model.pt", model,
                              segmenter.SegmenterMeta(arch="lraspp_mobilenet_v3_large", resolution=32))
    return paths


@pytest.mark.parametrize("refine", ["grabcut", "none"])
def test_trained_preannotator_predicts_full_size(promoted: Paths, refine: str) -> None:
    image, _gt = object_on_background(90, 130)
    params = PreannotateParams(model="trained", device="cpu", trained=TrainedParams(refine=refine))  # type: ignore[arg-type]
    pre = TrainedPreannotator(params, promoted)
    res = pre.predict(image, PredictContext(item_id="x"))
    assert res.mask.shape == (90, 130) and res.probability.shape == (90, 130)
    assert np.array_equal(res.probability >= 0.5, res.mask > 0)
    assert pre.spec.version.startswith("trained-lraspp_mobilenet_v3_large-")
    judged = TrainedPreannotator(PreannotateParams(model="trained", device="cpu", trained=TrainedParams(
        refine=refine, candidates=("model", "border", "rect"))), promoted)  # type: ignore[arg-type]
    again = judged.predict(image, PredictContext(item_id="x"))
    assert again.mask.shape == (90, 130) and np.array_equal(again.probability >= 0.5, again.mask > 0)
    with pytest.raises(ValueError, match="RGB uint8"):
        pre.predict(image[..., 0], PredictContext(item_id="x"))


def test_version_changes_with_refinement_settings(promoted: Paths) -> None:
    versions = {
        TrainedPreannotator(PreannotateParams(model="trained", device="cpu", trained=t), promoted).spec.version
        for t in (TrainedParams(), TrainedParams(refine="none"), TrainedParams(sure_fg=0.95),
                  TrainedParams(prior_weight=1.0), TrainedParams(candidates=("model", "border")))
    }
    assert len(versions) == 5


def test_checkpoint_threshold_outside_sure_band_is_an_error(tmp_path: Path) -> None:
    from pipeline.learning import segmenter

    model = segmenter.build_segmenter("lraspp_mobilenet_v3_large", None)
    segmenter.save_checkpoint(tmp_path / "model.pt", model, segmenter.SegmenterMeta(
        arch="lraspp_mobilenet_v3_large", resolution=32, threshold=0.95))
    paths = Paths(promoted=tmp_path)
    with pytest.raises(UserError, match=r"threshold 0\.95 is outside"):
        TrainedPreannotator(PreannotateParams(model="trained", device="cpu"), paths)
    TrainedPreannotator(PreannotateParams(model="trained", device="cpu", trained=TrainedParams(refine="none")), paths)


def test_too_small_image_is_an_error(promoted: Paths) -> None:
    pre = TrainedPreannotator(PreannotateParams(model="trained", device="cpu"), promoted)
    with pytest.raises(ValueError, match="too small"):
        pre.predict(np.zeros((4, 50, 3), np.uint8), PredictContext(item_id="x"))
