"""Our CVAT mask codec vs cvat_sdk.masks on a real ECSSD mask at 400x300 and 4000x3000.

Targets (issue 5): identical output at both sizes; encode >= 10x faster than the SDK on the large mask;
decode no slower than the SDK (ours <= SDK at both sizes, medians of interleaved repetitions).

    .venv/bin/python benchmarks/cvat_codec.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from _common import finish, shared_data
from cvat_sdk import masks as sdk

from pipeline.annotation import cvat_codec as ours
from pipeline.core import io


def _interleaved(a: Callable[[], object], b: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, run alternately so background load hits both alike."""
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    data = shared_data()
    gt = io.read_mask(data / "ecssd-dev" / "masks" / "0001.png")
    figures: dict[str, object] = {}
    failures: list[str] = []
    for label, (w, h), reps in (("small", (400, 300), 300), ("large", (4000, 3000), 40)):
        mask = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        ref = sdk.encode_mask(mask)
        got = ours.encode_mask(mask)
        same = got == ref and np.array_equal(ours.decode_mask(ref, image_width=w, image_height=h),
                                             sdk.decode_mask(ref, image_width=w, image_height=h))
        if not same:
            failures.append(f"{label}: our codec output differs from cvat_sdk.masks")
        t_sdk_enc, t_our_enc = _interleaved(lambda m=mask: sdk.encode_mask(m), lambda m=mask: ours.encode_mask(m), reps)
        t_sdk_dec, t_our_dec = _interleaved(
            lambda r=ref, w=w, h=h: sdk.decode_mask(r, image_width=w, image_height=h),
            lambda r=ref, w=w, h=h: ours.decode_mask(r, image_width=w, image_height=h), reps)
        figures[f"{label}_identical"] = same
        figures[f"{label}_runs"] = len(ref) - 4
        figures[f"{label}_sdk_encode_ms"] = t_sdk_enc * 1e3
        figures[f"{label}_our_encode_ms"] = t_our_enc * 1e3
        figures[f"{label}_encode_speedup"] = t_sdk_enc / t_our_enc
        figures[f"{label}_sdk_decode_ms"] = t_sdk_dec * 1e3
        figures[f"{label}_our_decode_ms"] = t_our_dec * 1e3
        figures[f"{label}_decode_speedup"] = t_sdk_dec / t_our_dec
        if t_our_dec > t_sdk_dec:
            failures.append(f"{label}: decode slower than the SDK ({t_our_dec * 1e3:.3g} ms vs {t_sdk_dec * 1e3:.3g} ms)")
    if figures["large_encode_speedup"] < 10:  # type: ignore[operator]
        failures.append(f"large: encode speed-up {figures['large_encode_speedup']:.3g}x < 10x")
    finish(figures, failures)


if __name__ == "__main__":
    main()
