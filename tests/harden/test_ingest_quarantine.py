"""Items 1-3 of issue 15: bad inputs are data (never a failed ingest), tiny images and PNGs with bad checksums
are quarantined at ingest.

Before: 4 bad files among 22 made ``maskloop ingest`` exit 1 with no manifest and no quarantine report; a 1x1 PNG
passed ingest and failed in preannotate; a PNG whose IDAT checksum is wrong passed (Pillow does not check it).
"""

from __future__ import annotations

import io as pyio
import json
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.image_check import verify_image, verify_png
from pipeline.core.io import ImageError
from tests.conftest import maskloop, write_params
from tests.harden.pngs import interlaced_grey_png

PARAMS = """
paths:
  raw: raw
  manifest: out/ingest/manifest.parquet
  ingest: out/ingest
  reports: reports
  state: .state
runner:
  workers: 2
  progress: false
"""


def _png(arr: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _bad_idat_crc(data: bytes) -> bytes:
    """``data`` (a PNG) with the CRC of its first IDAT chunk flipped: the pixels are intact, the checksum is not."""
    at = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[at : at + 4])[0]
    crc_at = at + 8 + length
    out = bytearray(data)
    out[crc_at] ^= 0xFF
    return bytes(out)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    raw = root / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(18):
        (raw / f"good{i:02d}.jpg").write_bytes(_jpeg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    full = _jpeg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (raw / "empty.jpg").write_bytes(b"")
    (raw / "text.jpg").write_text("not a JPEG\n")
    (raw / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (raw / "text.png").write_text("not a PNG either\n")
    write_params(root, PARAMS)
    return root


def test_bad_files_are_set_aside_and_ingest_succeeds(project: Path) -> None:
    """The issue's reproduction: 4 unreadable files among 22, default max_failure_fraction (0.1)."""
    proc = maskloop("ingest", cwd=project, check=False)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "4 file(s) set aside (1 corrupt, 1 empty, 2 not an image)" in log, log
    manifest = pd.read_parquet(project / "out/ingest/manifest.parquet")
    assert (manifest.status == "ok").sum() == 18 and (manifest.status == "quarantined").sum() == 4
    quarantine = pd.read_parquet(project / "out/ingest/quarantine.parquet")
    assert dict(zip(quarantine.source_path, quarantine.reason, strict=True)) == {
        "raw/empty.jpg": "empty", "raw/text.jpg": "not_an_image", "raw/text.png": "not_an_image",
        "raw/truncated.jpg": "corrupt",
    }
    report = json.loads((project / "reports/ingest.json").read_text())
    assert report["failed"] == 0 and report["quarantined"] == 4
    assert report["quarantine_reasons"] == {"corrupt": 1, "empty": 1, "not_an_image": 2}
    status = maskloop("status", cwd=project)
    assert "18 items from 18 files; 4 quarantined (1 corrupt, 1 empty, 2 not an image)" in status.stdout, status.stdout


def test_only_bad_files(project: Path) -> None:
    for p in (project / "raw").glob("good*"):
        p.unlink()
    proc = maskloop("ingest", cwd=project, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_parquet(project / "out/ingest/quarantine.parquet")) == 4


def test_tiny_images_are_refused_at_ingest(project: Path) -> None:
    raw = project / "raw"
    (raw / "dot.png").write_bytes(_png(np.zeros((1, 1, 3), np.uint8)))
    (raw / "strip.png").write_bytes(_png(np.zeros((15, 400, 3), np.uint8)))
    (raw / "small ok.png").write_bytes(_png(np.full((16, 16, 3), 7, np.uint8)))
    maskloop("ingest", cwd=project)
    quarantine = pd.read_parquet(project / "out/ingest/quarantine.parquet").set_index("source_path")
    assert quarantine.loc["raw/dot.png", "reason"] == "too_small"
    assert "1x1, below the minimum side of 16 px (ingest.min_side)" in quarantine.loc["raw/dot.png", "error"]
    assert quarantine.loc["raw/strip.png", "reason"] == "too_small"
    assert "raw/small ok.png" not in quarantine.index
    # the limit is a param
    write_params(project, PARAMS + "ingest:\n  min_side: 1\n")
    maskloop("ingest", cwd=project)
    quarantine = pd.read_parquet(project / "out/ingest/quarantine.parquet")
    assert "raw/dot.png" not in set(quarantine.source_path)


def test_png_with_a_bad_idat_checksum_is_quarantined(project: Path) -> None:
    rng = np.random.default_rng(2)
    good = _png(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    bad = _bad_idat_crc(good)
    with Image.open(pyio.BytesIO(bad)) as img:  # the premise: Pillow decodes it without complaint
        img.load()
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_UNCHANGED) is None  # libpng refuses it
    (project / "raw/bad crc.png").write_bytes(bad)
    maskloop("ingest", cwd=project)
    quarantine = pd.read_parquet(project / "out/ingest/quarantine.parquet").set_index("source_path")
    assert quarantine.loc["raw/bad crc.png", "reason"] == "corrupt"
    assert "chunk IDAT at byte 33 fails its CRC-32 checksum" in quarantine.loc["raw/bad crc.png", "error"]


def test_interlaced_png(tmp_path: Path) -> None:
    """Adam7 layout: a good interlaced file passes; a bad filter byte in pass 3 is caught (as libpng does)."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (21, 19)).tolist()
    path = interlaced_grey_png(tmp_path / "i.png", pixels)
    info = verify_image(path)
    assert (info.width, info.height) == (19, 21)
    decoded = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, np.array(pixels, np.uint8))
    # rebuild with one filter byte set to 7 (invalid): pass 3 starts after passes 1 and 2
    raw = bytearray(zlib.decompress(b"".join(_idat_payloads(path.read_bytes()))))
    p1 = 3 * (1 + 3)  # pass 1: ceil(19/8)=3 px wide, ceil(21/8)=3 rows
    p2 = 3 * (1 + 2)  # pass 2: x from 4 step 8 -> 2 px, rows from 0 step 8 -> 3
    raw[p1 + p2] = 7
    bad = tmp_path / "bad.png"
    data = path.read_bytes()
    head = data[: data.index(b"IDAT") - 4]
    from tests.harden.pngs import chunk

    bad.write_bytes(head + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
    assert cv2.imdecode(np.fromfile(bad, np.uint8), cv2.IMREAD_UNCHANGED) is None
    with pytest.raises(ImageError, match="invalid row filter type 7"):
        verify_png(bad)


def _idat_payloads(data: bytes) -> list[bytes]:
    out, pos = [], 8
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if ctype == b"IDAT":
            out.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return out


def test_png_check_agrees_with_libpng_on_random_damage(tmp_path: Path) -> None:
    """Single-bit flips anywhere after the signature: our verdict equals libpng's (OpenCV) for every file."""
    rng = np.random.default_rng(4)
    sources = [
        _png(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)),
        _png(rng.integers(0, 65535, (23, 31), dtype=np.uint16)),
        _png(rng.integers(0, 256, (23, 31, 4), dtype=np.uint8)),
        interlaced_grey_png(tmp_path / "i.png", rng.integers(0, 256, (23, 31)).tolist()).read_bytes(),
    ]
    pick = random.Random(5)
    path = tmp_path / "f.png"
    for data in sources:
        for _ in range(60):
            damaged = bytearray(data)
            at = pick.randrange(8, len(damaged))
            damaged[at] ^= 1 << pick.randrange(8)
            path.write_bytes(bytes(damaged))
            libpng_ok = cv2.imdecode(np.frombuffer(bytes(damaged), np.uint8), cv2.IMREAD_UNCHANGED) is not None
            try:
                verify_png(path)
                ours = True
            except ImageError:
                ours = False
            assert ours == libpng_ok, (at, ours, libpng_ok)


@pytest.mark.parametrize("where", ["before", "after"])
def test_png_orientation_without_decoding(tmp_path: Path, where: str) -> None:
    """The PNG path reads the eXIf chunk during its chunk walk (before or after the image data) and reports the
    same upright size and orientation as Pillow's full decode."""
    from pipeline.core.io import probe_image
    from tests.harden.pngs import chunk

    exif = Image.Exif()
    exif[0x0112] = 6
    block = exif.tobytes()
    data = _png(np.zeros((20, 30, 3), np.uint8))
    idat = data.index(b"IDAT") - 4
    iend = data.index(b"IEND") - 4
    at = idat if where == "before" else iend
    path = tmp_path / "o.png"
    path.write_bytes(data[:at] + chunk(b"eXIf", block) + data[at:])
    info = verify_image(path)
    assert (info.width, info.height, info.orientation) == (20, 30, 6)
    assert info == probe_image(path)
