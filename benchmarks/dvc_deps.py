"""Issue 20, DVC's share alone: folder deps vs small-file deps (table/index), on a synthetic 3-stage pipeline.

`benchmarks/repro_scale.py` times the real pipeline, whose compute hides DVC's own costs on a busy machine. This
script isolates them: three stages (a <- raw, b <- a, c <- b), each an incremental command that writes one small
file per item plus an index (name + sha256 per file), so the command itself costs milliseconds and what remains
is DVC. Two variants, same commands, same outputs (cached folder outs, ``persist: true``):

- ``folder``: each stage depends on its upstream's whole folder (maskloop before issue 20);
- ``index``: each stage depends on its upstream's ``index.txt`` (maskloop now: table + ``index.parquet``).

    nice -n 10 .venv/bin/python benchmarks/dvc_deps.py [--items 2000 10000]

Prints, per size and variant: full, no-op and +20 ``dvc repro`` wall seconds. Ends with one ``name=value`` line;
exits 1 when the index variant is not faster than the folder variant for the +20 run at the largest size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish

BIN = REPO / ".venv" / "bin"

STAGE_CMD = r'''
import hashlib, os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(f"{dst}/items", exist_ok=True)
names = sorted(n for n in os.listdir(f"{src}/items" if os.path.isdir(f"{src}/items") else src) if not n.startswith("."))
base = f"{src}/items" if os.path.isdir(f"{src}/items") else src
have = set(os.listdir(f"{dst}/items"))
for n in names:
    if n not in have:
        data = open(f"{base}/{n}", "rb").read()
        open(f"{dst}/items/{n}", "wb").write(hashlib.sha256(data).digest() + data[:64])
for n in have - set(names):
    os.unlink(f"{dst}/items/{n}")
rows = [f"{n} {hashlib.sha256(open(f'{dst}/items/{n}', 'rb').read()).hexdigest()}\n" for n in names]
open(f"{dst}/index.txt.tmp", "w").write("".join(rows))
os.replace(f"{dst}/index.txt.tmp", f"{dst}/index.txt")
'''


def dvc_yaml(variant: str) -> str:
    def dep(upstream: str) -> str:
        return upstream if upstream == "raw" or variant == "folder" else f"{upstream}/index.txt"

    lines = ["stages:"]
    for name, up in (("a", "raw"), ("b", "a"), ("c", "b")):
        lines += [f"  {name}:", f"    cmd: python stage.py {up} {name}", "    deps:", "      - stage.py",
                  f"      - {dep(up)}", "    outs:", f"      - {name}:", "          persist: true"]
    return "\n".join(lines) + "\n"


def run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(root: Path, n: int, variant: str) -> dict[str, float]:
    root.mkdir(parents=True)
    (root / "raw").mkdir()
    for i in range(n + 20):
        (root / ("raw" if i < n else "extra") / f"{i:07d}.bin").parent.mkdir(exist_ok=True)
        (root / ("raw" if i < n else "extra") / f"{i:07d}.bin").write_bytes(os.urandom(200))
    (root / "stage.py").write_text(STAGE_CMD)
    (root / "dvc.yaml").write_text(dvc_yaml(variant))
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        run(cmd, root)
    repro = [str(BIN / "dvc"), "repro"]
    full = run(repro, root)
    noop = min(run(repro, root) for _ in range(2))
    for p in sorted((root / "extra").iterdir()):
        shutil.move(p, root / "raw" / p.name)
    add = run(repro, root)
    return {"full": full, "noop": noop, "add": add}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, nargs="+", default=[2000, 10000])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-dvc-deps-"))
    figures: dict[str, object] = {}
    try:
        for n in args.items:
            for variant in ("folder", "index"):
                r = measure(tmp / f"{variant}-{n}", n, variant)
                print(f"{n:6d} items, {variant:6s} deps: full {r['full']:6.1f} s  no-op {r['noop']:5.1f} s  "
                      f"+20 {r['add']:5.1f} s", flush=True)
                for k, v in r.items():
                    figures[f"{variant}_{k}_{n}"] = v
                shutil.rmtree(tmp / f"{variant}-{n}", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    big = max(args.items)
    failures = []
    if float(figures[f"index_add_{big}"]) >= float(figures[f"folder_add_{big}"]):  # type: ignore[arg-type]
        failures.append(f"+20 at {big} items: index deps not faster than folder deps")
    finish(figures, failures)


if __name__ == "__main__":
    main()
