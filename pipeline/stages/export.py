"""Export stage: the versioned dataset (COCO RLE, matting folders, leak-free splits, dataset card).

Reads the curated masks (``paths.curated``), and, when present, trimaps, alpha + foreground, composites with
their lineage, pre-annotations, corrections and review decisions. The dataset under ``paths.export``::

    matting/image/<id>.png        upright RGB source image (items) or composite image
    matting/mask/<id>.png         binary mask {0,255}
    matting/trimap/<id>.png       {0,128,255}            (when the trimap stage produced one; a composite's is
                                                          derived from its alpha)
    matting/alpha/<id>.png        8-bit alpha            (when the matte/composite stages produced one)
    matting/foreground/<id>.png   RGB foreground colour  (items with a matte only)
    matting/cutout/<id>.png       RGBA cutout: straight foreground colours + alpha, 8 or 16 bit as the
                                  matte (``matte.alpha_bits``); items with a matte only (pipeline.dataset.cutout)
    coco/<split>.json             COCO instances, one ``foreground`` annotation per image, RLE segmentation
    splits/<split>.txt            file stems of the split (items and their composites)
    splits.parquet                item_id, split, component, fg_fraction, dup_group, n_composites
    dataset.json                  dataset version (content hash), counts, split sizes
    README.md                     the dataset card
    matting.parquet               every matting file of the dataset: name, folder, path, sha256, bytes, written

**By reference.** Only the folders in ``export.materialize`` (default ``image`` and ``mask``: what COCO readers,
training and evaluation open) are written as files, and only for the items; the others (trimap, alpha,
foreground, cutout: each a pure function of upstream stage outputs that DVC already versions) and every file of
the composites (tiles of the composite stage's strips) are listed in ``matting.parquet`` with their SHA-256.
Composites are written as files only when ``materialize`` names all six folders (the full layout here).
Training reads a composite's image and mask from the strips (:class:`pipeline.dataset.exported.ExportReader`,
checked against those digests), and ``maskloop materialize --out DIR`` writes the complete folder layout, byte-identical to what the
export would have written and checked against those digests (:mod:`pipeline.commands.materialize`). The dataset
version and the COCO documents are the same either way (the version hashes every file's bytes).

Per-item work (decode, RLE, copy files) runs on the incremental runner: only changed items are redone.
Splits (:mod:`pipeline.dataset.splits`) are recomputed from all items each run (cheap) and are deterministic.
Near-duplicates: each item's ``dup_group`` from ``curated.parquet`` (curate's perceptual hash at
``qa.phash_max_distance``, :mod:`qa.near_duplicates`) is a group key, so a group never straddles splits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.items import Item, ok_items
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_runner, load_section
from pipeline.core.runner import INDEX_NAME, FileInput, ItemResult, Stage, WorkItem, run_stage
from pipeline.dataset.cutout import cutout, read_alpha_native
from pipeline.dataset.exported import MATTING_TABLE
from pipeline.dataset.splits import SPLITS, SplitItem, assign_splits, components
from pipeline.matting.composite import (
    CompositeParams,
    CompositeRef,
    composite_mask,
    composite_refs,
    read_composite,
    strip_paths,
)

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ("item_id", "split", "component", "fg_fraction", "dup_group", "n_composites")
MATTING_COLUMNS = ("name", "folder", "path", "sha256", "bytes", "written")
CATEGORY = {"id": 1, "name": "foreground", "supercategory": "foreground"}
MattingFolder = Literal["image", "mask", "trimap", "alpha", "foreground", "cutout"]
FOLDERS: tuple[MattingFolder, ...] = ("image", "mask", "trimap", "alpha", "foreground", "cutout")


@dataclass(frozen=True)
class SplitFractions:
    """Shares of items per split (must sum to 1)."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.val, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"splits must be >= 0 and sum to 1, got train={self.train} val={self.val} test={self.test}")

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class ExportParams:
    """Section ``export`` of params.yaml.

    ``require_verified``: export only items a human verified (curated ``verified``); otherwise every
    ``included`` item. Near-duplicate groups (``dup_group``) come from curate (``qa.phash_max_distance``) and
    are never split apart. ``n_strata``: foreground-size strata.
    ``composites``: include composites (in their source item's split).
    ``materialize``: matting folders written as files for the items; the others, and all composites' files, are
    listed by reference in ``matting.parquet`` and written on demand by ``maskloop materialize`` (all six: the
    full layout in the export folder itself, composites included; see :func:`writes`).
    """

    seed: int = 0
    splits: SplitFractions = field(default_factory=SplitFractions)
    n_strata: int = 3
    require_verified: bool = True
    composites: bool = True
    png_compression: int = 3
    materialize: tuple[MattingFolder, ...] = ("image", "mask")

    def __post_init__(self) -> None:
        if not {"image", "mask"} <= set(self.materialize):
            raise ValueError(f"materialize must include image and mask (COCO, training and evaluation read them), "
                             f"got {list(self.materialize)}")
        if self.n_strata < 1:
            raise ValueError(f"n_strata must be >= 1, got {self.n_strata}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"png_compression must be in [0, 9], got {self.png_compression}")


# --------------------------------------------------------------------------- pure helpers


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a ``(H, W)`` mask (nonzero = foreground): ``{"size": [H, W], "counts": str}``."""
    import cv2
    from pycocotools import mask as mask_util

    binary = (mask > 0).astype(np.uint8)
    fortran = cv2.transpose(binary).T if binary.size else np.asfortranarray(binary)  # column-major, cheap
    rle = mask_util.encode(np.asfortranarray(fortran))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii")}


def rle_area_bbox(rle: Mapping[str, Any]) -> tuple[float, list[float]]:
    """Area (pixels) and ``[x, y, w, h]`` box of a COCO RLE (pycocotools conventions)."""
    from pycocotools import mask as mask_util

    enc = {"size": list(rle["size"]), "counts": str(rle["counts"]).encode("ascii")}
    return float(mask_util.area(enc)), [float(v) for v in mask_util.toBbox(enc)]


def coco_document(records: Sequence[Mapping[str, Any]], split: str, version: str) -> dict[str, Any]:
    """A COCO instances document for ``records`` (sorted by ``name``); ids count from 1 in that order."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, rec in enumerate(sorted(records, key=lambda r: str(r["name"])), start=1):
        images.append(
            {
                "id": i,
                "file_name": f"matting/image/{rec['name']}.png",
                "width": int(rec["width"]),
                "height": int(rec["height"]),
                "item_id": rec["item_id"],
                "composite": bool(rec["composite"]),
            }
        )
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": CATEGORY["id"],
                "segmentation": {"size": list(rec["rle_size"]), "counts": rec["rle_counts"]},
                "area": float(rec["area"]),
                "bbox": [float(v) for v in rec["bbox"]],
                "iscrowd": 0,
            }
        )
    return {
        "info": {"description": f"maskloop export, split {split}", "version": version},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(CATEGORY)],
    }


