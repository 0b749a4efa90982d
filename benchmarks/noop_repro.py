"""Issue 2 target: an immediate second `dvc repro` of the demo does nothing and takes under 3 s.

Builds a clean clone-like copy of the committed tree (what `make demo` gets on a fresh machine) in a temporary
folder, runs `dvc repro` once (the whole demo: ~1-2 min), then times ``--runs`` no-op `dvc repro`s and checks
that each ran no stage but the always-run ``pull`` and changed no file under ``data/``, ``models/``,
``metrics/`` or the lock files. Baselines measured in the same run on the same copy: `dvc status` (DVC's own
floor: parse the pipeline and check every stage, run nothing) and `maskloop pull` on its own.

    .venv/bin/python benchmarks/noop_repro.py [--runs 7] [--keep]

Ends with one line: ``noop_repro_s=<median> ... `` and exits 1 when the median is 3 s or more.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish

TARGET_S = 3.0
BIN = REPO / ".venv" / "bin"
WATCHED = ("data", "models", "metrics", "dvc.lock", "always_run/dvc.lock")


def _env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def clone_like_copy(dest: Path) -> Path:
    """The committed tree (git ls-files) without tests and benchmarks, as a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = REPO / rel
        if rel.startswith(("tests/", "benchmarks/")) or not src.exists():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    git = ["git", "-c", "user.email=bench@maskloop", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every watched file (what a no-op must leave alone)."""
    out: dict[str, str] = {}
    for name in WATCHED:
        p = root / name
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="no-op repros to time (the median is the figure).")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy and print where it is.")
    args = ap.parse_args()
    if not (BIN / "dvc").is_file():
        sys.exit(f"{BIN / 'dvc'} not found: run `make install` first")

    tmp = Path(tempfile.mkdtemp(prefix="maskloop-noop-"))
    root = clone_like_copy(tmp / "repo")
    first_s, _ = _run([str(BIN / "dvc"), "repro"], root)
    print(f"first dvc repro (the whole demo): {first_s:.1f} s", flush=True)

    before = snapshot(root)
    repro, ran_extra = [], set()
    for _ in range(args.runs):
        seconds, log = _run([str(BIN / "dvc"), "repro"], root)
        repro.append(seconds)
        ran = {s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", log)}
        ran_extra |= ran - {"pull"}
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    status = [_run([str(BIN / "dvc"), "status"], root)[0] for _ in range(args.runs)]
    pull = [_run([str(BIN / "maskloop"), "pull"], root)[0] for _ in range(args.runs)]

    med = statistics.median(repro)
    print(f"no-op dvc repro: median {med:.2f} s (min {min(repro):.2f}, max {max(repro):.2f}) over {args.runs} runs")
    print(f"  dvc status (DVC's floor): median {statistics.median(status):.2f} s")
    print(f"  maskloop pull on its own: median {statistics.median(pull):.2f} s")
    failures = []
    if med >= TARGET_S:
        failures.append(f"no-op dvc repro median {med:.2f} s >= {TARGET_S} s")
    if ran_extra:
        failures.append(f"a no-op dvc repro ran stages other than pull: {sorted(ran_extra)}")
    if changed:
        failures.append(f"a no-op dvc repro changed {len(changed)} file(s), e.g. {changed[:3]}")
    if args.keep:
        print(f"copy kept at {root}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finish({"noop_repro_s": med, "noop_repro_min_s": min(repro), "dvc_status_s": statistics.median(status),
            "pull_s": statistics.median(pull), "stages_run_besides_pull": len(ran_extra),
            "files_changed": len(changed), "first_repro_s": first_s}, failures)


if __name__ == "__main__":
    main()
