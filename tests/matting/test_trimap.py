"""Trimap band widths, values, texture widening and the errors the trimap code raises."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.matting.trimap import TextureParams, TrimapError, TrimapParams, make_trimap

NO_TEX = TextureParams(enabled=False)


def square(n: int = 100, lo: int = 30, hi: int = 70) -> np.ndarray:
    m = np.zeros((n, n), np.uint8)
    m[lo:hi, lo:hi] = 255
    return m


def test_values_are_exactly_the_three_levels() -> None:
    res = make_trimap(square(), TrimapParams(band_px=5, texture=NO_TEX))
    assert set(np.unique(res.trimap).tolist()) == {0, 128, 255}
    assert res.trimap.dtype == np.uint8


@pytest.mark.parametrize("r", [1, 4, 10])
def test_band_width_along_a_straight_edge(r: int) -> None:
    res = make_trimap(square(), TrimapParams(band_px=r, texture=NO_TEX))
    row = res.trimap[50]  # crosses the left edge at x=30 (first foreground column)
    unknown = np.nonzero(row[:50] == 128)[0]
    # erosion/dilation by a disc of radius r: unknown columns 30-r .. 30+r-1 -> 2r pixels wide
    assert unknown.min() == 30 - r and unknown.max() == 30 + r - 1
    assert res.band_px == r
    assert res.unknown_fraction == pytest.approx(np.mean(res.trimap == 128))


def test_relative_band_follows_object_size_and_clamps() -> None:
    p = TrimapParams(mode="relative", band_fraction=0.1, min_band_px=2, max_band_px=6, texture=NO_TEX)
    assert make_trimap(square(100, 30, 70), p).band_px == 4  # sqrt(1600) * 0.1
    assert make_trimap(square(200, 10, 190), p).band_px == 6  # 18 -> clamped to max
    assert make_trimap(square(100, 45, 55), p).band_px == 2  # 1 -> clamped to min


def test_texture_widens_the_band_only_where_the_edge_is_textured() -> None:
    mask = square()
    image = np.full((100, 100, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    image[:, :40] = rng.integers(0, 256, size=(100, 40, 3), dtype=np.uint8)  # noisy (hairy) left edge only
    p = TrimapParams(band_px=3, texture=TextureParams(enabled=True, threshold=0.05, extra_px=6))
    res = make_trimap(mask, p, image)
    assert res.extra_px == 6 and 0 < res.textured_fraction < 0.5
    left = np.count_nonzero(res.trimap[50, :50] == 128)
    right = np.count_nonzero(res.trimap[50, 50:] == 128)
    assert right == 6 and left > right  # right edge on flat grey: plain 2r band
    plain = make_trimap(mask, TrimapParams(band_px=3, texture=NO_TEX), image)
    assert np.count_nonzero(plain.trimap == 128) < np.count_nonzero(res.trimap == 128)


def test_empty_mask_raises() -> None:
    with pytest.raises(TrimapError, match="no foreground"):
        make_trimap(np.zeros((10, 10), np.uint8), TrimapParams(texture=NO_TEX))


def test_full_mask_raises() -> None:
    with pytest.raises(TrimapError, match="whole image"):
        make_trimap(np.full((10, 10), 255, np.uint8), TrimapParams(texture=NO_TEX))


def test_object_thinner_than_band_raises() -> None:
    with pytest.raises(TrimapError, match="thinner than the band"):
        make_trimap(square(100, 48, 52), TrimapParams(band_px=5, texture=NO_TEX))


def test_image_size_mismatch_raises() -> None:
    with pytest.raises(TrimapError, match="100x100 but the image is 50x50"):
        make_trimap(square(), TrimapParams(), np.zeros((50, 50, 3), np.uint8))


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="band_px"):
        TrimapParams(band_px=0)
    with pytest.raises(ValueError, match="window_px"):
        TextureParams(window_px=4)


def test_a_clean_strong_edge_is_not_texture() -> None:
    # black object on white: the strongest possible edge, but all its gradients are aligned -> no widening
    mask = square()
    image = np.where(mask[:, :, None] > 0, 0, 255).astype(np.uint8).repeat(3, axis=2)
    p = TrimapParams(band_px=3, texture=TextureParams(enabled=True, threshold=0.05, extra_px=6))
    res = make_trimap(mask, p, image)
    # only boundary pixels within the 7 px window of the square's 4 corners (where gradients turn) are
    # flagged: about 4 x 2 x 6 of the 160-pixel-per-side boundary; every straight-edge pixel is not
    assert res.textured_fraction < 0.2
    straight = make_trimap(mask, p, image).trimap[20:80]
    # rows far from the corners (44..56) keep the plain 2r band on both sides
    assert all(np.count_nonzero(row == 128) == 12 for row in straight[24:37])
