"""The per-item incremental runner: fingerprints, reuse, deletions, failures, determinism, SIGKILL resume."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core import io
from pipeline.core import runner as runner_mod
from pipeline.core.params import RunnerParams
from pipeline.core.runner import (
    INDEX_NAME,
    FileInput,
    ItemResult,
    SetupFailed,
    Stage,
    StageFailed,
    WorkItem,
    read_index,
    run_stage,
)
from pipeline.core.state_store import StateStore

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("slow_stage", HERE / "slow_stage.py")
assert _spec and _spec.loader
slow = importlib.util.module_from_spec(_spec)
sys.modules["slow_stage"] = slow
_spec.loader.exec_module(slow)


def make_inputs(d: Path, n: int, seed: int = 0, size: tuple[int, int] = (24, 32)) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = d / f"img{i:03d}.png"
        io.write_png(p, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path: Path) -> dict[str, Path]:
    return {"inp": tmp_path / "in", "out": tmp_path / "out" / "dim", "state": tmp_path / "state", "tmp": tmp_path}


def run(ws: dict[str, Path], workers: int = 1, **kw: Any) -> Any:
    params = kw.pop("params", slow.DimParams())
    return slow.run(ws["inp"], ws["out"], ws["state"], workers, params, **kw)


def test_second_run_reuses_everything(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 5)
    r1 = run(ws)
    assert (r1.n_items, r1.n_computed, r1.n_failed) == (5, 5, 0)
    before = tree(ws["out"])
    r2 = run(ws)
    assert r2.n_computed == 0
    assert tree(ws["out"]) == before
    assert len(before) == 12  # 5 pngs + 5 json + table + the runner's output index
    index = read_index(ws["out"] / INDEX_NAME)
    outputs = {k: v for k, v in before.items() if k.startswith(("dim/", "sum/"))}
    assert index == {k: hashlib.sha256(v).hexdigest() for k, v in outputs.items()} and len(index) == 10


def test_param_change_recomputes_all_and_version_change_too(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 4)
    run(ws)
    assert run(ws, params=slow.DimParams(factor=3)).n_computed == 4
    assert run(ws, params=slow.DimParams(factor=3)).n_computed == 0
    assert run(ws, params=slow.DimParams(factor=3), version="2").n_computed == 4
    assert run(ws, params=slow.DimParams(factor=3), version="2").n_computed == 0


def test_add_modify_delete_recompute_only_those(ws: dict[str, Path]) -> None:
    paths = make_inputs(ws["inp"], 6)
    run(ws)
    # add two, modify one, delete one, touch one without changing its bytes
    extra = make_inputs(ws["tmp"] / "extra", 2, seed=9)
    for p in extra:
        os.replace(p, ws["inp"] / f"new_{p.name}")
    io.write_png(paths[1], np.zeros((24, 32, 3), np.uint8))
    paths[2].unlink()
    os.utime(paths[3], ns=(1, 1))
    r = run(ws)
    computed = sorted(o.key for o in r.outcomes if o.computed)
    assert computed == ["img001", "new_img000", "new_img001"]
    assert not (ws["out"] / "dim" / "img002.png").exists()
    assert not (ws["out"] / "sum" / "img002.json").exists()
    assert "img002" not in set(r.record_map())
    # the incremental result equals a clean rebuild, byte for byte
    clean = {**ws, "out": ws["tmp"] / "clean" / "dim", "state": ws["tmp"] / "clean_state"}
    run(clean)
    assert tree(ws["out"]) == tree(clean["out"])


def test_worker_count_does_not_change_bytes(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 9)
    run(ws, workers=1)
    other = {**ws, "out": ws["tmp"] / "o2" / "dim", "state": ws["tmp"] / "s2"}
    r = run(other, workers=2)
    assert r.n_computed == 9
    assert tree(ws["out"]) == tree(other["out"])


def test_failures_are_recorded_and_others_proceed(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 4)
    r = run(ws, workers=2, explode=("img002",))
    assert r.n_failed == 1
    (fail,) = r.failures
    assert fail.key == "img002" and "ValueError" in fail.error and "img002.png: planted failure" in fail.error
    assert sorted(r.record_map()) == ["img000", "img001", "img003"]
    report = io.read_parquet(ws["tmp"] / "out" / "reports" / "dim.parquet")
    assert report.set_index("key").loc["img002", "status"] == "failed"
    assert io.read_json(ws["tmp"] / "out" / "reports" / "dim.json") == {
        "items": 4, "ok": 3, "failed": 1, "failure_fraction": 0.25
    }
    # cached failure is not retried unless asked; fixing the cause (data) recomputes it
    assert run(ws, explode=("img002",)).n_computed == 0
    assert run(ws).n_computed == 1


def test_stage_fails_above_max_failure_fraction_after_writing_report(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 4)
    with pytest.raises(StageFailed, match=r"2/4 items failed \(50.0%\), above runner.max_failure_fraction=25.0%"):
        run(ws, explode=("img000", "img001"), max_failure_fraction=0.25)
    assert (ws["tmp"] / "out" / "reports" / "dim.parquet").is_file()
    assert (ws["out"] / "dim" / "img002.png").is_file()


def test_missing_output_or_stray_files_are_repaired(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 3)
    run(ws)
    want = tree(ws["out"])
    (ws["out"] / "dim" / "img001.png").unlink()
    (ws["out"] / "dim" / "stray.png").write_bytes(b"old")
    (ws["out"] / "sum" / ".img000.json.tmp-abc").write_bytes(b"half")
    r = run(ws)
    assert [o.key for o in r.outcomes if o.computed] == ["img001"]
    assert tree(ws["out"]) == want


def _bad_setup(_params: Any) -> Any:
    raise FileNotFoundError("models/x.pt: checkpoint not found")


def test_setup_failure_is_fatal_and_named(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 2)
    stage = Stage(name="dim", version="1", params=slow.DimParams(), root=ws["out"], process=slow.process,
                  state_root=ws["state"], setup=_bad_setup)
    with pytest.raises(SetupFailed, match=r"setup failed: FileNotFoundError: models/x\.pt: checkpoint not found"):
        run_stage(stage, slow.works_for(ws["inp"]), RunnerParams(workers=1, progress=False))


def _escape(work: WorkItem, params: Any, resource: Any) -> ItemResult:
    return ItemResult(files={"../evil.png": b"x"})


def test_outputs_outside_root_and_duplicate_keys_are_refused(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 1)
    stage = Stage(name="esc", version="1", params=slow.DimParams(), root=ws["out"], process=_escape, state_root=ws["state"])
    r = run_stage(stage, slow.works_for(ws["inp"]), RunnerParams(workers=1, progress=False, max_failure_fraction=1.0))
    assert "outside its root" in r.failures[0].error
    assert not (ws["out"].parent / "evil.png").exists()
    dup = [WorkItem("a", {"image": FileInput(ws["inp"] / "img000.png")})] * 2
    with pytest.raises(ValueError, match="duplicate work item key 'a'"):
        run_stage(stage, dup, RunnerParams(workers=1, progress=False))
    with pytest.raises(ValueError, match="not filename-safe"):
        WorkItem(key="../x")


def _digest_record(work: WorkItem, params: Any, resource: Any) -> ItemResult:
    return ItemResult(record={"digest": work.inputs["image"].digest})


def test_process_sees_the_content_digest_the_runner_computed(ws: dict[str, Path]) -> None:
    import hashlib

    paths = make_inputs(ws["inp"], 2)
    stage = Stage(name="dig", version="1", params=slow.DimParams(), root=ws["out"], process=_digest_record,
                  state_root=ws["state"])
    r = run_stage(stage, slow.works_for(ws["inp"]), RunnerParams(workers=1, progress=False))
    got = sorted(rec["digest"] for rec in r.record_map().values())
    assert got == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)


def test_missing_input_is_an_item_failure(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 2)
    works = [*slow.works_for(ws["inp"]), WorkItem("ghost", {"image": FileInput(ws["inp"] / "ghost.png")})]
    stage = slow.make_stage(ws["out"], ws["state"], slow.DimParams())
    r = run_stage(stage, works, RunnerParams(workers=1, progress=False, max_failure_fraction=0.5))
    assert r.n_failed == 1 and "ghost.png" in r.failures[0].error


def stored_items(folder: Path) -> int:
    """Items with a committed state record in a stage's state database (0 before it exists)."""
    db = folder / "items.sqlite"
    if not db.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        try:
            return int(con.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        except sqlite3.OperationalError:  # the table is being created
            return 0


def test_sigkill_mid_stage_then_rerun_is_byte_identical(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 16, size=(48, 64))
    cmd = [sys.executable, str(HERE / "slow_stage.py"), str(ws["inp"]), str(ws["out"]), str(ws["state"]), "2"]
    env = {**os.environ, "SLOW_STAGE_SLEEP": "0.15"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stored_items(ws["state"] / "dim") >= 4:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = stored_items(ws["state"] / "dim")
    assert 4 <= n_done < 16, "the kill must land mid-stage"
    assert not (ws["out"] / "dim.parquet").exists()
    r = run(ws, workers=2)
    assert r.n_computed == 16 - n_done
    clean = {**ws, "out": ws["tmp"] / "clean" / "dim", "state": ws["tmp"] / "clean_state"}
    run(clean, workers=1)
    assert tree(ws["out"]) == tree(clean["out"])


def test_index_follows_deletions_and_legacy_json_state_is_imported(ws: dict[str, Path]) -> None:
    inputs = make_inputs(ws["inp"], 4)
    run(ws)
    # a state folder as an older runner left it: one JSON file per item, in <xx>/ subfolders
    folder = ws["state"] / "dim"
    with StateStore(folder) as store:
        legacy = dict(store.items())
    (folder / "items.sqlite").unlink()
    for key, state in legacy.items():
        (folder / key[:2]).mkdir(exist_ok=True)
        (folder / key[:2] / f"{key}.json").write_text(json.dumps(state))
    r = run(ws)
    assert r.n_computed == 0 and not list(folder.rglob("*.json"))  # imported, nothing recomputed
    inputs[0].unlink()
    r = run(ws)
    assert r.n_items == 3
    index = read_index(ws["out"] / INDEX_NAME)
    assert len(index) == 6 and not any(inputs[0].stem in k for k in index)
    with StateStore(folder) as store:
        assert len(store) == 3


def _no_reuse_check(*_a: Any, **_k: Any) -> bool:
    raise AssertionError("the per-item reuse check ran although nothing changed")


def test_shortcut_skips_the_per_item_check_when_nothing_changed(ws: dict[str, Path], monkeypatch: Any) -> None:
    inputs = make_inputs(ws["inp"], 5)
    r1 = run(ws, shortcut=True)
    before = tree(ws["out"])
    os.utime(inputs[3], ns=(1, 1))  # touched, same bytes: re-hashed (stat changed), still nothing changed
    with monkeypatch.context() as m:
        m.setattr(runner_mod, "_check_reusable", _no_reuse_check)
        r2 = run(ws, shortcut=True)
    assert r2.n_computed == 0 and r2.records == r1.records and [o.key for o in r2.outcomes] == [o.key for o in r1.outcomes]
    assert tree(ws["out"]) == before
    # an output deleted by hand, a stray file in an output folder: no shortcut, the runner repairs
    (ws["out"] / "dim" / "img001.png").unlink()
    (ws["out"] / "sum" / "stray.json").write_text("{}")
    r3 = run(ws, shortcut=True)
    assert [o.key for o in r3.outcomes if o.computed] == ["img001"] and tree(ws["out"]) == before
    # a changed input (content): no shortcut, only that item recomputed, same bytes as a clean build
    io.write_png(inputs[2], np.zeros((24, 32, 3), np.uint8))
    r4 = run(ws, shortcut=True)
    assert [o.key for o in r4.outcomes if o.computed] == ["img002"]
    clean = {**ws, "out": ws["tmp"] / "clean" / "dim", "state": ws["tmp"] / "clean_state"}
    run(clean)
    assert tree(ws["out"]) == tree(clean["out"])
    # a param change is never shortcut
    assert run(ws, shortcut=True, params=slow.DimParams(factor=3)).n_computed == 5


def test_shortcut_needs_every_input_covered_and_a_killed_run_leaves_none(ws: dict[str, Path]) -> None:
    make_inputs(ws["inp"], 6)
    run(ws)  # no upstream named: no shortcut key is recorded
    with StateStore(ws["state"] / "dim") as store:
        assert store.get_meta(runner_mod.LAST_RUN) is None
    run(ws, shortcut=True)
    with StateStore(ws["state"] / "dim") as store:
        assert store.get_meta(runner_mod.LAST_RUN) is not None

    class Killed(RuntimeError):
        pass

    class DiesAfterTwo:
        """An executor killed after two items (as a SIGKILL would leave it: some items committed)."""

        def run(self, stage: Stage[Any], works: Any) -> Any:
            for i, work in enumerate(works):
                if i == 2:
                    raise Killed
                yield runner_mod.execute_item(stage, work)

    with pytest.raises(Killed):
        run(ws, shortcut=True, params=slow.DimParams(factor=3), executor=DiesAfterTwo())
    with StateStore(ws["state"] / "dim") as store:
        assert store.get_meta(runner_mod.LAST_RUN) is None  # deleted before any work started
    r = run(ws, shortcut=True, params=slow.DimParams(factor=3))
    assert r.n_computed == 4
    clean = {**ws, "out": ws["tmp"] / "clean" / "dim", "state": ws["tmp"] / "clean_state"}
    run(clean, params=slow.DimParams(factor=3))
    assert tree(ws["out"]) == tree(clean["out"])
