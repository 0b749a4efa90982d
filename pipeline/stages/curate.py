"""Curate stage: human corrections + review decisions -> QA'd final masks, QA report, review queue.

Per item (on the per-item runner, so only changed items are recomputed):

1. The **source mask** is the human correction (``paths.corrections/masks/<id>.png``, listed in
   ``corrections.parquet``) or, when there is none, the pre-annotation (``paths.preannotate/masks/<id>.png``).
2. Every check of :mod:`qa.checks` runs on it (with the photo for edge alignment, and the pre-annotation for
   the disagreement check); the photo's perceptual hash is recorded for the cross-item near-duplicate check.
3. Safe fixes (``curate.auto_fixes``) resolve what they can (binarise, small islands, small holes).
4. The latest review decision for the item (:mod:`qa.decisions`) is applied: ``reject`` excludes the item
   (the push stage sends it back for re-annotation), ``fix`` applies the named fix, ``accept`` admits it.
   A decision whose ``mask_digest`` no longer matches the source mask is **stale**: ignored, item re-queued.
5. The final mask enters ground truth when the item is verified by a human (a correction, or a reviewer's
   accept/fix) or ``curate.include_unverified`` is true (then it is marked ``verified = false``), and no
   error-level finding (unreadable, wrong size, empty, full) remains.

Stage outputs under ``paths.curated``: ``masks/<id>.png`` (included items only), ``curated.parquet``,
``qa_report.parquet`` (one row per item x check), ``review_queue.parquet``; and ``paths.metrics/qa.json``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.core import io
from pipeline.core.errors import ConfigError
from pipeline.core.items import Item, ok_items
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import (
    INDEX_NAME,
    FileInput,
    ItemResult,
    Stage,
    StageResult,
    WorkItem,
    hash_file,
    run_stage,
)
from qa import report
from qa.checks import Finding, QAParams, check_readable, max_severity, run_checks
from qa.decisions import latest_per_item, read_decisions
from qa.fixes import FIXES, SAFE_FIXES, apply_fixes
from qa.near_duplicates import phash
from qa.policy import SOURCE_CORRECTION, SOURCE_PREANNOTATION, include, queue

log = logging.getLogger(__name__)



# which safe fix resolves which check


@dataclass(frozen=True)
class CurateParams:
    """Section ``curate`` of params.yaml.

    ``include_unverified``: admit items no human has verified yet (their pre-annotation), marked
    ``verified = false`` (the demo sets it). ``auto_fixes``: safe fixes applied automatically, in order.
    ``queue_min_severity``: unresolved findings at or above this severity put an item in the review queue.
    """

    include_unverified: bool = False
    auto_fixes: tuple[str, ...] = SAFE_FIXES
    queue_min_severity: Literal["info", "warning", "error"] = "warning"

    def __post_init__(self) -> None:
        unsafe = [f for f in self.auto_fixes if f not in SAFE_FIXES]
        if unsafe:
            raise ValueError(
                f"auto_fixes {unsafe} are not safe fixes; allowed: {list(SAFE_FIXES)} "
                f"(other fixes {sorted(set(FIXES) - set(SAFE_FIXES))} are applied only by a reviewer's decision)"
            )


@dataclass(frozen=True)
class CurateConfig:
    """What the curate stage is fingerprinted by: its own section and the ``qa`` thresholds."""

    curate: CurateParams = field(default_factory=CurateParams)
    qa: QAParams = field(default_factory=QAParams)


def load_config(params_path: Path) -> CurateConfig:
    return CurateConfig(
        curate=load_section(params_path, "curate", CurateParams), qa=load_section(params_path, "qa", QAParams)
    )


# --------------------------------------------------------------------------- per item


def _finding_dict(f: Finding, fixed: bool) -> dict[str, Any]:
    return {
        "check": f.check, "passed": f.passed, "severity": f.severity, "value": _num(f.value),
        "threshold": _num(f.threshold), "fixable": f.fixable, "fix": f.fix, "region": f.region_str(),
        "detail": f.detail, "fixed": fixed,
    }


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _read_source(work: WorkItem) -> tuple[np.ndarray | None, str, str]:
    """(grey mask or None, error, sha256 of the file) of the item's source mask."""
    source = work.data["source"]
    if not source:
        return None, "no mask: neither a human correction nor a pre-annotation exists", ""
    missing = work.data.get("missing", "")
    if missing:
        return None, f"{source} mask is listed but its file is missing: {missing}", ""
    path = work.input(source)
    digest = hash_file(path)
    try:
        return io.read_gray(path), "", digest
    except io.ImageError as exc:
        return None, f"{source} mask unreadable: {exc}", digest


