"""What runs one item: the types a stage hands the runner and the worker-side :func:`execute_item`.

Shared by every executor (the inline and local ones in :mod:`pipeline.core.runner`, the Ray one in
:mod:`pipeline.core.executors.ray`), so executors import this module and never the runner (no cycle).
An item's **fingerprint** = hash(stage name, manual version salt, code digest of the stage's import closure
(:mod:`pipeline.core.code_version`), params digest, content digests of the item's input files, its ``data``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipeline.core import io
from pipeline.core.code_version import code_digest
from pipeline.core.hashing import sha256_file, sha256_text
from pipeline.core.params import params_digest
from pipeline.core.secrets import redact

log = logging.getLogger(__name__)

P = TypeVar("P")

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class FileInput:
    """An input file of an item. ``digest`` may be given when the content hash is already known
    (e.g. the item id of a source image); otherwise the runner hashes the file. Inside ``process`` it is
    always set (SHA-256 hex of the bytes), so a stage never needs to hash an input again."""

    path: Path
    digest: str | None = None


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: a filename-safe ``key`` unique in the stage, named input files (fingerprinted by
    content, not by path), and JSON-able ``data`` that is both passed to ``process`` and fingerprinted."""

    key: str
    inputs: Mapping[str, FileInput] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key):
            raise ValueError(f"work item key {self.key!r} is not filename-safe ([A-Za-z0-9_.-], <=128 chars)")

    def input(self, name: str) -> Path:
        """Path of input ``name`` (KeyError names the item when absent)."""
        try:
            return Path(self.inputs[name].path)
        except KeyError:
            raise KeyError(f"item {self.key}: no input named {name!r} (has {sorted(self.inputs)})") from None


@dataclass(frozen=True)
class ItemResult:
    """What ``process`` returns: output files (path relative to the stage root -> bytes) and one table
    record (JSON-able scalars) that the stage assembles into its table."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    record: Mapping[str, Any] = field(default_factory=dict)


ProcessFn = Callable[[WorkItem, Any, Any], ItemResult]
SetupFn = Callable[[Any], Any]


@dataclass(frozen=True)
class Stage(Generic[P]):
    """A stage as the runner sees it.

    ``process(work, params, resource) -> ItemResult`` must be a module-level function (it is pickled to
    worker processes / Ray actors). ``setup(params) -> resource`` runs once per worker (load a model there,
    never at import). ``warmup(params)`` runs once in the driver before any worker starts, and only when
    there is work to do (e.g. fill a JIT compilation cache that every worker then loads instead of
    compiling). ``output_dirs`` are folders under ``root`` that only this stage writes: files in them that no
    current item produced are swept.

    Code version: the runner fills ``code`` (:meth:`with_code`) with the digest of the import closure of the
    modules of ``process`` and ``setup`` plus ``code_modules`` (modules a registry loads by name, chosen by
    params, e.g. the selected pre-annotator), so any change to code the items can run re-computes them.
    ``version`` is an optional manual salt for what the code digest cannot see (normally empty).
    """

    name: str
    params: P
    root: Path
    process: ProcessFn
    state_root: Path
    setup: SetupFn | None = None
    output_dirs: tuple[str, ...] = ()
    gpu: bool = False
    warmup: Callable[[Any], None] | None = None
    version: str = ""
    code_modules: tuple[str, ...] = ()
    code: str = ""

    def code_roots(self) -> tuple[str, ...]:
        """Modules whose import closure is this stage's code: ``process``'s, ``setup``'s and ``code_modules``."""
        mods = [getattr(fn, "__module__", "") for fn in (self.process, self.setup, self.warmup) if fn is not None]
        return tuple(sorted({m for m in mods if m} | set(self.code_modules)))

    def with_code(self) -> Stage[P]:
        """This stage with ``code`` set to the digest of its code (computed once, in the driver)."""
        return self if self.code else replace(self, code=code_digest(self.code_roots()))

    @property
    def state_dir(self) -> Path:
        return Path(self.state_root) / self.name

    def static_key(self) -> str:
        return sha256_text(f"{self.name}\0{self.version}\0{self.code}\0{params_digest(self.params)}")


