"""saliency: the weight-free salient-object priors behind grabcut's hypotheses."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.preannotators import saliency as S

from .conftest import object_on_background


def test_object_is_more_salient_than_background_for_every_cue() -> None:
    img, gt = object_on_background()
    for cue in (S.minimum_barrier_distance(img), S.backgroundness(img), S.salient_map(img)):
        assert cue.dtype == np.float32 and cue.shape == gt.shape
        assert float(cue.min()) >= 0.0 and float(cue.max()) <= 1.0
        assert float(cue[gt].mean()) > float(cue[~gt].mean()) + 0.3


def test_minimum_barrier_ignores_a_background_gradient() -> None:
    """A smooth left-to-right ramp reaches the border through similar colours: barrier ~0. A flat patch of
    another colour inside is separated from the border by a barrier."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[:] = np.linspace(20, 220, 80, dtype=np.uint8)[None, :, None]
    img[20:40, 30:50] = (250, 0, 250)
    mbd = S.minimum_barrier_distance(img)
    assert float(mbd[30, 40]) > 0.8
    assert float(np.percentile(mbd[:, :25], 95)) < 0.1


def test_reference_raster_scan_matches_a_brute_force_dijkstra() -> None:
    """The raster scan keeps one (max, min) pair per pixel, so it is an upper bound of the exact minimum
    barrier distance (over all 4-connected paths to the border, found here by exhaustive relaxation of
    Pareto-optimal pairs) and close to it."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (7, 8, 1)).astype(np.float32)
    fast = S._mbd_scan(img, 20)
    h, w = img.shape[:2]
    val = img[:, :, 0]
    best = np.full((h, w), np.inf)
    for y0 in range(h):  # exhaustive: for each border seed, relax (max, min) pairs until stable
        for x0 in range(w):
            if 0 < y0 < h - 1 and 0 < x0 < w - 1:
                continue
            states: dict[tuple[int, int], set[tuple[float, float]]] = {(y0, x0): {(val[y0, x0], val[y0, x0])}}
            frontier = [(y0, x0)]
            while frontier:
                nxt = []
                for y, x in frontier:
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = y + dy, x + dx
                        if not (0 <= yy < h and 0 <= xx < w):
                            continue
                        v = val[yy, xx]
                        for hi, lo in list(states[(y, x)]):
                            pair = (max(hi, v), min(lo, v))
                            have = states.setdefault((yy, xx), set())
                            if any(a <= pair[0] and b >= pair[1] for a, b in have):
                                continue
                            have.add(pair)
                            nxt.append((yy, xx))
                frontier = sorted(set(nxt))
            for (y, x), pairs in states.items():
                best[y, x] = min(best[y, x], min(a - b for a, b in pairs))
    inner = (slice(1, h - 1), slice(1, w - 1))
    assert (fast[inner] >= best[inner] - 1e-4).all()
    assert float(np.mean(fast[inner] - best[inner])) <= 0.1 * float(np.mean(best[inner]))


@pytest.mark.parametrize(
    ("saliency", "expect_pixels"),
    [
        (np.zeros((20, 20), np.float32), 400),  # flat map: every pixel is the maximum
        (np.pad(np.ones((10, 10), np.float32), 5), None),  # a square: its centre
    ],
)
def test_foreground_core_is_never_empty(saliency: np.ndarray, expect_pixels: int | None) -> None:
    core = S.foreground_core(saliency)
    assert core.any()
    if expect_pixels is not None:
        assert int(core.sum()) == expect_pixels
    else:
        assert core[10, 10] and not core[0, 0] and not core[5, 5]


def test_bad_image_raises() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        S.minimum_barrier_distance(np.zeros((10, 10), np.uint8))


def test_prior_channels_shape_range_and_errors() -> None:
    img, gt = object_on_background(60, 80)
    ch = S.prior_channels(img, ("mbd", "backgroundness"))
    assert ch.shape == (60, 80, 2) and ch.dtype == np.float32
    assert float(ch.min()) >= -1.0 and float(ch.max()) <= 1.0
    assert float(ch[..., 0][gt].mean()) > float(ch[..., 0][~gt].mean())
    assert S.prior_channels(img, ()).shape == (60, 80, 0)
    with pytest.raises(ValueError, match="unknown saliency priors"):
        S.prior_channels(img, ("mbd", "depth"))
