"""Matting benchmark: maskloop's band-limited closed-form solve vs pymatting's full-frame estimate_alpha_cf.

(a) alphamatting-dev photos with the official Trimap1 and Trimap2: SAD/MSE/Grad/Conn against the real
    alpha and seconds, for both methods. Targets: maskloop not slower in total, SAD within 2%.
(b) the same photos upscaled 3x (about 2400x1600) with maskloop's own trimap from the binarised real
    alpha: targets maskloop >= 3x faster in total than full-frame pymatting, SAD within 2%, peak memory
    < 2 GB per image. The full-frame baseline needs several GB and minutes there, so it runs on the first
    ``--baseline-images`` photos only (default 2), and the speed/SAD comparison uses those photos.
    Every (b) solve runs in a fresh subprocess so each peak RSS belongs to one image and one method.
(c) end to end: real alpha -> binarised mask -> maskloop's trimap -> maskloop's alpha, SAD vs the real alpha.

Run: ``.venv/bin/python benchmarks/matting.py`` (about 6 minutes on 2 idle cores; much longer when
the machine is shared).
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


def solve(method: str, img: np.ndarray, tri: np.ndarray, tile_px: int = 0, threads: int = 1) -> tuple[np.ndarray, float]:
    """alpha (float64) and solve seconds of one method."""
    from pipeline.matting.solve import solve_band_cf

    t0 = time.perf_counter()
    if method == "pymatting":
        from pymatting import estimate_alpha_cf

        alpha = estimate_alpha_cf(img / 255.0, tri / 255.0)
    else:
        alpha = solve_band_cf(img, tri, tile_px=tile_px, tile_margin=32, threads=threads)
    return alpha, time.perf_counter() - t0


def measure(method: str, name: str, trimap: str, scale: int, tile_px: int = 0, threads: int = 1) -> dict:
    """In-process solve + scores (no peak memory)."""
    from pipeline.matting.metrics import score

    img, tri, gt = load(name, trimap, scale)
    alpha, seconds = solve(method, img, tri, tile_px, threads)
    s = score(alpha, gt, tri)
    return {"seconds": seconds, "sad": s.sad, "mse": s.mse, "grad": s.grad, "conn": s.conn,
            "unknown": s.n_unknown, "pixels": int(tri.size)}


def worker(args: argparse.Namespace) -> None:
    """Child process: one solve; prints JSON with seconds, peak RSS and the four errors."""
    from pipeline.matting.metrics import score

    img, tri, gt = load(args.name, args.trimap, args.scale)
    alpha, seconds = solve(args.method, img, tri, args.tile_px, args.threads)
    s = score(alpha, gt, tri)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "sad": s.sad, "mse": s.mse, "grad": s.grad,
                      "conn": s.conn, "unknown": s.n_unknown, "pixels": int(tri.size)}))


def run_child(method: str, name: str, trimap: str, scale: int, tile_px: int = 0, threads: int = 1) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(NUMBA_CACHE)}
    cmd = [sys.executable, __file__, "--worker", "--method", method, "--name", name, "--trimap", trimap,
           "--scale", str(scale), "--tile-px", str(tile_px), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} {name} {trimap} x{scale} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="maskloop")
    ap.add_argument("--name", default="GT01")
    ap.add_argument("--trimap", default="Trimap1")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--tile-px", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline-images", type=int, default=2, help="photos for the 3x full-frame baseline")
    ap.add_argument("--big-images", type=int, default=9, help="photos for maskloop at 3x")
    ap.add_argument("--big-tile-px", type=int, default=512, help="maskloop tile size at 3x")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    data = shared_data() / "alphamatting-dev"
    names = sorted(p.stem for p in (data / "images").glob("*.png"))
    figures: dict[str, object] = {}
    failures: list[str] = []
    os.environ.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))
    t_start = time.perf_counter()
    measure("maskloop", names[0], "Trimap1", 1)  # warm up: numba compiles once in a fresh environment
    measure("pymatting", names[0], "Trimap1", 1)

    # (a) official trimaps, original size: exact band-limited solve (no tiles), one thread
    print("(a) alphamatting-dev, official trimaps: full-frame pymatting vs maskloop band-limited (exact)")
    print(f"{'image':<6} {'trimap':<8} {'unknown':>8} | {'pm s':>6} {'pm SAD':>7} {'MSE':>7} {'Grad':>7} {'Conn':>7}"
          f" | {'ml s':>6} {'ml SAD':>7} {'MSE':>7} {'Grad':>7} {'Conn':>7}")
    for tri in ("Trimap1", "Trimap2"):
        tot = {"pm_s": 0.0, "ml_s": 0.0, "pm_sad": 0.0, "ml_sad": 0.0}
        for name in names:
            pm = measure("pymatting", name, tri, 1)
            ml = measure("maskloop", name, tri, 1)
            tot["pm_s"] += pm["seconds"]
            tot["ml_s"] += ml["seconds"]
            tot["pm_sad"] += pm["sad"]
            tot["ml_sad"] += ml["sad"]
            print(f"{name:<6} {tri:<8} {pm['unknown']:>8} | {pm['seconds']:>6.2f} {pm['sad']:>7.3f} {pm['mse']:>7.4f}"
                  f" {pm['grad']:>7.3f} {pm['conn']:>7.3f} | {ml['seconds']:>6.2f} {ml['sad']:>7.3f} {ml['mse']:>7.4f}"
                  f" {ml['grad']:>7.3f} {ml['conn']:>7.3f}", flush=True)
        key = tri.lower()
        speed = tot["pm_s"] / tot["ml_s"]
        dsad = (tot["ml_sad"] - tot["pm_sad"]) / tot["pm_sad"]
        print(f"{tri}: pymatting {tot['pm_s']:.1f} s, maskloop {tot['ml_s']:.1f} s ({speed:.2f}x); "
              f"SAD {tot['pm_sad']:.2f} vs {tot['ml_sad']:.2f} ({dsad:+.2%})")
        figures[f"a_{key}_speedup"] = speed
        figures[f"a_{key}_sad_delta_pct"] = 100 * dsad
        if tot["ml_s"] > tot["pm_s"]:
            failures.append(f"(a) {tri}: maskloop {tot['ml_s']:.1f} s slower than pymatting {tot['pm_s']:.1f} s")
        if abs(dsad) > 0.02:
            failures.append(f"(a) {tri}: SAD differs by {dsad:+.2%} (> 2%)")

    # (b) 3x upscaled, maskloop's own trimap from the binarised real alpha; tiles + both cores
    print(f"\n(b) {SCALE}x upscaled, own trimap: full-frame pymatting (first {args.baseline_images} photos) vs "
          f"maskloop (tiles {args.big_tile_px} px, 2 threads)")
    pm_s = ml_s = pm_sad = ml_sad = 0.0
    pm_peak = ml_peak = 0.0
    ml_all_s = 0.0
    for i, name in enumerate(names[: args.big_images]):
        ml = run_child("maskloop", name, "own", SCALE, tile_px=args.big_tile_px, threads=2)
        ml_all_s += ml["seconds"]
        ml_peak = max(ml_peak, ml["peak_mb"])
        line = (f"{name:<6} {ml['pixels'] / 1e6:.2f} MP unknown {ml['unknown']:>7} | maskloop {ml['seconds']:>6.2f} s "
                f"SAD {ml['sad']:>8.3f} peak {ml['peak_mb']:>6.0f} MB")
        if i < args.baseline_images:
            pm = run_child("pymatting", name, "own", SCALE)
            pm_s += pm["seconds"]
            ml_s += ml["seconds"]
            pm_sad += pm["sad"]
            ml_sad += ml["sad"]
            pm_peak = max(pm_peak, pm["peak_mb"])
            line += f" | pymatting {pm['seconds']:>6.2f} s SAD {pm['sad']:>8.3f} peak {pm['peak_mb']:>6.0f} MB"
        print(line, flush=True)
    speed_b = pm_s / ml_s
    dsad_b = (ml_sad - pm_sad) / pm_sad
    print(f"3x on {args.baseline_images} photos: pymatting {pm_s:.1f} s, maskloop {ml_s:.1f} s ({speed_b:.2f}x); SAD "
          f"{pm_sad:.2f} vs {ml_sad:.2f} ({dsad_b:+.2%}); peak RSS pymatting {pm_peak:.0f} MB, maskloop "
          f"{ml_peak:.0f} MB (max over {args.big_images} photos); maskloop on {args.big_images} photos {ml_all_s:.1f} s")
    figures.update(b_speedup=speed_b, b_sad_delta_pct=100 * dsad_b, b_peak_mb_pymatting=pm_peak,
                   b_peak_mb_maskloop=ml_peak)
    if speed_b < 3.0:
        failures.append(f"(b) maskloop only {speed_b:.2f}x faster than full-frame pymatting (target 3x)")
    if abs(dsad_b) > 0.02:
        failures.append(f"(b) SAD differs by {dsad_b:+.2%} (> 2%)")
    if ml_peak >= 2000:
        failures.append(f"(b) maskloop peak memory {ml_peak:.0f} MB (target < 2000 MB)")

    # (c) end to end at the original size: GT alpha -> mask -> own trimap -> alpha
    print("\n(c) end to end: real alpha -> binarised mask -> maskloop trimap -> maskloop alpha")
    sads = []
    for name in names:
        r = measure("maskloop", name, "own", 1, tile_px=512)
        sads.append(r["sad"])
        print(f"{name:<6} unknown {r['unknown']:>6} SAD {r['sad']:>7.3f} MSE {r['mse']:.4f} Grad {r['grad']:.3f} "
              f"Conn {r['conn']:.3f} {r['seconds']:.2f} s", flush=True)
    figures["c_mean_sad"] = float(np.mean(sads))
    figures["bench_seconds"] = time.perf_counter() - t_start
    finish(figures, failures)


if __name__ == "__main__":
    main()