def dataset_version(rows: Sequence[tuple[str, str, str]]) -> str:
    """Content hash (16 hex digits) of ``(name, split, output digest)`` rows: the dataset version."""
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update("\0".join(row).encode() + b"\n")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- per-item work


def composite_mask_trimap(alpha: np.ndarray, trimap_px: int) -> tuple[np.ndarray, np.ndarray]:
    """A composite's mask and trimap from its ``(H, W)`` uint8 alpha, exactly as
    :func:`pipeline.matting.composite.compose` makes them: mask ``{0, 255}`` where ``a >= 128``; trimap
    ``{0, 128, 255}`` = :func:`pipeline.matting.composite.trimap_from_alpha` (``trimap_px``: ``composite.trimap_px``).
    The composite stage stores only image + alpha; export writes these two into the dataset."""
    from pipeline.matting.composite import trimap_from_alpha

    return composite_mask(alpha), trimap_from_alpha(alpha, trimap_px)


def writes(materialize: Sequence[str], folder: str, composite: bool) -> bool:
    """Whether the export writes ``folder``'s file of an item (``composite`` false) or of a composite as a file.

    Items: the folders in ``export.materialize``. Composites: none unless ``materialize`` names all six folders
    (the full layout in the export folder); otherwise their files are listed by reference in ``matting.parquet``
    and read from the composite stage's strips (:class:`pipeline.dataset.exported.ExportReader`, what
    ``maskloop train`` uses) or written by ``maskloop materialize --out DIR``."""
    if composite:
        return set(FOLDERS) <= set(materialize)
    return folder in materialize


