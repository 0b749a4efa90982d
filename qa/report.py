"""Assemble the curate stage's tables and metrics from per-item records (pure: no file I/O).

- ``curated.parquet`` (:data:`CURATED_COLUMNS`): one row per item, including items whose curation failed
  (``included = false``, reason in ``excluded_reason``).
- ``qa_report.parquet`` (:data:`REPORT_COLUMNS`): one row per item x check that ran. Checks that could not
  run (no image, unreadable mask) have no row; the ``readable`` row says why.
- ``review_queue.parquet`` (:data:`QUEUE_COLUMNS`): items needing a reviewer's decision, most severe first,
  then most uncertain.
- ``metrics/qa.json``: counts (items, included, verified/unverified, excluded, queue length) and, per
  check, how many items failed it and how many of those a safe fix resolved.

The cross-item near-duplicate check happens here: perceptual hashes from the records are clustered
(:func:`qa.near_duplicates.cluster`) and every item gets a ``near_duplicate`` row and a ``dup_group`` id (the
smallest item id of its group), which export uses for leak-free splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qa.checks import CHECKS, QAParams, severity_rank
from qa.near_duplicates import cluster, hamming, neighbours

CURATED_COLUMNS = (
    "item_id", "included", "verified", "source", "fixes", "excluded_reason", "mask_digest", "source_digest",
    "decision", "decision_id", "stale_decision", "dup_group", "phash", "iou_vs_preannotation", "boundary_f",
    "pixels_changed",
)
REPORT_COLUMNS = (
    "item_id", "check", "passed", "severity", "value", "threshold", "fixable", "fix", "fixed", "region", "detail",
)
QUEUE_COLUMNS = (
    "item_id", "checks", "max_severity", "suggested_fix", "uncertainty", "reason", "source", "verified",
)


@dataclass(frozen=True)
class CurateTables:
    """Everything the curate stage writes besides the masks."""

    curated: pd.DataFrame
    qa_report: pd.DataFrame
    review_queue: pd.DataFrame
    metrics: dict[str, Any]


def _near_duplicate_rows(records: Mapping[str, Mapping[str, Any]], params: QAParams) -> tuple[
        dict[str, str], dict[str, dict[str, Any]]]:
    hashes = {k: str(r["phash"]) for k, r in records.items() if r.get("phash")}
    groups = cluster(hashes, params.phash_max_distance)
    near = neighbours(hashes, groups)
    rows: dict[str, dict[str, Any]] = {}
    for k in sorted(hashes):
        others = near[k]
        if not others:
            rows[k] = {"check": "near_duplicate", "passed": True, "severity": "none", "value": None,
                       "threshold": float(params.phash_max_distance), "fixable": False, "fix": "", "region": "",
                       "detail": "", "fixed": False}
            continue
        dist = min(hamming(hashes[k], hashes[o]) for o in others)
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        rows[k] = {"check": "near_duplicate", "passed": False, "severity": "info", "value": float(dist),
                   "threshold": float(params.phash_max_distance), "fixable": False, "fix": "", "region": "",
                   "detail": f"near-duplicate image of {shown} (group {groups[k]}; kept in one split)",
                   "fixed": False}
    return groups, rows


def build_tables(result: Any, params: QAParams, uncertainty: Mapping[str, float]) -> CurateTables:
    """Tables and metrics from a curate :class:`pipeline.core.runner.StageResult` (records sorted by item id)."""
    records: dict[str, Mapping[str, Any]] = dict(result.records)
    groups, dup_rows = _near_duplicate_rows(records, params)

    curated_rows: list[dict[str, Any]] = []
    report_rows: list[dict[str, Any]] = []
    queue_rows: list[dict[str, Any]] = []
    for key, rec in sorted(records.items()):
        row = {c: rec.get(c) for c in CURATED_COLUMNS}
        row["dup_group"] = groups.get(key, key)
        curated_rows.append(row)
        findings = list(rec.get("findings", []))
        if key in dup_rows:
            findings.append(dup_rows[key])
        order = {c: i for i, c in enumerate(CHECKS)}
        for f in sorted(findings, key=lambda f: order.get(f["check"], len(order))):
            report_rows.append({"item_id": key, **{c: f.get(c) for c in REPORT_COLUMNS if c != "item_id"}})
        if rec.get("queued"):
            min_sev = "info" if rec.get("queue_reason") else "warning"
            bad = [f for f in rec.get("findings", []) if not f["passed"] and not f["fixed"]
                   and severity_rank(f["severity"]) >= severity_rank(min_sev)]
            suggested = next((f["fix"] for f in bad if f["fix"]), "")
            reasons = [f"{f['check']}: {f['detail']}" for f in bad]
            if rec.get("queue_reason"):
                reasons.insert(0, str(rec["queue_reason"]))
            queue_rows.append({
                "item_id": key,
                "checks": ",".join(f["check"] for f in bad) or ("stale_decision" if rec.get("stale_decision") else ""),
                "max_severity": max((f["severity"] for f in bad), key=severity_rank, default="info"),
                "suggested_fix": suggested,
                "uncertainty": float(uncertainty.get(key, np.nan)),
                "reason": "; ".join(reasons),
                "source": rec.get("source", ""),
                "verified": bool(rec.get("verified")),
            })
    for o in result.failures:
        curated_rows.append({c: None for c in CURATED_COLUMNS} | {
            "item_id": o.key, "included": False, "verified": False, "source": "", "fixes": "",
            "excluded_reason": f"curate failed: {o.error}", "mask_digest": "", "source_digest": "", "decision": "",
            "decision_id": -1, "stale_decision": False, "dup_group": o.key, "phash": "",
        })
    curated = pd.DataFrame(sorted(curated_rows, key=lambda r: r["item_id"]), columns=list(CURATED_COLUMNS))
    curated = curated.astype({
        "included": "bool", "verified": "bool", "stale_decision": "bool", "decision_id": "int64",
        "iou_vs_preannotation": "float64", "boundary_f": "float64", "pixels_changed": "float64",
    })
    qa_report = pd.DataFrame(report_rows, columns=list(REPORT_COLUMNS)).astype(
        {"passed": "bool", "fixable": "bool", "fixed": "bool", "value": "float64", "threshold": "float64"}
    )
    queue = pd.DataFrame(queue_rows, columns=list(QUEUE_COLUMNS))
    if len(queue):
        queue["_rank"] = [-severity_rank(s) for s in queue["max_severity"]]
        queue["_unc"] = -queue["uncertainty"].fillna(-1.0)
        queue = queue.sort_values(["_rank", "_unc", "item_id"], kind="stable").drop(columns=["_rank", "_unc"])
    queue = queue.reset_index(drop=True).astype({"uncertainty": "float64", "verified": "bool"})
    return CurateTables(curated, qa_report, queue, metrics(curated, qa_report, queue))


def metrics(curated: pd.DataFrame, qa_report: pd.DataFrame, queue: pd.DataFrame) -> dict[str, Any]:
    """``metrics/qa.json``: counts that ``dvc metrics diff`` compares between dataset versions."""
    inc = curated["included"].astype(bool)
    ver = curated["verified"].astype(bool)
    by_check: dict[str, dict[str, int]] = {}
    for check in CHECKS:
        rows = qa_report[qa_report["check"] == check]
        if len(rows) == 0:
            continue
        failed = rows[~rows["passed"].astype(bool)]
        by_check[check] = {"checked": len(rows), "failed": len(failed), "fixed": int(failed["fixed"].sum())}
    fixes: dict[str, int] = {}
    for s in curated["fixes"].fillna(""):
        for name in filter(None, str(s).split(",")):
            fixes[name] = fixes.get(name, 0) + 1
    return {
        "items": len(curated),
        "included": int(inc.sum()),
        "included_verified": int((inc & ver).sum()),
        "included_unverified": int((inc & ~ver).sum()),
        "excluded": int((~inc).sum()),
        "rejected": int((curated["decision"] == "reject").sum()),
        "stale_decisions": int(curated["stale_decision"].sum()),
        "review_queue": len(queue),
        "near_duplicate_groups": int(curated.groupby("dup_group").size().gt(1).sum()) if len(curated) else 0,
        "fixes": dict(sorted(fixes.items())),
        "checks": by_check,
    }

