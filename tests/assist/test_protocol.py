"""The ML-backend protocol's pure parts: percent -> pixel, boxes, the generated config, and pull ignoring the
smart tools' regions left in a submitted annotation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.annotation.brush import mask_to_rle
from pipeline.annotation.files import ReadOptions
from pipeline.annotation.formats_labelstudio import mask_from_results
from pipeline.annotation.labelstudio import LabelStudioParams, label_config
from pipeline.annotation.labelstudio_ml import (
    AssistParams,
    BadPrompt,
    ClickOutsideImage,
    PercentBox,
    PercentPoint,
    brush_tool,
    parse_predict,
    pixel_box,
    pixel_points,
    to_pixel,
)


@pytest.mark.parametrize(
    ("pct", "size", "pixel"),
    [
        (0.0, 400, 0),  # left edge
        (100.0, 400, 399),  # right edge maps to the last pixel, not past it
        (50.0, 400, 200),
        (0.24, 400, 0),  # 0.96 px -> pixel 0
        (0.26, 400, 1),  # 1.04 px -> pixel 1
    ],
)
def test_percent_to_pixel(pct: float, size: int, pixel: int) -> None:
    assert to_pixel(pct, pct, size, size) == (pixel, pixel)


def test_points_outside_the_image_name_item_and_click() -> None:
    assert pixel_points([PercentPoint(10, 90, True), PercentPoint(100, 0, False)], 200, 100, "it") == [
        (20, 90, True), (199, 0, False)]
    with pytest.raises(ClickOutsideImage, match=r"item it: click 1 at x=100\.1%, y=5%.*200x100"):
        pixel_points([PercentPoint(5, 5, True), PercentPoint(100.1, 5, True)], 200, 100, "it")


def test_boxes_are_clipped_and_empty_ones_refused() -> None:
    assert pixel_box(PercentBox(10, 10, 50, 50), 200, 100, "it") == (20, 10, 120, 60)
    assert pixel_box(PercentBox(-10, 90, 30, 30), 200, 100, "it") == (0, 90, 40, 100)  # clipped
    assert pixel_box(PercentBox(60, 60, -20, -20), 200, 100, "it") == (80, 40, 120, 60)  # dragged up-left
    with pytest.raises(BadPrompt, match="holds no pixel"):
        pixel_box(PercentBox(110, 10, 5, 5), 200, 100, "it")


def test_config_and_brush_tool() -> None:
    config = label_config(LabelStudioParams(assist=AssistParams(enabled=True, tools=("keypoint",))))
    assert 'KeyPointLabels name="assist_click"' in config and "assist_box" not in config
    assert brush_tool(config) == ("mask", "image")
    assert label_config(LabelStudioParams()) == label_config(LabelStudioParams(assist=AssistParams(enabled=False)))
    with pytest.raises(ValueError, match=r"assist\.label must differ"):
        LabelStudioParams(label="assist")


def test_parse_keeps_order_latest_box_and_ignores_other_regions() -> None:
    req = parse_predict({"tasks": [{"id": 3, "data": {"item_id": " abc "}}], "label_config": "<BrushLabels "
                         'name="m2" toName="img">', "params": {"context": {"result": [
                             {"type": "keypointlabels", "value": {"x": 1, "y": 2}},
                             {"type": "brushlabels", "value": {"rle": [1]}},
                             {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5}},
                             {"type": "keypointlabels", "value": {"x": 3, "y": 4}, "is_positive": False},
                             {"type": "rectanglelabels", "value": {"x": 2, "y": 2, "width": 6, "height": 6}}]}}})
    assert req.item_id == "abc" and req.task_id == 3 and (req.brush_from, req.brush_to) == ("m2", "img")
    assert req.points == (PercentPoint(1, 2, True), PercentPoint(3, 4, False))
    assert req.box == PercentBox(2, 2, 6, 6) and req.interactive


def test_pull_ignores_the_smart_tools_regions() -> None:
    """A submitted annotation keeps the assist keypoints and box next to the brush: only the brush counts."""
    h, w = 30, 40
    brush = np.zeros((h, w), np.uint8)
    brush[5:15, 5:20] = 255
    common = {"original_width": w, "original_height": h}
    results = [
        {**common, "type": "brushlabels", "from_name": "mask", "value": {"format": "rle", "rle": mask_to_rle(brush),
                                                                         "brushlabels": ["foreground"]}},
        {**common, "type": "rectanglelabels", "from_name": "assist_box",
         "value": {"x": 50, "y": 50, "width": 40, "height": 40, "rectanglelabels": ["assist"]}},
        {**common, "type": "keypointlabels", "from_name": "assist_click",
         "value": {"x": 75, "y": 75, "keypointlabels": ["assist"]}},
    ]
    mask = mask_from_results(results, ReadOptions(labels=("foreground",), alpha_threshold=128))
    assert mask is not None and np.array_equal(mask, brush)
