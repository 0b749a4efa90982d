"""The Ray executor on a real two-node local Ray cluster, against the local process pool."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.core import io
from pipeline.core.errors import ConfigError
from pipeline.core.executors import ray as rayex
from pipeline.core.params import RayParams, RunnerParams
from pipeline.core.runner import SetupFailed, Stage, StageResult, run_stage
from tests.conftest import copy_ecssd

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("maskloop_ray_synth_stage", HERE / "synth_stage.py")
assert _spec is not None and _spec.loader is not None
synth = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = synth
_spec.loader.exec_module(synth)

N_ITEMS = 12


def _ray_runner(address: str, workers: int = 2, max_retries: int = 3, chunksize: int = 1,
                max_failure_fraction: float = 0.1) -> RunnerParams:
    return RunnerParams(executor="ray", workers=workers, progress=False, chunksize=chunksize,
                        max_failure_fraction=max_failure_fraction,
                        ray=RayParams(address=address, max_retries=max_retries))


def _run(base: Path, images: list[Path], runner: RunnerParams, **kw: object) -> StageResult:
    die_once = kw.pop("die_once", ())
    explode = kw.pop("explode", ())
    params = synth.SynthParams(trace=str(base / "trace"), **kw)  # type: ignore[arg-type]
    stage = synth.make_stage(base / "out", base / "state", params)
    works = synth.works_for(images, die_once=die_once, explode=explode)  # type: ignore[arg-type]
    result = run_stage(stage, works, runner, reports_dir=base / "reports")
    io.write_parquet(base / "out" / "synth.parquet", result.frame(["item_id", "mean", "h"]))
    return result


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def images(ecssd: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return copy_ecssd(ecssd, tmp_path_factory.mktemp("synth_in"), N_ITEMS)


@pytest.fixture(scope="module")
def local_tree(images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Outputs of the local process pool (2 workers): the reference every Ray run must equal."""
    base = tmp_path_factory.mktemp("local")
    (base / "trace").mkdir()
    key = images[3].stem
    (base / "trace" / f"died-{key}").write_text("")  # the local run must not kill itself
    result = _run(base, images, RunnerParams(workers=2, progress=False, max_failure_fraction=0.5),
                  die_once=(key,), explode=(images[5].stem,))
    assert result.n_failed == 1
    return _tree(base / "out")


@pytest.fixture(autouse=True)
def _ship_synth_by_value() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(synth)


# --------------------------------------------------------------------------- pure helpers (no cluster)


def test_pool_size_follows_workers_cpus_and_gpus() -> None:
    r = RunnerParams(executor="ray")
    assert rayex.pool_size(r, {"CPU": 8.0}, n_chunks=100, num_gpus=0) == 8      # workers 0 = cluster CPUs
    assert rayex.pool_size(r, {"CPU": 8.0}, n_chunks=3, num_gpus=0) == 3        # never more than the work
    assert rayex.pool_size(r, {"CPU": 8.0, "GPU": 2.0}, n_chunks=100, num_gpus=1.0) == 2
    assert rayex.pool_size(r, {"CPU": 8.0, "GPU": 2.0}, n_chunks=100, num_gpus=0.5) == 4
    half = RunnerParams(executor="ray", ray=RayParams(num_cpus_per_task=2.0))
    assert rayex.pool_size(half, {"CPU": 7.0}, n_chunks=100, num_gpus=0) == 3
    assert rayex.pool_size(RunnerParams(executor="ray", workers=5), {"CPU": 8.0}, 100, 0) == 5
    assert rayex.pool_size(RunnerParams(executor="ray", workers=5), {"CPU": 2.0}, 100, 0) == 2  # capped
    free = RunnerParams(executor="ray", ray=RayParams(num_cpus_per_task=0.0))
    assert rayex.pool_size(free, {"CPU": 3.0}, n_chunks=100, num_gpus=0) == 3
    with pytest.raises(ConfigError, match="not enough for one worker"):
        rayex.pool_size(half, {"CPU": 1.0}, n_chunks=10, num_gpus=0)


