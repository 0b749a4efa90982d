"""Curate's policy as pure functions: does an item enter the ground truth, which fixes run, does it need review.

:func:`include` decides from the item's mask source, QA findings and latest review decision whether the mask is
included (and why not), whether a human verified it, and which fixes to apply; after the fixes ran,
:func:`queue` decides whether the item goes to the review queue. ``curate`` (:mod:`pipeline.stages.curate`) does
the file I/O around them. Rules, in order (the first that applies wins):

1. no readable mask -> excluded (the read error), unless a blocking finding says more;
2. a blocking finding (``readable``, ``size_mismatch``) -> excluded; no decision can include it;
3. a valid ``reject`` -> excluded with the reviewer's reason;
4. an error finding and no valid ``accept``/``fix`` -> excluded (accept it in review to include it);
5. not verified by a human (no correction, no accept/fix) and ``include_unverified`` false -> excluded;
6. a ``fix`` decision naming an unknown fix -> excluded (and queued with that reason).

A decision is *stale* when it was made on another mask (its ``mask_digest`` differs from the current one); a stale
decision counts as none and queues the item.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qa.checks import Finding, severity_rank

SOURCE_CORRECTION = "correction"
SOURCE_PREANNOTATION = "preannotation"
BLOCKING_CHECKS = ("readable", "size_mismatch")
FIX_FOR_CHECK = {"non_binary": "binarise", "islands": "remove_islands", "holes": "fill_holes"}


@dataclass(frozen=True)
class Inclusion:
    """What :func:`include` decided. ``decision`` is the valid (non-stale) decision or None; ``kind`` its kind
    (``""`` when none); ``fixes`` the fixes to apply, in order (auto fixes for failed checks, then the reviewer's)."""

    included: bool
    reason: str
    verified: bool
    stale: bool
    decision: Mapping[str, Any] | None
    kind: str
    blocking: bool
    fixes: tuple[str, ...]


def include(source: str, mask_error: str, has_mask: bool, findings: Sequence[Finding],
            decision: Mapping[str, Any] | None, source_digest: str, include_unverified: bool,
            auto_fixes: Sequence[str], known_fixes: Collection[str]) -> Inclusion:
    """Apply the module's rules 1-6 to one item. ``source`` is ``correction``, ``preannotation`` or ``""`` (no
    mask yet); ``mask_error`` says why the mask could not be read; ``decision`` is the latest review decision
    (a :data:`qa.decisions.DECISION_COLUMNS` mapping) or None."""
    stale = bool(decision and decision["mask_digest"] and decision["mask_digest"] != source_digest)
    valid = decision if decision and not stale else None
    kind = str(valid["decision"]) if valid else ""
    verified = source == SOURCE_CORRECTION or kind in ("accept", "fix")
    errors = [f for f in findings if not f.passed and f.severity == "error"]
    blocking = [f for f in errors if f.check in BLOCKING_CHECKS]

    included, reason = True, ""
    if not has_mask and not blocking:
        included, reason = False, mask_error
    elif blocking:
        included, reason = False, f"{blocking[0].check}: {blocking[0].detail}"
    elif kind == "reject" and valid:
        who = f" {valid['reviewer']}" if valid["reviewer"] else ""
        included, reason = False, f"rejected by reviewer{who}: {valid['reason']}"
    elif errors and kind not in ("accept", "fix"):
        included, reason = False, f"{errors[0].check}: {errors[0].detail} (accept it in review to include it)"
    elif not verified and not include_unverified:
        included, reason = False, "not verified by a human yet (no correction; curate.include_unverified is false)"
    elif kind == "fix" and valid and valid["fix"] not in known_fixes:
        included, reason = False, f"decision {valid['decision_id']} names unknown fix {valid['fix']!r}"

    fixes: tuple[str, ...] = ()
    if included and has_mask:
        failed = {f.check for f in findings if not f.passed}
        auto = [name for name in auto_fixes if any(FIX_FOR_CHECK.get(c) == name for c in failed)]
        fixes = tuple(auto + ([str(valid["fix"])] if kind == "fix" and valid else []))
    return Inclusion(included, reason, verified, stale, valid, kind, bool(blocking), fixes)


def queue(inc: Inclusion, source: str, decision: Mapping[str, Any] | None, findings: Sequence[Finding],
          applied_fixes: Collection[str], include_unverified: bool, min_severity: str,
          known_fixes: Collection[str]) -> tuple[bool, str]:
    """(queued, queue reason) once the fixes ran: a reviewer's decision is wanted for a mask that could enter the
    ground truth and has unresolved findings at ``min_severity`` or above (a fix that ran resolves its finding);
    a stale decision always queues; items without any mask wait for (pre-)annotation, not for review."""
    min_rank = severity_rank(min_severity)
    unresolved = [f for f in findings if not f.passed and not (f.fix and f.fix in applied_fixes)
                  and severity_rank(f.severity) >= min_rank]
    reason = ""
    if inc.stale:
        reason = f"decision {decision['decision_id'] if decision else ''} is stale (the mask changed since)"
    waiting = bool(source) and (inc.verified or include_unverified) and inc.kind not in ("accept", "fix", "reject")
    queued = bool(inc.stale or (waiting and unresolved) or (unresolved and inc.blocking and source))
    if inc.kind in ("accept", "fix") and not inc.stale:
        queued = inc.blocking
    if inc.kind == "fix" and inc.decision and inc.decision["fix"] not in known_fixes:
        queued, reason = True, inc.reason
    return queued, reason
