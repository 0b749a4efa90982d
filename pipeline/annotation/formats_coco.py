"""COCO 1.0 instance exports (as CVAT writes them) -> one full-size mask per image.

A COCO file is ``{"images": [{id, file_name, width, height}], "annotations": [{id, image_id, category_id,
segmentation, iscrowd, ...}], "categories": [{id, name}]}``. ``segmentation`` is either a list of polygons
``[[x0, y0, x1, y1, ...], ...]`` (``iscrowd: 0``) or an RLE ``{"size": [h, w], "counts": [...] | "..."}``
(column-major, uncompressed list or compressed string; CVAT writes masks this way with ``iscrowd: 1``).
Every annotation whose category counts as foreground is rasterised with pycocotools at the image size and
the union per image is returned; crowd regions count too (CVAT marks its mask shapes as crowd).
The reader accepts the ``.json`` file or CVAT's export ``.zip`` (``annotations/instances_*.json``).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.annotation.files import ExportedAnnotation, FormatReader, ReadOptions
from pipeline.annotation.formats_cvat import check_labels, counted, is_item_id

log = logging.getLogger(__name__)


def _segmentation_rles(seg: Any, height: int, width: int, where: str) -> list[Any]:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, list)]
        if len(polys) != len(seg):
            raise ValueError(f"{where}: polygon segmentation must be a list of coordinate lists")
        good = []
        for p in polys:
            if len(p) < 6 or len(p) % 2 or not all(isinstance(v, int | float) for v in p):
                raise ValueError(f"{where}: a polygon needs an even number (>= 6) of numbers, got {len(p)}")
            good.append([float(v) for v in p])
        return list(mask_utils.frPyObjects(good, height, width)) if good else []
    if isinstance(seg, Mapping):
        size = seg.get("size")
        counts = seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or counts is None:
            raise ValueError(f"{where}: RLE segmentation needs 'size' [h, w] and 'counts'")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise ValueError(f"{where}: RLE size {size} differs from the image size [{height}, {width}]")
        if isinstance(counts, list):
            if not all(isinstance(v, int) and v >= 0 for v in counts):
                raise ValueError(f"{where}: RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise ValueError(f"{where}: RLE counts sum to {sum(counts)}, expected {height * width}")
            return [mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)]
        if isinstance(counts, str):
            return [{"size": [height, width], "counts": counts.encode("ascii")}]
        raise ValueError(f"{where}: RLE counts must be a list or a string")
    raise ValueError(f"{where}: unsupported segmentation of type {type(seg).__name__}")


def parse_coco(doc: Any, options: ReadOptions, source: str) -> Iterator[ExportedAnnotation]:
    """Annotations of a COCO instances document (see module docstring)."""
    from pycocotools import mask as mask_utils

    if not isinstance(doc, Mapping) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise ValueError(f"{source}: a COCO file is an object with 'images' and 'annotations' lists")
    cats: dict[int, str] = {}
    for c in doc.get("categories") or []:
        try:
            cats[int(c["id"])] = str(c["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad category {c!r}") from exc
    check_labels(options.labels, cats.values(), source)
    images: dict[int, tuple[str, int, int]] = {}
    for img in doc["images"]:
        try:
            iid, name = int(img["id"]), str(img.get("file_name") or "").strip()
            h, w = int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad image entry {str(img)[:200]} (needs id, width, height)") from exc
        if not name:
            raise ValueError(f"{source}: image {iid} has no file_name, so it cannot be matched to an item")
        if h <= 0 or w <= 0:
            raise ValueError(f"{source}: image {iid} ({name}) has invalid size {w}x{h}")
        images[iid] = (name, h, w)
    per_image: dict[int, list[Any]] = {}
    ann_ids: dict[int, list[str]] = {}
    for ann in doc["annotations"]:
        if not isinstance(ann, Mapping):
            raise ValueError(f"{source}: annotation entries must be objects, got {str(ann)[:80]}")
        aid = ann.get("id", "?")
        where = f"{source}: annotation {aid}"
        try:
            iid, cid = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: needs integer image_id and category_id") from exc
        if iid not in images:
            raise ValueError(f"{where}: refers to image {iid}, which is not in 'images'")
        if cid not in cats:
            raise ValueError(f"{where}: category {cid} is not in 'categories'")
        if not counted(cats[cid], options.labels):
            continue
        name, h, w = images[iid]
        rles = _segmentation_rles(ann.get("segmentation"), h, w, f"{where} (image {name})")
        per_image.setdefault(iid, []).extend(rles)
        ann_ids.setdefault(iid, []).append(str(aid))
    for iid in sorted(per_image):
        name, h, w = images[iid]
        rles = per_image[iid]
        if not rles:
            continue
        try:
            merged = mask_utils.merge(rles, intersect=False) if len(rles) > 1 else rles[0]
            mask = np.ascontiguousarray(mask_utils.decode(merged))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: image {iid} ({name}): cannot decode its segmentation ({exc})") from exc
        stem = Path(name).stem
        yield ExportedAnnotation(
            mask=(mask > 0).astype(np.uint8) * np.uint8(255), source=source,
            item_id=stem if is_item_id(stem) else "", image_name=Path(name).name,
            annotation_id=",".join(ann_ids[iid]),
        )


def _load(path: Path) -> list[tuple[str, Any]]:
    path = Path(path)
    blobs: list[tuple[str, bytes]] = []
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted(n for n in zf.namelist() if n.endswith(".json") and "instances" in Path(n).name)
                if not names:
                    raise ValueError(f"{path}: the archive holds no annotations/instances_*.json")
                blobs = [(f"{path}!{n}", zf.read(n)) for n in names]
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: not a valid zip archive ({exc})") from exc
    else:
        blobs = [(str(path), path.read_bytes())]
    docs = []
    for source, blob in blobs:
        try:
            docs.append((source, json.loads(blob)))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from exc
    return docs


def _read_coco(path: Path, options: ReadOptions) -> Iterator[ExportedAnnotation]:
    for source, doc in _load(path):
        yield from parse_coco(doc, options, source)


def _sniff_coco(path: Path) -> bool:
    path = Path(path)
    try:
        if path.is_file() and path.suffix.lower() == ".json":
            with path.open("rb") as fh:
                head = fh.read(65536)
            return head.lstrip().startswith(b"{") and b'"images"' in head and (
                b'"categories"' in head or b'"annotations"' in head)
        if path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(".json") and Path(n).name.startswith("instances") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return False


COCO = FormatReader(
    name="coco",
    description="COCO 1.0 instances JSON (polygons, RLE, iscrowd) or CVAT's COCO export .zip",
    sniff=_sniff_coco,
    read=_read_coco,
)
