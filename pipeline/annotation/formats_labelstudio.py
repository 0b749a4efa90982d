"""Label Studio formats: task JSON (API answers and ``JSON`` exports), ``BRUSH_TO_PNG`` and ``BRUSH_TO_NUMPY``.

All Label Studio conversion lives here and is shared by the live backend (``pull``) and the offline ``files``
backend, so both give the same masks:

- :func:`annotations_from_task` turns one task (as the API lists it with ``fields=all``, or as it appears in
  a ``JSON`` export) into :class:`~pipeline.annotation.files.ExportedAnnotation` objects: brush RLE decoded
  at ``original_height x original_width`` (holes and separate parts kept), polygons and rectangles (given in
  percent of the image) rasterised at that size, the union of every region whose label is counted.
  Cancelled (skipped) annotations and drafts are counted, not returned.
- ``BRUSH_TO_PNG`` / ``BRUSH_TO_NUMPY`` exports hold one file per annotation region, named
  ``task-<task>-annotation-<annotation>-by-<email>-<from_name>-<labels>-<n>.png|.npy`` (the alpha plane);
  the regions of one annotation are merged. These formats carry no times or ground-truth flags: among
  several annotations of a task the highest annotation id (the newest) wins.
"""

from __future__ import annotations

import io as _io
import json
import logging
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.annotation.base import PullProblem
from pipeline.annotation.files import ExportedAnnotation, FormatReader, ReadOptions
from pipeline.core import io

log = logging.getLogger(__name__)

_REGION_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels")


def _labels_of(result: Mapping[str, Any]) -> list[str]:
    value = result.get("value") or {}
    for key in (*_REGION_TYPES, "labels"):
        if key in value:
            return [str(x) for x in value[key]]
    return []


