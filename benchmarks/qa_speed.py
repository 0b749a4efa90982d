"""QA check speed on a 4000x3000 (12 MP) and a 400x300 mask, against the memory floor.

The masks are a real ECSSD ground-truth mask (and its photo) resized to both sizes (bilinear, then
thresholded, so the boundary stays smooth), with 20 planted specks and pinholes so islands and holes have
work to do. For each size it times (median of repeated runs, after a warm-up):

- ``count_nonzero``: one ``np.count_nonzero`` pass over the mask (the memory floor);
- ``islands_holes``: binarise + run-length components + the islands and holes checks;
- ``suite``: every per-item check (:func:`qa.checks.run_checks` with the photo and a pre-annotation)
  plus the photo's perceptual hash;
- ``cv2_cc``: OpenCV's labelling with stats on the mask and on its inverse, for scale.

Targets on 12 MP (issue 6): islands + holes < 50 ms, full suite < 0.3 s.
Run: ``.venv/bin/python benchmarks/qa_speed.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import finish, shared_data
from pipeline.core import io
from qa.checks import QAParams, binarise, check_holes, check_islands, run_checks
from qa.components import components
from qa.near_duplicates import phash


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scene(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, photo, pre-annotation) at ``size`` = (width, height) from ECSSD 0001 with planted defects."""
    ecssd = shared_data() / "ecssd-dev"
    img = cv2.resize(io.read_image(ecssd / "images" / "0001.jpg"), size, interpolation=cv2.INTER_LINEAR)
    soft = cv2.resize(io.read_gray(ecssd / "masks" / "0001.png"), size, interpolation=cv2.INTER_LINEAR)
    mask = np.where(soft >= 128, 255, 0).astype(np.uint8)
    rng = np.random.default_rng(0)
    outside = np.argwhere(cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0)
    inside = np.argwhere(cv2.erode(mask, np.ones((9, 9), np.uint8)) == 255)
    for y, x in outside[rng.choice(len(outside), 10, replace=False)]:
        mask[y, x] = 255
    for y, x in inside[rng.choice(len(inside), 10, replace=False)]:
        mask[y, x] = 0
    pre = cv2.erode(mask, np.ones((5, 5), np.uint8))
    return mask, img, pre


def main() -> None:
    params = QAParams()
    figures: dict[str, object] = {}
    failures: list[str] = []
    cv2.setNumThreads(1)  # as in the runner's worker processes
    for label, size, repeat in (("12mp", (4000, 3000), 15), ("small", (400, 300), 100)):
        mask, img, pre = scene(size)

        def islands_holes(mask: np.ndarray = mask) -> object:
            fg = binarise(mask)
            n = int(np.count_nonzero(fg))
            fgc, bgc = components(fg, params.connectivity, params.hole_connectivity)
            return check_islands(fgc, n, params), check_holes(bgc, n, params)

        def suite(mask: np.ndarray = mask, img: np.ndarray = img, pre: np.ndarray = pre) -> object:
            return run_checks(mask, params, image=img, pre=pre), phash(img)

        def cv2_cc(mask: np.ndarray = mask) -> object:
            fg = (mask >= 128).view(np.uint8)
            return (cv2.connectedComponentsWithStats(fg, connectivity=8),
                    cv2.connectedComponentsWithStats(1 - fg, connectivity=4))

        floor = timeit(lambda mask=mask: np.count_nonzero(mask), repeat)
        t_ih = timeit(islands_holes, repeat)
        t_suite = timeit(suite, repeat)
        t_cv = timeit(cv2_cc, max(3, repeat // 3))
        rep = run_checks(mask, params, image=img, pre=pre)
        failed = ",".join(f.check for f in rep.failed())
        print(f"{label}: {size[0]}x{size[1]}  count_nonzero {floor * 1e3:.2f} ms | islands+holes {t_ih * 1e3:.1f} ms "
              f"({t_ih / floor:.0f}x floor) | full suite {t_suite * 1e3:.1f} ms ({t_suite / floor:.0f}x floor) | "
              f"cv2 labelling mask+inverse {t_cv * 1e3:.1f} ms | flagged: {failed}")
        figures.update({
            f"{label}_floor_ms": floor * 1e3, f"{label}_islands_holes_ms": t_ih * 1e3,
            f"{label}_suite_ms": t_suite * 1e3, f"{label}_islands_holes_x_floor": t_ih / floor,
            f"{label}_suite_x_floor": t_suite / floor, f"{label}_cv2_cc_ms": t_cv * 1e3,
        })
        if label == "12mp":
            if t_ih >= 0.050:
                failures.append(f"islands+holes take {t_ih * 1e3:.1f} ms on 12 MP (target < 50 ms)")
            if t_suite >= 0.300:
                failures.append(f"the full suite takes {t_suite * 1e3:.0f} ms on 12 MP (target < 300 ms)")
            if not {"islands", "holes"} <= set(failed.split(",")):
                failures.append("the planted specks/pinholes were not flagged")
    finish(figures, failures)


if __name__ == "__main__":
    main()
