"""Review decisions: the schema shared by the review dashboard (writer) and the curate stage (reader).

Reviewers' decisions are stored in SQLite (``paths.review_db``, written concurrently by the dashboard) and
exported to ``paths.decisions`` (Parquet, DVC-tracked, an input of ``curate``) by ``maskloop review-export``
(the ``decisions`` stage of dvc.yaml). One row per decision; the **latest** decision per item wins
(by ``decided_at``, then by ``decision_id``).

Columns:
- ``decision_id`` int: monotonically increasing id from the database.
- ``item_id`` str.
- ``decision`` str: ``accept`` (mask enters ground truth as is), ``reject`` (excluded, sent back for
  re-annotation with ``reason`` on the next push), ``fix`` (apply the suggested auto-fix named in ``fix``).
- ``reason`` str: required for ``reject``.
- ``fix`` str: name of a fix in :mod:`qa.fixes` for ``fix`` decisions, else "".
- ``reviewer`` str; ``decided_at`` ISO-8601 UTC str.
- ``mask_digest`` str: SHA-256 of the mask PNG the reviewer looked at ("" if unknown). A decision whose
  digest no longer matches the item's current correction is stale: curate ignores it and re-queues the item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DECISION_COLUMNS = ("decision_id", "item_id", "decision", "reason", "fix", "reviewer", "decided_at", "mask_digest")
DecisionKind = Literal["accept", "reject", "fix"]
DECISION_KINDS: tuple[str, ...] = ("accept", "reject", "fix")


@dataclass(frozen=True)
class ReviewDecision:
    decision_id: int
    item_id: str
    decision: str
    reason: str
    fix: str
    reviewer: str
    decided_at: str
    mask_digest: str = ""

    def __post_init__(self) -> None:
        if self.decision not in DECISION_KINDS:
            raise ValueError(f"item {self.item_id}: decision must be one of {DECISION_KINDS}, got {self.decision!r}")
        if self.decision == "reject" and not self.reason.strip():
            raise ValueError(f"item {self.item_id}: a reject decision needs a reason")
        if self.decision == "fix" and not self.fix:
            raise ValueError(f"item {self.item_id}: a fix decision must name the fix")


def read_decisions(path: Path) -> list[ReviewDecision]:
    """All decisions in the Parquet export at ``path`` (empty when the file does not exist yet)."""
    from pipeline.core import io

    path = Path(path)
    if not path.is_file():
        return []
    df = io.read_parquet(path)
    missing = set(DECISION_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: decisions table lacks columns {sorted(missing)}")
    return [
        ReviewDecision(
            decision_id=int(r.decision_id), item_id=str(r.item_id), decision=str(r.decision), reason=str(r.reason),
            fix=str(r.fix), reviewer=str(r.reviewer), decided_at=str(r.decided_at), mask_digest=str(r.mask_digest),
        )
        for r in df.itertuples(index=False)
    ]


def latest_per_item(decisions: list[ReviewDecision]) -> dict[str, ReviewDecision]:
    """The decision that counts for each item: latest ``decided_at``, ties broken by ``decision_id``."""
    out: dict[str, ReviewDecision] = {}
    for d in sorted(decisions, key=lambda d: (d.decided_at, d.decision_id)):
        out[d.item_id] = d
    return out
