"""pipeline.core.io: normalisation policy, pixel limit, errors that name the file, atomic writes."""

from __future__ import annotations

import io as pyio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core import io


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def test_rgb_png_roundtrip_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    io.write_png(tmp_path / "a.png", arr)
    out = io.read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    assert np.array_equal(out, arr)


def test_greyscale_is_replicated(tmp_path: Path) -> None:
    grey = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    p = _save(Image.fromarray(grey, "L"), tmp_path / "g.png")
    out, info = io.load_image(p)
    assert info.mode == "L"
    assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 1], grey) and np.array_equal(out[:, :, 2], grey)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr16 = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    p = tmp_path / "d.png"
    p.write_bytes(io.encode_png(arr16))
    out, info = io.load_image(p)
    assert info.mode.startswith("I")
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]


def test_palette_png(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (200, 10, 10)
    rgb[2:] = (10, 10, 200)
    p = _save(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), tmp_path / "p.png")
    out, info = io.load_image(p)
    assert info.mode == "P"
    assert tuple(out[0, 0]) == (200, 10, 10) and tuple(out[3, 3]) == (10, 10, 200)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white -> mid grey
    p = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    out = io.read_image(p)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[1, 0])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    p = _save(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    out, info = io.load_image(p)
    assert info.mode == "CMYK" and out.shape == (8, 16, 3)
    r, g, b = (int(v) for v in out[4, 8])
    assert r > 200 and g < 60 and b < 60  # cyan/magenta/yellow 0/255/255 is red


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    # Stored landscape 40x20 with a red block at the stored top-left; orientation 6 = rotate 90° CW to display.
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:6, :6] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    p = _save(img, tmp_path / "r.jpg", exif=exif, quality=95)
    out, info = io.load_image(p)
    assert info.orientation == 6 and (info.width, info.height) == (20, 40)
    assert out.shape == (40, 20, 3)
    assert out[2, 17, 0] > 200 and out[2, 17, 1] < 80  # red now at top-right
    assert out[2, 2, 1] > 200  # top-left is white
    assert io.probe_image(p) == info


def test_pixel_limit_refused_before_decoding(tmp_path: Path) -> None:
    p = _save(Image.new("RGB", (400, 300)), tmp_path / "big.png")
    with pytest.raises(io.ImageError, match=r"big\.png: image is 400x300 = 120,000 pixels, above the limit of 100,000"):
        io.read_image(p, max_pixels=100_000)


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image\n" * 10, "not an image file"),
    ],
)
def test_unusable_files_name_the_file(tmp_path: Path, name: str, payload: bytes, message: str) -> None:
    p = tmp_path / name
    p.write_bytes(payload)
    with pytest.raises(io.ImageError, match=message) as exc:
        io.read_image(p)
    assert name in str(exc.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_caught(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(1)
    buf = pyio.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.ImageError, match="truncated or corrupt") as exc:
        io.read_image(p)
    assert p.name in str(exc.value)


def test_read_mask_validates_values_and_size(tmp_path: Path) -> None:
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 2:4] = 255
    io.write_png(tmp_path / "m.png", m)
    assert np.array_equal(io.read_mask(tmp_path / "m.png", shape=(5, 6)), m)
    with pytest.raises(io.ImageError, match="expected 7x5"):
        io.read_mask(tmp_path / "m.png", shape=(5, 7))
    m[0, 0] = 17
    io.write_png(tmp_path / "bad.png", m)
    with pytest.raises(io.ImageError, match="not binary: 1 pixels"):
        io.read_mask(tmp_path / "bad.png")
    assert io.read_gray(tmp_path / "bad.png")[0, 0] == 17


def test_read_trimap_accepts_palette_and_rejects_other_values(tmp_path: Path) -> None:
    t = np.array([[0, 128, 255, 128]], np.uint8)
    img = Image.fromarray(t, "L").convert("P")
    img.save(tmp_path / "t.png")
    assert np.array_equal(io.read_trimap(tmp_path / "t.png"), t)
    io.write_png(tmp_path / "bad.png", np.array([[0, 127]], np.uint8))
    with pytest.raises(io.ImageError, match="outside"):
        io.read_trimap(tmp_path / "bad.png")


def test_alpha_reads_8_and_16_bit(tmp_path: Path) -> None:
    io.write_png(tmp_path / "a8.png", np.array([[0, 255, 51]], np.uint8))
    io.write_png(tmp_path / "a16.png", np.array([[0, 65535, 13107]], np.uint16))
    assert np.allclose(io.read_alpha(tmp_path / "a8.png"), [[0, 1, 0.2]])
    assert np.allclose(io.read_alpha(tmp_path / "a16.png"), [[0, 1, 0.2]])


def test_png_encoding_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert io.encode_png(arr) == io.encode_png(arr.copy())


def test_atomic_write_leaves_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    io.write_bytes(target, b"one")
    with pytest.raises(ValueError):
        io.write_png(target, np.zeros((2, 2), np.float64))  # invalid dtype fails before any write
    assert target.read_bytes() == b"one"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


def test_parquet_and_json_are_deterministic(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"item_id": ["b", "a"], "v": [1.5, 2.0]})
    io.write_parquet(tmp_path / "a.parquet", df)
    io.write_parquet(tmp_path / "b.parquet", df.copy())
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    io.write_json(tmp_path / "m.json", {"b": 1, "a": np.float32(0.5)})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 0.5,\n  "b": 1\n}\n'
    with pytest.raises(FileNotFoundError, match="table not found"):
        io.read_parquet(tmp_path / "missing.parquet")


def test_records_and_row_count_without_pandas(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"item_id": ["a", "b", "c"], "frame": [0, 1, 2], "score": [0.5, float("nan"), 1.0]})
    io.write_parquet(tmp_path / "t.parquet", df)
    rows = io.read_records(tmp_path / "t.parquet")
    assert [r["item_id"] for r in rows] == ["a", "b", "c"] and rows[2] == {"item_id": "c", "frame": 2, "score": 1.0}
    assert io.read_records(tmp_path / "t.parquet", columns=["frame"]) == [{"frame": 0}, {"frame": 1}, {"frame": 2}]
    assert io.count_rows(tmp_path / "t.parquet") == 3
    assert io.table_columns(tmp_path / "t.parquet") == ["item_id", "frame", "score"]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    for fn in (io.read_records, io.count_rows, io.table_columns):
        with pytest.raises(ValueError, match=r"bad\.parquet: cannot read Parquet table"):
            fn(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        io.read_records(tmp_path / "missing.parquet")