def process(work: WorkItem, params: ExportParams, _resource: Any) -> ItemResult:
    """Copy one item's (or composite's) files into the matting folders and compute its RLE record."""
    name = str(work.data["name"])
    compression = params.png_compression
    files: dict[str, bytes] = {}
    trimap: np.ndarray | None = None
    if work.data["composite"]:  # image + alpha from its item's strips; mask and trimap derived from the alpha
        ref = CompositeRef(name, str(work.data["item_id"]), int(work.data["tile"]), int(work.data["count"]))
        image, alpha_c = read_composite(Path(str(work.data["root"])), ref)
        h, w = image.shape[:2]
        mask, trimap = composite_mask_trimap(alpha_c, int(work.data["trimap_px"]))
    else:
        image = io.read_image(work.input("image"))
        h, w = image.shape[:2]
        mask = io.read_mask(work.input("mask"), shape=(h, w))
        if "trimap" in work.inputs:
            trimap = io.read_trimap(work.input("trimap"), shape=(h, w))
    files[f"matting/image/{name}.png"] = io.encode_png(image, compression)
    files[f"matting/mask/{name}.png"] = io.encode_png(mask, compression)
    if trimap is not None:
        files[f"matting/trimap/{name}.png"] = io.encode_png(trimap, compression)
    if work.data["composite"]:
        files[f"matting/alpha/{name}.png"] = io.encode_png(alpha_c, compression)
    elif "alpha" in work.inputs:
        alpha = io.read_gray(work.input("alpha"))
        if alpha.shape != (h, w):
            raise ValueError(f"{work.input('alpha')}: alpha is {alpha.shape[1]}x{alpha.shape[0]}, expected {w}x{h}")
        files[f"matting/alpha/{name}.png"] = io.encode_png(alpha, compression)
    if "foreground" in work.inputs:
        fg = io.read_image(work.input("foreground"))
        if fg.shape[:2] != (h, w):
            raise ValueError(f"{work.input('foreground')}: foreground is {fg.shape[1]}x{fg.shape[0]}, expected {w}x{h}")
        files[f"matting/foreground/{name}.png"] = io.encode_png(fg, compression)
        if "alpha" in work.inputs:
            cut = cutout(fg, read_alpha_native(work.input("alpha")))
            files[f"matting/cutout/{name}.png"] = io.encode_png(cut, compression)
    rle = encode_rle(mask)
    area, bbox = rle_area_bbox(rle)
    digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()
    written = {k: v for k, v in files.items() if writes(params.materialize, k.split("/")[1], bool(work.data["composite"]))}
    return ItemResult(
        files=written,
        record={
            "name": name,
            "item_id": str(work.data["item_id"]),
            "composite": bool(work.data["composite"]),
            "width": int(w),
            "height": int(h),
            "rle_size": rle["size"],
            "rle_counts": rle["counts"],
            "area": area,
            "bbox": bbox,
            "fg_fraction": area / float(h * w) if h * w else 0.0,
            "digest": digest,
            "folders": sorted({k.split("/")[1] for k in files}),
            # every matting file of this image (written or by reference): path, sha256, bytes
            "files": [[k, hashlib.sha256(files[k]).hexdigest(), len(files[k])] for k in sorted(files)],
        },
    )


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ExportInputs:
    """Everything the export reads besides the per-item files (tables may be empty)."""

    items: tuple[Item, ...]
    curated: Any  # pandas DataFrame
    lineage: Any
    preannotations: Any
    corrections: Any
    decisions: Any
    qa_report: Any


def _table(path: Path) -> Any:
    import pandas as pd

    return io.read_parquet(path) if Path(path).is_file() else pd.DataFrame()


def selected_items(curated: Any, require_verified: bool, where: Path) -> list[str]:
    """Item ids the export contains (sorted): included (and, by default, verified) curated items.

    Raises :class:`UserError` when ``curated`` lacks the needed columns or no item qualifies.
    """
    need = {"item_id", "included", "verified", "dup_group"}
    missing = need - set(curated.columns)
    if missing:
        raise UserError(f"{where}: curated table lacks columns {sorted(missing)}; re-run `dvc repro curate`")
    sel = curated[curated["included"].astype(bool)]
    n_included = len(sel)
    if require_verified:
        sel = sel[sel["verified"].astype(bool)]
    ids = sorted(str(i) for i in sel["item_id"])
    if not ids:
        if require_verified:
            raise UserError(
                f"{where}: nothing to export: 0 of {len(curated)} curated items are verified by a human "
                f"({n_included} included); pull corrections / accept items in the review dashboard first, or set "
                "export.require_verified: false to export unverified pre-annotations"
            )
        raise UserError(f"{where}: nothing to export: none of {len(curated)} curated items is included")
    return ids


