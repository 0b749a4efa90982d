"""deeplabv3: loading random-weight torchvision checkpoints through the real code path, heads, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.preannotators.base import (
    CheckpointArchitectureError,
    CheckpointCorrupt,
    CheckpointMissing,
    DeepLabParams,
    PreannotateParams,
    PredictContext,
)
from pipeline.preannotators.deeplabv3 import (
    DeepLabV3Preannotator,
    foreground_probability,
    load_deeplab,
    to_tensor,
)

from .conftest import object_on_background


def _params(ckpt: Path, **kw: object) -> PreannotateParams:
    dl = DeepLabParams(arch="mobilenet_v3_large", checkpoint=ckpt, max_side=128, **kw)  # type: ignore[arg-type]
    return PreannotateParams(model="deeplabv3", device="cpu", deeplabv3=dl)


def test_voc_head_prediction_at_full_resolution(deeplab_voc_ckpt: Path) -> None:
    model = DeepLabV3Preannotator(_params(deeplab_voc_ckpt))
    img, _ = object_on_background(300, 500)
    res = model.predict(img, PredictContext(item_id="x"))
    assert res.mask.shape == (300, 500) and res.probability.shape == (300, 500)
    assert np.array_equal(res.mask > 0, res.probability >= 0.5)
    assert model.spec.version.startswith("deeplabv3-mobilenet_v3_large-voc-")
    assert model.spec.checkpoint_sha256 and np.isnan(res.sam_iou)


def test_binary_head(deeplab_binary_ckpt: Path) -> None:
    model = DeepLabV3Preannotator(_params(deeplab_binary_ckpt, head="binary"))
    img, _ = object_on_background(100, 90)
    res = model.predict(img, PredictContext())
    assert res.mask.shape == (100, 90)


def test_class_mapping_sums_chosen_classes() -> None:
    logits = np.zeros((21, 1, 2), np.float32)
    logits[15, 0, 0] = 10.0  # person wins at pixel 0
    logits[0, 0, 1] = 10.0  # background wins at pixel 1
    p = foreground_probability(logits, "voc", (15,))
    assert p[0, 0] > 0.99 and p[0, 1] < 0.01
    p_other = foreground_probability(logits, "voc", (8,))  # only "cat" is foreground
    assert p_other[0, 0] < 0.01
    assert foreground_probability(np.full((1, 2, 2), 0.0, np.float32), "binary", ()).tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_input_resized_to_max_side() -> None:
    x = to_tensor(np.zeros((1000, 2000, 3), np.uint8), 520)
    assert x.shape == (1, 3, 260, 520) and x.dtype == np.float32
    assert to_tensor(np.zeros((100, 50, 3), np.uint8), 520).shape == (1, 3, 100, 50)  # never upscaled


def test_errors(deeplab_voc_ckpt: Path, deeplab_binary_ckpt: Path, tiny_sam_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointMissing, match=r"deeplabv3/resnet50.*download\.pytorch\.org/models/deeplabv3_resnet50"):
        load_deeplab(DeepLabParams(arch="resnet50", checkpoint=tmp_path / "none.pth"), "cpu")
    with pytest.raises(CheckpointArchitectureError, match="holds a mobilenet_v3_large backbone"):
        load_deeplab(DeepLabParams(arch="resnet50", checkpoint=deeplab_voc_ckpt), "cpu")
    with pytest.raises(CheckpointArchitectureError, match=r"1 output channels.*head is voc"):
        load_deeplab(DeepLabParams(arch="mobilenet_v3_large", checkpoint=deeplab_binary_ckpt), "cpu")
    with pytest.raises(CheckpointArchitectureError, match="no DeepLabV3 backbone"):
        load_deeplab(DeepLabParams(arch="mobilenet_v3_large", checkpoint=tiny_sam_ckpt), "cpu")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(deeplab_voc_ckpt.read_bytes()[:3000])
    with pytest.raises(CheckpointCorrupt, match=r"bad\.pth"):
        load_deeplab(DeepLabParams(arch="mobilenet_v3_large", checkpoint=bad), "cpu")
    (tmp_path / "dir.pth").mkdir()
    with pytest.raises(CheckpointMissing, match=r"is a folder"):
        load_deeplab(DeepLabParams(arch="mobilenet_v3_large", checkpoint=tmp_path / "dir.pth"), "cpu")
