"""Issue 20: does the whole `dvc repro export` cost in proportion to the change?

Builds a clone of a commit (``--rev``, default HEAD: ``git archive`` into a fresh git repository with the
repository's own ``.dvc`` set-up; the stages run that commit's code, ``PYTHONPATH`` points at the clone) in a
temporary folder, fills ``data/raw/images`` with N distinct small
photos (random crops of the ``../shared/data`` ECSSD photos, longer side 160 px, seeded), then times
``dvc repro export`` (ingest -> ... -> export):

1. **full**: the first build of N photos;
2. **no-op**: ``--noop-runs`` immediate repeats (the median is the figure);
3. **+20**: ``--added`` new photos copied in;
4. **-20**: ``--removed`` of the original photos deleted.

For each run: wall and CPU seconds (all processes), the stages DVC ran, and per stage the wall/CPU of the
``maskloop`` command itself (a wrapper named ``maskloop`` earlier on PATH times each invocation with
``/usr/bin/time``), so that ``dvc wall - sum(command wall)`` is DVC's own share. After the runs: files per item in
the workspace (``data/`` + ``.maskloop/``) and in ``.dvc/cache``, and the peak of the summed resident memory of
the process tree (sampled every 0.1 s). ``--verify`` also builds the final photo set from scratch in a second
copy and checks every tracked output is byte-identical to the incremental one.

    nice -n 10 .venv/bin/python benchmarks/repro_scale.py [--items 2000] [--verify] [--keep]

Targets (issue 20): +20 photos <= 3% of the full build (<= 2% from 10,000 items) and <= 30 s; no-op <= 5 s;
<= 12 files per item (workspace + cache). Ends with one ``name=value`` line; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io as _io
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish, shared_data

BIN = REPO / ".venv" / "bin"
SIDE = 160
TARGET_NOOP_S = 5.0
TARGET_ADD_S = 30.0
TARGET_FILES_PER_ITEM = 12.0


def target_add_fraction(n: int) -> float:
    """+20 photos as a share of the full build: 2% from 10,000 items, 3% below (issue 20)."""
    return 0.02 if n >= 10_000 else 0.03


# --------------------------------------------------------------------------- photos


def make_photos(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEGs (longer side 160 px): random crops (40-100% of each side) of the ECSSD photos."""
    import numpy as np
    from PIL import Image

    data = shared_data()
    sources = sorted((data / "ecssd-train" / "images").glob("*.jpg")) + sorted((data / "ecssd-dev" / "images").glob("*.jpg"))
    if not sources:
        sys.exit(f"no ECSSD photos under {data}")
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    seen: set[str] = set()
    cache: dict[int, Image.Image] = {}
    while len(out) < n:
        k = int(rng.integers(len(sources)))
        if k not in cache:
            with Image.open(sources[k]) as im:
                cache[k] = im.convert("RGB")
        img = cache[k]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch))
        scale = SIDE / max(cw, ch)
        crop = crop.resize((max(8, round(cw * scale)), max(8, round(ch * scale))), Image.Resampling.BILINEAR)
        buf = _io.BytesIO()
        crop.save(buf, format="JPEG", quality=90)
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(blob)
    return out


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    """One timed ``dvc repro export``."""

    name: str
    wall: float
    cpu: float
    peak_mb: float
    stages: list[str]
    commands: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (wall, cpu)

    @property
    def command_wall(self) -> float:
        return sum(w for w, _ in self.commands.values())


class TreeSampler:
    """Peak of the summed RSS of a process and its descendants, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total / 1e6)
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak


def write_wrapper(bindir: Path, log: Path) -> None:
    """A ``maskloop`` on PATH that times the real one (wall, user, sys, max RSS) into ``log``."""
    bindir.mkdir(parents=True, exist_ok=True)
    wrapper = bindir / "maskloop"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec /usr/bin/time -a -o '{log}' -f \"$1 %e %U %S %M\" '{BIN / 'maskloop'}' \"$@\"\n"
    )
    wrapper.chmod(0o755)


def env_for(bindir: Path, root: Path) -> dict[str, str]:
    """DVC and the stages run the clone's code (PYTHONPATH), through the timing wrapper (PATH)."""
    # numba's JIT cache (the matte stage's pymatting) is shared by all clones: compiling it is a one-off per
    # machine (minutes on a busy host), not a cost that scales with items.
    numba = os.environ.get("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "maskloop-repro-scale-numba"))
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": numba,
            "PATH": f"{bindir}:{BIN}:{os.environ.get('PATH', '')}"}


