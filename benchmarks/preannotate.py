"""Pre-annotation quality and speed on ../shared/data/ecssd-dev (issues 3 and 18).

Every ``grabcut`` setting (params.yaml defaults = :class:`GrabCutParams`) was chosen on
``../shared/data/ecssd-train``; this script only reports on ``ecssd-dev`` (photos that chose nothing).

Reports, per pre-annotator available here, mean/median IoU and boundary F-measure against the ground-truth
masks and images per second on this machine's CPU, beside the baselines measured in the same run:

- the 5%-inset rectangle itself, and plain ``cv2.grabCut`` (rectangle inset 5%, 5 iterations, full resolution)
  on the same photos as ours (``--plain-step K``: every K-th photo, default every photo), paired;
- ``grabcut``'s worst cases: empty masks, IoU < 0.3, the five lowest IoUs, fallbacks recorded;
- ``grabcut`` seconds per image at 0.1, 2.7 and 12 MP (the photo upscaled), which must stay under 2 s;
- SAM: a cold prediction (encoder + decoder) vs a re-prompt answered from the embedding cache, with vit_b's
  real architecture (random weights: the cost does not depend on the weights); the re-prompt must cost under
  5% of the cold prediction;
- ``deeplabv3`` / ``sam`` quality only when their checkpoints exist at the params.yaml paths (none can be
  downloaded here).

Targets (issue 18, on all 200 photos): grabcut mean IoU >= plain cv2.grabCut's mean on the same photos +
0.08, median IoU >= 0.75, empty masks <= 1%, IoU < 0.3 on <= 8%; grabcut < 2 s per image at every size;
cached SAM re-prompt < 5% of a cold prediction. Options: ``--n N`` photos (default all), ``--plain-step``,
``--sam-arch``, ``--no-sam``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, finish, shared_data
from pipeline.core import io
from pipeline.core.params import Paths, load_section
from pipeline.preannotators import grabcut as G
from pipeline.preannotators.base import GrabCutParams, PreannotateParams, PredictContext
from pipeline.stages.evaluate import boundary_f, iou


def load(ecssd: Path, n: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    paths = sorted((ecssd / "images").glob("*.jpg"))
    if n:
        paths = paths[:n]
    return [(p.stem, io.read_image(p), io.read_gray(ecssd / "masks" / f"{p.stem}.png") > 127) for p in paths]


def summarise(name: str, ious: list[float], bfs: list[float], secs: list[float]) -> dict[str, float]:
    out = {
        f"{name}_iou_median": float(np.median(ious)),
        f"{name}_iou_mean": float(np.mean(ious)),
        f"{name}_bf_mean": float(np.mean(bfs)),
        f"{name}_s_per_img": float(np.mean(secs)) if secs else float("nan"),
    }
    print(
        f"{name:>24}: n={len(ious):3d}  IoU median {out[f'{name}_iou_median']:.3f} mean "
        f"{out[f'{name}_iou_mean']:.3f}  boundary F {out[f'{name}_bf_mean']:.3f}  "
        + (f"{out[f'{name}_s_per_img']:.3f} s/img ({1 / out[f'{name}_s_per_img']:.2f} img/s)" if secs else ""),
        flush=True,
    )
    return out


def rect_mask(shape: tuple[int, ...], inset: float = 0.05) -> np.ndarray:
    labels = G.rectangle_labels((shape[0], shape[1]), inset)
    return labels == cv2.GC_PR_FGD


def bench_grabcut(
    data: list[tuple[str, np.ndarray, np.ndarray]], params: GrabCutParams
) -> tuple[dict[str, float], list[float]]:
    ious, bfs, secs, empty, notes = [], [], [], [], []
    for stem, img, gt in data:
        t0 = time.perf_counter()
        mask, _prob, note = G.segment_with_note(img, params)
        secs.append(time.perf_counter() - t0)
        ious.append(iou(mask > 0, gt))
        bfs.append(boundary_f(mask > 0, gt))
        if not mask.any():
            empty.append(stem)
        if note:
            notes.append(f"{stem}: {note}")
    out = summarise("grabcut", ious, bfs, secs)
    order = np.argsort(ious)
    worst = ", ".join(f"{data[i][0]} {ious[i]:.2f}" for i in order[:5])
    out["grabcut_empty_frac"] = len(empty) / len(data)
    out["grabcut_below03_frac"] = float(np.mean(np.asarray(ious) < 0.3))
    out["grabcut_iou_p10"] = float(np.percentile(ious, 10))
    out["grabcut_fallbacks"] = len(notes)
    print(f"{'':>24}  empty masks {len(empty)} {empty[:10]}; IoU < 0.3 on {out['grabcut_below03_frac']:.1%}; "
          f"10th percentile {out['grabcut_iou_p10']:.3f}; worst: {worst}")
    print(f"{'':>24}  fallbacks recorded: {len(notes)} {notes[:5]}")
    return out, ious


def bench_baselines(data: list[tuple[str, np.ndarray, np.ndarray]], ours: list[float], step: int) -> dict[str, float]:
    """The rectangle on every photo; plain ``cv2.grabCut`` on every ``step``-th photo, paired with ``ours``
    (our IoUs on ``data``, same order)."""
    r_i = [iou(rect_mask(img.shape), gt) for _, img, gt in data]
    r_b = [boundary_f(rect_mask(img.shape), gt) for _, img, gt in data]
    out = summarise("rectangle", r_i, r_b, [])
    idx = list(range(0, len(data), step))
    p_i, p_b, p_s = [], [], []
    for i in idx:
        _stem, img, gt = data[i]
        t0 = time.perf_counter()
        m = G.plain_grabcut(img, 0.05, 5)
        p_s.append(time.perf_counter() - t0)
        p_i.append(iou(m > 0, gt))
        p_b.append(boundary_f(m > 0, gt))
    out.update(summarise("plain_grabcut", p_i, p_b, p_s))
    o_i = [ours[i] for i in idx]
    out["plain_grabcut_n"] = len(idx)
    out["plain_grabcut_empty_frac"] = float(np.mean(np.asarray(p_i) == 0.0))
    out["plain_grabcut_below03_frac"] = float(np.mean(np.asarray(p_i) < 0.3))
    out["grabcut_paired_iou_mean"] = float(np.mean(o_i))
    mp = float(np.mean([data[i][1].shape[0] * data[i][1].shape[1] for i in idx])) / 1e6
    print(f"{'':>24}  (plain GrabCut at {mp:.2f} MP on {len(idx)} photos: IoU 0 on "
          f"{out['plain_grabcut_empty_frac']:.1%}, < 0.3 on {out['plain_grabcut_below03_frac']:.1%}; our grabcut on "
          f"the same photos: IoU mean {np.mean(o_i):.3f} median {np.median(o_i):.3f})")
    return out


def bench_sizes(img: np.ndarray, params: GrabCutParams) -> dict[str, float]:
    out = {}
    for mp, (w, h) in (("0.1", (img.shape[1], img.shape[0])), ("2.7", (1900, 1425)), ("12", (4000, 3000))):
        big = img if (w, h) == (img.shape[1], img.shape[0]) else cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            G.segment(big, params)
            times.append(time.perf_counter() - t0)
        out[f"grabcut_s_{mp}MP"] = float(np.median(times))
        print(f"{'grabcut at ' + mp + ' MP':>24}: {out[f'grabcut_s_{mp}MP']:.3f} s (median of 3, {w}x{h})", flush=True)
    return out


def bench_sam_cache(img: np.ndarray, arch: str) -> dict[str, float]:
    import torch

    from pipeline.preannotators.sam import SAM_ARCHS, CachedSam, box_from_mask
    from pipeline.preannotators.sam_cache import SamEmbeddingCache

    torch.manual_seed(0)
    model = SAM_ARCHS[arch].build()
    sha = "0" * 64
    box = box_from_mask(G.segment(img, GrabCutParams())[0])
    with tempfile.TemporaryDirectory() as tmp:
        sam = CachedSam(model, sha, torch.device("cpu"), SamEmbeddingCache(Path(tmp), sha))
        t0 = time.perf_counter()
        sam.set_image(img, "item")
        sam.prompt(box, None, None, True)
        cold = time.perf_counter() - t0
        warm_times = []
        for _ in range(5):
            fresh = CachedSam(model, sha, torch.device("cpu"), SamEmbeddingCache(Path(tmp), sha))
            t0 = time.perf_counter()
            hit = fresh.set_image(img, "item")
            fresh.prompt(box, None, None, True)
            warm_times.append(time.perf_counter() - t0)
            if not hit or fresh.encoder_calls:
                raise RuntimeError("expected a cache hit")
        warm = float(np.median(warm_times))
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*"))
    ratio = warm / cold
    print(f"{'sam ' + arch + ' re-prompt':>24}: cold {cold:.2f} s, cached {warm * 1000:.1f} ms, ratio {ratio:.4f} "
          f"(cache entry {size / 1e6:.2f} MB, fp16)", flush=True)
    return {f"sam_{arch}_cold_s": cold, f"sam_{arch}_cached_s": warm, "sam_cache_ratio": ratio}


def bench_checkpoint_models(data: list[tuple[str, np.ndarray, np.ndarray]], n: int) -> dict[str, float]:
    """deeplabv3 / sam quality when their checkpoints exist at the params.yaml paths."""
    from pipeline.preannotators import build_preannotator

    params = load_section(REPO / "params.yaml", "preannotate", PreannotateParams)
    out: dict[str, float] = {}
    for name, ckpt in (("deeplabv3", params.deeplabv3.checkpoint), ("sam", params.sam.checkpoint)):
        path = ckpt if ckpt.is_absolute() else REPO / ckpt
        if not path.is_file():
            print(f"{name:>24}: skipped, no checkpoint at {ckpt} (weights cannot be downloaded here)")
            continue
        model = build_preannotator(name, params, Paths(sam_cache=Path(tempfile.mkdtemp())))
        ious, bfs, secs = [], [], []
        for stem, img, gt in data[:n]:
            t0 = time.perf_counter()
            res = model.predict(img, PredictContext(item_id=stem))
            secs.append(time.perf_counter() - t0)
            ious.append(iou(res.mask > 0, gt))
            bfs.append(boundary_f(res.mask > 0, gt))
        out.update(summarise(name, ious, bfs, secs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=0, help="photos for grabcut (default: all 200)")
    ap.add_argument("--sam-arch", default="vit_b", help="SAM architecture for the cache benchmark")
    ap.add_argument("--checkpoint-n", type=int, default=20, help="photos for checkpoint models when present")
    ap.add_argument("--plain-step", type=int, default=1, help="plain cv2.grabCut on every K-th photo (default all)")
    ap.add_argument("--no-sam", action="store_true", help="skip the SAM cache timing (issue 3)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    ecssd = shared_data() / "ecssd-dev"
    data = load(ecssd, args.n or None)
    params = GrabCutParams()
    print(f"ecssd-dev: {len(data)} photos, {np.mean([i.shape[0] * i.shape[1] for _, i, _ in data]) / 1e6:.3f} MP mean")
    figures: dict[str, object] = {"n": len(data)}
    gc_figures, ours = bench_grabcut(data, params)
    figures.update(gc_figures)
    figures.update(bench_baselines(data, ours, max(1, args.plain_step)))
    figures.update(bench_sizes(data[2][1], params))
    if not args.no_sam:
        figures.update(bench_sam_cache(data[2][1], args.sam_arch))
    figures.update(bench_checkpoint_models(data, args.checkpoint_n))
    f = {k: float(v) for k, v in figures.items() if isinstance(v, int | float)}
    failures = []
    gain = f["grabcut_paired_iou_mean"] - f["plain_grabcut_iou_mean"]
    figures["gain_over_plain"] = gain
    if gain < 0.08:
        failures.append(f"grabcut mean IoU {f['grabcut_paired_iou_mean']:.3f} is only {gain:+.3f} over plain "
                        f"cv2.grabCut's {f['plain_grabcut_iou_mean']:.3f} on the same photos (target +0.08)")
    if f["grabcut_iou_median"] < 0.75:
        failures.append(f"grabcut median IoU {f['grabcut_iou_median']:.3f} < 0.75")
    if f["grabcut_empty_frac"] > 0.01:
        failures.append(f"grabcut returned empty masks on {f['grabcut_empty_frac']:.1%} of photos (target <= 1%)")
    if f["grabcut_below03_frac"] > 0.08:
        failures.append(f"grabcut IoU < 0.3 on {f['grabcut_below03_frac']:.1%} of photos (target <= 8%)")
    slowest = max(float(v) for k, v in figures.items() if k.startswith("grabcut_s_"))  # type: ignore[arg-type]
    figures["grabcut_s_max"] = slowest
    if slowest >= 2.0:
        failures.append(f"grabcut takes {slowest:.2f} s on a large image (target < 2 s)")
    if "sam_cache_ratio" in figures and figures["sam_cache_ratio"] >= 0.05:  # type: ignore[operator]
        failures.append(f"cached SAM re-prompt costs {figures['sam_cache_ratio']:.3f} of a cold prediction (>= 5%)")
    keys = ["n", "grabcut_iou_median", "grabcut_iou_mean", "grabcut_iou_p10", "grabcut_empty_frac",
            "grabcut_below03_frac", "grabcut_fallbacks", "grabcut_bf_mean", "grabcut_s_per_img", "rectangle_iou_median",
            "plain_grabcut_n", "plain_grabcut_iou_mean", "plain_grabcut_iou_median", "plain_grabcut_empty_frac",
            "plain_grabcut_s_per_img", "grabcut_paired_iou_mean", "gain_over_plain", "grabcut_s_12MP",
            "grabcut_s_max", "sam_cache_ratio"]
    keys += [k for k in figures if k.startswith(("deeplabv3_", "sam_")) and k not in keys]
    finish({k: figures[k] for k in keys if k in figures}, failures)


if __name__ == "__main__":
    main()
