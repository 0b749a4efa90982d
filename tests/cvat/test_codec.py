"""Our CVAT mask codec against the reference implementation in cvat_sdk.masks (fast path vs exact path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cvat_sdk import masks as sdk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.annotation.cvat_codec import (
    decode_mask,
    encode_mask,
    mask_to_polygons,
    polygon_to_mask,
    rectangle_to_mask,
    shape_bbox,
)
from pipeline.core import io


def _check_same(mask: np.ndarray) -> list[int]:
    ours = encode_mask(mask)
    ref = sdk.encode_mask(mask)
    assert ours == ref
    assert all(type(v) is int for v in ours)
    h, w = mask.shape
    decoded = decode_mask(ours, image_width=w, image_height=h)
    assert decoded.dtype == np.bool_ and decoded.shape == (h, w)
    assert np.array_equal(decoded, sdk.decode_mask(ref, image_width=w, image_height=h))
    assert np.array_equal(decoded, mask)
    return ours


@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))))
@settings(max_examples=400, deadline=None)
def test_random_masks_match_sdk(mask: np.ndarray) -> None:
    _check_same(mask)


@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
@settings(max_examples=200, deadline=None)
def test_random_masks_with_bbox_match_sdk(h: int, w: int, seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < density
    x1, x2 = sorted(rng.choice(w + 1, 2, replace=False)) if w > 1 else (0, 1)
    y1, y2 = sorted(rng.choice(h + 1, 2, replace=False)) if h > 1 else (0, 1)
    bbox = [float(x1), float(y1), float(x2), float(y2)]
    assert encode_mask(mask, bbox) == sdk.encode_mask(mask, bbox)


@pytest.mark.parametrize(
    ("name", "mask"),
    [
        ("empty", np.zeros((5, 7), bool)),
        ("full", np.ones((5, 7), bool)),
        ("single pixel", np.eye(1, dtype=bool)),
        ("corner pixel bottom-right", np.pad(np.ones((1, 1), bool), ((4, 0), (6, 0)))),
        ("hole", np.pad(np.pad(np.zeros((2, 2), bool), 2, constant_values=True), 1)),
        ("two parts", np.array([[1, 1, 0, 0, 1], [1, 1, 0, 0, 1]], bool)),
        ("border rows and columns", np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 1]], bool)),
        ("checkerboard", (np.indices((9, 11)).sum(axis=0) % 2).astype(bool)),
        ("one row", np.array([[0, 1, 1, 0, 1]], bool)),
        ("one column", np.array([[1], [0], [1], [1]], bool)),
    ],
)
def test_hand_drawn_cases(name: str, mask: np.ndarray) -> None:
    _check_same(mask)


def test_known_encoding_with_exclusive_box_edges() -> None:
    # box x 1..2, y 0..1 (inclusive) -> bitmap[0:2, 1:3] = [[1,1],[0,1]] -> runs 0,2,1,1
    mask = np.array([[0, 1, 1], [0, 0, 1]], bool)
    assert encode_mask(mask) == [0, 2, 1, 1, 1, 0, 2, 1]
    assert encode_mask(np.zeros((3, 3), bool)) == [1, 0, 0, 0, 0]


def test_uint8_masks_are_accepted_as_nonzero_foreground() -> None:
    mask = np.array([[0, 255, 1], [0, 0, 7]], np.uint8)
    assert encode_mask(mask) == sdk.encode_mask(mask != 0)


def test_non_contiguous_input() -> None:
    rng = np.random.default_rng(3)
    base = rng.random((30, 40)) < 0.4
    for view in (base[::2, ::3], base.T, base[5:20, 7:33]):
        assert encode_mask(view) == sdk.encode_mask(view)


def test_real_masks_upscaled(ecssd: Path) -> None:
    import cv2

    for path in sorted((ecssd / "masks").glob("*.png"))[:12]:
        gt = io.read_mask(path) > 0
        _check_same(gt)
        big = cv2.resize(gt.view(np.uint8), (gt.shape[1] * 5, gt.shape[0] * 5), interpolation=cv2.INTER_NEAREST)
        _check_same(big.astype(bool))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 2, 2), bool), "2 dimensions"),
        (np.zeros((3, 3), np.float32), "boolean"),
    ],
)
def test_encode_rejects_bad_bitmaps(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_mask(bad)


@pytest.mark.parametrize("bbox", [[0, 0, 0, 1], [2, 0, 1, 1], [0, 0, 4, 1], [-1, 0, 1, 1], [0, 0, 1, 9]])
def test_encode_rejects_bad_bbox(bbox: list[float]) -> None:
    with pytest.raises(ValueError, match="bbox has invalid coordinates"):
        encode_mask(np.ones((3, 3), bool), bbox)


@pytest.mark.parametrize(
    ("points", "w", "h", "message"),
    [
        ([1, 0, 0, 0], 3, 3, "too few"),
        ([1, 0, 0, 0, 0], 0, 3, "invalid image dimensions"),
        ([1.5, 0, 0, 0, 0], 3, 3, "non-integer"),
        ([float("nan"), 0, 0, 0, 0], 3, 3, "non-integer"),
        (["a", "b", 0, 0, 0], 3, 3, "numbers"),
        ([1, 0, 0, 3, 0], 3, 3, "bounding box"),
        ([1, 2, 1, 0, 0], 3, 3, "bounding box"),
        ([2, 0, 0, 0, 0], 3, 3, "does not match"),
        ([-1, 2, 0, 0, 0, 0], 3, 3, "negative"),
        ([[1, 0], [0, 0], [0, 0], [0, 0], [0, 0]], 3, 3, "flat"),
    ],
)
def test_decode_rejects_bad_points(points: list, w: int, h: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_mask(points, image_width=w, image_height=h)


def test_decode_accepts_integral_floats_like_the_sdk() -> None:
    points = [0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 2.0, 1.0]
    assert np.array_equal(decode_mask(points, image_width=3, image_height=2),
                          sdk.decode_mask(points, image_width=3, image_height=2))
    assert shape_bbox(points) == (1, 0, 2, 1)
    with pytest.raises(ValueError, match="too few"):
        shape_bbox([1, 2])


def test_polygon_round_trip_of_outer_contours() -> None:
    mask = np.zeros((20, 30), bool)
    mask[2:8, 3:12] = True            # rectangle
    mask[12:18, 20:29] = True         # second part
    mask[15, 5] = True                # single pixel
    polys = mask_to_polygons(mask)
    assert len(polys) == 3
    out = np.zeros_like(mask)
    for p in polys:
        out |= polygon_to_mask(p, 20, 30)
    assert np.array_equal(out, mask)


def test_polygon_loses_holes_but_keeps_outline() -> None:
    mask = np.zeros((10, 10), bool)
    mask[1:9, 1:9] = True
    mask[4:6, 4:6] = False
    (poly,) = mask_to_polygons(mask)
    filled = polygon_to_mask(poly, 10, 10)
    assert filled[4:6, 4:6].all() and np.array_equal(filled & ~mask, np.pad(np.ones((2, 2), bool), 4))


def test_polygon_outside_the_frame_is_clipped() -> None:
    m = polygon_to_mask([-5, -5, 4, -5, 4, 4, -5, 4], 6, 6)
    assert m[:5, :5].all() and not m[5:, :].any() and not m[:, 5:].any()


@pytest.mark.parametrize("points", [[0, 0, 1, 1], [0, 0, 1, 1, 2], [0, 0, 1, 1, float("inf"), 2]])
def test_bad_polygons(points: list[float]) -> None:
    with pytest.raises(ValueError, match="polygon"):
        polygon_to_mask(points, 5, 5)


def test_rectangle_to_mask_uses_pixel_edges_and_clips() -> None:
    m = rectangle_to_mask([1.0, 2.0, 4.0, 3.0], 5, 6)
    expected = np.zeros((5, 6), bool)
    expected[2:3, 1:4] = True
    assert np.array_equal(m, expected)
    assert rectangle_to_mask([-3, -3, 100, 100], 4, 4).all()
    with pytest.raises(ValueError, match="4 coordinates"):
        rectangle_to_mask([1, 2, 3], 4, 4)
    with pytest.raises(ValueError, match="non-finite"):
        rectangle_to_mask([1, 2, 3, float("nan")], 4, 4)
