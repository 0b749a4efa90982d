"""Evaluate stage: model quality on the test split and human correction effort per model version.

**Test metrics** (the trained checkpoint ``paths.train/model.pt`` on the export's ``test`` split, at each
image's full size, against the curated masks): IoU, F-measure (``beta2`` = 0.3 as in salient-object
benchmarks), boundary F (boundary pixels matched within ``boundary_tolerance_px``), MAE of the probability
map. Empty-vs-empty counts as a perfect score.

**Correction effort** (from files, no model needed): for every item with both a pre-annotation
(``paths.preannotate/masks``) and a pulled human correction (``paths.corrections/masks``), grouped by the
pre-annotating ``model``/``model_version`` (``preannotations.parquet``): fraction of masks accepted
unchanged, mean IoU(pre-annotation, correction), mean pixels changed per item (and as a fraction of the image),
and the **simulated clicks** a click-based annotator would need from the pre-annotation to the correction
(NoC@85 / NoC@90 with the ``noc_engine`` refinement engine and the standard simulated annotator,
:mod:`pipeline.refine.effort`; the first ``noc_max_items`` items in id order, 0 = off; docs/refine.md).

Writes ``paths.metrics/evaluate.json`` (DVC metrics), ``paths.evaluate/test_items.parquet`` and
``paths.evaluate/effort_items.parquet`` (per item), ``paths.metrics/effort.json`` (DVC plots: one row per
model version).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_section

log = logging.getLogger(__name__)

TEST_COLUMNS = ("item_id", "iou", "fmeasure", "boundary_f", "mae")
EFFORT_COLUMNS = ("item_id", "model", "model_version", "unchanged", "iou", "pixels_changed", "fraction_changed",
                  "noc85", "noc90")


@dataclass(frozen=True)
class EvaluateParams:
    """Section ``evaluate``: ``beta2`` of the F-measure, boundary tolerance (px), device for inference; the
    refinement engine (``refine`` section) and item cap of the simulated-click effort."""

    beta2: float = 0.3
    boundary_tolerance_px: int = 2
    device: str = "auto"
    noc_engine: str = "grabcut"
    noc_max_items: int = 50

    def __post_init__(self) -> None:
        from pipeline.refine import REFINERS

        if self.noc_engine not in REFINERS:
            raise ValueError(f"noc_engine {self.noc_engine!r} is not a refine engine; choose one of {sorted(REFINERS)}")
        if self.noc_max_items < 0:
            raise ValueError(f"noc_max_items must be >= 0 (0 = off), got {self.noc_max_items}")
        if self.beta2 <= 0:
            raise ValueError(f"beta2 must be > 0, got {self.beta2}")
        if self.boundary_tolerance_px < 0:
            raise ValueError(f"boundary_tolerance_px must be >= 0, got {self.boundary_tolerance_px}")


# --------------------------------------------------------------------------- pure metrics


def _bool(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0 if np.asarray(mask).dtype != bool else np.asarray(mask)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two ``(H, W)`` masks (nonzero = foreground); 1.0 when both are empty."""
    p, g = _bool(pred), _bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else int(np.count_nonzero(p & g)) / union


