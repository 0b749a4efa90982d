"""Fixtures for the CVAT tests: real ECSSD ground-truth masks with holes and several parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core import io

# ECSSD masks chosen for their topology: 0018 (2 parts, 15 holes), 0026 (2 parts, 12 holes), 0034 (2 parts,
# 3 holes), 0005 (1 part, 3 holes), 0002 (1 part, no hole)
GT_NAMES = ("0002", "0005", "0018", "0026", "0034")


@pytest.fixture(scope="session")
def gt_masks(ecssd: Path) -> dict[str, np.ndarray]:
    """{name: (H, W) uint8 {0, 255}} real ground-truth masks."""
    return {name: io.read_mask(ecssd / "masks" / f"{name}.png") for name in GT_NAMES}
