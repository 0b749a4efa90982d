"""Simulated clicks from a pre-annotation to a human correction (what evaluate reports per model version)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core import io
from pipeline.core.params import Paths
from pipeline.refine import build_refiner
from pipeline.refine.base import RefineItem, RefineParams
from pipeline.refine.effort import effort_clicks, simulated_noc

from .conftest import scene


def test_perfect_pre_annotation_costs_no_click() -> None:
    img, gt = scene()
    eng = build_refiner("grabcut", RefineParams(), Paths())
    e = simulated_noc(eng, RefineItem("s", Path("u"), pixels=img), gt, gt)
    assert (e.noc85, e.noc90, e.clicks, e.final_iou) == (0, 0, 0, 1.0)


def test_worse_pre_annotation_costs_more_clicks() -> None:
    img, gt = scene()
    eng = build_refiner("grabcut", RefineParams(), Paths())
    item = RefineItem("s", Path("u"), pixels=img)
    near = gt.copy()
    near[:, 100:] = False  # missed the right part of the object
    far = np.zeros_like(gt)  # missed everything
    a, b = simulated_noc(eng, item, near, gt), simulated_noc(eng, item, far, gt)
    assert 1 <= a.noc90 <= b.noc90 and a.final_iou >= 0.9
    with pytest.raises(ValueError, match="item s: pre-annotation is"):
        simulated_noc(eng, item, gt[:10], gt)


def test_effort_clicks_reads_the_pipeline_files(tmp_path: Path) -> None:
    import pandas as pd

    img, gt = scene()
    paths = Paths(manifest=tmp_path / "manifest.parquet", preannotate=tmp_path / "pre",
                  corrections=tmp_path / "corr")
    io.write_png(tmp_path / "a.png", img)
    io.write_png(paths.preannotate / "masks" / "aaa.png", (gt * 255).astype(np.uint8))
    fixed = gt.copy()
    fixed[:20] = False
    io.write_png(paths.corrections / "masks" / "aaa.png", (fixed * 255).astype(np.uint8))
    io.write_parquet(paths.manifest, pd.DataFrame([{
        "item_id": "aaa", "source_path": str(tmp_path / "a.png"), "source_paths": [str(tmp_path / "a.png")],
        "width": 160, "height": 120, "orientation": 1, "mode": "RGB", "bytes": 1, "status": "ok", "error": ""}]))
    out = effort_clicks(paths, ["aaa", "zzz"], RefineParams())
    assert set(out) == {"aaa"}  # zzz has no image in the manifest: left out, logged
    assert out["aaa"].noc90 >= 0
    assert effort_clicks(paths, ["aaa"], RefineParams(), max_items=0) == {}