def fmeasure(pred: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """``(1 + b2) P R / (b2 P + R)`` of a binary prediction; 1.0 when both are empty, 0.0 when only one is."""
    p, g = _bool(pred), _bool(gt)
    tp = int(np.count_nonzero(p & g))
    np_, ng = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    if np_ == 0 and ng == 0:
        return 1.0
    if tp == 0:
        return 0.0
    prec, rec = tp / np_, tp / ng
    return (1 + beta2) * prec * rec / (beta2 * prec + rec)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a mask: foreground pixels with a background 4-neighbour (image edges do not count)."""
    m = _bool(mask).astype(np.uint8)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return (m > 0) & (eroded == 0)


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance_px: int = 2) -> float:
    """Boundary F1: a boundary pixel matches when the other mask's boundary is within ``tolerance_px``
    (Euclidean). 1.0 when neither mask has a boundary, 0.0 when only one has."""
    bp, bg = boundary(pred), boundary(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    dist_to_g = cv2.distanceTransform((~bg).astype(np.uint8), cv2.DIST_L2, 5)
    dist_to_p = cv2.distanceTransform((~bp).astype(np.uint8), cv2.DIST_L2, 5)
    prec = float(np.count_nonzero(dist_to_g[bp] <= tolerance_px)) / n_p
    rec = float(np.count_nonzero(dist_to_p[bg] <= tolerance_px)) / n_g
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def mae(prob: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a probability map in ``[0, 1]`` and a binary mask."""
    return float(np.mean(np.abs(np.asarray(prob, np.float32) - _bool(gt).astype(np.float32))))


@dataclass(frozen=True)
class MaskScores:
    iou: float
    fmeasure: float
    boundary_f: float
    mae: float


def score(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5, beta2: float = 0.3,
          tolerance_px: int = 2) -> MaskScores:
    """All test metrics of a probability map float ``(H, W)`` in [0, 1] against a ``(H, W)`` mask."""
    pred = prob >= threshold
    return MaskScores(iou(pred, gt), fmeasure(pred, gt, beta2), boundary_f(pred, gt, tolerance_px), mae(prob, gt))


@dataclass(frozen=True)
class Effort:
    """Human effort on one item: mask accepted ``unchanged``, IoU(pre, corrected), pixels changed."""

    unchanged: bool
    iou: float
    pixels_changed: int
    fraction_changed: float


def correction_effort(pre: np.ndarray, corrected: np.ndarray) -> Effort:
    """Effort to turn pre-annotation ``pre`` into ``corrected`` (both ``(H, W)`` masks, same size)."""
    p, c = _bool(pre), _bool(corrected)
    if p.shape != c.shape:
        raise ValueError(f"pre-annotation is {p.shape[1]}x{p.shape[0]} but the correction is {c.shape[1]}x{c.shape[0]}")
    changed = int(np.count_nonzero(p != c))
    return Effort(changed == 0, iou(p, c), changed, changed / p.size if p.size else 0.0)


def _mean_present(values: Sequence[Any]) -> float | None:
    """Mean of the values that are not None/NaN (rounded), None when there is none."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return round(float(np.mean(xs)), 3) if xs else None


def summarize_effort(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per ``model@model_version``: items, accepted_unchanged (fraction), mean_iou, mean pixels changed, and
    the mean simulated NoC@85/NoC@90 over the items that were simulated (``noc_items``; None when none)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r['model']}@{r['model_version']}", []).append(r)
    return {
        key: {
            "items": len(g),
            "accepted_unchanged": round(float(np.mean([bool(r["unchanged"]) for r in g])), 6),
            "mean_iou": round(float(np.mean([r["iou"] for r in g])), 6),
            "mean_pixels_changed": round(float(np.mean([r["pixels_changed"] for r in g])), 3),
            "mean_fraction_changed": round(float(np.mean([r["fraction_changed"] for r in g])), 6),
            "noc_items": sum(1 for r in g if r.get("noc90") is not None and not np.isnan(float(r["noc90"]))),
            "mean_noc85": _mean_present([r.get("noc85") for r in g]),
            "mean_noc90": _mean_present([r.get("noc90") for r in g]),
        }
        for key, g in sorted(groups.items())
    }


def add_click_effort(rows: list[dict[str, Any]], paths: Paths, params: EvaluateParams, params_path: Path) -> None:
    """Fill ``noc85``/``noc90`` of effort ``rows`` (in place) with the simulated clicks of the
    ``noc_engine`` (settings: the ``refine`` section) for the first ``noc_max_items`` items; NaN elsewhere."""
    from pipeline.refine.base import load_refine_params
    from pipeline.refine.effort import effort_clicks

    for r in rows:
        r["noc85"] = r["noc90"] = float("nan")
    if not rows or params.noc_max_items == 0:
        return
    clicks = effort_clicks(paths, [str(r["item_id"]) for r in rows], load_refine_params(params_path),
                           params.noc_engine, params.noc_max_items)
    for r in rows:
        e = clicks.get(str(r["item_id"]))
        if e is not None:
            r["noc85"], r["noc90"] = float(e.noc85), float(e.noc90)


def mean_scores(rows: Sequence[MaskScores]) -> dict[str, float | int | None]:
    if not rows:
        return {"items": 0, "iou": None, "fmeasure": None, "boundary_f": None, "mae": None}
    return {
        "items": len(rows),
        **{k: round(float(np.mean([getattr(r, k) for r in rows])), 6) for k in ("iou", "fmeasure", "boundary_f", "mae")},
    }


# --------------------------------------------------------------------------- stage pieces


def effort_rows(paths: Paths) -> list[dict[str, Any]]:
    """Correction effort per item that has both a pre-annotation and a pulled correction (sorted by item)."""
    table = Path(paths.preannotate) / "preannotations.parquet"
    if not table.is_file():
        return []
    pre = io.read_parquet(table)
    out: list[dict[str, Any]] = []
    for r in pre.sort_values("item_id").itertuples(index=False):
        item_id = str(r.item_id)
        pmask = Path(paths.preannotate) / "masks" / f"{item_id}.png"
        cmask = Path(paths.corrections) / "masks" / f"{item_id}.png"
        if not (pmask.is_file() and cmask.is_file()):
            continue
        e = correction_effort(io.read_mask(pmask), io.read_mask(cmask))
        out.append({"item_id": item_id, "model": str(r.model), "model_version": str(getattr(r, "model_version", "")),
                    **asdict(e)})
    return out


def test_scores(paths: Paths, params: EvaluateParams) -> list[tuple[str, MaskScores]]:
    """Scores of the trained checkpoint on every test item of the export."""
    from pipeline.learning.segmenter import load_segmenter, predict_probability
    from pipeline.learning.torch_utils import select_device

    splits = Path(paths.export) / "splits.parquet"
    if not splits.is_file():
        raise UserError(f"{splits}: export not found; run `dvc repro export` first")
    table = io.read_parquet(splits)
    ids = sorted(str(i) for i in table.loc[table["split"] == "test", "item_id"])
    if not ids:
        log.warning("evaluate: the export's test split is empty; no test metrics")
        return []
    device = str(select_device(params.device))
    model, meta = load_segmenter(Path(paths.train) / "model.pt", device)
    out = []
    for item_id in ids:
        image = io.read_image(Path(paths.export) / "matting" / "image" / f"{item_id}.png")
        gt = io.read_mask(Path(paths.export) / "matting" / "mask" / f"{item_id}.png", shape=image.shape[:2])
        prob = predict_probability(model, meta, image, device)
        out.append((item_id, score(prob, gt, meta.threshold, params.beta2, params.boundary_tolerance_px)))
    return out


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> dict[str, Any]:
    """The evaluate stage; returns the metrics it wrote."""
    import pandas as pd

    paths = load_paths(params_path)
    params = load_section(params_path, "evaluate", EvaluateParams)
    scores = test_scores(paths, params)
    efforts = effort_rows(paths)
    add_click_effort(efforts, paths, params, params_path)
    effort = summarize_effort(efforts)
    metrics: dict[str, Any] = {"test": mean_scores([s for _k, s in scores]), "effort": effort}
    out = Path(paths.evaluate)
    io.write_parquet(out / "test_items.parquet",
                     pd.DataFrame([{"item_id": k, **asdict(s)} for k, s in scores], columns=list(TEST_COLUMNS)))
    io.write_parquet(out / "effort_items.parquet", pd.DataFrame(efforts, columns=list(EFFORT_COLUMNS)))
    io.write_json(Path(paths.metrics) / "evaluate.json", metrics)
    io.write_json(Path(paths.metrics) / "effort.json",
                  [{"model_version": k, **v} for k, v in effort.items()])
    log.info("evaluate: test %s; effort %s", metrics["test"], metrics["effort"])
    return metrics


if __name__ == "__main__":  # pragma: no cover
    run()
