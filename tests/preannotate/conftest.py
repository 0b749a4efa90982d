"""Fixtures for the pre-annotation tests: random-weight checkpoints the tests create themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def deeplab_voc_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torchvision DeepLabV3-MobileNetV3-Large, 21 VOC classes with aux head, random weights."""
    import torch
    from torchvision.models import segmentation

    torch.manual_seed(0)
    model = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path_factory.mktemp("ckpt") / "deeplab_mnv3_voc.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def deeplab_binary_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DeepLabV3-MobileNetV3-Large with a 1-channel (binary) head, no aux head, wrapped under ``state_dict``."""
    import torch
    from torchvision.models import segmentation

    torch.manual_seed(1)
    model = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)
    path = tmp_path_factory.mktemp("ckpt") / "deeplab_mnv3_binary.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def object_on_background(h: int = 240, w: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy red ellipse on a noisy grey-blue background: (RGB uint8 image, bool ground truth)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    gt = ((yy - h * 0.55) / (h * 0.3)) ** 2 + ((xx - w * 0.5) / (w * 0.25)) ** 2 <= 1.0
    img = np.empty((h, w, 3), np.float64)
    img[:] = (90, 110, 140)
    img[gt] = (200, 40, 30)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))
