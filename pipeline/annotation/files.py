"""The offline ``files`` backend: import human annotations from export files in a folder.

Annotation tools can export what people drew (Label Studio JSON / BRUSH_TO_PNG / BRUSH_TO_NUMPY, CVAT XML,
COCO, plain segmentation-mask folders). This backend reads every export under ``annotation.files.folder``
with the reader registered for its format in :data:`FORMATS` and turns them into the same
:class:`~pipeline.annotation.base.Correction` objects that a live ``pull`` produces.

Format registry
---------------
:data:`FORMATS` maps a format name to ``"module:attribute"`` of a :class:`FormatReader` (imported lazily,
so adding a format never slows ``maskloop --help``). A reader has:

- ``sniff(path) -> bool``: cheap check whether a file/folder is in this format (extension + a peek at
  the content); used when ``annotation.files.format`` is ``auto``.
- ``read(path, options) -> Iterator[ExportedAnnotation]``: every annotation in the export, decoded to a
  full-size ``(H, W)`` uint8 ``{0, 255}`` mask, with whatever provenance the format carries.

Items are matched (in order) by an explicit ``item_id`` in the export, by ``task_id`` through the push
receipt, or by the image file name (its stem is an item id, or it equals a manifest source file name).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.annotation.base import (
    Correction,
    PullOutcome,
    PullProblem,
    PushItem,
    PushOutcome,
    ReceiptRow,
)
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.params import Paths, from_mapping

log = logging.getLogger(__name__)

ANNOTATION_STATES = ("submitted", "draft", "skipped", "cancelled")


@dataclass(frozen=True)
class ReadOptions:
    """Settings a reader may need. ``labels``: label names counted as foreground (empty = every label).
    ``image_sizes``: known ``(height, width)`` per image file name, for formats that do not store it.
    ``alpha_threshold``: brush alpha (0..255) counted as foreground."""

    labels: tuple[str, ...] = ()
    image_sizes: tuple[tuple[str, tuple[int, int]], ...] = ()
    alpha_threshold: int = 128

    def size_of(self, image_name: str) -> tuple[int, int] | None:
        for name, hw in self.image_sizes:
            if name == image_name:
                return hw
        return None


@dataclass(frozen=True)
class ExportedAnnotation:
    """One annotation read from an export file.

    ``mask``: ``(H, W)`` uint8 with values ``{0, 255}`` at the original image size (the union of every
    foreground region of the annotation). Identification fields may be empty when the format lacks them;
    at least one of ``item_id``, ``task_id`` or ``image_name`` must be set. ``state`` is one of
    :data:`ANNOTATION_STATES`; only ``submitted`` ones become corrections. Times are ISO-8601 UTC strings.
    """

    mask: np.ndarray
    source: str
    item_id: str = ""
    task_id: str = ""
    image_name: str = ""
    annotation_id: str = ""
    annotator: str = ""
    created_at: str = ""
    updated_at: str = ""
    lead_time: float = float("nan")
    ground_truth: bool = False
    state: str = "submitted"

    def __post_init__(self) -> None:
        m = self.mask
        if not isinstance(m, np.ndarray) or m.ndim != 2 or m.dtype != np.uint8:
            raise ValueError(f"{self.source}: annotation mask must be (H, W) uint8, got {getattr(m, 'shape', m)}")
        if not (self.item_id or self.task_id or self.image_name):
            raise ValueError(f"{self.source}: annotation has no item id, task id or image name")
        if self.state not in ANNOTATION_STATES:
            raise ValueError(f"{self.source}: state must be one of {ANNOTATION_STATES}, got {self.state!r}")


@dataclass(frozen=True)
class FormatReader:
    """A registered export format: ``sniff`` recognises it, ``read`` decodes it (see module docstring)."""

    name: str
    description: str
    sniff: Callable[[Path], bool]
    read: Callable[[Path, ReadOptions], Iterator[ExportedAnnotation]]


# name -> "module:attribute" of a FormatReader. Keep sorted by name; sniffing tries them in this order.
FORMATS: dict[str, str] = {
    "coco": "pipeline.annotation.formats_coco:COCO",
    "cvat-segmask": "pipeline.annotation.formats_segmask:SEGMASK",
    "cvat-xml": "pipeline.annotation.formats_cvat:CVAT_XML",
    "labelstudio-brush-numpy": "pipeline.annotation.formats_labelstudio:BRUSH_TO_NUMPY",
    "labelstudio-brush-png": "pipeline.annotation.formats_labelstudio:BRUSH_TO_PNG",
    "labelstudio-json": "pipeline.annotation.formats_labelstudio:LS_JSON",
}


def get_format(name: str) -> FormatReader:
    """The reader registered as ``name`` (a clear error listing the known formats otherwise)."""
    if name not in FORMATS:
        raise ConfigError(f"annotation.files.format: unknown format {name!r}; known: {sorted(FORMATS)} or 'auto'")
    module, attr = FORMATS[name].split(":")
    reader = getattr(importlib.import_module(module), attr)
    if not isinstance(reader, FormatReader):
        raise TypeError(f"FORMATS[{name!r}] = {FORMATS[name]!r} is not a FormatReader")
    return reader


def sniff_format(path: Path) -> FormatReader | None:
    """The first registered format whose ``sniff`` accepts ``path`` (None when none does)."""
    for name in FORMATS:
        reader = get_format(name)
        if reader.sniff(Path(path)):
            return reader
    return None


# --------------------------------------------------------------------------- resolution (shared with live pulls)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    fa, fb = a > 0, b > 0
    union = int(np.count_nonzero(fa | fb))
    return 1.0 if union == 0 else int(np.count_nonzero(fa & fb)) / union


def _recency(a: ExportedAnnotation) -> tuple[str, int, str]:
    try:
        aid = int(a.annotation_id)
    except ValueError:
        aid = -1
    return (a.updated_at or a.created_at, aid, a.annotation_id)


def server_pull_outcome(annotations: Sequence[ExportedAnnotation], receipt: Sequence[ReceiptRow],
                        active: Sequence[ReceiptRow], on_server: set[str], problems: Sequence[PullProblem],
                        skipped: Mapping[str, int], tool: str) -> PullOutcome:
    """A server backend's pull result: corrections resolved from ``annotations`` (:func:`resolve_corrections`),
    the backend's own ``problems`` and ``skipped`` counts added, and the receipt's ``active`` tasks missing from
    the server (``on_server``: task ids seen) reported (warned) as deleted, in task-id order."""
    deleted = tuple(sorted({r.task_id for r in active if r.task_id not in on_server}, key=lambda t: (len(t), t)))
    if deleted:
        log.warning("%d %s tasks in the receipt were deleted on the server: %s", len(deleted), tool,
                    ", ".join(deleted[:10]))
    outcome = resolve_corrections(annotations, receipt)
    return PullOutcome(corrections=outcome.corrections, problems=tuple(problems) + outcome.problems,
                       deleted_tasks=deleted, skipped={**skipped, **dict(outcome.skipped)})


def resolve_corrections(annotations: Sequence[ExportedAnnotation], receipt: Sequence[ReceiptRow] = (),
                        image_names: Mapping[str, str] | None = None) -> PullOutcome:
    """One correction per item from submitted annotations.

    Items are identified by ``item_id``, else ``task_id`` through ``receipt``, else ``image_name`` through
    ``image_names`` (file name -> item id; a name whose stem is a 16-hex item id also works). Among several
    annotations of an item a ground-truth one wins, otherwise the most recently updated (then the highest
    annotation id); ``n_annotations`` and ``disagreement_iou`` (IoU of the two most recent) record the
    disagreement. Annotations that match no item are returned as problems.
    """
    by_task = {r.task_id: r.item_id for r in receipt}
    names = dict(image_names or {})
    per_item: dict[str, list[ExportedAnnotation]] = {}
    problems: list[PullProblem] = []
    skipped: dict[str, int] = {}
    for a in annotations:
        if a.state != "submitted":
            skipped[a.state] = skipped.get(a.state, 0) + 1
            continue
        item_id = a.item_id or by_task.get(a.task_id, "")
        if not item_id and a.image_name:
            stem = Path(a.image_name).stem
            item_id = names.get(a.image_name, "") or (stem if _is_item_id(stem) else "")
        if not item_id:
            problems.append(PullProblem("", a.task_id, f"{a.source}: annotation {a.annotation_id or '?'} matches no item "
                                        f"(task {a.task_id or '?'}, image {a.image_name or '?'})"))
            continue
        per_item.setdefault(item_id, []).append(a)
    out = []
    for item_id in sorted(per_item):
        anns = sorted(per_item[item_id], key=_recency)
        gts = [a for a in anns if a.ground_truth]
        chosen = gts[-1] if gts else anns[-1]
        disagreement = _iou(anns[-1].mask, anns[-2].mask) if len(anns) > 1 else float("nan")
        if len(anns) > 1:
            log.info("item %s: %d annotations (IoU of the two most recent %.3f); using annotation %s%s", item_id,
                     len(anns), disagreement, chosen.annotation_id, " (ground truth)" if gts else "")
        out.append(Correction(
            item_id=item_id, mask=chosen.mask, task_id=chosen.task_id, annotation_id=chosen.annotation_id,
            annotator=chosen.annotator, created_at=chosen.created_at, updated_at=chosen.updated_at,
            lead_time=chosen.lead_time, source=chosen.source, ground_truth=chosen.ground_truth,
            n_annotations=len(anns), disagreement_iou=disagreement,
        ))
    return PullOutcome(corrections=tuple(out), problems=tuple(problems), skipped=skipped)


def _is_item_id(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


# --------------------------------------------------------------------------- the backend


@dataclass(frozen=True)
class FilesParams:
    """Section ``annotation.files``: ``folder`` holding export files (each file or sub-folder is read with the
    format named by ``format``, or sniffed when ``auto``); ``labels`` counted as foreground (empty = all)."""

    folder: Path = Path("data/annotation/exports")
    format: str = "auto"
    labels: tuple[str, ...] = ()
    alpha_threshold: int = 128

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in FORMATS:
            raise ValueError(f"format must be 'auto' or one of {sorted(FORMATS)}, got {self.format!r}")
        if not 1 <= self.alpha_threshold <= 255:
            raise ValueError(f"alpha_threshold must be in 1..255, got {self.alpha_threshold}")


class FilesBackend:
    """Offline backend: ``push`` only records the receipt; ``pull`` imports the exports in ``folder``."""

    name = "files"

    def __init__(self, params: FilesParams, paths: Paths | None = None) -> None:
        self.params = params
        self.paths = paths or Paths()

    def push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        current = {it.item_id for it in items}
        rows = [ReceiptRow(item_id=it.item_id, backend=self.name, project_id=str(self.params.folder),
                           task_id=it.item_id, frame=-1, prediction_digest=it.digest(), model_version=it.model_version)
                for it in sorted(items, key=lambda i: i.item_id)]
        removed = sorted({r.item_id for r in receipt if r.item_id not in current})
        log.info("files backend: nothing is sent anywhere; put the tool's exports in %s and run `maskloop pull`",
                 self.params.folder)
        return PushOutcome(receipt=tuple(rows), created=0, updated=0, unchanged=len(rows), removed=tuple(removed))

    def exports(self) -> list[tuple[Path, FormatReader]]:
        """(path, reader) of every export under ``folder`` (sorted; unknown files are reported and skipped)."""
        folder = Path(self.params.folder)
        if not folder.exists():
            raise UserError(f"annotation.files.folder {folder} does not exist; put the annotation exports there")
        candidates = [folder] if folder.is_file() else sorted(folder.iterdir())
        out = []
        for path in candidates:
            if path.name.startswith("."):
                continue
            if self.params.format != "auto":
                out.append((path, get_format(self.params.format)))
                continue
            reader = sniff_format(path)
            if reader is None:
                log.warning("%s: not a known export format (%s); skipped", path, ", ".join(sorted(FORMATS)))
                continue
            out.append((path, reader))
        return out

    def _image_names(self) -> dict[str, str]:
        from pipeline.core.items import load_manifest

        if not Path(self.paths.manifest).is_file():
            return {}
        names: dict[str, str] = {}
        for item in load_manifest(self.paths.manifest):
            for src in item.source_paths:
                names.setdefault(Path(src).name, item.item_id)
        return names

    def pull(self, receipt: Sequence[ReceiptRow]) -> PullOutcome:
        options = ReadOptions(labels=self.params.labels, alpha_threshold=self.params.alpha_threshold)
        anns: list[ExportedAnnotation] = []
        for path, reader in self.exports():
            try:
                found = list(reader.read(path, options))
            except (OSError, ValueError, KeyError) as exc:
                raise UserError(f"{path}: cannot read it as {reader.name}: {exc}") from exc
            log.info("%s: %d annotations (%s)", path, len(found), reader.name)
            anns.extend(found)
        return resolve_corrections(anns, receipt, self._image_names())

    def status(self) -> Mapping[str, Any]:
        folder = Path(self.params.folder)
        return {"backend": self.name, "folder": str(folder),
                "exports": len(self.exports()) if folder.exists() else 0}


def make_backend(settings: Mapping[str, Any], paths: Paths, where: str = "params.yaml:annotation.files") -> FilesBackend:
    """Factory registered in ``BACKENDS``."""
    return FilesBackend(from_mapping(FilesParams, dict(settings), where), paths)