def _rasterise(result: Mapping[str, Any], height: int, width: int, threshold: int) -> np.ndarray:
    """One region as an ``(height, width)`` bool mask."""
    import cv2

    from pipeline.annotation.brush import rle_to_alpha

    kind = str(result.get("type", "")).lower()
    value = result.get("value") or {}
    if kind == "brushlabels" or "rle" in value:
        if value.get("format", "rle") != "rle" or "rle" not in value:
            raise ValueError(f"brush region {result.get('id')} has no RLE")
        return rle_to_alpha(value["rle"], height, width) >= threshold
    canvas = np.zeros((height, width), np.uint8)
    if kind == "polygonlabels":
        pts = np.asarray(value.get("points") or [], dtype=np.float64).reshape(-1, 2)
        if len(pts) >= 3:
            xy = np.round(pts * [width / 100.0, height / 100.0] * 16).astype(np.int32)
            cv2.fillPoly(canvas, [xy], 1, lineType=cv2.LINE_8, shift=4)
        return canvas.astype(bool)
    if kind == "rectanglelabels":
        x, y = float(value["x"]) * width / 100.0, float(value["y"]) * height / 100.0
        w, h = float(value["width"]) * width / 100.0, float(value["height"]) * height / 100.0
        angle = np.deg2rad(float(value.get("rotation") or 0.0))
        c, s = np.cos(angle), np.sin(angle)
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]]) @ np.array([[c, s], [-s, c]]) + [x, y]
        cv2.fillPoly(canvas, [np.round(corners * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        return canvas.astype(bool)
    raise ValueError(f"unsupported region type {kind!r}")


def mask_from_results(results: Sequence[Mapping[str, Any]], options: ReadOptions) -> np.ndarray | None:
    """Union of the counted regions of one annotation as ``(H, W)`` uint8 ``{0, 255}``; None when the annotation
    has no region at all (its size is then unknown)."""
    regions = [r for r in results if str(r.get("type", "")).lower() in _REGION_TYPES]
    if not regions:
        return None
    sizes = {(int(r["original_height"]), int(r["original_width"])) for r in regions}
    if len(sizes) != 1:
        raise ValueError(f"regions disagree on the image size: {sorted(sizes)}")
    (h, w), = sizes
    out = np.zeros((h, w), bool)
    for r in regions:
        labels = _labels_of(r)
        if options.labels and labels and not set(labels) & set(options.labels):
            continue
        out |= _rasterise(r, h, w, options.alpha_threshold)
    return np.where(out, np.uint8(255), np.uint8(0))


def _user(completed_by: Any, users: Mapping[int, str]) -> str:
    if isinstance(completed_by, Mapping):
        return str(completed_by.get("email") or completed_by.get("username") or completed_by.get("id", ""))
    if completed_by is None:
        return ""
    try:
        return users.get(int(completed_by), str(completed_by))
    except (TypeError, ValueError):
        return str(completed_by)


def annotations_from_task(task: Mapping[str, Any], options: ReadOptions, source: str,
                          users: Mapping[int, str] | None = None,
                          ) -> tuple[list[ExportedAnnotation], list[PullProblem], dict[str, int]]:
    """Submitted annotations of one Label Studio task, problems found, and counts of what was skipped
    (``cancelled``: skipped by the annotator; ``draft``: unsaved drafts)."""
    users = users or {}
    data = task.get("data") or {}
    task_id = str(task.get("id", ""))
    item_id = str(data.get("item_id", ""))
    image = str(data.get("image", ""))
    image_name = Path(image.split("?d=")[-1]).name if image and not image.startswith("data:") else ""
    skipped: dict[str, int] = {}
    drafts = task.get("drafts") or []
    if drafts:
        skipped["draft"] = len(drafts)
    out: list[ExportedAnnotation] = []
    problems: list[PullProblem] = []
    for ann in task.get("annotations") or []:
        if ann.get("was_cancelled"):
            skipped["cancelled"] = skipped.get("cancelled", 0) + 1
            continue
        try:
            mask = mask_from_results(ann.get("result") or [], options)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(PullProblem(item_id, task_id, f"annotation {ann.get('id')}: {exc}"))
            continue
        if mask is None:
            problems.append(PullProblem(item_id, task_id, f"annotation {ann.get('id')} has no region "
                                        "(an empty submission; its image size is unknown)"))
            continue
        lead = ann.get("lead_time")
        out.append(ExportedAnnotation(
            mask=mask, source=source, item_id=item_id, task_id=task_id, image_name=image_name,
            annotation_id=str(ann.get("id", "")), annotator=_user(ann.get("completed_by"), users),
            created_at=str(ann.get("created_at") or ""), updated_at=str(ann.get("updated_at") or ""),
            lead_time=float(lead) if lead is not None else float("nan"),
            ground_truth=bool(ann.get("ground_truth")), state="submitted",
        ))
    return out, problems, skipped


# --------------------------------------------------------------------------- JSON export


def _open_member(path: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the files with ``suffixes`` in a file, a folder or a zip archive (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and p.name.lower().endswith(suffixes):
                yield str(p), p.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                if name.lower().endswith(suffixes):
                    yield f"{path}!{name}", zf.read(name)
    elif path.name.lower().endswith(suffixes):
        yield str(path), path.read_bytes()


def _sniff_json(path: Path) -> bool:
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    # a list of task objects: {"id": ..., "annotations": [...], ..., "data": {...}} (keys in any order)
    return head.startswith(b"[") and (b'"annotations"' in head or b'"data"' in head)


def _read_json(path: Path, options: ReadOptions) -> Iterator[ExportedAnnotation]:
    try:
        tasks = json.loads(Path(path).read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks, got {type(tasks).__name__}")
    for task in tasks:
        anns, problems, _skipped = annotations_from_task(task, options, str(path))
        for p in problems:
            log.warning("%s: task %s: %s", path, p.task_id, p.reason)
        yield from anns


LS_JSON = FormatReader(
    name="labelstudio-json",
    description="Label Studio JSON export (list of tasks with annotations; brush, polygon, rectangle regions)",
    sniff=_sniff_json,
    read=_read_json,
)

# --------------------------------------------------------------------------- brush exports

_BRUSH_NAME = re.compile(r"task-(?P<task>\d+)-annotation-(?P<ann>\d+)-by-(?P<user>.*?)-(?P<rest>.+)-(?P<n>\d+)$")


def _brush_files(path: Path, suffix: str) -> Iterator[tuple[str, re.Match[str], bytes]]:
    for name, data in _open_member(path, (suffix,)):
        stem = Path(name.split("!")[-1]).name[: -len(suffix)]
        m = _BRUSH_NAME.match(stem)
        if m:
            yield name, m, data


def _read_brush(path: Path, options: ReadOptions, suffix: str) -> Iterator[ExportedAnnotation]:
    groups: dict[tuple[int, int], tuple[str, str, np.ndarray]] = {}
    for name, m, data in _brush_files(path, suffix):
        if options.labels and not any(f"-{label}" in f"-{m['rest']}" for label in options.labels):
            continue
        alpha = io.decode_image_bytes(data) if suffix == ".png" else np.load(_io.BytesIO(data), allow_pickle=False)
        if alpha.ndim == 3:
            alpha = alpha[:, :, -1] if alpha.shape[2] in (2, 4) else alpha[:, :, 0]
        if alpha.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D alpha plane, got shape {alpha.shape}")
        fg = alpha >= options.alpha_threshold
        key = (int(m["task"]), int(m["ann"]))
        if key in groups:
            prev = groups[key][2]
            if prev.shape != fg.shape:
                raise ValueError(f"{name}: size {fg.shape} differs from the other regions of its annotation")
            fg = fg | prev
        groups[key] = (name, m["user"], fg)
    for (task, ann), (name, user, fg) in sorted(groups.items()):
        yield ExportedAnnotation(mask=np.where(fg, np.uint8(255), np.uint8(0)), source=name, task_id=str(task),
                                 annotation_id=str(ann), annotator=user)


def _sniff_brush(path: Path, suffix: str) -> bool:
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path) and not path.name.lower().endswith(suffix):
        return False
    return any(True for _ in _brush_files(path, suffix))


BRUSH_TO_PNG = FormatReader(
    name="labelstudio-brush-png",
    description="Label Studio BRUSH_TO_PNG export (zip or folder of task-<id>-annotation-<id>-....png)",
    sniff=lambda p: _sniff_brush(p, ".png"),
    read=lambda p, o: _read_brush(p, o, ".png"),
)

BRUSH_TO_NUMPY = FormatReader(
    name="labelstudio-brush-numpy",
    description="Label Studio BRUSH_TO_NUMPY export (zip or folder of task-<id>-annotation-<id>-....npy)",
    sniff=lambda p: _sniff_brush(p, ".npy"),
    read=lambda p, o: _read_brush(p, o, ".npy"),
)
