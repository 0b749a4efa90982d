"""The per-item incremental executor every stage runs on.

A stage hands the runner a :class:`Stage` (name, frozen params, a module-level ``process`` function)
and an iterable of :class:`WorkItem` (both defined in :mod:`pipeline.core.work`). For each item the runner
computes a **fingerprint** = hash(stage name, code digest of the stage's import closure
(:mod:`pipeline.core.code_version`: no hand-bumped version), params digest, content digests of the item's
input files, the item's fingerprinted ``data``) and recomputes the item only when its fingerprint changed or
an output it recorded is missing. Everything else is reused.

Guarantees:

- **Atomic, resumable.** Each output file is written to a temporary file and renamed by the worker; the
  item's state record (fingerprint, outputs, table record) travels back in its outcome and the driver
  commits it last (:mod:`pipeline.core.state_store`: one SQLite database per stage, one transaction per item).
  A run killed at any moment (SIGKILL included) leaves no half-written output and the next run resumes,
  recomputing only items without a committed state.
- **Failures are data.** An exception in ``process`` marks that item failed with ``"Type: message"``
  in the report; other items go on. The stage raises :class:`StageFailed` only when the failed fraction
  exceeds ``runner.max_failure_fraction`` (after writing its report).
- **Deterministic.** Results are keyed and sorted by item key, never by completion order, so outputs are
  byte-identical whatever the worker count, executor, and whether the run was incremental or clean.
- **Clean.** Outputs of items that disappeared are deleted; files in the stage's declared output folders
  that no current item produced (old leftovers, temporary files of a killed run) are swept.
- **Indexed.** ``<root>/index.parquet`` lists every output file of the current items (key, path, sha256,
  bytes), sorted by path. Downstream DVC stages depend on this small file (and on the stage's table) instead
  of the whole output folder, so DVC no longer walks thousands of files to learn what the index already says
  (docs/repro-scale.md).

- **Shortcut when nothing changed.** A stage that names its ``upstream`` files (the upstream stages' tables and
  ``index.parquet``, every input file that no index lists) gets a stage-level check first: when the key of this
  run (code + params, the work items, the SHA-256 of every upstream file) equals the key recorded at the end of
  the stage's last complete run, its own index is the one that run wrote and every file it lists is still there,
  the per-item reuse check, the stale-item pass, the sweep and the index rewrite are all skipped; the result
  is read back from the state store in one scan (the same records, so the same bytes downstream). The key is
  only recorded when every input file without a known digest is covered by an upstream file; it is deleted
  before any other run starts work, so a killed run never leaves a shortcut behind.

State lives outside DVC-tracked outputs (``paths.state/<stage>/items.sqlite``), like DVC's own cache: it
holds file stats (so unchanged inputs are not re-hashed) and timings, which must not leak into outputs.

Executors: ``inline`` (in-process; used for one worker), ``local`` (a process pool) and ``ray``
(:mod:`pipeline.core.executors.ray`). All run the same :func:`execute_item` on the worker side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.core import io
from pipeline.core.params import RunnerParams
from pipeline.core.state_store import StateStore
from pipeline.core.work import (
    FileInput,
    ItemOutcome,
    ItemResult,
    ProcessFn,
    SetupFn,
    Stage,
    WorkItem,
    execute_item,
    fingerprint,
    hash_file,
    limit_threads,
    stat,
)

__all__ = [  # the stage-facing names, importable from here as before the split into pipeline.core.work
    "FileInput", "ItemOutcome", "ItemResult", "ProcessFn", "SetupFailed", "SetupFn", "Stage", "StageFailed",
    "StageResult", "WorkItem", "execute_item", "hash_file", "run_stage",
]

log = logging.getLogger(__name__)

INDEX_NAME = "index.parquet"
INDEX_COLUMNS = ("key", "path", "sha256", "bytes")
LAST_RUN = "last_run"


class StageFailed(RuntimeError):
    """Raised when a stage's failure fraction exceeds ``runner.max_failure_fraction``."""


class SetupFailed(RuntimeError):
    """A stage's per-worker ``setup`` (e.g. loading a model) failed: nothing can be processed."""


