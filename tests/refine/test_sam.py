"""The ``sam`` refinement engine with random-weight checkpoints created here (latency and plumbing, not
quality): the pipeline's embedding cache is used, never recomputed; clicks are respected; clear errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.params import Paths
from pipeline.preannotators.base import CheckpointMissing, PreannotateParams, PredictContext, SamParams
from pipeline.preannotators.sam_cache import SamEmbeddingCache
from pipeline.refine import build_refiner
from pipeline.refine.base import (
    Box,
    Click,
    RefineInputError,
    RefineItem,
    RefineParams,
    SamRefineParams,
    check_result,
)
from pipeline.refine.sam import SamRefiner, mask_to_low_res

from .conftest import scene


def make(ckpt: Path, root: Path, **kw: object) -> SamRefiner:
    params = RefineParams(engine="sam", device="cpu", sam=SamRefineParams(arch="vit_tiny", checkpoint=ckpt, **kw))  # type: ignore[arg-type]
    return build_refiner("sam", params, Paths(sam_cache=root / "sam_cache"))  # type: ignore[return-value]


def test_missing_weights_names_models_fetch(tmp_path: Path) -> None:
    params = RefineParams(engine="sam", sam=SamRefineParams(arch="vit_b", checkpoint=tmp_path / "none.pth"))
    with pytest.raises(CheckpointMissing, match=r"none\.pth: SAM vit_b checkpoint not found.*maskloop models fetch sam_vit_b"):
        SamRefiner(params, Paths())


def test_embedding_computed_once_then_cached_on_disk(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    img, gt = scene()
    eng = make(tiny_sam_ckpt, tmp_path)
    item = RefineItem("it", tmp_path / "nowhere.png", pixels=img)
    clicks = [Click(60, 60, True), Click(150, 10, False)]
    res = eng.refine(item, None, clicks)
    check_result(res, gt.shape, clicks, "sam")
    assert eng.encoder_calls == 1 and not res.cached
    assert (tmp_path / "sam_cache" / eng.checkpoint_sha256[:16] / "it.npy").is_file()
    res2 = eng.refine(item, res.mask, [*clicks, Click(100, 60, True)])
    assert eng.encoder_calls == 1 and res2.cached
    # a new process (new engine) finds the item in the pipeline's cache: no encoder run, no image read
    eng2 = make(tiny_sam_ckpt, tmp_path)
    res3 = eng2.refine(RefineItem("it", tmp_path / "nowhere.png"), None, clicks)
    assert eng2.encoder_calls == 0 and np.array_equal(res3.mask, res.mask)


def test_uses_the_embedding_the_preannotate_stage_wrote(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    from pipeline.preannotators.sam import SamPreannotator

    img, _gt = scene()
    paths = Paths(sam_cache=tmp_path / "sam_cache")
    pre = SamPreannotator(
        PreannotateParams(model="sam", device="cpu", sam=SamParams(arch="vit_tiny", checkpoint=tiny_sam_ckpt)), paths
    )
    pre.predict(img, PredictContext(item_id="abc"))
    assert SamEmbeddingCache(paths.sam_cache, pre.sam.checkpoint_sha256).load("abc") is not None
    eng = make(tiny_sam_ckpt, tmp_path)
    eng.refine(RefineItem("abc", tmp_path / "absent.jpg"), None, [Click(5, 5, True)])
    assert eng.encoder_calls == 0


def test_concurrent_clicks_encode_once(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    img, _gt = scene()
    eng = make(tiny_sam_ckpt, tmp_path, cache=False)
    item = RefineItem("c", tmp_path / "x.png", pixels=img)
    errors: list[BaseException] = []

    def click(i: int) -> None:
        try:
            eng.refine(item, None, [Click(10 + i, 20, i % 2 == 0)])
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and eng.encoder_calls == 1


def test_box_mask_input_and_errors(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    img, gt = scene()
    eng = make(tiny_sam_ckpt, tmp_path)
    item = RefineItem("b", tmp_path / "x.png", pixels=img)
    res = eng.refine(item, gt.astype(np.uint8), [Click(60, 60, True)], Box(10, 10, 150, 110))
    assert res.mask.shape == gt.shape and res.mask[60, 60] == 1
    with pytest.raises(RefineInputError, match=r"item b: click 0 at \(x=999, y=0\)"):
        eng.refine(item, None, [Click(999, 0, True)])
    with pytest.raises(RefineInputError, match="at least one click or a box"):
        eng.refine(item, None, [])


def test_mask_to_low_res_frame() -> None:
    m = np.zeros((100, 200), np.uint8)
    m[:, :100] = 1  # left half
    low = mask_to_low_res(m, (512, 1024), 1024)
    assert low.shape == (1, 1, 256, 256)
    assert low[0, 0, 10, 10] > 0 and low[0, 0, 10, 200] < 0 and low[0, 0, 200, 10] < 0  # padding is background
