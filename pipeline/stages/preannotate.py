"""The ``preannotate`` stage: every ok item of the manifest -> mask, probability and one table row.

Outputs (``paths.preannotate``)::

    masks/<item_id>.png          uint8 {0, 255} at the source image's size
    prob/<item_id>.png           uint8 0..255 foreground probability (round(255 * p))
    preannotations.parquet       item_id, model, model_version, checkpoint_sha256, confidence, entropy,
                                 sam_iou, uncertainty, note (sorted by item_id; no timings: those are in
                                 reports/; note: e.g. a grabcut fallback to another hypothesis, else "")

plus the SAM embedding cache under ``paths.sam_cache`` (``model: sam``; entries of items that left the manifest
are pruned). The pre-annotator comes from the registry (:mod:`pipeline.preannotators`) and is loaded once per
worker in the runner's ``setup``; the checkpoint is checked (exists, hashed) before any work starts, so a
missing checkpoint is one clear sentence. An item whose inference fails is recorded in
``reports/preannotate.parquet`` and the others go on.

``model: trained`` re-pre-annotates only items **not** listed in ``paths.promoted/lineage.json``
``verified_items``: a verified item keeps its previous mask, probability and table row byte for byte (they
are carried over through the runner, which fingerprints them), unless it has no previous pre-annotation.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import io
from pipeline.core import work as work_module
from pipeline.core.errors import UserError
from pipeline.core.items import ok_items
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import FileInput, ItemResult, Stage, StageResult, WorkItem, run_stage
from pipeline.preannotators import build_preannotator, preannotator_module
from pipeline.preannotators.base import (
    PreannotateParams,
    Preannotator,
    PredictContext,
    file_sha256,
    mean_entropy_bits,
    probability_to_u8,
    require_checkpoint,
    uncertainty_from,
)

log = logging.getLogger(__name__)

TABLE = "preannotations.parquet"
COLUMNS = ("item_id", "model", "model_version", "checkpoint_sha256", "confidence", "entropy", "sam_iou", "uncertainty",
           "note")


@dataclass(frozen=True)
class PreannotateRun:
    """What the runner fingerprints: the params section plus the SHA-256 of every checkpoint used, so new
    weights at the same path recompute every item."""

    params: PreannotateParams
    checkpoints: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Resource:
    """Per-worker state built by :func:`setup`."""

    model: Preannotator


def models_used(params: PreannotateParams) -> list[str]:
    """Registry names the configured model needs (``sam`` also needs its prompting model)."""
    names = [params.model]
    if params.model == "sam" and params.sam.prompt_from != "auto":
        names.append(params.sam.prompt_from)
    return names


def checkpoint_path(name: str, params: PreannotateParams, paths: Paths) -> tuple[Path, str, str] | None:
    """(path, architecture key for error messages, params setting) of model ``name``'s checkpoint, or None."""
    if name == "sam":
        return params.sam.checkpoint, f"sam/{params.sam.arch}", "preannotate.sam.checkpoint"
    if name == "deeplabv3":
        return params.deeplabv3.checkpoint, f"deeplabv3/{params.deeplabv3.arch}", "preannotate.deeplabv3.checkpoint"
    if name == "trained":
        return Path(paths.promoted) / "model.pt", "trained", "paths.promoted (run `maskloop promote`)"
    return None


def check_checkpoints(params: PreannotateParams, paths: Paths) -> tuple[tuple[str, str], ...]:
    """Every checkpoint the configuration needs exists: ((model, sha256), ...). Raises ``CheckpointMissing``
    (one sentence naming the path, the architecture and where official weights are published)."""
    out = []
    for name in models_used(params):
        if name == "trained":
            promoted_lineage(paths)  # a clear error when nothing was promoted
        spec = checkpoint_path(name, params, paths)
        if spec is None:
            continue
        path = require_checkpoint(*spec)
        out.append((name, file_sha256(path)))
    return tuple(out)


def promoted_lineage(paths: Paths) -> dict[str, Any]:
    """``paths.promoted/lineage.json`` of a promoted model; UserError when nothing was promoted yet."""
    path = Path(paths.promoted) / "lineage.json"
    try:
        doc = io.read_json(path)
    except FileNotFoundError:
        doc = None
    except ValueError as exc:
        raise UserError(f"{path}: unreadable lineage file ({exc})") from exc
    if not isinstance(doc, dict) or not doc.get("promoted"):
        raise UserError(
            f"preannotate.model is trained but no model has been promoted ({path} says none); run "
            "`dvc repro train` and `maskloop promote`, or set preannotate.model to grabcut, deeplabv3 or sam"
        )
    return doc


def setup(paths: Paths, run: PreannotateRun) -> Resource:
    """Load the pre-annotator once per worker (the runner calls ``stage.setup(params)``)."""
    return Resource(model=build_preannotator(run.params.model, run.params, paths))


def record_for(item_id: str, model: Preannotator, result: Any) -> dict[str, Any]:
    """The table row of one prediction (JSON-able scalars; NaN stored as None)."""
    entropy = mean_entropy_bits(result.probability)
    sam_iou = result.sam_iou
    return {
        "item_id": item_id,
        "model": model.spec.name,
        "model_version": model.spec.version,
        "checkpoint_sha256": model.spec.checkpoint_sha256,
        "confidence": round(float(result.confidence), 6),
        "entropy": round(entropy, 6),
        "sam_iou": None if math.isnan(sam_iou) else round(float(sam_iou), 6),
        "uncertainty": round(uncertainty_from(result.confidence, entropy), 6),
        "note": str(getattr(result, "note", "")),
    }


