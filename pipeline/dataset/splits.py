"""Pure split logic: deterministic, stratified, grouped (leak-free) train/val/test assignment.

:func:`assign_splits` takes one :class:`SplitItem` per item (its foreground fraction and the keys of the
groups it belongs to: near-duplicate cluster, composite lineage, anything that must not straddle splits)
and returns ``item_id -> split``. Guarantees:

- **Leak-free.** Items connected through any shared group key (transitively: union-find) always land in
  the same split, so an image, its near-duplicates and every composite made from them are on one side.
- **Deterministic.** The result depends only on the items, the fractions and the seed (never on input
  order): components are ordered by a seeded hash of their smallest item id.
- **Stratified.** Components are binned by mean foreground fraction into ``n_strata`` quantile bins; in
  each bin, components go one by one to the split furthest below its target share (largest deficit), so
  every split gets its share of small, medium and large foregrounds.

Near-duplicate groups come from curation (``curated.parquet`` ``dup_group``, :mod:`qa.near_duplicates`):
the export passes each item's group as one of its group keys; there is no second hash here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qa.near_duplicates import UnionFind

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitItem:
    """One item to split. ``fg_fraction`` in ``[0, 1]``; ``groups``: keys that tie items together."""

    item_id: str
    fg_fraction: float
    groups: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fg_fraction <= 1.0 or self.fg_fraction != self.fg_fraction:
            raise ValueError(f"item {self.item_id}: fg_fraction must be in [0, 1], got {self.fg_fraction}")


def components(items: Iterable[SplitItem]) -> dict[str, str]:
    """``item_id -> component id`` (the smallest item id in the component) over shared group keys."""
    uf = UnionFind()
    ids: list[str] = []
    for it in items:
        ids.append(it.item_id)
        uf.find("i:" + it.item_id)
        for g in it.groups:
            uf.union("i:" + it.item_id, "g:" + g)
    by_root: dict[str, list[str]] = {}
    for i in ids:
        by_root.setdefault(uf.find("i:" + i), []).append(i)
    out: dict[str, str] = {}
    for members in by_root.values():
        comp = min(members)
        for m in members:
            out[m] = comp
    return out


def _seeded_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}\0{text}".encode()).hexdigest()


def assign_splits(
    items: Sequence[SplitItem],
    fractions: Mapping[str, float],
    seed: int,
    n_strata: int = 3,
) -> dict[str, str]:
    """Assign every item to a split (keys of ``fractions``, e.g. train/val/test) leak-free and stratified.

    ``fractions``: non-negative shares that sum to 1 (within 1e-6). Raises ``ValueError`` for duplicate
    item ids or bad fractions. The largest-share split is filled first; when there are at least as many
    components as splits with a positive share, every such split gets at least one component (so a tiny
    dataset still has a test split), taken from the split holding the most components.
    """
    if not fractions:
        raise ValueError("no splits given")
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    if n_strata < 1:
        raise ValueError(f"n_strata must be >= 1, got {n_strata}")
    seen: set[str] = set()
    for it in items:
        if it.item_id in seen:
            raise ValueError(f"duplicate item id {it.item_id!r} in split input")
        seen.add(it.item_id)
    if not items:
        return {}
    comp_of = components(items)
    fg: dict[str, list[float]] = {}
    for it in items:
        fg.setdefault(comp_of[it.item_id], []).append(it.fg_fraction)
    comps = sorted(fg)
    mean_fg = {c: float(np.mean(fg[c])) for c in comps}
    size = {c: len(fg[c]) for c in comps}
    # Quantile strata over components (ties broken by the seeded order, so equal values still spread out).
    order = sorted(comps, key=lambda c: (mean_fg[c], _seeded_key(seed, c)))
    strata: list[list[str]] = [[] for _ in range(min(n_strata, len(order)))]
    for rank, c in enumerate(order):
        strata[rank * len(strata) // len(order)].append(c)
    names = sorted(fractions, key=lambda s: (-fractions[s], s))
    count = dict.fromkeys(names, 0)
    out: dict[str, str] = {}
    total_done = 0
    for stratum in strata:
        local = dict.fromkeys(names, 0)
        local_done = 0
        # Big components first (hardest to place), then seeded order.
        for c in sorted(stratum, key=lambda c: (-size[c], _seeded_key(seed, c))):
            n = size[c]

            keys = {
                # Stratum deficit first, then global deficit, then the split order (largest share first).
                s: (
                    -(fractions[s] * (local_done + n) - local[s]),
                    -(fractions[s] * (total_done + n) - count[s]),
                    names.index(s),
                )
                for s in names
                if fractions[s] > 0
            }
            best = min(keys, key=keys.__getitem__)
            local[best] += n
            count[best] += n
            local_done += n
            total_done += n
            out[c] = best
    _fill_empty_splits(out, size, [s for s in names if fractions[s] > 0], seed)
    return {it.item_id: out[comp_of[it.item_id]] for it in items}


def _fill_empty_splits(out: dict[str, str], size: Mapping[str, int], names: Sequence[str], seed: int) -> None:
    """Move whole components (smallest first, seeded order) into empty splits while a donor split has >1."""
    for target in names:
        if any(v == target for v in out.values()):
            continue
        members = {s: sorted((c for c, v in out.items() if v == s), key=lambda c: (size[c], _seeded_key(seed, c)))
                   for s in names}
        donor = max(names, key=lambda s: (len(members[s]), -names.index(s)))
        if len(members[donor]) <= 1:
            return
        out[members[donor][0]] = target
