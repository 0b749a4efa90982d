"""A small real stage used by the runner tests, runnable as a script (for SIGKILL tests).

Usage: python slow_stage.py INPUT_DIR OUT_ROOT STATE_ROOT WORKERS [FACTOR] [VERSION]
The environment variable SLOW_STAGE_SLEEP (seconds per item) slows it down without changing its params.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import io
from pipeline.core.params import RunnerParams
from pipeline.core.runner import FileInput, ItemResult, Stage, StageResult, WorkItem, run_stage


@dataclass(frozen=True)
class DimParams:
    factor: int = 2


def process(work: WorkItem, params: DimParams, _resource: Any) -> ItemResult:
    if work.data.get("explode"):
        raise ValueError(f"{work.input('image')}: planted failure")
    img = io.read_image(work.input("image"))
    time.sleep(float(os.environ.get("SLOW_STAGE_SLEEP", "0")))
    out = (img // params.factor).astype(np.uint8)
    return ItemResult(
        files={f"dim/{work.key}.png": io.encode_png(out), f"sum/{work.key}.json": io.dumps_json({"s": int(out.sum())}).encode()},
        record={"item_id": work.key, "mean": float(out.mean()), "h": int(out.shape[0])},
    )


def make_stage(out_root: Path, state_root: Path, params: DimParams, version: str = "1") -> Stage[DimParams]:
    return Stage(name="dim", version=version, params=params, root=out_root, process=process,
                 state_root=state_root, output_dirs=("dim", "sum"))


def works_for(input_dir: Path, explode: tuple[str, ...] = ()) -> list[WorkItem]:
    works = []
    for p in sorted(Path(input_dir).glob("*.png")):
        data = {"explode": True} if p.stem in explode else {}
        works.append(WorkItem(key=p.stem, inputs={"image": FileInput(p)}, data=data))
    return works


def run(input_dir: Path, out_root: Path, state_root: Path, workers: int, params: DimParams,
        version: str = "1", max_failure_fraction: float = 0.5, explode: tuple[str, ...] = (),
        shortcut: bool = False, executor: Any = None) -> StageResult:
    """``shortcut``: name every input file as upstream (enables the runner's stage-level shortcut)."""
    stage = make_stage(out_root, state_root, params, version)
    runner = RunnerParams(workers=workers, max_failure_fraction=max_failure_fraction, progress=False)
    works = works_for(input_dir, explode)
    upstream = [w.input("image") for w in works] if shortcut else []
    result = run_stage(stage, works, runner, reports_dir=out_root.parent / "reports", executor=executor,
                       upstream=upstream)
    io.write_parquet(out_root / "dim.parquet", result.frame(["item_id", "mean", "h"]))
    return result


if __name__ == "__main__":
    a = sys.argv[1:]
    run(Path(a[0]), Path(a[1]), Path(a[2]), int(a[3]), DimParams(factor=int(a[4]) if len(a) > 4 else 2),
        version=a[5] if len(a) > 5 else "1")