@dataclass(frozen=True)
class ItemOutcome:
    """Summary of one item after a run (returned by workers; small and picklable)."""

    key: str
    status: str  # "ok" | "failed"
    error: str
    seconds: float
    computed: bool
    fatal: bool = False
    state: Mapping[str, Any] | None = None  # the record the driver stores (None: store nothing)


# --------------------------------------------------------------------------- hashing


hash_file = sha256_file
"""SHA-256 hex digest of a file's bytes (:func:`pipeline.core.hashing.sha256_file`)."""


def stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def fingerprint(static_key: str, digests: Mapping[str, str], data: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"static": static_key, "inputs": dict(sorted(digests.items())), "data": data},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return sha256_text(blob)


# --------------------------------------------------------------------------- worker side

_RESOURCE: dict[str, Any] = {}


def resource_for(stage: Stage[Any]) -> Any:
    """The stage's per-worker resource, built once per (stage, params, code version) in this process."""
    if stage.setup is None:
        return None
    key = f"{stage.name}:{stage.static_key()}"
    if key not in _RESOURCE:
        for old in [k for k in _RESOURCE if k.startswith(f"{stage.name}:")]:
            del _RESOURCE[old]  # params changed: drop the old model before loading the new one
        _RESOURCE[key] = stage.setup(stage.params)
    return _RESOURCE[key]


def _safe_rel(stage: Stage[Any], rel: str) -> str:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"stage {stage.name} returned an output path outside its root: {rel!r}")
    return p.as_posix()


def execute_item(stage: Stage[Any], work: WorkItem) -> ItemOutcome:
    """Worker-side: hash inputs, run ``process``, write outputs atomically; the item's state record goes back
    in the outcome (the driver removes outputs the item no longer produces and stores the record).

    Exceptions in ``process`` become a failed outcome naming the item; a failing ``setup`` is fatal.
    """
    t0 = time.perf_counter()
    static = stage.static_key()
    inputs: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    error = ""
    status = "ok"
    files: dict[str, bytes] = {}
    record: Mapping[str, Any] = {}
    try:
        for name, fin in sorted(work.inputs.items()):
            size, mtime = stat(fin.path)
            digest = fin.digest or hash_file(fin.path)
            digests[name] = digest
            inputs[name] = {"path": str(fin.path), "size": size, "mtime_ns": mtime, "digest": digest}
    except OSError as exc:
        status, error = "failed", f"input missing or unreadable: {exc.filename or ''}: {exc.strerror or exc}"
    fp = fingerprint(static, digests, work.data) if status == "ok" else ""
    if status == "ok":
        try:
            resource = resource_for(stage)
        except Exception as exc:
            return ItemOutcome(work.key, "failed", redact(f"setup failed: {type(exc).__name__}: {exc}"),
                               time.perf_counter() - t0, True, fatal=True)
        try:
            # process sees every input's content digest (hashed once, here): FileInput.digest is always set
            hashed = {n: FileInput(Path(f.path), digests[n]) for n, f in work.inputs.items()}
            result = stage.process(replace(work, inputs=hashed), stage.params, resource)
            files = {_safe_rel(stage, k): v for k, v in result.files.items()}
            record = dict(result.record)
        except Exception as exc:  # failures are data: recorded per item
            status, error = "failed", redact(f"{type(exc).__name__}: {exc}")  # reports never hold a secret
            files, record = {}, {}
    root = Path(stage.root)
    for rel in sorted(files):
        io.write_bytes(root / rel, files[rel])
    seconds = time.perf_counter() - t0
    state = {
        "key": work.key,
        "static": static,
        "fingerprint": fp,
        "inputs": inputs,
        "outputs": sorted(files),
        "digests": {rel: [hashlib.sha256(files[rel]).hexdigest(), len(files[rel])] for rel in sorted(files)},
        "record": record,
        "status": status,
        "error": error,
        "seconds": round(seconds, 6),
    }
    return ItemOutcome(work.key, status, error, seconds, True, state=state)


def limit_threads(threads: int) -> None:
    """Keep each worker from spawning a thread per core (N workers x N threads thrash)."""
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    # OpenCV's and (when the parent imported it) torch's thread counts are set by the parent just before
    # forking (see LocalExecutor.run): changing them in a forked child whose parent already used those thread
    # pools can deadlock. A child that imports torch itself reads OMP_NUM_THREADS set above.
