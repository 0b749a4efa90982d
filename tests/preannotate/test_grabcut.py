"""grabcut: quality on synthetic and real photos, full-resolution outputs, determinism, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import io
from pipeline.core.params import ParamsError, Paths, from_mapping
from pipeline.preannotators import PREANNOTATORS, build_preannotator, preannotator_class
from pipeline.preannotators import grabcut as G
from pipeline.preannotators.base import GrabCutParams, PreannotateParams, PredictContext

from .conftest import iou, object_on_background


def test_synthetic_object_is_found_at_full_resolution() -> None:
    img, gt = object_on_background()
    mask, prob = G.segment(img, GrabCutParams())
    assert mask.shape == gt.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert prob.dtype == np.float32 and prob.shape == gt.shape
    assert iou(mask > 0, gt) > 0.9
    # probability and mask agree: the mask is exactly prob >= 0.5
    assert np.array_equal(mask > 0, prob >= 0.5)


def test_large_image_is_processed_small_and_returned_full_size() -> None:
    img, gt = object_on_background(240, 320)
    big = cv2.resize(img, (2400, 1800), interpolation=cv2.INTER_NEAREST)
    big_gt = cv2.resize(gt.astype(np.uint8), (2400, 1800), interpolation=cv2.INTER_NEAREST) > 0
    mask, prob = G.segment(big, GrabCutParams())
    assert mask.shape == (1800, 2400) and prob.shape == (1800, 2400)
    assert iou(mask > 0, big_gt) > 0.9


def test_guided_refinement_follows_the_real_edge() -> None:
    """The edge-aware upsampling beats plain bilinear upsampling of the small mask on a sharp edge."""
    h, w = 600, 800
    img = np.full((h, w, 3), 30, np.uint8)
    img[:, 413:] = 220  # a vertical edge that does not fall on the small grid
    gt = np.zeros((h, w), bool)
    gt[:, 413:] = True
    small = np.zeros((150, 200), np.float32)
    small[:, 103:] = 1.0
    params = GrabCutParams()
    refined = G.upsample_refine(small, img, params) >= 0.5
    plain = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
    assert (refined != gt).sum() < (plain != gt).sum()


def test_deterministic() -> None:
    img, _ = object_on_background(seed=3)
    a = G.segment(img, GrabCutParams())
    b = G.segment(img, GrabCutParams())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_seed_labels_use_the_border_prior() -> None:
    """Inside the rectangle, background-coloured pixels become probable background; salient border pixels
    become probable (not definite) background."""
    sal = np.full((40, 40), 0.1, np.float32)  # border: background-like
    sal[2:38, 2:38] = 0.5  # interior: ambiguous
    sal[3:8, 3:8] = 0.0  # interior patch exactly like the border
    sal[10:30, 10:30] = 1.0  # the object
    sal[0:2, 15:25] = 1.0  # ... touching the top border
    labels = G.seed_mask(sal, 0.05)
    assert labels[20, 20] == cv2.GC_PR_FGD
    assert labels[35, 35] == cv2.GC_PR_FGD  # ambiguous interior stays probable foreground
    assert labels[5, 5] == cv2.GC_PR_BGD  # inside the rectangle but background-like
    assert labels[0, 20] == cv2.GC_PR_BGD  # salient border pixel: the cut may reach the edge
    assert labels[0, 0] == cv2.GC_BGD


def test_real_photos_reach_the_quality_bar(ecssd: Path) -> None:
    """On 12 real ECSSD photos (every 17th), median IoU against the ground truth is well above the rectangle."""
    images = sorted((ecssd / "images").glob("*.jpg"))[::17][:12]
    scores = []
    for p in images:
        img = io.read_image(p)
        gt = io.read_gray(ecssd / "masks" / f"{p.stem}.png") > 127
        mask, _ = G.segment(img, GrabCutParams())
        scores.append(iou(mask > 0, gt))
    assert float(np.median(scores)) >= 0.65


def test_registry_entry_and_result() -> None:
    assert set(PREANNOTATORS) == {"grabcut", "deeplabv3", "sam", "trained"}
    model = build_preannotator("grabcut", PreannotateParams(), Paths())
    img, gt = object_on_background()
    res = model.predict(img, PredictContext(item_id="x"))
    assert res.mask.shape == gt.shape and 0.0 <= res.confidence <= 1.0
    assert np.isnan(res.sam_iou)
    assert model.spec.name == "grabcut" and model.spec.checkpoint_sha256 == ""
    other = build_preannotator("grabcut", PreannotateParams(grabcut=GrabCutParams(iterations=2)), Paths())
    assert other.spec.version != model.spec.version  # settings are part of the model version


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        G.segment(np.zeros((50, 50), np.uint8), GrabCutParams())
    with pytest.raises(ValueError, match="too small"):
        G.segment(np.zeros((4, 300, 3), np.uint8), GrabCutParams())
    with pytest.raises(ValueError, match="unknown pre-annotator"):
        preannotator_class("nope")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"model": "magic"}, "not a pre-annotator"),
        ({"device": "tpu"}, "device must be"),
        ({"threads": -1}, "threads"),
        ({"grabcut": {"work_side": 10}}, "work_side"),
        ({"grabcut": {"iterations": 0}}, "iterations"),
        ({"grabcut": {"border_frac": 0.5}}, "border_frac"),
        ({"grabcut": {"refine_side": 100}}, "refine_side"),
        ({"grabcut": {"refine_eps": 0}}, "refine_eps"),
        ({"grabcut": {"min_island_frac": 1.0}}, "min_island_frac"),
        ({"deeplabv3": {"classes": ["unicorn"]}}, "unknown VOC classes"),
        ({"deeplabv3": {"classes": []}}, "at least one class"),
        ({"deeplabv3": {"max_side": 10}}, "max_side"),
        ({"sam": {"arch": "vit_x"}}, "vit_x"),
        ({"sam": {"n_positive": 0}}, "n_positive"),
        ({"sam": {"auto_grid": 1}}, "auto_grid"),
        ({"sam": {"promt": "box"}}, "unknown key"),
    ],
)
def test_params_errors(raw: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        from_mapping(PreannotateParams, raw, where="params.yaml:preannotate")
