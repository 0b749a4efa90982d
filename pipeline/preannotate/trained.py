"""``trained``: the loop's own model, promoted by ``maskloop promote`` (``paths.promoted/model.pt``).

A thin wrapper over :mod:`pipeline.segmenter` (the training area's checkpoint format and preprocessing):
:func:`pipeline.segmenter.load_segmenter` validates and loads the checkpoint, and
:func:`pipeline.segmenter.predict_probability` returns the probability at full resolution (the network runs
at the checkpoint's own square resolution; see that module). Only items not verified by a human at promote
time are pre-annotated again (see :mod:`pipeline.preannotate.stage`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.params import Paths
from pipeline.preannotate.base import (
    CheckpointArchitectureError,
    CheckpointCorrupt,
    PreannotateParams,
    PreannotationResult,
    PreannotatorSpec,
    PredictContext,
    confidence_from,
    file_sha256,
    mask_from_probability,
    require_checkpoint,
)

log = logging.getLogger(__name__)

VERSION = "1"
MODEL_NAME = "model.pt"


def load_trained(path: Path, device: Any) -> tuple[Any, Any]:
    """Load a promoted checkpoint through :func:`pipeline.segmenter.load_segmenter`, turning its errors into
    checkpoint errors (corrupt vs wrong architecture) that name the file."""
    from pipeline import segmenter

    require_checkpoint(path, "trained", "paths.promoted (run `maskloop promote`)")
    try:
        return segmenter.load_segmenter(path, device)
    except UserError as exc:
        text = str(exc)
        if "corrupt" in text or "unreadable" in text:
            raise CheckpointCorrupt(text) from exc
        raise CheckpointArchitectureError(text) from exc


class TrainedPreannotator:
    """Registry entry ``trained``."""

    def __init__(self, params: PreannotateParams, paths: Paths, **_: Any) -> None:
        from pipeline.torch_utils import select_device, set_threads

        set_threads(params.threads)
        self.device = select_device(params.device)
        path = Path(paths.promoted) / MODEL_NAME
        self.model, self.meta = load_trained(path, self.device)
        sha = file_sha256(path)
        self.spec = PreannotatorSpec(
            name="trained", version=f"trained-{self.meta.arch}-{sha[:12]}-v{VERSION}", checkpoint_sha256=sha
        )

    def predict(self, image: np.ndarray, context: PredictContext) -> PreannotationResult:
        from pipeline import segmenter

        prob = segmenter.predict_probability(self.model, self.meta, image, self.device)
        mask = mask_from_probability(prob, float(self.meta.threshold))
        prob = np.clip(prob, 0.0, 1.0).astype(np.float32)
        return PreannotationResult(mask=mask, probability=prob, confidence=confidence_from(prob, mask))