def clone_rev(rev: str, dest: Path) -> Path:
    """The tree of commit ``rev`` (without tests/benchmarks) as a fresh one-commit git repository."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "--exclude=tests", "--exclude=benchmarks"], cwd=dest, input=archive, check=True)
    git = ["git", "-c", "user.email=bench@maskloop", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", f"clone of {rev}"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def repro(name: str, root: Path, bindir: Path, log: Path) -> Run:
    """Time one ``dvc repro export`` in ``root`` (wall, CPU of all children, peak memory, per-stage command)."""
    log.write_text("")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "export"], cwd=root, env=env_for(bindir, root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"dvc repro export ({name}) failed ({proc.returncode}):\n{out[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stages = [s.split(":")[-1] for s in re.findall(r"Running stage '([^']+)'", out)]
    commands: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and not line.startswith("Command"):
            w, cw = commands.get(parts[0], (0.0, 0.0))
            commands[parts[0]] = (w + float(parts[1]), cw + float(parts[2]) + float(parts[3]))
    return Run(name, wall, cpu, peak, stages, commands)


def count_files(root: Path) -> tuple[int, int]:
    """Files in the workspace (``data/`` + ``.maskloop/``) and in ``.dvc/cache``."""

    def n(p: Path) -> int:
        return sum(len(files) for _d, _s, files in os.walk(p)) if p.is_dir() else 0

    return n(root / "data") + n(root / ".maskloop"), n(root / ".dvc" / "cache")


def tree_digest(root: Path, folder: str) -> dict[str, str]:
    base = root / folder
    return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file() and p.name != ".gitignore"}


# Params of the copy: 160 px photos need a thinner trimap band than the repository's default (10 px), and a
# few odd random crops may fail a stage; neither changes how the pipeline scales.
PARAM_EDITS = (("  band_px: 10 ", "  band_px: 4 "), ("max_failure_fraction: 0.1", "max_failure_fraction: 0.5"))


def fresh_copy(rev: str, dest: Path, photos: list[bytes]) -> Path:
    root = clone_rev(rev, dest)
    params = (root / "params.yaml").read_text()
    for old, new in PARAM_EDITS:
        if old not in params:
            sys.exit(f"params.yaml: {old.strip()!r} not found; update PARAM_EDITS in {Path(__file__).name}")
        params = params.replace(old, new)
    (root / "params.yaml").write_text(params)
    raw = root / "data" / "raw" / "images"
    shutil.rmtree(raw)
    raw.mkdir(parents=True)
    for i, blob in enumerate(photos):
        (raw / f"p{i:06d}.jpg").write_bytes(blob)
    return root


def report(run: Run) -> None:
    dvc_own = run.wall - run.command_wall
    print(f"  {run.name:6s} wall {run.wall:8.1f} s  cpu {run.cpu:8.1f} s  peak {run.peak_mb:6.0f} MB  "
          f"commands {run.command_wall:7.1f} s  DVC's own {dvc_own:7.1f} s ({dvc_own / max(run.wall, 1e-9):.0%})  "
          f"stages run: {','.join(run.stages) or '-'}")
    for stage, (w, c) in sorted(run.commands.items(), key=lambda kv: -kv[1][0]):
        print(f"           {stage:14s} wall {w:7.2f} s  cpu {c:7.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000, help="photos in the first build (2,000; 10,000 for the record)")
    ap.add_argument("--added", type=int, default=20)
    ap.add_argument("--removed", type=int, default=20)
    ap.add_argument("--noop-runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rev", default="HEAD", help="commit whose code and pipeline are measured (e.g. main)")
    ap.add_argument("--verify", action="store_true", help="clean build of the final set in a 2nd copy; compare bytes")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies and print where they are")
    args = ap.parse_args()
    if not (BIN / "dvc").is_file():
        sys.exit(f"{BIN / 'dvc'} not found: run `make install` first")

    t0 = time.perf_counter()
    photos = make_photos(args.items + args.added, args.seed)
    base, extra = photos[: args.items], photos[args.items :]
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-repro-scale-"))
    bindir, log = tmp / "bin", tmp / "commands.log"
    write_wrapper(bindir, log)
    root = fresh_copy(args.rev, tmp / "repo", base)
    where = subprocess.run([str(BIN / "python"), "-c", "import pipeline; print(pipeline.__file__)"], cwd=root,
                           env=env_for(bindir, root), capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(root)):
        sys.exit(f"the clone's stages would import pipeline from {where}, not from {root}")
    print(f"rev {args.rev}: {args.items} photos ({SIDE} px) + clone in {time.perf_counter() - t0:.1f} s at {root}", flush=True)

    runs: list[Run] = [repro("full", root, bindir, log)]
    report(runs[-1])
    noops = [repro("no-op", root, bindir, log) for _ in range(args.noop_runs)]
    noop = sorted(noops, key=lambda r: r.wall)[len(noops) // 2]
    report(noop)
    raw = root / "data" / "raw" / "images"
    for i, blob in enumerate(extra):
        (raw / f"p{args.items + i:06d}.jpg").write_bytes(blob)
    runs.append(repro(f"+{args.added}", root, bindir, log))
    report(runs[-1])
    removed = sorted(raw.glob("*.jpg"))[: args.removed]
    for p in removed:
        p.unlink()
    runs.append(repro(f"-{args.removed}", root, bindir, log))
    report(runs[-1])
    full, add, rem = runs
    n_final = args.items + args.added - args.removed
    ws_files, cache_files = count_files(root)
    per_item_ws, per_item_cache = ws_files / n_final, cache_files / n_final
    print(f"files: workspace {ws_files} ({per_item_ws:.1f}/item), .dvc/cache {cache_files} ({per_item_cache:.1f}/item)")

    identical = -1
    if args.verify:
        final = [p.read_bytes() for p in sorted(raw.glob("*.jpg"))]
        clean = fresh_copy(args.rev, tmp / "clean", [])
        craw = clean / "data" / "raw" / "images"
        for p, blob in zip(sorted(raw.glob("*.jpg")), final, strict=True):
            (craw / p.name).write_bytes(blob)
        report(repro("clean", clean, bindir, log))
        diffs = []
        for folder in ("data",):
            a, b = tree_digest(root, folder), tree_digest(clean, folder)
            diffs += sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        identical = int(not diffs)
        print(f"clean build == incremental build: {bool(identical)}" + (f" (differ: {diffs[:5]})" if diffs else ""))

    frac = add.wall / full.wall
    failures = []
    tf = target_add_fraction(args.items)
    if frac > tf:
        failures.append(f"+{args.added} photos cost {frac:.2%} of the full build (target <= {tf:.0%})")
    if add.wall > TARGET_ADD_S:
        failures.append(f"+{args.added} photos took {add.wall:.1f} s (target <= {TARGET_ADD_S:.0f} s)")
    if noop.wall > TARGET_NOOP_S:
        failures.append(f"no-op repro took {noop.wall:.1f} s (target <= {TARGET_NOOP_S:.0f} s)")
    if per_item_ws + per_item_cache > TARGET_FILES_PER_ITEM:
        failures.append(f"{per_item_ws + per_item_cache:.1f} files per item (target <= {TARGET_FILES_PER_ITEM:.0f})")
    if identical == 0:
        failures.append("the clean build differs from the incremental one")
    if args.keep:
        print(f"copies kept under {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    by_stage: dict[str, float] = defaultdict(float)
    for stage, (w, _c) in add.commands.items():
        by_stage[stage] += w
    finish(
        {
            "rev": args.rev, "items": args.items, "full_s": full.wall, "full_cpu_s": full.cpu, "noop_s": noop.wall,
            "add_s": add.wall, "add_fraction": frac, "add_cpu_s": add.cpu, "add_dvc_own_s": add.wall - add.command_wall,
            "remove_s": rem.wall, "files_per_item_workspace": per_item_ws, "files_per_item_cache": per_item_cache,
            "peak_mb": max(r.peak_mb for r in [*runs, *noops]), "clean_equals_incremental": identical,
        },
        failures,
    )


if __name__ == "__main__":
    main()