def process(work: WorkItem, cfg: CurateConfig, _resource: Any) -> ItemResult:
    """Curate one item (see the module docstring). The record feeds curated.parquet, qa_report.parquet
    and review_queue.parquet."""
    data = work.data
    source: str = data["source"]
    image = io.read_image(work.input("image"))
    grey, error, source_digest = _read_source(work)
    pre = None
    if grey is not None and source == SOURCE_CORRECTION and "preannotation" in work.inputs:
        try:
            pre = io.read_gray(work.input("preannotation"))
        except io.ImageError as exc:
            log.warning("item %s: pre-annotation unreadable, disagreement not measured: %s", work.key, exc)
    findings: tuple[Finding, ...]
    dis = None
    if not source:
        findings = ()  # nothing to check yet: the item waits for (pre-)annotation
    elif grey is None:
        findings = (check_readable(error),)
    else:
        rep = run_checks(grey, cfg.qa, image=image, pre=pre)
        findings, dis = rep.findings, rep.disagreement

    decision: dict[str, Any] | None = data.get("decision")
    inc = include(source, error, grey is not None, findings, decision, source_digest,
                  cfg.curate.include_unverified, cfg.curate.auto_fixes, FIXES)
    fixes: list[str] = []
    out_mask: np.ndarray | None = None
    if inc.included and grey is not None:
        out_mask, applied = apply_fixes(grey, list(inc.fixes), cfg.qa)
        fixes = [a.fix for a in applied]
    fixed_by = set(fixes)
    rows = [_finding_dict(f, fixed=bool(f.fix) and f.fix in fixed_by) for f in findings]
    queued, queue_reason = queue(inc, source, decision, findings, fixed_by, cfg.curate.include_unverified,
                                 cfg.curate.queue_min_severity, FIXES)
    included, reason, valid, kind, stale, human = inc.included, inc.reason, inc.decision, inc.kind, inc.stale, inc.verified

    files: dict[str, bytes] = {}
    mask_digest = ""
    if included and out_mask is not None:
        png = io.encode_png(out_mask)
        files[f"masks/{work.key}.png"] = png
        mask_digest = hashlib.sha256(png).hexdigest()
    record = {
        "item_id": work.key,
        "included": included,
        "verified": bool(human),
        "source": source,
        "fixes": ",".join(fixes),
        "excluded_reason": reason,
        "mask_digest": mask_digest,
        "source_digest": source_digest,
        "decision": kind,
        "decision_id": int(valid["decision_id"]) if valid else -1,
        "stale_decision": stale,
        "phash": phash(image),
        "iou_vs_preannotation": dis.iou if dis else None,
        "boundary_f": dis.boundary_f if dis else None,
        "pixels_changed": dis.pixels_changed if dis else None,
        "findings": rows,
        "queued": queued,
        "queue_reason": queue_reason,
        "max_severity": max_severity([f for f in findings if not f.passed]),
    }
    return ItemResult(files=files, record=record)


# --------------------------------------------------------------------------- stage


