"""Evaluation metrics and correction effort on tiny hand-drawn masks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.evaluate import (
    boundary_f,
    correction_effort,
    fmeasure,
    iou,
    mae,
    score,
    summarize_effort,
)


def square(n: int, a: int, b: int) -> np.ndarray:
    m = np.zeros((n, n), np.uint8)
    m[a:b, a:b] = 255
    return m


def test_iou_cases() -> None:
    gt = square(10, 2, 6)  # 16 px
    assert iou(gt, gt) == 1.0
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # empty vs empty
    assert iou(np.zeros_like(gt), gt) == 0.0
    half = gt.copy()
    half[2:4] = 0  # 8 px, all inside gt
    assert iou(half, gt) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        iou(gt, gt[:5])


def test_fmeasure_weights_precision() -> None:
    gt = square(10, 2, 6)
    half = gt.copy()
    half[2:4] = 0  # precision 1, recall 0.5
    b2 = 0.3
    assert fmeasure(half, gt, b2) == pytest.approx((1 + b2) * 1 * 0.5 / (b2 * 1 + 0.5))
    assert fmeasure(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert fmeasure(np.zeros_like(gt), gt) == 0.0


def test_boundary_f_tolerance() -> None:
    gt = square(20, 5, 15)
    shifted = np.roll(gt, 1, axis=1)  # edges 1 px off
    assert boundary_f(gt, gt, 0) == 1.0
    assert boundary_f(shifted, gt, 0) < 0.8
    assert boundary_f(shifted, gt, 1) == 1.0
    assert boundary_f(np.zeros_like(gt), gt, 2) == 0.0
    assert boundary_f(np.zeros_like(gt), np.zeros_like(gt), 2) == 1.0


def test_mae_and_score() -> None:
    gt = square(4, 0, 2)  # 4 of 16 px
    prob = np.full((4, 4), 0.5, np.float32)
    assert mae(prob, gt) == pytest.approx(0.5)
    s = score(gt.astype(np.float32) / 255, gt)
    assert (s.iou, s.fmeasure, s.boundary_f, s.mae) == (1.0, 1.0, 1.0, 0.0)


def test_correction_effort_and_summary() -> None:
    gt = square(10, 2, 6)
    same = correction_effort(gt, gt)
    assert same.unchanged and same.iou == 1.0 and same.pixels_changed == 0
    redrawn = correction_effort(np.zeros_like(gt), gt)
    assert not redrawn.unchanged and redrawn.pixels_changed == 16 and redrawn.fraction_changed == 0.16
    rows = [{"model": "m", "model_version": "1", **vars(e)} for e in (same, redrawn)]
    summary = summarize_effort(rows)
    assert summary == {"m@1": {"items": 2, "accepted_unchanged": 0.5, "mean_iou": 0.5, "mean_pixels_changed": 8.0,
                               "mean_fraction_changed": 0.08, "noc_items": 0, "mean_noc85": None,
                               "mean_noc90": None}}
    rows[0].update(noc85=0.0, noc90=0.0)  # simulated clicks (pipeline.refine.effort) on the first item only
    rows[1].update(noc85=float("nan"), noc90=float("nan"))
    clicked = summarize_effort(rows)["m@1"]
    assert (clicked["noc_items"], clicked["mean_noc85"], clicked["mean_noc90"]) == (1, 0.0, 0.0)
    with pytest.raises(ValueError, match="pre-annotation is 10x10 but the correction is 10x5"):
        correction_effort(gt, gt[:5])
