"""Ingest stage: scan the raw image folder, validate, hash, deduplicate, write the manifest.

Every file under ``paths.raw`` (recursively, sorted; hidden files and folders skipped) is one work item
keyed by its relative path. A file is **quarantined** (kept on disk, excluded, reported with the reason)
when its extension is not an image extension, it is a symlink resolving outside the raw folder, it is
empty, truncated, corrupt (a bad PNG checksum included), not an image at all, larger than
``ingest.max_pixels`` or with a side shorter than ``ingest.min_side``. Good files are checked in full once
(so truncation is caught here, not three stages later; memory bounded, see :mod:`pipeline.core.image_check`) and
described by their item id, upright size, EXIF orientation and mode. Byte-identical files collapse to one item.

A quarantined input is data, not a failure: ingest always writes the manifest and the quarantine report and
exits 0 whatever the number of bad inputs, saying how many were set aside and why (counts by reason, also in
``reports/ingest.json``). ``runner.max_failure_fraction`` applies only to failures of ingest's own work.

Outputs: ``paths.manifest`` (Parquet, see :mod:`pipeline.core.items`), ``paths.ingest/quarantine.parquet``
(``source_path, bytes, reason, error``), and the runner's report ``reports/ingest.{parquet,json}``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import image_check, io
from pipeline.core.items import MANIFEST_COLUMNS, STATUS_OK, STATUS_QUARANTINED, item_id_from_digest
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import (
    FileInput,
    ItemResult,
    Stage,
    StageResult,
    WorkItem,
    hash_file,
    run_stage,
    summary,
)

log = logging.getLogger(__name__)

QUARANTINE_REPORT = "quarantine.parquet"
DEFAULT_MIN_SIDE = 16


@dataclass(frozen=True)
class IngestParams:
    """Section ``ingest`` of params.yaml."""

    extensions: tuple[str, ...] = io.IMAGE_EXTENSIONS
    max_pixels: int = io.DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE  # shorter side in px; below it, pre-annotation and QA have nothing to work on

    def __post_init__(self) -> None:
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.min_side < 1:
            raise ValueError(f"min_side must be >= 1, got {self.min_side}")
        bad = [e for e in self.extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.', got {bad}")


@dataclass(frozen=True)
class RawFile:
    """A file found under the raw folder: its path relative to that folder, and a rejection reason if any."""

    rel: str
    path: Path
    reason: str = ""
    code: str = ""  # short reason code when rejected (counts in the report)


def file_key(rel: str) -> str:
    """Runner key of a raw file: a hash of its relative path (file names may hold any character)."""
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:16]


def scan(raw: Path, params: IngestParams) -> Iterator[RawFile]:
    """Files under ``raw`` in sorted order, with a reason when they are rejected before decoding."""
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: raw image folder not found (paths.raw in params.yaml)")
    root_real = raw.resolve()
    exts = {e.lower() for e in params.extensions}
    for dirpath, dirnames, filenames in os.walk(raw, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(raw).as_posix()
            reason = code = ""
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root_real):
                    reason, code = f"symlink pointing outside the raw folder ({target}); refused", "symlink_outside"
                elif not target.is_file():
                    reason, code = f"broken symlink ({target})", "broken_symlink"
            if not reason and Path(name).suffix.lower() not in exts:
                reason = f"unsupported extension {Path(name).suffix or '(none)'!r}; accepted: {sorted(exts)}"
                code = "unsupported_extension"
            yield RawFile(rel=rel, path=path, reason=reason, code=code)


def process(work: WorkItem, params: IngestParams, _resource: Any) -> ItemResult:
    """Validate one file in full (bounded memory, :func:`pipeline.core.image_check.verify_image`); the record
    describes the item, or says why the file is quarantined (``quarantine``: reason code, ``error``: sentence).
    The item id comes from the content digest the runner already computed for the file's fingerprint (the
    bytes are hashed once)."""
    path = work.input("file")
    digest = work.inputs["file"].digest or hash_file(path)
    try:
        info = image_check.verify_image(path, max_pixels=params.max_pixels, min_side=params.min_side)
    except io.ImageError as exc:  # a bad input is data: it goes to the quarantine report
        return ItemResult(record={"rel": work.data["rel"], "quarantine": exc.code, "error": exc.reason})
    return ItemResult(
        record={
            "rel": work.data["rel"],
            "item_id": item_id_from_digest(digest),
            "width": info.width,
            "height": info.height,
            "orientation": info.orientation,
            "mode": info.mode,
            "bytes": path.stat().st_size,
            "quarantine": "",
        }
    )


def build_manifest(raw: Path, files: list[RawFile], result: StageResult) -> pd.DataFrame:
    """One row per unique item (duplicates collapsed) + one per quarantined file: the manifest's columns plus
    ``reason`` (the quarantine reason code, "" for good items)."""
    records = result.record_map()
    errors = {o.key: o.error for o in result.failures}
    by_id: dict[str, list[dict[str, Any]]] = {}
    quarantined: list[dict[str, Any]] = []
    for f in files:
        source = (Path(raw) / f.rel).as_posix()
        key = file_key(f.rel)
        rec = dict(records.get(key, {}))
        if f.reason or key in errors or rec.get("quarantine"):
            error = f.reason or rec.get("error") or f"ingest failed on this file: {errors.get(key, '')}"
            quarantined.append(
                {
                    "item_id": "", "source_path": source, "source_paths": [source], "width": 0, "height": 0,
                    "orientation": 0, "mode": "", "bytes": _size(f.path), "status": STATUS_QUARANTINED,
                    "error": error, "reason": f.code or rec.get("quarantine") or "ingest_failed",
                }
            )
            continue
        rec["source_path"] = source
        by_id.setdefault(rec["item_id"], []).append(rec)
    rows = []
    for item_id in sorted(by_id):
        recs = sorted(by_id[item_id], key=lambda r: r["source_path"])
        first = recs[0]
        rows.append(
            {
                "item_id": item_id, "source_path": first["source_path"],
                "source_paths": [r["source_path"] for r in recs], "width": first["width"],
                "height": first["height"], "orientation": first["orientation"], "mode": first["mode"],
                "bytes": first["bytes"], "status": STATUS_OK, "error": "",
            }
        )
    rows.extend(sorted(quarantined, key=lambda r: r["source_path"]))
    df = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "reason"])
    df["reason"] = df["reason"].fillna("")
    return df.astype({"width": "int64", "height": "int64", "orientation": "int64", "bytes": "int64"})


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> pd.DataFrame:
    """The ingest stage: returns the manifest it wrote."""
    paths: Paths = load_paths(params_path)
    params = load_section(params_path, "ingest", IngestParams)
    runner = load_runner(params_path)
    files = list(scan(paths.raw, params))
    stage: Stage[IngestParams] = Stage(
        name="ingest", params=params, root=paths.ingest, process=process, state_root=paths.state
    )
    works = [
        WorkItem(key=file_key(f.rel), inputs={"file": FileInput(f.path)}, data={"rel": f.rel})
        for f in files
        if not f.reason
    ]
    result = run_stage(stage, works, runner, reports_dir=paths.reports, retry_failed=retry_failed)
    table = build_manifest(paths.raw, files, result)
    manifest = table[list(MANIFEST_COLUMNS)]
    io.write_parquet(paths.manifest, manifest)
    quarantine = table[table["status"] == STATUS_QUARANTINED][["source_path", "bytes", "reason", "error"]]
    io.write_parquet(paths.ingest / QUARANTINE_REPORT, quarantine.reset_index(drop=True))
    reasons = {str(k): int(v) for k, v in sorted(quarantine["reason"].value_counts().items())}
    io.write_json(paths.reports / "ingest.json",
                  {**summary(result), "quarantined": len(quarantine), "quarantine_reasons": reasons})
    n_ok = int((manifest["status"] == STATUS_OK).sum())
    n_dup = sum(len(p) - 1 for p in manifest.loc[manifest["status"] == STATUS_OK, "source_paths"])
    for row in quarantine.itertuples(index=False):
        log.warning("ingest: quarantined %s: %s", row.source_path, row.error)
    log.info("ingest: %d items (%d duplicate files collapsed)", n_ok, n_dup)
    if len(quarantine):
        log.warning("ingest: %d file(s) set aside (%s); they stay where they are, listed in %s", len(quarantine),
                    ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in reasons.items()),
                    paths.ingest / QUARANTINE_REPORT)
    return manifest
