"""RGBA cutouts: straight colours + alpha at the matte's bit depth; compositing a decoded cutout equals the
composite stage's formula; export writes one per matted item."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.commands.materialize import materialize
from pipeline.core import io
from pipeline.dataset.cutout import CutoutError, cutout, decode_cutout, read_alpha_native
from pipeline.matting.composite import blend
from pipeline.stages import export
from pipeline.stages.matte import encode_alpha
from tests.loop.conftest import make_project


def soft(h: int = 40, w: int = 56, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random foreground colours, a soft float alpha (a blurred disc) and a random background."""
    rng = np.random.default_rng(seed)
    fg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (h / 3) ** 2).astype(np.float64)
    alpha = cv2.GaussianBlur(disc, (15, 15), 4)
    bg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return fg, alpha, bg


@pytest.mark.parametrize("bits", [8, 16])
def test_decoded_cutout_composites_like_the_composite_stage(tmp_path: Path, bits: int) -> None:
    fg, alpha, bg = soft()
    a = encode_alpha(alpha, bits)  # what the matte stage writes
    io.write_png(tmp_path / "alpha.png", a)
    data = io.encode_png(cutout(fg, read_alpha_native(tmp_path / "alpha.png")))
    rgb, a_cut = decode_cutout(data)
    assert a_cut.dtype == (np.uint16 if bits == 16 else np.uint8) and np.array_equal(a_cut, a)
    # straight, not premultiplied: the colours are the foreground's even where alpha is small
    colours = (rgb // 257).astype(np.uint8) if bits == 16 else rgb
    assert np.array_equal(colours, fg)
    assert 0 < int((a_cut > 0).sum()) < a_cut.size and (alpha < 0.5).any()
    # the composite stage reads alpha with io.read_gray (8 bit) and blends (a F + (255 - a) B + 127) // 255
    stage = blend(fg, bg, io.read_gray(tmp_path / "alpha.png"))
    a8 = np.rint(a_cut.astype(np.float64) / 257.0).astype(np.uint8) if bits == 16 else a_cut
    assert np.array_equal(blend(colours, bg, a8), stage)


def test_cutout_errors_name_the_problem() -> None:
    fg, alpha, _ = soft()
    with pytest.raises(CutoutError, match="alpha is 10x10 but the foreground is 56x40"):
        cutout(fg, np.zeros((10, 10), np.uint8))
    with pytest.raises(CutoutError, match="uint8 or uint16, got float64"):
        cutout(fg, alpha)
    with pytest.raises(CutoutError, match="foreground must be RGB uint8"):
        cutout(fg[..., 0], encode_alpha(alpha, 8))
    with pytest.raises(CutoutError, match="not an RGBA PNG"):
        decode_cutout(io.encode_png(fg))


def test_unreadable_alpha_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "a.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CutoutError, match=r"a\.png: not a decodable alpha image"):
        read_alpha_native(bad)


@pytest.mark.parametrize("bits", [8, 16])
def test_export_writes_cutouts_for_matted_items(tmp_path: Path, ecssd: Path, monkeypatch: pytest.MonkeyPatch,
                                                bits: int) -> None:
    monkeypatch.chdir(tmp_path)
    params = make_project(tmp_path, ecssd, 3)
    manifest = io.read_parquet(tmp_path / "data/ingest/manifest.parquet").sort_values("item_id")
    first = manifest.iloc[0]
    item = str(first["item_id"])
    image = io.read_image(Path(first["source_path"]))
    mask = io.read_mask(tmp_path / "data/curated/masks" / f"{item}.png")
    alpha = cv2.GaussianBlur(mask.astype(np.float64) / 255.0, (9, 9), 3)
    io.write_png(tmp_path / "data/matte/alpha" / f"{item}.png", encode_alpha(alpha, bits))
    io.write_png(tmp_path / "data/matte/foreground" / f"{item}.png", image)
    export.run(params)
    # cutouts are listed by reference (export.materialize: image, mask); `maskloop materialize` writes them
    assert not (tmp_path / "data/export/matting/cutout").exists()
    materialize(params, tmp_path / "full", ["cutout"])
    out = tmp_path / "full/matting/cutout"
    assert sorted(p.name for p in out.iterdir()) == [f"{item}.png"]  # only the matted item has one
    rgb, a = decode_cutout((out / f"{item}.png").read_bytes())
    assert a.dtype == (np.uint16 if bits == 16 else np.uint8)
    assert np.array_equal(a, encode_alpha(alpha, bits))
    assert np.array_equal((rgb // 257).astype(np.uint8) if bits == 16 else rgb, image)
    assert io.read_json(tmp_path / "data/export/dataset.json")["files"]["cutout"] == 1
