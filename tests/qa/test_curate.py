"""The curate stage end to end on real ECSSD photos: corrections, pre-annotations, review decisions,
bad inputs, incremental re-runs and the tables it writes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core import io
from pipeline.core.errors import ConfigError
from pipeline.core.params import ParamsError, load_section
from pipeline.stages import curate, ingest
from qa.checks import QAParams
from qa.decisions import DECISION_COLUMNS
from qa.near_duplicates import cluster
from qa.report import CURATED_COLUMNS, QUEUE_COLUMNS, REPORT_COLUMNS
from tests.conftest import REPO, maskloop

N = 7


@pytest.fixture
def proj(tmp_path: Path, ecssd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A project with N real photos ingested; returns item ids (sorted) mapped to their ECSSD mask."""
    root = tmp_path / "proj"
    (root / "data" / "raw" / "images").mkdir(parents=True)
    text = (REPO / "params.yaml").read_text()
    text = text.replace("workers: 0 ", "workers: 1 ").replace("include_unverified: true", "include_unverified: false")
    text = text.replace("progress: true", "progress: false")
    (root / "params.yaml").write_text(text)
    names = sorted(p.stem for p in (ecssd / "images").glob("*.jpg"))[:N]
    for n in names:
        shutil.copy(ecssd / "images" / f"{n}.jpg", root / "data" / "raw" / "images" / f"{n}.jpg")
    monkeypatch.chdir(root)
    manifest = ingest.run(Path("params.yaml"))
    by_path = {Path(p).stem: i for p, i in zip(manifest["source_path"], manifest["item_id"], strict=True)}
    ids = {by_path[n]: io.read_gray(ecssd / "masks" / f"{n}.png") for n in names}
    return {"root": root, "ids": dict(sorted(ids.items()))}


def write_correction(item_id: str, mask: np.ndarray | bytes) -> str:
    data = mask if isinstance(mask, bytes) else io.encode_png(mask)
    io.write_bytes(Path("data/corrections/masks") / f"{item_id}.png", data)
    return hashlib.sha256(data).hexdigest()


def write_corrections_table(ids: list[str]) -> None:
    io.write_parquet(Path("data/corrections/corrections.parquet"), pd.DataFrame({"item_id": ids}))


def write_decisions(rows: list[dict[str, object]]) -> None:
    full = [{"reason": "", "fix": "", "reviewer": "rita", "decided_at": f"2026-11-25T10:00:{i:02d}Z",
             "mask_digest": "", "decision_id": i + 1, **r} for i, r in enumerate(rows)]
    io.write_parquet(Path("data/review/decisions.parquet"), pd.DataFrame(full, columns=list(DECISION_COLUMNS)))


def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, object]]:
    c = io.read_parquet(Path("data/curated/curated.parquet")).set_index("item_id")
    r = io.read_parquet(Path("data/curated/qa_report.parquet"))
    q = io.read_parquet(Path("data/curated/review_queue.parquet"))
    return c, r, q, io.read_json(Path("metrics/qa.json"))


