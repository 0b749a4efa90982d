"""The annotation backend that ``params.yaml`` selects (section ``annotation``) and its receipt table.

Shared by the ``push`` and ``pull`` stages (:mod:`pipeline.stages.push`, :mod:`pipeline.stages.pull`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.annotation.base import RECEIPT_COLUMNS, AnnotationBackend, ReceiptRow, get_backend
from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import Paths, load_paths, load_section


@dataclass(frozen=True)
class AnnotationParams:
    """Section ``annotation`` of params.yaml. ``backend``: ``none`` (demo default), ``labelstudio``, ``cvat`` or
    ``files``; each backend reads its own subsection (validated by the backend itself)."""

    backend: str = "none"
    labelstudio: dict[str, Any] = field(default_factory=dict)
    cvat: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return dict(getattr(self, self.backend, {}) or {})


def load_backend(params_path: Path) -> tuple[AnnotationBackend, Paths, AnnotationParams]:
    """The configured backend, the paths and the section (clear errors for unknown backends/settings)."""
    paths = load_paths(params_path)
    params = load_section(params_path, "annotation", AnnotationParams)
    backend = get_backend(params.backend, params.settings(), paths, f"{params_path}:annotation.{params.backend}")
    return backend, paths, params


# --------------------------------------------------------------------------- receipt


def receipt_path(paths: Paths) -> Path:
    return Path(paths.annotation) / "receipt.parquet"


def read_receipt(path: Path) -> list[ReceiptRow]:
    """Rows of a receipt table (empty when it does not exist yet)."""
    if not Path(path).is_file():
        return []
    missing = set(RECEIPT_COLUMNS) - set(io.table_columns(path)) - {"server_version"}
    if missing:
        raise UserError(f"{path}: receipt lacks columns {sorted(missing)}")
    return [ReceiptRow(item_id=str(r["item_id"]), backend=str(r["backend"]), project_id=str(r["project_id"]),
                       task_id=str(r["task_id"]), frame=int(r["frame"]), prediction_digest=str(r["prediction_digest"]),
                       model_version=str(r["model_version"]), pushed_digest=str(r["pushed_digest"]),
                       status=str(r["status"]), server_version=str(r.get("server_version") or ""))
            for r in io.read_records(path)]


def write_receipt(path: Path, rows: Sequence[ReceiptRow]) -> None:
    import pandas as pd

    records = [{c: getattr(r, c) for c in RECEIPT_COLUMNS} for r in sorted(rows, key=lambda r: r.item_id)]
    df = pd.DataFrame(records, columns=list(RECEIPT_COLUMNS)).astype({"frame": "int64"})
    io.write_parquet(path, df)
