"""Fixtures for the assist tests: a real maskloop project (ingested ECSSD photos with pre-annotations) and
helpers that build Label Studio ``/predict`` bodies."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core import io
from pipeline.core.params import Paths
from tests.conftest import REPO, maskloop

NAMES = ("0001", "0002", "0005")


@dataclasses.dataclass(frozen=True)
class AssistProject:
    root: Path
    paths: Paths  # absolute
    items: dict[str, str]  # item_id -> ECSSD name
    gt: dict[str, np.ndarray]  # item_id -> ground truth {0, 255}

    def item(self, name: str) -> str:
        return next(k for k, v in self.items.items() if v == name)


def absolute(paths: Paths, root: Path) -> Paths:
    """``paths`` with every relative path made absolute under ``root``."""
    changes = {f.name: root / getattr(paths, f.name) for f in dataclasses.fields(paths)
               if isinstance(getattr(paths, f.name), Path) and not getattr(paths, f.name).is_absolute()}
    return dataclasses.replace(paths, **changes)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask, np.ones((2 * px + 1, 2 * px + 1), np.uint8))


@pytest.fixture(scope="session")
def assist_project(tmp_path_factory: pytest.TempPathFactory, ecssd: Path) -> AssistProject:
    """Three ingested ECSSD photos; pre-annotations = ground truth eroded by 6 px (the edges need clicks)."""
    root = tmp_path_factory.mktemp("assist") / "proj"
    raw = root / "data" / "raw" / "images"
    raw.mkdir(parents=True)
    for n in NAMES:
        shutil.copy(ecssd / "images" / f"{n}.jpg", raw / f"{n}.jpg")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    maskloop("ingest", cwd=root)
    from pipeline.core.items import ok_items
    from pipeline.core.params import load_paths

    paths = absolute(load_paths(root / "params.yaml"), root)
    items, gt = {}, {}
    for it in ok_items(paths.manifest):
        name = Path(it.source_path).stem
        items[it.item_id] = name
        gt[it.item_id] = io.read_mask(ecssd / "masks" / f"{name}.png")
        io.write_png(paths.preannotate / "masks" / f"{it.item_id}.png", erode(gt[it.item_id], 6))
    return AssistProject(root=root, paths=paths, items=items, gt=gt)


def keypoint(x_pct: float, y_pct: float, positive: bool = True, w: int = 400, h: int = 300) -> dict[str, Any]:
    """A smart keypoint region as Label Studio's editor sends it (percent coordinates)."""
    return {"original_width": w, "original_height": h, "image_rotation": 0, "id": "kp", "from_name": "assist_click",
            "to_name": "image", "type": "keypointlabels", "origin": "manual", "is_positive": positive,
            "value": {"x": x_pct, "y": y_pct, "width": 0.5, "keypointlabels": ["assist"]}}


def rectangle(x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {"original_width": 400, "original_height": 300, "type": "rectanglelabels", "from_name": "assist_box",
            "to_name": "image", "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                          "rectanglelabels": ["assist"]}}


def predict_body(item_id: str, regions: list[dict[str, Any]], task_id: int = 7,
                 extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
    from pipeline.annotation.labelstudio import LabelStudioParams, label_config
    from pipeline.annotation.labelstudio_ml import AssistParams

    config = label_config(LabelStudioParams(assist=AssistParams(enabled=True)))
    return {"tasks": [{"id": task_id, "data": {"item_id": item_id, "image": "/data/local-files/?d=x.jpg",
                                               **(extra_data or {})}}],
            "project": "3.1700000000", "label_config": config,
            "params": {"login": None, "password": None, "context": {"result": regions}}}


def pct(item_mask: np.ndarray, xy: tuple[int, int]) -> tuple[float, float]:
    """Pixel (x, y) -> percent of the image, at the pixel's centre."""
    h, w = item_mask.shape
    return (xy[0] + 0.5) * 100.0 / w, (xy[1] + 0.5) * 100.0 / h


