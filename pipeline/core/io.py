"""The one module that reads and writes images, masks, tables and JSON.

Conventions (every stage relies on them):

- **Images** come back as ``np.ndarray`` RGB ``uint8`` of shape ``(H, W, 3)``, upright.
- **Masks** are ``uint8`` ``(H, W)`` with values exactly ``{0, 255}`` (0 = background).
- **Soft masks / probabilities / alpha** are ``uint8`` ``(H, W)`` in ``0..255`` (16-bit alpha optional).
- **Trimaps** are ``uint8`` ``(H, W)`` with values exactly ``{0, 128, 255}``.
- **Tables** are Parquet (pandas + pyarrow); **metrics** are JSON with sorted keys.
- **Strips** are PNGs of equal-size tiles stacked top to bottom (the composite stage stores an item's
  composites as one image strip + one alpha strip); :func:`read_strip_tile` reads one tile back.

Image normalisation policy (:func:`read_image`):

=================  ==========================================================================
input              what you get
=================  ==========================================================================
EXIF orientation   pixels rotated/flipped upright (tag recorded as ``orientation``)
greyscale (L, 1)   replicated to three equal channels
16-bit (I;16, I)   scaled to 8 bit (``round(v / 257)``), then as greyscale
palette (P)        expanded through its palette; transparency composited over white
RGBA / LA          composited over white (transparent pixels carry no usable colour)
CMYK / YCbCr / LAB converted to RGB by Pillow's colour conversion
=================  ==========================================================================

Images larger than ``max_pixels`` are refused **before** decoding (decompression bombs).
Every write goes to a temporary file in the destination folder and is renamed into place,
so a killed process never leaves a half-written output.

OpenCV is imported by the functions that encode or decode, not at module import: commands that only touch
tables and JSON (``maskloop pull`` runs on every ``dvc repro``) start ~0.1 s faster.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own pixel limit (params) replaces Pillow's global one, which would warn or raise
# with a message that names no file.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
TMP_MARKER = ".tmp-"


class ImageError(ValueError):
    """An input file cannot be used as an image/mask; ``str()`` names the file and the problem.

    ``code`` is a short machine-readable reason (``empty``, ``unreadable``, ``not_an_image``, ``corrupt``,
    ``too_large``, ``too_small``, ``bad_content``): ingest counts quarantined files by it."""

    def __init__(self, path: Path | str, reason: str, code: str = "bad_content") -> None:
        self.path = str(path)
        self.reason = reason
        self.code = code
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` learns from a file header (sizes are after EXIF orientation)."""

    width: int
    height: int
    orientation: int
    mode: str
    format: str


# --------------------------------------------------------------------------- images


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF blocks must not make a good image unusable
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


@contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot read file: {exc.strerror or exc}", "unreadable") from exc
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError as exc:
        raise ImageError(path, "not an image file Pillow can identify (wrong extension or corrupt header)",
                         "not_an_image") from exc
    except OSError as exc:
        raise ImageError(path, f"cannot open image: {exc}", "corrupt") from exc
    try:
        yield img
    finally:
        img.close()


def probe_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> ImageInfo:
    """Read only the header of ``path``: size (after orientation), orientation tag, mode, format."""
    with _open(path) as img:
        return _info(path, img, max_pixels, min_side)


