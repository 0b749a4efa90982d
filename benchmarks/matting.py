"""Matting benchmark: maskloop's band-limited closed-form solve vs pymatting's full-frame estimate_alpha_cf.

(a) alphamatting-dev photos with the official Trimap1 and Trimap2, original size: SAD/MSE/Grad/Conn against
    the real alpha and seconds, pymatting vs maskloop's default solve, per photo and in total. Targets:
    maskloop not slower in total, SAD within 2%; the worst per-photo speed ratio is reported.
(b) photos upscaled 3x (3.6-4.6 MP) with maskloop's own trimap from the binarised real alpha, each solve
    in a fresh subprocess (peak RSS per image and method): full-frame pymatting, maskloop's exact mode
    (``linear_solver: auto``, no tiles) and maskloop's default (``params.yaml`` ``matte``: Schwarz-
    preconditioned CG). Per photo: ΔSAD of the default against the exact solve and against pymatting,
    its distance to the exact alpha (SAD between the two alphas / SAD of the exact one), speed-up and peak.
    Targets: |ΔSAD| <= 1% against the exact solve on EVERY photo, total speed-up >= 3x against
    full-frame pymatting, peak < 2 GB. Default photos GT01-GT06; GT07-GT09 chose the settings
    (``schwarz_coarse_px``, ``schwarz_rtol``, the deflated combination) and are not reported.
    Speed is CPU seconds of the solve (``time.process_time``, single-threaded BLAS in every child): on a
    shared machine wall time measures the other tenants; wall seconds are printed too.
(c) end to end: real alpha -> binarised mask -> maskloop's trimap -> maskloop's alpha, SAD vs the real alpha.

Run: ``.venv/bin/python benchmarks/matting.py [--parts abc] [--big-images 6]`` (about 15 minutes on 2
idle cores; much longer when the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import REPO, finish, shared_data

NUMBA_CACHE = REPO / ".maskloop" / "numba"
SCALE = 3
REPORT_PHOTOS = ("GT01", "GT02", "GT03", "GT04", "GT05", "GT06")  # GT07-GT09 chose the Schwarz settings
SINGLE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def load(name: str, trimap: str, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """image uint8, trimap uint8, gt alpha float32 for one photo; ``trimap == "own"`` builds maskloop's."""
    import cv2

    from pipeline.core import io
    from pipeline.matting.trimap import TrimapParams, make_trimap

    d = shared_data() / "alphamatting-dev"
    img = io.read_image(d / "images" / f"{name}.png")
    gt = io.read_alpha(d / "alpha" / f"{name}.png")
    if scale > 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        gt = np.clip(cv2.resize(gt, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC), 0, 1)
    if trimap == "own":
        mask = np.where(gt >= 0.5, 255, 0).astype(np.uint8)
        tri = make_trimap(mask, TrimapParams(band_px=10 * scale), img).trimap
    else:
        tri = io.read_trimap(d / "trimaps" / trimap / f"{name}.png")
    return img, tri, gt


def solve(method: str, img: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, float, float]:
    """alpha (float64), solve CPU seconds and wall seconds of one method: ``pymatting`` (full frame),
    ``exact`` (maskloop, ``linear_solver: auto``, no tiles) or ``maskloop`` (the ``matte`` defaults)."""
    from pipeline.stages.matte import MatteParams, _solve_cf

    c0, t0 = time.process_time(), time.perf_counter()
    if method == "pymatting":
        from pymatting import estimate_alpha_cf

        alpha = estimate_alpha_cf(img / 255.0, tri / 255.0)
    elif method == "exact":
        alpha = _solve_cf(img, tri, MatteParams(linear_solver="auto", tile_px=0))
    elif method == "maskloop":
        alpha = _solve_cf(img, tri, MatteParams())
    else:
        raise ValueError(f"unknown method {method!r}")
    return alpha, time.process_time() - c0, time.perf_counter() - t0


def measure(method: str, name: str, trimap: str, scale: int) -> dict:
    """In-process solve + scores (no peak memory)."""
    from pipeline.matting.metrics import score

    img, tri, gt = load(name, trimap, scale)
    alpha, cpu, wall = solve(method, img, tri)
    s = score(alpha, gt, tri)
    return {"seconds": cpu, "wall": wall, "sad": s.sad, "mse": s.mse, "grad": s.grad, "conn": s.conn,
            "unknown": s.n_unknown, "pixels": int(tri.size)}


def worker(args: argparse.Namespace) -> None:
    """Child process: one solve; saves alpha in the unknown band to ``--save``; prints JSON with CPU and
    wall seconds, peak RSS and the four errors."""
    from pipeline.matting.metrics import score

    img, tri, gt = load(args.name, args.trimap, args.scale)
    alpha, cpu, wall = solve(args.method, img, tri)
    s = score(alpha, gt, tri)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.save:
        np.save(args.save, alpha[tri == 128].astype(np.float32))
    print(json.dumps({"seconds": cpu, "wall": wall, "peak_mb": peak_mb, "sad": s.sad, "mse": s.mse,
                      "grad": s.grad, "conn": s.conn, "unknown": s.n_unknown, "pixels": int(tri.size)}))


