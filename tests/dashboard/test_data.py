"""Loading, filtering and paging the queue; item files; overview tables; metrics between revisions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboards import data
from pipeline.core import io
from pipeline.core.errors import UserError
from qa.checks import SEVERITIES, SEVERITY_ALIASES, severity_rank
from qa.decision_store import DecisionStore
from tests.dashboard.synth import make_project


def _queue(rows: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"flagged": True, "checks": (), "severity": "", "severity_rank": 0, "suggested_fix": "",
            "uncertainty": float("nan"), "model_version": "", "annotator": "", "split": "", "source": "",
            "decision": "", "reviewer": "", "image_path": "", "width": 1, "height": 1, "reason": ""}
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(data.QUEUE_COLUMNS))


@pytest.mark.parametrize(
    ("value", "rank"),
    [("none", 0), ("info", 1), ("warning", 2), ("error", 3), ("ERROR ", 3), ("ok", 0), ("warn", 2),
     ("critical", 3), (2, 2), (2.6, 3), ("4", 4), (None, 0), (float("nan"), 0), ("strange", 1)],
)
def test_severity_rank(value: Any, rank: int) -> None:
    assert data.severity_rank(value) == rank


def test_dashboard_ranks_severities_on_the_qa_scale() -> None:
    """One scale: the dashboard orders the words curate writes exactly as qa.checks does."""
    assert [data.severity_rank(s) for s in SEVERITIES] == [severity_rank(s) for s in SEVERITIES]
    assert {data.severity_rank(a) for a in SEVERITY_ALIASES} <= {severity_rank(s) for s in SEVERITIES}


def test_filter_and_sort_on_hand_made_queue() -> None:
    warning, error = severity_rank("warning"), severity_rank("error")
    q = _queue([
        {"item_id": "a", "checks": ("holes",), "severity": "warning", "severity_rank": warning, "uncertainty": 0.2},
        {"item_id": "b", "checks": ("islands", "holes"), "severity": "error", "severity_rank": error, "uncertainty": 0.1},
        {"item_id": "c", "checks": ("border",), "severity": "warning", "severity_rank": warning, "uncertainty": 0.9,
         "decision": "reject"},
        {"item_id": "d", "checks": (), "severity": "", "severity_rank": 0, "uncertainty": float("nan")},
    ])
    ids = lambda df: list(df["item_id"])  # noqa: E731
    assert ids(data.filter_queue(q, data.Filters())) == ["b", "c", "a", "d"]  # severity, then uncertainty
    assert ids(data.filter_queue(q, data.Filters(sort_by="uncertainty"))) == ["c", "a", "b", "d"]  # NaN last
    assert ids(data.filter_queue(q, data.Filters(sort_by="uncertainty", descending=False))) == ["b", "a", "c", "d"]
    assert ids(data.filter_queue(q, data.Filters(sort_by="item_id", descending=False))) == ["a", "b", "c", "d"]
    assert ids(data.filter_queue(q, data.Filters(checks=("holes",)))) == ["b", "a"]  # any of the item's checks
    assert ids(data.filter_queue(q, data.Filters(severities=("warning",)))) == ["c", "a"]
    assert ids(data.filter_queue(q, data.Filters(status=("undecided",)))) == ["b", "a", "d"]
    assert ids(data.filter_queue(q, data.Filters(status=("reject",)))) == ["c"]
    assert ids(data.filter_queue(q, data.Filters(search=" C "))) == ["c"]
    assert ids(data.filter_queue(q, data.Filters(checks=("holes",), severities=("error",)))) == ["b"]
    assert data.options(q, "checks") == ["border", "holes", "islands"]
    assert data.options(q, "severity") == ["warning", "error"]  # by rank


def test_paging_helpers() -> None:
    df = pd.DataFrame({"x": range(10)})
    assert list(data.page_of(df, 1, 4)["x"]) == [0, 1, 2, 3]
    assert list(data.page_of(df, 3, 4)["x"]) == [8, 9]
    assert list(data.page_of(df, 99, 4)["x"]) == [8, 9]  # clamped to the last page
    assert list(data.page_of(df, 0, 4)["x"]) == [0, 1, 2, 3]
    assert data.n_pages(10, 4) == 3 and data.n_pages(0, 4) == 1
    with pytest.raises(ValueError, match="page_size"):
        data.page_of(df, 1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"status": ("maybe",)}, "unknown status"), ({"sort_by": "colour"}, "cannot sort by")],
)
def test_bad_filters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        data.Filters(**kwargs)


def test_load_queue_joins_every_table(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=6)
    proj = data.open_project(p.params)
    DecisionStore(proj.review_db).record(p.flagged[0], "reject", "ana", reason="x")
    q = data.load_queue(proj).set_index("item_id")
    assert set(q.index) == set(p.flagged)
    row = q.loc[p.flagged[0]]
    assert row["decision"] == "reject" and row["reviewer"] == "ana"
    assert row["model_version"] in ("grabcut-v1", "deeplabv3-r1") and row["annotator"] and row["split"]
    assert isinstance(row["checks"], tuple) and len(row["checks"]) == 2
    assert Path(row["image_path"]).is_file()
    assert len(data.load_queue(proj, include_all=True)) == 6


def test_load_queue_with_only_a_manifest(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=4)
    for rel in ("data/curated", "data/preannotate", "data/corrections", "data/export", "data/composite",
                "data/trimap", "data/matte"):
        import shutil

        shutil.rmtree(p.root / rel)
    proj = data.open_project(p.params)
    assert data.load_queue(proj).empty  # no QA report: nothing flagged
    everything = data.load_queue(proj, include_all=True)
    assert len(everything) == 4 and set(everything["model_version"]) == {""}
    files = data.item_files(proj, p.item_ids[0], everything["image_path"][0])
    assert files.main_mask() is None and files.reviewed_mask is None and files.composite is None
    assert data.findings(proj, p.item_ids[0]).empty
    assert data.check_counts(proj).empty and data.correction_effort(proj).empty
    assert data.curated_row(proj, p.item_ids[0]) == {}


def test_missing_manifest_and_bad_table_are_clear_errors(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=2)
    proj = data.open_project(p.params)
    io.write_parquet(p.root / "data/curated/review_queue.parquet", pd.DataFrame({"id": ["x"]}))
    with pytest.raises(UserError, match=r"review_queue.parquet: table lacks column\(s\) \['item_id'\]"):
        data.load_queue(proj)
    (p.root / "data/ingest/manifest.parquet").unlink()
    with pytest.raises(UserError, match="no manifest yet"):
        data.load_queue(proj)


def test_item_files_digest_and_findings(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=4)
    proj = data.open_project(p.params)
    iid = p.flagged[0]
    files = data.item_files(proj, iid, p.root / "data/raw/images/img_00000.png")
    assert files.correction and files.preannotation and files.trimap and files.alpha and files.composite
    assert files.reviewed_mask == files.correction == files.main_mask()
    # the composite panel reads tile 0 of the item's image strip (the synthetic project's is the flipped photo)
    assert files.composite.name == f"{iid}_00"
    photo = io.read_image(p.root / "data/raw/images" / f"{Path(str(files.image)).name}")
    assert files.composite.read_image().shape == photo.shape
    (p.root / "data/composite/image_strips" / f"{iid}.png").write_bytes(b"not a png")
    with pytest.raises(io.ImageError, match=rf"image_strips/{iid}\.png: composite {iid}_00 .*not a PNG"):
        files.composite.read_image()
    import hashlib

    assert data.file_digest(files.correction) == hashlib.sha256(files.correction.read_bytes()).hexdigest()
    assert data.file_digest(None) == ""
    f = data.findings(proj, iid)
    assert list(f["passed"])[:2] == [False, False]  # failed first
    assert data.curated_row(proj, iid)["source"] == "correction"


def test_overview_tables(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=8)
    proj = data.open_project(p.params)
    counts = data.check_counts(proj)
    assert counts["items"].groupby(counts["check"]).sum().eq(8).all()  # every item once per check
    q = data.load_queue(proj, include_all=True, decisions={})
    dc = data.decision_counts(q)
    assert dict(zip(dc["status"], dc["items"], strict=True)) == {"undecided": 8, "accept": 0, "reject": 0, "fix": 0}
    eff = data.correction_effort(proj).set_index("model_version")
    assert eff["items"].sum() == 8 and (eff["corrected"] == eff["items"]).all()
    assert eff["median_lead_time_s"].notna().all()
    assert eff["simulated_noc90"].isna().all()  # evaluate has not run yet
    version = str(eff.index[0])
    (p.root / "metrics").mkdir(exist_ok=True)
    (p.root / "metrics/effort.json").write_text(json.dumps([
        {"model_version": f"grabcut@{version}", "mean_pixels_changed": 1234.5, "mean_noc90": 3.25},
        {"model_version": "other@gone", "mean_pixels_changed": 1.0, "mean_noc90": None},
    ]))
    eff = data.correction_effort(proj).set_index("model_version")
    assert eff.loc[version, "simulated_noc90"] == 3.25 and eff.loc[version, "mean_pixels_changed"] == 1234.5


def test_metrics_between_revisions(tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", n=2)
    proj = data.open_project(p.params)
    assert data.revisions(proj) == [data.WORKSPACE]  # not a git repository
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=p.root, check=True)
    (p.root / "metrics").mkdir()
    (p.root / "metrics/qa.json").write_text('{"a": 1, "nested": {"b": 2.5, "flag": true}, "text": "skip"}')
    subprocess.run([*git, "add", "metrics"], cwd=p.root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=p.root, check=True)
    revs = data.revisions(proj)
    assert revs[0] == data.WORKSPACE and "first" in revs[1].label
    (p.root / "metrics/qa.json").write_text('{"a": 3, "nested": {"b": 2.5}}')
    (p.root / "metrics/broken.json").write_text("{not json")
    old = data.metrics_at(proj, revs[1].rev)
    new = data.metrics_at(proj, data.WORKSPACE.rev)
    assert old == {"qa.json:a": 1.0, "qa.json:nested.b": 2.5, "qa.json:nested.flag": 1.0}
    assert new == {"qa.json:a": 3.0, "qa.json:nested.b": 2.5}
    diff = data.metrics_diff(old, new).set_index("metric")
    assert diff.loc["qa.json:a", "change"] == 2.0 and diff.loc["qa.json:nested.b", "change"] == 0.0
    assert pd.isna(diff.loc["qa.json:nested.flag", "new"])
    with pytest.raises(UserError, match="git ls-tree"):
        data.metrics_at(proj, "no-such-revision")


def test_available_fixes_lists_the_qa_registry() -> None:
    from qa.fixes import FIXES

    assert data.available_fixes() == tuple(sorted(FIXES))
