"""Compositing equation, determinism, lineage and background errors (tiny synthetic data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.runner import FileInput, WorkItem
from pipeline.matting.composite import (
    CompositeParams,
    Transform,
    background_pool,
    blend,
    compose,
    cover,
    item_rng,
    place,
    procedural_background,
    trimap_from_alpha,
)
from pipeline.stages.composite import process


def test_blend_is_the_exact_compositing_equation() -> None:
    rng = np.random.default_rng(1)
    fg = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    out = blend(fg, bg, a)
    # reference in exact rational arithmetic, rounded half up
    af = a.astype(np.float64)[:, :, None] / 255.0
    ref = np.floor(af * fg + (1 - af) * bg + 0.5)
    assert np.array_equal(out, ref.astype(np.uint8))
    assert np.array_equal(blend(fg, bg, np.full((16, 16), 255, np.uint8)), fg)
    assert np.array_equal(blend(fg, bg, np.zeros((16, 16), np.uint8)), bg)


def test_blend_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        blend(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2, 3), np.uint8), np.zeros((2, 2), np.uint8))


def test_identity_placement_keeps_pixels_and_flip_mirrors() -> None:
    a = np.arange(20, dtype=np.uint8).reshape(4, 5)
    import cv2

    assert np.array_equal(place(a, Transform(1.0, 0, 0, False), cv2.INTER_NEAREST), a)
    assert np.array_equal(place(a, Transform(1.0, 0, 0, True), cv2.INTER_NEAREST), a[:, ::-1])
    shifted = place(a, Transform(1.0, 2, 1, False), cv2.INTER_NEAREST)
    assert np.array_equal(shifted[1:, 2:], a[:-1, :-2]) and shifted[0].sum() == 0


def test_compose_without_transform_equals_blend_over_covered_background() -> None:
    rng = np.random.default_rng(2)
    fg = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    a = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    bg = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    comp, harm, shadow = compose(fg, a, bg, Transform(1.0, 0, 0, False), CompositeParams(), rng)
    assert not harm and not shadow
    assert np.array_equal(comp.image, blend(fg, cover(bg, (20, 30)), a))
    assert np.array_equal(comp.alpha, a)
    assert np.array_equal(comp.mask, np.where(a >= 128, 255, 0))
    assert set(np.unique(comp.trimap)) <= {0, 128, 255}


def test_trimap_from_alpha() -> None:
    a = np.zeros((9, 9), np.uint8)
    a[3:6, 3:6] = 255
    a[4, 6] = 100
    tri = trimap_from_alpha(a, 0)
    assert tri[4, 6] == 128 and tri[4, 4] == 255 and tri[0, 0] == 0
    assert np.count_nonzero(trimap_from_alpha(a, 1) == 128) > 1


def test_cover_fills_the_canvas() -> None:
    bg = np.zeros((10, 40, 3), np.uint8)
    assert cover(bg, (30, 20)).shape == (30, 20, 3)


def test_procedural_backgrounds_are_deterministic_and_distinct() -> None:
    a = procedural_background(0, (64, 48), seed=3)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, procedural_background(0, (64, 48), seed=3))
    assert not np.array_equal(a, procedural_background(1, (64, 48), seed=3))
    assert not np.array_equal(a, procedural_background(0, (64, 48), seed=4))


def test_item_rng_depends_only_on_seed_item_and_index() -> None:
    assert item_rng(0, "ab", 1).random() == item_rng(0, "ab", 1).random()
    assert item_rng(0, "ab", 1).random() != item_rng(0, "ab", 2).random()
    assert item_rng(0, "ab", 1).random() != item_rng(1, "ab", 1).random()


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    fg = tmp_path / "fg.png"
    al = tmp_path / "alpha.png"
    io.write_png(fg, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    alpha = np.zeros((24, 32), np.uint8)
    alpha[6:18, 8:24] = 255
    alpha[5, 8:24] = 120
    io.write_png(al, alpha)
    return fg, al


def test_process_is_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    fg, al = _inputs(tmp_path)
    params = CompositeParams(per_item=3, procedural=2, procedural_size=(40, 30), harmonize_prob=0.5, shadow_prob=0.5)
    work = WorkItem(key="00aa", inputs={"foreground": FileInput(fg), "alpha": FileInput(al)},
                    data={"pool": ["procedural:0", "procedural:1"], "folder": str(tmp_path)})
    r1, r2 = process(work, params, None), process(work, params, None)
    assert dict(r1.files) == dict(r2.files) and r1.record == r2.record
    # one image strip + one alpha strip per item (mask and trimap are functions of the alpha, derived by export)
    assert sorted(r1.files) == ["alpha_strips/00aa.png", "image_strips/00aa.png"]
    rows = r1.record["composites"]
    assert [r["composite_id"] for r in rows] == ["00aa_00", "00aa_01", "00aa_02"]
    assert [r["tile"] for r in rows] == [0, 1, 2]
    assert all(r["item_id"] == "00aa" and r["seed"] == 0 for r in rows)
    other = process(work, CompositeParams(per_item=3, procedural=2, procedural_size=(40, 30), seed=9), None)
    assert dict(other.files) != dict(r1.files)


def test_unreadable_background_names_the_file(tmp_path: Path) -> None:
    fg, al = _inputs(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    work = WorkItem(key="00aa", inputs={"foreground": FileInput(fg), "alpha": FileInput(al)},
                    data={"pool": ["broken.jpg"], "folder": str(tmp_path)})
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        process(work, CompositeParams(per_item=1, procedural=0), None)


def test_empty_background_pool_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="background pool is empty"):
        background_pool(tmp_path, CompositeParams(procedural=0))
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert background_pool(tmp_path, CompositeParams(procedural=1)) == ["b.jpg", "procedural:0"]
