"""The ``pull`` stage: bring human corrections back from the annotation tool.

``maskloop pull`` asks the backend for submitted corrections and writes ``paths.corrections/masks/<id>.png``
(atomically) and ``paths.corrections/corrections.parquet``. A correction older than the one already stored for
an item (by ``updated_at``) never overwrites it; corrections of items the tool no longer has are kept.
It is the stage of ``always_run/dvc.yaml``: it runs on every ``dvc repro`` (see that file).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.annotation.base import CORRECTION_COLUMNS, Correction, PullOutcome
from pipeline.annotation.configured import load_backend, read_receipt, receipt_path
from pipeline.core import io
from pipeline.core.params import DEFAULT_PARAMS, Paths

log = logging.getLogger(__name__)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (paths and the annotation section).")]


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

    from pipeline.core.items import ok_items

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
    """Add ``maskloop pull``."""
    from pipeline.cli import run_guarded

    @app.command("pull")
    def pull(params: ParamsOpt = DEFAULT_PARAMS) -> None:
        """Bring submitted human corrections back into data/corrections (drafts and skipped tasks excluded;
        a newer stored correction is never overwritten by an older one)."""
        run_guarded(run_pull, params)
