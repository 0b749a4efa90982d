"""Ingest through the real ``maskloop ingest`` command: every bad-input kind, duplicates, incrementality."""

from __future__ import annotations

import io as pyio
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import maskloop, write_params

PARAMS = """
paths:
  raw: raw
  manifest: out/ingest/manifest.parquet
  ingest: out/ingest
  reports: reports
  state: .state
runner:
  workers: 2
  max_failure_fraction: 0.6
  progress: false
ingest:
  max_pixels: 200000
"""


def _jpeg(arr: np.ndarray, **kw: object) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = pyio.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def raw_project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    raw = root / "raw"
    (raw / "sub dir").mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    good = _jpeg(photo)
    (raw / "good.jpg").write_bytes(good)
    (raw / "sub dir" / "copy of good.jpg").write_bytes(good)  # byte-identical duplicate
    (raw / "café ünï photo.jpg").write_bytes(_jpeg(photo[::-1].copy()))  # non-ASCII + spaces
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "truncated.jpg").write_bytes(good[: len(good) // 2])
    full_png = _png(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)))
    (raw / "truncated.png").write_bytes(full_png[: len(full_png) // 2])
    (raw / "text.jpg").write_text("hello, I am not a JPEG\n")
    (raw / "notes.txt").write_text("shoot notes")
    (raw / "huge.png").write_bytes(_png(Image.new("RGB", (600, 400))))  # 240,000 px > 200,000
    buf = pyio.BytesIO()
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(buf, "JPEG")
    (raw / "cmyk.jpg").write_bytes(buf.getvalue())
    (raw / "deep16.png").write_bytes(_png(Image.fromarray(np.full((20, 24), 40000, np.uint16))))
    (raw / "palette.png").write_bytes(_png(Image.fromarray(photo).convert("P")))
    (raw / "grey.png").write_bytes(_png(Image.fromarray(photo[:, :, 0].copy(), "L")))
    (raw / "rgba.png").write_bytes(_png(Image.fromarray(np.dstack([photo, photo[:, :, :1]]), "RGBA")))
    exif_img = Image.fromarray(photo)
    exif = exif_img.getexif()
    exif[0x0112] = 8
    buf = pyio.BytesIO()
    exif_img.save(buf, "JPEG", exif=exif)
    (raw / "rotated.jpg").write_bytes(buf.getvalue())
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_jpeg(photo[:, ::-1].copy()))
    (raw / "link_out.jpg").symlink_to(outside)
    (raw / "link_in.jpg").symlink_to(raw / "good.jpg")  # inside: allowed (same bytes -> same item)
    (raw / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored
    write_params(root, PARAMS)
    return root


def test_every_bad_input_kind_is_reported_and_nothing_else_lost(raw_project: Path) -> None:
    proc = maskloop("ingest", cwd=raw_project)
    df = pd.read_parquet(raw_project / "out/ingest/manifest.parquet")
    ok = df[df.status == "ok"].set_index("source_path")
    bad = df[df.status == "quarantined"].set_index("source_path")
    expect_bad = {
        "raw/empty.jpg": "empty file (0 bytes)",
        "raw/truncated.jpg": "truncated or corrupt",
        "raw/truncated.png": "truncated or corrupt",
        "raw/text.jpg": "not an image file",
        "raw/notes.txt": "unsupported extension '.txt'",
        "raw/huge.png": "600x400 = 240,000 pixels, above the limit of 200,000",
        "raw/link_out.jpg": "symlink pointing outside the raw folder",
    }
    assert sorted(bad.index) == sorted(expect_bad)
    for path, reason in expect_bad.items():
        assert reason in bad.loc[path, "error"], (path, bad.loc[path, "error"])
    for path in expect_bad:
        assert path in proc.stdout + proc.stderr  # each rejection is named in the log too
    expect_ok = {"raw/café ünï photo.jpg", "raw/cmyk.jpg", "raw/deep16.png", "raw/good.jpg", "raw/grey.png",
                 "raw/palette.png", "raw/rgba.png", "raw/rotated.jpg"}
    assert set(ok.index) == expect_ok
    dup = ok.loc["raw/good.jpg"]
    assert list(dup.source_paths) == ["raw/good.jpg", "raw/link_in.jpg", "raw/sub dir/copy of good.jpg"]
    assert (ok.loc["raw/rotated.jpg", ["width", "height", "orientation"]].tolist()) == [60, 80, 8]
    assert ok.loc["raw/cmyk.jpg", "mode"] == "CMYK" and ok.loc["raw/deep16.png", "mode"].startswith("I")
    assert all(len(i) == 16 for i in ok.item_id)
    import hashlib

    assert ok.loc["raw/good.jpg", "item_id"] == hashlib.sha256((raw_project / "raw/good.jpg").read_bytes()).hexdigest()[:16]
    q = pd.read_parquet(raw_project / "out/ingest/quarantine.parquet")
    assert len(q) == len(expect_bad)
    # all files are still where the user put them
    assert (raw_project / "raw/truncated.jpg").is_file() and (raw_project / "raw/notes.txt").is_file()


def test_bad_inputs_never_fail_the_stage(raw_project: Path) -> None:
    """Quarantined inputs are data: even with max_failure_fraction 0 ingest exits 0 and writes both tables."""
    params = raw_project / "params.yaml"
    params.write_text(params.read_text().replace("max_failure_fraction: 0.6", "max_failure_fraction: 0.0"))
    proc = maskloop("ingest", cwd=raw_project)
    assert "7 file(s) set aside" in proc.stdout + proc.stderr
    assert (raw_project / "out/ingest/manifest.parquet").is_file()
    assert len(pd.read_parquet(raw_project / "out/ingest/quarantine.parquet")) == 7


def test_rename_keeps_item_and_new_file_costs_one_item(raw_project: Path) -> None:
    maskloop("ingest", cwd=raw_project)
    before = pd.read_parquet(raw_project / "out/ingest/manifest.parquet")
    shutil.move(raw_project / "raw/grey.png", raw_project / "raw/grey renamed.png")
    rng = np.random.default_rng(5)
    (raw_project / "raw/new.jpg").write_bytes(_jpeg(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)))
    proc = maskloop("-v", "ingest", cwd=raw_project)
    assert "2 to compute" in proc.stdout + proc.stderr
    after = pd.read_parquet(raw_project / "out/ingest/manifest.parquet")
    b = before[before.status == "ok"].set_index("item_id")
    a = after[after.status == "ok"].set_index("item_id")
    assert set(a.index) - set(b.index) == {a.index[a.source_path == "raw/new.jpg"][0]}
    grey_id = b.index[b.source_path == "raw/grey.png"][0]
    assert a.loc[grey_id, "source_path"] == "raw/grey renamed.png"


def test_missing_raw_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    write_params(tmp_path, PARAMS)
    proc = maskloop("ingest", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "raw: raw image folder not found (paths.raw in params.yaml)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_params_are_named(tmp_path: Path) -> None:
    write_params(tmp_path, PARAMS + "  max_pixel: 5\n")
    proc = maskloop("ingest", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "unknown key(s) ['max_pixel']" in proc.stderr
    write_params(tmp_path, PARAMS.replace("max_pixels: 200000", "max_pixels: lots"))
    proc = maskloop("ingest", cwd=tmp_path, check=False)
    assert "ingest.max_pixels: expected an integer, got 'lots'" in proc.stderr