@dataclass(frozen=True)
class StageResult:
    """What :func:`run_stage` returns: records of the ok items (sorted by key) and every outcome."""

    stage: str
    records: tuple[tuple[str, Mapping[str, Any]], ...]
    outcomes: tuple[ItemOutcome, ...]

    @property
    def n_items(self) -> int:
        return len(self.outcomes)

    @property
    def n_failed(self) -> int:
        return sum(1 for o in self.outcomes if o.status == "failed")

    @property
    def n_computed(self) -> int:
        return sum(1 for o in self.outcomes if o.computed)

    @property
    def failures(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def record_map(self) -> dict[str, Mapping[str, Any]]:
        return dict(self.records)

    def frame(self, columns: Sequence[str]) -> Any:
        """The ok items' records as a pandas DataFrame with exactly ``columns``, sorted by key
        (an empty table still has its columns, so readers never special-case it)."""
        import pandas as pd

        rows = [{c: rec.get(c) for c in columns} for _key, rec in self.records]
        return pd.DataFrame(rows, columns=list(columns))


# --------------------------------------------------------------------------- reuse


def _check_reusable(
    stage: Stage[Any], work: WorkItem, static: str, retry_failed: bool, state: dict[str, Any] | None, store: StateStore
) -> bool:
    """True when ``work`` can be reused as is given its stored ``state``. Updates stats in place (and in
    ``store``) when a file was touched but its content is unchanged."""
    if state is None or state.get("static") != static:
        return False
    if state.get("status") == "failed" and retry_failed:
        return False
    recorded: dict[str, Any] = state.get("inputs", {})
    if set(recorded) != set(work.inputs):
        return False
    touched = False
    digests: dict[str, str] = {}
    for name, fin in work.inputs.items():
        rec = recorded[name]
        if fin.digest is not None:
            digests[name] = fin.digest
            continue
        try:
            size, mtime = stat(fin.path)
        except OSError:
            return False
        if rec.get("size") == size and rec.get("mtime_ns") == mtime:
            digests[name] = rec["digest"]
        else:
            try:
                digests[name] = hash_file(fin.path)
            except OSError:
                return False
            rec.update(size=size, mtime_ns=mtime, digest=digests[name])
            touched = True
    if fingerprint(static, digests, work.data) != state.get("fingerprint"):
        return False
    root = Path(stage.root)
    for rel in state.get("outputs", []):
        if not (root / rel).is_file():
            return False
    if touched:
        store.put(work.key, state)
    return True


# --------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Runs :func:`execute_item` over work items, yielding outcomes in any order."""

    def run(self, stage: Stage[Any], works: Sequence[WorkItem]) -> Iterator[ItemOutcome]: ...


class InlineExecutor:
    """Everything in this process (one worker; also the easiest to debug)."""

    def run(self, stage: Stage[Any], works: Sequence[WorkItem]) -> Iterator[ItemOutcome]:
        for work in works:
            yield execute_item(stage, work)


_POOL_STAGE: list[Stage[Any]] = []


def _pool_init(stage: Stage[Any], threads: int) -> None:
    limit_threads(threads)
    _POOL_STAGE[:] = [stage]


def _pool_call(work: WorkItem) -> ItemOutcome:
    return execute_item(_POOL_STAGE[0], work)


class LocalExecutor:
    """A local process pool (``multiprocessing``) with ``workers`` processes."""

    def __init__(self, workers: int, start_method: str = "fork", chunksize: int = 1, threads_per_worker: int = 1):
        self.workers = workers
        self.start_method = start_method
        self.chunksize = chunksize
        self.threads = threads_per_worker

    def run(self, stage: Stage[Any], works: Sequence[WorkItem]) -> Iterator[ItemOutcome]:
        import multiprocessing as mp

        import cv2

        ctx = mp.get_context(self.start_method)
        parent_threads = cv2.getNumThreads()
        cv2.setNumThreads(self.threads)  # inherited by forked workers; restored below
        torch = sys.modules.get("torch")
        torch_threads = torch.get_num_threads() if torch is not None else 0
        if torch is not None:
            torch.set_num_threads(self.threads)
        try:
            with ctx.Pool(self.workers, initializer=_pool_init, initargs=(stage, self.threads)) as pool:
                try:
                    yield from pool.imap_unordered(_pool_call, works, chunksize=self.chunksize)
                except BaseException:
                    pool.terminate()
                    raise
        finally:
            cv2.setNumThreads(parent_threads)
            if torch is not None:
                torch.set_num_threads(torch_threads)


def make_executor(runner: RunnerParams, n_todo: int) -> Executor:
    """The executor that ``runner`` asks for (inline when one worker or at most one item is left)."""
    if runner.executor == "ray":
        from pipeline.core.executors.ray import RayExecutor

        return RayExecutor(runner)
    workers = min(runner.resolved_workers(), max(n_todo, 1))
    if workers <= 1:
        return InlineExecutor()
    return LocalExecutor(workers, runner.start_method, runner.chunksize)


# --------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar on a terminal; periodic log lines otherwise."""

    def __init__(self, stage: str, total: int, enabled: bool) -> None:
        self.stage, self.total, self.done, self.failed = stage, total, 0, 0
        self._last_log = time.monotonic()
        self._bar: Any = None
        if enabled and total > 0 and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"[bold]{stage}[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[failed]} failed"), transient=False,
            )
            self._task = self._bar.add_task(stage, total=total, failed=0)
            self._bar.start()

    def advance(self, outcome: ItemOutcome) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=self.failed)
        elif time.monotonic() - self._last_log > 10 or self.done == self.total:
            self._last_log = time.monotonic()
            log.info("%s: %d/%d items computed (%d failed)", self.stage, self.done, self.total, self.failed)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- driver


