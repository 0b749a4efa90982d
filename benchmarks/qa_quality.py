"""QA check quality on real ground truth: false flags on clean ECSSD masks, recall on planted defects.

1. Runs every per-item check on the 200 clean masks of ``../shared/data/ecssd-dev`` (with their photos)
   and prints the false-flag rate of every check (a flag on clean ground truth counts as false).
2. Plants defects into copies of those masks with a fixed seed (small islands, small holes, jagged edges,
   shifted masks, antialiased edges, JPEG-damaged masks) and prints the recall of the matching check.
3. Near-duplicates: perceptual-hash pairs among the 200 distinct photos (false pairs) and recall on
   recompressed / resized / brightened / slightly cropped copies.

Targets (issue 6): recall >= 0.95 and clean false flags <= 0.05 for islands, holes, non-binary and
shifted masks. Run: ``.venv/bin/python benchmarks/qa_quality.py [--limit N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import finish, shared_data
from pipeline.core import io
from qa.checks import CHECKS, QAParams, hole_limit, island_limit, run_checks
from qa.near_duplicates import cluster, phash

SEED = 20261125


def plant_islands(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """1-4 specks of 1 px up to the island limit, placed in the background away from the object."""
    fg = grey >= 128
    limit = island_limit(int(fg.sum()), params)
    far = cv2.dilate(fg.view(np.uint8), np.ones((9, 9), np.uint8)) == 0
    ys, xs = np.nonzero(far[4:-4, 4:-4])
    out = grey.copy()
    for _ in range(int(rng.integers(1, 5))):
        area = int(rng.integers(1, max(2, int(limit)) + 1))
        side = max(1, int(np.sqrt(area)))
        i = int(rng.integers(len(ys)))
        y, x = ys[i] + 4, xs[i] + 4
        block = np.zeros((side, side), bool).ravel()
        block[: min(area, side * side)] = True
        out[y : y + side, x : x + side][block.reshape(side, side)] = 255
    return out


def plant_holes(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """1-4 pinholes of 1 px up to the hole limit, placed well inside the object."""
    fg = grey >= 128
    limit = hole_limit(int(fg.sum()), params)
    inner = cv2.erode(fg.view(np.uint8), np.ones((9, 9), np.uint8)) > 0
    ys, xs = np.nonzero(inner)
    out = grey.copy()
    if len(ys) == 0:
        return out
    for _ in range(int(rng.integers(1, 5))):
        area = int(rng.integers(1, max(2, int(limit)) + 1))
        side = max(1, int(np.sqrt(area)))
        i = int(rng.integers(len(ys)))
        y, x = max(0, ys[i] - side // 2), max(0, xs[i] - side // 2)
        out[y : y + side, x : x + side] = 0
    return out


def plant_jagged(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """Stair-stepped boundary: the mask rebuilt from a 1/k copy with nearest-neighbour upscaling (k 6-10)."""
    h, w = grey.shape
    k = int(rng.integers(6, 11))
    small = cv2.resize(grey, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    small = np.where(small >= 128, 255, 0).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def plant_shift(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """The mask moved by 3-6% of the image diagonal in a random direction (a misregistered mask)."""
    h, w = grey.shape
    dist = float(rng.uniform(0.03, 0.06)) * float(np.hypot(h, w))
    ang = float(rng.uniform(0, 2 * np.pi))
    m = np.float32([[1, 0, dist * np.cos(ang)], [0, 1, dist * np.sin(ang)]])
    return cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def plant_antialias(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """Antialiased edges: a Gaussian blur of sigma 0.6-1.5 px."""
    return cv2.GaussianBlur(grey, (0, 0), float(rng.uniform(0.6, 1.5)))


def plant_jpeg(grey: np.ndarray, rng: np.random.Generator, params: QAParams) -> np.ndarray:
    """The mask saved as JPEG at quality 75-98 and read back."""
    q = int(rng.integers(75, 99))
    _ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


DEFECTS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator, QAParams], np.ndarray], str]] = {
    "small_islands": (plant_islands, "islands"),
    "small_holes": (plant_holes, "holes"),
    "jagged_edges": (plant_jagged, "jaggedness"),
    "shifted_mask": (plant_shift, "edge_alignment"),
    "antialiased": (plant_antialias, "non_binary"),
    "jpeg_damaged": (plant_jpeg, "non_binary"),
}
TARGETED = {"small_islands", "small_holes", "shifted_mask", "antialiased", "jpeg_damaged"}
TARGET_CHECKS = ("islands", "holes", "non_binary", "edge_alignment")


def near_duplicate_table(images: list[np.ndarray], rng: np.random.Generator, params: QAParams) -> dict[str, float]:
    """False pairs among distinct photos; recall on edited copies (each copy must join its original)."""
    hashes = {f"o{i:04d}": phash(img) for i, img in enumerate(images)}
    groups = cluster(hashes, params.phash_max_distance)
    originals_grouped = sum(1 for k in hashes if sum(1 for g in groups.values() if g == groups[k]) > 1)
    found = 0
    total = 0
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        edits = [
            cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR),
            cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
            np.clip(img.astype(np.int16) + 25, 0, 255).astype(np.uint8),
            img[int(h * 0.03) : h - int(h * 0.03), int(w * 0.03) : w - int(w * 0.03)],
        ]
        for j, e in enumerate(edits):
            pair = cluster({"a": hashes[f"o{i:04d}"], "b": phash(np.ascontiguousarray(e))}, params.phash_max_distance)
            found += pair["a"] == pair["b"]
            total += 1
            _ = j
    return {"distinct_flagged": originals_grouped / len(images), "edit_recall": found / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N masks (default: all)")
    args = ap.parse_args()
    ecssd = shared_data() / "ecssd-dev"
    params = QAParams()
    names = sorted(p.stem for p in (ecssd / "masks").glob("*.png"))
    if args.limit:
        names = names[: args.limit]
    t0 = time.perf_counter()
    images = [io.read_image(ecssd / "images" / f"{n}.jpg") for n in names]
    masks = [io.read_gray(ecssd / "masks" / f"{n}.png") for n in names]

    flags = {c: 0 for c in CHECKS}
    ran = {c: 0 for c in CHECKS}
    values: dict[str, list[float]] = {c: [] for c in CHECKS}
    for img, m in zip(images, masks, strict=True):
        rep = run_checks(m, params, image=img)
        for f in rep.findings:
            ran[f.check] += 1
            flags[f.check] += not f.passed
            values[f.check].append(f.value)
    print(f"clean ECSSD masks: {len(names)} (photos with their ground truth as delivered)")
    print(f"{'check':<16}{'flagged':>9}{'false-flag rate':>17}")
    ffr: dict[str, float] = {}
    for c in CHECKS:
        if ran[c]:
            ffr[c] = flags[c] / ran[c]
            print(f"{c:<16}{flags[c]:>9}{ffr[c]:>17.3f}")

    rng = np.random.default_rng(SEED)
    print(f"\nplanted defects (seed {SEED}): recall of the matching check")
    print(f"{'defect':<16}{'check':<16}{'detected':>10}{'recall':>9}")
    recall: dict[str, float] = {}
    for defect, (plant, check) in DEFECTS.items():
        hit = 0
        for img, m in zip(images, masks, strict=True):
            bad = plant(m, rng, params)
            f = run_checks(bad, params, image=img).get(check)
            hit += f is not None and not f.passed
        recall[defect] = hit / len(names)
        print(f"{defect:<16}{check:<16}{hit:>10}{recall[defect]:>9.3f}")

    dup = near_duplicate_table(images, rng, params)
    print(f"\nnear duplicates: distinct photos flagged {dup['distinct_flagged']:.3f}, "
          f"edited copies found {dup['edit_recall']:.3f}")
    seconds = time.perf_counter() - t0

    failures = []
    for defect in sorted(TARGETED):
        if recall[defect] < 0.95:
            failures.append(f"recall of {defect} is {recall[defect]:.3f} < 0.95")
    for c in TARGET_CHECKS:
        if ffr.get(c, 0.0) > 0.05:
            failures.append(f"false-flag rate of {c} is {ffr[c]:.3f} > 0.05")
    figures: dict[str, object] = {"masks": len(names)}
    figures.update({f"ffr_{c}": ffr[c] for c in (*TARGET_CHECKS, "jaggedness", "border", "large_holes")})
    figures.update({f"recall_{d}": r for d, r in recall.items()})
    figures.update({"dup_distinct_flagged": dup["distinct_flagged"], "dup_edit_recall": dup["edit_recall"]})
    figures["seconds"] = seconds
    finish(figures, failures)


if __name__ == "__main__":
    main()
