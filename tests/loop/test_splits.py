"""Split logic: deterministic, leak-free over any grouping, stratified; near-duplicate pair search and grouping."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import io
from pipeline.dataset.splits import SplitItem, assign_splits, components
from qa.near_duplicates import cluster, near_duplicate_pairs, phash

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@st.composite
def groupings(draw: st.DrawFn) -> list[SplitItem]:
    n = draw(st.integers(1, 60))
    n_groups = draw(st.integers(1, 25))
    items = []
    for i in range(n):
        groups = draw(st.lists(st.integers(0, n_groups - 1), max_size=3))
        fg = draw(st.floats(0.0, 1.0))
        items.append(SplitItem(f"{i:04x}", fg, tuple(f"g{g}" for g in groups)))
    return items


@settings(max_examples=120, deadline=None)
@given(items=groupings(), seed=st.integers(0, 2**31), shuffle_seed=st.integers(0, 1000))
def test_splits_are_leak_free_complete_and_order_independent(items: list[SplitItem], seed: int,
                                                             shuffle_seed: int) -> None:
    out = assign_splits(items, FRACTIONS, seed)
    assert sorted(out) == sorted(i.item_id for i in items)
    assert set(out.values()) <= set(FRACTIONS)
    # Leak-free: any two items sharing a group key are in the same split.
    by_group: dict[str, set[str]] = {}
    for it in items:
        for g in it.groups:
            by_group.setdefault(g, set()).add(out[it.item_id])
    assert all(len(s) == 1 for s in by_group.values()), by_group
    # Deterministic and independent of input order.
    shuffled = list(items)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert assign_splits(shuffled, FRACTIONS, seed) == out


def test_transitive_groups_are_one_component() -> None:
    items = [SplitItem("a", 0.1, ("x",)), SplitItem("b", 0.1, ("x", "y")), SplitItem("c", 0.1, ("y",)),
             SplitItem("d", 0.1, ())]
    comp = components(items)
    assert comp["a"] == comp["b"] == comp["c"] == "a"
    assert comp["d"] == "d"


def test_singletons_follow_fractions_and_strata() -> None:
    # 50 small and 50 large foregrounds: every split gets its share of each stratum.
    items = [SplitItem(f"s{i:03d}", 0.02 + i * 1e-4, ()) for i in range(50)]
    items += [SplitItem(f"l{i:03d}", 0.8 + i * 1e-4, ()) for i in range(50)]
    out = assign_splits(items, FRACTIONS, seed=3, n_strata=2)
    for prefix in ("s", "l"):
        counts = {s: sum(1 for k, v in out.items() if k.startswith(prefix) and v == s) for s in FRACTIONS}
        assert counts == {"train": 35, "val": 8, "test": 7} or counts == {"train": 35, "val": 7, "test": 8}, counts
    assert assign_splits(items, FRACTIONS, seed=4, n_strata=2) != out  # the seed matters


@pytest.mark.parametrize(
    ("fractions", "message"),
    [({"train": 0.5, "val": 0.2}, "sum to 1"), ({"train": 1.2, "val": -0.2}, ">= 0"), ({}, "no splits")],
)
def test_bad_fractions(fractions: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_splits([SplitItem("a", 0.5)], fractions, 0)


def test_duplicate_ids_and_bad_fraction_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        assign_splits([SplitItem("a", 0.1), SplitItem("a", 0.2)], FRACTIONS, 0)
    with pytest.raises(ValueError, match="item z: fg_fraction"):
        SplitItem("z", 1.5)
    with pytest.raises(ValueError, match="n_strata"):
        assign_splits([SplitItem("a", 0.1)], FRACTIONS, 0, n_strata=0)


def test_phash_groups_link_real_near_duplicates_only(ecssd: Path) -> None:
    """The one near-duplicate system (qa.near_duplicates, curate's hash and threshold) on real photos."""
    paths = sorted((ecssd / "images").glob("*.jpg"))[:6]
    images = [io.read_image(p) for p in paths]
    h, w = images[0].shape[:2]
    # A near-duplicate: resized and re-encoded as JPEG at low quality.
    small = cv2.resize(images[0], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    dup = io.decode_image_bytes(io.encode_jpeg(small, quality=60))
    hashes = {f"i{k}": phash(im) for k, im in enumerate(images)}
    hashes["dup"] = phash(dup)
    groups = cluster(hashes, max_distance=8)
    assert groups["dup"] == groups["i0"] == "dup"
    assert len({groups[f"i{k}"] for k in range(1, 6)}) == 5
    assert groups["i1"] != groups["i0"]
    assert cluster(hashes, -1)["dup"] == "dup"  # no distance: every item alone
    assert cluster(hashes, -1)["i0"] == "i0"


def test_tiny_dataset_still_gets_every_split() -> None:
    # 4 independent items with 70/15/15 shares: greedy filling alone would put all four in train.
    items = [SplitItem(f"{i:016x}", fg_fraction=0.1 * (i + 1)) for i in range(4)]
    out = assign_splits(items, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    counts = {s: sum(v == s for v in out.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 2, "val": 1, "test": 1}
    assert out == assign_splits(list(reversed(items)), {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    # fewer components than splits: nothing can be moved without emptying train
    two = assign_splits(items[:2], {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert sorted(two.values()) in (["train", "val"], ["test", "train"])


@pytest.mark.parametrize("max_distance", [0, 3, 6, 10, 20])
def test_banded_near_duplicate_pairs_equal_all_pairs(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    # plant near-duplicates at every distance 0..12 bits, plus clumps that share whole bands
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, k, replace=False))) for k in range(13) for _ in range(8)]
    planted = np.array([base[i] ^ f for i, f in enumerate(flips)], dtype=np.uint64)
    clump = base[:40] & np.uint64(0xFFFFFFFF00000000)
    hashes = np.concatenate([base, planted, clump])
    brute = sorted((a, b) for a in range(len(hashes)) for b in range(a + 1, len(hashes))
                   if bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= max_distance)
    got = near_duplicate_pairs(hashes, max_distance)
    assert got == brute
    assert len(got) >= (8 * min(max_distance + 1, 13) if max_distance < 13 else 1)
