"""curate's include/queue policy (qa/policy.py) as tables: one row per rule, with a comment per case."""

from __future__ import annotations

from typing import Any

import pytest

from qa.checks import Finding
from qa.policy import include, queue

FIXES = ("binarise", "remove_islands", "fill_holes")
AUTO = ("binarise", "remove_islands", "fill_holes")

OK = Finding("edge_alignment", True, "none", 0.0, 1.0)
WARN = Finding("edge_alignment", False, "warning", 0.2, 0.5, detail="edges off")
ERROR = Finding("empty", False, "error", 0.0, 0.001, detail="mask is empty")
ISLANDS = Finding("islands", False, "warning", 3.0, 1.0, fixable=True, fix="remove_islands", detail="3 specks")
BLOCK = Finding("size_mismatch", False, "error", 1.0, 0.0, detail="mask 10x10, image 20x20")


def decision(kind: str, digest: str = "d", fix: str = "", reviewer: str = "ann") -> dict[str, Any]:
    return {"decision_id": 7, "decision": kind, "reason": "because", "fix": fix, "reviewer": reviewer,
            "mask_digest": digest}


INCLUDE_CASES = [
    # (source, has_mask, findings, decision, include_unverified) -> (included, reason starts with, verified, fixes)
    ("correction", True, [OK], None, False, (True, "", True, ())),  # a clean human correction goes in
    ("preannotation", True, [OK], None, False, (False, "not verified", False, ())),  # machine mask, strict mode
    ("preannotation", True, [OK], None, True, (True, "", False, ())),  # machine mask, demo mode
    ("preannotation", True, [OK], decision("accept"), False, (True, "", True, ())),  # a reviewer accepted it
    ("correction", True, [ERROR], None, False, (False, "empty: mask is empty (accept", True, ())),  # error finding
    ("correction", True, [ERROR], decision("accept"), False, (True, "", True, ())),  # ...accepted anyway
    ("correction", True, [BLOCK], decision("accept"), False, (False, "size_mismatch", True, ())),  # blocking wins
    ("correction", True, [OK], decision("reject"), False, (False, "rejected by reviewer ann: because", True, ())),
    ("correction", True, [OK], decision("reject", digest="old"), False, (True, "", True, ())),  # stale: ignored
    ("correction", False, [], None, False, (False, "correction mask unreadable", True, ())),  # the read error
    ("correction", True, [ISLANDS], None, False, (True, "", True, ("remove_islands",))),  # auto fix
    ("correction", True, [OK], decision("fix", fix="fill_holes"), False, (True, "", True, ("fill_holes",))),
    ("correction", True, [OK], decision("fix", fix="paint"), False, (False, "decision 7 names unknown fix", True, ())),
]


@pytest.mark.parametrize(("source", "has_mask", "findings", "dec", "unverified", "want"), INCLUDE_CASES)
def test_include(source: str, has_mask: bool, findings: list[Finding], dec: dict[str, Any] | None,
                 unverified: bool, want: tuple[bool, str, bool, tuple[str, ...]]) -> None:
    inc = include(source, "" if has_mask else "correction mask unreadable: bad PNG", has_mask, findings, dec, "d",
                  unverified, AUTO, FIXES)
    included, reason, verified, fixes = want
    assert (inc.included, inc.verified, inc.fixes) == (included, verified, fixes)
    assert inc.reason.startswith(reason) if reason else inc.reason == ""


QUEUE_CASES = [
    # (source, findings, decision, applied fixes, include_unverified) -> (queued, reason starts with)
    ("correction", [OK], None, (), False, (False, "")),  # nothing to look at
    ("correction", [WARN], None, (), False, (True, "")),  # an unresolved warning wants a reviewer
    ("correction", [ISLANDS], None, ("remove_islands",), False, (False, "")),  # the auto fix resolved it
    ("preannotation", [WARN], None, (), False, (False, "")),  # unverified machine mask: it waits for annotation
    ("preannotation", [WARN], None, (), True, (True, "")),  # ...unless unverified masks may enter the dataset
    ("correction", [WARN], decision("accept"), (), False, (False, "")),  # decided: out of the queue
    ("correction", [BLOCK], decision("accept"), (), False, (True, "")),  # blocking stays queued even when accepted
    ("correction", [OK], decision("accept", digest="old"), (), False, (True, "decision 7 is stale")),  # mask changed
    ("correction", [OK], decision("fix", fix="paint"), (), False, (True, "decision 7 names unknown fix")),
    ("", [], None, (), True, (False, "")),  # no mask at all: waits for (pre-)annotation, not review
]


@pytest.mark.parametrize(("source", "findings", "dec", "applied", "unverified", "want"), QUEUE_CASES)
def test_queue(source: str, findings: list[Finding], dec: dict[str, Any] | None, applied: tuple[str, ...],
               unverified: bool, want: tuple[bool, str]) -> None:
    inc = include(source, "", bool(source), findings, dec, "d", unverified, AUTO, FIXES)
    queued, reason = queue(inc, source, dec, findings, set(applied), unverified, "warning", FIXES)
    assert queued == want[0]
    assert reason.startswith(want[1]) if want[1] else reason == ""


def test_queue_threshold_ignores_lower_severities() -> None:
    info = Finding("jaggedness", False, "info", 2.0, 1.0, detail="a bit jagged")
    inc = include("correction", "", True, [info], None, "d", False, AUTO, FIXES)
    assert queue(inc, "correction", None, [info], set(), False, "warning", FIXES) == (False, "")
    assert queue(inc, "correction", None, [info], set(), False, "info", FIXES) == (True, "")
