"""Fixtures for the refinement tests: a hand-drawn scene and a random-weight SAM checkpoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


def scene(h: int = 120, w: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy blue background with a red disc (centre (60, 80)... as (y, x)) and a red square attached
    on its right: (RGB uint8 image, bool ground truth)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 60, 200)
    gt = np.zeros((h, w), np.uint8)
    cv2.circle(gt, (w // 2 - 20, h // 2), h // 4, 1, -1)
    gt[h // 2 - 12 : h // 2 + 12, w // 2 - 5 : w // 2 + 40] = 1
    img[gt > 0] = (210, 50, 40)
    noise = rng.integers(-12, 13, size=img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8), gt > 0


@pytest.fixture
def drawn() -> tuple[np.ndarray, np.ndarray]:
    return scene()

