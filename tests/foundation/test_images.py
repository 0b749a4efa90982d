"""The one "longer side at most N" resizer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.images import fit_size, longest_side_scale, shrink_longest


def test_fit_size_keeps_aspect_never_upscales_and_rounds() -> None:
    assert fit_size(300, 200, 100) == (100, 67)
    assert fit_size(200, 300, 1000) == (200, 300)
    assert fit_size(640, 3, 64) == (64, 1)  # never a zero side
    assert longest_side_scale(400, 100, 100) == 0.25
    with pytest.raises(ValueError, match="max_side"):
        fit_size(10, 10, 0)


def test_shrink_longest_is_area_interpolation_and_copies_only_when_asked() -> None:
    img = np.random.default_rng(0).integers(0, 256, (301, 199, 3), dtype=np.uint8)
    small, scale = shrink_longest(img, 100)
    assert small.shape == (100, 66, 3) and scale == 100 / 301
    assert np.array_equal(small, cv2.resize(img, (66, 100), interpolation=cv2.INTER_AREA))
    same, one = shrink_longest(img, 400, copy=False)
    assert same is img and one == 1.0
    copied, _ = shrink_longest(img, 400)
    assert copied is not img and np.array_equal(copied, img)
    fast, _ = shrink_longest(img, 50, subsample=True)  # every 3rd pixel, then area
    assert np.array_equal(fast, cv2.resize(np.ascontiguousarray(img[::3, ::3]), (33, 50), interpolation=cv2.INTER_AREA))
