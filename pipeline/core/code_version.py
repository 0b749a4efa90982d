"""Code versions from the source itself: the import closure of a module and a digest of that closure's code.

A stage's outputs depend on the code its ``process`` can run: the stage module and every project module it
imports, directly or not, at module level or inside a function. :func:`import_closure` finds those modules by
reading the source (``ast``; nothing is imported), and :func:`code_digest` hashes them, so the runner can make
the code part of every item's fingerprint (:class:`pipeline.core.work.Stage`) instead of trusting a
hand-bumped version string. A change to any module of the closure re-computes the stage's items; a change to
a module outside it does not.

What the digest sees: each module's source bytes (so a comment edit re-computes too: cheap and never wrong).
``pipeline.cli`` is never followed: it is the command dispatch table (it names every stage module), not code a
stage runs.

Modules loaded through a registry by a string (``"pipeline.preannotators.sam:SamPreannotator"``) are not
imports. :func:`import_closure` follows them only with ``registries=True``: that is right for ``dvc.yaml``
deps (a file dependency cannot depend on params, so every registered backend counts), while a stage passes the
modules its params actually select as extra roots (``Stage.code_modules``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

PROJECT_PACKAGES = ("pipeline", "qa", "dashboards")
"""Top-level packages whose code is fingerprinted (third-party code is pinned by pyproject.toml instead)."""

PROJECT_ROOT = Path(__file__).resolve().parents[2]

NOT_FOLLOWED = frozenset({"pipeline.cli"})
"""Modules an import closure never enters (see the module docstring)."""

_REGISTRY_RE = re.compile(r"^((?:pipeline|qa|dashboards)(?:\.\w+)+)(?::\w+)?$")


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of project module ``name`` under ``root`` (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = Path(root).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks (those imports never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def direct_imports(name: str, root: Path = PROJECT_ROOT, registries: bool = False) -> frozenset[str]:
    """Project modules that module ``name`` imports (any depth in the file; ``TYPE_CHECKING`` blocks excluded),
    plus, with ``registries``, project modules named by string constants such as ``"pkg.mod:Class"``."""
    path = module_file(name, root)
    if path is None:
        return frozenset()
    st = path.stat()
    return _direct_imports(name, Path(root), registries, path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _direct_imports(name: str, root: Path, registries: bool, path: Path, _mtime_ns: int, _size: int
                    ) -> frozenset[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(candidate: str) -> None:
        if candidate not in NOT_FOLLOWED and module_file(candidate, root) is not None:
            found.update(p for p in _with_parents(candidate) if module_file(p, root) is not None)

    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            add(base)
            for alias in node.names:
                add(f"{base}.{alias.name}")  # `from pkg import module`
        elif registries and isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _REGISTRY_RE.match(node.value)
            if m:
                add(m.group(1))
    found.discard(name)
    return frozenset(found)


def import_closure(roots: Iterable[str], root: Path = PROJECT_ROOT, registries: bool = False) -> tuple[str, ...]:
    """Sorted project modules reachable from ``roots`` by imports (``roots`` and their packages included)."""
    seen: set[str] = set()
    todo = [p for r in roots for p in _with_parents(r) if module_file(p, root) is not None]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(direct_imports(name, Path(root), registries) - seen)
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=4096)
def _module_digest(path: Path, _mtime_ns: int, _size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_digest(name: str, root: Path = PROJECT_ROOT) -> str:
    """SHA-256 of module ``name``'s source file; ``""`` when it has no file."""
    path = module_file(name, root)
    if path is None:
        return ""
    st = path.stat()
    return _module_digest(path, st.st_mtime_ns, st.st_size)


def code_digest(roots: Iterable[str], root: Path = PROJECT_ROOT) -> str:
    """SHA-256 over the code of every module in the import closure of ``roots`` (names and digests, sorted)."""
    h = hashlib.sha256()
    for name in import_closure(roots, root):
        h.update(f"{name}\0{module_digest(name, root)}\n".encode())
    return h.hexdigest()