def run_child(method: str, name: str, trimap: str, scale: int, save: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(NUMBA_CACHE), **SINGLE_THREAD}
    cmd = [sys.executable, __file__, "--worker", "--method", method, "--name", name, "--trimap", trimap,
           "--scale", str(scale), "--save", str(save)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} {name} {trimap} x{scale} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def part_a(names: list[str], figures: dict[str, object], failures: list[str]) -> None:
    """(a) official trimaps, original size: pymatting vs maskloop's default, per photo and in total."""
    print("(a) alphamatting-dev, official trimaps: full-frame pymatting vs maskloop default (CPU seconds)")
    print(f"{'image':<6} {'trimap':<8} {'unknown':>8} | {'pm s':>6} {'pm SAD':>7} {'MSE':>7} {'Grad':>7} {'Conn':>7}"
          f" | {'ml s':>6} {'ml SAD':>7} {'MSE':>7} {'Grad':>7} {'Conn':>7} | {'speed':>6}")
    for tri in ("Trimap1", "Trimap2"):
        tot = {"pm_s": 0.0, "ml_s": 0.0, "pm_sad": 0.0, "ml_sad": 0.0}
        worst = (float("inf"), "")
        for name in names:
            pm = measure("pymatting", name, tri, 1)
            ml = measure("maskloop", name, tri, 1)
            for k in ("s", "sad"):
                tot[f"pm_{k}"] += pm["seconds" if k == "s" else "sad"]
                tot[f"ml_{k}"] += ml["seconds" if k == "s" else "sad"]
            ratio = pm["seconds"] / ml["seconds"]
            worst = min(worst, (ratio, name))
            print(f"{name:<6} {tri:<8} {pm['unknown']:>8} | {pm['seconds']:>6.2f} {pm['sad']:>7.3f} {pm['mse']:>7.4f}"
                  f" {pm['grad']:>7.3f} {pm['conn']:>7.3f} | {ml['seconds']:>6.2f} {ml['sad']:>7.3f} {ml['mse']:>7.4f}"
                  f" {ml['grad']:>7.3f} {ml['conn']:>7.3f} | {ratio:>5.2f}x", flush=True)
        key = tri.lower()
        speed = tot["pm_s"] / tot["ml_s"]
        dsad = (tot["ml_sad"] - tot["pm_sad"]) / tot["pm_sad"]
        print(f"{tri}: pymatting {tot['pm_s']:.1f} s, maskloop {tot['ml_s']:.1f} s ({speed:.2f}x; worst photo "
              f"{worst[1]} {worst[0]:.2f}x); SAD {tot['pm_sad']:.2f} vs {tot['ml_sad']:.2f} ({dsad:+.2%})")
        figures[f"a_{key}_speedup"] = speed
        figures[f"a_{key}_worst_speedup"] = worst[0]
        figures[f"a_{key}_sad_delta_pct"] = 100 * dsad
        if tot["ml_s"] > tot["pm_s"]:
            failures.append(f"(a) {tri}: maskloop {tot['ml_s']:.1f} s slower than pymatting {tot['pm_s']:.1f} s")
        if abs(dsad) > 0.02:
            failures.append(f"(a) {tri}: SAD differs by {dsad:+.2%} (> 2%)")


