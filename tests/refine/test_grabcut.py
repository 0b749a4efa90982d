"""The ``grabcut`` refinement engine on a hand-drawn scene and on real ECSSD photos."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.params import Paths
from pipeline.refine import build_refiner
from pipeline.refine.base import Box, Click, RefineInputError, RefineItem, RefineParams, check_result
from pipeline.refine.grabcut import GrabCutRefiner, click_labels, deep_released, scale_clicks
from pipeline.stages.evaluate import iou

from .conftest import scene


def engine() -> GrabCutRefiner:
    return build_refiner("grabcut", RefineParams(), Paths())  # type: ignore[return-value]


def test_empty_canvas_one_positive_click_finds_object(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, gt = drawn
    r = engine()
    item = RefineItem("s", Path("unused"), pixels=img)
    res = r.refine(item, None, [Click(60, 60, True)])
    assert res.mask.shape == gt.shape and res.mask.dtype == np.uint8
    assert iou(res.mask, gt) > 0.9
    assert np.array_equal(res.mask, (res.probability >= 0.5).astype(np.uint8))
    assert not res.cached and r.refine(item, None, [Click(60, 60, True)]).cached


def test_positive_click_adds_missed_part_and_keeps_far_prior(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, gt = drawn
    prior = gt.copy()
    prior[:, 85:] = False  # the pre-annotation missed the square's right part
    prior[2:26, 2:26] = True  # ... and a stray blob far from any click (its core is kept: nobody clicked there)
    r = engine()
    item = RefineItem("s", Path("unused"), pixels=img)
    before = iou(prior, gt)
    res = r.refine(item, prior.astype(np.uint8), [Click(105, 60, True)])
    assert iou(res.mask, gt) > before + 0.05
    assert res.mask[11:17, 11:17].all()  # far from the click and the edge band: the prior is kept bit for bit
    res2 = r.refine(item, res.mask, [Click(105, 60, True), Click(14, 14, False)])
    assert not res2.mask[2:26, 2:26].any() and iou(res2.mask, gt) > 0.9


def test_negative_click_removes_false_part(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, gt = drawn
    prior = gt.copy()
    prior[95:118, 120:158] = True  # a false background patch of the pre-annotation
    res = engine().refine(RefineItem("s", Path("u"), pixels=img), prior, [Click(140, 108, False)])
    assert not res.mask[100:115, 125:155].any()
    assert iou(res.mask, gt) > 0.9


def test_box_keeps_everything_outside_background(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, _gt = drawn
    res = engine().refine(RefineItem("s", Path("u"), pixels=img), None, [Click(60, 60, True)], Box(20, 20, 80, 100))
    assert not res.mask[:, 81:].any() and not res.mask[:19].any()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 159), st.integers(0, 119), st.booleans()), min_size=1, max_size=6),
       st.booleans())
def test_clicks_are_respected_by_construction(raw: list[tuple[int, int, bool]], with_prior: bool) -> None:
    img, gt = scene(seed=1)
    clicks = [Click(x, y, p) for x, y, p in raw]
    res = engine().refine(RefineItem("s", Path("u"), pixels=img), gt.astype(np.uint8) if with_prior else None, clicks)
    check_result(res, gt.shape, clicks, "grabcut")


def test_bad_input_names_item_and_value(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, _gt = drawn
    r = engine()
    item = RefineItem("item7", Path("u"), pixels=img)
    with pytest.raises(RefineInputError, match=r"item item7: click 0 at \(x=160, y=3\) lies outside the 160x120"):
        r.refine(item, None, [Click(160, 3, True)])
    with pytest.raises(RefineInputError, match=r"item item7: current mask is \(60, 80\)"):
        r.refine(item, np.zeros((60, 80), np.uint8), [Click(1, 1, True)])
    with pytest.raises(RefineInputError, match="outside the 160x120 image"):
        r.refine(item, None, [Click(1, 1, True)], Box(200, 0, 300, 10))


def test_labels_are_local_to_disagreeing_clicks() -> None:
    prior = np.zeros((100, 100), bool)
    prior[30:70, 30:70] = True
    p = RefineParams().grabcut
    labels, free = click_labels(prior, [], p)
    assert free[30, 50] and not free[50, 50] and not free[5, 5]  # only the edge band may change
    labels, free = click_labels(prior, [Click(90, 90, True)], p)
    assert free[90, 90] and free[80, 80] and labels[90, 90] == 1  # GC_FGD seed, released around it
    assert scale_clicks([Click(199, 0, True)], (100, 200), (50, 100)) == [Click(99, 0, True)]


def test_deep_click_releases_a_badly_wrong_prior(drawn: tuple[np.ndarray, np.ndarray]) -> None:
    img, gt = drawn
    prior = np.zeros_like(gt)
    prior[5:115, 5:155] = True  # a bloated pre-annotation: the object and most of the background
    click = Click(130, 95, False)  # background, 20 px from the prior's edge, sqrt(area) 128 px
    local = dataclasses.replace(RefineParams().grabcut, deep=0.0)
    deep = dataclasses.replace(local, deep=0.12)
    _labels, free = click_labels(prior, [click], local)
    assert not free[20, 20]  # off (deep 0): the prior's far corner stays definite
    _labels, free = click_labels(prior, [click], dataclasses.replace(local, deep=0.2))
    assert not free[20, 20]  # 20 / 128 < 0.2: not deep enough, a local release only
    _labels, free = click_labels(prior, [click], deep)
    assert free[prior].all()  # deep: the whole foreground part is released
    item = RefineItem("s", Path("u"), pixels=img)
    kept = build_refiner("grabcut", RefineParams(grabcut=local), Paths()).refine(item, prior, [click])
    released = build_refiner("grabcut", RefineParams(grabcut=deep), Paths()).refine(item, prior, [click])
    assert kept.mask[10:20, 10:20].all() and not released.mask[10:20, 10:20].any()
    assert iou(released.mask, gt) > 0.9 > iou(kept.mask, gt)
    assert deep_released(prior, [click], deep)[prior].all() and not deep_released(prior, [click], local).any()
    # a part that (almost) all flips sides is not trusted to one click: below deep_keep the local release wins
    strict = dataclasses.replace(deep, deep_keep=1.0)
    fallback = build_refiner("grabcut", RefineParams(grabcut=strict), Paths()).refine(item, prior, [click])
    assert np.array_equal(fallback.mask, kept.mask)
    with pytest.raises(ValueError, match="deep"):
        dataclasses.replace(local, deep=-0.1)
    with pytest.raises(ValueError, match="deep_keep"):
        dataclasses.replace(local, deep_keep=1.5)


def test_deep_negative_click_claims_its_neighbourhood_whatever_the_colours(
    drawn: tuple[np.ndarray, np.ndarray],
) -> None:
    img, gt = drawn
    prior = np.zeros_like(gt)
    prior[5:115, 5:155] = True  # the bloated pre-annotation of the test above
    click = Click(130, 95, False)  # 20 px from the prior's edge: a deep click at deep 0.12
    base = dataclasses.replace(RefineParams().grabcut, deep=0.12, deep_near=0.0)
    near = dataclasses.replace(base, deep_near=0.9)  # a disc of 18 px
    off, _ = click_labels(prior, [click], base)
    on, _ = click_labels(prior, [click], near)
    assert off[95, 115] == 3 and on[95, 115] == 2  # 15 px away: probable background only with deep_near
    assert on[95, 108] == off[95, 108] == 3  # 22 px away: outside the disc
    assert np.array_equal(on[~prior], off[~prior])  # only the released part is relabelled
    # a positive deep click is left to the wand (a disc of foreground overgrows into the background)
    pos = Click(12, 20, True)  # 15 px from the prior: deep (sqrt(3,600) x 0.12 = 7 px), not a far new part
    hole = prior.copy()
    hole[5:35, 5:35] = False
    assert deep_released(hole, [pos], base).any()
    assert np.array_equal(click_labels(hole, [pos], base)[0], click_labels(hole, [pos], near)[0])
    # and the whole engine still lands on the object
    res = build_refiner("grabcut", RefineParams(grabcut=near), Paths()).refine(
        RefineItem("s", Path("u"), pixels=img), prior, [click])
    assert iou(res.mask, gt) > 0.9
    with pytest.raises(ValueError, match="deep_near"):
        dataclasses.replace(base, deep_near=-1.0)
