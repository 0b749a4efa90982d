"""The ``push`` and ``pull`` stages: send pre-annotations to the annotation tool, bring human corrections back.

``maskloop push`` builds one :class:`~pipeline.annotation.base.PushItem` per usable manifest item (its
pre-annotation mask, model version, confidence and uncertainty from ``preannotations.parquet``; items whose
latest review decision is ``reject`` are re-queued first with the reviewer's reason as the task's note), calls
the backend chosen by ``annotation.backend`` and writes the receipt ``paths.annotation/receipt.parquet``.

``maskloop pull`` asks the backend for submitted corrections and writes ``paths.corrections/masks/<id>.png``
(atomically) and ``paths.corrections/corrections.parquet``. A correction older than the one already stored for
an item (by ``updated_at``) never overwrites it; corrections of items the tool no longer has are kept.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import io
from pipeline.annotation.base import (
    CORRECTION_COLUMNS,
    RECEIPT_COLUMNS,
    AnnotationBackend,
    Correction,
    PullOutcome,
    PushItem,
    ReceiptRow,
    get_backend,
)
from pipeline.errors import UserError
from pipeline.params import DEFAULT_PARAMS, Paths, load_paths, load_section

log = logging.getLogger(__name__)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (paths and the annotation section).")]

REJECTED_UNCERTAINTY = 1.0
"""Uncertainty given to items a reviewer rejected: they go to the front of the queue."""


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


# --------------------------------------------------------------------------- push


def _float(value: Any, default: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def build_push_items(paths: Paths) -> list[PushItem]:
    """One PushItem per usable manifest item, most uncertain first (rejected items first of all)."""
    from pipeline.items import ok_items
    from qa.decisions import latest_per_item, read_decisions

    if not Path(paths.manifest).is_file():
        raise UserError(f"{paths.manifest}: manifest not found; run `maskloop ingest` first")
    pre_root = Path(paths.preannotate)
    table = pre_root / "preannotations.parquet"
    pre: dict[str, Mapping[str, Any]] = {}
    if table.is_file():
        df = io.read_parquet(table)
        if "item_id" not in df.columns:
            raise UserError(f"{table}: pre-annotation table lacks an item_id column")
        pre = {str(r["item_id"]): r for r in df.to_dict("records")}
    else:
        log.warning("%s not found: pushing images without pre-annotations", table)
    decisions = latest_per_item(read_decisions(paths.decisions))
    items = []
    for item in ok_items(paths.manifest):
        row = pre.get(item.item_id, {})
        mask = pre_root / "masks" / f"{item.item_id}.png"
        decision = decisions.get(item.item_id)
        rejected = decision is not None and decision.decision == "reject"
        items.append(PushItem(
            item_id=item.item_id, image_path=Path(item.source_path), width=item.width, height=item.height,
            mask_path=mask if (row and mask.is_file()) else None,
            model_version=str(row.get("model_version") or row.get("model") or ""),
            score=_float(row.get("confidence"), 0.0),
            uncertainty=REJECTED_UNCERTAINTY if rejected else min(_float(row.get("uncertainty"), 1.0), 1.0),
            review_note=f"rejected by {decision.reviewer}: {decision.reason}" if rejected and decision else "",
        ))
    items.sort(key=lambda it: (-it.uncertainty, it.item_id))
    return items


def run_push(params_path: Path) -> dict[str, Any]:
    """The ``push`` stage. Returns (and writes to ``reports/push.json``) the counts."""
    backend, paths, params = load_backend(params_path)
    items = build_push_items(paths)
    receipt = read_receipt(receipt_path(paths))
    log.info("pushing %d items to %s", len(items), params.backend)
    outcome = backend.push(items, receipt)
    write_receipt(receipt_path(paths), outcome.receipt)
    report = {"backend": params.backend, "items": len(items), "created": outcome.created, "updated": outcome.updated,
              "unchanged": outcome.unchanged, "removed": list(outcome.removed), "server_version": outcome.server_version}
    io.write_json(Path(paths.reports) / "push.json", report)
    log.info("push: %d new, %d updated, %d unchanged, %d removed from the dataset (tasks kept on the tool)",
             outcome.created, outcome.updated, outcome.unchanged, len(outcome.removed))
    return report


# --------------------------------------------------------------------------- pull


def corrections_path(paths: Paths) -> Path:
    return Path(paths.corrections) / "corrections.parquet"


def _read_corrections(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    df = io.read_parquet(path)
    return {str(r["item_id"]): dict(r) for r in df.to_dict("records")}


def _is_older(new: Correction, old: Mapping[str, Any]) -> bool:
    """True when ``new`` was last updated before the stored correction ``old`` (unknown times never win)."""
    old_t = str(old.get("updated_at") or "")
    new_t = new.updated_at or ""
    return bool(old_t) and bool(new_t) and _ts(new_t) < _ts(old_t)


def _ts(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("-inf")


def _lead(c: Correction) -> float:
    return float(c.lead_time) if c.lead_time is not None else float("nan")


def apply_pull(paths: Paths, outcome: PullOutcome, backend_name: str) -> dict[str, Any]:
    """Write the corrections of ``outcome`` (newer-wins, atomic mask writes) and return the counts."""
    root = Path(paths.corrections)
    table = corrections_path(paths)
    if not (outcome.corrections or outcome.problems or outcome.skipped or outcome.deleted_tasks) and table.is_file():
        # Nothing came back: the stored corrections stand as they are. No table is rewritten and pandas is not
        # imported, so the `pull` that every `dvc repro` runs costs well under a second when nobody annotated.
        (root / "masks").mkdir(parents=True, exist_ok=True)
        return {"backend": backend_name, "corrections": 0, "written": 0, "kept_newer": 0,
                "total": io.count_rows(table), "skipped": {}, "deleted_tasks": [], "problems": [],
                "disagreements": 0}
    import pandas as pd

    from pipeline.items import ok_items

    stored = _read_corrections(table)
    sizes = {i.item_id: (i.height, i.width) for i in ok_items(paths.manifest)} if Path(paths.manifest).is_file() else {}
    written, kept_newer, problems = 0, 0, [f"task {p.task_id}: {p.reason}" for p in outcome.problems]
    for c in outcome.corrections:
        if sizes and c.item_id not in sizes:
            problems.append(f"item {c.item_id} (task {c.task_id}) is not in the manifest; ignored")
            continue
        if c.item_id in sizes and c.mask.shape != sizes[c.item_id]:
            problems.append(f"item {c.item_id}: correction is {c.mask.shape[1]}x{c.mask.shape[0]}, the image is "
                            f"{sizes[c.item_id][1]}x{sizes[c.item_id][0]}; ignored")
            continue
        old = stored.get(c.item_id)
        if old is not None and _is_older(c, old):
            kept_newer += 1
            log.info("item %s: annotation %s (%s) is older than the stored one (%s); kept the stored one", c.item_id,
                     c.annotation_id, c.updated_at, old.get("updated_at"))
            continue
        png = io.encode_png(c.mask)
        digest = hashlib.sha256(png).hexdigest()
        if old is None or old.get("mask_digest") != digest or not (root / "masks" / f"{c.item_id}.png").is_file():
            io.write_bytes(root / "masks" / f"{c.item_id}.png", png)
            written += 1
        stored[c.item_id] = {
            "item_id": c.item_id, "task_id": c.task_id, "annotation_id": c.annotation_id, "annotator": c.annotator,
            "created_at": c.created_at, "updated_at": c.updated_at, "lead_time": _lead(c), "source": c.source,
            "backend": backend_name, "ground_truth": bool(c.ground_truth), "n_annotations": int(c.n_annotations),
            "disagreement_iou": float(c.disagreement_iou), "mask_digest": digest,
        }
    rows = [stored[k] for k in sorted(stored)]
    df = pd.DataFrame([{c: r.get(c) for c in CORRECTION_COLUMNS} for r in rows], columns=list(CORRECTION_COLUMNS))
    df = df.astype({"lead_time": "float64", "disagreement_iou": "float64", "ground_truth": "bool",
                    "n_annotations": "int64"})
    for col in ("item_id", "task_id", "annotation_id", "annotator", "created_at", "updated_at", "source", "backend",
                "mask_digest"):
        df[col] = df[col].astype(str)
    io.write_parquet(table, df)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for p in problems:
        log.warning("pull: %s", p)
    return {"backend": backend_name, "corrections": len(outcome.corrections), "written": written,
            "kept_newer": kept_newer, "total": len(rows), "skipped": dict(sorted(outcome.skipped.items())),
            "deleted_tasks": list(outcome.deleted_tasks), "problems": problems,
            "disagreements": sum(1 for c in outcome.corrections if c.n_annotations > 1)}


def run_pull(params_path: Path) -> dict[str, Any]:
    """The ``pull`` stage. Returns (and writes to ``reports/pull.json``) the counts."""
    backend, paths, params = load_backend(params_path)
    outcome = backend.pull(read_receipt(receipt_path(paths)))
    report = apply_pull(paths, outcome, params.backend)
    io.write_json(Path(paths.reports) / "pull.json", report)
    log.info("pull: %d corrections (%d masks written, %d older ones ignored), skipped %s, %d tasks deleted on the "
             "tool", report["corrections"], report["written"], report["kept_newer"], report["skipped"] or "nothing",
             len(report["deleted_tasks"]))
    return report


# --------------------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    """Add ``maskloop push`` and ``maskloop pull``."""
    from pipeline.cli import run_guarded

    @app.command("push")
    def push(params: ParamsOpt = DEFAULT_PARAMS) -> None:
        """Send pre-annotations to the annotation tool (annotation.backend): new items become tasks with
        predictions, changed ones get their prediction replaced, most uncertain first. Idempotent."""
        run_guarded(run_push, params)

    @app.command("pull")
    def pull(params: ParamsOpt = DEFAULT_PARAMS) -> None:
        """Bring submitted human corrections back into data/corrections (drafts and skipped tasks excluded;
        a newer stored correction is never overwritten by an older one)."""
        run_guarded(run_pull, params)
