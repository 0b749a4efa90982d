"""The code is part of every item's fingerprint: editing a library function re-computes exactly the stages whose
import closure contains it (no hand-bumped VERSION strings to forget)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from pipeline.core.code_version import code_digest, direct_imports, import_closure
from pipeline.core.params import load_section
from pipeline.core.state_store import StateStore
from pipeline.preannotators.base import PreannotateParams
from tests.conftest import REPO, maskloop

PACKAGES = ("pipeline", "qa", "dashboards")


def copy_code(dest: Path) -> Path:
    """A copy of the project's Python packages (what an edit in a clone would change)."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def edit_function(path: Path, name: str | None = None) -> str:
    """Insert a statement that changes no result at the top of function ``name`` (default: the first function
    of the module) in ``path``; returns the function's name."""
    lines = path.read_text().splitlines(keepends=True)
    fn = next(n for n in ast.walk(ast.parse("".join(lines)))
              if isinstance(n, ast.FunctionDef) and (name is None or n.name == name))
    first = fn.body[0]
    indent = " " * first.col_offset
    at = first.end_lineno if ast.get_docstring(fn) is not None else first.lineno - 1  # after a docstring
    assert at is not None
    lines.insert(at, f"{indent}_unused = 0  # edited by the test\n")
    path.write_text("".join(lines))
    return fn.name


# --------------------------------------------------------------------------- closure (pure, fast)


def test_closures_follow_imports_and_only_them() -> None:
    trimap = import_closure(["pipeline.stages.trimap"])
    matte = import_closure(["pipeline.stages.matte"])
    curate = import_closure(["pipeline.stages.curate"])
    assert "pipeline.matting.trimap" in trimap and "pipeline.matting.solve" not in trimap
    assert "pipeline.matting.solve" in matte
    assert {"qa.fixes", "qa.checks", "qa.components"} <= set(curate)
    assert "qa.fixes" not in trimap
    # composite imports the trimap library (ellipse), so its code is part of composite's version too
    assert "pipeline.matting.trimap" in import_closure(["pipeline.stages.composite"])
    # the CLI dispatch table names every stage module: never part of a stage's code
    assert all("pipeline.cli" not in import_closure([f"pipeline.stages.{s}"], registries=True)
               for s in ("push", "pull", "curate"))


def test_registry_modules_count_only_when_asked() -> None:
    plain = import_closure(["pipeline.stages.preannotate"])
    every = import_closure(["pipeline.stages.preannotate"], registries=True)
    assert "pipeline.preannotators.sam" not in plain  # loaded by name from the registry, not imported
    assert {"pipeline.preannotators.sam", "pipeline.preannotators.grabcut", "pipeline.preannotators.trained",
            "pipeline.learning.segmenter"} <= set(every)
    backends = import_closure(["pipeline.stages.push"], registries=True)
    assert {"pipeline.annotation.cvat", "pipeline.annotation.files", "pipeline.annotation.labelstudio"} <= set(backends)


def test_type_checking_imports_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "qa").mkdir()
    (tmp_path / "qa" / "__init__.py").write_text("")
    (tmp_path / "qa" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qa import b\nelse:\n    import qa.c\n"
        "def f():\n    from . import d\n"
    )
    for m in "bcd":
        (tmp_path / "qa" / f"{m}.py").write_text("")
    assert direct_imports("qa.a", tmp_path) == frozenset({"qa", "qa.c", "qa.d"})


def test_an_edit_changes_exactly_the_digests_of_the_stages_that_import_it(tmp_path: Path) -> None:
    root = copy_code(tmp_path / "code")
    stages = ("trimap", "matte", "composite", "curate", "ingest")
    before = {s: code_digest([f"pipeline.stages.{s}"], root) for s in stages}
    assert before == {s: code_digest([f"pipeline.stages.{s}"], REPO) for s in stages}  # same code, same digest
    edit_function(root / "pipeline" / "matting" / "solve.py")
    after = {s: code_digest([f"pipeline.stages.{s}"], root) for s in stages}
    assert [s for s in stages if after[s] != before[s]] == ["matte"]
    edit_function(root / "pipeline" / "matting" / "trimap.py", "ellipse")
    again = {s: code_digest([f"pipeline.stages.{s}"], root) for s in stages}
    assert [s for s in stages if again[s] != after[s]] == ["trimap", "composite"]


def test_preannotate_fingerprints_the_selected_preannotator() -> None:
    from pipeline.core.work import Stage
    from pipeline.preannotators import preannotator_module
    from pipeline.stages.preannotate import models_used, process

    params = load_section(REPO / "params.yaml", "preannotate", PreannotateParams)
    stage: Stage[None] = Stage(name="p", params=None, root=Path("x"), process=process, state_root=Path("s"),
                               code_modules=tuple(preannotator_module(m) for m in models_used(params)))
    assert preannotator_module(params.model) in stage.code_roots()
    assert stage.with_code().code == code_digest(stage.code_roots())


# --------------------------------------------------------------------------- the real runner, real CLI


def _states(root: Path, stage: str) -> dict[str, dict[str, object]]:
    with StateStore(root / ".maskloop" / "state" / stage) as store:
        return dict(store.items())


def _outputs(root: Path, folder: str) -> dict[str, bytes]:
    base = root / "data" / folder
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.png"))}


@pytest.mark.slow
def test_editing_a_library_function_recomputes_the_affected_stage_only(project: Path, tmp_path: Path) -> None:
    code = copy_code(tmp_path / "code")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("progress: true", "progress: false"))
    env = {"PYTHONPATH": str(code), "COLUMNS": "200"}
    for stage in ("ingest", "preannotate", "curate", "trimap"):
        maskloop(stage, cwd=project, env=env)
    curate0, trimap0, ingest0 = _states(project, "curate"), _states(project, "trimap"), _states(project, "ingest")
    curated0, trimaps0 = _outputs(project, "curated"), _outputs(project, "trimap")
    assert len(curate0) == 4 and len(trimap0) == 4

    edit_function(code / "qa" / "fixes.py", "apply_fixes")  # a library function curate runs, trimap never
    runs = {s: maskloop(s, cwd=project, env=env) for s in ("ingest", "curate", "trimap")}
    out = {s: " ".join((r.stdout + r.stderr).split()) for s, r in runs.items()}  # log lines, unwrapped

    curate1, trimap1 = _states(project, "curate"), _states(project, "trimap")
    assert "4 items, 0 up to date, 4 to compute" in out["curate"], out["curate"]
    assert all(curate1[k]["static"] != curate0[k]["static"] for k in curate0)  # new code version
    # curate rewrote the same bytes, so trimap's upstream files are unchanged: the runner's stage-level
    # shortcut reuses everything without the per-item check (the same outcome as "4 up to date")
    assert "4 items, nothing changed since the last run" in out["trimap"], out["trimap"]
    # not recomputed: same fingerprints and the recorded compute times of the first run (curate rewrote its
    # masks with the same bytes, so only the input stats in trimap's records may have been refreshed)
    kept = ("static", "fingerprint", "seconds", "outputs", "record")
    assert {k: [v[f] for f in kept] for k, v in trimap1.items()} == {k: [v[f] for f in kept] for k, v in trimap0.items()}
    assert "4 items, 4 up to date, 0 to compute" in out["ingest"], out["ingest"]
    assert {k: v["seconds"] for k, v in _states(project, "ingest").items()} == {k: v["seconds"] for k, v in ingest0.items()}
    # the edit changed no result: outputs are byte-identical
    assert _outputs(project, "curated") == curated0 and _outputs(project, "trimap") == trimaps0
