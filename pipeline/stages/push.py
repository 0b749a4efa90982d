"""The ``push`` stage: send pre-annotations to the annotation tool.

``maskloop push`` builds one :class:`~pipeline.annotation.base.PushItem` per usable manifest item (its
pre-annotation mask, model version, confidence and uncertainty from ``preannotations.parquet``; items whose
latest review decision is ``reject`` are re-queued first with the reviewer's reason as the task's note), calls
the backend chosen by ``annotation.backend`` and writes the receipt ``paths.annotation/receipt.parquet``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.annotation.base import PushItem
from pipeline.annotation.configured import load_backend, read_receipt, receipt_path, write_receipt
from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths

log = logging.getLogger(__name__)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (paths and the annotation section).")]

REJECTED_UNCERTAINTY = 1.0
"""Uncertainty given to items a reviewer rejected: they go to the front of the queue."""


# --------------------------------------------------------------------------- push


def _float(value: Any, default: float) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f


def build_push_items(paths: Paths) -> list[PushItem]:
    """One PushItem per usable manifest item, most uncertain first (rejected items first of all)."""
    from pipeline.core.items import ok_items
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


# --------------------------------------------------------------------------- CLI


def register(app: typer.Typer) -> None:
    """Add ``maskloop push``."""
    from pipeline.cli import run_guarded

    @app.command("push")
    def push(params: ParamsOpt = DEFAULT_PARAMS) -> None:
        """Send pre-annotations to the annotation tool (annotation.backend): new items become tasks with
        predictions, changed ones get their prediction replaced, most uncertain first. Idempotent."""
        run_guarded(run_push, params)
