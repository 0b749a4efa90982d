"""The README's main job, for real: `dvc repro` on a clean copy of the repository (the embedded demo), then a
no-op `dvc repro`, then incremental runs that recompute only what changed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, VENV_BIN

pytestmark = pytest.mark.slow

STAGE_LINE = re.compile(r"(\w+): (\d+) items, (\d+) up to date, (\d+) to compute")


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "NUMBA_CACHE_DIR": str(REPO / ".maskloop" / "numba-tests")}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _computed(log: str) -> dict[str, tuple[int, int]]:
    """stage -> (items, computed) from the runner's log lines."""
    return {m.group(1): (int(m.group(2)), int(m.group(4))) for m in STAGE_LINE.finditer(log)}


def _ran(log: str) -> list[str]:
    """Stages DVC ran, by name (``always_run/dvc.yaml:pull`` -> ``pull``)."""
    return [s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", log)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean clone-like copy of the committed tree (what a fresh machine gets), with `dvc repro` run once."""
    root = tmp_path_factory.mktemp("demo") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for rel in filter(None, files.stdout.split("\0")):
        src = REPO / rel
        if rel.startswith(("tests/", "benchmarks/")) or not src.exists():
            continue
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    git = ["git", "-c", "user.email=ci@maskloop", "-c", "user.name=ci"]
    _run(["git", "init", "-q"], root)
    _run([*git, "add", "-A"], root)
    _run([*git, "commit", "-qm", "clone"], root)
    proc = _run([str(VENV_BIN / "dvc"), "repro"], root)
    (root / "first_repro.log").write_text(proc.stdout + proc.stderr)
    return root


def test_demo_builds_the_whole_dataset(demo: Path) -> None:
    log = (demo / "first_repro.log").read_text()
    assert {"ingest", "preannotate", "curate", "trimap", "matte", "composite", "export", "train", "evaluate"} <= set(_ran(log))
    manifest = pd.read_parquet(demo / "data/ingest/manifest.parquet")
    ids = sorted(manifest.loc[manifest.status == "ok", "item_id"])
    assert len(ids) == 4
    for folder in ("data/preannotate/masks", "data/curated/masks", "data/trimap/trimaps", "data/matte/alpha",
                   "data/matte/foreground"):
        assert sorted(p.stem for p in (demo / folder).glob("*.png")) == ids, folder
    curated = pd.read_parquet(demo / "data/curated/curated.parquet")
    assert curated.included.all() and not curated.verified.any()  # the demo says its masks are unverified
    for folder in ("data/composite/image_strips", "data/composite/alpha_strips"):  # one strip each per matted item
        assert sorted(p.stem for p in (demo / folder).glob("*.png")) == ids, folder
    from pycocotools.coco import COCO

    splits = pd.read_parquet(demo / "data/export/splits.parquet")
    assert sorted(splits.item_id) == ids
    n_images = sum(len(COCO(str(demo / f"data/export/coco/{s}.json")).getImgIds()) for s in ("train", "val", "test"))
    assert n_images >= 4
    assert (demo / "models/train/model.pt").is_file()
    assert (demo / "metrics/qa.json").is_file()
    status = _run([str(VENV_BIN / "maskloop"), "status"], demo).stdout
    assert "4 items from 4 files; 0 quarantined" in status and "unverified" in status


def test_second_repro_does_nothing(demo: Path) -> None:
    t0 = time.perf_counter()
    proc = _run([str(VENV_BIN / "dvc"), "repro"], demo)
    seconds = time.perf_counter() - t0
    ran = _ran(proc.stdout + proc.stderr)
    # pull asks the annotation tool for new corrections every time (the server's state is outside DVC's view);
    # with the demo's `none` backend it writes identical outputs, so nothing downstream runs.
    assert set(ran) <= {"pull"}, ran
    assert "pull" in ran  # it is found in always_run/dvc.yaml and still runs every time
    print(f"no-op dvc repro: {seconds:.2f} s, stages run: {ran} (timed by benchmarks/noop_repro.py)")


def test_new_photo_costs_one_item_and_param_change_reruns_one_stage(demo: Path) -> None:
    src = demo / "data/raw/images/coffee.jpg"
    (demo / "data/raw/images/coffee copy.jpg").write_bytes(src.read_bytes()[::1] + b"new-bytes")
    proc = _run([str(VENV_BIN / "dvc"), "repro"], demo)
    done = _computed(proc.stdout + proc.stderr)
    for stage in ("preannotate", "curate", "trimap", "matte"):
        assert done[stage] == (5, 1), (stage, done.get(stage))
    params = demo / "params.yaml"
    text = params.read_text()
    trimap_section = text[text.index("\ntrimap:") :]
    changed = re.sub(r"(\n  band_px: )(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + 2}", trimap_section, count=1)
    assert changed != trimap_section, "params.yaml trimap section has no band_px"
    params.write_text(text.replace(trimap_section, changed))
    proc = _run([str(VENV_BIN / "dvc"), "repro"], demo)
    ran = _ran(proc.stdout + proc.stderr)
    assert "preannotate" not in ran and "curate" not in ran and "ingest" not in ran
    done = _computed(proc.stdout + proc.stderr)
    assert done["trimap"] == (5, 5)
