"""``params.yaml`` sections -> frozen, validated dataclasses.

Every stage owns one section of ``params.yaml`` and declares a frozen dataclass for it.
:func:`load_section` builds that dataclass from the YAML mapping, recursing into nested
dataclasses, converting lists to tuples and rejecting unknown or mistyped keys with an
error that names the file, the key path and the bad value.

Paths live in their own top-level ``paths`` section (:class:`Paths`) so that moving data
around never changes a stage's fingerprint; the algorithm parameters of a stage do.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """A ``params.yaml`` problem: missing section, unknown key, wrong type or value."""


_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it
_parsed: dict[tuple[str, int, int], dict[str, Any]] = {}

# Top-level sections of params.yaml. Any other name is refused (``trimapp:`` must not be silently ignored): a
# module that adds a section adds its name here (tests/harden/test_params_checks.py checks the repo's file).
KNOWN_SECTIONS: frozenset[str] = frozenset({
    "paths", "runner", "ingest", "preannotate", "annotation", "curate", "qa", "trimap", "matte", "composite",
    "export", "train", "evaluate", "review", "refine", "assist", "models", "http", "benchmarks",
})

# The largest value any size-like setting (a key ending in _px, _side, _size, or named resolution) may take:
# larger values are typos (a 100,000 px side is a 10 GP image), refused before any work starts.
MAX_SIZE_SETTING = 65_536


@dataclass(frozen=True)
class Bound:
    """Allowed range of a numeric setting; ``None`` = unbounded on that side, ``strict`` = open interval."""

    low: float | None = None
    high: float | None = None
    strict_low: bool = False

    def check(self, value: float) -> str:
        """An explanation when ``value`` is outside the range, else ""."""
        if self.low is not None and (value <= self.low if self.strict_low else value < self.low):
            return f"must be {'>' if self.strict_low else '>='} {self.low:g}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high:g}"
        return ""


# Ranges of settings whose out-of-range values otherwise surface late and cryptically (a NaN or negative
# epsilon as "Factor is exactly singular"); keyed by ``section.key`` (tuple items share their key's bound).
BOUNDS: dict[str, Bound] = {
    "matte.epsilon": Bound(0.0, 1.0, strict_low=True),
    "matte.foreground_regularization": Bound(0.0, 1.0),
    "matte.rtol": Bound(0.0, 1.0, strict_low=True),
    "trimap.texture.threshold": Bound(0.0, 1.0),
    "train.lr": Bound(0.0, 10.0, strict_low=True),
    "train.weight_decay": Bound(0.0, 1.0),
    "composite.procedural_size": Bound(1, 16_384),
    "composite.scale_range": Bound(0.0, 10.0, strict_low=True),
    "ingest.max_pixels": Bound(1, 1_000_000_000),
    "ingest.min_side": Bound(1, MAX_SIZE_SETTING),
}


def check_value(key: str, value: Any) -> str:
    """Why the numeric setting ``key`` (``section.key``, tuple indices allowed) cannot be ``value``, or ""."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if not math.isfinite(value):
        return f"{value!r} is not a finite number"
    base = re.sub(r"\[\d+\]", "", key)
    bound = BOUNDS.get(base)
    if bound is not None:
        why = bound.check(value)
        if why:
            return f"{value!r} is out of range: {why}"
    name = base.rsplit(".", 1)[-1]
    if (isinstance(value, int) and (name.endswith(("_px", "_side", "_size")) or name == "resolution")
            and value > MAX_SIZE_SETTING):
        return f"{value!r} is absurdly large for a size (at most {MAX_SIZE_SETTING:,})"
    return ""


def _split_where(where: str) -> tuple[str, str]:
    """``"params.yaml:matte.epsilon"`` -> ``("params.yaml", "matte.epsilon")``."""
    file, sep, key = where.rpartition(":")
    return (file, key) if sep else ("", where)


def _check_duplicates(node: Any, path: Path, keys: tuple[str, ...] = ()) -> None:
    """Refuse a mapping that repeats a key (YAML would keep only the last one, silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join((*keys, key))
                raise ParamsError(f"{path}:{dotted}: duplicate key (lines {seen[key]} and {line}); YAML would "
                                  f"silently keep only the last one, so delete one of them")
            seen[key] = line
            _check_duplicates(value_node, path, (*keys, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(item, path, (*keys[:-1], f"{keys[-1]}[{i}]") if keys else (f"[{i}]",))


def _load_yaml(text: str, path: Path) -> Any:
    """Parse ``text`` once (libyaml when available), refusing duplicate keys before building Python objects."""
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


# Keys that once existed: a params file that still sets one gets this message instead of "unknown key".
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("export", "near_duplicate_max_distance"): (
        "removed: near-duplicates have one hash and one threshold, `qa.phash_max_distance`; curate writes each "
        "item's `dup_group` and export keeps every group in one split. Delete this key (and set "
        "qa.phash_max_distance if you need a different distance)"
    ),
}


def check_sections(data: dict[str, Any], path: Path) -> None:
    """Refuse unknown top-level sections, naming the closest known one, and retired keys, naming their successor."""
    for name in sorted(str(k) for k in data):
        if name not in KNOWN_SECTIONS:
            close = difflib.get_close_matches(name, sorted(KNOWN_SECTIONS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known sections: {', '.join(sorted(KNOWN_SECTIONS))}"
            raise ParamsError(f"{path}:{name}: unknown section; {hint}")
    for (section, key), message in RETIRED_KEYS.items():
        body = data.get(section)
        if isinstance(body, dict) and key in body:
            raise ParamsError(f"{path}:{section}.{key}: {message}")


def read_params_file(path: Path) -> dict[str, Any]:
    """Read a params YAML file into a dict; a clear :class:`ParamsError` when it cannot.

    Parsed once per process and file version (path, mtime, size); every call returns its own copy."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the project root or pass --params)")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _parsed:
        try:
            data = _load_yaml(path.read_text(encoding="utf-8"), path)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
        _parsed[key] = data
    return copy.deepcopy(_parsed[key])


