"""Label Studio round trip: brush-RLE codec speed vs label_studio_sdk, and push throughput bulk vs per task.

Codec: a real ECSSD mask resized (nearest) to 400x300 and 4000x3000; encode and decode with
``label_studio_sdk.converter.brush`` (``mask2rle`` / ``decode_rle`` + alpha plane) and with
``pipeline.annotation.brush``; outputs must be byte-identical. Targets: ours >= 10x faster on the small mask and
>= 20x on the large one, both ways (medians, measured in this run).

Push: 500 items (real ECSSD photos and ground-truth masks as predictions) pushed to a real Label Studio 1.23.2
started on a free port (tests/labelstudio/conftest.py's data-dir template) once in bulk (chunks of 100 tasks with
predictions per request) and once with one request per task. Target: bulk >= 3x faster.

Run: ``.venv/bin/python benchmarks/labelstudio.py`` (``--skip-push`` for the codec only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import finish, shared_data
from pipeline.annotation import brush
from pipeline.core import io


def _median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def codec(data: Path, figures: dict[str, object], failures: list[str]) -> None:
    import cv2
    from label_studio_sdk.converter import brush as sdk

    base = io.read_mask(data / "ecssd-dev" / "masks" / "0018.png")  # two parts with holes
    for label, (w, h), target, sdk_reps in (("400x300", (400, 300), 10.0, 15), ("4000x3000", (4000, 3000), 20.0, 3)):
        mask = cv2.resize(base, (w, h), interpolation=cv2.INTER_NEAREST)
        ref = sdk.mask2rle(mask)
        ours = brush.mask_to_rle(mask)  # also compiles/loads the numba kernels
        if ours != ref:
            failures.append(f"{label}: encoded RLE differs from label_studio_sdk")
        dec_ref = sdk.decode_rle(ref).reshape(h, w, 4)[:, :, 3]
        if not np.array_equal(brush.rle_to_alpha(ref, h, w), dec_ref):
            failures.append(f"{label}: decoded alpha differs from label_studio_sdk")
        t_sdk_enc = _median_time(lambda m=mask: sdk.mask2rle(m), sdk_reps)
        t_our_enc = _median_time(lambda m=mask: brush.mask_to_rle(m), 30)
        t_sdk_dec = _median_time(lambda r=ref, h=h, w=w: sdk.decode_rle(r).reshape(h, w, 4)[:, :, 3], sdk_reps)
        t_our_dec = _median_time(lambda r=ref, h=h, w=w: brush.rle_to_alpha(r, h, w), 30)
        enc_x, dec_x = t_sdk_enc / t_our_enc, t_sdk_dec / t_our_dec
        figures.update({f"sdk_encode_ms_{label}": t_sdk_enc * 1e3, f"encode_ms_{label}": t_our_enc * 1e3,
                        f"encode_speedup_{label}": enc_x, f"sdk_decode_ms_{label}": t_sdk_dec * 1e3,
                        f"decode_ms_{label}": t_our_dec * 1e3, f"decode_speedup_{label}": dec_x})
        print(f"{label}: encode {t_sdk_enc * 1e3:.2f} ms (sdk) vs {t_our_enc * 1e3:.3f} ms ({enc_x:.1f}x); "
              f"decode {t_sdk_dec * 1e3:.2f} ms (sdk) vs {t_our_dec * 1e3:.3f} ms ({dec_x:.1f}x)", flush=True)
        if enc_x < target:
            failures.append(f"encode on {label} only {enc_x:.1f}x faster than the SDK (target {target:.0f}x)")
        if dec_x < target:
            failures.append(f"decode on {label} only {dec_x:.1f}x faster than the SDK (target {target:.0f}x)")


def push(data: Path, n: int, figures: dict[str, object], failures: list[str]) -> None:
    from pipeline.annotation.base import PushItem
    from pipeline.annotation.labelstudio import LabelStudioBackend, LabelStudioParams
    from tests.labelstudio.conftest import TOKEN, Server, _data_template, _free_port

    images = sorted((data / "ecssd-dev" / "images").glob("*.jpg"))
    scratch = Path(tempfile.mkdtemp(prefix="maskloop-bench-ls-"))
    try:
        port = _free_port()
        server = Server(url=f"http://127.0.0.1:{port}", port=port, data_dir=scratch / "data",
                        document_root=scratch / "docroot", log_path=scratch / "server.log")
        server.document_root.mkdir()
        shutil.copytree(_data_template(scratch), server.data_dir)
        server.start()
        try:
            items = []
            for i in range(n):
                img = images[i % len(images)]
                mask_path = data / "ecssd-dev" / "masks" / f"{img.stem}.png"
                h, w = io.read_mask(mask_path).shape
                items.append(PushItem(item_id=f"{i:016x}", image_path=img, width=w, height=h, mask_path=mask_path,
                                      model_version="bench", score=0.5, uncertainty=(i * 7919 % n) / n))
            seconds = {}
            for mode, chunk in (("bulk", 100), ("per_task", 1)):
                params = LabelStudioParams(url=server.url, project_title=f"bench-{mode}", chunk_size=chunk,
                                           document_root=str(server.document_root))
                backend = LabelStudioBackend(params, TOKEN)
                backend.ensure_project()
                t = time.perf_counter()
                out = backend.push(items, [])
                seconds[mode] = time.perf_counter() - t
                if out.created != n:
                    failures.append(f"{mode} push created {out.created} tasks, expected {n}")
                print(f"push {mode}: {n} items in {seconds[mode]:.1f} s ({n / seconds[mode]:.1f} items/s)", flush=True)
            ratio = seconds["per_task"] / seconds["bulk"]
            figures.update({"push_items": n, "push_bulk_items_per_s": n / seconds["bulk"],
                            "push_per_task_items_per_s": n / seconds["per_task"], "push_bulk_speedup": ratio})
            if ratio < 3:
                failures.append(f"bulk push only {ratio:.1f}x faster than one request per task (target 3x)")
        finally:
            server.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-push", action="store_true", help="codec only (no Label Studio server)")
    ap.add_argument("--items", type=int, default=500, help="items pushed in each mode")
    args = ap.parse_args()
    data = shared_data()
    figures: dict[str, object] = {}
    failures: list[str] = []
    codec(data, figures, failures)
    if not args.skip_push:
        push(data, args.items, figures, failures)
    finish(figures, failures)


if __name__ == "__main__":
    main()
