"""Synthetic pipeline outputs for dashboard tests and the benchmark, written per docs/CONTRACTS.md.

Every table and file the dashboard reads is produced here from tiny generated images (an ellipse "object" on a
gradient) so the tests do not depend on other stages being finished. The shapes, dtypes and names follow the
contracts exactly; optional outputs can be left out to check that the dashboard copes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core import io
from pipeline.core.items import MANIFEST_COLUMNS, item_id_for_bytes

REPO = Path(__file__).resolve().parents[2]
CHECKS = ("islands", "holes", "border", "edge_alignment")
SEVERITIES = ("info", "warning", "error")
MODELS = ("grabcut-v1", "deeplabv3-r1")
ANNOTATORS = ("ann", "bob", "cyd")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthProject:
    root: Path
    params: Path
    item_ids: tuple[str, ...]
    flagged: tuple[str, ...]


def _image(i: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    np.full_like(xx, (i * 37) % 256)], axis=2).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cx, cy = w // 2 + (i % 5) - 2, h // 2 + (i % 3) - 1
    cv2.ellipse(mask, (cx, cy), (w // 4, h // 3), 0, 0, 360, 255, -1)
    img[mask > 0] = (img[mask > 0] // 3 + np.array([150, 60, 40], np.uint8)).clip(0, 255)
    return img, mask


def make_project(root: Path, n: int = 12, flag_every: int = 2, size: tuple[int, int] = (96, 72),
                 with_matting: bool = True, with_splits: bool = True, with_corrections: bool = True) -> SynthProject:
    """A project folder with ``n`` items; every ``flag_every``-th item is in the review queue."""
    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    raw = root / "data/raw/images"
    raw.mkdir(parents=True, exist_ok=True)
    w, h = size
    manifest, pre_rows, corr_rows, cur_rows, qa_rows, queue_rows, split_rows, lineage = [], [], [], [], [], [], [], []
    ids = []
    for i in range(n):
        img, mask = _image(i, w, h)
        png = io.encode_png(img)
        iid = item_id_for_bytes(png)
        ids.append(iid)
        src = raw / f"img_{i:05d}.png"
        src.write_bytes(png)
        rel = src.relative_to(root).as_posix()
        manifest.append({"item_id": iid, "source_path": rel, "source_paths": [rel], "width": w, "height": h,
                         "orientation": 1, "mode": "RGB", "bytes": len(png), "status": "ok", "error": ""})
        pre = mask.copy()
        pre[:, : w // 6] = 0  # the model misses a slice on the left ...
        pre[h // 8 : h // 8 + 4, w // 2 : w // 2 + 4] = 255  # ... and adds a speck
        io.write_png(root / f"data/preannotate/masks/{iid}.png", pre)
        model = MODELS[(i // 2) % len(MODELS)]
        pre_rows.append({"item_id": iid, "model": model.split("-")[0], "model_version": model,
                         "checkpoint_sha256": "", "confidence": 0.5, "entropy": 0.3, "sam_iou": float("nan"),
                         "uncertainty": round(((i * 7919) % 100) / 100.0, 2)})
        if with_corrections:
            io.write_png(root / f"data/corrections/masks/{iid}.png", mask)
            corr_rows.append({"item_id": iid, "task_id": str(i + 1), "annotation_id": str(i + 1),
                              "annotator": ANNOTATORS[i % len(ANNOTATORS)], "created_at": "2026-01-01T00:00:00Z",
                              "updated_at": "2026-01-01T00:00:00Z", "lead_time": 20.0 + i % 7, "source": "files",
                              "backend": "files", "ground_truth": False, "n_annotations": 1,
                              "disagreement_iou": float("nan"), "mask_digest": ""})
        io.write_png(root / f"data/curated/masks/{iid}.png", mask)
        cur_rows.append({"item_id": iid, "included": True, "verified": with_corrections,
                         "source": "correction" if with_corrections else "preannotation", "fixes": "",
                         "excluded_reason": "", "mask_digest": ""})
        flagged = i % flag_every == 0
        failed = [CHECKS[i % len(CHECKS)], CHECKS[(i + 1) % len(CHECKS)]] if flagged else []
        for c in CHECKS:
            qa_rows.append({"item_id": iid, "check": c, "passed": c not in failed,
                            "severity": SEVERITIES[i % 3] if c in failed else "info",
                            "value": float(i % 10), "threshold": 5.0, "fixable": c in ("islands", "holes"),
                            "region": ""})
        if flagged:
            queue_rows.append({"item_id": iid, "checks": ",".join(sorted(failed)),
                               "max_severity": SEVERITIES[i % 3],
                               "suggested_fix": "remove_islands" if "islands" in failed else "",
                               "uncertainty": pre_rows[-1]["uncertainty"]})
        split_rows.append({"item_id": iid, "split": SPLITS[i % 3]})
        if with_matting:
            trimap = np.where(mask > 0, 255, 0).astype(np.uint8)
            edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
            trimap[edge] = 128
            io.write_png(root / f"data/trimap/trimaps/{iid}.png", trimap)
            io.write_png(root / f"data/matte/alpha/{iid}.png", cv2.GaussianBlur(mask, (5, 5), 0))
            cid = f"{iid}_00"
            io.write_png(root / f"data/composite/image_strips/{iid}.png", img[:, ::-1].copy())  # a 1-tile strip
            io.write_png(root / f"data/composite/alpha_strips/{iid}.png", mask[:, ::-1].copy())
            lineage.append({"composite_id": cid, "item_id": iid, "tile": 0, "background": "bg0", "scale": 1.0,
                            "dx": 0, "dy": 0, "flip": True, "seed": 0})
    io.write_parquet(root / "data/ingest/manifest.parquet", pd.DataFrame(manifest, columns=list(MANIFEST_COLUMNS)))
    io.write_parquet(root / "data/preannotate/preannotations.parquet", pd.DataFrame(pre_rows))
    if with_corrections:
        io.write_parquet(root / "data/corrections/corrections.parquet", pd.DataFrame(corr_rows))
    io.write_parquet(root / "data/curated/curated.parquet", pd.DataFrame(cur_rows))
    io.write_parquet(root / "data/curated/qa_report.parquet", pd.DataFrame(qa_rows))
    io.write_parquet(root / "data/curated/review_queue.parquet",
                     pd.DataFrame(queue_rows, columns=["item_id", "checks", "max_severity", "suggested_fix",
                                                       "uncertainty"]))
    if with_splits:
        io.write_parquet(root / "data/export/splits.parquet", pd.DataFrame(split_rows))
    if with_matting:
        io.write_parquet(root / "data/composite/lineage.parquet", pd.DataFrame(lineage))
    flagged_ids = tuple(r["item_id"] for r in queue_rows)
    return SynthProject(root=root, params=params, item_ids=tuple(ids), flagged=flagged_ids)
