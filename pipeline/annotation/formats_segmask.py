"""CVAT "Segmentation mask 1.1" exports (Pascal VOC style) -> one full-size mask per image.

Layout (a folder, or CVAT's export ``.zip`` of it)::

    labelmap.txt                      # "# label:color_rgb:parts:actions" then e.g. "background:0,0,0::"
    SegmentationClass/<name>.png      # RGB, each pixel painted with its label's colour
    SegmentationObject/<name>.png     # instance colours (not needed here)
    ImageSets/Segmentation/default.txt

Foreground is every pixel whose colour belongs to a counted label (``labels`` in params; empty = every label
except ``background``). A colour that is in no label of ``labelmap.txt`` makes the file an error (the PNG
does not belong to this label map). Images that are all background were not annotated and are skipped.
The export loses the image's extension: ``<name>`` is the frame name without it (``<item_id>`` for frames
pushed by maskloop).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.annotation.files import ExportedAnnotation, FormatReader, ReadOptions
from pipeline.annotation.formats_cvat import check_labels, counted, is_item_id
from pipeline.core import io

log = logging.getLogger(__name__)

CLASS_DIR = "SegmentationClass"
BACKGROUND = "background"


def parse_labelmap(text: str, source: str) -> dict[str, tuple[int, int, int]]:
    """``labelmap.txt`` -> {label: (r, g, b)} (``ValueError`` naming the line for malformed entries)."""
    out: dict[str, tuple[int, int, int]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < 2:
            raise ValueError(f"{source}:{lineno}: expected 'label:r,g,b:parts:actions', got {line!r}")
        try:
            rgb = tuple(int(v) for v in parts[1].split(","))
        except ValueError as exc:
            raise ValueError(f"{source}:{lineno}: colour {parts[1]!r} is not r,g,b") from exc
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"{source}:{lineno}: colour {parts[1]!r} is not r,g,b in 0..255")
        out[parts[0]] = (rgb[0], rgb[1], rgb[2])
    if not out:
        raise ValueError(f"{source}: no labels")
    return out


def mask_from_class_png(rgb: np.ndarray, labelmap: dict[str, tuple[int, int, int]], labels: tuple[str, ...],
                        where: str) -> np.ndarray:
    """``(H, W, 3)`` RGB class image -> ``(H, W)`` uint8 ``{0, 255}`` (foreground = a counted label's colour)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{where}: expected an 8-bit RGB class image, got {rgb.shape} {rgb.dtype}")
    rgb = rgb[:, :, :3]
    code = (rgb[:, :, 0].astype(np.uint32) << 16) | (rgb[:, :, 1].astype(np.uint32) << 8) | rgb[:, :, 2]
    colours = {(r << 16) | (g << 8) | b: name for name, (r, g, b) in labelmap.items()}
    present = np.unique(code)
    unknown = [int(c) for c in present if int(c) not in colours]
    if unknown:
        shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in unknown[:5])
        raise ValueError(f"{where}: {len(unknown)} colour(s) not in labelmap.txt: {shown}")
    fg_codes = [c for c, name in colours.items()
                if (counted(name, labels) if labels else name != BACKGROUND)]
    fg = np.isin(code, np.array(fg_codes, dtype=np.uint32))
    return fg.astype(np.uint8) * np.uint8(255)


def _entries(path: Path) -> tuple[str, dict[str, bytes] | None, Path | None]:
    """(labelmap text, {png name: bytes} for zips | None, folder for folders | None)."""
    path = Path(path)
    if path.is_dir():
        lm = path / "labelmap.txt"
        if not lm.is_file():
            raise ValueError(f"{path}: no labelmap.txt (not a Segmentation mask 1.1 export)")
        return lm.read_text(encoding="utf-8"), None, path
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            lms = sorted((n for n in names if PurePosixPath(n).name == "labelmap.txt"), key=len)
            if not lms:
                raise ValueError(f"{path}: the archive holds no labelmap.txt")
            root = str(PurePosixPath(lms[0]).parent)
            prefix = "" if root == "." else root + "/"
            pngs = {n[len(prefix) + len(CLASS_DIR) + 1:]: zf.read(n) for n in sorted(names)
                    if n.startswith(f"{prefix}{CLASS_DIR}/") and n.lower().endswith(".png")}
            return zf.read(lms[0]).decode("utf-8"), pngs, None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a valid zip archive ({exc})") from exc


def _read_segmask(path: Path, options: ReadOptions) -> Iterator[ExportedAnnotation]:
    path = Path(path)
    text, pngs, folder = _entries(path)
    labelmap = parse_labelmap(text, f"{path}/labelmap.txt")
    check_labels(options.labels, labelmap, str(path))
    if folder is not None:
        class_dir = folder / CLASS_DIR
        if not class_dir.is_dir():
            raise ValueError(f"{folder}: no {CLASS_DIR}/ folder")
        files = sorted(class_dir.rglob("*.png"))
        items: list[tuple[str, bytes | Path]] = [(p.relative_to(class_dir).as_posix(), p) for p in files]
    else:
        items = list((pngs or {}).items())
    for rel, blob in items:
        where = f"{path}: {CLASS_DIR}/{rel}"
        try:
            data = blob if isinstance(blob, bytes) else blob.read_bytes()
            rgb = io.decode_image_bytes(data)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{where}: cannot decode the PNG ({exc})") from exc
        mask = mask_from_class_png(rgb, labelmap, options.labels, where)
        if not mask.any():
            continue
        stem = PurePosixPath(rel).with_suffix("").as_posix()
        name = PurePosixPath(stem).name
        yield ExportedAnnotation(mask=mask, source=str(path), item_id=name if is_item_id(name) else "",
                                 image_name=name, annotation_id=stem)


def _sniff_segmask(path: Path) -> bool:
    path = Path(path)
    try:
        if path.is_dir():
            return (path / "labelmap.txt").is_file() and (path / CLASS_DIR).is_dir()
        if path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                return any(PurePosixPath(n).name == "labelmap.txt" for n in names) and any(
                    f"{CLASS_DIR}/" in n for n in names)
    except (OSError, zipfile.BadZipFile):
        return False
    return False


SEGMASK = FormatReader(
    name="cvat-segmask",
    description="Segmentation mask 1.1 (labelmap.txt + SegmentationClass/*.png; a folder or the export .zip)",
    sniff=_sniff_segmask,
    read=_read_segmask,
)
