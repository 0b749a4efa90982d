"""Matting tests share one persistent numba cache so pymatting compiles once, not per test run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[2] / ".maskloop" / "numba"))