def corrected_ids(paths: Paths) -> set[str]:
    """Item ids with a pulled human correction (``corrections.parquet``; absent = none)."""
    table = Path(paths.corrections) / "corrections.parquet"
    if not table.is_file():
        return set()
    df = io.read_parquet(table)
    if "item_id" not in df.columns:
        raise ConfigError(f"{table}: corrections table lacks the item_id column")
    return {str(i) for i in df["item_id"]}


def build_works(items: list[Item], paths: Paths, decisions: dict[str, dict[str, Any]]) -> list[WorkItem]:
    """One work item per manifest item, with its source mask and decision (sorted by item id)."""
    corrected = corrected_ids(paths)
    works = []
    for item in items:
        inputs: dict[str, FileInput] = {"image": item.image_input()}
        data: dict[str, Any] = {"width": item.width, "height": item.height, "decision": decisions.get(item.item_id)}
        corr = Path(paths.corrections) / "masks" / f"{item.item_id}.png"
        pre = Path(paths.preannotate) / "masks" / f"{item.item_id}.png"
        if pre.is_file():
            inputs["preannotation"] = FileInput(pre)
        if item.item_id in corrected:
            data["source"] = SOURCE_CORRECTION
            if corr.is_file():
                inputs["correction"] = FileInput(corr)
            else:
                data["missing"] = corr.as_posix()
        elif pre.is_file():
            data["source"] = SOURCE_PREANNOTATION
        else:
            data["source"] = ""
        works.append(WorkItem(key=item.item_id, inputs=inputs, data=data))
    return works


def _decision_dicts(path: Path) -> dict[str, dict[str, Any]]:
    try:
        latest = latest_per_item(read_decisions(path))
    except ValueError as exc:
        raise ConfigError(f"review decisions unusable: {exc}") from exc
    return {
        k: {"decision_id": d.decision_id, "decision": d.decision, "reason": d.reason, "fix": d.fix,
            "reviewer": d.reviewer, "mask_digest": d.mask_digest}
        for k, d in sorted(latest.items())
    }


def _uncertainty(paths: Paths) -> dict[str, float]:
    table = Path(paths.preannotate) / "preannotations.parquet"
    if not table.is_file():
        return {}
    df = io.read_parquet(table)
    if "uncertainty" not in df.columns:
        return {}
    return {str(r.item_id): float(r.uncertainty) for r in df.itertuples(index=False)}


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> StageResult:
    """The curate stage (see the module docstring)."""
    paths: Paths = load_paths(params_path)
    cfg = load_config(params_path)
    runner = load_runner(params_path)
    items = ok_items(paths.manifest)
    decisions = _decision_dicts(paths.decisions)
    works = build_works(items, paths, decisions)
    stage: Stage[CurateConfig] = Stage(
        name="curate", params=cfg, root=paths.curated, process=process, state_root=paths.state,
        output_dirs=("masks",),
    )
    upstream = (paths.manifest, Path(paths.preannotate) / INDEX_NAME, paths.decisions,
                Path(paths.corrections) / "corrections.parquet")
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed, upstream=upstream)
    tables = report.build_tables(result, cfg.qa, _uncertainty(paths))
    io.write_parquet(Path(paths.curated) / "curated.parquet", tables.curated)
    io.write_parquet(Path(paths.curated) / "qa_report.parquet", tables.qa_report)
    io.write_parquet(Path(paths.curated) / "review_queue.parquet", tables.review_queue)
    io.write_json(Path(paths.metrics) / "qa.json", tables.metrics)
    m = tables.metrics
    log.info(
        "curate: %d items, %d included (%d verified, %d unverified), %d excluded, %d waiting for review",
        m["items"], m["included"], m["included_verified"], m["included_unverified"], m["excluded"],
        m["review_queue"],
    )
    if m["included_unverified"]:
        log.warning(
            "curate: %d of the %d included masks are NOT verified by a human (curate.include_unverified: true); "
            "they are pre-annotations, marked verified=false in curated.parquet",
            m["included_unverified"], m["included"],
        )
    return result

