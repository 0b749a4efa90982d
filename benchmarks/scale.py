"""Scale-out benchmark: the matte stage on the local process pool vs on Ray, same machine, same worker count.

Builds a project from real ECSSD photos (ingest -> preannotate grabcut -> curate -> trimap, untimed), starts a
one-node Ray cluster with ``ray start --head`` (as a team would have one running), then times the matte stage
from a clean state alternately on the local pool and on Ray (``--repeats`` times each, best kept: the machine
is shared and noisy). Ray's timing includes everything a ``maskloop matte`` run pays: connecting to the
cluster, starting the actor pool, dispatching items. The outputs of both executors are checked byte-equal.

Then it measures the figures the scaling model in ``benchmarks/README.md`` rests on, with a no-op stage:
actor-pool start-up, the driver's per-item coordination cost on Ray and on the local pool, and the driver's
per-item fingerprint check of an up-to-date item.

Target (issue 10): Ray throughput >= 0.8 x the local pool's at equal worker count.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# loopback-only one-machine cluster; token auth like `ray start`'s default (set before Ray is imported)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

import yaml
from _common import REPO, finish, shared_data

from pipeline.core import io
from pipeline.core.params import RayParams, RunnerParams
from pipeline.core.runner import ItemResult, Stage, WorkItem, run_stage

TARGET_RATIO = 0.8
MODEL_WORKERS = (8, 64, 512)


def noop(work: WorkItem, _params: Any, _resource: Any) -> ItemResult:
    """A stage that does nothing but write one tiny file: what is left is coordination cost."""
    return ItemResult(files={f"out/{work.key}.txt": work.key.encode()}, record={"k": work.key})


_RAY_TEMP: list[str] = []


def _start_cluster(cpus: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _RAY_TEMP[:] = [tempfile.mkdtemp(prefix="mlscale")]  # short (Ray's socket paths), under TMPDIR
    log = open(tmp / "ray-head.log", "wb")  # noqa: SIM115 - lives as long as the cluster
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--disable-usage-stats",
         f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false",
         f"--temp-dir={_RAY_TEMP[0]}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    import ray

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"ray start failed:\n{(tmp / 'ray-head.log').read_text(errors='replace')[-2000:]}")
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            ray.shutdown()
            return proc, address
        except (ConnectionError, RuntimeError):
            time.sleep(2)
    sys.exit("the Ray head did not come up in 240 s")


def _stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    try:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
    finally:
        for temp in _RAY_TEMP:
            shutil.rmtree(temp, ignore_errors=True)


def _params_file(proj: Path, name: str, runner: dict[str, Any]) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runner"] = {**params.get("runner", {}), **runner}
    path = proj / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _time_matte(proj: Path, params: Path) -> tuple[float, list[float], str]:
    from pipeline.stages import matte

    shutil.rmtree(proj / ".maskloop" / "state" / "matte", ignore_errors=True)
    shutil.rmtree(proj / "data" / "matte", ignore_errors=True)
    t0 = time.perf_counter()
    matte.run(params)
    wall = time.perf_counter() - t0
    seconds = [float(s) for s in io.read_parquet(proj / "reports" / "matte.parquet")["seconds"]]
    return wall, seconds, _tree_digest(proj / "data" / "matte")


def _noop_wall(base: Path, runner: RunnerParams, n: int) -> tuple[float, float]:
    """(wall of a clean run, wall of the up-to-date rerun) of the no-op stage over ``n`` items."""
    shutil.rmtree(base, ignore_errors=True)
    stage: Stage[dict[str, int]] = Stage(name="noop", version="1", params={"v": 1}, root=base / "out",
                                         process=noop, state_root=base / "state", output_dirs=("out",))
    works = [WorkItem(key=f"k{i:06d}") for i in range(n)]
    t0 = time.perf_counter()
    run_stage(stage, works, runner)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = run_stage(stage, works, runner)
    second = time.perf_counter() - t0
    if again.n_computed:
        sys.exit("no-op rerun recomputed items: the runner lost its state")
    return first, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=12, help="ECSSD photos in the matte run (default 12)")
    ap.add_argument("--workers", type=int, default=2, help="workers for both executors (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per executor, best kept (default 2)")
    ap.add_argument("--noop-items", type=int, default=300, help="items of the coordination-cost runs")
    args = ap.parse_args()
    ecssd = shared_data() / "ecssd-dev"
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".maskloop" / "numba"))
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-scale-"))
    cwd = os.getcwd()
    cluster = None
    try:
        proj = tmp / "proj"
        raw = proj / "data" / "raw" / "images"
        raw.mkdir(parents=True)
        for p in sorted((ecssd / "images").glob("*.jpg"))[: args.photos]:
            shutil.copy(p, raw / p.name)
        local = _params_file(proj, "params-local.yaml", {"executor": "local", "workers": args.workers,
                                                          "progress": False})
        os.chdir(proj)
        from pipeline.stages import curate, ingest, preannotate, trimap

        for mod in (ingest, preannotate, curate, trimap):
            mod.run(local)
        print(f"project ready: {args.photos} photos up to trimaps", file=sys.stderr)
        cluster, address = _start_cluster(args.workers, tmp)
        ray_params = _params_file(proj, "params-ray.yaml", {"executor": "ray", "workers": args.workers,
                                                             "progress": False, "ray": {"address": address}})
        _time_matte(proj, local)  # warm-up: numba cache, page cache (untimed)
        runs: dict[str, list[float]] = {"local": [], "ray": []}
        item_s: dict[str, list[float]] = {"local": [], "ray": []}
        digests: dict[str, set[str]] = {"local": set(), "ray": set()}
        for _ in range(args.repeats):
            for name, params in (("local", local), ("ray", ray_params)):
                wall, seconds, digest = _time_matte(proj, params)
                runs[name].append(wall)
                digests[name].add(digest)
                item_s[name].extend(seconds)
                print(f"matte on {name}: {wall:.2f} s", file=sys.stderr)
        os.chdir(cwd)

        n = args.noop_items
        ray_runner = RunnerParams(executor="ray", workers=args.workers, progress=False,
                                  ray=RayParams(address=address))
        local_runner = RunnerParams(executor="local", workers=args.workers, progress=False)
        start_wall, _ = _noop_wall(tmp / "noop-start", ray_runner, args.workers)
        ray_wall, skip_wall = _noop_wall(tmp / "noop-ray", ray_runner, n)
        local_wall, _ = _noop_wall(tmp / "noop-local", local_runner, n)
    finally:
        os.chdir(cwd)
        if cluster is not None:
            _stop_cluster(cluster)
        shutil.rmtree(tmp, ignore_errors=True)

    local_tp = args.photos / min(runs["local"])
    ray_tp = args.photos / min(runs["ray"])
    ratio = ray_tp / local_tp
    t_item = statistics.mean(item_s["ray"])
    t_start = start_wall
    t_dispatch = max(ray_wall - t_start, 0.0) / n   # driver-side cost per item once the pool is up
    t_local_dispatch = local_wall / n
    t_check = skip_wall / n
    figures: dict[str, object] = {
        "photos": args.photos, "workers": args.workers,
        "local_items_per_s": local_tp, "ray_items_per_s": ray_tp, "ray_vs_local": ratio,
        "matte_item_s": t_item, "matte_item_s_local": statistics.mean(item_s["local"]), "ray_pool_start_s": t_start, "ray_dispatch_ms": t_dispatch * 1e3,
        "local_dispatch_ms": t_local_dispatch * 1e3, "driver_check_ms": t_check * 1e3,
    }
    for w in MODEL_WORKERS:  # the scaling model of benchmarks/README.md
        figures[f"model_items_per_s_{w}"] = 1.0 / max(t_item / w, t_dispatch + t_check)
    failures = []
    if ratio < TARGET_RATIO:
        failures.append(f"Ray throughput {ratio:.2f} x the local pool's, below {TARGET_RATIO}")
    if len(digests["local"] | digests["ray"]) != 1:
        failures.append("matte outputs differ between runs/executors")
    finish(figures, failures)


if __name__ == "__main__":
    main()