def test_curate_end_to_end(proj: dict[str, object]) -> None:
    ids: dict[str, np.ndarray] = proj["ids"]  # type: ignore[assignment]
    k = list(ids)
    gt = [ids[i] for i in k]
    # k0: correction with a speck and a pinhole -> safe fixes, included, verified, not queued
    m0 = gt[0].copy()
    ys, xs = np.nonzero(cv2.dilate(gt[0], np.ones((15, 15), np.uint8)) == 0)
    m0[ys[len(ys) // 2], xs[len(xs) // 2]] = 255
    ys, xs = np.nonzero(cv2.erode(gt[0], np.ones((15, 15), np.uint8)) == 255)
    m0[ys[len(ys) // 2], xs[len(xs) // 2]] = 0
    write_correction(k[0], m0)
    # k1: correction shifted by 25 px -> edge_alignment warning -> queued
    h, w = gt[1].shape
    d1 = write_correction(k[1], cv2.warpAffine(gt[1], np.float32([[1, 0, 25], [0, 1, 0]]), (w, h),
                                               flags=cv2.INTER_NEAREST))
    # k2: only a pre-annotation (no human correction) -> excluded while include_unverified is false
    io.write_png(Path("data/preannotate/masks") / f"{k[2]}.png", gt[2])
    # k3: listed in corrections.parquet, file missing -> readable error
    # k4: wrong size -> size_mismatch error
    write_correction(k[4], gt[4][:-10, :])
    # k5: three different channels -> unreadable
    rgb = np.dstack([gt[5], gt[5] // 2, np.zeros_like(gt[5])])
    write_correction(k[5], io.encode_png(rgb))
    # k6: antialiased correction with a pre-annotation beside it -> binarised; disagreement measured
    write_correction(k[6], cv2.GaussianBlur(gt[6], (0, 0), 1.0))
    io.write_png(Path("data/preannotate/masks") / f"{k[6]}.png", gt[6])
    write_corrections_table([k[0], k[1], k[3], k[4], k[5], k[6]])

    result = curate.run(Path("params.yaml"))
    assert result.n_failed == 0
    c, r, q, metrics = tables()
    assert list(c.reset_index().columns) == list(CURATED_COLUMNS)
    assert list(r.columns) == list(REPORT_COLUMNS) and list(q.columns) == list(QUEUE_COLUMNS)
    assert list(c.index) == k

    assert c.loc[k[0], "included"] and c.loc[k[0], "verified"] and c.loc[k[0], "source"] == "correction"
    assert c.loc[k[0], "fixes"] == "remove_islands,fill_holes"
    out0 = io.read_mask(Path("data/curated/masks") / f"{k[0]}.png")
    assert np.array_equal(out0, gt[0])  # the fixes restored the ground truth exactly
    assert c.loc[k[0], "mask_digest"] == hashlib.sha256(
        (Path("data/curated/masks") / f"{k[0]}.png").read_bytes()).hexdigest()
    row0 = r[(r.item_id == k[0]) & (r.check == "islands")].iloc[0]
    assert not row0.passed and row0.fixed and row0.severity == "warning" and row0.region

    assert c.loc[k[1], "included"] and k[1] in set(q.item_id)
    q1 = q[q.item_id == k[1]].iloc[0]
    assert "edge_alignment" in q1.checks and q1.max_severity == "warning"

    assert not c.loc[k[2], "included"] and not c.loc[k[2], "verified"]
    assert "not verified by a human" in c.loc[k[2], "excluded_reason"]
    assert k[2] not in set(q.item_id)  # waiting for annotation, not for review
    assert not (Path("data/curated/masks") / f"{k[2]}.png").exists()

    assert not c.loc[k[3], "included"] and "file is missing" in c.loc[k[3], "excluded_reason"]
    assert not c.loc[k[4], "included"] and c.loc[k[4], "excluded_reason"].startswith("size_mismatch")
    assert not c.loc[k[5], "included"] and "3 channels" in c.loc[k[5], "excluded_reason"]
    for bad in (k[3], k[4], k[5]):
        assert q[q.item_id == bad].iloc[0].max_severity == "error"

    assert c.loc[k[6], "fixes"] == "binarise" and c.loc[k[6], "included"]
    assert 0.95 < c.loc[k[6], "iou_vs_preannotation"] <= 1.0 and np.isnan(c.loc[k[0], "iou_vs_preannotation"])
    assert set(r[r.item_id == k[6]].check) >= {"disagreement", "non_binary", "near_duplicate", "edge_alignment"}
    assert set(r.check[r.item_id == k[3]]) == {"readable", "near_duplicate"}

    assert metrics["items"] == N and metrics["included"] == 3 and metrics["included_unverified"] == 0
    # mask checks ran on k0, k1, k2 (pre-annotation), k4 (wrong size but readable), k6
    assert metrics["checks"]["islands"] == {"checked": 5, "failed": 1, "fixed": 1}  # type: ignore[index]
    assert metrics["review_queue"] == len(q) == 4
    assert (c["dup_group"] == c.index).all()  # distinct photos

    # review decisions: accept k1 (current digest), reject k0, a stale one for k6, a fix for k2 (unverified)
    write_decisions([
        {"item_id": k[1], "decision": "accept", "mask_digest": d1},
        {"item_id": k[0], "decision": "reject", "reason": "hair cut off"},
        {"item_id": k[6], "decision": "accept", "mask_digest": "0" * 64},
        {"item_id": k[2], "decision": "fix", "fix": "fill_all_holes"},
    ])
    result = curate.run(Path("params.yaml"))
    assert result.n_computed == 4  # only the items whose decision changed
    c, r, q, metrics = tables()
    assert c.loc[k[1], "decision"] == "accept" and k[1] not in set(q.item_id)
    assert not c.loc[k[0], "included"] and c.loc[k[0], "excluded_reason"] == "rejected by reviewer rita: hair cut off"
    assert not (Path("data/curated/masks") / f"{k[0]}.png").exists()
    assert c.loc[k[6], "stale_decision"] and c.loc[k[6], "decision"] == "" and c.loc[k[6], "included"]
    assert "stale" in q[q.item_id == k[6]].iloc[0].reason
    # a reviewer's fix on a pre-annotation makes it human-verified ground truth
    assert c.loc[k[2], "included"] and c.loc[k[2], "verified"] and c.loc[k[2], "source"] == "preannotation"
    assert metrics["rejected"] == 1 and metrics["stale_decisions"] == 1

    # nothing changed: nothing recomputed, byte-identical tables
    before = {p: p.read_bytes() for p in Path("data/curated").glob("*.parquet")}
    assert curate.run(Path("params.yaml")).n_computed == 0
    assert before == {p: p.read_bytes() for p in Path("data/curated").glob("*.parquet")}


def test_include_unverified_and_cli(proj: dict[str, object]) -> None:
    ids: dict[str, np.ndarray] = proj["ids"]  # type: ignore[assignment]
    root: Path = proj["root"]  # type: ignore[assignment]
    for i, mask in ids.items():
        io.write_png(Path("data/preannotate/masks") / f"{i}.png", mask)
    text = Path("params.yaml").read_text().replace("include_unverified: false", "include_unverified: true")
    Path("params.yaml").write_text(text)
    proc = maskloop("curate", cwd=root)
    assert "NOT verified by a human" in proc.stderr + proc.stdout
    c, r, q, metrics = tables()
    assert c["included"].all() and not c["verified"].any() and (c["source"] == "preannotation").all()
    assert metrics["included_unverified"] == N
    status = maskloop("status", cwd=root).stdout
    assert "[qa]" in status and f"{N} of {N} items in ground truth" in status and "unverified masks are included" in status
    # same photo twice under another name would be one item; a resized copy is a near-duplicate
    first = sorted((root / "data/raw/images").glob("*.jpg"))[0]
    img = io.read_image(first)
    io.write_bytes(root / "data/raw/images/copy.jpg", io.encode_jpeg(cv2.resize(img, (img.shape[1] // 2,
                                                                                        img.shape[0] // 2))))
    manifest = ingest.run(Path("params.yaml"))
    new_id = manifest.loc[manifest.source_path.str.endswith("copy.jpg"), "item_id"].iloc[0]
    curate.run(Path("params.yaml"))
    c, r, q, _ = tables()
    orig_id = manifest.loc[manifest.source_path == first.relative_to(root).as_posix(), "item_id"].iloc[0]
    assert c.loc[new_id, "dup_group"] == c.loc[orig_id, "dup_group"] == min(new_id, orig_id)
    # dup_group is the one near-duplicate system (qa.near_duplicates at qa.phash_max_distance) that export's
    # split guard reads: recomputing it from the written hashes gives the same groups.
    qa_params = load_section(Path("params.yaml"), "qa", QAParams)
    groups = cluster({str(k): str(h) for k, h in c["phash"].items() if h}, qa_params.phash_max_distance)
    assert groups == {k: str(c.loc[k, "dup_group"]) for k in groups}
    dup = r[(r.item_id == new_id) & (r.check == "near_duplicate")].iloc[0]
    assert not dup.passed and dup.severity == "info" and orig_id in dup.detail
    # the copy has no mask at all: excluded, not queued for review
    assert not c.loc[new_id, "included"] and new_id not in set(q.item_id)
    assert "neither a human correction nor a pre-annotation" in c.loc[new_id, "excluded_reason"]
    assert set(r.check[r.item_id == new_id]) == {"near_duplicate"}  # no mask: nothing else to check yet


def test_bad_params_and_decisions(proj: dict[str, object]) -> None:
    text = Path("params.yaml").read_text()
    Path("params.yaml").write_text(text.replace("auto_fixes: [binarise, remove_islands, fill_holes]",
                                                "auto_fixes: [binarise, keep_largest]"))
    with pytest.raises(ParamsError, match="not safe fixes"):
        curate.run(Path("params.yaml"))
    Path("params.yaml").write_text(text)
    io.write_parquet(Path("data/review/decisions.parquet"), pd.DataFrame({"item_id": ["x"]}))
    with pytest.raises(ConfigError, match="decisions table lacks columns"):
        curate.run(Path("params.yaml"))
    k = list(proj["ids"])  # type: ignore[call-overload]
    write_decisions([{"item_id": k[0], "decision": "fix", "fix": "blur"}])
    write_correction(k[0], proj["ids"][k[0]])  # type: ignore[index]
    write_corrections_table([k[0]])
    curate.run(Path("params.yaml"))
    c, _r, q, _m = tables()
    assert not c.loc[k[0], "included"] and "unknown fix 'blur'" in c.loc[k[0], "excluded_reason"]
    assert "unknown fix 'blur'" in q[q.item_id == k[0]].iloc[0].reason  # back to the reviewer
    io.write_parquet(Path("data/corrections/corrections.parquet"), pd.DataFrame({"id": [k[0]]}))
    with pytest.raises(ConfigError, match="lacks the item_id column"):
        curate.run(Path("params.yaml"))


def test_mask_formats_and_empty_accept(proj: dict[str, object]) -> None:
    ids: dict[str, np.ndarray] = proj["ids"]  # type: ignore[assignment]
    k = list(ids)
    # k0: a 16-bit correction (0/65535) is read as the same binary mask
    write_correction(k[0], io.encode_png(ids[k[0]].astype(np.uint16) * 257))
    # k1: an empty correction is excluded until a reviewer accepts it
    d1 = write_correction(k[1], np.zeros_like(ids[k[1]]))
    # k2: not a PNG at all
    write_correction(k[2], b"this is not an image")
    write_corrections_table(k[:3])
    curate.run(Path("params.yaml"))
    c, _r, q, _m = tables()
    assert c.loc[k[0], "included"] and c.loc[k[0], "fixes"] == ""
    assert np.array_equal(io.read_mask(Path("data/curated/masks") / f"{k[0]}.png"), ids[k[0]])
    assert not c.loc[k[1], "included"] and c.loc[k[1], "excluded_reason"].startswith("empty:")
    assert q[q.item_id == k[1]].iloc[0].max_severity == "error"
    assert not c.loc[k[2], "included"] and "not a decodable image" in c.loc[k[2], "excluded_reason"]
    write_decisions([{"item_id": k[1], "decision": "accept", "mask_digest": d1}])
    curate.run(Path("params.yaml"))
    c, _r, q, _m = tables()
    assert c.loc[k[1], "included"] and k[1] not in set(q.item_id)
    assert not io.read_mask(Path("data/curated/masks") / f"{k[1]}.png").any()
