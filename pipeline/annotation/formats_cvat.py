"""CVAT shapes and the "CVAT for images 1.1" XML export -> full-size masks.

All CVAT shape conversion lives here and is shared by the live ``cvat`` backend (``pull`` reads shapes
through the API) and the offline ``files`` backend (``CVAT_XML`` reads export files), so both give the
same masks:

- :func:`mask_from_shapes` rasterises a frame's region shapes at the original image size and returns the
  union of those whose label counts as foreground: ``mask`` shapes (CVAT RLE, decoded with
  :mod:`pipeline.annotation.cvat_codec`, holes and separate parts kept), ``polygon`` (filled, no holes),
  ``rectangle`` and ``ellipse``. Lines, points, skeletons and tags carry no area and are ignored.
- :data:`CVAT_XML` reads ``annotations.xml`` (or a CVAT export ``.zip`` holding it). Each ``<image>``
  with at least one counted region becomes one annotation; ``<mask rle="r0, r1, ..." left top width
  height>`` holds the runs over its ``width x height`` box; ``<polygon points="x0,y0;x1,y1;...">``;
  ``<box xtl ytl xbr ybr>``.

Frames are named ``<item_id>.<ext>`` by ``maskloop push`` (so a frame name identifies its item); exports of
tasks created by hand carry the original file names, which the files backend matches against the manifest.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.annotation import cvat_codec
from pipeline.annotation.files import ExportedAnnotation, FormatReader, ReadOptions

log = logging.getLogger(__name__)

REGION_TYPES = ("mask", "polygon", "rectangle", "ellipse")
"""Shape types that cover an area (CVAT API names; the XML calls a rectangle ``box``)."""
IGNORED_TYPES = ("polyline", "points", "skeleton", "cuboid", "tag")
_XML_TYPES = {"box": "rectangle", "polygon": "polygon", "mask": "mask", "ellipse": "ellipse"}


@dataclass(frozen=True)
class Shape:
    """One CVAT shape in API terms: ``type``, ``label`` name and ``points`` (see :mod:`cvat_codec` for masks;
    polygon ``[x0, y0, x1, y1, ...]``; rectangle ``[xtl, ytl, xbr, ybr]``; ellipse ``[cx, cy, rx_pt, ry_pt]``
    i.e. the centre and the right/top point as CVAT stores it), plus ``rotation`` in degrees."""

    type: str
    label: str
    points: tuple[float, ...]
    rotation: float = 0.0


def is_item_id(text: str) -> bool:
    """True for a 16-hex-digit maskloop item id."""
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def iso_utc(text: str | None) -> str:
    """An ISO-8601 timestamp as UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` ("" for empty/unparseable input)."""
    if not text:
        return ""
    try:
        dt = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        log.warning("unparseable timestamp %r ignored", text)
        return ""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decode_mask_clipped(points: Sequence[float], height: int, width: int, where: str) -> np.ndarray:
    """Decode a mask shape whose box may reach outside the frame: the part inside is kept (a warning
    names ``where``). Raises ``ValueError`` when the runs do not fill the box or the box is inverted."""
    x1, y1, x2, y2 = cvat_codec.shape_bbox(points)
    if 0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height:
        return cvat_codec.decode_mask(points, image_width=width, image_height=height)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{where}: mask box ({x1}, {y1})-({x2}, {y2}) is inverted")
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    local = cvat_codec.decode_mask([*points[:-4], 0, 0, bw - 1, bh - 1], image_width=bw, image_height=bh)
    log.warning("%s: mask box (%d, %d)-(%d, %d) exceeds the %dx%d frame; the part outside is dropped",
                where, x1, y1, x2, y2, width, height)
    out = np.zeros((height, width), dtype=np.bool_)
    fx0, fy0, fx1, fy1 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
    if fx1 > fx0 and fy1 > fy0:
        out[fy0:fy1, fx0:fx1] = local[fy0 - y1 : fy1 - y1, fx0 - x1 : fx1 - x1]
    return out


def _ellipse_to_mask(points: Sequence[float], rotation: float, height: int, width: int) -> np.ndarray:
    if len(points) != 4:
        raise ValueError(f"ellipse needs 4 coordinates, got {len(points)}")
    cx, cy, rx_pt, ry_pt = (float(v) for v in points)
    rx, ry = abs(rx_pt - cx), abs(ry_pt - cy)
    canvas = np.zeros((height, width), np.uint8)
    shift = 4
    scale = 1 << shift
    cv2.ellipse(canvas, (round(cx * scale), round(cy * scale)), (round(rx * scale), round(ry * scale)),
                rotation, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=shift)
    return canvas.view(np.bool_)


def shape_to_mask(shape: Shape, height: int, width: int, where: str = "") -> np.ndarray:
    """One region shape as a ``(height, width)`` bool mask (``ValueError`` for an unsupported type)."""
    if shape.type == "mask":
        return decode_mask_clipped(shape.points, height, width, where)
    if shape.type == "polygon":
        return cvat_codec.polygon_to_mask(shape.points, height, width)
    if shape.type == "rectangle":
        if shape.rotation:
            xtl, ytl, xbr, ybr = shape.points
            cx, cy = (xtl + xbr) / 2, (ytl + ybr) / 2
            box = cv2.boxPoints(((cx, cy), (xbr - xtl, ybr - ytl), shape.rotation))
            return cvat_codec.polygon_to_mask(box.ravel().tolist(), height, width)
        return cvat_codec.rectangle_to_mask(shape.points, height, width)
    if shape.type == "ellipse":
        return _ellipse_to_mask(shape.points, shape.rotation, height, width)
    raise ValueError(f"{where}: shape type {shape.type!r} covers no area")


def counted(label: str, labels: Sequence[str]) -> bool:
    """Whether a shape with ``label`` counts as foreground (``labels`` empty = every label)."""
    return not labels or label in labels


def mask_from_shapes(shapes: Iterable[Shape], height: int, width: int, labels: Sequence[str],
                     where: str = "") -> np.ndarray | None:
    """Union of the counted region shapes as ``(height, width)`` uint8 ``{0, 255}``; None when the frame
    has no counted region (not annotated). Raises ``ValueError`` naming ``where`` for a malformed shape."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{where}: invalid frame size {width}x{height}")
    out: np.ndarray | None = None
    for shape in shapes:
        if shape.type not in REGION_TYPES:
            if shape.type not in IGNORED_TYPES:
                log.warning("%s: unsupported shape type %r ignored", where, shape.type)
            continue
        if not counted(shape.label, labels):
            continue
        try:
            region = shape_to_mask(shape, height, width, where)
        except ValueError as exc:
            raise ValueError(f"{where}: bad {shape.type} shape (label {shape.label!r}): {exc}") from exc
        out = region.copy() if out is None else (out | region)
    if out is None:
        return None
    return out.view(np.uint8) * np.uint8(255)


def check_labels(wanted: Sequence[str], declared: Iterable[str], where: str) -> None:
    """``ValueError`` when none of the ``wanted`` labels exists among the ``declared`` ones (a typo in
    params would otherwise silently import nothing)."""
    declared = sorted(set(declared))
    if wanted and declared and not set(wanted) & set(declared):
        raise ValueError(f"{where}: none of the foreground labels {list(wanted)} exists; labels here: {declared}")


# --------------------------------------------------------------------------- XML export


def _points(text: str, where: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for pair in text.split(";") if pair.strip() for v in pair.split(","))
    except ValueError as exc:
        raise ValueError(f"{where}: bad points {text[:80]!r}") from exc


def _float(el: ET.Element, key: str, where: str) -> float:
    raw = el.get(key)
    if raw is None:
        raise ValueError(f"{where}: <{el.tag}> lacks attribute {key!r}")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{where}: <{el.tag}> attribute {key}={raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise ValueError(f"{where}: <{el.tag}> attribute {key}={raw!r} is not finite")
    return value


def _xml_shape(el: ET.Element, where: str) -> Shape | None:
    kind = _XML_TYPES.get(el.tag)
    if kind is None:
        if el.tag not in ("polyline", "points", "skeleton", "cuboid", "tag", "attribute"):
            log.warning("%s: unsupported element <%s> ignored", where, el.tag)
        return None
    label = el.get("label")
    if label is None:
        raise ValueError(f"{where}: <{el.tag}> has no label")
    rotation = float(el.get("rotation", "0") or 0)
    if kind == "mask":
        rle = el.get("rle")
        if rle is None:
            raise ValueError(f"{where}: <mask> has no rle attribute")
        try:
            runs = [int(v) for v in rle.replace(" ", "").split(",") if v != ""]
        except ValueError as exc:
            raise ValueError(f"{where}: <mask> rle is not a list of integers: {rle[:80]!r}") from exc
        left, top = int(_float(el, "left", where)), int(_float(el, "top", where))
        w, h = int(_float(el, "width", where)), int(_float(el, "height", where))
        if w < 1 or h < 1:
            raise ValueError(f"{where}: <mask> box is {w}x{h}")
        return Shape("mask", label, (*runs, left, top, left + w - 1, top + h - 1))
    if kind == "rectangle":
        pts = tuple(_float(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        return Shape("rectangle", label, pts, rotation)
    if kind == "ellipse":
        cx, cy, rx, ry = (_float(el, k, where) for k in ("cx", "cy", "rx", "ry"))
        return Shape("ellipse", label, (cx, cy, cx + rx, cy - ry), rotation)
    return Shape("polygon", label, _points(el.get("points", ""), where))


def _meta_text(meta: ET.Element | None, *paths: str) -> str:
    if meta is None:
        return ""
    for p in paths:
        node = meta.find(p)
        if node is not None and (node.text or "").strip():
            return (node.text or "").strip()
    return ""


def parse_xml(data: bytes, options: ReadOptions, source: str) -> Iterator[ExportedAnnotation]:
    """Annotations of a "CVAT for images 1.1" document (see module docstring)."""
    if b"<!ENTITY" in data[:4096] or b"<!DOCTYPE" in data[:4096]:
        raise ValueError(f"{source}: XML with DOCTYPE/ENTITY declarations is refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"{source}: not well-formed XML ({exc})") from exc
    if root.tag != "annotations":
        raise ValueError(f"{source}: root element is <{root.tag}>, expected <annotations> (CVAT for images 1.1)")
    if root.find("track") is not None:
        raise ValueError(f"{source}: holds <track> elements (CVAT for video); export with 'CVAT for images 1.1'")
    meta = root.find("meta")
    declared = [(lbl.findtext("name") or "").strip() for lbl in root.iter("label")]
    declared = [d for d in declared if d]
    check_labels(options.labels, declared, source)
    annotator = _meta_text(meta, "job/assignee/username", "task/assignee/username", "project/assignee/username",
                           "job/owner/username", "task/owner/username", "project/owner/username")
    created = iso_utc(_meta_text(meta, "job/created", "task/created", "project/created"))
    updated = iso_utc(_meta_text(meta, "job/updated", "task/updated", "project/updated"))
    meta_task = _meta_text(meta, "task/id")
    for image in root.findall("image"):
        frame = image.get("id", "?")
        name = (image.get("name") or "").strip()
        where = f"{source}: image {frame} ({name or 'no name'})"
        if not name:
            raise ValueError(f"{where}: <image> has no name, so it cannot be matched to an item")
        try:
            width, height = int(image.get("width", "")), int(image.get("height", ""))
        except ValueError as exc:
            raise ValueError(f"{where}: <image> needs integer width and height") from exc
        shapes = [s for el in image for s in [_xml_shape(el, where)] if s is not None]
        mask = mask_from_shapes(shapes, height, width, options.labels, where)
        if mask is None:
            continue
        stem = Path(name).stem
        task_id = image.get("task_id") or meta_task
        yield ExportedAnnotation(
            mask=mask, source=source, item_id=stem if is_item_id(stem) else "", task_id=task_id,
            image_name=Path(name).name, annotation_id=f"{task_id}:{frame}" if task_id else str(frame),
            annotator=annotator, created_at=created, updated_at=updated,
        )


def _read_xml(path: Path, options: ReadOptions) -> Iterator[ExportedAnnotation]:
    path = Path(path)
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if Path(n).name == "annotations.xml"]
                if not names:
                    raise ValueError(f"{path}: the archive holds no annotations.xml")
                data = zf.read(sorted(names, key=len)[0])
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: not a valid zip archive ({exc})") from exc
        yield from parse_xml(data, options, f"{path}!annotations.xml")
        return
    yield from parse_xml(path.read_bytes(), options, str(path))


def _looks_like_cvat_xml(head: bytes) -> bool:
    return b"<annotations" in head and (b"<version>1.1" in head or b"<meta" in head or b"<image" in head)


def _sniff_xml(path: Path) -> bool:
    path = Path(path)
    try:
        if path.is_file() and path.suffix.lower() == ".xml":
            with path.open("rb") as fh:
                return _looks_like_cvat_xml(fh.read(4096))
        if path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if Path(n).name == "annotations.xml"]
                if names:
                    with zf.open(sorted(names, key=len)[0]) as fh:
                        return _looks_like_cvat_xml(fh.read(4096))
    except (OSError, zipfile.BadZipFile):
        return False
    return False


CVAT_XML = FormatReader(
    name="cvat-xml",
    description="CVAT for images 1.1 (annotations.xml or the export .zip): masks, polygons, boxes, ellipses",
    sniff=_sniff_xml,
    read=_read_xml,
)


# --------------------------------------------------------------------------- API shapes


def shapes_from_api(rows: Iterable[Mapping[str, Any] | Any], label_names: Mapping[int, str]) -> list[Shape]:
    """Convert shapes as the CVAT API returns them (``type``, ``label_id``, ``points``, ``rotation``; dicts or
    SDK models) to :class:`Shape`. A ``label_id`` not in ``label_names`` gets the label ``"?<id>"``."""
    out = []
    for row in rows:
        get = row.get if isinstance(row, Mapping) else (lambda k, d=None, r=row: getattr(r, k, d))
        kind = get("type")
        kind = str(getattr(kind, "value", kind))
        raw_label = get("label_id")
        if raw_label is None:
            raise ValueError(f"shape {get('id')} has no label_id")
        label_id = int(raw_label)
        pts = tuple(float(v) for v in (get("points") or ()))
        out.append(Shape(kind, label_names.get(label_id, f"?{label_id}"), pts, float(get("rotation", 0.0) or 0.0)))
    return out