def load_section(path: Path, section: str, cls: type[T]) -> T:
    """Build the frozen dataclass ``cls`` from section ``section`` of the params file ``path``.

    A missing section means "all defaults". Unknown keys are errors (typos must not pass silently).
    """
    data = read_params_file(path)
    check_sections(data, path)
    raw = data.get(section, {})
    if raw is None:
        raw = {}
    return from_mapping(cls, raw, where=f"{path}:{section}")


def from_mapping(cls: type[T], raw: Any, where: str) -> T:
    """Construct dataclass ``cls`` from a plain mapping, validating keys and types."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
        _check_bounds(kwargs[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{where}: {exc}") from exc


def _check_bounds(value: Any, where: str) -> None:
    items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
    for i, v in items:
        at = where if i is None else f"{where}[{i}]"
        why = check_value(_split_where(at)[1], v)
        if why:
            raise ParamsError(f"{at}: {why}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value if value is not None else {}, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ParamsError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ParamsError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def to_jsonable(obj: Any) -> Any:
    """Plain JSON-able form of a params dataclass (paths as strings, tuples as lists)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj


def params_digest(obj: Any) -> str:
    """Stable SHA-256 hex digest of a params dataclass (canonical JSON)."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- shared sections


@dataclass(frozen=True)
class RayParams:
    """Where the Ray cluster is (only read when ``runner.executor`` is ``ray``)."""

    address: str = "auto"
    num_cpus_per_task: float = 1.0
    num_gpus_per_task: float = 0.0
    max_retries: int = 3


@dataclass(frozen=True)
class RunnerParams:
    """How the per-item runner executes a stage (section ``runner``).

    ``workers``: worker processes; 0 means one per CPU core. ``max_failure_fraction``: the stage
    exits non-zero when more than this fraction of its items failed.
    """

    executor: Literal["local", "ray"] = "local"
    workers: int = 0
    max_failure_fraction: float = 0.1
    chunksize: int = 1
    start_method: Literal["fork", "forkserver", "spawn"] = "fork"
    progress: bool = True
    ray: RayParams = field(default_factory=RayParams)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            raise ValueError(f"max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
        if self.chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {self.chunksize}")

    def resolved_workers(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class Paths:
    """Every data location of the pipeline (section ``paths``), relative to the project root.

    ``dvc.yaml`` reads the same values through templating (``${paths.raw}``), so a stage's
    declared deps/outs and the paths it really uses can never disagree.
    """

    raw: Path = Path("data/raw/images")
    manifest: Path = Path("data/ingest/manifest.parquet")
    ingest: Path = Path("data/ingest")
    preannotate: Path = Path("data/preannotate")
    sam_cache: Path = Path("data/sam_cache")
    annotation: Path = Path("data/annotation")
    corrections: Path = Path("data/corrections")
    decisions: Path = Path("data/review/decisions.parquet")
    review_dir: Path = Path("data/review/db")
    curated: Path = Path("data/curated")
    trimap: Path = Path("data/trimap")
    matte: Path = Path("data/matte")
    backgrounds: Path = Path("data/backgrounds")
    composite: Path = Path("data/composite")
    export: Path = Path("data/export")
    models: Path = Path("models")
    train: Path = Path("models/train")
    promoted: Path = Path("models/promoted")
    evaluate: Path = Path("data/evaluate")
    reports: Path = Path("reports")
    metrics: Path = Path("metrics")
    state: Path = Path(".maskloop/state")

    @property
    def review_db(self) -> Path:
        """The reviewers' SQLite database (untracked; ``review_dir`` is a dep of the ``decisions`` stage, so
        DVC re-exports exactly when the database or its journal changed)."""
        return Path(self.review_dir) / "decisions.sqlite"


def load_paths(path: Path) -> Paths:
    return load_section(path, "paths", Paths)


def load_runner(path: Path) -> RunnerParams:
    return load_section(path, "runner", RunnerParams)


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` with a type-preserving signature."""
    return typing.cast(T, dataclasses.replace(obj, **changes))  # type: ignore[type-var]
