"""Clicks, not brushes: the simulated-annotator benchmark of the refinement engines (issue 17).

The standard protocol of the interactive-segmentation literature (:mod:`pipeline.refine.clicker`: each next
click at the interior point of the largest error region, positive on missed foreground, negative on false
foreground, at most 20 clicks) on ``../shared/data/ecssd-dev`` (all 200 photos by default). Rows:

- per engine available here: NoC@85 / NoC@90 (mean clicks to reach IoU 0.85 / 0.90, 20 when never) and the
  share of photos never reaching 0.90, starting **(a) from the pre-annotation** (the pipeline's default
  ``grabcut`` pre-annotator, params.yaml ``preannotate.grabcut``) and **(b) from an empty canvas** (the
  first click lands on the object's interior point). ``grabcut`` always; ``trained`` when a promoted model
  is at ``paths.promoted``; ``sam`` when official weights are at ``refine.sam.checkpoint`` (quality rows
  with random weights would be meaningless);
- baselines in the same run: plain ``cv2.grabCut`` at full resolution driven by the same clicker from an
  empty canvas (click discs of 5 px as hard seeds, the previous result as the probable labels, 5 iterations:
  the classic "graph cut" row of published tables) and the pixels a brush-only annotator would repaint
  (pre-annotation vs ground truth; the whole object from empty);
- seconds per click (median, p95), CPU, at 0.1 MP (the photos as they are) and at 2 MP (the photos upscaled),
  sequential, ``grabcut`` engine beside plain ``cv2.grabCut`` (paired, same photos and clicks);
- ``sam``: a click answered from the pipeline's embedding cache vs a cold prediction (encoder + decoder) with
  vit_b's real architecture and random weights created here (cost does not depend on the weights).

Targets: ``grabcut`` from the pre-annotation NoC@90 <= 6; >= 30% fewer clicks (NoC@90) than the same engine
from an empty canvas; <= 0.3 s per click (median) at 2 MP; ``sam`` cached click <= 5% of a cold prediction.
Engine settings come from params.yaml ``refine`` (chosen on ecssd-train; ``--set grabcut.band=0.05`` overrides
one for tuning, ``--data ecssd-train`` runs on the tuning set). Options: ``--limit N`` photos, ``--workers``,
``--stride N`` (every Nth photo), ``--no-speed``, ``--no-sam``, ``--no-plain``, ``--plain-every N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, finish, shared_data
from pipeline.core import io
from pipeline.core.params import Paths, load_paths, load_section
from pipeline.preannotators.base import PreannotateParams, PredictContext
from pipeline.refine import build_refiner
from pipeline.refine.base import Click, RefineItem, RefineParams
from pipeline.refine.clicker import MAX_CLICKS, simulate, summarize

PLAIN_RADIUS = 5
PLAIN_ITERATIONS = 5


# --------------------------------------------------------------------------- baselines


def plain_grabcut_step(image: np.ndarray) -> Any:
    """The classic baseline as a clicker step: full-resolution ``cv2.grabCut`` with the previous mask as
    probable labels and 5 px click discs as hard seeds."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def step(mask: np.ndarray, clicks: tuple[Click, ...]) -> np.ndarray:
        labels = np.where(mask > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        for c in clicks:
            cv2.circle(labels, (c.x, c.y), PLAIN_RADIUS, int(cv2.GC_FGD if c.positive else cv2.GC_BGD), -1)
        fgs = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        if not fgs.any() or fgs.all():
            return fgs.astype(np.uint8)
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, labels, None, bgd, fgd, PLAIN_ITERATIONS, cv2.GC_INIT_WITH_MASK)
        return ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)

    return step


def engine_step(engine: Any, item: RefineItem) -> Any:
    def step(mask: np.ndarray, clicks: tuple[Click, ...]) -> np.ndarray:
        return engine.refine(item, mask, clicks).mask  # type: ignore[no-any-return]

    return step


# --------------------------------------------------------------------------- quality (workers)

_W: dict[str, Any] = {}


def _init(refine_params: RefineParams, pre_params: PreannotateParams, paths: Paths, engines: list[str],
          plain: bool) -> None:
    cv2.setNumThreads(1)
    from pipeline.learning.torch_utils import set_threads
    from pipeline.preannotators.grabcut import GrabCutPreannotator

    set_threads(1)
    _W["pre"] = GrabCutPreannotator(pre_params)
    _W["engines"] = {name: build_refiner(name, refine_params, paths) for name in engines}
    _W["plain"] = plain


