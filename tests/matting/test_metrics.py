"""Matting metrics against hand-computed cases (tiny arrays, one comment per case)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.matting import metrics as mm


def test_sad_and_mse_hand_computed() -> None:
    gt = np.array([[0.0, 1.0], [0.5, 0.25]])
    pred = np.array([[0.5, 1.0], [0.0, 0.25]])  # errors 0.5, 0, 0.5, 0
    region = np.array([[True, True], [True, False]])  # last pixel excluded
    assert mm.sad(pred, gt, region) == pytest.approx(1.0 / 1000)
    assert mm.mse(pred, gt, region) == pytest.approx((0.25 + 0 + 0.25) / 3)


def test_errors_only_count_inside_the_unknown_region() -> None:
    gt = np.zeros((4, 4))
    pred = np.ones((4, 4))
    trimap = np.zeros((4, 4), np.uint8)
    trimap[1, 1] = 128
    s = mm.score(pred, gt, trimap)
    assert s.n_unknown == 1
    assert s.sad == pytest.approx(1 / 1000)
    assert s.mse == pytest.approx(1.0)


def test_empty_region_gives_zero() -> None:
    a = np.random.default_rng(0).random((5, 5))
    region = np.zeros((5, 5), bool)
    assert mm.sad(a, a * 0, region) == 0.0
    assert mm.mse(a, a * 0, region) == 0.0


def test_gradient_of_a_linear_ramp_equals_its_slope() -> None:
    # pred = ramp with slope 0.01 per pixel along x, gt = flat: |grad pred| = 0.01 away from the border
    x = np.arange(40, dtype=np.float64)
    pred = np.tile(0.2 + 0.01 * x, (40, 1))
    gt = np.full((40, 40), 0.5)
    region = np.zeros((40, 40), bool)
    region[10:30, 10:30] = True  # far from the border (sigma 1.4 kernel)
    # the sampled Gaussian derivative (truncated at 4 sigma) recovers the slope to about 1e-4 relative
    assert mm.gradient(pred, gt, region) == pytest.approx(400 * 0.01**2 / 1000, rel=1e-3)
    assert mm.gradient(pred, pred, region) == 0.0


def test_connectivity_identical_is_zero_and_a_detached_blob_costs() -> None:
    gt = np.zeros((7, 7))
    gt[1:4, 1:4] = 1.0
    region = np.ones((7, 7), bool)
    assert mm.connectivity(gt, gt, region) == 0.0
    pred = gt.copy()
    pred[5, 5] = 1.0  # a detached pixel the ground truth does not have
    # at (5, 5): gt >= t fails for every t > 0, so l = 0 -> d_pred = 1 (phi 0), d_gt = 0 (phi 1): error 1
    assert mm.connectivity(pred, gt, region) == pytest.approx(1.0 / 1000)


def test_connectivity_disconnected_pixel_in_both_is_compared_by_level() -> None:
    # both have a detached pixel of 0.5 at (5, 5): it is never in the largest component -> l = 0 for it,
    # d = 0.5 >= 0.15 in both -> phi equal -> no error
    gt = np.zeros((7, 7))
    gt[1:4, 1:4] = 1.0
    gt[5, 5] = 0.5
    assert mm.connectivity(gt.copy(), gt, np.ones((7, 7), bool)) == 0.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        mm.sad(np.zeros((2, 2)), np.zeros((2, 3)), np.ones((2, 2), bool))


def test_unknown_region_of_trimap() -> None:
    tri = np.array([[0, 128, 255]], np.uint8)
    assert mm.unknown_region(tri).tolist() == [[False, True, False]]
