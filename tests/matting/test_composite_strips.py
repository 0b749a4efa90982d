"""Composite strips: the composite stage's one image strip + one alpha strip per item, and the one read path
(:func:`pipeline.matting.composite.read_composite`, :func:`pipeline.core.io.read_strip_tile`) with its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.runner import FileInput, WorkItem
from pipeline.matting.composite import (
    LINEAGE_COLUMNS,
    CompositeParams,
    CompositeRef,
    compose,
    composite_refs,
    draw_transform,
    item_rng,
    load_background,
    read_composite,
    strip_paths,
)
from pipeline.stages.composite import process

POOL = ["procedural:0", "procedural:1", "procedural:2"]


def _item(tmp_path: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray, WorkItem]:
    """A random foreground and a soft-edged alpha of ``h x w`` written as the matte stage would."""
    rng = np.random.default_rng(h * 1000 + w)
    fg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    alpha[h // 4 - 1, w // 4: 3 * w // 4] = 97
    io.write_png(tmp_path / "fg.png", fg)
    io.write_png(tmp_path / "alpha.png", alpha)
    work = WorkItem(key="it9", inputs={"foreground": FileInput(tmp_path / "fg.png"),
                                       "alpha": FileInput(tmp_path / "alpha.png")},
                    data={"pool": POOL, "folder": str(tmp_path)})
    return fg, alpha, work


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        io.write_bytes(root / rel, data)


@pytest.mark.parametrize(("per_item", "h", "w"), [(1, 24, 32), (4, 24, 32), (4, 23, 31), (3, 1, 7), (4, 17, 1)])
def test_strips_round_trip_each_composite_exactly(tmp_path: Path, per_item: int, h: int, w: int) -> None:
    fg, alpha, work = _item(tmp_path, h, w)
    params = CompositeParams(per_item=per_item, procedural=3, procedural_size=(40, 30), harmonize_prob=0.5,
                             shadow_prob=0.5, shadow_blur_px=1, shadow_offset_px=1)
    result = process(work, params, None)
    root = tmp_path / "composite"
    _write(root, dict(result.files))
    assert sorted(result.files) == ["alpha_strips/it9.png", "image_strips/it9.png"]
    assert io.read_gray(root / "alpha_strips/it9.png").shape == (per_item * h, w)  # stacked top to bottom
    lineage = pd.DataFrame(result.record["composites"], columns=list(LINEAGE_COLUMNS))
    refs = composite_refs(lineage)
    assert sorted(refs) == [f"it9_{k:02d}" for k in range(per_item)]
    for k in range(per_item):
        # the reference: composite k made on its own, as the stage made it before strips (one file per composite)
        rng = item_rng(params.seed, "it9", k)
        name = POOL[int(rng.integers(len(POOL)))]
        t = draw_transform(rng, alpha.shape, params)
        comp, _h, _s = compose(fg, alpha, load_background(name, tmp_path, params), t, params, rng)
        image, calpha = read_composite(root, refs[f"it9_{k:02d}"])
        assert image.dtype == np.uint8 and image.shape == (h, w, 3) and calpha.shape == (h, w)
        assert np.array_equal(image, comp.image) and np.array_equal(calpha, comp.alpha), k
        # byte-identical PNG to the former per-composite file: export re-encodes exactly these pixels
        assert io.encode_png(image) == io.encode_png(comp.image)


def test_read_strip_tile_without_opencv_limits_reads_the_same_pixels(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    strip = rng.integers(0, 256, (4 * 5, 7, 3), dtype=np.uint8)
    io.write_png(tmp_path / "s.png", strip)
    fast = [io.read_strip_tile(tmp_path / "s.png", k, 4).copy() for k in range(4)]
    io.write_png(tmp_path / "t.png", strip)
    monkeypatch.setattr(io, "CV2_MAX_PIXELS", 10)  # a strip beyond OpenCV's limits goes through Pillow
    slow = [io.read_strip_tile(tmp_path / "t.png", k, 4) for k in range(4)]
    for k in range(4):
        assert np.array_equal(fast[k], strip[k * 5:(k + 1) * 5]) and np.array_equal(slow[k], fast[k])


def test_a_rewritten_strip_is_read_again_not_from_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    io.write_png(path, np.zeros((4, 3), np.uint8))
    assert io.read_strip_tile(path, 1, 2).max() == 0
    io.write_png(path, np.full((4, 3), 9, np.uint8))  # atomic replace: a new inode
    assert io.read_strip_tile(path, 1, 2).max() == 9
    with pytest.raises(ValueError, match="read-only"):
        io.read_strip_tile(path, 0, 2)[0, 0] = 1  # the cached strip cannot be changed through a tile


def _project(tmp_path: Path, count: int = 2, h: int = 6, w: int = 5) -> tuple[Path, CompositeRef]:
    root = tmp_path / "composite"
    image_strip, alpha_strip = strip_paths(root, "a1")
    io.write_png(image_strip, np.zeros((count * h, w, 3), np.uint8))
    io.write_png(alpha_strip, np.zeros((count * h, w), np.uint8))
    return root, CompositeRef("a1_01", "a1", 1, count)


def test_read_composite_errors_name_the_file_and_the_composite(tmp_path: Path) -> None:
    root, ref = _project(tmp_path)
    image_strip, alpha_strip = strip_paths(root, "a1")
    read_composite(root, ref)  # fine as written
    # missing
    alpha_strip.unlink()
    with pytest.raises(io.ImageError, match=r"alpha_strips/a1\.png: composite a1_01 \(tile 1 of 2\): strip file not found"):
        read_composite(root, ref)
    # corrupt: not a PNG at all, then a truncated PNG, then empty
    alpha_strip.write_bytes(b"garbage bytes, not a png file at all")
    with pytest.raises(io.ImageError, match=r"alpha_strips/a1\.png: composite a1_01 .*not a PNG"):
        read_composite(root, ref)
    good = io.encode_png(np.full((12, 5), 7, np.uint8))
    io.write_bytes(alpha_strip, good[: len(good) // 2])
    with pytest.raises(io.ImageError, match=r"alpha_strips/a1\.png: composite a1_01 .*truncated or corrupt"):
        read_composite(root, ref)
    io.write_bytes(alpha_strip, b"")
    with pytest.raises(io.ImageError, match=r"a1_01 .*empty file"):
        read_composite(root, ref)
    # a strip that is not `count` tiles of equal height
    io.write_png(alpha_strip, np.zeros((13, 5), np.uint8))
    with pytest.raises(io.ImageError, match=r"alpha_strips/a1\.png: composite a1_01 .*5x13, not 2 tiles"):
        read_composite(root, ref)
    # image and alpha tiles of different sizes; an alpha strip in colour; an image strip in grey
    io.write_png(alpha_strip, np.zeros((12, 4), np.uint8))
    with pytest.raises(io.ImageError, match=r"a1_01 .*alpha tile is 4x6, image tile 5x6"):
        read_composite(root, ref)
    io.write_png(alpha_strip, np.zeros((12, 5, 3), np.uint8) + np.array([1, 2, 3], np.uint8))
    with pytest.raises(io.ImageError, match=r"alpha_strips/a1\.png: composite a1_01 .*expected grey uint8"):
        read_composite(root, ref)
    io.write_png(image_strip, np.zeros((12, 5), np.uint8))
    with pytest.raises(io.ImageError, match=r"image_strips/a1\.png: composite a1_01 .*expected RGB uint8"):
        read_composite(root, ref)
    with pytest.raises(io.ImageError, match="tile 2 is outside the strip's 2 tiles"):
        io.read_strip_tile(image_strip, 2, 2)
    with pytest.raises(ValueError, match=r"composite x_05: tile 5 outside 0\.\.3"):
        CompositeRef("x_05", "x", 5, 4)


def test_composite_refs_need_tiles_zero_to_n(tmp_path: Path) -> None:
    rows = [{"composite_id": f"b_{k:02d}", "item_id": "b", "tile": k} for k in range(3)]
    rows += [{"composite_id": "a_00", "item_id": "a", "tile": 0}]
    refs = composite_refs(pd.DataFrame(rows))
    assert refs["b_02"] == CompositeRef("b_02", "b", 2, 3) and refs["a_00"] == CompositeRef("a_00", "a", 0, 1)
    with pytest.raises(UserError, match=r"lin\.parquet: lineage lacks columns \['tile'\].*dvc repro composite"):
        composite_refs(pd.DataFrame(rows).drop(columns=["tile"]), "lin.parquet")
    rows[1]["tile"] = 5
    with pytest.raises(UserError, match=r"item b: composite tiles \[0, 2, 5\] are not 0\.\.2"):
        composite_refs(pd.DataFrame(rows))
