"""Full validation of an image file with bounded memory (what ingest runs on every raw file).

:func:`verify_image` proves a file decodes completely, without keeping a full-size copy of its pixels:

- **PNG** (about 1 MiB, streamed): the CRC-32 of IHDR, PLTE and IDAT (Pillow skips IDAT's, libpng does not; like
  libpng, a bad checksum on IEND or an ancillary chunk is not fatal), then the image data is inflated in 1 MiB
  pieces: the zlib stream must end exactly at the size the header implies and every row's filter byte must be
  0..4 (what libpng checks while decoding). Agrees with libpng on random damage (tests/harden).
- **JPEG** (``4 B x pixels / 64``): decoded by libjpeg at 1/8 scale; DCT scaling still reads every entropy-coded
  block, so truncation and corrupt data are caught.
- **other formats** (``<= 4 B x pixels``): decoded in full by Pillow (TIFF, WebP, BMP...).

So one ingest worker peaks at its baseline plus at most **4 bytes per pixel** of the largest non-PNG,
non-JPEG file (4 MB per megapixel; ``4 x ingest.max_pixels`` bytes in the worst case), and the stage at the
parent's baseline plus ``runner.workers`` times that (docs/limits.md; checked by tests/harden/test_ingest_memory.py).
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from pipeline.core.io import DEFAULT_MAX_PIXELS, ImageError, ImageInfo, _info, _open

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PIECE = 1 << 20
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def verify_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> ImageInfo:
    """Check that ``path`` is a complete, uncorrupted image within the size limits; return its header info.

    Raises :class:`~pipeline.core.io.ImageError` (with a ``code``) naming the file: ``empty``, ``unreadable``,
    ``not_an_image``, ``too_large``, ``too_small`` (shorter side below ``min_side``) or ``corrupt`` (truncated,
    bad checksum, undecodable data). Memory stays bounded as the module docstring states.
    """
    path = Path(path)
    with _open(path) as img:
        is_png = img.format == "PNG"
        # a PNG's orientation comes from the chunk walk below (Pillow would decode the whole image to find eXIf)
        info = _info(path, img, max_pixels, min_side, orientation=1 if is_png else None)
        if not is_png:
            try:
                if info.format in ("JPEG", "MPO"):
                    w, h = img.size
                    img.draft(None, (math.ceil(w / 8), math.ceil(h / 8)))
                img.load()
            except (OSError, ValueError, SyntaxError, struct.error) as exc:
                raise ImageError(path, f"cannot decode image data ({exc}); the file is probably truncated or corrupt",
                                 "corrupt") from exc
    if is_png:
        orientation = exif_orientation(verify_png(path))
        if orientation != 1:
            swap = orientation in (5, 6, 7, 8)
            info = dataclasses.replace(info, orientation=orientation, width=info.height if swap else info.width,
                                       height=info.width if swap else info.height)
    return info


def exif_orientation(exif: bytes) -> int:
    """The EXIF orientation tag (1..8) of a raw EXIF block (1 when absent or malformed)."""
    if not exif:
        return 1
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        value = parsed.get(0x0112, 1)
    except Exception:  # malformed EXIF must not make a good image unusable (as pipeline.core.io does)
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _row_lengths(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> list[tuple[int, int]]:
    """(bytes per filtered row including the filter byte, number of rows) for each pass of the image data."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    out = []
    for x0, y0, dx, dy in passes:
        pw = (width - x0 + dx - 1) // dx if width > x0 else 0
        ph = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pw and ph:
            out.append((1 + (pw * bits_per_pixel + 7) // 8, ph))
    return out


class _ScanlineChecker:
    """Consumes inflated PNG image data piece by piece; checks sizes and filter bytes."""

    def __init__(self, rows: list[tuple[int, int]]) -> None:
        self.rows = rows
        self.expected = sum(length * n for length, n in rows)
        self.seen = 0
        # absolute offsets where each pass starts
        self.starts = np.cumsum([0] + [length * n for length, n in rows])

    def feed(self, data: bytes) -> str:
        """An explanation when ``data`` (the next piece) breaks the layout, else ""."""
        if not data:
            return ""
        start, end = self.seen, self.seen + len(data)
        self.seen = end
        if end > self.expected:
            return f"image data is longer than {self.expected:,} bytes for this size"
        buf = np.frombuffer(data, dtype=np.uint8)
        for i, (length, _n) in enumerate(self.rows):
            p0, p1 = int(self.starts[i]), int(self.starts[i + 1])
            lo, hi = max(start, p0), min(end, p1)
            if lo >= hi:
                continue
            first = p0 + ((lo - p0 + length - 1) // length) * length  # first filter byte at or after lo
            if first >= hi:
                continue
            filters = buf[first - start : hi - start : length]
            if filters.size and int(filters.max()) > 4:
                return f"invalid row filter type {int(filters.max())} (image data corrupt)"
        return ""


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    return data if len(data) == n else b""


def verify_png(path: Path) -> bytes:
    """Walk the chunks of a PNG file: CRC-32 of the critical chunks, a complete zlib stream of exactly the right
    size with valid row filters, and an IEND chunk. Raises :class:`~pipeline.core.io.ImageError` (``corrupt``) naming
    the file and the first problem; returns the eXIf chunk's payload (b"" when none or over 1 MiB). Memory: about
    1 MiB whatever the image size."""
    path = Path(path)

    def bad(reason: str) -> ImageError:
        return ImageError(path, f"bad PNG data ({reason}); the file is truncated or corrupt", "corrupt")

    with open(path, "rb") as fh:
        if fh.read(8) != PNG_SIGNATURE:
            raise bad("missing PNG signature")
        inflater = zlib.decompressobj()
        checker: _ScanlineChecker | None = None
        exif = exif_buf = b""
        index = 0
        while True:
            offset = fh.tell()
            head = _read_exact(fh, 8)
            if not head:
                raise bad(f"file ends at byte {offset:,} before the IEND chunk (truncated)")
            length, ctype = struct.unpack(">I4s", head)
            name = ctype.decode("latin-1")
            if length > 0x7FFFFFFF or not ctype.isalpha():
                raise bad(f"chunk #{index} at byte {offset:,} has an invalid header")
            crc = zlib.crc32(ctype)
            remaining = length
            ihdr = b""
            keep_exif = ctype == b"eXIf" and length <= _PIECE
            exif_buf = b""
            while remaining:
                piece = fh.read(min(remaining, _PIECE))
                if not piece:
                    raise bad(f"chunk {name} at byte {offset:,} is cut short (truncated)")
                remaining -= len(piece)
                crc = zlib.crc32(piece, crc)
                if ctype == b"IHDR":
                    ihdr += piece
                elif keep_exif:
                    exif_buf += piece
                elif ctype == b"IDAT":
                    if checker is None:
                        raise bad("IDAT chunk before IHDR")
                    _inflate(inflater, piece, checker, bad)
            stored = _read_exact(fh, 4)
            if not stored:
                raise bad(f"chunk {name} at byte {offset:,} is cut short (truncated)")
            # like libpng: a bad checksum on a chunk that holds pixels or their meaning is fatal; on IEND and
            # ancillary chunks (lower-case first letter: text, gamma...) the image itself is intact
            if struct.unpack(">I", stored)[0] != crc and ctype in (b"IHDR", b"PLTE", b"IDAT"):
                raise bad(f"chunk {name} at byte {offset:,} fails its CRC-32 checksum")
            if ctype == b"IHDR":
                if index != 0 or length != 13:
                    raise bad("malformed IHDR chunk")
                width, height, depth, colour, _comp, _filt, interlace = struct.unpack(">IIBBBBB", ihdr)
                if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
                    raise bad(f"unsupported colour type {colour} / bit depth {depth}")
                checker = _ScanlineChecker(_row_lengths(width, height, _CHANNELS[colour] * depth, interlace == 1))
            elif keep_exif and struct.unpack(">I", stored)[0] == crc:
                exif = exif_buf
            elif ctype == b"IEND":
                break
            index += 1
    if checker is None:
        raise bad("no IHDR chunk")
    tail = inflater.flush()
    why = checker.feed(tail)
    if why:
        raise bad(why)
    if not inflater.eof:
        raise bad("the compressed image data stops before its end (truncated or missing IDAT chunks)")
    if checker.seen != checker.expected:
        raise bad(f"image data holds {checker.seen:,} bytes, {checker.expected:,} expected for this size")
    return exif


def _inflate(inflater: zlib._Decompress, data: bytes, checker: _ScanlineChecker,
             bad: Callable[[str], ImageError]) -> None:
    while data:
        if inflater.eof:
            raise bad("data after the end of the compressed image stream")
        try:
            out = inflater.decompress(data, _PIECE)
        except zlib.error as exc:
            raise bad(f"compressed image data is corrupt ({exc})") from exc
        why = checker.feed(out)
        if why:
            raise bad(why)
        data = inflater.unconsumed_tail