def _photo(args: tuple[str, str, str, bool]) -> dict[str, Any]:
    stem, img_path, gt_path, with_plain = args
    image = io.read_image(Path(img_path))
    gt = io.read_gray(Path(gt_path)) > 127
    pre = _W["pre"].predict(image, PredictContext(item_id=stem)).mask > 0
    out: dict[str, Any] = {"stem": stem, "brush_pre": int(np.count_nonzero(pre != gt)),
                           "brush_empty": int(np.count_nonzero(gt)), "pixels": int(gt.size)}
    for name, eng in _W["engines"].items():
        item = RefineItem(stem, Path(img_path), pixels=image)
        out[f"{name}/pre"] = simulate(engine_step(eng, item), gt, pre)
        out[f"{name}/empty"] = simulate(engine_step(eng, RefineItem(stem + "-empty", Path(img_path), pixels=image)),
                                        gt, None)
    if _W["plain"] and with_plain:
        out["plain/empty"] = simulate(plain_grabcut_step(image), gt, None)
    return out


def quality(data: Path, limit: int | None, workers: int, refine_params: RefineParams, pre_params: PreannotateParams,
            paths: Paths, engines: list[str], plain: bool, plain_every: int, stride: int = 1,
            ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    photos = sorted((data / "images").glob("*.jpg"))[::stride][: limit or None]
    jobs = [(p.stem, str(p), str(data / "masks" / f"{p.stem}.png"), i % plain_every == 0) for i, p in enumerate(photos)]
    init = (refine_params, pre_params, paths, engines, plain)
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("fork").Pool(workers, initializer=_init, initargs=init) as pool:
            rows = pool.map(_photo, jobs, chunksize=1)
    else:
        _init(*init)
        rows = [_photo(j) for j in jobs]
    print(f"quality: {len(rows)} photos from {data.name} in {time.perf_counter() - t0:.0f} s ({workers} workers)",
          flush=True)
    table: dict[str, dict[str, float]] = {}
    keys = [k for k in rows[0] if "/" in k and k != "plain/empty"] if rows else []
    subset = [r for r in rows if "plain/empty" in r]
    for k in keys:
        table[k] = summarize([r[k] for r in rows], MAX_CLICKS)
        if subset:  # paired with the plain baseline on its subset
            table[f"{k}@plain_subset"] = summarize([r[k] for r in subset], MAX_CLICKS)
    if subset:
        table["plain/empty"] = summarize([r["plain/empty"] for r in subset], MAX_CLICKS)
    brush = {
        "brush_pre_px": float(np.mean([r["brush_pre"] for r in rows])) if rows else float("nan"),
        "brush_pre_frac": float(np.mean([r["brush_pre"] / r["pixels"] for r in rows])) if rows else float("nan"),
        "brush_empty_px": float(np.mean([r["brush_empty"] for r in rows])) if rows else float("nan"),
    }
    print(f"{'engine/start':>30} {'photos':>6} {'NoC@85':>7} {'NoC@90':>7} {'>20@90':>7}")
    for k, s in table.items():
        print(f"{k:>30} {s['items']:6d} {s['noc85']:7.2f} {s['noc90']:7.2f} {s['fail90']:7.1%}", flush=True)
    print(f"brush annotator: {brush['brush_pre_px']:.0f} px repainted per photo from the pre-annotation "
          f"({brush['brush_pre_frac']:.1%} of the image), {brush['brush_empty_px']:.0f} px from empty", flush=True)
    return table, brush


# --------------------------------------------------------------------------- speed (sequential, paired)


def upscale(image: np.ndarray, gt: np.ndarray, megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = gt.shape
    s = (megapixels * 1e6 / (h * w)) ** 0.5
    size = (round(w * s), round(h * s))
    return (cv2.resize(image, size, interpolation=cv2.INTER_CUBIC),
            cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)


def speed(data: Path, refine_params: RefineParams, pre_params: PreannotateParams, n_photos: int,
          plain_photos: int) -> dict[str, float]:
    """Seconds per click of the grabcut engine (and plain cv2.grabCut) at native size and at 2 MP."""
    from pipeline.preannotators.grabcut import GrabCutPreannotator

    cv2.setNumThreads(1)
    pre_model = GrabCutPreannotator(pre_params)
    photos = sorted((data / "images").glob("*.jpg"))
    step_n = max(1, len(photos) // n_photos)
    chosen = photos[::step_n][:n_photos]
    out: dict[str, float] = {}
    for label, mp_ in (("0.1mp", None), ("2mp", 2.0)):
        eng = build_refiner("grabcut", refine_params, Paths())
        eng_s: list[float] = []
        eng_cpu: list[float] = []
        plain_s: list[float] = []
        for i, p in enumerate(chosen):
            image = io.read_image(p)
            gt = io.read_gray(data / "masks" / f"{p.stem}.png") > 127
            if mp_ is not None:
                image, gt = upscale(image, gt, mp_)
            pre = pre_model.predict(image, PredictContext()).mask > 0
            item = RefineItem(f"{p.stem}-{label}", p, pixels=image)
            inner = engine_step(eng, item)

            def timed(mask: np.ndarray, clicks: tuple[Click, ...], inner: Any = inner,
                      sink: list[float] = eng_cpu) -> np.ndarray:
                t0 = time.process_time()
                out = inner(mask, clicks)
                sink.append(time.process_time() - t0)
                return out  # type: ignore[no-any-return]

            tr = simulate(timed, gt, pre, max_clicks=5, stop_at=1.01)
            eng_s += list(tr.seconds)
            if i < (plain_photos if mp_ is None else 1) and tr.clicks:
                t0 = time.perf_counter()
                plain_grabcut_step(image)(pre.astype(np.uint8), tr.clicks[:1])
                plain_s.append(time.perf_counter() - t0)
        out[f"grabcut_cpu_s_click_{label}_median"] = float(np.median(eng_cpu))
        out[f"grabcut_cpu_s_click_{label}_p95"] = float(np.percentile(eng_cpu, 95))
        out[f"grabcut_s_click_{label}_median"] = float(np.median(eng_s))
        out[f"grabcut_s_click_{label}_p95"] = float(np.percentile(eng_s, 95))
        out[f"plain_s_click_{label}_median"] = float(np.median(plain_s)) if plain_s else float("nan")
        print(f"speed {label}: grabcut engine {len(eng_s)} clicks on {len(chosen)} photos: wall median "
              f"{np.median(eng_s):.3f} s, p95 {np.percentile(eng_s, 95):.3f} s; CPU (one thread) median "
              f"{np.median(eng_cpu):.3f} s, p95 {np.percentile(eng_cpu, 95):.3f} s; plain cv2.grabCut "
              f"(full resolution, 5 iterations) median {out[f'plain_s_click_{label}_median']:.3f} s "
              f"({len(plain_s)} clicks)", flush=True)
    return out


def sam_latency(data: Path, arch: str, n_photos: int) -> dict[str, float]:
    """Cold prediction (encoder + decoder) vs a click answered from the pipeline's embedding cache, random
    weights of the real architecture, CPU."""
    import torch

    from pipeline.preannotators.sam import SAM_ARCHS
    from pipeline.refine.base import SamRefineParams

    torch.manual_seed(0)
    photos = sorted((data / "images").glob("*.jpg"))[:n_photos]
    with tempfile.TemporaryDirectory(prefix="maskloop-clicks-") as tmp:
        ckpt = Path(tmp) / f"sam_{arch}_random.pth"
        torch.save(SAM_ARCHS[arch].build().state_dict(), ckpt)
        params = RefineParams(engine="sam", device="cpu", sam=SamRefineParams(arch=arch, checkpoint=ckpt))  # type: ignore[arg-type]
        paths = Paths(sam_cache=Path(tmp) / "sam_cache")
        cold: list[float] = []
        warm: list[float] = []
        for p in photos:
            image = io.read_image(p)
            h, w = image.shape[:2]
            clicks = [Click(w // 2, h // 2, True)]
            eng = build_refiner("sam", params, paths)  # a fresh process: nothing in memory
            t0 = time.perf_counter()
            eng.refine(RefineItem(p.stem, p), None, clicks)
            cold.append(time.perf_counter() - t0)
            eng2 = build_refiner("sam", params, paths)  # another process: the embedding is on disk
            for k in range(3):
                more = [*clicks, Click(w // 4, h // 4, False), Click(3 * w // 4, h // 2 + k, True)][: k + 1]
                t0 = time.perf_counter()
                eng2.refine(RefineItem(p.stem, p), None, more)
                warm.append(time.perf_counter() - t0)
            assert getattr(eng2, "encoder_calls", 0) == 0, "the cached click re-ran the encoder"
    out = {"sam_cold_s": float(np.median(cold)), "sam_cached_click_s": float(np.median(warm))}
    out["sam_cached_frac"] = out["sam_cached_click_s"] / out["sam_cold_s"]
    print(f"sam {arch} (random weights, CPU): cold prediction median {out['sam_cold_s']:.2f} s, click from the "
          f"embedding cache median {out['sam_cached_click_s']:.3f} s ({out['sam_cached_frac']:.1%})", flush=True)
    return out


# --------------------------------------------------------------------------- main


def override(params: RefineParams, assignments: list[str]) -> RefineParams:
    """Apply ``section.key=value`` overrides (tuning on ecssd-train)."""
    for a in assignments:
        key, _, value = a.partition("=")
        section, _, name = key.partition(".")
        sub = getattr(params, section)
        cur = getattr(sub, name)
        new: Any = value.lower() in ("1", "true", "yes") if isinstance(cur, bool) else type(cur)(value)
        sub = dataclasses.replace(sub, **{name: new})
        params = dataclasses.replace(params, **{section: sub})
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="ecssd-dev", help="folder under ../shared/data (tune on ecssd-train)")
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (0 = all)")
    ap.add_argument("--stride", type=int, default=1, help="every Nth photo only (a spread-out subset)")
    ap.add_argument("--sam-photos", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--set", action="append", default=[], help="override a refine setting: grabcut.band=0.05")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-sam", action="store_true")
    ap.add_argument("--no-plain", action="store_true")
    ap.add_argument("--plain-every", type=int, default=10, help="plain cv2.grabCut on every Nth photo (it is slow)")
    ap.add_argument("--speed-photos", type=int, default=10)
    ap.add_argument("--sam-arch", default="vit_b")
    args = ap.parse_args()

    data = shared_data() / args.data
    params_file = REPO / "params.yaml"
    refine_params = override(load_section(params_file, "refine", RefineParams), args.set)
    pre_params = load_section(params_file, "preannotate", PreannotateParams)
    paths = load_paths(params_file)
    paths = dataclasses.replace(paths, **{f: REPO / getattr(paths, f) for f in ("promoted", "sam_cache")})
    engines = ["grabcut"]
    if (Path(paths.promoted) / "model.pt").is_file():
        engines.append("trained")
    sam_ckpt = Path(refine_params.sam.checkpoint)
    sam_ckpt = sam_ckpt if sam_ckpt.is_absolute() else REPO / sam_ckpt
    if sam_ckpt.is_file() and not args.no_sam:
        refine_params = dataclasses.replace(refine_params, sam=dataclasses.replace(refine_params.sam, checkpoint=sam_ckpt))
        engines.append("sam")
    print(f"engines with quality rows: {engines}; settings: {refine_params.grabcut}", flush=True)

    figures: dict[str, object] = {}
    failures: list[str] = []
    table, brush = quality(data, args.limit or None, args.workers, refine_params, pre_params, paths, engines,
                           not args.no_plain, max(1, args.plain_every), max(1, args.stride))
    for k, s in table.items():
        if "@" in k:
            continue
        tag = k.replace("/", "_")
        figures[f"{tag}_noc85"] = s["noc85"]
        figures[f"{tag}_noc90"] = s["noc90"]
        figures[f"{tag}_fail90"] = s["fail90"]
    figures.update(brush)
    g_pre, g_empty = table["grabcut/pre"]["noc90"], table["grabcut/empty"]["noc90"]
    saving = 1.0 - g_pre / g_empty if g_empty > 0 else 0.0
    figures["grabcut_pre_saving"] = saving
    if g_pre > 6.0:
        failures.append(f"grabcut engine from the pre-annotation NoC@90 {g_pre:.2f} > 6")
    if saving < 0.30:
        failures.append(f"grabcut from the pre-annotation saves {saving:.0%} of the clicks from empty (< 30%)")
    if not args.no_speed:
        sp = speed(data, refine_params, pre_params, args.speed_photos, plain_photos=3)
        figures.update(sp)
        # judged on CPU seconds of the single-threaded call: the wall clock of a machine shared by many
        # processes measures the queue, not the engine (both are printed and recorded)
        if sp["grabcut_cpu_s_click_2mp_median"] > 0.3:
            failures.append(f"grabcut {sp['grabcut_cpu_s_click_2mp_median']:.3f} CPU s per click at 2 MP (> 0.3 s)")
    if not args.no_sam:
        sl = sam_latency(data, args.sam_arch, n_photos=args.sam_photos)
        figures.update(sl)
        if sl["sam_cached_frac"] > 0.05:
            failures.append(f"sam cached click costs {sl['sam_cached_frac']:.1%} of a cold prediction (> 5%)")
    figures["photos"] = int(table["grabcut/pre"]["items"])
    figures["data"] = args.data
    finish(figures, failures)


if __name__ == "__main__":
    main()