def _info(path: Path, img: Image.Image, max_pixels: int, min_side: int = 1, orientation: int | None = None) -> ImageInfo:
    """Header facts of ``img``; ``orientation`` given skips reading EXIF (for a PNG whose eXIf chunk may follow
    the image data, Pillow's ``getexif`` decodes the whole image to find it)."""
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(path, f"invalid image size {w}x{h}", "corrupt")
    if w * h > max_pixels:
        raise ImageError(
            path, f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} (ingest.max_pixels)",
            "too_large",
        )
    if min(w, h) < min_side:
        raise ImageError(path, f"image is {w}x{h}, below the minimum side of {min_side} px (ingest.min_side)",
                         "too_small")
    if orientation is None:
        orientation = _orientation(img)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ImageInfo(width=w, height=h, orientation=orientation, mode=img.mode, format=img.format or "")


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` fully into an upright RGB uint8 ``(H, W, 3)`` array, plus its :class:`ImageInfo`.

    Raises :class:`ImageError` naming the file for empty, truncated, unidentifiable or oversized files.
    """
    with _open(path) as img:
        info = _info(path, img, max_pixels)
        try:
            img.load()
            upright = ImageOps.exif_transpose(img) if info.orientation != 1 else img
            arr = np.asarray(_to_rgb(upright), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(path, f"cannot decode image data ({exc}); the file is probably truncated or corrupt",
                             "corrupt") from exc
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(path, f"decoded to unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr), info


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Upright RGB uint8 ``(H, W, 3)`` pixels of ``path`` (see the module policy)."""
    return load_image(path, max_pixels)[0]


# round(v / 257) for every 16-bit value: one byte a pixel instead of a float64 copy
_U16_TO_U8 = np.rint(np.arange(65536, dtype=np.float64) / 257.0).astype(np.uint8)


def _over_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # no full-size float64 copy (8 bytes a pixel): 16-bit values go through a lookup table
        arr = np.asarray(img)
        if mode == "F":
            scale = np.float32(255.0 if arr.max(initial=0) <= 1.0 else 1.0 / 257.0)
            ceiling = np.float32(1.0 if scale == 255.0 else 65535.0)
            grey = np.rint(np.clip(arr, 0, ceiling) * scale).astype(np.uint8)
        else:
            if arr.dtype != np.uint16:
                arr = np.clip(arr, 0, 65535).astype(np.uint16)
            grey = _U16_TO_U8[arr]
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _over_white(img)
    if mode == "P":
        if "transparency" in img.info:
            return _over_white(img)
        return img.convert("RGB")
    return img.convert("RGB")


# --------------------------------------------------------------------------- single-channel maps


def _decode_single(path: Path) -> np.ndarray:
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(path, "not a decodable image (corrupt or wrong format)")
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if not (np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2])):
            raise ImageError(path, f"expected a single-channel map, got {arr.shape[2]} channels with different values")
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr)


def read_gray(path: Path) -> np.ndarray:
    """A single-channel 8-bit map ``(H, W)`` uint8; 16-bit files are scaled to 8 bit.

    Files with three equal channels (common for mattes saved as RGB) are accepted as grey.
    """
    arr = _decode_single(path)
    if arr.dtype == np.uint16:
        arr = _U16_TO_U8[arr]
    elif arr.dtype != np.uint8:
        raise ImageError(path, f"unsupported sample type {arr.dtype}")
    return arr


def read_alpha(path: Path) -> np.ndarray:
    """Alpha matte as float32 ``(H, W)`` in ``[0, 1]``; reads 8- and 16-bit files exactly."""
    arr = _decode_single(path)
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 65535.0).astype(np.float32)
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) / 255.0).astype(np.float32)
    raise ImageError(path, f"unsupported sample type {arr.dtype}")


def read_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Binary mask ``(H, W)`` uint8 with values exactly ``{0, 255}``.

    Raises :class:`ImageError` when the file holds other values or (with ``shape``) the wrong size.
    Use :func:`read_gray` to inspect a mask that may not be binary.
    """
    arr = read_gray(path)
    if shape is not None and arr.shape != tuple(shape):
        raise ImageError(path, f"mask is {arr.shape[1]}x{arr.shape[0]}, expected {shape[1]}x{shape[0]}")
    bad = (arr != 0) & (arr != 255)
    if bad.any():
        raise ImageError(path, f"mask is not binary: {int(np.count_nonzero(bad))} pixels outside {{0, 255}}")
    return arr


def read_trimap(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Trimap ``(H, W)`` uint8 with values exactly ``{0, 128, 255}`` (palette files by grey value)."""
    arr = read_gray(path)
    if shape is not None and arr.shape != tuple(shape):
        raise ImageError(path, f"trimap is {arr.shape[1]}x{arr.shape[0]}, expected {shape[1]}x{shape[0]}")
    bad = (arr != 0) & (arr != 128) & (arr != 255)
    if bad.any():
        raise ImageError(path, f"trimap has {int(np.count_nonzero(bad))} pixels outside {{0, 128, 255}}")
    return arr


# --------------------------------------------------------------------------- encoding


def encode_png(arr: np.ndarray, compression: int = 3) -> bytes:
    """PNG bytes of a ``(H, W)`` grey (uint8/uint16) or ``(H, W, 3)`` RGB uint8 array (deterministic)."""
    import cv2

    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    elif arr.ndim != 2:
        raise ValueError(f"cannot encode array of shape {arr.shape} as PNG")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16 samples, got {arr.dtype}")
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError(f"PNG encoding failed for array {arr.shape} {arr.dtype}")
    return buf.tobytes()


def encode_jpeg(arr: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of an RGB uint8 ``(H, W, 3)`` array (deterministic for the same libjpeg)."""
    import cv2

    bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for array {arr.shape}")
    return buf.tobytes()


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Decode in-memory PNG/JPEG bytes: grey ``(H, W)`` or RGB ``(H, W, 3)``."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("bytes are not a decodable image")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return arr


# --------------------------------------------------------------------------- strips

# OpenCV refuses to decode more than 2**30 pixels or a side above 2**20 (CV_IO_MAX_IMAGE_*); a strip of many
# large composites may exceed that, so those are decoded with Pillow instead (PNG is lossless: same pixels).
CV2_MAX_PIXELS = 1 << 30
CV2_MAX_SIDE = 1 << 20
STRIP_CACHE_SIZE = 2
_strip_cache: OrderedDict[tuple[str, int, int, int], np.ndarray] = OrderedDict()
_strip_lock = threading.Lock()


def _png_size(path: Path, head: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk (the first 24 bytes)."""
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ImageError(path, "not a PNG file (strips are PNG)", "not_an_image")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _decode_strip(path: Path) -> np.ndarray:
    """All pixels of a strip PNG: grey ``(H, W)`` or RGB ``(H, W, 3)``, 8 or 16 bit (cached, see read_strip_tile)."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ImageError(path, "file not found", "unreadable") from exc
    except OSError as exc:
        raise ImageError(path, f"cannot read file: {exc.strerror or exc}", "unreadable") from exc
    if data.size == 0:
        raise ImageError(path, "empty file (0 bytes)", "empty")
    w, h = _png_size(path, data[:24].tobytes())
    if w * h <= CV2_MAX_PIXELS and max(w, h) <= CV2_MAX_SIDE:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageError(path, "cannot decode PNG data (truncated or corrupt)", "corrupt")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    else:
        import io as _bytes_io

        try:
            with Image.open(_bytes_io.BytesIO(data.tobytes())) as img:
                img.load()
                arr = np.asarray(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(path, f"cannot decode PNG data ({exc}); truncated or corrupt", "corrupt") from exc
    return np.ascontiguousarray(arr)


def read_strip_tile(path: Path, tile: int, count: int, what: str = "") -> np.ndarray:
    """Tile ``tile`` of ``count`` equal-size tiles stacked top to bottom in the PNG strip ``path``: a view of rows ``tile*H .. (tile+1)*H - 1`` with ``H = strip height / count``, same dtype and channels.

    ``what`` (e.g. ``"composite a_01"``) prefixes every error, which also names the file: missing, empty,
    corrupt, or a strip whose height is not ``count`` tiles. The last ``STRIP_CACHE_SIZE`` decoded strips are
    kept per process (keyed by path, inode, size and mtime: an atomic rewrite is a new key), so reading every
    tile of an item's image and alpha strips decodes each strip once. Treat the result as read-only."""
    path = Path(path)
    prefix = f"{what}: " if what else ""
    if not 0 <= tile < count:
        raise ImageError(path, f"{prefix}tile {tile} is outside the strip's {count} tiles")
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ImageError(path, f"{prefix}strip file not found", "unreadable") from exc
    except OSError as exc:
        raise ImageError(path, f"{prefix}cannot read strip: {exc.strerror or exc}", "unreadable") from exc
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    with _strip_lock:
        arr = _strip_cache.get(key)
        if arr is not None:
            _strip_cache.move_to_end(key)
    if arr is None:
        try:
            arr = _decode_strip(path)
        except ImageError as exc:
            raise ImageError(path, f"{prefix}{exc.reason}", exc.code) from exc
        arr.flags.writeable = False
        with _strip_lock:
            _strip_cache[key] = arr
            while len(_strip_cache) > STRIP_CACHE_SIZE:
                _strip_cache.popitem(last=False)
    height = arr.shape[0]
    if height % count:
        raise ImageError(path, f"{prefix}strip is {arr.shape[1]}x{height}, not {count} tiles of equal height")
    h = height // count
    return arr[tile * h:(tile + 1) * h]


# --------------------------------------------------------------------------- atomic writes


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status`` on Linux; elsewhere set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    The file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` minus the umask), not the
    ``0o600`` of the temporary file: teams share data folders."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARKER}", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """The same OS error, naming the destination ``path`` (ENOSPC from ``write`` names no file at all, and a
    failing ``mkstemp`` names its random temporary file)."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_png(path: Path, arr: np.ndarray) -> None:
    """Atomically write an image/mask/alpha array as PNG (see :func:`encode_png`)."""
    write_bytes(path, encode_png(arr))


def dumps_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, 2-space indent, trailing newline (stable for DVC hashes)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read JSON: {exc}") from exc


def write_parquet(path: Path, df: Any) -> None:
    """Atomically write a pandas DataFrame as Parquet (no index; deterministic bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes(path, sink.getvalue().to_pybytes())


def read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """Read a Parquet table into a pandas DataFrame; a clear error naming the file otherwise."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found (has the stage that writes it run?)")
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read Parquet table: {exc}") from exc


def read_records(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a Parquet table as plain dicts, read with pyarrow alone (no pandas import: for commands that run
    on every ``dvc repro`` and must start fast); a clear error naming the file otherwise."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found (has the stage that writes it run?)")
    try:
        # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports pandas
        rows: list[dict[str, Any]] = pq.ParquetFile(path).read(columns=columns).to_pylist()
    except Exception as exc:
        raise ValueError(f"{path}: cannot read Parquet table: {exc}") from exc
    return rows


def count_rows(path: Path) -> int:
    """Number of rows of a Parquet table, from its footer (the data is not read)."""
    return int(_footer(path).num_rows)


def table_columns(path: Path) -> list[str]:
    """Column names of a Parquet table, from its footer (the data is not read)."""
    return list(_footer(path).schema.to_arrow_schema().names)


def _footer(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: cannot read Parquet table: {exc}") from exc


def remove(path: Path) -> None:
    """Delete a file if it exists."""
    with suppress(FileNotFoundError):
        Path(path).unlink()


def is_temp_file(path: Path) -> bool:
    """True for leftovers of an interrupted atomic write."""
    return TMP_MARKER in Path(path).name and Path(path).name.startswith(".")