def build_works(paths: Paths, ids: Sequence[str], items: Mapping[str, Item], lineage: Any,
                composites: bool, trimap_px: int = 5) -> list[WorkItem]:
    """One work item per exported item, plus one per composite of an exported item (when enabled; a
    composite's mask and trimap are derived from its alpha with ``trimap_px`` = ``composite.trimap_px``)."""
    works: list[WorkItem] = []
    curated_masks = Path(paths.curated) / "masks"
    for item_id in ids:
        if item_id not in items:
            raise UserError(f"item {item_id}: in curated.parquet but not an ok item of {paths.manifest}")
        mask = curated_masks / f"{item_id}.png"
        if not mask.is_file():
            raise UserError(f"item {item_id}: curated mask {mask} is missing; re-run `dvc repro curate`")
        inputs = {"image": items[item_id].image_input(), "mask": FileInput(mask)}
        for name, p in (
            ("trimap", Path(paths.trimap) / "trimaps" / f"{item_id}.png"),
            ("alpha", Path(paths.matte) / "alpha" / f"{item_id}.png"),
            ("foreground", Path(paths.matte) / "foreground" / f"{item_id}.png"),
        ):
            if p.is_file():
                inputs[name] = FileInput(p)
        works.append(WorkItem(key=item_id, inputs=inputs, data={"name": item_id, "item_id": item_id, "composite": False}))
    if composites and len(lineage) and {"composite_id", "item_id"} <= set(lineage.columns):
        wanted = set(ids)
        croot = Path(paths.composite)
        refs = composite_refs(lineage, croot / "lineage.parquet")
        for cid in sorted(refs):
            ref = refs[cid]
            if ref.item_id not in wanted:
                continue
            image, calpha = strip_paths(croot, ref.item_id)
            if not image.is_file() or not calpha.is_file():
                log.warning("composite %s of item %s: image or alpha strip missing under %s; skipped", cid,
                            ref.item_id, croot)
                continue
            # the strips are the inputs (content digests: a changed strip recomputes its composites); the
            # composite itself is read through pipeline.matting.composite.read_composite
            inputs = {"image": FileInput(image), "alpha": FileInput(calpha)}
            works.append(WorkItem(key=cid, inputs=inputs,
                                  data={"name": cid, "item_id": ref.item_id, "composite": True, "trimap_px": trimap_px,
                                        "root": croot.as_posix(), "tile": ref.tile, "count": ref.count}))
    return works


def split_table(
    records: Mapping[str, Mapping[str, Any]], dup_groups: Mapping[str, str], lineage: Any, params: ExportParams
) -> Any:
    """The ``splits.parquet`` frame: one row per exported item (composites follow their item).

    ``dup_groups``: item id -> near-duplicate group from curate (``curated.parquet`` ``dup_group``); an item
    missing there is its own group.
    """
    import pandas as pd

    item_recs = {k: r for k, r in records.items() if not r["composite"]}
    n_comp = Counter(str(r["item_id"]) for r in records.values() if r["composite"])
    dup = {k: str(dup_groups.get(k) or k) for k in item_recs}
    groups: dict[str, list[str]] = {k: ["dup-" + dup[k]] for k in item_recs}
    # Composite lineage: an item is tied to any other exported item used as its composites' background.
    if len(lineage) and {"item_id", "background"} <= set(lineage.columns):
        for row in lineage.itertuples(index=False):
            src, bg = str(row.item_id), Path(str(row.background)).stem
            if src in groups and bg in groups and bg != src:
                groups[src].append("bg-" + min(src, bg) + "-" + max(src, bg))
                groups[bg].append("bg-" + min(src, bg) + "-" + max(src, bg))
    split_items = [SplitItem(k, float(item_recs[k]["fg_fraction"]), tuple(sorted(groups[k]))) for k in sorted(item_recs)]
    assignment = assign_splits(split_items, params.splits.as_dict(), params.seed, params.n_strata)
    comp = components(split_items)
    rows = [
        {
            "item_id": k,
            "split": assignment[k],
            "component": comp[k],
            "fg_fraction": float(item_recs[k]["fg_fraction"]),
            "dup_group": dup[k],
            "n_composites": int(n_comp.get(k, 0)),
        }
        for k in sorted(item_recs)
    ]
    return pd.DataFrame(rows, columns=list(SPLIT_COLUMNS))