def process(work: WorkItem, run: PreannotateRun, resource: Resource) -> ItemResult:
    """Pre-annotate one item (or carry a verified item's previous outputs over unchanged)."""
    key = work.key
    files_rel = (f"masks/{key}.png", f"prob/{key}.png")
    if work.data.get("keep"):
        return ItemResult(
            files={files_rel[0]: work.input("prev_mask").read_bytes(), files_rel[1]: work.input("prev_prob").read_bytes()},
            record=dict(work.data["keep"]),
        )
    image = io.read_image(work.input("image"))
    result = resource.model.predict(image, PredictContext(item_id=key, source=str(work.input("image"))))
    result.check_shape(image.shape[:2], resource.model.spec.name)
    return ItemResult(
        files={files_rel[0]: io.encode_png(result.mask), files_rel[1]: io.encode_png(probability_to_u8(result.probability))},
        record=record_for(key, resource.model, result),
    )


def previous_records(root: Path) -> dict[str, dict[str, Any]]:
    """Rows of the existing ``preannotations.parquet`` by item id (empty when there is none)."""
    table = Path(root) / TABLE
    if not table.is_file():
        return {}
    df = io.read_parquet(table)
    out: dict[str, dict[str, Any]] = {}
    for row in df.to_dict(orient="records"):
        rec = {c: row.get(c) for c in COLUMNS}
        v = rec.get("sam_iou")
        rec["sam_iou"] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        rec["note"] = "" if rec.get("note") is None else str(rec["note"])
        out[str(rec["item_id"])] = rec
    return out


def table(result: StageResult) -> pd.DataFrame:
    """The ok items' rows with exactly :data:`COLUMNS` and stable dtypes."""
    df = result.frame(COLUMNS)
    return df.astype(
        {
            "item_id": "string", "model": "string", "model_version": "string", "checkpoint_sha256": "string",
            "confidence": "float64", "entropy": "float64", "sam_iou": "float64", "uncertainty": "float64",
            "note": "string",
        }
    )


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> pd.DataFrame:
    """The preannotate stage; returns the table it wrote."""
    paths = load_paths(params_path)
    params = load_section(params_path, "preannotate", PreannotateParams)
    runner = load_runner(params_path)
    checkpoints = check_checkpoints(params, paths)
    items = ok_items(paths.manifest)
    root = Path(paths.preannotate)
    verified: set[str] = set()
    prev: dict[str, dict[str, Any]] = {}
    if params.model == "trained":
        verified = {str(i) for i in promoted_lineage(paths).get("verified_items", [])}
        prev = previous_records(root)
    run_cfg = PreannotateRun(params=params, checkpoints=checkpoints)
    stage: Stage[PreannotateRun] = Stage(
        name="preannotate", params=run_cfg, root=root, process=process, state_root=paths.state,
        setup=functools.partial(setup, paths), output_dirs=("masks", "prob"),
        gpu=params.model != "grabcut" and params.device != "cpu",
        code_modules=tuple(preannotator_module(n) for n in models_used(params)),
    )
    works = []
    n_kept = 0
    for item in items:
        inputs = {"image": item.image_input()}
        data: dict[str, Any] = {}
        mask, prob = root / "masks" / f"{item.item_id}.png", root / "prob" / f"{item.item_id}.png"
        if item.item_id in verified and item.item_id in prev and mask.is_file() and prob.is_file():
            inputs = {"prev_mask": FileInput(mask), "prev_prob": FileInput(prob)}
            data = {"keep": prev[item.item_id]}
            n_kept += 1
        works.append(WorkItem(key=item.item_id, inputs=inputs, data=data))
    if n_kept:
        log.info("preannotate: %d verified items keep their previous pre-annotation", n_kept)
    Path(paths.sam_cache).mkdir(parents=True, exist_ok=True)
    # the runner caches per-worker resources by stage name; a second run in the same process (tests,
    # notebooks) with other params must not reuse the previous run's model
    work_module._RESOURCE.pop(stage.name, None)
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed)
    df = table(result)
    io.write_parquet(root / TABLE, df)
    from pipeline.preannotators.sam_cache import prune

    pruned = prune(paths.sam_cache, {i.item_id for i in items})
    if pruned:
        log.info("preannotate: pruned %d SAM cache files of items no longer in the manifest", pruned)
    log.info("preannotate: %d items pre-annotated with %s (%d failed)", len(df), params.model, result.n_failed)
    return df


def status_lines(paths: Paths) -> list[str]:
    """``maskloop status`` section: models used, confidence, and how many items need a human first."""
    table = Path(paths.preannotate) / TABLE
    if not table.is_file():
        return ["no pre-annotations yet: run `dvc repro` (or `maskloop preannotate`)"]
    df = io.read_parquet(table)
    if df.empty:
        return ["0 items pre-annotated"]
    lines = []
    for (model, version), grp in df.groupby(["model", "model_version"], sort=True):
        lines.append(
            f"{len(grp):>7} items by {model} ({version}): mean confidence {grp['confidence'].mean():.2f}, "
            f"{int((grp['uncertainty'] > 0.7).sum())} with uncertainty > 0.7"
        )
    cache = Path(paths.sam_cache)
    if cache.is_dir():
        n = sum(1 for _ in cache.glob("*/*.npy"))
        if n:
            lines.append(f"{n:>7} SAM embeddings cached in {cache}")
    return lines