def test_gpus_per_actor(tmp_path: Path) -> None:
    cpu_stage = synth.make_stage(tmp_path, tmp_path, synth.SynthParams())
    gpu_stage = Stage(**{**cpu_stage.__dict__, "gpu": True})
    assert rayex.gpus_per_actor(cpu_stage, RayParams(num_gpus_per_task=1.0), 4.0) == 0.0
    assert rayex.gpus_per_actor(gpu_stage, RayParams(), 4.0) == 1.0
    assert rayex.gpus_per_actor(gpu_stage, RayParams(num_gpus_per_task=0.25), 4.0) == 0.25
    assert rayex.gpus_per_actor(gpu_stage, RayParams(num_gpus_per_task=1.0), 0.0) == 0.0  # CPU-only cluster


def test_code_digest_changes_with_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "ml_digest_probe.py"
    mod.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a = rayex.code_digest(["ml_digest_probe", "pipeline.core.runner"])
    assert a == rayex.code_digest(["pipeline.core.runner", "ml_digest_probe"])  # order-free
    mod.write_text("X = 2\n")
    assert rayex.code_digest(["ml_digest_probe", "pipeline.core.runner"]) != a
    stage = synth.make_stage(tmp_path, tmp_path, synth.SynthParams())
    assert rayex.stage_modules(stage) == ["pipeline.core.io", "pipeline.core.runner"]  # test code is shipped by value


def test_missing_ray_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'maskloop\[ray\]'"):
        rayex.connect(RayParams())
    stage = synth.make_stage(Path("/nonexistent"), Path("/nonexistent"), synth.SynthParams())
    with pytest.raises(ConfigError, match=r"Ray is not installed"):
        list(rayex.RayExecutor(RunnerParams(executor="ray")).run(stage, synth.works_for([Path("a.png")])))


# --------------------------------------------------------------------------- on the cluster


@pytest.mark.ray
def test_same_bytes_as_local_pool_setup_once_per_actor_and_rerun_skips(
    ray_cluster, images: list[Path], local_tree: dict[str, bytes], tmp_path: Path
) -> None:
    key = images[3].stem
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / f"died-{key}").write_text("")
    runner = _ray_runner(ray_cluster.address, max_failure_fraction=0.5, chunksize=2)
    result = _run(tmp_path, images, runner, die_once=(key,), explode=(images[5].stem,))
    assert result.n_computed == N_ITEMS
    assert [o.key for o in result.failures] == [images[5].stem]
    assert "planted failure" in result.failures[0].error and images[5].name in result.failures[0].error
    assert _tree(tmp_path / "out") == local_tree
    pids = {p.name for p in (tmp_path / "trace" / "pids").iterdir()}
    setups = sorted(p.name for p in (tmp_path / "trace" / "setup").iterdir())
    assert len(pids) == 2 and os.getpid() not in {int(p) for p in pids}   # two Ray worker processes
    assert sorted(s.split("-")[0] for s in setups) == sorted(pids)        # setup ran once per actor
    again = _run(tmp_path, images, runner, die_once=(key,), explode=(images[5].stem,))
    assert again.n_computed == 0 and _tree(tmp_path / "out") == local_tree


