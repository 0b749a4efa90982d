"""The review dashboard through ``streamlit.testing.v1.AppTest``: filtering, paging, decisions, overview."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboards import data
from qa.decision_store import DecisionStore
from tests.dashboard.synth import make_project


def open_ids(at: Any) -> list[str]:
    """Item ids of the cards on the current queue page, in display order."""
    return [b.key[len("open_"):] for b in at.button if b.key and b.key.startswith("open_")]


def queue_frame(project: Any) -> pd.DataFrame:
    return data.load_queue(data.open_project(project.params), decisions={})


def test_queue_lists_flagged_items_by_severity(synth: Any, app: Any) -> None:
    at = app(synth)
    assert at.title[0].value == "Review queue"
    assert {m.label: m.value for m in at.metric}["In queue"] == str(len(synth.flagged))
    ids = open_ids(at)
    assert sorted(ids) == sorted(synth.flagged)
    q = queue_frame(synth).set_index("item_id")
    ranks = [q.loc[i, "severity_rank"] for i in ids]
    assert ranks == sorted(ranks, reverse=True)


def test_filter_by_check_severity_annotator_model_split(synth: Any, app: Any) -> None:
    at = app(synth)
    q = queue_frame(synth)
    for key, column in (("f_checks", "checks"), ("f_severity", "severity"), ("f_annotator", "annotator"),
                        ("f_model", "model_version"), ("f_split", "split")):
        value = data.options(q, column)[0]
        at.multiselect(key=key).set_value([value]).run()
        assert not at.exception
        if column == "checks":
            expected = {r.item_id for r in q.itertuples() if value in r.checks}
        else:
            expected = set(q.loc[q[column] == value, "item_id"])
        assert expected and expected != set(q["item_id"])  # the filter really narrows the queue
        assert set(open_ids(at)) == expected, key
        at.multiselect(key=key).set_value([]).run()
    assert set(open_ids(at)) == set(synth.flagged)


def test_include_unflagged_items_and_search(synth: Any, app: Any) -> None:
    at = app(synth)
    at.toggle(key="f_all").set_value(True).run()
    assert set(open_ids(at)) == set(synth.item_ids)
    target = synth.item_ids[3]
    at.text_input(key="f_search").input(target[:10]).run()
    assert open_ids(at) == [target]


def test_sort_by_uncertainty(synth: Any, app: Any) -> None:
    at = app(synth)
    at.selectbox(key="f_sort").set_value("uncertainty").run()
    q = queue_frame(synth).set_index("item_id")
    unc = [q.loc[i, "uncertainty"] for i in open_ids(at)]
    assert unc == sorted(unc, reverse=True) and len(set(unc)) > 1
    at.toggle(key="f_desc").set_value(False).run()
    unc = [q.loc[i, "uncertainty"] for i in open_ids(at)]
    assert unc == sorted(unc)


def test_paging(tmp_path: Path, app: Any) -> None:
    project = make_project(tmp_path / "big", n=60, flag_every=1, size=(40, 30), with_matting=False)
    at = app(project)
    at.selectbox(key="page_size").set_value(12).run()
    seen: list[str] = []
    first = open_ids(at)
    assert len(first) == 12
    assert at.button(key="page_prev").disabled
    for page in range(2, 6):
        seen += open_ids(at)
        at.button(key="page_next").click().run()
        assert not at.exception
        assert at.session_state["page"] == page
    seen += open_ids(at)
    assert at.button(key="page_next").disabled  # page 5 of 5
    assert len(seen) == 60 and set(seen) == set(project.item_ids)  # every item exactly once
    at.button(key="page_prev").click().run()
    assert at.session_state["page"] == 4
    # changing a filter goes back to page 1
    at.selectbox(key="f_sort").set_value("item_id").run()
    assert at.session_state["page"] == 1
    assert open_ids(at) == sorted(project.item_ids, reverse=True)[:12]


def test_reject_needs_reason_then_is_stored_with_who_and_digest(synth: Any, app: Any) -> None:
    at = app(synth, reviewer="rita")
    item = open_ids(at)[0]
    at.button(key=f"open_{item}").click().run()
    assert at.session_state["view"] == "Item" and at.session_state["item_id"] == item
    db = data.open_project(synth.params).review_db
    at.button(key="reject").click().run()
    assert any("needs a reason" in e.value for e in at.error)
    assert DecisionStore(db).all() == []
    at.text_input(key="reject_reason").input("left ear cut off").run()
    at.button(key="reject").click().run()
    assert not at.exception
    [d] = DecisionStore(db).all()
    assert (d.item_id, d.decision, d.reason, d.reviewer) == (item, "reject", "left ear cut off", "rita")
    mask = synth.root / "data/corrections/masks" / f"{item}.png"
    assert d.mask_digest == hashlib.sha256(mask.read_bytes()).hexdigest()
    order = _order()
    assert at.session_state["item_id"] == order[order.index(item) + 1]  # advanced to the next item


def _order() -> list[str]:
    """Flagged item ids in the dashboard's default order (severity, then uncertainty, descending)."""
    import os

    project = data.open_project(Path(os.environ["MASKLOOP_PARAMS"]))
    return list(data.filter_queue(data.load_queue(project, decisions={}), data.Filters())["item_id"])