def run_stage(
    stage: Stage[Any],
    works: Iterable[WorkItem],
    runner: RunnerParams,
    reports_dir: Path | None = None,
    retry_failed: bool = False,
    executor: Executor | None = None,
    upstream: Sequence[Path] = (),
) -> StageResult:
    """Run ``stage`` over ``works`` incrementally (see the module docstring).

    ``upstream``: the small files that determine the stage's inputs (upstream tables and ``index.parquet``
    files, other input files no index lists); enables the stage-level shortcut when nothing changed.
    Writes ``reports_dir/<stage>.parquet`` (one row per item: key, status, error, seconds) and
    ``reports_dir/<stage>.json`` (counts; declared as DVC metrics) when ``reports_dir`` is given, then
    raises :class:`StageFailed` if too many items failed.
    """
    stage = stage.with_code()
    with StateStore(stage.state_dir) as store:
        result = _run_with_store(stage, works, runner, store, retry_failed, executor, upstream)
    if reports_dir is not None:
        write_report(result, Path(reports_dir))
    _check_failures(result, runner)
    return result


def _run_with_store(
    stage: Stage[Any],
    works: Iterable[WorkItem],
    runner: RunnerParams,
    store: StateStore,
    retry_failed: bool,
    executor: Executor | None,
    upstream: Sequence[Path] = (),
) -> StageResult:
    static = stage.static_key()
    works = list(works)
    last = store.get_meta(LAST_RUN)
    run_key = _run_key(static, works, upstream, last) if upstream else None
    if run_key is not None and not retry_failed and last is not None:
        shortcut = _shortcut(stage, store, works, run_key, last)
        if shortcut is not None:
            return shortcut
    if last is not None:
        store.delete_meta(LAST_RUN)  # committed before any work: a killed run leaves no shortcut behind
        store.commit()
    seen: set[str] = set()
    todo: list[WorkItem] = []
    old_outputs: dict[str, list[str]] = {}
    outcomes: dict[str, ItemOutcome] = {}
    for work in works:
        if work.key in seen:
            raise ValueError(f"stage {stage.name}: duplicate work item key {work.key!r}")
        seen.add(work.key)
        state = store.get(work.key)
        if state is not None and _check_reusable(stage, work, static, retry_failed, state, store):
            outcomes[work.key] = ItemOutcome(
                work.key, state["status"], state.get("error", ""), float(state.get("seconds", 0.0)), False
            )
        else:
            todo.append(work)
            if state is not None:
                old_outputs[work.key] = list(state.get("outputs", []))
    store.commit()
    n_reused = len(outcomes)
    log.info("%s: %d items, %d up to date, %d to compute", stage.name, len(seen), n_reused, len(todo))

    if todo:
        if stage.warmup is not None:
            stage.warmup(stage.params)
        ex = executor or make_executor(runner, len(todo))
        progress = _Progress(stage.name, len(todo), runner.progress)
        try:
            for outcome in ex.run(stage, todo):
                if outcome.fatal:
                    raise SetupFailed(f"stage {stage.name}: {outcome.error}")
                outcomes[outcome.key] = outcome
                _store_outcome(stage, store, outcome, old_outputs.get(outcome.key, ()))
                progress.advance(outcome)
        finally:
            progress.close()

    _remove_stale(stage, store, seen)
    records: list[tuple[str, Mapping[str, Any]]] = []
    produced: set[str] = set()
    index: list[tuple[str, str, str, int]] = []
    for key, state in store.items():
        if key not in seen:
            continue
        produced.update(state.get("outputs", []))
        index.extend(_index_rows(stage, key, state))
        if outcomes[key].status == "ok":
            records.append((key, state.get("record", {})))
    _sweep(stage, produced)
    write_index(Path(stage.root) / INDEX_NAME, index)
    if run_key is not None:
        store.put_meta(LAST_RUN, {"key": run_key["key"], "upstream": run_key["upstream"],
                                  "index": hash_file(Path(stage.root) / INDEX_NAME)})
        store.commit()
    return StageResult(stage.name, tuple(records), tuple(outcomes[k] for k in sorted(seen)))


