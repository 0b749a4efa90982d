"""ingest -> preannotate (grabcut) -> curate -> trimap -> matte through the real ``maskloop`` CLI on real
ECSSD photos, once on the local process pool and once on the two-node Ray cluster: every output byte-equal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.cli import STAGES
from tests.conftest import REPO, maskloop

CHAIN = ("ingest", "preannotate", "curate", "trimap", "matte")
N_PHOTOS = 4
# pymatting's numba functions compile once per machine, not once per test project or worker
NUMBA_ENV = {"NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".maskloop" / "numba"))}


def _smallest_photos(ecssd: Path, n: int) -> list[Path]:
    """The ``n`` smallest photos (by bytes, a proxy for pixels) so the chain stays fast on 2 cores."""
    return sorted(sorted((ecssd / "images").glob("*.jpg")), key=lambda p: p.stat().st_size)[:n]


def _project(root: Path, photos: list[Path], runner: dict[str, object]) -> Path:
    raw = root / "data" / "raw" / "images"
    raw.mkdir(parents=True)
    for p in photos:
        shutil.copy(p, raw / p.name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runner"] = {**params.get("runner", {}), **runner}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _outputs(root: Path) -> dict[str, bytes]:
    """Every file the stages wrote (DVC-tracked data and metrics; runner state and timing reports excluded)."""
    files: dict[str, bytes] = {}
    for sub in ("data", "metrics"):
        base = root / sub
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and "raw" not in p.relative_to(base).parts[:1]:
                    files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


@pytest.mark.ray
def test_chain_on_ray_is_byte_identical_to_the_local_pool(ray_cluster, ecssd: Path, tmp_path: Path) -> None:
    stages = [s for s in CHAIN if s in STAGES]
    assert stages[:1] == ["ingest"], "the ingest stage must exist"
    photos = _smallest_photos(ecssd, N_PHOTOS)
    local = _project(tmp_path / "local", photos, {"executor": "local", "workers": 2, "progress": False})
    remote = _project(tmp_path / "ray", photos, {"executor": "ray", "workers": 2, "progress": False,
                                                 "ray": {"address": ray_cluster.address}})
    for stage in stages:
        maskloop(stage, cwd=local, env=NUMBA_ENV)
        proc = maskloop(stage, cwd=remote, env=NUMBA_ENV)
        assert "Ray workers" in proc.stdout + proc.stderr, f"{stage} did not run on Ray:\n{proc.stderr}"
    a, b = _outputs(local), _outputs(remote)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("data/matte/alpha/")]) == N_PHOTOS or "matte" not in stages
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"outputs differ between the local pool and Ray: {differing}"
    # an up-to-date rerun on Ray computes nothing (fingerprints are checked by the driver)
    again = maskloop(stages[-1], cwd=remote, env=NUMBA_ENV)
    assert "Ray workers" not in again.stdout + again.stderr
