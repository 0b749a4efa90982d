"""Pure rendering functions on tiny hand-drawn arrays; the thumbnail cache on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dashboards import render


def _img(h: int = 4, w: int = 6, value: int = 100) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _mask(h: int = 4, w: int = 6) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[1:3, 1:4] = 255  # a 2x3 block inside the frame
    return m


def test_overlay_tints_only_foreground_and_keeps_input() -> None:
    img, m = _img(), _mask()
    before = img.copy()
    out = render.overlay(img, m, opacity=0.5, outline=False)
    assert np.array_equal(img, before)  # inputs untouched
    assert out[0, 0].tolist() == [100, 100, 100]  # background unchanged
    assert out[1, 1].tolist() == [178, 82, 82]  # 0.5 * 100 + 0.5 * (255, 64, 64), rounded
    assert render.overlay(img, m, opacity=0.0, outline=False).tolist() == img.tolist()


def test_overlay_outline_is_drawn_solid_even_at_zero_opacity() -> None:
    m = np.zeros((7, 7), np.uint8)
    m[1:6, 1:6] = 255
    out = render.overlay(_img(7, 7), m, opacity=0.0, outline=True)
    assert out[1, 3].tolist() == list(render.MASK_COLOUR)  # contour pixel
    assert out[3, 3].tolist() == [100, 100, 100]  # interior untouched at opacity 0
    assert out[0, 0].tolist() == [100, 100, 100]


def test_outline_of_single_pixel_and_full_mask() -> None:
    one = np.zeros((3, 3), np.uint8)
    one[1, 1] = 255
    assert render.outline_of(one).sum() == 1  # a lone pixel is all contour
    full = np.full((3, 3), 255, np.uint8)
    assert render.outline_of(full).sum() == 8  # the frame counts as background


def test_diff_stats_and_colours() -> None:
    before = np.zeros((2, 4), np.uint8)
    after = np.zeros((2, 4), np.uint8)
    before[:, 0:2] = 255  # pre-annotation: columns 0-1
    after[:, 1:3] = 255  # correction: columns 1-2 -> column 0 removed, 1 kept, 2 added
    s = render.diff_stats(before, after)
    assert (s.added, s.removed, s.kept, s.changed) == (2, 2, 2, 4)
    assert s.iou == pytest.approx(2 / 6)
    out = render.diff_overlay(_img(2, 4, 0), before, after, opacity=1.0, show_kept=False)
    assert out[0, 0].tolist() == list(render.REMOVED_COLOUR)
    assert out[0, 2].tolist() == list(render.ADDED_COLOUR)
    assert out[0, 1].tolist() == [0, 0, 0] and out[0, 3].tolist() == [0, 0, 0]
    empty = np.zeros((2, 2), np.uint8)
    assert render.diff_stats(empty, empty).iou == 1.0  # both empty: identical


def test_trimap_view_marks_unknown_and_darkens_background() -> None:
    tri = np.array([[0, 128, 255]], np.uint8)
    out = render.trimap_view(_img(1, 3, 200), tri, opacity=1.0)
    assert out[0, 0].tolist() == [60, 60, 60]  # 200 * (1 - 0.7)
    assert out[0, 1].tolist() == list(render.UNKNOWN_COLOUR)
    assert out[0, 2].tolist() == [200, 200, 200]


def test_cutout_blends_by_alpha() -> None:
    img = _img(1, 3, 200)
    bg = np.zeros((1, 3, 3), np.uint8)
    alpha = np.array([[0, 128, 255]], np.uint8)
    out = render.cutout(img, alpha, bg)
    assert out[0, :, 0].tolist() == [0, 100, 200]
    assert render.cutout(img, alpha).shape == img.shape  # checkerboard backdrop by default


def test_checkerboard_cells() -> None:
    b = render.checkerboard(4, 4, cell=2, light=10, dark=20)
    assert b[0, 0, 0] == 10 and b[0, 2, 0] == 20 and b[2, 0, 0] == 20 and b[2, 2, 0] == 10


def test_fit_fit_box_letterbox_side_by_side() -> None:
    big = np.zeros((100, 200, 3), np.uint8)
    assert render.fit(big, 50).shape == (25, 50, 3)
    assert render.fit(big, 500).shape == (100, 200, 3)  # never upscaled
    assert render.fit_box(big, 100, 100).shape == (50, 100, 3)
    assert render.fit_box(big, 1000, 1000).shape == (300, 600, 3)  # up to 3x
    assert render.fit_box(big, 1000, 1000, max_upscale=1.0).shape == (100, 200, 3)
    lb = render.letterbox(big, 60, 60, value=7)
    assert lb.shape == (60, 60, 3) and lb[0, 0, 0] == 7 and lb[30, 30, 0] == 0  # centred, padded
    sbs = render.side_by_side([np.zeros((10, 10, 3), np.uint8), np.zeros((20, 40), np.uint8)], gap=2)
    assert sbs.shape == (10, 10 + 2 + 20, 3)
    assert sbs[0, 10, 0] == 255  # the gap


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render.overlay(np.zeros((4, 4), np.uint8), _mask()), "RGB uint8"),
        (lambda: render.overlay(_img(), np.zeros((3, 3), np.uint8)), "is 3x3 but the image is 6x4"),
        (lambda: render.overlay(_img(), _mask().astype(np.float32)), "mask must be uint8"),
        (lambda: render.overlay(_img(), _mask(), opacity=1.5), "opacity"),
        (lambda: render.diff_stats(_mask(), np.zeros((2, 2), np.uint8)), "correction mask is 2x2"),
        (lambda: render.cutout(_img(), np.zeros((4, 6), np.uint8), np.zeros((2, 2, 3), np.uint8)), "background"),
        (lambda: render.checkerboard(0, 4), "positive"),
        (lambda: render.fit(_img(), 0), "max_side"),
        (lambda: render.fit_box(_img(), 0, 5), "positive"),
        (lambda: render.side_by_side([]), "at least one"),
        (lambda: render.ThumbnailCache(Path("x"), quality=0), "quality"),
    ],
)
def test_errors_name_the_problem(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_thumbnail_cache_reuses_and_invalidates(tmp_path: Path) -> None:
    cache = render.ThumbnailCache(tmp_path / "thumbs")
    src = tmp_path / "mask.png"
    src.write_bytes(b"v1")
    calls: list[int] = []

    def make() -> np.ndarray:
        calls.append(1)
        return _img(8, 8, 50 * len(calls))

    a = cache.get([src], "s", make)
    b = cache.get([src], "s", make)
    assert a == b and len(calls) == 1  # second call read from disk
    assert a[:2] == b"\xff\xd8"  # JPEG
    cache.get([src], "other-size", make)
    assert len(calls) == 2  # settings are part of the key
    src.write_bytes(b"v2-longer")  # the mask changed -> fresh thumbnail
    os.utime(src, ns=(1, 1))
    cache.get([src], "s", make)
    assert len(calls) == 3
    assert len(list((tmp_path / "thumbs").glob("*/*.jpg"))) == 3


def test_thumbnail_cache_unwritable_still_returns_the_picture(tmp_path: Path) -> None:
    blocker = tmp_path / "thumbs"
    blocker.write_text("a file where the cache folder should be")
    data = render.ThumbnailCache(blocker).get([None], "s", lambda: _img())
    assert data[:2] == b"\xff\xd8"
