"""``maskloop evaluate-matting``: SAD / MSE / Gradient / Connectivity of predicted alpha mattes.

Pairs files by stem: ``PRED/<name>.png`` with ``GT/<name>.png`` and ``TRIMAPS/<name>.png`` (defaults:
``paths.matte/alpha``, no default for ground truth, ``paths.trimap/trimaps``). Metrics are computed in
each trimap's unknown region (:mod:`pipeline.matting.metrics`). Writes a per-file Parquet table and a
JSON summary (means), and prints both.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, load_paths
from pipeline.matting.metrics import score

log = logging.getLogger(__name__)

EVAL_COLUMNS = ("name", "sad", "mse", "grad", "conn", "n_unknown", "error")


def evaluate_folders(pred_dir: Path, gt_dir: Path, trimap_dir: Path) -> pd.DataFrame:
    """One row per predicted alpha (sorted by name); a row whose inputs are unusable carries ``error``
    and NaN metrics instead of stopping the evaluation."""
    pred_dir, gt_dir, trimap_dir = Path(pred_dir), Path(gt_dir), Path(trimap_dir)
    for label, folder in (("predictions", pred_dir), ("ground truth", gt_dir), ("trimaps", trimap_dir)):
        if not folder.is_dir():
            raise UserError(f"{folder}: {label} folder not found")
    preds = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not preds:
        raise UserError(f"{pred_dir}: no .png alpha mattes to evaluate")
    rows: list[dict[str, Any]] = []
    for pred_path in preds:
        name = pred_path.stem
        row: dict[str, Any] = {"name": name, "sad": float("nan"), "mse": float("nan"), "grad": float("nan"),
                               "conn": float("nan"), "n_unknown": 0, "error": ""}
        try:
            gt_path, tri_path = gt_dir / pred_path.name, trimap_dir / pred_path.name
            if not gt_path.is_file():
                raise FileNotFoundError(f"{gt_path}: no ground-truth alpha for {name}")
            if not tri_path.is_file():
                raise FileNotFoundError(f"{tri_path}: no trimap for {name}")
            pred = io.read_alpha(pred_path)
            gt = io.read_alpha(gt_path)
            if gt.shape != pred.shape:
                raise ValueError(f"{gt_path}: ground truth is {gt.shape[::-1]}, prediction {pred.shape[::-1]}")
            trimap = io.read_trimap(tri_path, shape=pred.shape)
            s = score(pred, gt, trimap)
            row.update(asdict(s))
        except (OSError, ValueError) as exc:
            row["error"] = str(exc)
            log.warning("evaluate-matting: %s: %s", name, exc)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS))


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    ok = df[df["error"] == ""]
    out: dict[str, Any] = {"files": len(df), "evaluated": len(ok), "failed": len(df) - len(ok)}
    for col in ("sad", "mse", "grad", "conn"):
        out[f"mean_{col}"] = round(float(ok[col].mean()), 6) if len(ok) else None
    return out


def register(app: typer.Typer) -> None:
    @app.command("evaluate-matting")
    def evaluate_matting(
        gt: Annotated[Path, typer.Option("--gt", help="folder of ground-truth alpha PNGs (same file names).")],
        pred: Annotated[Path | None, typer.Option("--pred", help="folder of predicted alpha PNGs "
                                                  "(default: paths.matte/alpha).")] = None,
        trimaps: Annotated[Path | None, typer.Option("--trimaps", help="folder of trimap PNGs "
                                                     "(default: paths.trimap/trimaps).")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="write <out>.parquet (per file) and "
                                                 "<out>.json (means).")] = None,
        params: Annotated[Path, typer.Option("--params", "-p", help="params file.")] = DEFAULT_PARAMS,
    ) -> None:
        """Score alpha mattes (SAD, MSE, Gradient, Connectivity) in the trimaps' unknown regions."""
        from pipeline.cli import run_guarded

        def go() -> None:
            paths = load_paths(params) if (pred is None or trimaps is None) else None
            pred_dir = pred if pred is not None else Path(paths.matte) / "alpha"  # type: ignore[union-attr]
            tri_dir = trimaps if trimaps is not None else Path(paths.trimap) / "trimaps"  # type: ignore[union-attr]
            df = evaluate_folders(pred_dir, gt, tri_dir)
            summary = summarize(df)
            if out is not None:
                io.write_parquet(out.with_suffix(".parquet"), df)
                io.write_json(out.with_suffix(".json"), summary)
            with pd.option_context("display.max_rows", 200, "display.width", 140):
                typer.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
            if summary["failed"]:
                raise UserError(f"{summary['failed']} of {summary['files']} files could not be evaluated (see 'error')")

        run_guarded(go)
