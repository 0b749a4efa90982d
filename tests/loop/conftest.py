"""A small real project for the loop tests: ECSSD photos ingested, their ground-truth masks as curated masks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.core import io
from tests.conftest import REPO, copy_ecssd

LOOP_PARAMS = {
    "runner": {"executor": "local", "workers": 1, "max_failure_fraction": 0.1, "progress": False},
    "export": {"seed": 0, "require_verified": True},
    "train": {"arch": "lraspp_mobilenet_v3_large", "resolution": 64, "epochs": 2, "batch_size": 4, "seed": 0},
}


def make_project(root: Path, ecssd: Path, n: int, verified: Callable[[int], bool] = lambda i: True,
                 overrides: dict[str, dict[str, object]] | None = None) -> Path:
    """Project at ``root``: ``n`` ECSSD photos ingested; curated masks = ground truth; returns params path."""
    from pipeline.stages import ingest

    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in {**LOOP_PARAMS, **(overrides or {})}.items():
        params[section] = {**(params.get(section) or {}), **values}
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    copy_ecssd(ecssd, root / "data" / "raw" / "images", n)
    ingest.run(params_path)
    manifest = io.read_parquet(root / "data" / "ingest" / "manifest.parquet")
    rows = []
    for i, r in enumerate(manifest[manifest["status"] == "ok"].sort_values("source_path").itertuples(index=False)):
        stem = Path(str(r.source_path)).stem
        shutil.copy(ecssd / "masks" / f"{stem}.png", root / "data" / "curated" / "masks" / f"{r.item_id}.png"
                    if (root / "data" / "curated" / "masks").is_dir() else _mkdir(root / "data" / "curated" / "masks")
                    / f"{r.item_id}.png")
        rows.append({"item_id": r.item_id, "included": True, "verified": bool(verified(i)), "source": "correction",
                     "fixes": "", "excluded_reason": "", "mask_digest": "",
                     "dup_group": r.item_id})
    io.write_parquet(root / "data" / "curated" / "curated.parquet", pd.DataFrame(rows).sort_values("item_id"))
    return params_path


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory (params paths are relative to the project root)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
