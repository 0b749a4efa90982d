"""The preannotate stage end to end: outputs, determinism, incremental runs, failures, SAM cache, trained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.core import io
from pipeline.core.errors import UserError
from pipeline.core.runner import StageFailed
from pipeline.stages import ingest
from pipeline.stages import preannotate as stage

from ..conftest import maskloop


def _set_params(root: Path, **sections: dict[str, Any]) -> Path:
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        data.setdefault(name, {})
        for k, v in values.items():
            if isinstance(v, dict):
                data[name].setdefault(k, {}).update(v)
            else:
                data[name][k] = v
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    base = root / "data" / "preannotate"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture
def proj(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    _set_params(project, runner={"workers": 1})
    ingest.run(Path("params.yaml"))
    return project


def test_outputs_table_and_byte_identical_rebuild(proj: Path) -> None:
    df = stage.run(Path("params.yaml"))
    manifest = io.read_parquet(Path("data/ingest/manifest.parquet"))
    ok = manifest[manifest["status"] == "ok"].sort_values("item_id")
    assert list(df.columns) == list(stage.COLUMNS)
    assert df["item_id"].tolist() == ok["item_id"].tolist()
    assert (df["model"] == "grabcut").all() and df["sam_iou"].isna().all()
    assert df["confidence"].between(0, 1).all() and df["uncertainty"].between(0, 1).all()
    assert df["entropy"].between(0, 1).all()
    for row in ok.itertuples():
        mask = io.read_mask(Path(f"data/preannotate/masks/{row.item_id}.png"), shape=(row.height, row.width))
        prob = io.read_gray(Path(f"data/preannotate/prob/{row.item_id}.png"))
        assert prob.shape == mask.shape
        assert np.array_equal(mask > 0, prob >= 128)
        assert 0 < (mask > 0).mean() < 1
    first = _snapshot(proj)
    mtimes = {p: os.stat(p).st_mtime_ns for p in Path("data/preannotate/masks").iterdir()}
    stage.run(Path("params.yaml"))  # nothing changed: nothing recomputed
    assert {p: os.stat(p).st_mtime_ns for p in Path("data/preannotate/masks").iterdir()} == mtimes
    report = io.read_parquet(Path("reports/preannotate.parquet"))
    assert (report["status"] == "ok").all() and len(report) == len(ok)
    # a clean rebuild with two worker processes (a fresh process, as `dvc repro` runs it) is byte-identical
    import shutil

    shutil.rmtree("data/preannotate")
    shutil.rmtree(".maskloop")
    _set_params(proj, runner={"workers": 2})
    maskloop("preannotate", cwd=proj)
    assert _snapshot(proj) == first


def test_failed_item_is_reported_and_others_go_on(proj: Path) -> None:
    manifest = io.read_parquet(Path("data/ingest/manifest.parquet"))
    victim = manifest[manifest["status"] == "ok"].iloc[0]
    Path(victim["source_path"]).write_bytes(b"\xff\xd8 not really a jpeg")
    _set_params(proj, runner={"max_failure_fraction": 0.5})
    df = stage.run(Path("params.yaml"))
    assert victim["item_id"] not in set(df["item_id"]) and len(df) == len(manifest) - 1
    report = io.read_parquet(Path("reports/preannotate.parquet"))
    bad = report[report["status"] == "failed"]
    assert bad["key"].tolist() == [victim["item_id"]]
    assert "ImageError" in bad["error"].iloc[0] and Path(victim["source_path"]).name in bad["error"].iloc[0]
    _set_params(proj, runner={"max_failure_fraction": 0.1})
    with pytest.raises(StageFailed, match="1/4 items failed"):
        stage.run(Path("params.yaml"), retry_failed=True)


def test_missing_checkpoint_is_one_sentence(proj: Path) -> None:
    _set_params(proj, preannotate={"model": "sam", "sam": {"checkpoint": "models/nope/sam_vit_b.pth"}})
    proc = maskloop("preannotate", cwd=proj, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    err = " ".join(proc.stderr.split())
    assert "models/nope/sam_vit_b.pth" in err and "sam/vit_b" in err
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in err
    assert not Path("data/preannotate/masks").exists()  # checked before any work


def test_sam_stage_cache_reprompt_and_prune(proj: Path, tiny_sam_ckpt: Path) -> None:
    _set_params(proj, preannotate={"model": "sam", "sam": {"arch": "vit_tiny", "checkpoint": str(tiny_sam_ckpt)}})
    df = stage.run(Path("params.yaml"))
    assert (df["model"] == "sam").all() and df["sam_iou"].between(0, 1).all()
    assert df["checkpoint_sha256"].str.len().eq(64).all()
    sub = next(Path("data/sam_cache").iterdir())
    npys = {p.name: p.stat().st_mtime_ns for p in sub.glob("*.npy")}
    assert sorted(npys) == sorted(f"{i}.npy" for i in df["item_id"])
    # a prompt change recomputes every item, from the cache: no embedding is rewritten
    _set_params(proj, preannotate={"sam": {"prompt": "box+points"}})
    df2 = stage.run(Path("params.yaml"))
    assert df2["model_version"].iloc[0] != df["model_version"].iloc[0]
    assert {p.name: p.stat().st_mtime_ns for p in sub.glob("*.npy")} == npys
    # the sam-prompt command answers from the same cache
    item = df["item_id"].iloc[0]
    out = proj / "answer.png"
    proc = maskloop("sam-prompt", item[:8], "--box", "10,10,120,100", "--point", "50,50", "--point", "5,5,0",
                    "-o", str(out), cwd=proj)
    assert "from cache" in proc.stdout
    ok = io.read_parquet(Path("data/ingest/manifest.parquet")).set_index("item_id").loc[item]
    assert io.read_mask(out).shape == (ok["height"], ok["width"])
    bad = maskloop("sam-prompt", item, "--box", "10,10,5,5", cwd=proj, check=False)
    assert bad.returncode == 1 and "x1 must be > x0" in bad.stderr
    none = maskloop("sam-prompt", "ffffffffffffffff", "--point", "1,1", cwd=proj, check=False)
    assert none.returncode == 1 and "no item" in none.stderr
    # an item that leaves the dataset loses its outputs and its cache entry
    manifest = io.read_parquet(Path("data/ingest/manifest.parquet"))
    gone = manifest[manifest["item_id"] == item]["source_path"].iloc[0]
    Path(gone).unlink()
    ingest.run(Path("params.yaml"))
    stage.run(Path("params.yaml"))
    assert not (sub / f"{item}.npy").exists() and not Path(f"data/preannotate/masks/{item}.png").exists()


def test_prompt_parsing_errors() -> None:
    from pipeline.commands.sam_prompt import parse_box, parse_point

    assert parse_box("1,2,3,4").tolist() == [1, 2, 3, 4]
    assert parse_point("3,4") == (3.0, 4.0, 1) and parse_point("3,4,0") == (3.0, 4.0, 0)
    for bad in ("1,2,3", "a,b,c,d"):
        with pytest.raises(UserError, match="four numbers"):
            parse_box(bad)
    for bad in ("3", "3,4,2", "x,y", "1,2,1,1"):
        with pytest.raises(UserError, match="--point"):
            parse_point(bad)


def _promote(root: Path, verified: list[str], promoted: bool = True) -> None:
    import torch

    from pipeline.learning import segmenter

    torch.manual_seed(0)
    model = segmenter.build_segmenter("lraspp_mobilenet_v3_large", None)
    dest = root / "models" / "promoted"
    dest.mkdir(parents=True, exist_ok=True)
    segmenter.save_checkpoint(dest / "model.pt", model, segmenter.SegmenterMeta(arch="lraspp_mobilenet_v3_large", resolution=64))
    io.write_json(dest / "lineage.json", {"promoted": promoted, "verified_items": verified})


def test_trained_keeps_verified_items(proj: Path) -> None:
    first = stage.run(Path("params.yaml")).set_index("item_id")
    verified = first.index[0]
    before = _snapshot(proj)
    _promote(proj, [verified])
    _set_params(proj, preannotate={"model": "trained"})
    df = stage.run(Path("params.yaml")).set_index("item_id")
    after = _snapshot(proj)
    pd.testing.assert_series_equal(df.loc[verified], first.loc[verified])  # record unchanged
    for sub in ("masks", "prob"):
        assert after[f"{sub}/{verified}.png"] == before[f"{sub}/{verified}.png"]
    others = [i for i in df.index if i != verified]
    assert (df.loc[others, "model"] == "trained").all()
    assert df.loc[others, "checkpoint_sha256"].str.len().eq(64).all()
    mtimes = {p: os.stat(p).st_mtime_ns for p in Path("data/preannotate/masks").iterdir()}
    stage.run(Path("params.yaml"))  # incremental: nothing to do
    assert {p: os.stat(p).st_mtime_ns for p in Path("data/preannotate/masks").iterdir()} == mtimes


def test_trained_without_promotion_is_a_clear_error(proj: Path) -> None:
    _promote(proj, [], promoted=False)
    _set_params(proj, preannotate={"model": "trained"})
    with pytest.raises(UserError, match="no model has been promoted"):
        stage.run(Path("params.yaml"))
    (proj / "models" / "promoted" / "lineage.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable lineage"):
        stage.run(Path("params.yaml"))
    _promote(proj, [])
    (proj / "models" / "promoted" / "model.pt").write_bytes(b"broken")
    proc = maskloop("preannotate", cwd=proj, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "corrupt" in proc.stderr and "model.pt" in proc.stderr


def test_table_reads_back_with_nan_sam_iou(proj: Path) -> None:
    stage.run(Path("params.yaml"))
    df = pd.read_parquet("data/preannotate/preannotations.parquet")
    assert df["sam_iou"].dtype == np.float64 and df["sam_iou"].isna().all()
    prev = stage.previous_records(Path("data/preannotate"))
    assert set(prev) == set(df["item_id"]) and all(r["sam_iou"] is None for r in prev.values())
    from pipeline.core.params import load_paths

    lines = stage.status_lines(load_paths(Path("params.yaml")))
    assert lines[0].split()[0] == str(len(df)) and "grabcut" in lines[0]
    assert stage.status_lines(load_paths(Path("params.yaml")).__class__(preannotate=proj / "none"))[0].startswith(
        "no pre-annotations yet"
    )
