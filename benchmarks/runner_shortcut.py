"""Issue 20: the runner's stage-level shortcut vs its per-item reuse check, at N items, nothing changed.

A stage of N items (one tiny input file each, listed in an upstream ``index.parquet`` as a real upstream stage's
outputs are; one tiny output file per item) is built once, then run again with nothing changed:

- **per-item check**: the stage names no upstream files (what every stage did before): one state read, a stat
  per input and per output and a fingerprint per item, the stale pass, the sweep, the index compare;
- **shortcut**: the stage names its upstream files; the runner hashes them, digests the work items and, the
  key being the one recorded at the last complete run, reads the records back in one scan.

    nice -n 10 .venv/bin/python benchmarks/runner_shortcut.py [--items 10000] [--repeats 3]

Prints wall and CPU seconds of each (median of ``--repeats``) and ends with one ``name=value`` line.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import finish

from pipeline.core import io
from pipeline.core.hashing import sha256_file
from pipeline.core.params import RunnerParams
from pipeline.core.runner import INDEX_NAME, FileInput, ItemResult, Stage, WorkItem, run_stage, write_index


@dataclass(frozen=True)
class EchoParams:
    suffix: str = "!"


def process(work: WorkItem, params: EchoParams, _resource: Any) -> ItemResult:
    data = work.input("x").read_bytes() + params.suffix.encode()
    return ItemResult(files={f"out/{work.key}.txt": data}, record={"item_id": work.key, "n": len(data)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-shortcut-"))
    try:
        up = tmp / "up"
        rows = []
        for i in range(args.items):
            rel = f"in/{i:07d}.txt"
            io.write_bytes(up / rel, f"item {i}\n".encode())
            rows.append((f"k{i:07d}", rel, sha256_file(up / rel), (up / rel).stat().st_size))
        write_index(up / INDEX_NAME, rows)
        works = [WorkItem(key=k, inputs={"x": FileInput(up / rel)}) for k, rel, _sha, _n in rows]
        stage: Stage[EchoParams] = Stage(name="echo", params=EchoParams(), root=tmp / "out", process=process,
                                         state_root=tmp / "state", output_dirs=("out",))
        runner = RunnerParams(workers=1, progress=False)

        def timed(upstream: tuple[Path, ...]) -> tuple[float, float, int]:
            t0, c0 = time.perf_counter(), time.process_time()
            r = run_stage(stage, works, runner, upstream=upstream)
            return time.perf_counter() - t0, time.process_time() - c0, r.n_computed

        ups = (up / INDEX_NAME,)
        build = timed(ups)
        per_item, shortcut = [], []
        for _ in range(args.repeats):
            per_item.append(timed(()))   # no upstream: the per-item check (and the recorded key is dropped)
            timed(ups)                   # records the key again (per-item check once more)
            shortcut.append(timed(ups))  # nothing changed since: the shortcut
        assert all(r[2] == 0 for r in per_item + shortcut), "nothing may be recomputed"
        pw, pc = statistics.median(r[0] for r in per_item), statistics.median(r[1] for r in per_item)
        sw, sc = statistics.median(r[0] for r in shortcut), statistics.median(r[1] for r in shortcut)
        print(f"{args.items} items: build {build[0]:.1f} s; nothing changed: per-item check {pw:.2f} s wall "
              f"({pc:.2f} s CPU), shortcut {sw:.2f} s wall ({sc:.2f} s CPU): {pc / max(sc, 1e-9):.1f}x less CPU")
        finish({"items": args.items, "per_item_check_s": pw, "per_item_check_cpu_s": pc, "shortcut_s": sw,
                "shortcut_cpu_s": sc, "cpu_ratio": pc / max(sc, 1e-9)}, [])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
