"""The one push/pull interface every annotation backend implements (Label Studio, CVAT, files, none).

Stages ``push`` and ``pull`` (``pipeline/stages/push.py``, ``pipeline/stages/pull.py``) build :class:`PushItem` rows from the
pre-annotations and review decisions, call the backend selected by ``annotation.backend`` and persist
what comes back: the **receipt** (item <-> task mapping, ``paths.annotation/receipt.parquet``) and the
**corrections** (``paths.corrections/masks/<item_id>.png`` + ``corrections.parquet``). Backends never
write those files themselves; they only talk to their tool and convert formats.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.errors import ConfigError

RECEIPT_COLUMNS = (
    "item_id", "backend", "project_id", "task_id", "frame", "prediction_digest", "model_version", "pushed_digest",
    "status", "server_version",
)
"""Receipt table: one row per pushed item. ``frame`` is -1 for backends without frames. ``prediction_digest``
is the SHA-256 of what was pushed (mask bytes + model version + review note) so an unchanged item is never
pushed twice. ``status`` is ``active`` or ``removed`` (item no longer in the dataset; reported, never deleted). ``server_version``:
the tool's version at the push ("" when unknown; receipts written before this column existed read as "")."""

CORRECTION_COLUMNS = (
    "item_id", "task_id", "annotation_id", "annotator", "created_at", "updated_at", "lead_time", "source",
    "backend", "ground_truth", "n_annotations", "disagreement_iou", "mask_digest",
)
"""Corrections table (``paths.corrections/corrections.parquet``): one row per item with an accepted human
correction. Times are ISO-8601 UTC strings; ``lead_time`` seconds (NaN when unknown); ``source`` says where it
came from (backend name or export file); ``disagreement_iou`` is the IoU between the two most recent submitted
annotations when a task had several (NaN otherwise); ``mask_digest`` the SHA-256 of the mask PNG."""


@dataclass(frozen=True)
class PushItem:
    """One item to send to the annotation tool. ``uncertainty`` orders the queue (higher first)."""

    item_id: str
    image_path: Path
    width: int
    height: int
    mask_path: Path | None
    model_version: str
    score: float
    uncertainty: float
    review_note: str = ""

    def digest(self) -> str:
        import hashlib

        h = hashlib.sha256()
        if self.mask_path is not None:
            h.update(Path(self.mask_path).read_bytes())
        h.update(f"\0{self.model_version}\0{self.review_note}".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class ReceiptRow:
    item_id: str
    backend: str
    project_id: str
    task_id: str
    frame: int
    prediction_digest: str
    model_version: str
    pushed_digest: str = ""
    status: str = "active"
    server_version: str = ""


@dataclass(frozen=True)
class PushOutcome:
    """What a push did: the full receipt after the push plus counts for the log/metrics."""

    receipt: tuple[ReceiptRow, ...]
    created: int
    updated: int
    unchanged: int
    removed: tuple[str, ...] = ()
    server_version: str = ""


@dataclass(frozen=True)
class Correction:
    """One human-corrected mask ``(H, W)`` uint8 ``{0, 255}`` at the source image's size, with provenance."""

    item_id: str
    mask: np.ndarray
    task_id: str
    annotation_id: str
    annotator: str
    created_at: str
    updated_at: str
    lead_time: float
    source: str
    ground_truth: bool = False
    n_annotations: int = 1
    disagreement_iou: float = float("nan")

    def __post_init__(self) -> None:
        m = self.mask
        if not isinstance(m, np.ndarray) or m.ndim != 2 or m.dtype != np.uint8:
            raise ValueError(f"item {self.item_id}: correction mask must be (H, W) uint8, got {getattr(m, 'shape', m)}")


@dataclass(frozen=True)
class PullProblem:
    """A task/annotation that could not be turned into a correction (bad export, unknown item, ...)."""

    item_id: str
    task_id: str
    reason: str


@dataclass(frozen=True)
class PullOutcome:
    corrections: tuple[Correction, ...]
    problems: tuple[PullProblem, ...] = ()
    deleted_tasks: tuple[str, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)  # e.g. {"draft": 2, "skipped": 1}


class AnnotationBackend(Protocol):
    """Push pre-annotations, pull corrections. Implementations are registered in :data:`BACKENDS`."""

    name: str

    def push(self, items: Sequence[PushItem], receipt: Sequence[ReceiptRow]) -> PushOutcome:
        """Create/find the project, create tasks for new items, replace predictions of changed items.
        Idempotent: items already in ``receipt`` with the same digest are not touched."""
        ...

    def pull(self, receipt: Sequence[ReceiptRow]) -> PullOutcome:
        """Fetch submitted human annotations of the tasks in ``receipt`` as corrections."""
        ...

    def status(self) -> Mapping[str, Any]:
        """Counts of tasks / annotations on the tool (for ``maskloop status``)."""
        ...


# name -> "module:factory"; factory(settings: Mapping (the backend's subsection of params.yaml `annotation`),
# paths: Paths, where: str (for error messages)) -> backend. Imported lazily.
BACKENDS: dict[str, str] = {
    "cvat": "pipeline.annotation.cvat:make_backend",
    "files": "pipeline.annotation.files:make_backend",
    "labelstudio": "pipeline.annotation.labelstudio:make_backend",
    "none": "pipeline.annotation.none:make_backend",
}


def get_backend(name: str, *args: Any, **kwargs: Any) -> AnnotationBackend:
    """Instantiate the backend registered as ``name`` (a clear error listing the known ones otherwise)."""
    if name not in BACKENDS:
        raise ConfigError(f"annotation.backend: unknown backend {name!r}; known: {sorted(BACKENDS)}")
    module, factory = BACKENDS[name].split(":")
    backend: AnnotationBackend = getattr(importlib.import_module(module), factory)(*args, **kwargs)
    return backend


def iter_masks(corrections: Sequence[Correction]) -> Iterator[tuple[str, np.ndarray]]:
    for c in corrections:
        yield c.item_id, c.mask
