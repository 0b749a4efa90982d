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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ANNOTATION_STATES = ("submitted", "draft", "skipped", "cancelled")


@dataclass(frozen=True)
class ReadOptions:
    """Settings a reader may need. ``labels``: label names counted as foreground (empty = every label).
    ``image_sizes``: known ``(height, width)`` per image file name, for formats that do not store it."""

    labels: tuple[str, ...] = ()
    image_sizes: tuple[tuple[str, tuple[int, int]], ...] = ()

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
    "labelstudio-brush-numpy": "pipeline.annotation.formats_labelstudio:BRUSH_TO_NUMPY",
    "labelstudio-brush-png": "pipeline.annotation.formats_labelstudio:BRUSH_TO_PNG",
    "labelstudio-json": "pipeline.annotation.formats_labelstudio:LS_JSON",
}


def get_format(name: str) -> FormatReader:
    """The reader registered as ``name`` (a clear error listing the known formats otherwise)."""
    from pipeline.errors import ConfigError

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
