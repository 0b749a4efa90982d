"""What the review dashboard shows, loaded from the pipeline's outputs (docs/CONTRACTS.md).

Only the manifest is required; every other input is optional and simply adds columns or panels when present:

==============================================  =====================================================
file                                             used for
==============================================  =====================================================
``paths.manifest``                               items, source image, size (required)
``paths.curated/review_queue.parquet``           the flagged items: checks, severity, suggested fix
``paths.curated/qa_report.parquet``              findings (value, threshold) per item and check
``paths.curated/curated.parquet``                included / verified / source / fixes applied
``paths.curated/masks/<id>.png``                 the final mask
``paths.preannotate/preannotations.parquet``     model version, uncertainty
``paths.preannotate/masks/<id>.png``             the pre-annotation (difference view)
``paths.corrections/corrections.parquet``        annotator, lead time
``paths.corrections/masks/<id>.png``             the human correction (difference view, decision digest)
``paths.trimap/trimaps/<id>.png``                trimap panel
``paths.matte/alpha/<id>.png``                   alpha panel
``paths.composite/lineage.parquet`` + strips     composite panel
``paths.export/splits.parquet``                  split filter
``paths.review_db``                              latest decision per item (status filter)
==============================================  =====================================================

Tables are read once per file version (cached by path + mtime) so paging through thousands of items costs
only the page's thumbnails.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.hashing import sha256_file
from pipeline.core.params import Paths, load_paths
from qa.checks import SEVERITIES, SEVERITY_ALIASES
from qa.checks import severity_rank as qa_severity_rank

if TYPE_CHECKING:
    from pipeline.matting.composite import CompositeRef

log = logging.getLogger(__name__)

QUEUE_COLUMNS = (
    "item_id", "flagged", "checks", "severity", "severity_rank", "suggested_fix", "uncertainty", "model_version",
    "annotator", "split", "source", "decision", "reviewer", "image_path", "width", "height", "reason",
)
"""Columns of the queue frame (:func:`load_queue`). ``checks`` is a sorted tuple of failed check names;
``severity_rank`` orders severities (higher = worse; 0 when none); ``decision`` is the latest review decision
("" when undecided)."""

STATUS_CHOICES = ("undecided", "accept", "reject", "fix")
SortKey = Literal["severity", "uncertainty", "item_id"]


@dataclass(frozen=True)
class Project:
    """A maskloop project as the dashboard sees it: the params file, its resolved paths, where decisions go."""

    params_path: Path
    root: Path
    paths: Paths

    def p(self, rel: Path | str) -> Path:
        """A path from params, resolved against the project root."""
        path = Path(rel)
        return path if path.is_absolute() else self.root / path

    @property
    def review_db(self) -> Path:
        return self.p(self.paths.review_db)

    @property
    def thumbs(self) -> Path:
        return self.p(self.paths.state).parent / "thumbs"


def open_project(params_path: Path) -> Project:
    """The project whose params file is ``params_path`` (paths resolve against its folder)."""
    params_path = Path(params_path).resolve()
    paths = load_paths(params_path)
    return Project(params_path=params_path, root=params_path.parent, paths=paths)


# --------------------------------------------------------------------------- cached table reads

_TABLES: dict[Path, tuple[int, int, pd.DataFrame]] = {}


def read_table(path: Path, required: Sequence[str] = ()) -> pd.DataFrame | None:
    """The Parquet table at ``path`` (None when absent), cached by size + mtime; clear error on missing columns."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    cached = _TABLES.get(path)
    if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
        return cached[2]
    df = io.read_parquet(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: table lacks column(s) {missing} (has {list(df.columns)})")
    _TABLES[path] = (st.st_size, st.st_mtime_ns, df)
    return df


def severity_rank(value: Any) -> int:
    """Rank of a severity on the qa scale (:data:`qa.checks.SEVERITIES`, 0 = none), given as a word (``warning``,
    ``error``, or an alias from :data:`qa.checks.SEVERITY_ALIASES`) or as a number (a rank, rounded); 0 when empty,
    the rank of ``info`` for an unknown word."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 0
    if isinstance(value, int | float | np.integer | np.floating):
        return round(float(value))
    word = str(value).strip().lower()
    word = SEVERITY_ALIASES.get(word, word)
    if word in SEVERITIES:
        return qa_severity_rank(word)
    try:
        return round(float(word))
    except ValueError:
        return qa_severity_rank("info")


def _as_checks(value: Any) -> tuple[str, ...]:
    """Check names from a list/array or a comma-separated string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    parts = value.replace(";", ",").split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(sorted({p.strip() for p in parts if p.strip()}))


def _first(df: pd.DataFrame, *names: str) -> str | None:
    for n in names:
        if n in df.columns:
            return n
    return None


def _by_item(df: pd.DataFrame | None, column: str | None, default: Any) -> dict[str, Any]:
    if df is None or column is None or column not in df.columns or "item_id" not in df.columns:
        return {}
    sub = df[["item_id", column]].dropna()
    return {str(k): (v if v is not None else default) for k, v in zip(sub["item_id"], sub[column], strict=True)}


def load_queue(project: Project, include_all: bool = False, decisions: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The review queue as a DataFrame with :data:`QUEUE_COLUMNS`, one row per item.

    Flagged items come from ``review_queue.parquet``; with ``include_all`` every ok manifest item is listed
    (unflagged ones with empty checks), for reviewing any item on demand. ``decisions`` maps item id ->
    latest :class:`qa.decisions.ReviewDecision` (read from the database when None)."""
    paths = project.paths
    manifest = read_table(project.p(paths.manifest), required=("item_id", "source_path", "status"))
    if manifest is None:
        raise UserError(
            f"{project.p(paths.manifest)}: no manifest yet; run `dvc repro` (or `maskloop ingest`) first"
        )
    ok = manifest[manifest["status"] == "ok"]
    curated_dir = project.p(paths.curated)
    queue = read_table(curated_dir / "review_queue.parquet", required=("item_id",))
    rows: dict[str, dict[str, Any]] = {}
    if queue is not None:
        checks_col = _first(queue, "checks", "check", "failed_checks")
        sev_col = _first(queue, "max_severity", "severity")
        fix_col = _first(queue, "suggested_fix", "fix")
        unc_col = _first(queue, "uncertainty")
        why_col = _first(queue, "reason")
        for rec in queue.to_dict("records"):
            sev = rec.get(sev_col, "") if sev_col else ""
            rows[str(rec["item_id"])] = {
                "flagged": True,
                "checks": _as_checks(rec.get(checks_col)) if checks_col else (),
                "severity": "" if sev is None else str(sev),
                "severity_rank": severity_rank(sev),
                "suggested_fix": str(rec.get(fix_col) or "") if fix_col else "",
                "uncertainty": float(rec[unc_col]) if unc_col and rec.get(unc_col) is not None else float("nan"),
                "reason": str(rec.get(why_col) or "") if why_col else "",
            }
    pre = read_table(project.p(paths.preannotate) / "preannotations.parquet")
    corr = read_table(project.p(paths.corrections) / "corrections.parquet")
    cur = read_table(curated_dir / "curated.parquet")
    splits = read_table(project.p(paths.export) / "splits.parquet")
    model_version = _by_item(pre, "model_version", "")
    uncertainty = _by_item(pre, "uncertainty", float("nan"))
    annotator = _by_item(corr, "annotator", "")
    split = _by_item(splits, "split", "")
    source = _by_item(cur, "source", "")
    if decisions is None:
        from qa.decision_store import DecisionStore

        decisions = DecisionStore(project.review_db).latest()
    out = []
    for rec in ok[["item_id", "source_path", "width", "height"]].to_dict("records"):
        iid = str(rec["item_id"])
        base = rows.get(iid)
        if base is None and not include_all:
            continue
        base = base or {"flagged": False, "checks": (), "severity": "", "severity_rank": 0, "suggested_fix": "",
                        "uncertainty": float("nan"), "reason": ""}
        unc = base["uncertainty"]
        if np.isnan(unc):
            unc = float(uncertainty.get(iid, float("nan")))
        d = decisions.get(iid)
        out.append({
            "item_id": iid, **base, "uncertainty": unc, "model_version": str(model_version.get(iid, "")),
            "annotator": str(annotator.get(iid, "")), "split": str(split.get(iid, "")),
            "source": str(source.get(iid, "")), "decision": d.decision if d is not None else "",
            "reviewer": d.reviewer if d is not None else "", "image_path": str(project.p(rec["source_path"])),
            "width": int(rec["width"]), "height": int(rec["height"]),
        })
    df = pd.DataFrame(out, columns=list(QUEUE_COLUMNS))
    return df.sort_values("item_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- filtering / paging


@dataclass(frozen=True)
class Filters:
    """Queue filters; an empty tuple means "any". ``status`` values are from :data:`STATUS_CHOICES`."""

    checks: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    search: str = ""
    sort_by: SortKey = "severity"
    descending: bool = True

    def __post_init__(self) -> None:
        bad = [s for s in self.status if s not in STATUS_CHOICES]
        if bad:
            raise ValueError(f"unknown status filter {bad}; choose from {STATUS_CHOICES}")
        if self.sort_by not in ("severity", "uncertainty", "item_id"):
            raise ValueError(f"cannot sort by {self.sort_by!r}; choose severity, uncertainty or item_id")


def filter_queue(queue: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """Rows of ``queue`` matching every filter, sorted by ``f.sort_by`` (ties: the other key, then item id).

    Missing uncertainties sort last whatever the direction."""
    keep = pd.Series(True, index=queue.index)
    if f.checks:
        wanted = set(f.checks)
        keep &= queue["checks"].map(lambda cs: bool(wanted.intersection(cs)))
    for col, values in (("severity", f.severities), ("annotator", f.annotators),
                        ("model_version", f.model_versions), ("split", f.splits)):
        if values:
            keep &= queue[col].isin(values)
    if f.status:
        status = queue["decision"].replace("", "undecided")
        keep &= status.isin(f.status)
    if f.search.strip():
        keep &= queue["item_id"].str.contains(f.search.strip().lower(), regex=False)
    df = queue[keep]
    primary = {"severity": "severity_rank", "uncertainty": "uncertainty", "item_id": "item_id"}[f.sort_by]
    secondary = "uncertainty" if primary == "severity_rank" else "severity_rank"
    keys = [primary] if primary == "item_id" else [primary, secondary, "item_id"]
    asc = [not f.descending] if primary == "item_id" else [not f.descending, not f.descending, True]
    return df.sort_values(keys, ascending=asc, na_position="last", kind="stable").reset_index(drop=True)


def page_of(df: pd.DataFrame, page: int, page_size: int) -> pd.DataFrame:
    """Rows of page ``page`` (1-based; clamped into range) of ``page_size`` rows."""
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    n_pages = max(1, -(-len(df) // page_size))
    page = min(max(1, page), n_pages)
    return df.iloc[(page - 1) * page_size : page * page_size]


def n_pages(n_rows: int, page_size: int) -> int:
    return max(1, -(-n_rows // page_size))


def options(queue: pd.DataFrame, column: str) -> list[str]:
    """Distinct non-empty values of a queue column (check names are flattened), sorted."""
    if column == "checks":
        return sorted({c for cs in queue["checks"] for c in cs})
    if column == "severity":
        vals = {v for v in queue["severity"] if v}
        return sorted(vals, key=lambda v: (severity_rank(v), v))
    return sorted({str(v) for v in queue[column] if v})


# --------------------------------------------------------------------------- one item


@dataclass(frozen=True)
class CompositeFile:
    """One composite of an item: tile ``ref.tile`` of its strips under the composite stage folder ``root``."""

    root: Path
    ref: CompositeRef

    @property
    def name(self) -> str:
        return self.ref.composite_id

    def read_image(self) -> np.ndarray:
        """Its RGB uint8 ``(H, W, 3)`` image, through the composite read path
        (:func:`pipeline.matting.composite.read_composite`; raises ``ImageError`` naming the strip and composite)."""
        from pipeline.matting.composite import read_composite

        return read_composite(self.root, self.ref)[0]


@dataclass(frozen=True)
class ItemFiles:
    """Every file the item view may show (None when that stage has not produced it)."""

    item_id: str
    image: Path
    correction: Path | None
    preannotation: Path | None
    curated: Path | None
    trimap: Path | None
    alpha: Path | None
    composite: CompositeFile | None

    @property
    def reviewed_mask(self) -> Path | None:
        """The mask a decision is about: the human correction, else the pre-annotation."""
        return self.correction or self.preannotation

    def main_mask(self) -> Path | None:
        """The mask shown on the overlay: the correction, else the curated mask, else the pre-annotation."""
        return self.correction or self.curated or self.preannotation


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def item_files(project: Project, item_id: str, image_path: str | Path) -> ItemFiles:
    """Locate an item's files by the naming conventions of docs/CONTRACTS.md."""
    p = project.paths
    composite = None
    croot = project.p(p.composite)
    lineage = read_table(croot / "lineage.parquet")
    if lineage is not None and {"composite_id", "item_id", "tile"} <= set(lineage.columns):
        from pipeline.matting.composite import composite_refs, strip_paths

        mine = lineage[lineage["item_id"].astype(str) == item_id]
        try:
            refs = sorted(composite_refs(mine, croot / "lineage.parquet").values(), key=lambda r: r.tile)
        except UserError as exc:
            log.warning("%s", exc)
            refs = []
        if refs and strip_paths(croot, item_id)[0].is_file():
            composite = CompositeFile(croot, refs[0])
    return ItemFiles(
        item_id=item_id,
        image=Path(image_path),
        correction=_file(project.p(p.corrections) / "masks" / f"{item_id}.png"),
        preannotation=_file(project.p(p.preannotate) / "masks" / f"{item_id}.png"),
        curated=_file(project.p(p.curated) / "masks" / f"{item_id}.png"),
        trimap=_file(project.p(p.trimap) / "trimaps" / f"{item_id}.png"),
        alpha=_file(project.p(p.matte) / "alpha" / f"{item_id}.png"),
        composite=composite,
    )


def file_digest(path: Path | None) -> str:
    """SHA-256 hex of a file's bytes ("" for None): the ``mask_digest`` recorded with a decision."""
    return "" if path is None else sha256_file(Path(path))


FINDING_COLUMNS = ("check", "passed", "severity", "value", "threshold", "fixable")


def findings(project: Project, item_id: str) -> pd.DataFrame:
    """QA findings of one item (failed first, then by check), with whichever of :data:`FINDING_COLUMNS` exist."""
    report = read_table(project.p(project.paths.curated) / "qa_report.parquet", required=("item_id", "check"))
    if report is None:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    rows = report[report["item_id"] == item_id]
    cols = [c for c in FINDING_COLUMNS if c in rows.columns]
    extra = [c for c in ("region", "message", "detail") if c in rows.columns]
    rows = rows[cols + extra]
    if "passed" in rows.columns:
        rows = rows.sort_values(["passed", "check"], kind="stable")
    return rows.reset_index(drop=True)


def curated_row(project: Project, item_id: str) -> dict[str, Any]:
    cur = read_table(project.p(project.paths.curated) / "curated.parquet")
    if cur is None or "item_id" not in cur.columns:
        return {}
    rows = cur[cur["item_id"] == item_id]
    return {} if rows.empty else dict(rows.iloc[0])


def available_fixes() -> tuple[str, ...]:
    """Names of the auto-fixes :mod:`qa.fixes` offers (empty when that module is not there yet)."""
    try:
        import qa.fixes as fixes
    except ImportError:
        return ()
    for name in ("FIXES", "REGISTRY", "fixes"):
        reg = getattr(fixes, name, None)
        if isinstance(reg, Mapping):
            return tuple(sorted(str(k) for k in reg))
    return ()


# --------------------------------------------------------------------------- overview


def check_counts(project: Project) -> pd.DataFrame:
    """Items per check and outcome: columns ``check``, ``status`` (passed / failed), ``items``."""
    report = read_table(project.p(project.paths.curated) / "qa_report.parquet", required=("item_id", "check"))
    if report is None or "passed" not in report.columns:
        return pd.DataFrame(columns=["check", "status", "items"])
    df = report.assign(status=report["passed"].map(lambda p: "passed" if bool(p) else "failed"))
    out = df.groupby(["check", "status"], sort=True)["item_id"].nunique().reset_index(name="items")
    return out


def decision_counts(queue: pd.DataFrame) -> pd.DataFrame:
    """Items per review status (undecided / accept / reject / fix) among ``queue``'s rows."""
    status = queue["decision"].replace("", "undecided")
    counts = status.value_counts()
    return pd.DataFrame({"status": list(STATUS_CHOICES), "items": [int(counts.get(s, 0)) for s in STATUS_CHOICES]})


def correction_effort(project: Project) -> pd.DataFrame:
    """Correction effort per pre-annotation model version: items pre-annotated, items corrected, median lead time
    (s), and -- when QA measured it -- the mean pre-annotation/correction disagreement value; when ``evaluate``
    ran (``paths.metrics/effort.json``), the mean pixels a brush annotator changed and the simulated clicks a
    click annotator would need (NoC@90, docs/refine.md)."""
    pre = read_table(project.p(project.paths.preannotate) / "preannotations.parquet")
    cols = ["model_version", "items", "corrected", "median_lead_time_s", "mean_disagreement", "mean_pixels_changed",
            "simulated_noc90"]
    if pre is None or "model_version" not in pre.columns:
        return pd.DataFrame(columns=cols)
    corr = read_table(project.p(project.paths.corrections) / "corrections.parquet")
    df = pre[["item_id", "model_version"]].copy()
    if corr is not None and "item_id" in corr.columns:
        c = corr[["item_id", *[x for x in ("lead_time",) if x in corr.columns]]].copy()
        c["corrected"] = True
        df = df.merge(c, on="item_id", how="left")
    else:
        df["corrected"] = False
    if "lead_time" not in df.columns:
        df["lead_time"] = np.nan
    report = read_table(project.p(project.paths.curated) / "qa_report.parquet")
    df["disagreement"] = np.nan
    if report is not None and {"check", "value", "item_id"} <= set(report.columns):
        dis = report[report["check"].astype(str).str.contains("disagree|iou|changed", regex=True)]
        if not dis.empty:
            first = dis.sort_values("check").groupby("item_id")["value"].first()
            df["disagreement"] = pd.to_numeric(df["item_id"].map(first), errors="coerce")
    df["corrected"] = df["corrected"].fillna(False).astype(bool)
    g = df.groupby("model_version", sort=True)
    out = pd.DataFrame({
        "items": g["item_id"].count(),
        "corrected": g["corrected"].sum().astype(int),
        "median_lead_time_s": g["lead_time"].median(),
        "mean_disagreement": g["disagreement"].mean(),
    }).reset_index()
    pixels, clicks = effort_metrics(project)
    out["mean_pixels_changed"] = out["model_version"].map(pixels).astype(float)
    out["simulated_noc90"] = out["model_version"].map(clicks).astype(float)
    return out[cols]


def effort_metrics(project: Project) -> tuple[dict[str, float], dict[str, float]]:
    """``evaluate``'s ``paths.metrics/effort.json`` (rows keyed ``model@model_version``) as two maps by model
    version: mean pixels changed, mean simulated NoC@90 (missing values left out; empty maps without the file)."""
    import json

    path = project.p(project.paths.metrics) / "effort.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    pixels: dict[str, float] = {}
    clicks: dict[str, float] = {}
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict):
            continue
        version = str(r.get("model_version", "")).split("@", 1)[-1]
        if isinstance(r.get("mean_pixels_changed"), int | float):
            pixels[version] = float(r["mean_pixels_changed"])
        if isinstance(r.get("mean_noc90"), int | float):
            clicks[version] = float(r["mean_noc90"])
    return pixels, clicks


# --------------------------------------------------------------------------- metrics between revisions


@dataclass(frozen=True)
class Revision:
    rev: str
    label: str


WORKSPACE = Revision("workspace", "workspace (uncommitted)")


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed in {root}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def revisions(project: Project, limit: int = 30) -> list[Revision]:
    """The workspace plus the last ``limit`` commits (empty list of commits outside a git repository)."""
    try:
        log_text = _git(project.root, "log", f"-n{limit}", "--format=%h%x09%ad%x09%s", "--date=short")
    except (UserError, OSError):
        return [WORKSPACE]
    revs = [WORKSPACE]
    for line in log_text.splitlines():
        h, date, subject = ([*line.split("\t", 2), "", ""])[:3]
        revs.append(Revision(h, f"{h} {date} {subject[:60]}"))
    return revs


def _flatten(obj: Any, prefix: str, out: dict[str, float]) -> None:
    if isinstance(obj, Mapping):
        for k in sorted(obj):
            _flatten(obj[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (bool, int | float)):
        out[prefix] = float(obj)


def metrics_at(project: Project, rev: str) -> dict[str, float]:
    """Every numeric value of the JSON files under ``paths.metrics`` at git revision ``rev`` (or the workspace),
    flattened to ``file.json:key.sub`` -> value."""
    metrics_dir = Path(project.paths.metrics)
    out: dict[str, float] = {}
    if rev == WORKSPACE.rev:
        base = project.p(metrics_dir)
        for f in sorted(base.glob("**/*.json")) if base.is_dir() else []:
            flat: dict[str, float] = {}
            try:
                _flatten(json.loads(f.read_text(encoding="utf-8")), "", flat)
            except ValueError:
                log.warning("%s: not valid JSON; skipped", f)
                continue
            out.update({f"{f.relative_to(base).as_posix()}:{k}": v for k, v in flat.items()})
        return out
    rel = metrics_dir.as_posix() if not metrics_dir.is_absolute() else ""
    if not rel:
        return out
    names = _git(project.root, "ls-tree", "-r", "--name-only", rev, "--", rel).split()
    for name in sorted(n for n in names if n.endswith(".json")):
        try:
            data = json.loads(_git(project.root, "show", f"{rev}:{name}"))
        except ValueError:
            continue
        flat = {}
        _flatten(data, "", flat)
        out.update({f"{Path(name).relative_to(rel).as_posix()}:{k}": v for k, v in flat.items()})
    return out


def metrics_diff(old: Mapping[str, float], new: Mapping[str, float]) -> pd.DataFrame:
    """Table of ``metric``, ``old``, ``new``, ``change`` (NaN where a side lacks the metric), sorted by metric."""
    keys = sorted(set(old) | set(new))
    rows = []
    for k in keys:
        a, b = old.get(k, float("nan")), new.get(k, float("nan"))
        rows.append({"metric": k, "old": a, "new": b, "change": b - a})
    return pd.DataFrame(rows, columns=["metric", "old", "new", "change"])

