"""sam: real checkpoint loading (tiny random-weight SAM), prompting, cache hits, every checkpoint error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.params import Paths
from pipeline.preannotators.base import (
    CheckpointArchitectureError,
    CheckpointCorrupt,
    CheckpointMissing,
    PreannotateParams,
    PredictContext,
    SamParams,
)
from pipeline.preannotators.sam import (
    SamPreannotator,
    box_from_mask,
    grid_points,
    load_sam,
    points_from_mask,
    salience_scores,
)
from pipeline.preannotators.sam_cache import SamEmbeddingCache, prune

from .conftest import object_on_background


def _params(ckpt: Path, **sam: object) -> PreannotateParams:
    return PreannotateParams(model="sam", device="cpu", sam=SamParams(arch="vit_tiny", checkpoint=ckpt, **sam))  # type: ignore[arg-type]


def _count_encoder(model: SamPreannotator) -> list[int]:
    calls = [0]
    model.sam.model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# --------------------------------------------------------------------------- prompts (pure)


def test_box_from_mask_is_xyxy_exclusive() -> None:
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:9] = 255
    assert box_from_mask(m).tolist() == [3, 2, 9, 5]
    assert box_from_mask(np.zeros((4, 4), np.uint8)) is None


def test_points_from_mask_inside_and_outside() -> None:
    m = np.zeros((40, 60), np.uint8)
    m[10:30, 10:30] = 255  # square
    m[15:25, 40:50] = 255  # a second part
    coords, labels = points_from_mask(m, 3, 2)
    assert coords.shape == (5, 2) and labels.tolist() == [1, 1, 1, 0, 0]
    for (x, y), lab in zip(coords.astype(int), labels, strict=True):
        assert (m[y, x] > 0) == bool(lab)
    assert tuple(coords[0].astype(int)) in {(19, 19), (20, 20), (19, 20), (20, 19)}  # deepest point first
    assert {tuple(p) for p in coords[:3].astype(int).tolist()} != {tuple(coords[0].astype(int))}  # spread out
    c2, l2 = points_from_mask(np.zeros((5, 5), np.uint8), 3, 2)
    assert c2.shape == (0, 2) and l2.shape == (0,)


def test_grid_and_salience() -> None:
    pts = grid_points(100, 200, 2)
    assert pts.tolist() == [[50, 25], [150, 25], [50, 75], [150, 75]]
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 5:15, 5:15] = True  # central object
    masks[1, :, :] = True  # everything
    masks[2, 0:10, :] = True  # touching the border
    scores = salience_scores(masks, np.array([0.8, 0.99, 0.9]))
    assert int(np.argmax(scores)) == 0 and scores[1] == -1.0


# --------------------------------------------------------------------------- model + cache


def test_prompted_prediction_and_cache_hit(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    paths = Paths(sam_cache=tmp_path / "cache")
    img, _ = object_on_background(300, 400)
    model = SamPreannotator(_params(tiny_sam_ckpt), paths)
    assert model.spec.name == "sam" and len(model.spec.checkpoint_sha256) == 64
    calls = _count_encoder(model)
    cold = model.predict(img, PredictContext(item_id="aaaa"))
    assert calls[0] == 1 and not cold.encoder_cached
    assert cold.mask.shape == (300, 400) and cold.probability.shape == (300, 400)
    assert 0.0 <= cold.sam_iou <= 1.0 and np.array_equal(cold.mask > 0, cold.probability >= 0.5)
    files = sorted(p.name for p in (paths.sam_cache / model.spec.checkpoint_sha256[:16]).iterdir())
    assert files == ["aaaa.json", "aaaa.npy"]
    # a fresh model (a new run, a new worker) answers from the cache: the encoder never runs
    again = SamPreannotator(_params(tiny_sam_ckpt, prompt="box+points"), paths)
    calls2 = _count_encoder(again)
    warm = again.predict(img, PredictContext(item_id="aaaa"))
    assert calls2[0] == 0 and warm.encoder_cached
    # cold and cached predictions of the same prompt are identical (the embedding is rounded as stored)
    same = SamPreannotator(_params(tiny_sam_ckpt), paths)
    assert np.array_equal(same.predict(img, PredictContext(item_id="aaaa")).probability, cold.probability)
    # another image size under the same id is a miss, never a wrong answer
    small = img[:200, :300].copy()
    res = same.predict(small, PredictContext(item_id="aaaa"))
    assert not res.encoder_cached and res.mask.shape == (200, 300)


def test_cache_disabled_and_bytes_deterministic(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    img, _ = object_on_background(120, 160)
    off = SamPreannotator(_params(tiny_sam_ckpt, cache=False), Paths(sam_cache=tmp_path / "c0"))
    off.predict(img, PredictContext(item_id="bbbb"))
    assert not (tmp_path / "c0").exists()
    a = SamPreannotator(_params(tiny_sam_ckpt), Paths(sam_cache=tmp_path / "c1"))
    a.predict(img, PredictContext(item_id="bbbb"))
    b = SamPreannotator(_params(tiny_sam_ckpt), Paths(sam_cache=tmp_path / "c2"))
    b.predict(img, PredictContext(item_id="bbbb"))
    sub = a.spec.checkpoint_sha256[:16]
    for name in ("bbbb.npy", "bbbb.json"):
        assert (tmp_path / "c1" / sub / name).read_bytes() == (tmp_path / "c2" / sub / name).read_bytes()


def test_automatic_mode_and_empty_prompt_fallback(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    img, _ = object_on_background(128, 128)
    auto = SamPreannotator(_params(tiny_sam_ckpt, prompt_from="auto", auto_grid=4), Paths(sam_cache=tmp_path))
    assert "auto" in auto.spec.version
    res = auto.predict(img, PredictContext(item_id="cccc"))
    assert res.mask.shape == (128, 128) and 0.0 <= res.sam_iou <= 1.0


def test_cache_rejects_other_checkpoint_and_prunes(tmp_path: Path) -> None:
    from pipeline.preannotators.sam_cache import CachedEmbedding

    a = SamEmbeddingCache(tmp_path, "a" * 64)
    entry = CachedEmbedding(np.ones((1, 4, 2, 2), np.float16), (10, 20), (8, 16))
    a.save("item1", entry)
    a.save("item2", entry)
    got = a.load("item1", (10, 20))
    assert got is not None and got.features.dtype == np.float16 and got.input_size == (8, 16)
    assert a.load("item1", (11, 20)) is None  # other image size
    # a JSON claiming another checkpoint is a miss
    shutil.copy(a.paths("item1")[1], tmp_path / "x.json")
    other = SamEmbeddingCache(tmp_path, "b" * 64)
    other.dir.mkdir(parents=True)
    shutil.copy(a.paths("item1")[0], other.paths("item1")[0])
    shutil.copy(a.paths("item1")[1], other.paths("item1")[1])
    assert other.load("item1") is None
    (a.dir / "item1.npy").write_bytes(b"garbage")
    assert a.load("item1") is None  # unreadable: recomputed, not an error
    assert prune(tmp_path, {"item1"}) == 2
    assert sorted(p.name for p in a.dir.iterdir()) == ["item1.json", "item1.npy"]
    with pytest.raises(ValueError, match="64 hex"):
        SamEmbeddingCache(tmp_path, "abc")


# --------------------------------------------------------------------------- checkpoint errors


def test_missing_checkpoint_names_path_arch_and_official_url(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "sam_vit_b_01ec64.pth"
    with pytest.raises(CheckpointMissing) as err:
        load_sam(SamParams(arch="vit_b", checkpoint=missing), "cpu")
    text = str(err.value)
    assert str(missing) in text and "sam/vit_b" in text
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in text
    assert "preannotate.sam.checkpoint" in text and "`maskloop models fetch sam_vit_b`" in text


def test_wrong_architecture(tiny_sam_ckpt: Path, deeplab_voc_ckpt: Path) -> None:
    with pytest.raises(CheckpointArchitectureError, match=r"embed_dim 64 and 2 blocks \(vit_tiny\).*vit_b"):
        load_sam(SamParams(arch="vit_b", checkpoint=tiny_sam_ckpt), "cpu")
    with pytest.raises(CheckpointArchitectureError, match="not a segment-anything checkpoint"):
        load_sam(SamParams(arch="vit_tiny", checkpoint=deeplab_voc_ckpt), "cpu")


def test_weights_that_do_not_fit(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_sam_ckpt, weights_only=True)
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "edited.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointArchitectureError, match=r"missing keys.*unexpected keys"):
        load_sam(SamParams(arch="vit_tiny", checkpoint=bad), "cpu")
    torch.save(["not", "a", "state dict"], bad)
    with pytest.raises(CheckpointArchitectureError, match="state dict"):
        load_sam(SamParams(arch="vit_tiny", checkpoint=bad), "cpu")


def test_corrupt_checkpoint(tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(tiny_sam_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointCorrupt, match=r"truncated\.pth.*corrupt"):
        load_sam(SamParams(arch="vit_tiny", checkpoint=bad), "cpu")
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointCorrupt):
        load_sam(SamParams(arch="vit_tiny", checkpoint=text), "cpu")
