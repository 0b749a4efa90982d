"""The ``trained`` refinement engine: a promoted checkpoint created here (random weights: plumbing and
contract, not quality), the fused prior, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.params import Paths
from pipeline.preannotators.base import CheckpointMissing
from pipeline.refine import build_refiner
from pipeline.refine.base import Click, RefineItem, RefineParams, check_result
from pipeline.refine.trained import TrainedRefiner, fused_prior

from .conftest import scene


@pytest.fixture()
def promoted(tmp_path: Path) -> Paths:
    from pipeline.learning import segmenter

    model = segmenter.build_segmenter("lraspp_mobilenet_v3_large", None)
    segmenter.save_checkpoint(tmp_path / "promoted" / "model.pt", model,
                              segmenter.SegmenterMeta(arch="lraspp_mobilenet_v3_large", resolution=32))
    return Paths(promoted=tmp_path / "promoted")


def test_fused_prior() -> None:
    model = np.full((2, 2), 0.8, np.float32)
    assert np.allclose(fused_prior(model, np.zeros((2, 2), np.float32), 0.5), 0.8)  # empty canvas: model only
    cur = np.array([[1, 0], [0, 0]], np.float32)
    assert np.allclose(fused_prior(model, cur, 0.5), [[0.9, 0.4], [0.4, 0.4]])


def test_refines_with_clicks_and_caches_the_model_run(promoted: Paths) -> None:
    img, gt = scene()
    eng = build_refiner("trained", RefineParams(device="cpu"), promoted)
    assert isinstance(eng, TrainedRefiner) and eng.spec.name == "trained" and len(eng.spec.checkpoint_sha256) == 64
    item = RefineItem("t", Path("u"), pixels=img)
    clicks = [Click(60, 60, True), Click(150, 110, False)]
    res = eng.refine(item, None, clicks)
    check_result(res, gt.shape, clicks, "trained")
    assert not res.cached
    res2 = eng.refine(item, res.mask, [*clicks, Click(110, 60, True)])
    assert res2.cached and res2.mask[60, 110] == 1


def test_missing_promoted_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMissing, match=r"model\.pt"):
        TrainedRefiner(RefineParams(device="cpu"), Paths(promoted=tmp_path / "none"))