def part_b(names: list[str], figures: dict[str, object], failures: list[str]) -> None:
    """(b) 3x upscaled, own trimap: pymatting, maskloop exact and maskloop default, each in a fresh process."""
    import tempfile

    if not names:
        print("\n(b) skipped (--big-images 0)")
        return
    print(f"\n(b) {SCALE}x upscaled, own trimap: full-frame pymatting vs maskloop exact vs maskloop default "
          "(CPU seconds of the solve; peak RSS per process)")
    print(f"{'image':<6} {'MP':>5} {'unknown':>9} | {'pm s':>6} {'pm SAD':>8} {'pm MB':>6} | {'ex s':>6} {'ex SAD':>8}"
          f" {'ex MB':>6} | {'ml s':>6} {'wall':>6} {'ml SAD':>8} {'ml MB':>6} | {'dSAD ex':>8} {'dSAD pm':>8}"
          f" {'dist ex':>8} {'speed':>6}")
    tot = {"pm": 0.0, "ex": 0.0, "ml": 0.0}
    peak = {"pm": 0.0, "ex": 0.0, "ml": 0.0}
    worst_d, worst_dist = (0.0, ""), 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            saved = {m: Path(tmp) / f"{name}_{m}.npy" for m in ("pm", "ex", "ml")}
            pm = run_child("pymatting", name, "own", SCALE, saved["pm"])
            ex = run_child("exact", name, "own", SCALE, saved["ex"])
            ml = run_child("maskloop", name, "own", SCALE, saved["ml"])
            for k, r in (("pm", pm), ("ex", ex), ("ml", ml)):
                tot[k] += r["seconds"]
                peak[k] = max(peak[k], r["peak_mb"])
            a_ex, a_ml = np.load(saved["ex"]).astype(np.float64), np.load(saved["ml"]).astype(np.float64)
            d_ex = (ml["sad"] - ex["sad"]) / ex["sad"]
            d_pm = (ml["sad"] - pm["sad"]) / pm["sad"]
            dist = float(np.abs(a_ml - a_ex).sum()) / 1000.0 / ex["sad"]
            worst_d = max(worst_d, (abs(d_ex), name))
            worst_dist = max(worst_dist, dist)
            print(f"{name:<6} {ml['pixels'] / 1e6:>5.2f} {ml['unknown']:>9,} | {pm['seconds']:>6.1f} {pm['sad']:>8.3f}"
                  f" {pm['peak_mb']:>6.0f} | {ex['seconds']:>6.1f} {ex['sad']:>8.3f} {ex['peak_mb']:>6.0f} |"
                  f" {ml['seconds']:>6.1f} {ml['wall']:>6.1f} {ml['sad']:>8.3f} {ml['peak_mb']:>6.0f} | {d_ex:>+8.3%}"
                  f" {d_pm:>+8.3%} {dist:>8.3%} {pm['seconds'] / ml['seconds']:>5.2f}x", flush=True)
            if abs(d_ex) > 0.01:
                failures.append(f"(b) {name}: SAD {d_ex:+.2%} against the exact solve (> 1%)")
    speed = tot["pm"] / tot["ml"]
    print(f"{SCALE}x on {len(names)} photos: pymatting {tot['pm']:.1f} s, exact {tot['ex']:.1f} s, maskloop "
          f"{tot['ml']:.1f} s ({speed:.2f}x vs pymatting, {tot['ex'] / tot['ml']:.2f}x vs exact); worst |dSAD| vs "
          f"exact {worst_d[0]:.3%} ({worst_d[1]}); peak RSS pymatting {peak['pm']:.0f} MB, exact {peak['ex']:.0f} MB, "
          f"maskloop {peak['ml']:.0f} MB")
    figures.update(b_photos=len(names), b_speedup=speed, b_worst_sad_delta_pct=100 * worst_d[0],
                   b_worst_dist_pct=100 * worst_dist, b_peak_mb_pymatting=peak["pm"], b_peak_mb_exact=peak["ex"],
                   b_peak_mb_maskloop=peak["ml"])
    if speed < 3.0:
        failures.append(f"(b) maskloop only {speed:.2f}x faster than full-frame pymatting (target 3x)")
    if peak["ml"] >= 2000:
        failures.append(f"(b) maskloop peak memory {peak['ml']:.0f} MB (target < 2000 MB)")


def part_c(names: list[str], figures: dict[str, object]) -> None:
    """(c) end to end at the original size: GT alpha -> mask -> own trimap -> alpha."""
    print("\n(c) end to end: real alpha -> binarised mask -> maskloop trimap -> maskloop alpha")
    sads = []
    for name in names:
        r = measure("maskloop", name, "own", 1)
        sads.append(r["sad"])
        print(f"{name:<6} unknown {r['unknown']:>6} SAD {r['sad']:>7.3f} MSE {r['mse']:.4f} Grad {r['grad']:.3f} "
              f"Conn {r['conn']:.3f} {r['seconds']:.2f} s", flush=True)
    figures["c_mean_sad"] = float(np.mean(sads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="maskloop")
    ap.add_argument("--name", default="GT01")
    ap.add_argument("--trimap", default="Trimap1")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--save", default="")
    ap.add_argument("--parts", default="abc", help="which parts to run (any of a, b, c)")
    ap.add_argument("--big-images", type=int, default=len(REPORT_PHOTOS),
                    help=f"photos for (b), taken in order from {','.join(REPORT_PHOTOS)} (0 skips (b))")
    ap.add_argument("--photos", default="", help="comma-separated photos for (b) instead of --big-images")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.big_images < 0 or args.big_images > len(REPORT_PHOTOS):
        sys.exit(f"--big-images must be 0..{len(REPORT_PHOTOS)}, got {args.big_images}")
    data = shared_data() / "alphamatting-dev"
    names = sorted(p.stem for p in (data / "images").glob("*.png"))
    figures: dict[str, object] = {}
    failures: list[str] = []
    os.environ.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))
    t_start = time.perf_counter()
    if "a" in args.parts or "c" in args.parts:  # warm up: numba compiles once in a fresh environment
        measure("maskloop", names[0], "Trimap1", 1)
        measure("pymatting", names[0], "Trimap1", 1)
    if "a" in args.parts:
        part_a(names, figures, failures)
    if "b" in args.parts:
        part_b(args.photos.split(",") if args.photos else list(REPORT_PHOTOS[: args.big_images]), figures, failures)
    if "c" in args.parts:
        part_c(names, figures)
    figures["bench_seconds"] = time.perf_counter() - t_start
    finish(figures, failures)


if __name__ == "__main__":
    main()
