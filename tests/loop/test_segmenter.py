"""Segmenter checkpoints: round trip, clear errors for missing/corrupt/foreign/mismatched files, prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.errors import UserError
from pipeline.learning.segmenter import (
    ARCHS,
    SegmenterMeta,
    build_segmenter,
    load_segmenter,
    network_input,
    predict_probability,
    read_checkpoint_meta,
    save_checkpoint,
)

ARCH = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_segmenter(ARCH), SegmenterMeta(ARCH, 64, lineage={"dataset_version": "abc"}))
    return path


def test_round_trip_is_exact_and_deterministic(checkpoint: Path, tmp_path: Path) -> None:
    model, meta = load_segmenter(checkpoint, "cpu", expected_arch=ARCH, expected_resolution=64)
    assert (meta.arch, meta.resolution, dict(meta.lineage)) == (ARCH, 64, {"dataset_version": "abc"})
    assert not model.training
    again = tmp_path / "again.pt"
    save_checkpoint(again, model, meta)
    assert again.read_bytes() == checkpoint.read_bytes()  # no timestamps: byte-identical
    assert read_checkpoint_meta(again) == meta


def test_predict_probability_full_size_in_range(checkpoint: Path) -> None:
    model, meta = load_segmenter(checkpoint, "cpu")
    image = np.random.default_rng(1).integers(0, 255, (37, 91, 3), dtype=np.uint8)
    prob = predict_probability(model, meta, image, "cpu")
    assert prob.shape == (37, 91) and prob.dtype == np.float32
    assert 0.0 <= float(prob.min()) <= float(prob.max()) <= 1.0
    with pytest.raises(ValueError, match="RGB uint8"):
        predict_probability(model, meta, image[:, :, 0], "cpu")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.pt: segmenter checkpoint not found"):
        load_segmenter(tmp_path / "missing.pt", "cpu")


def test_corrupt_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(UserError, match=r"truncated\.pt: corrupt or unreadable"):
        load_segmenter(bad, "cpu")


def test_foreign_checkpoint(tmp_path: Path) -> None:
    other = tmp_path / "plain.pt"
    torch.save(build_segmenter(ARCH).state_dict(), other)
    with pytest.raises(UserError, match="not a maskloop segmenter checkpoint"):
        load_segmenter(other, "cpu")


def test_wrong_architecture_and_resolution(checkpoint: Path) -> None:
    with pytest.raises(UserError, match="trained for architecture 'lraspp_mobilenet_v3_large', but "
                                        "'deeplabv3_mobilenet_v3_large' is configured"):
        load_segmenter(checkpoint, "cpu", expected_arch="deeplabv3_mobilenet_v3_large")
    with pytest.raises(UserError, match="trained at resolution 64, but 128 is configured"):
        load_segmenter(checkpoint, "cpu", expected_resolution=128)


def test_weights_that_do_not_fit_the_recorded_architecture(tmp_path: Path) -> None:
    # A checkpoint whose meta says DeepLabV3 but whose weights are LR-ASPP.
    path = tmp_path / "mixed.pt"
    save_checkpoint(path, build_segmenter(ARCH), SegmenterMeta("deeplabv3_mobilenet_v3_large", 64))
    with pytest.raises(UserError, match="weights do not match architecture 'deeplabv3_mobilenet_v3_large'"):
        load_segmenter(path, "cpu")


def test_meta_validation() -> None:
    with pytest.raises(UserError, match="unknown segmenter architecture 'resnet'"):
        SegmenterMeta("resnet", 64)
    with pytest.raises(UserError, match="multiple of 8"):
        SegmenterMeta(ARCH, 60)
    with pytest.raises(UserError, match="unknown segmenter architecture"):
        build_segmenter("nope")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_outputs_one_logit_channel(arch: str) -> None:
    model = build_segmenter(arch).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 64, 64))["out"]
    assert out.shape == (1, 1, 64, 64)


def test_pretrained_backbone_loads_from_classification_weights(tmp_path: Path) -> None:
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(3)
    clf = mobilenet_v3_large()
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(clf.state_dict(), path)
    model = build_segmenter(ARCH, path)
    key = "0.0.weight"
    assert torch.equal(model.backbone.state_dict()[key], clf.state_dict()["features." + key])


def test_pretrained_backbone_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pretrained backbone checkpoint not found"):
        build_segmenter(ARCH, tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read pretrained backbone"):
        build_segmenter(ARCH, junk)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(UserError, match="no MobileNetV3-Large backbone weights"):
        build_segmenter(ARCH, unrelated)


# --------------------------------------------------------------------------- saliency priors as input channels


def test_priors_widen_the_input_and_round_trip(tmp_path: Path) -> None:
    """A segmenter with saliency priors takes RGB + one channel per prior; the RGB weights of the first
    convolution are kept; the checkpoint remembers the priors and prediction computes them itself."""
    torch.manual_seed(0)
    plain = build_segmenter(ARCH)
    torch.manual_seed(0)
    wide = build_segmenter(ARCH, None, in_channels=5)
    w_plain = plain.backbone["0"][0].weight  # type: ignore[index]
    w_wide = wide.backbone["0"][0].weight  # type: ignore[index]
    assert tuple(w_wide.shape[:2]) == (w_plain.shape[0], 5)
    assert torch.equal(w_wide[:, :3], w_plain)
    meta = SegmenterMeta(ARCH, 64, priors=("mbd", "backgroundness"))
    assert meta.in_channels == 5
    path = tmp_path / "wide.pt"
    save_checkpoint(path, wide, meta)
    model, loaded = load_segmenter(path, "cpu")
    assert loaded.priors == ("mbd", "backgroundness") and loaded == meta
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    x = network_input(image[:64, :64], meta)
    assert x.shape == (5, 64, 64) and x.dtype == np.float32
    assert float(x[3:].min()) >= -1.0 and float(x[3:].max()) <= 1.0
    prob = predict_probability(model, loaded, image, "cpu")
    assert prob.shape == (90, 120) and 0.0 <= float(prob.min()) <= float(prob.max()) <= 1.0


def test_unknown_or_repeated_priors_are_refused() -> None:
    with pytest.raises(UserError, match="priors must be distinct names"):
        SegmenterMeta(ARCH, 64, priors=("depth",))
    with pytest.raises(UserError, match="priors must be distinct names"):
        SegmenterMeta(ARCH, 64, priors=("mbd", "mbd"))


def test_small_unet_takes_prior_channels_and_any_size(tmp_path: Path) -> None:
    """unet_small (train from scratch on CPU): the prior channels widen its first convolution keeping the
    RGB weights; it predicts at any input size (the decoder follows each skip's size) and round-trips."""
    torch.manual_seed(0)
    plain = build_segmenter("unet_small")
    torch.manual_seed(0)
    wide = build_segmenter("unet_small", None, in_channels=5)
    w_plain, w_wide = plain.enc[0][0].weight, wide.enc[0][0].weight  # type: ignore[index,union-attr]
    assert tuple(w_wide.shape[:2]) == (w_plain.shape[0], 5)
    assert torch.equal(w_wide[:, :3], w_plain)
    with torch.inference_mode():
        assert wide.eval()(torch.zeros(2, 5, 40, 56))["out"].shape == (2, 1, 40, 56)
    meta = SegmenterMeta("unet_small", 64, priors=("mbd", "backgroundness"))
    path = tmp_path / "unet.pt"
    save_checkpoint(path, wide, meta)
    model, loaded = load_segmenter(path, "cpu", expected_arch="unet_small")
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    prob = predict_probability(model, loaded, image, "cpu")
    assert prob.shape == (50, 70) and 0.0 <= float(prob.min()) <= float(prob.max()) <= 1.0


def test_small_unet_has_no_imagenet_backbone(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'unet_small' has no ImageNet backbone"):
        build_segmenter("unet_small", tmp_path / "mobilenet_v3_large.pth")