# --------------------------------------------------------------------------- stage-level shortcut


def _stat_key(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _run_key(
    static: str, works: Sequence[WorkItem], upstream: Sequence[Path], last: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The key of this run (``{"key", "upstream"}``), or ``None`` when the shortcut cannot be trusted: an
    upstream file is missing, or an input file without a known digest is neither an upstream file nor listed
    in an upstream ``index.parquet``. Upstream files are re-hashed only when their stat changed."""
    cached: Mapping[str, Any] = (last or {}).get("upstream") or {}
    ups: dict[str, list[Any]] = {}
    known: set[str] = set()
    for p in sorted({os.path.normpath(u) for u in upstream}):
        try:
            st = _stat_key(Path(p))
        except OSError:
            return None
        old = cached.get(p)
        sha = old[3] if isinstance(old, list) and len(old) == 4 and old[:3] == st else hash_file(Path(p))
        ups[p] = [*st, sha]
        known.add(p)
        if Path(p).name == INDEX_NAME:
            root = Path(p).parent
            known.update(os.path.normpath(root / rel) for rel in read_index(Path(p)))
    h = hashlib.sha256(static.encode())
    for work in sorted(works, key=lambda w: w.key):
        inputs = []
        for name, fin in sorted(work.inputs.items()):
            path = os.path.normpath(fin.path)
            if fin.digest is None and path not in known:
                return None
            inputs.append((name, path, fin.digest))
        h.update(json.dumps([work.key, inputs, work.data], sort_keys=True, separators=(",", ":"), default=str).encode())
        h.update(b"\n")
    for p, st in ups.items():
        h.update(f"{p}\0{st[3]}\n".encode())
    return {"key": h.hexdigest(), "upstream": ups}


def _shortcut(
    stage: Stage[Any], store: StateStore, works: Sequence[WorkItem], run_key: Mapping[str, Any],
    last: Mapping[str, Any],
) -> StageResult | None:
    """The last run's result when nothing changed since (see the module docstring), else ``None``."""
    if last.get("key") != run_key["key"]:
        return None
    root = Path(stage.root)
    index_path = root / INDEX_NAME
    try:
        if hash_file(index_path) != last.get("index"):
            return None
    except OSError:
        return None
    listed = set(read_index(index_path))
    # every output is still there, and nothing else sits in the output folders (names only: no stat per file)
    on_disk: set[str] = set()
    for parent in {Path(rel).parent for rel in listed}:
        try:
            on_disk.update((parent / name).as_posix() for name in os.listdir(root / parent))
        except OSError:
            return None
    if not listed <= on_disk:
        return None
    for sub in stage.output_dirs:
        for dirpath, _dirnames, filenames in os.walk(root / sub):
            rel_dir = Path(dirpath).relative_to(root)
            if any((rel_dir / f).as_posix() not in listed for f in filenames):
                return None
    if any(entry.is_file() and io.is_temp_file(Path(entry.name)) for entry in os.scandir(root)):
        return None
    keys = {w.key for w in works}
    outcomes: list[ItemOutcome] = []
    records: list[tuple[str, Mapping[str, Any]]] = []
    for key, state in store.items():
        if key not in keys:
            return None
        outcomes.append(ItemOutcome(key, state["status"], state.get("error", ""), float(state.get("seconds", 0.0)), False))
        if state["status"] == "ok":
            records.append((key, state.get("record", {})))
    if len(outcomes) != len(keys):
        return None
    log.info("%s: %d items, nothing changed since the last run (code, params, upstream files): reused as is",
             stage.name, len(keys))
    return StageResult(stage.name, tuple(records), tuple(outcomes))


def _index_rows(stage: Stage[Any], key: str, state: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """``(key, path, sha256, bytes)`` of an item's outputs (records of older runners lack digests: hashed here)."""
    digests: Mapping[str, Any] = state.get("digests") or {}
    rows = []
    for rel in state.get("outputs", []):
        if rel in digests:
            sha, size = digests[rel]
        else:
            full = Path(stage.root) / rel
            sha, size = hash_file(full), full.stat().st_size
        rows.append((key, rel, str(sha), int(size)))
    return rows


def write_index(path: Path, rows: Sequence[tuple[str, str, str, int]]) -> None:
    """The stage's output index (sorted by path; deterministic bytes), rewritten only when it changed."""
    import pandas as pd

    df = pd.DataFrame(sorted(rows, key=lambda r: r[1]), columns=list(INDEX_COLUMNS))
    if path.is_file():
        try:
            if io.read_parquet(path).equals(df):
                return
        except ValueError:
            pass
    io.write_parquet(path, df)


def read_index(path: Path) -> dict[str, str]:
    """``path -> sha256`` of a stage's output index (see :func:`write_index`)."""
    return {str(r["path"]): str(r["sha256"]) for r in io.read_records(path, ["path", "sha256"])}


def _store_outcome(stage: Stage[Any], store: StateStore, outcome: ItemOutcome, old_outputs: Iterable[str]) -> None:
    """Driver side, as each outcome arrives: remove outputs the item no longer produces, then commit its state
    (the last step: a run killed before it recomputes the item)."""
    if outcome.state is None:
        return
    new = set(outcome.state.get("outputs", []))
    root = Path(stage.root)
    for rel in old_outputs:
        if rel not in new:
            io.remove(root / rel)
    store.put(outcome.key, outcome.state)
    store.commit()


def _remove_stale(stage: Stage[Any], store: StateStore, current: set[str]) -> None:
    root = Path(stage.root)
    for key in store.all_keys():
        if key in current:
            continue
        state = store.get(key) or {}
        for rel in state.get("outputs", []):
            io.remove(root / rel)
        store.delete(key)
        log.info("%s: removed outputs of vanished item %s", stage.name, key)
    store.commit()


def _sweep(stage: Stage[Any], produced: set[str]) -> None:
    root = Path(stage.root)
    for sub in stage.output_dirs:
        base = root / sub
        if not base.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(base):
            for fname in filenames:
                full = Path(dirpath) / fname
                rel = full.relative_to(root).as_posix()
                if rel not in produced:
                    io.remove(full)
                    log.debug("%s: swept %s", stage.name, rel)
    if root.is_dir():
        for entry in os.scandir(root):
            if entry.is_file() and io.is_temp_file(Path(entry.name)):
                io.remove(Path(entry.path))


def write_report(result: StageResult, reports_dir: Path) -> None:
    """``<stage>.parquet`` (per item) and ``<stage>.json`` (counts) under ``reports_dir``."""
    import pandas as pd

    rows = [
        {"key": o.key, "status": o.status, "error": o.error, "seconds": round(o.seconds, 4)} for o in result.outcomes
    ]
    df = pd.DataFrame(rows, columns=["key", "status", "error", "seconds"])
    io.write_parquet(reports_dir / f"{result.stage}.parquet", df)
    io.write_json(reports_dir / f"{result.stage}.json", summary(result))


def summary(result: StageResult) -> dict[str, Any]:
    n = result.n_items
    return {
        "items": n,
        "ok": n - result.n_failed,
        "failed": result.n_failed,
        "failure_fraction": round(result.n_failed / n, 6) if n else 0.0,
    }


def _check_failures(result: StageResult, runner: RunnerParams) -> None:
    n = result.n_items
    if not n:
        return
    frac = result.n_failed / n
    for o in result.failures[:20]:
        log.warning("%s: item %s failed: %s", result.stage, o.key, o.error)
    if result.n_failed > 20:
        log.warning("%s: ... and %d more failures (see the stage report)", result.stage, result.n_failed - 20)
    if frac > runner.max_failure_fraction:
        raise StageFailed(
            f"stage {result.stage}: {result.n_failed}/{n} items failed ({frac:.1%}), above "
            f"runner.max_failure_fraction={runner.max_failure_fraction:.1%}; see reports/{result.stage}.parquet"
        )
