"""A small real stage for the Ray executor tests (shipped to Ray workers by value).

``process`` reads a PNG, darkens it and writes a PNG plus a JSON; it also leaves traces the tests read:
``<trace>/pids/<pid>`` (which worker processes ran items) and ``<trace>/setup/<pid>-<n>`` (each call of
``setup``). ``data["die_once"]`` makes the worker SIGKILL itself the first time it meets that item.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import io
from pipeline.core.runner import FileInput, ItemResult, Stage, WorkItem


@dataclass(frozen=True)
class SynthParams:
    factor: int = 2
    trace: str = ""
    sleep: float = 0.0
    fail_setup: bool = False


def setup(params: SynthParams) -> dict[str, int]:
    if params.fail_setup:
        raise FileNotFoundError("models/missing.pt: checkpoint not found")
    d = Path(params.trace) / "setup"
    d.mkdir(parents=True, exist_ok=True)
    n = len(list(d.glob(f"{os.getpid()}-*")))
    (d / f"{os.getpid()}-{n}").write_text("")
    return {"pid": os.getpid()}


def process(work: WorkItem, params: SynthParams, resource: dict[str, int]) -> ItemResult:
    trace = Path(params.trace)
    (trace / "pids").mkdir(parents=True, exist_ok=True)
    (trace / "pids" / str(os.getpid())).write_text("")
    if work.data.get("explode"):
        raise ValueError(f"{work.input('image')}: planted failure")
    marker = trace / f"died-{work.key}"
    if work.data.get("die_once") and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    img = io.read_image(work.input("image"))
    time.sleep(params.sleep)
    out = (img // params.factor).astype(np.uint8)
    return ItemResult(
        files={f"dim/{work.key}.png": io.encode_png(out),
               f"sum/{work.key}.json": io.dumps_json({"s": int(out.sum())}).encode()},
        record={"item_id": work.key, "mean": float(out.mean()), "h": int(out.shape[0])},
    )


def make_stage(root: Path, state: Path, params: SynthParams, setup_fn: bool = True) -> Stage[SynthParams]:
    return Stage(name="synth", version="1", params=params, root=root, process=process, state_root=state,
                 setup=setup if setup_fn else None, output_dirs=("dim", "sum"))


def works_for(images: list[Path], die_once: tuple[str, ...] = (), explode: tuple[str, ...] = ()) -> list[WorkItem]:
    works = []
    for p in sorted(images):
        data: dict[str, Any] = {}
        if p.stem in die_once:
            data["die_once"] = True
        if p.stem in explode:
            data["explode"] = True
        works.append(WorkItem(key=p.stem, inputs={"image": FileInput(p)}, data=data))
    return works