# --------------------------------------------------------------------------- dataset card


def _col(df: Any, name: str) -> Any:
    return df[name] if name in getattr(df, "columns", ()) else None


def dataset_card(summary: Mapping[str, Any], inputs: ExportInputs, ids: Sequence[str], splits: Any) -> str:
    """The export's ``README.md`` (deterministic markdown: counts, QA, splits, provenance)."""
    idset = set(ids)
    lines = [
        f"# maskloop dataset {summary['version']}",
        "",
        "Binary foreground masks with trimaps, alpha mattes and synthetic composites, curated by humans with maskloop.",
        "",
        "## Contents",
        "",
        "| | count |",
        "|---|---|",
        f"| items (source photos) | {summary['items']} |",
        f"| items verified by a human | {summary['verified']} |",
        f"| composites | {summary['composites']} |",
    ]
    for folder in FOLDERS:
        lines.append(f"| files in `matting/{folder}/` | {summary['files'].get(folder, 0)} |")
    lines += ["", "## Splits", "", "Stratified by foreground size, grouped by near-duplicate cluster and composite "
              "lineage (no image, its near-duplicates or its composites on two sides).", "",
              "| split | items | composites | COCO images |", "|---|---|---|---|"]
    for s in SPLITS:
        sp = summary["splits"].get(s, {})
        lines.append(f"| {s} | {sp.get('items', 0)} | {sp.get('composites', 0)} | {sp.get('images', 0)} |")
    lines += ["", f"Seed {summary['params']['seed']}, fractions {summary['params']['splits']}, "
              f"{summary['groups']} leak-free groups ({summary['multi_item_groups']} with several items).", ""]
    # QA summary from curation.
    cur = inputs.curated
    lines += ["## QA summary", ""]
    if len(cur):
        exp = cur[cur["item_id"].astype(str).isin(idset)]
        lines.append(f"- {len(cur)} curated items, {int(cur['included'].astype(bool).sum())} included, "
                     f"{int(cur['verified'].astype(bool).sum())} verified; {len(exp)} exported.")
        src = _col(exp, "source")
        if src is not None:
            for k, v in sorted(Counter(str(x) for x in src).items()):
                lines.append(f"- exported masks from `{k}`: {v}")
        fixes = _col(exp, "fixes")
        if fixes is not None:
            counts = Counter(f for x in fixes for f in str(x or "").split(",") if f and f != "None")
            for k, v in sorted(counts.items()):
                lines.append(f"- auto-fix `{k}` applied: {v}")
        reasons = _col(cur, "excluded_reason")
        if reasons is not None:
            counts = Counter(str(x) for x in reasons if x is not None and str(x) not in ("", "None", "nan"))
            for k, v in sorted(counts.items()):
                lines.append(f"- excluded ({k}): {v}")
    qa = inputs.qa_report
    if len(qa) and {"check", "passed"} <= set(qa.columns):
        failed = qa[~qa["passed"].astype(bool)]
        for k, v in sorted(Counter(str(c) for c in failed["check"]).items()):
            lines.append(f"- QA check `{k}` flagged: {v}")
    lines.append("")
    # Human corrections.
    corr = inputs.corrections
    lines += ["## Human corrections", ""]
    if len(corr) and "item_id" in corr.columns:
        c = corr[corr["item_id"].astype(str).isin(idset)].sort_values("item_id")
        lines.append(f"{len(c)} exported items carry a pulled human correction.")
        if len(c):
            lines += ["", "| item | annotator | source | updated | mask sha256 |", "|---|---|---|---|---|"]
            for r in c.itertuples(index=False):
                lines.append(f"| {r.item_id} | {getattr(r, 'annotator', '')} | {getattr(r, 'source', '')} | "
                             f"{getattr(r, 'updated_at', '')} | {str(getattr(r, 'mask_digest', ''))[:16]} |")
    else:
        lines.append("No pulled corrections.")
    lines.append("")
    # Review decisions.
    dec = inputs.decisions
    lines += ["## Review decisions", ""]
    if len(dec) and "item_id" in dec.columns:
        from qa.decisions import latest_per_item, read_decisions

        latest = latest_per_item(read_decisions(Path(summary["_decisions_path"])))
        mine = {k: d for k, d in latest.items() if k in idset}
        lines.append(f"{len(dec)} decisions recorded; latest decision for exported items: "
                     + (", ".join(f"{k} {v}" for k, v in sorted(Counter(d.decision for d in mine.values()).items()))
                        or "none"))
        if mine:
            lines += ["", "| item | decision | reviewer | decided | fix |", "|---|---|---|---|---|"]
            for k in sorted(mine):
                d = mine[k]
                lines.append(f"| {k} | {d.decision} | {d.reviewer} | {d.decided_at} | {d.fix} |")
    else:
        lines.append("No review decisions.")
    lines.append("")
    # Pre-annotation models.
    pre = inputs.preannotations
    lines += ["## Pre-annotation models", ""]
    if len(pre) and {"item_id", "model"} <= set(pre.columns):
        p = pre[pre["item_id"].astype(str).isin(idset)]
        version = p["model_version"] if "model_version" in p.columns else [""] * len(p)
        models: Counter[tuple[str, str]] = Counter(
            zip((str(m) for m in p["model"]), (str(v) for v in version), strict=True)
        )
        lines += ["| model | version | items |", "|---|---|---|"]
        for (m, mv), count in sorted(models.items()):
            lines.append(f"| {m} | {mv} | {count} |")
    else:
        lines.append("No pre-annotation table found.")
    lines += ["", "## Files", "", "- `coco/<split>.json`: COCO instances, category `foreground`, RLE segmentation "
              "(`pycocotools.coco.COCO`).", "- `matting/{image,mask,trimap,alpha,foreground}/<name>.png`; "
              "`matting/cutout/<name>.png`: RGBA, straight foreground colours + alpha (8 or 16 bit, as `matte.alpha_bits`), items with a matte only; composites "
              "are named by composite id and have no `foreground/` file.", "- `splits.parquet`, `splits/<split>.txt`, "
              "`dataset.json`; `matting.parquet`: every matting file with its SHA-256.", ""]
    referenced = [f for f in FOLDERS if f not in summary.get("materialized", FOLDERS)]
    if referenced:
        lines += [f"Written in this folder: `matting/{{{','.join(f for f in FOLDERS if f not in referenced)}}}` of "
                  f"the items. By reference (listed in `matting.parquet`): `matting/{{{','.join(referenced)}}}` and "
                  "every file of the composites (read from the composite stage's strips); "
                  "`maskloop materialize --out DIR` writes the complete layout, checked against those digests.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- stage


def load_inputs(paths: Paths) -> ExportInputs:
    curated_path = Path(paths.curated) / "curated.parquet"
    if not curated_path.is_file():
        raise UserError(f"{curated_path}: curated table not found; run `dvc repro curate` before exporting")
    if not Path(paths.manifest).is_file():
        raise UserError(f"{paths.manifest}: manifest not found; run `maskloop ingest` first")
    return ExportInputs(
        items=tuple(ok_items(paths.manifest)),
        curated=io.read_parquet(curated_path),
        lineage=_table(Path(paths.composite) / "lineage.parquet"),
        preannotations=_table(Path(paths.preannotate) / "preannotations.parquet"),
        corrections=_table(Path(paths.corrections) / "corrections.parquet"),
        decisions=_table(Path(paths.decisions)),
        qa_report=_table(Path(paths.curated) / "qa_report.parquet"),
    )


def matting_table(records: Mapping[str, Mapping[str, Any]], materialize: Sequence[str]) -> Any:
    """The ``matting.parquet`` frame: one row per matting file of the dataset (written or by reference),
    sorted by path: ``name, folder, path, sha256, bytes, written``."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for rec in records.values():
        for path, sha, size in rec.get("files", []):
            folder = str(path).split("/")[1]
            rows.append({"name": str(rec["name"]), "folder": folder, "path": str(path), "sha256": str(sha),
                         "bytes": int(size), "written": writes(materialize, folder, bool(rec["composite"]))})
    rows.sort(key=lambda r: str(r["path"]))
    return pd.DataFrame(rows, columns=list(MATTING_COLUMNS))


def export_works(paths: Paths, params: ExportParams, params_path: Path) -> tuple[ExportInputs, list[str], list[WorkItem]]:
    """The export's inputs, selected item ids and work items (shared with ``maskloop materialize``)."""
    inputs = load_inputs(paths)
    ids = selected_items(inputs.curated, params.require_verified, Path(paths.curated) / "curated.parquet")
    items = {it.item_id: it for it in inputs.items}
    trimap_px = load_section(params_path, "composite", CompositeParams).trimap_px
    return inputs, ids, build_works(paths, ids, items, inputs.lineage, params.composites, trimap_px)


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> dict[str, Any]:
    """Export the verified dataset; returns the ``dataset.json`` summary."""
    paths = load_paths(params_path)
    params = load_section(params_path, "export", ExportParams)
    inputs, ids, works = export_works(paths, params, params_path)
    root = Path(paths.export)
    stage: Stage[ExportParams] = Stage(
        name="export", params=params, root=root, process=process,
        state_root=paths.state, output_dirs=("matting",),
    )
    upstream = (paths.manifest, Path(paths.curated) / "curated.parquet", Path(paths.curated) / INDEX_NAME,
                Path(paths.trimap) / INDEX_NAME, Path(paths.matte) / INDEX_NAME,
                Path(paths.composite) / "lineage.parquet", Path(paths.composite) / INDEX_NAME)
    result = run_stage(stage, works, load_runner(params_path), reports_dir=paths.reports, retry_failed=retry_failed,
                       upstream=upstream)
    records = result.record_map()
    item_records = {k: r for k, r in records.items() if not r["composite"]}
    if not item_records:
        raise UserError(f"export: all {len(ids)} selected items failed; see {Path(paths.reports) / 'export.parquet'}")
    cur = inputs.curated
    dup_groups = dict(zip(cur["item_id"].astype(str), cur["dup_group"].astype(str), strict=True))
    splits = split_table(records, dup_groups, inputs.lineage, params)
    split_of = dict(zip(splits["item_id"], splits["split"], strict=True))
    by_split: dict[str, list[Mapping[str, Any]]] = {s: [] for s in SPLITS}
    for r in records.values():
        by_split[split_of[str(r["item_id"])]].append(r)
    version = dataset_version([(str(r["name"]), split_of[str(r["item_id"])], str(r["digest"])) for r in records.values()])
    for s in SPLITS:
        recs = sorted(by_split[s], key=lambda r: str(r["name"]))
        io.write_json(root / "coco" / f"{s}.json", coco_document(recs, s, version))
        io.write_text(root / "splits" / f"{s}.txt", "".join(f"{r['name']}\n" for r in recs))
    io.write_parquet(root / "splits.parquet", splits)
    io.write_parquet(root / MATTING_TABLE, matting_table(records, params.materialize))
    files = Counter(f for r in records.values() for f in r["folders"])
    comp_sizes = Counter(splits["component"])
    cur = inputs.curated
    verified_ids = set(str(i) for i in cur.loc[cur["verified"].astype(bool), "item_id"])
    n_verified = sum(1 for k in item_records if k in verified_ids)
    if n_verified < len(item_records):
        log.warning("export: %d of %d exported items are NOT verified by a human (export.require_verified: false)",
                    len(item_records) - n_verified, len(item_records))
    summary: dict[str, Any] = {
        "version": version,
        "items": len(item_records),
        "composites": len(records) - len(item_records),
        "verified": n_verified,
        "files": {f: int(files.get(f, 0)) for f in FOLDERS},
        "splits": {
            s: {
                "items": sum(1 for r in by_split[s] if not r["composite"]),
                "composites": sum(1 for r in by_split[s] if r["composite"]),
                "images": len(by_split[s]),
            }
            for s in SPLITS
        },
        "groups": len(comp_sizes),
        "multi_item_groups": sum(1 for v in comp_sizes.values() if v > 1),
        "failed": result.n_failed,
        "materialized": [f for f in FOLDERS if f in params.materialize],
        "params": {"seed": params.seed, "splits": params.splits.as_dict(), "png_compression": params.png_compression},
    }
    card = dataset_card({**summary, "_decisions_path": str(paths.decisions)}, inputs, sorted(item_records), splits)
    io.write_text(root / "README.md", card)
    io.write_json(root / "dataset.json", summary)
    log.info("export %s: %d items, %d composites; splits %s", version, summary["items"], summary["composites"],
             json.dumps({s: summary["splits"][s]["items"] for s in SPLITS}))
    return summary


if __name__ == "__main__":  # pragma: no cover
    run()
