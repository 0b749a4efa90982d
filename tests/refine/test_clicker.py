"""The simulated annotator on tiny hand-drawn masks (one comment per case)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.refine.base import Click
from pipeline.refine.clicker import interior_point, next_click, noc, simulate, summarize


def grid(rows: list[str]) -> np.ndarray:
    return np.array([[ch == "#" for ch in r] for r in rows], bool)


def test_empty_canvas_first_click_is_object_interior() -> None:
    gt = grid([
        ".......",
        ".#####.",
        ".#####.",
        ".#####.",
        ".......",
    ])
    assert next_click(np.zeros_like(gt), gt) == Click(3, 2, True)  # centre of the 5x3 block


def test_largest_error_region_wins_and_sign() -> None:
    gt = grid([
        "##......",
        "##......",
        "........",
        "........",
    ])
    pred = grid([
        "........",  # missed foreground: the 2x2 block (area 4)
        "........",
        "...#####",  # false foreground: a 2x5 strip (area 10) -> negative click inside it
        "...#####",
    ])
    c = next_click(pred, gt)
    assert c is not None and not c.positive and pred[c.y, c.x]


def test_image_border_counts_as_edge() -> None:
    # an error region touching the left border: the interior point is not on the border column
    region = grid([
        "####.",
        "####.",
        "####.",
    ])
    x, y, depth = interior_point(region)
    assert (x, y) == (1, 1) and depth > 1.0


def test_no_error_no_click() -> None:
    gt = grid([".#", "##"])
    assert next_click(gt, gt) is None
    with pytest.raises(ValueError, match="shapes differ"):
        next_click(gt, gt[:1])


def test_noc_counts() -> None:
    assert noc([0.5, 0.8, 0.86, 0.91], 0.85) == 2
    assert noc([0.92], 0.90) == 0  # the start already good: the pre-annotation's worth
    assert noc([0.1] * 21, 0.90) == 20  # never reached: max clicks
    assert noc([0.1, 0.95], 0.90, max_clicks=20) == 1


def test_simulate_with_a_perfect_and_a_useless_engine() -> None:
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True

    def perfect(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        return gt.astype(np.uint8)

    def useless(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
        return mask

    t = simulate(perfect, gt)
    assert t.noc(0.90) == 1 and t.clicks == (Click(9, 9, True),) and len(t.seconds) == 1
    u = simulate(useless, gt, max_clicks=20)
    assert u.noc(0.85) == 20 and len(u.clicks) == 20 and not u.reached(0.9)
    s = summarize([t, u])
    assert s["noc90"] == 10.5 and s["fail90"] == 0.5 and s["items"] == 2
    assert simulate(perfect, gt, start=gt).clicks == ()  # already at 1.0: no click
