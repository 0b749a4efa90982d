"""Item 4 of issue 15: ingest's memory per image is bounded and predictable.

Before: a 194 KB 16-bit 9999x9999 PNG took 2.7 GB peak in ingest (a float64 path), an 8-bit RGB one 1.1 GB, per
worker. Now (pipeline/core/image_check.py, docs/limits.md): PNG ~1 MiB whatever its size, JPEG 4 B/px / 64, other
formats at most 4 bytes a pixel; the peak is measured as max RSS growth in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core import io
from tests.conftest import REPO, VENV_BIN, write_params
from tests.harden.pngs import constant_png

MB = 1 << 20
SLACK = 24 * MB  # allocator and interpreter noise on top of the documented bound

MEASURE = r"""
import json, resource, sys
from pathlib import Path
from pipeline.stages import ingest
from pipeline.core.runner import FileInput, WorkItem

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

params = ingest.IngestParams(max_pixels=100_000_000)
def run(path):
    work = WorkItem(key="k", inputs={"file": FileInput(Path(path))}, data={"rel": Path(path).name})
    return ingest.process(work, params, None).record

for warm in sys.argv[2:]:
    run(warm)  # load the codecs first
base = peak()
record = run(sys.argv[1])
print(json.dumps({"delta": peak() - base, "record": record}))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("big")
    out = {
        "png16": constant_png(d / "g16.png", 9999, 9999, depth=16, colour=0, value=120),
        "png_rgb": constant_png(d / "rgb.png", 9999, 9999, depth=8, colour=2, value=90),
    }
    img = Image.new("RGB", (6000, 6000), (30, 60, 90))
    img.save(d / "big.jpg", "JPEG", quality=80)
    img.crop((0, 0, 4000, 4000)).save(d / "big.tif", "TIFF")
    del img
    out["jpeg"], out["tiff"] = d / "big.jpg", d / "big.tif"
    io.write_png(d / "warm.png", np.zeros((32, 32, 3), np.uint8))
    Image.new("RGB", (32, 32)).save(d / "warm.jpg", "JPEG")
    Image.new("RGB", (32, 32)).save(d / "warm.tif", "TIFF")
    return out


def _measure(path: Path) -> tuple[int, dict[str, object]]:
    warm = [str(path.parent / n) for n in ("warm.png", "warm.jpg", "warm.tif")]
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), *warm], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(out["delta"]), out["record"]


@pytest.mark.parametrize(
    ("name", "pixels", "bytes_per_pixel"),
    [("png16", 9999 * 9999, 0.0), ("png_rgb", 9999 * 9999, 0.0), ("jpeg", 6000 * 6000, 4 / 64),
     ("tiff", 4000 * 4000, 4.0)],
)
def test_peak_per_image_is_within_the_documented_bound(files: dict[str, Path], name: str, pixels: int,
                                                       bytes_per_pixel: float) -> None:
    delta, record = _measure(files[name])
    assert record["quarantine"] == "" and record["width"] * record["height"] == pixels, record
    bound = bytes_per_pixel * pixels + SLACK
    assert delta <= bound, f"{name}: peak grew by {delta / MB:.0f} MB, bound {bound / MB:.0f} MB"


def test_stage_peak_follows_the_formula(files: dict[str, Path], tmp_path: Path) -> None:
    """The whole stage with 2 workers: the largest process grows by at most 4 B x the largest non-PNG/JPEG image
    (here the 16 MP TIFF) over the same stage on tiny files: stage peak <= parent + workers x (base + 4 B x P)."""

    def stage_peak(raw_files: list[Path]) -> int:
        root = tmp_path / f"p{len(raw_files)}"
        (root / "raw").mkdir(parents=True)
        for f in raw_files:
            (root / "raw" / f.name).symlink_to(f)
        write_params(root, "paths:\n  raw: raw\n  manifest: out/m.parquet\n  ingest: out\n  reports: r\n"
                           "  state: s\nrunner:\n  workers: 2\n  progress: false\ningest:\n"
                           "  max_pixels: 100000000\n")
        script = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                  "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")
        proc = subprocess.run([sys.executable, "-c", script, str(VENV_BIN / "maskloop"), "ingest"], cwd=root,
                              capture_output=True, text=True, timeout=600, check=True)
        return int(proc.stdout.strip().splitlines()[-1])

    small = [files["png16"].parent / n for n in ("warm.png", "warm.jpg", "warm.tif")]
    big = [files[k] for k in ("png16", "png_rgb", "jpeg", "tiff")]
    grown = stage_peak(big) - stage_peak(small)
    bound = 4 * 4000 * 4000 + 2 * SLACK
    assert grown <= bound, f"stage peak grew by {grown / MB:.0f} MB, formula bound {bound / MB:.0f} MB"
