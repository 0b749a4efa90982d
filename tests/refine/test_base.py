"""The refinement interface: clicks, boxes, items, results, params, the registry (tiny hand-made inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.core.params import ParamsError, Paths, load_section
from pipeline.refine import REFINERS, refiner_class
from pipeline.refine.base import (
    Box,
    Click,
    RefineInputError,
    RefineItem,
    RefineParams,
    RefineResult,
    UnknownItem,
    check_clicks,
    check_mask,
    check_result,
    force_clicks,
    item_from_manifest,
)

REPO = Path(__file__).resolve().parents[2]


def test_click_is_frozen_and_int() -> None:
    c = Click(np.int64(3), 4.0, 1)  # type: ignore[arg-type]
    assert (c.x, c.y, c.positive) == (3, 4, True) and type(c.x) is int
    with pytest.raises(AttributeError):
        c.x = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Click(True, 1, True)


def test_check_clicks_names_item_and_click() -> None:
    check_clicks([Click(0, 0, True), Click(9, 4, False)], (5, 10), "abc")
    with pytest.raises(RefineInputError, match=r"item abc: click 1 at \(x=10, y=0\) lies outside the 10x5 image"):
        check_clicks([Click(0, 0, True), Click(10, 0, True)], (5, 10), "abc")
    with pytest.raises(RefineInputError, match="y=-1"):
        check_clicks([Click(0, -1, True)], (5, 10), "abc")
    assert issubclass(RefineInputError, UserError)


def test_check_mask() -> None:
    assert not check_mask(None, (2, 3)).any()
    m = check_mask(np.array([[0, 255, 1]], np.uint8), (1, 3))
    assert m.tolist() == [[False, True, True]]
    with pytest.raises(RefineInputError, match=r"item x: current mask is \(3, 1\), the image is \(1, 3\)"):
        check_mask(np.zeros((3, 1), np.uint8), (1, 3), "x")


def test_box() -> None:
    assert Box(-5, 2, 50, 4).clipped((10, 20)).as_tuple() == (0, 2, 20, 4)
    with pytest.raises(ValueError, match="empty"):
        Box(3, 0, 3, 5)
    with pytest.raises(RefineInputError, match="outside"):
        Box(30, 0, 40, 5).clipped((10, 20))


def test_result_validates() -> None:
    RefineResult(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        RefineResult(np.full((2, 2), 255, np.uint8), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        RefineResult(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RefineResult(np.zeros((2, 2), np.uint8), np.full((2, 2), 1.5, np.float32))


def test_force_clicks_later_wins_and_check_result() -> None:
    mask = np.zeros((9, 9), np.uint8)
    prob = np.zeros((9, 9), np.float32)
    clicks = [Click(4, 4, True), Click(5, 4, False)]
    force_clicks(mask, prob, clicks, 1)
    assert mask[4, 4] == 1 and mask[4, 5] == 0 and prob[4, 4] == 1.0 and prob[4, 5] == 0.0
    check_result(RefineResult(mask, prob), (9, 9), clicks, "t")
    mask[4, 5] = 1
    with pytest.raises(ValueError, match="ignored the negative click at"):
        check_result(RefineResult(mask, prob), (9, 9), clicks, "t")
    with pytest.raises(ValueError, match="returned a"):
        check_result(RefineResult(mask, prob), (9, 8), clicks, "t")


def test_item_reads_image_and_preannotation(tmp_path: Path) -> None:
    from pipeline.core import io

    img = np.zeros((6, 8, 3), np.uint8)
    io.write_png(tmp_path / "a.png", img)
    paths = Paths(preannotate=tmp_path / "pre")
    item = RefineItem("it1", tmp_path / "a.png", paths)
    assert item.load_image().shape == (6, 8, 3)
    assert item.preannotation() is None
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = 255
    io.write_png(tmp_path / "pre" / "masks" / "it1.png", m)
    pre = item.preannotation()
    assert pre is not None and pre.dtype == np.uint8 and int(pre.sum()) == 6 and int(pre.max()) == 1
    with pytest.raises(RefineInputError, match=r"item gone: image .*nope\.png"):
        RefineItem("gone", tmp_path / "nope.png").load_image()
    with pytest.raises(ValueError, match="RGB uint8"):
        RefineItem("x", tmp_path / "a.png", pixels=np.zeros((2, 2), np.uint8))


def test_item_from_manifest(tmp_path: Path) -> None:
    import pandas as pd

    from pipeline.core import io

    with pytest.raises(UnknownItem, match="no manifest"):
        item_from_manifest(Paths(manifest=tmp_path / "m.parquet"), "abc")
    df = pd.DataFrame([
        {"item_id": "abc", "source_path": "data/raw/a.jpg", "source_paths": ["data/raw/a.jpg"], "width": 4,
         "height": 3, "orientation": 1, "mode": "RGB", "bytes": 10, "status": "ok", "error": ""},
        {"item_id": "", "source_path": "data/raw/b.jpg", "source_paths": ["data/raw/b.jpg"], "width": 0,
         "height": 0, "orientation": 1, "mode": "", "bytes": 0, "status": "quarantined", "error": "bad"},
    ])
    io.write_parquet(tmp_path / "m.parquet", df)
    paths = Paths(manifest=tmp_path / "m.parquet")
    item = item_from_manifest(paths, "abc")
    assert item.image_path == Path("data/raw/a.jpg") and item.paths is paths
    with pytest.raises(UnknownItem, match="'zzz' is not an ok item"):
        item_from_manifest(paths, "zzz")


def test_params_section_and_registry(tmp_path: Path) -> None:
    p = load_section(REPO / "params.yaml", "refine", RefineParams)
    assert p.engine in REFINERS and set(REFINERS) == {"grabcut", "sam", "trained"}
    (tmp_path / "p.yaml").write_text("refine:\n  engine: magic\n")
    with pytest.raises(ParamsError, match="magic"):
        load_section(tmp_path / "p.yaml", "refine", RefineParams)
    (tmp_path / "p.yaml").write_text("refine:\n  grabcut:\n    band: 2.0\n")
    with pytest.raises(ParamsError, match="band"):
        load_section(tmp_path / "p.yaml", "refine", RefineParams)
    with pytest.raises(ValueError, match="unknown refine engine 'nope'"):
        refiner_class("nope")
    assert refiner_class("grabcut").__name__ == "GrabCutRefiner"
