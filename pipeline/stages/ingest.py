"""Ingest stage: scan the raw image folder, validate, hash, deduplicate, write the manifest.

Every file under ``paths.raw`` (recursively, sorted; hidden files and folders skipped) is one work item
keyed by its relative path. A file is **quarantined** (kept on disk, excluded, reported with the reason)
when its extension is not an image extension, it is a symlink resolving outside the raw folder, it is
empty, truncated, corrupt, not an image at all, or larger than ``ingest.max_pixels``. Good files are
decoded fully once (so truncation is caught here, not three stages later) and described by their item id,
upright size, EXIF orientation and mode. Byte-identical files collapse to one item.

Outputs: ``paths.manifest`` (Parquet, see :mod:`pipeline.core.items`), ``paths.ingest/quarantine.parquet``,
and the runner's report ``reports/ingest.{parquet,json}``.
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

from pipeline.core import io
from pipeline.core.items import MANIFEST_COLUMNS, STATUS_OK, STATUS_QUARANTINED, item_id_from_digest
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import FileInput, ItemResult, Stage, StageResult, WorkItem, hash_file, run_stage

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class IngestParams:
    """Section ``ingest`` of params.yaml."""

    extensions: tuple[str, ...] = io.IMAGE_EXTENSIONS
    max_pixels: int = io.DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        bad = [e for e in self.extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.', got {bad}")


@dataclass(frozen=True)
class RawFile:
    """A file found under the raw folder: its path relative to that folder, and a rejection reason if any."""

    rel: str
    path: Path
    reason: str = ""


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
            reason = ""
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root_real):
                    reason = f"symlink pointing outside the raw folder ({target}); refused"
                elif not target.is_file():
                    reason = f"broken symlink ({target})"
            if not reason and Path(name).suffix.lower() not in exts:
                reason = f"unsupported extension {Path(name).suffix or '(none)'!r}; accepted: {sorted(exts)}"
            yield RawFile(rel=rel, path=path, reason=reason)


def process(work: WorkItem, params: IngestParams, _resource: Any) -> ItemResult:
    """Validate one file by decoding it fully; the record describes the item. The item id comes from the
    content digest the runner already computed for the file's fingerprint (the bytes are hashed once)."""
    path = work.input("file")
    digest = work.inputs["file"].digest or hash_file(path)
    _, info = io.load_image(path, max_pixels=params.max_pixels)
    return ItemResult(
        record={
            "rel": work.data["rel"],
            "item_id": item_id_from_digest(digest),
            "width": info.width,
            "height": info.height,
            "orientation": info.orientation,
            "mode": info.mode,
            "bytes": path.stat().st_size,
        }
    )


def build_manifest(raw: Path, files: list[RawFile], result: StageResult) -> pd.DataFrame:
    """One row per unique item (duplicates collapsed) + one per quarantined file."""
    records = result.record_map()
    errors = {o.key: o.error for o in result.failures}
    by_id: dict[str, list[dict[str, Any]]] = {}
    quarantined: list[dict[str, Any]] = []
    for f in files:
        source = (Path(raw) / f.rel).as_posix()
        key = file_key(f.rel)
        if f.reason or key in errors:
            quarantined.append(
                {
                    "item_id": "", "source_path": source, "source_paths": [source], "width": 0, "height": 0,
                    "orientation": 0, "mode": "", "bytes": _size(f.path), "status": STATUS_QUARANTINED,
                    "error": f.reason or errors[key],
                }
            )
            continue
        rec = dict(records[key])
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
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
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
    manifest = build_manifest(paths.raw, files, result)
    io.write_parquet(paths.manifest, manifest)
    quarantine = manifest[manifest["status"] == STATUS_QUARANTINED][["source_path", "bytes", "error"]]
    io.write_parquet(paths.ingest / "quarantine.parquet", quarantine.reset_index(drop=True))
    n_ok = int((manifest["status"] == STATUS_OK).sum())
    n_dup = sum(len(p) - 1 for p in manifest.loc[manifest["status"] == STATUS_OK, "source_paths"])
    log.info(
        "ingest: %d items (%d duplicate files collapsed), %d quarantined", n_ok, n_dup, len(quarantine)
    )
    for row in quarantine.itertuples(index=False):
        log.warning("ingest: quarantined %s: %s", row.source_path, row.error)
    return manifest
