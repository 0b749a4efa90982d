"""Train stage: trains the segmenter on the export's train split (:func:`pipeline.learning.training.fit`)
and writes ``paths.train/model.pt`` + ``lineage.json``, ``paths.metrics/train.json`` and ``train_curve.json``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.params import DEFAULT_PARAMS, Paths, load_paths, load_section, to_jsonable
from pipeline.learning.segmenter import save_checkpoint
from pipeline.learning.training import TrainParams, fit, load_split

log = logging.getLogger(__name__)


def run(params_path: Path = DEFAULT_PARAMS, retry_failed: bool = False) -> dict[str, Any]:
    """The train stage; returns the metrics it wrote. ``retry_failed`` is accepted for CLI symmetry."""
    paths: Paths = load_paths(params_path)
    params = load_section(params_path, "train", TrainParams)
    export_root = Path(paths.export)
    dataset_path = export_root / "dataset.json"
    if not dataset_path.is_file():
        raise UserError(f"{dataset_path}: export not found; run `dvc repro export` first")
    dataset = io.read_json(dataset_path)
    t0 = time.perf_counter()
    train = load_split(export_root, "train", params.resolution, composite_root=Path(paths.composite))
    val = load_split(export_root, "val", params.resolution, with_composites=False)
    log.info("train: %d items (%d composites), val: %d items, at %dx%d", len(train),
             sum(len(s.composites) for s in train), len(val), params.resolution, params.resolution)
    lineage = {"dataset_version": str(dataset["version"]), "train_params": to_jsonable(params),
               "n_train": len(train), "n_val": len(val)}
    result = fit(train, val, params, lineage)
    out = Path(paths.train)
    sha = save_checkpoint(out / "model.pt", result.model, result.meta)
    last = result.curve[-1]
    metrics = {
        "epochs": params.epochs,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "train_loss": last["train_loss"],
        "val_loss": last["val_loss"],
        "val_iou": last["val_iou"],
    }
    io.write_json(out / "lineage.json", {**lineage, "checkpoint_sha256": sha, "arch": params.arch,
                                         "resolution": params.resolution, "metrics": metrics})
    io.write_json(Path(paths.metrics) / "train.json", metrics)
    io.write_json(Path(paths.metrics) / "train_curve.json", list(result.curve))
    io.write_json(Path(paths.reports) / "train_timing.json", {"seconds": round(time.perf_counter() - t0, 3)})
    log.info("train: wrote %s (sha256 %s); val IoU %s", out / "model.pt", sha[:12], metrics["val_iou"])
    return metrics


if __name__ == "__main__":  # pragma: no cover
    run()
