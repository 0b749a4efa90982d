"""The tree's rules, read from the source (ast): dvc.yaml code deps match each stage's import closure, no import
cycle, stages never import stages, and the libraries keep out of what they must not depend on."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import yaml

from pipeline.cli import COMMANDS, STAGES
from pipeline.core.code_version import direct_imports, import_closure, module_file
from tests.conftest import REPO

DVC_FILES = ("dvc.yaml", "always_run/dvc.yaml")


def project_modules() -> list[str]:
    out = []
    for pkg in ("pipeline", "qa", "dashboards"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out.append(".".join(parts))
    return out


def stage_modules() -> dict[str, tuple[str, list[str]]]:
    """DVC stage name -> (module its `maskloop` command runs, its code deps as listed in the dvc.yaml)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for name in DVC_FILES:
        doc = yaml.safe_load((REPO / name).read_text())
        for stage, spec in doc["stages"].items():
            command = spec["cmd"].split()[1]
            module = STAGES[command][0] if command in STAGES else COMMANDS[command]
            deps = [d for d in spec.get("deps", []) if not str(d).startswith("${")]
            out[stage] = (module, [str(d) for d in deps])
    return out


def code_files(modules: Iterable[str]) -> set[str]:
    """Source files (relative to the repository) of ``modules``, empty package markers left out."""
    files = set()
    for m in modules:
        path = module_file(m, REPO)
        if path is not None and path.stat().st_size > 0:
            files.add(path.relative_to(REPO).as_posix())
    return files


def covered(file: str, deps: Iterable[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_lists_its_import_closure_as_deps() -> None:
    """A file a stage can run (imports, and every backend/pre-annotator of the registries: a dvc dep cannot depend
    on params) that is not a dep means `dvc repro` keeps outputs of old code. Deps that are no code of the
    stage are reported too (they re-run it for nothing)."""
    problems = []
    for stage, (module, deps) in sorted(stage_modules().items()):
        closure = code_files(import_closure([module], REPO, registries=True))
        missing = sorted(f for f in closure if not covered(f, deps))
        if missing:
            problems.append(f"{stage} ({module}): deps lack {missing}")
        code_deps = [d for d in deps if d.endswith(".py") or ((REPO / d).is_dir() and d.split("/")[0] in
                     ("pipeline", "qa", "dashboards"))]
        extra = [d for d in code_deps if not any(covered(f, [d]) for f in closure)]
        if extra:
            problems.append(f"{stage} ({module}): deps {extra} are not code the stage runs")
    assert not problems, "\n".join(problems)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    """Runtime imports between project modules (function-level included; TYPE_CHECKING blocks and the implicit
    parent-package edges left out)."""
    graph = {}
    for m in project_modules():
        graph[m] = {d for d in direct_imports(m, REPO) if not m.startswith(d + ".")}
    return graph


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_stages_never_import_stages() -> None:
    bad = {m: sorted(d for d in deps if d.startswith("pipeline.stages."))
           for m, deps in _graph().items() if m.startswith("pipeline.stages.")}
    assert {m: d for m, d in bad.items() if d} == {}


def third_party(module: str) -> set[str]:
    """Dotted names of everything ``module`` imports at run time (project modules included)."""
    path = module_file(module, REPO)
    assert path is not None
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    roots = [m for m in project_modules() if m == package or m.startswith(package + ".")]
    out = {}
    for m in import_closure(roots, REPO):
        hits = sorted(n for n in third_party(m) | {m} if n.startswith(forbidden))
        if hits:
            out[m] = hits
    return out


def test_qa_is_a_pure_library() -> None:
    """qa (and all it imports) never imports torch, streamlit, an annotation backend, a pre-annotator or a CLI."""
    forbidden = ("torch", "torchvision", "streamlit", "segment_anything", "label_studio_sdk", "cvat_sdk",
                 "pipeline.annotation", "pipeline.preannotators", "pipeline.commands", "pipeline.stages", "typer",
                 "dashboards")
    assert _offenders("qa", forbidden) == {}


def test_dashboards_stay_ui() -> None:
    forbidden = ("torch", "torchvision", "segment_anything", "label_studio_sdk", "cvat_sdk", "pipeline.annotation",
                 "pipeline.preannotators", "pipeline.core.runner", "pipeline.core.work", "pipeline.stages",
                 "pipeline.commands")
    assert _offenders("dashboards", forbidden) == {}


def test_commands_do_not_import_the_ui_package() -> None:
    """The review command starts the app by file path; it never imports from dashboards (UI -> app, not back)."""
    bad = {m: sorted(d for d in deps if d.startswith("dashboards"))
           for m, deps in _graph().items() if m.startswith(("pipeline.", "qa."))}
    assert {m: d for m, d in bad.items() if d} == {}


def test_core_imports_only_core() -> None:
    bad = {m: sorted(d for d in deps if not d.startswith("pipeline.core") and d != "pipeline")
           for m, deps in _graph().items() if m.startswith("pipeline.core")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_every_stage_module_is_a_dvc_stage() -> None:
    """pipeline/stages holds exactly the DVC stages (one module each); CLI-only commands live in pipeline/commands."""
    modules = {m for m, _ in stage_modules().values() if m.startswith("pipeline.stages.")}
    files = {f"pipeline.stages.{p.stem}" for p in (REPO / "pipeline" / "stages").glob("*.py") if p.stem != "__init__"}
    assert files == modules
    assert Path(REPO / "always_run" / "dvc.yaml").is_file()
