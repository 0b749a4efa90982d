"""Hand-built PNG files for the ingest tests (streamed: a 100-megapixel file costs a few MB to write)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.image_check import _ADAM7, PNG_SIGNATURE


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def write_png_rows(path: Path, width: int, height: int, depth: int, colour: int, rows: Iterable[bytes],
                   interlace: int = 0) -> Path:
    """Write a PNG from already-filtered rows (each starts with its filter byte), compressed as it goes."""
    comp = zlib.compressobj(1)
    with open(path, "wb") as fh:
        fh.write(PNG_SIGNATURE)
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)))
        for row in rows:
            out = comp.compress(row)
            if out:
                fh.write(chunk(b"IDAT", out))
        fh.write(chunk(b"IDAT", comp.flush()))
        fh.write(chunk(b"IEND", b""))
    return path


def constant_png(path: Path, width: int, height: int, depth: int = 8, colour: int = 2, value: int = 0) -> Path:
    """A flat image of any size (colour 0 grey, 2 RGB, 6 RGBA) written row by row."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" + bytes([value]) * ((width * channels * depth + 7) // 8)
    return write_png_rows(path, width, height, depth, colour, (row for _ in range(height)))


def interlaced_grey_png(path: Path, pixels: list[list[int]]) -> Path:
    """An 8-bit grey Adam7-interlaced PNG of ``pixels`` (rows of 0..255), every row with filter 0."""
    height, width = len(pixels), len(pixels[0])
    rows = []
    for x0, y0, dx, dy in _ADAM7:
        for y in range(y0, height, dy):
            line = bytes(pixels[y][x] for x in range(x0, width, dx))
            if line:
                rows.append(b"\0" + line)
    return write_png_rows(path, width, height, 8, 0, rows, interlace=1)
