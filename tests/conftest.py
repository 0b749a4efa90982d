"""Fixtures shared by every test folder: the real evaluation data, a scratch maskloop project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED_DATA = Path(os.environ.get("MASKLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real photos with ground truth); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "ecssd-dev" / "images").is_dir():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA} (set MASKLOOP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ecssd(shared_data: Path) -> Path:
    return shared_data / "ecssd-dev"


@pytest.fixture(scope="session")
def alphamatting(shared_data: Path) -> Path:
    return shared_data / "alphamatting-dev"


def write_params(root: Path, text: str) -> Path:
    path = root / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def maskloop(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real ``maskloop`` console script in ``cwd`` (a subprocess, like DVC does)."""
    full_env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    full_env.update(env or {})
    proc = subprocess.run(
        [str(VENV_BIN / "maskloop"), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"maskloop {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder with the repo's params.yaml, dvc.yaml and the sample photos copied in."""
    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "data" / "raw", root / "data" / "raw")
    if (REPO / "data" / "backgrounds").is_dir():
        shutil.copytree(REPO / "data" / "backgrounds", root / "data" / "backgrounds")
    (root / "data" / "review" / "db").mkdir(parents=True)  # shipped (empty) in the repo: a dep of `decisions`
    return root


def copy_ecssd(ecssd: Path, dest: Path, n: int, start: int = 0) -> list[Path]:
    """Copy ``n`` real ECSSD photos (sorted) into ``dest``; returns the copied paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted((ecssd / "images").glob("*.jpg"))[start : start + n]:
        shutil.copy(src, dest / src.name)
        out.append(dest / src.name)
    return out
