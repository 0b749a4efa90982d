"""Fixtures shared by every test folder: the real evaluation data, a scratch maskloop project, prerequisites.

The suite depends on nothing outside the clone and its temp dir: this module points the per-user state of the
tools the tests drive (DVC's site cache and global config, XDG caches) into a fresh folder under the temp dir
before anything else runs, and every server binds a free loopback port.

Prerequisites that ``make test`` installs or provides (``../shared/data``, Ray, Chromium, the Label Studio
server) are checked with :func:`require`: outside CI a missing one skips the test with the reason; under
``CI=true`` it fails the test with the same message, so nothing skips silently in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED_DATA = Path(os.environ.get("MASKLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
CHROMIUM = Path(os.environ.get("MASKLOOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _isolate_user_state() -> None:
    """Per-user state of DVC and other tools in a fresh folder under the temp dir (inherited by subprocesses),
    so neither leftovers of earlier runs nor a user's own config can change a test's outcome."""
    if os.environ.get("MASKLOOP_TEST_STATE"):  # already isolated (a subprocess of the suite)
        return
    base = Path(tempfile.mkdtemp(prefix="maskloop-test-state-"))
    dirs = {"DVC_SITE_CACHE_DIR": "dvc-site", "DVC_GLOBAL_CONFIG_DIR": "dvc-global",
            "DVC_SYSTEM_CONFIG_DIR": "dvc-system", "XDG_CACHE_HOME": "xdg-cache", "XDG_CONFIG_HOME": "xdg-config"}
    for var, name in dirs.items():
        (base / name).mkdir()
        os.environ[var] = str(base / name)
    os.environ["MASKLOOP_TEST_STATE"] = str(base)
    os.environ["DVC_NO_ANALYTICS"] = "1"


_isolate_user_state()


def missing(reason: str) -> NoReturn:
    """A prerequisite that ``make test`` installs or provides is absent: skip outside CI, fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require(ok: bool, reason: str) -> None:
    """:func:`missing` when ``ok`` is false."""
    if not ok:
        missing(reason)


def require_chromium() -> Path:
    """Debian's Chromium (installed by ``make test``'s system-deps step)."""
    require(CHROMIUM.is_file(), f"Chromium not found at {CHROMIUM}: `make system-deps` installs it "
                                "(apt-get install chromium chromium-driver)")
    return CHROMIUM


def free_port() -> int:
    """A free TCP port on the loopback interface (servers started by tests never use fixed ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_streamlit(proc: subprocess.Popen, port: int, timeout: float = 90.0) -> subprocess.Popen:  # type: ignore[type-arg]
    """Return ``proc`` once the Streamlit app on ``port`` answers its health check with ``ok``; else stop the
    process group and fail the test."""
    import signal
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise AssertionError(f"the review dashboard did not come up within {timeout:.0f} s")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real photos with ground truth): skips outside CI when absent, fails under CI."""
    require((SHARED_DATA / "ecssd-dev" / "images").is_dir(),
            f"real evaluation data not found at {SHARED_DATA} (set MASKLOOP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ecssd(shared_data: Path) -> Path:
    return shared_data / "ecssd-dev"


@pytest.fixture(scope="session")
def alphamatting(shared_data: Path) -> Path:
    return shared_data / "alphamatting-dev"


@pytest.fixture(scope="session")
def tiny_sam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``vit_tiny`` SAM checkpoint (state dict) built by the loader's own builder: tests need no
    downloaded weights (latency and plumbing, not quality)."""
    import torch

    from pipeline.preannotators.sam import SAM_ARCHS

    torch.manual_seed(0)
    model = SAM_ARCHS["vit_tiny"].build()
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    return path


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