def test_preset_reason_accept_and_fix(synth: Any, app: Any) -> None:
    at = app(synth)
    order = _order()
    at.button(key=f"open_{order[0]}").click().run()
    at.selectbox(key="reject_preset").set_value("mask includes background").run()
    at.button(key="reject").click().run()
    assert at.session_state["item_id"] == order[1]
    at.button(key="accept").click().run()
    assert at.session_state["item_id"] == order[2]
    fix_item = order[2]
    # the suggested fix is preselected; without a suggestion nothing is, and Apply stays off until one is chosen
    fix = queue_frame(synth).set_index("item_id").loc[fix_item, "suggested_fix"]
    if not fix:
        assert at.button(key="apply_fix").disabled
        fix = data.available_fixes()[0]
        at.selectbox(key=f"fix_choice_{fix_item}").set_value(fix).run()
    at.button(key="apply_fix").click().run()
    db = data.open_project(synth.params).review_db
    got = {d.item_id: (d.decision, d.reason, d.fix) for d in DecisionStore(db).all()}
    assert got[order[0]] == ("reject", "mask includes background", "")
    assert got[order[1]] == ("accept", "", "")
    assert got[fix_item] == ("fix", "", fix)
    # the queue shows the statuses and the status filter uses them
    at.button(key="to_queue").click().run()
    assert {m.label: m.value for m in at.metric}["Rejected"] == "1"
    at.multiselect(key="f_status").set_value(["undecided"]).run()
    assert not {order[0], order[1], order[2]} & set(open_ids(at))
    at.multiselect(key="f_status").set_value(["reject"]).run()
    assert open_ids(at) == [order[0]]


def test_apply_fix_stores_the_suggested_fix(synth: Any, app: Any) -> None:
    at = app(synth)
    q = queue_frame(synth)
    item = q.loc[q["suggested_fix"] != "", "item_id"].iloc[0]
    at.button(key=f"open_{item}").click().run()
    at.button(key="apply_fix").click().run()
    [d] = DecisionStore(data.open_project(synth.params).review_db).all()
    assert (d.item_id, d.decision, d.fix) == (item, "fix", "remove_islands")


def test_decision_without_reviewer_is_refused(synth: Any, app: Any) -> None:
    at = app(synth, reviewer="")
    item = open_ids(at)[0]
    at.button(key=f"open_{item}").click().run()
    at.button(key="accept").click().run()
    assert any("Reviewer" in e.value for e in at.error)
    assert DecisionStore(data.open_project(synth.params).review_db).all() == []
    at.text_input(key="reviewer").input("late name").run()
    at.button(key="accept").click().run()
    [d] = DecisionStore(data.open_project(synth.params).review_db).all()
    assert d.reviewer == "late name"


def test_item_view_shows_findings_and_every_panel(synth: Any, app: Any) -> None:
    at = app(synth)
    item = open_ids(at)[0]
    at.button(key=f"open_{item}").click().run()
    assert not at.exception
    findings = at.dataframe[0].value
    assert list(findings["check"])[:2] == sorted(queue_frame(synth).set_index("item_id").loc[item, "checks"])
    assert {"value", "threshold", "passed"} <= set(findings.columns)
    captions = " ".join(str(c) for img in at.get("image") for c in img.captions)
    for text in ("correction mask", "trimap", "alpha matte", f"synthetic composite ({item}_00)"):
        assert text in captions, text
    at.slider(key="opacity").set_value(0.8).run()
    assert not at.exception


def test_item_view_without_optional_inputs(tmp_path: Path, app: Any) -> None:
    project = make_project(tmp_path / "bare", n=6, with_matting=False, with_splits=False, with_corrections=False)
    at = app(project)
    item = open_ids(at)[0]
    at.button(key=f"open_{item}").click().run()
    assert not at.exception
    text = " ".join(i.value for i in at.info) + " ".join(c.value for c in at.caption)
    assert "correction missing" in text and "no trimap yet" in text and "no alpha matte yet" in text
    assert at.multiselect(key="f_split").disabled