@pytest.mark.ray
def test_worker_killed_mid_stage_is_retried_by_ray(
    ray_cluster, images: list[Path], local_tree: dict[str, bytes], tmp_path: Path
) -> None:
    key = images[3].stem
    trace = tmp_path / "trace"
    trace.mkdir()
    (trace / f"died-{key}").write_text("")
    killed: list[int] = []

    def killer() -> None:  # SIGKILL one Ray worker process from outside once a few items are done
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = list((tmp_path / "out" / "dim").glob("*.png")) if (tmp_path / "out" / "dim").is_dir() else []
            pids = sorted((trace / "pids").iterdir()) if (trace / "pids").is_dir() else []
            if len(done) >= 3 and pids:
                pid = int(pids[0].name)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    result = _run(tmp_path, images, _ray_runner(ray_cluster.address, max_failure_fraction=0.5), sleep=0.3,
                  die_once=(key,), explode=(images[5].stem,))
    t.join()
    assert killed, "the test never killed a worker"
    assert [o.key for o in result.failures] == [images[5].stem]
    assert _tree(tmp_path / "out") == local_tree
    setups = {p.name.split("-")[0] for p in (trace / "setup").iterdir()}
    assert str(killed[0]) in setups and len(setups) >= 3  # the restarted actor loaded its resource again


@pytest.mark.ray
def test_item_that_kills_its_worker_fails_alone_and_rerun_completes(
    ray_cluster, images: list[Path], local_tree: dict[str, bytes], tmp_path: Path
) -> None:
    key = images[3].stem  # one actor only: its death must not take the rest of the stage with it
    runner = _ray_runner(ray_cluster.address, workers=1, max_retries=0, max_failure_fraction=0.5)
    result = _run(tmp_path, images, runner, die_once=(key,), explode=(images[5].stem,))
    by_key = {o.key: o for o in result.outcomes}
    assert by_key[key].status == "failed" and "worker process died 1 time(s)" in by_key[key].error
    assert {o.key for o in result.failures} == {key, images[5].stem}        # everything else completed
    assert not (tmp_path / "out" / "dim" / f"{key}.png").exists()
    again = _run(tmp_path, images, runner, die_once=(key,), explode=(images[5].stem,))
    assert again.n_computed == 1                                            # only the lost item
    assert _tree(tmp_path / "out") == local_tree


@pytest.mark.ray
def test_setup_failure_is_fatal_and_named(ray_cluster, images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(SetupFailed, match=r"setup failed: FileNotFoundError: models/missing.pt"):
        _run(tmp_path, images[:4], _ray_runner(ray_cluster.address), fail_setup=True)


@pytest.mark.ray
def test_project_folder_missing_on_workers_is_a_config_error(
    ray_cluster, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rayex.WORKDIR_ENV, str(tmp_path / "not-mounted"))
    with pytest.raises(ConfigError, match=r"not-mounted does not exist on Ray node"):
        _run(tmp_path, images[:2], _ray_runner(ray_cluster.address))


@pytest.mark.ray
def test_unreachable_cluster_is_a_config_error(tmp_path: Path, images: list[Path]) -> None:
    with pytest.raises(ConfigError, match=r"cannot reach a Ray cluster at runner.ray.address='127.0.0.1:1'"):
        _run(tmp_path, images[:2], _ray_runner("127.0.0.1:1"))


def test_forwarded_env_keeps_numba_and_maskloop_settings_but_no_secrets() -> None:
    env = {"NUMBA_CACHE_DIR": "/c", "MASKLOOP_RAY_WORKDIR": "/w", "MASKLOOP_API_TOKEN": "t",
           "LABEL_STUDIO_API_KEY": "k", "PATH": "/bin"}
    assert rayex.forwarded_env(env) == {"MASKLOOP_RAY_WORKDIR": "/w", "NUMBA_CACHE_DIR": "/c"}


def test_cli_names_an_unreachable_cluster_in_one_sentence(tmp_path: Path, images: list[Path]) -> None:
    import yaml

    from tests.conftest import REPO, maskloop

    raw = tmp_path / "data" / "raw" / "images"
    raw.mkdir(parents=True)
    for p in images[:2]:
        (raw / p.name).write_bytes(p.read_bytes())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runner"] = {"executor": "ray", "workers": 2, "ray": {"address": "127.0.0.1:1"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = maskloop("ingest", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "error: cannot reach a Ray cluster at runner.ray.address='127.0.0.1:1'" in proc.stderr
    assert "Traceback" not in proc.stderr
