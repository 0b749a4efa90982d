"""Backend-independent logic on tiny hand-drawn masks: resolution, newer-wins pulls, formats, params, secrets."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.annotation.base import Correction, PullOutcome, PushItem, ReceiptRow, get_backend
from pipeline.annotation.brush import mask_to_rle
from pipeline.annotation.configured import read_receipt, write_receipt
from pipeline.annotation.files import (
    ExportedAnnotation,
    FilesBackend,
    FilesParams,
    ReadOptions,
    get_format,
    resolve_corrections,
    sniff_format,
)
from pipeline.annotation.formats_labelstudio import annotations_from_task, mask_from_results
from pipeline.annotation.labelstudio import LabelStudioParams, label_config, make_backend
from pipeline.core import io
from pipeline.core.errors import ConfigError, UserError
from pipeline.core.params import ParamsError, Paths
from pipeline.core.secrets import get_secret, read_dotenv
from pipeline.stages.pull import apply_pull
from pipeline.stages.push import build_push_items

RING = np.array([[255, 255, 255, 0],
                 [255, 0, 255, 0],     # a hole in the middle
                 [255, 255, 255, 0],
                 [0, 0, 0, 255]], np.uint8)  # and a second part
DOT = np.array([[0, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)


def ann(mask: np.ndarray, **kw: object) -> ExportedAnnotation:
    return ExportedAnnotation(mask=mask, source="test", **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- resolution


def test_ground_truth_wins_otherwise_newest_and_disagreement_is_recorded() -> None:
    out = resolve_corrections([
        ann(RING, item_id="a", annotation_id="1", updated_at="2026-01-01T00:00:00Z"),
        ann(DOT, item_id="a", annotation_id="2", updated_at="2026-01-02T00:00:00Z"),  # newest wins
        ann(RING, item_id="b", annotation_id="3", updated_at="2026-01-01T00:00:00Z", ground_truth=True),
        ann(DOT, item_id="b", annotation_id="4", updated_at="2026-01-05T00:00:00Z"),  # newer, but not GT
    ])
    a, b = out.corrections
    assert (a.item_id, a.annotation_id, a.n_annotations) == ("a", "2", 2)
    assert a.disagreement_iou == 0.0  # DOT sits in RING's hole: no overlap
    assert (b.item_id, b.annotation_id, b.ground_truth) == ("b", "3", True)


def test_items_are_found_by_task_receipt_or_image_name_and_unknown_ones_reported() -> None:
    receipt = [ReceiptRow("aaaaaaaaaaaaaaaa", "labelstudio", "1", "7", -1, "d", "v")]
    out = resolve_corrections(
        [ann(DOT, task_id="7"), ann(DOT, image_name="photo.jpg"), ann(DOT, image_name="bbbbbbbbbbbbbbbb.png"),
         ann(DOT, task_id="99", annotation_id="5"), ann(DOT, item_id="c", state="draft")],
        receipt, {"photo.jpg": "cccccccccccccccc"})
    assert [c.item_id for c in out.corrections] == ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"]
    assert len(out.problems) == 1 and "matches no item" in out.problems[0].reason
    assert out.skipped == {"draft": 1}


def test_exported_annotation_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ann(np.zeros((2, 2), bool), item_id="a")
    with pytest.raises(ValueError, match="no item id"):
        ann(DOT)
    with pytest.raises(ValueError, match="state"):
        ann(DOT, item_id="a", state="maybe")


# --------------------------------------------------------------------------- Label Studio results


def test_polygon_and_rectangle_rasterise_at_original_size() -> None:
    rect = {"type": "rectanglelabels", "original_width": 10, "original_height": 4,
            "value": {"x": 20, "y": 25, "width": 50, "height": 50, "rectanglelabels": ["foreground"]}}
    m = mask_from_results([rect], ReadOptions())
    assert m is not None and m.shape == (4, 10)
    assert np.array_equal(np.argwhere(m > 0)[[0, -1]], [[1, 2], [3, 7]])
    poly = {"type": "polygonlabels", "original_width": 10, "original_height": 10,
            "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]], "polygonlabels": ["foreground"]}}
    p = mask_from_results([poly], ReadOptions())
    assert p is not None and p[0:5, 0:5].all() and not p[6:, :].any() and not p[:, 6:].any()
    other = {**poly, "value": {**poly["value"], "polygonlabels": ["sky"]}}
    only_fg = mask_from_results([other], ReadOptions(labels=("foreground",)))
    assert only_fg is not None and not only_fg.any()


def test_task_parsing_skips_cancelled_counts_drafts_and_unions_regions() -> None:
    def brush(m: np.ndarray) -> dict:
        return {"type": "brushlabels", "original_width": 4, "original_height": 4,
                "value": {"format": "rle", "rle": mask_to_rle(m), "brushlabels": ["foreground"]}}

    task = {"id": 5, "data": {"item_id": "abc", "image": "/data/local-files/?d=x/abc.jpg"}, "drafts": [{"id": 1}],
            "annotations": [
                {"id": 1, "result": [brush(RING), brush(DOT)], "completed_by": 3, "lead_time": 4.5},
                {"id": 2, "result": [], "was_cancelled": True},
                {"id": 3, "result": [], "completed_by": {"id": 4, "email": "x@y.z"}},
                {"id": 4, "result": [{"type": "brushlabels", "original_width": 4, "original_height": 4,
                                      "value": {"format": "rle", "rle": [1, 2, 3]}}]},
            ]}
    anns, problems, skipped = annotations_from_task(task, ReadOptions(), "src", {3: "ann@example.com"})
    (a,) = anns
    assert np.array_equal(a.mask, RING | DOT) and a.annotator == "ann@example.com" and a.lead_time == 4.5
    assert a.image_name == "abc.jpg" and a.task_id == "5"
    assert skipped == {"draft": 1, "cancelled": 1}
    assert len(problems) == 2
    assert "annotation 3 has no region" in problems[0].reason and problems[1].reason.startswith("annotation 4:")


# --------------------------------------------------------------------------- files backend + formats


def _brush_png_export(folder: Path) -> None:
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "export.zip", "w") as zf:
        zf.writestr("task-7-annotation-11-by-1-mask-foreground-0.png", io.encode_png(RING))
        zf.writestr("task-7-annotation-11-by-1-mask-foreground-1.png", io.encode_png(DOT))
        zf.writestr("task-7-annotation-10-by-2-mask-foreground-0.png", io.encode_png(DOT))
    np.save(folder / "task-8-annotation-12-by-1-mask-foreground-0.npy", DOT)


def test_files_backend_reads_brush_exports_and_sniffs_formats(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    _brush_png_export(folder)
    (folder / "notes.txt").write_text("not an export")
    assert sniff_format(folder / "export.zip") is get_format("labelstudio-brush-png")
    assert sniff_format(folder / "task-8-annotation-12-by-1-mask-foreground-0.npy") is get_format("labelstudio-brush-numpy")
    assert sniff_format(folder / "notes.txt") is None
    receipt = [ReceiptRow("aaaaaaaaaaaaaaaa", "files", "x", "7", -1, "d", "v"),
               ReceiptRow("bbbbbbbbbbbbbbbb", "files", "x", "8", -1, "d", "v")]
    out = FilesBackend(FilesParams(folder=folder), Paths(manifest=tmp_path / "none.parquet")).pull(receipt)
    a, b = out.corrections
    assert (a.item_id, a.annotation_id, a.n_annotations) == ("aaaaaaaaaaaaaaaa", "11", 2)  # highest id wins
    assert np.array_equal(a.mask, RING | DOT) and np.array_equal(b.mask, DOT)


def test_files_backend_json_export_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    task = {"id": 3, "annotations": [{"id": 9, "result": [{"type": "brushlabels", "original_width": 4,
            "original_height": 4, "value": {"format": "rle", "rle": mask_to_rle(RING), "brushlabels": ["fg"]}}]}],
            "data": {"item_id": "dddddddddddddddd", "image": "x.jpg"}}
    (folder / "export.json").write_text(json.dumps([task]))
    assert sniff_format(folder / "export.json") is get_format("labelstudio-json")
    (c,) = FilesBackend(FilesParams(folder=folder)).pull([]).corrections
    assert c.item_id == "dddddddddddddddd" and np.array_equal(c.mask, RING)
    (folder / "export.json").write_text("{not json")
    with pytest.raises(UserError, match=r"export\.json: cannot read it as labelstudio-json"):
        FilesBackend(FilesParams(folder=folder, format="labelstudio-json")).pull([])
    with pytest.raises(UserError, match="does not exist"):
        FilesBackend(FilesParams(folder=tmp_path / "missing")).pull([])
    with pytest.raises(ValueError, match="format must be"):
        FilesParams(format="xml-of-doom")
    with pytest.raises(ConfigError, match="unknown format"):
        get_format("xml-of-doom")


# --------------------------------------------------------------------------- stages


def _correction(item: str, mask: np.ndarray, updated: str, aid: str) -> Correction:
    return Correction(item_id=item, mask=mask, task_id="1", annotation_id=aid, annotator="a", created_at=updated,
                      updated_at=updated, lead_time=1.0, source="test")


def test_pull_never_lets_an_older_annotation_overwrite_a_newer_one(tmp_path: Path) -> None:
    paths = Paths(manifest=tmp_path / "none.parquet", corrections=tmp_path / "corr")
    item = "eeeeeeeeeeeeeeee"
    r1 = apply_pull(paths, PullOutcome(corrections=(_correction(item, RING, "2026-01-02T00:00:00Z", "2"),)), "t")
    assert r1["written"] == 1
    r2 = apply_pull(paths, PullOutcome(corrections=(_correction(item, DOT, "2026-01-01T00:00:00Z", "1"),)), "t")
    assert r2["kept_newer"] == 1 and r2["written"] == 0
    assert np.array_equal(io.read_mask(tmp_path / "corr" / "masks" / f"{item}.png"), RING)
    r3 = apply_pull(paths, PullOutcome(corrections=(_correction(item, DOT, "2026-01-03T00:00:00.5+00:00", "3"),)), "t")
    assert r3["written"] == 1
    assert np.array_equal(io.read_mask(tmp_path / "corr" / "masks" / f"{item}.png"), DOT)
    table = io.read_parquet(tmp_path / "corr" / "corrections.parquet")
    assert table["annotation_id"].tolist() == ["3"] and table["backend"].tolist() == ["t"]


def test_receipt_round_trip_and_push_items_requeue_rejected(tmp_path: Path) -> None:
    rows = [ReceiptRow("bbbbbbbbbbbbbbbb", "labelstudio", "1", "2", -1, "x", "v", status="removed"),
            ReceiptRow("aaaaaaaaaaaaaaaa", "labelstudio", "1", "1", -1, "y", "v")]
    write_receipt(tmp_path / "r.parquet", rows)
    assert read_receipt(tmp_path / "r.parquet") == sorted(rows, key=lambda r: r.item_id)
    assert read_receipt(tmp_path / "missing.parquet") == []
    with pytest.raises(UserError, match="manifest not found"):
        build_push_items(Paths(manifest=tmp_path / "nope.parquet"))


def test_push_items_from_manifest_preannotations_and_decisions(tmp_path: Path) -> None:
    from pipeline.core.items import MANIFEST_COLUMNS
    from qa.decisions import DECISION_COLUMNS

    ids = ["1111111111111111", "2222222222222222", "3333333333333333"]
    manifest = pd.DataFrame([{c: None for c in MANIFEST_COLUMNS} | {
        "item_id": i, "source_path": f"/img/{i}.jpg", "source_paths": [f"/img/{i}.jpg"], "width": 4, "height": 4,
        "orientation": 1, "mode": "RGB", "bytes": 1, "status": "ok", "error": ""} for i in ids])
    io.write_parquet(tmp_path / "manifest.parquet", manifest)
    pre = tmp_path / "pre"
    for i in ids[:2]:
        io.write_png(pre / "masks" / f"{i}.png", RING)
    io.write_parquet(pre / "preannotations.parquet", pd.DataFrame(
        [{"item_id": ids[0], "model_version": "m1", "confidence": 0.9, "uncertainty": 0.2},
         {"item_id": ids[1], "model_version": "m1", "confidence": 0.4, "uncertainty": 0.7}]))
    io.write_parquet(tmp_path / "decisions.parquet", pd.DataFrame([
        {"decision_id": 1, "item_id": ids[0], "decision": "accept", "reason": "", "fix": "", "reviewer": "r",
         "decided_at": "2026-01-01T00:00:00Z", "mask_digest": ""},
        {"decision_id": 2, "item_id": ids[0], "decision": "reject", "reason": "missed the tail", "fix": "",
         "reviewer": "rita", "decided_at": "2026-01-02T00:00:00Z", "mask_digest": ""}], columns=DECISION_COLUMNS))
    items = build_push_items(Paths(manifest=tmp_path / "manifest.parquet", preannotate=pre,
                                   decisions=tmp_path / "decisions.parquet"))
    assert [i.item_id for i in items] == [ids[0], ids[2], ids[1]]  # rejected first, then by uncertainty
    assert items[0].review_note == "rejected by rita: missed the tail" and items[0].uncertainty == 1.0
    assert items[1].mask_path is None and items[1].uncertainty == 1.0  # no pre-annotation: needs a human
    assert items[2].mask_path is not None and items[2].score == pytest.approx(0.4)
    changed = PushItem(**{**items[2].__dict__, "review_note": "again"})
    assert changed.digest() != items[2].digest()


# --------------------------------------------------------------------------- params, registry, secrets


def test_backend_registry_and_params_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown backend 'ftp'"):
        get_backend("ftp", {}, Paths(), "x")
    with pytest.raises(ConfigError, match="takes no settings"):
        get_backend("none", {"url": "x"}, Paths(), "params.yaml:annotation.none")
    assert get_backend("none", {}, Paths(), "x").pull([]).corrections == ()
    with pytest.raises(ParamsError, match="unknown key"):
        make_backend({"urll": "http://x"}, Paths())
    with pytest.raises(ParamsError, match="http"):
        make_backend({"url": "ftp://x"}, Paths())
    with pytest.raises(ValueError, match="tools"):
        LabelStudioParams(tools=("polygon",))
    with pytest.raises(ValueError, match="alpha_threshold"):
        LabelStudioParams(alpha_threshold=0)
    config = label_config(LabelStudioParams(label='fore"ground', tools=("brush", "polygon", "rectangle")))
    assert "<Label value='fore\"ground'" in config and "<PolygonLabels" in config and "<RectangleLabels" in config


def test_secret_from_env_then_dotenv_never_in_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nexport MASKLOOP_T1='from-dotenv'\nMASKLOOP_T2 = plain \n")
    assert read_dotenv(env) == {"MASKLOOP_T1": "from-dotenv", "MASKLOOP_T2": "plain"}
    assert get_secret("MASKLOOP_T1", dotenv=env) == "from-dotenv"
    monkeypatch.setenv("MASKLOOP_T1", "from-env")
    assert get_secret("MASKLOOP_T1", dotenv=env) == "from-env"
    monkeypatch.delenv("MASKLOOP_T3", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable MASKLOOP_T3"):
        get_secret("MASKLOOP_T3", what="the token", dotenv=env)
    assert get_secret("MASKLOOP_T3", dotenv=env, required=False) == ""
    env.write_text("garbage line\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=value"):
        read_dotenv(env)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").unlink()
    with pytest.raises(ConfigError, match="LABEL_STUDIO_API_KEY"):
        make_backend({}, Paths())
