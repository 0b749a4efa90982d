"""Shared helpers for benchmark scripts: data location, peak memory, the one-line result."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data() -> Path:
    if not (SHARED_DATA / "ecssd-dev").is_dir():
        sys.exit(f"benchmark needs the real evaluation data at {SHARED_DATA} (set MASKLOOP_SHARED_DATA)")
    return SHARED_DATA


def tree_peak_rss_mb(pid: int | None = None) -> float:
    """Current resident memory (MB) of a process and all its children (psutil)."""
    import psutil

    proc = psutil.Process(pid or os.getpid())
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 1e6


def finish(figures: dict[str, object], failures: list[str]) -> None:
    """Print the ONE closing ``name=value`` line and exit non-zero when a target was missed."""
    for f in failures:
        print(f"TARGET MISSED: {f}", file=sys.stderr)
    print(" ".join(f"{k}={_fmt(v)}" for k, v in figures.items()))
    sys.exit(1 if failures else 0)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
