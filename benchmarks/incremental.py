"""Runner benchmark over 2,000 real photos (ECSSD dev set replicated with distinct bytes).

Prints (a) the cost of a run after adding 20 new items as a fraction of a full run (target <= 5%),
(b) runner throughput relative to a plain ``multiprocessing.Pool.imap`` over the same per-item function and
worker count (target >= 0.9), (c) peak resident memory of the whole stage, all processes (target < 1 GB).

The per-item function is a typical light stage: decode the photo, threshold + clean a mask, encode it as PNG.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from _common import finish, shared_data, tree_peak_rss_mb

from pipeline.core import io
from pipeline.core.params import RunnerParams
from pipeline.core.runner import FileInput, ItemResult, Stage, WorkItem, run_stage


@dataclass(frozen=True)
class BenchParams:
    kernel: int = 5


def compute(path: Path, kernel: int) -> bytes:
    """Decode -> Otsu mask -> morphological open/close -> PNG bytes."""
    img = io.read_image(path)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    _, mask = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, k), cv2.MORPH_CLOSE, k)
    return io.encode_png(mask)


def process(work: WorkItem, params: BenchParams, _resource: Any) -> ItemResult:
    data = compute(work.input("image"), params.kernel)
    return ItemResult(files={f"masks/{work.key}.png": data}, record={"item_id": work.key, "bytes": len(data)})


_OUT: list[Path] = []


def _baseline_init(out: Path) -> None:
    cv2.setNumThreads(1)
    _OUT[:] = [out]


def baseline_fn(path: Path) -> int:
    data = compute(path, BenchParams().kernel)
    io.write_bytes(_OUT[0] / "masks" / f"{path.stem}.png", data)
    return len(data)


def replicate(src_dir: Path, dest: Path, n: int) -> list[Path]:
    """``n`` photos: the ECSSD JPEGs repeated, each copy made byte-distinct by a trailing comment after EOI."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(src_dir.glob("*.jpg"))
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        p = dest / f"{i:05d}.jpg"
        p.write_bytes(src.read_bytes() + f"maskloop-copy-{i}".encode())
        out.append(p)
    return out


class PeakSampler:
    """Samples the resident memory of this process and its children every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_peak_rss_mb())
            time.sleep(0.05)

    def __enter__(self) -> PeakSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def works(paths: list[Path]) -> list[WorkItem]:
    return [WorkItem(key=p.stem, inputs={"image": FileInput(p)}) for p in sorted(paths)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--added", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    ecssd = shared_data() / "ecssd-dev" / "images"
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-bench-"))
    try:
        paths = replicate(ecssd, tmp / "raw", args.items + args.added)
        base, added = paths[: args.items], paths[args.items :]
        runner = RunnerParams(workers=args.workers, progress=False, chunksize=4)
        stage = Stage(name="bench", version="1", params=BenchParams(), root=tmp / "out", process=process,
                      state_root=tmp / "state", output_dirs=("masks",))

        # (b) baseline first (warms the page cache equally for both): plain Pool.imap, same function + writes
        ctx = mp.get_context("fork")
        t0 = time.perf_counter()
        with ctx.Pool(args.workers, initializer=_baseline_init, initargs=(tmp / "baseline",)) as pool:
            n = sum(1 for _ in pool.imap(baseline_fn, base, chunksize=4))
        t_pool = time.perf_counter() - t0
        assert n == len(base)

        # (a)+(c) full run with the runner, memory sampled
        with PeakSampler() as sampler:
            t0 = time.perf_counter()
            full = run_stage(stage, works(base), runner)
            t_full = time.perf_counter() - t0
        peak_mb = sampler.peak
        assert full.n_computed == len(base) and full.n_failed == 0

        # (a) add 20 new items
        t0 = time.perf_counter()
        inc = run_stage(stage, works(base + added), runner)
        t_inc = time.perf_counter() - t0
        assert inc.n_computed == len(added), inc.n_computed

        # (a') a no-op run
        t0 = time.perf_counter()
        noop = run_stage(stage, works(base + added), runner)
        t_noop = time.perf_counter() - t0
        assert noop.n_computed == 0

        # correctness: runner outputs equal the baseline's
        same = all(
            (tmp / "out" / "masks" / f"{p.stem}.png").read_bytes() == (tmp / "baseline" / "masks" / f"{p.stem}.png").read_bytes()
            for p in base[:: max(1, len(base) // 50)]
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    frac = t_inc / t_full
    throughput_ratio = t_pool / t_full
    print(f"items={len(base)} workers={args.workers}")
    print(f"full run: {t_full:.2f} s ({len(base) / t_full:.1f} items/s); plain Pool.imap: {t_pool:.2f} s")
    print(f"after adding {len(added)}: {t_inc:.3f} s = {frac:.2%} of a full run; no-op run: {t_noop:.3f} s")
    print(f"peak RSS of the stage (all processes): {peak_mb:.0f} MB; outputs equal baseline: {same}")
    failures = []
    if frac > 0.05:
        failures.append(f"incremental run costs {frac:.2%} of a full run (target <= 5%)")
    if throughput_ratio < 0.9:
        failures.append(f"runner throughput is {throughput_ratio:.3f} of Pool.imap (target >= 0.9)")
    if peak_mb >= 1000:
        failures.append(f"peak RSS {peak_mb:.0f} MB (target < 1000 MB)")
    if not same:
        failures.append("runner outputs differ from the baseline's")
    finish(
        {
            "items": len(base), "workers": args.workers, "full_s": t_full, "pool_imap_s": t_pool,
            "incremental_s": t_inc, "incremental_fraction": frac, "noop_s": t_noop,
            "throughput_vs_pool": throughput_ratio, "peak_rss_mb": peak_mb,
        },
        failures,
    )


if __name__ == "__main__":
    main()