def test_missing_manifest_is_one_clear_error(tmp_path: Path, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "empty"
    root.mkdir()
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    monkeypatch.setenv("MASKLOOP_PARAMS", str(root / "params.yaml"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboards/review.py")).run()
    assert not at.exception
    assert "no manifest yet" in at.error[0].value


def test_overview_counts_effort_and_metrics_diff(synth: Any, app: Any) -> None:
    root = synth.root
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "metrics").mkdir()
    (root / "metrics/qa.json").write_text('{"flagged": 10, "by_check": {"holes": 4}}')
    subprocess.run([*git, "add", "metrics"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "v1"], cwd=root, check=True)
    (root / "metrics/qa.json").write_text('{"flagged": 6, "by_check": {"holes": 1}, "new": 2}')
    subprocess.run([*git, "commit", "-q", "-am", "v2"], cwd=root, check=True)
    (root / "metrics/qa.json").write_text('{"flagged": 5, "by_check": {"holes": 1}, "new": 2}')  # uncommitted
    DecisionStore(data.open_project(synth.params).review_db).record(synth.flagged[0], "reject", "rita", reason="x")
    at = app(synth)
    at.radio(key="view").set_value("Overview").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Items"] == "12" and metrics["Flagged by QA"] == str(len(synth.flagged))
    assert metrics["Rejected (back to annotation)"] == "1"
    effort = at.dataframe[0].value
    assert set(effort["model_version"]) == {"grabcut-v1", "deeplabv3-r1"}
    diff = at.dataframe[1].value.set_index("metric")  # default: HEAD~0 (v2) vs workspace
    assert diff.loc["qa.json:flagged", "old"] == 6 and diff.loc["qa.json:flagged", "new"] == 5
    v1 = at.selectbox(key="rev_old").options[2].split()[0]  # labels are "<hash> <date> <subject>"
    at.selectbox(key="rev_old").set_value(v1).run()
    diff = at.dataframe[1].value.set_index("metric")
    assert diff.loc["qa.json:by_check.holes", "change"] == -3
    assert pd.isna(diff.loc["qa.json:new", "old"])


def test_choose_another_fix_and_unknown_suggested_fix(synth: Any, app: Any) -> None:
    q = queue_frame(synth)
    with_fix = q.loc[q["suggested_fix"] != "", "item_id"].iloc[0]
    # QA suggests a fix that qa.fixes does not know for one item, and says why another was queued
    table = synth.root / "data/curated/review_queue.parquet"
    rq = pd.read_parquet(table)
    other = rq.loc[rq["item_id"] != with_fix, "item_id"].iloc[0]
    rq.loc[rq["item_id"] == other, "suggested_fix"] = "magic_wand"
    rq["reason"] = ""
    rq.loc[rq["item_id"] == other, "reason"] = "decision 7 is stale (the mask changed since)"
    from pipeline.core import io

    io.write_parquet(table, rq)
    at = app(synth)
    at.button(key=f"open_{with_fix}").click().run()
    at.selectbox(key=f"fix_choice_{with_fix}").set_value("fill_holes").run()
    at.button(key="apply_fix").click().run()
    [d] = DecisionStore(data.open_project(synth.params).review_db).all()
    assert (d.item_id, d.decision, d.fix) == (with_fix, "fix", "fill_holes")
    at.session_state["item_id"] = other
    at.run()
    assert any("magic_wand" in w.value.replace("\\", "") for w in at.warning)  # Markdown-escaped name
    assert at.button(key="apply_fix").disabled
    assert any("is stale" in i.value for i in at.info)


def test_no_suggested_fix_means_nothing_preselected(synth: Any, app: Any) -> None:
    q = queue_frame(synth)
    item = q.loc[q["suggested_fix"] == "", "item_id"].iloc[0]
    at = app(synth)
    at.button(key=f"open_{item}").click().run()
    assert at.selectbox(key=f"fix_choice_{item}").value is None
    assert at.button(key="apply_fix").disabled  # pressing `f` by accident applies nothing
    at.selectbox(key=f"fix_choice_{item}").set_value("fill_holes").run()
    at.button(key="apply_fix").click().run()
    [d] = DecisionStore(data.open_project(synth.params).review_db).all()
    assert (d.item_id, d.decision, d.fix) == (item, "fix", "fill_holes")
