"""Table tests for every fix on tiny hand-drawn masks, and the perceptual hash on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import io
from qa.checks import QAParams, run_checks
from qa.fixes import FIXES, SAFE_FIXES, apply_fixes, get_fix
from qa.near_duplicates import cluster, hamming, neighbours, phash
from tests.qa.test_checks import BLOB_WITH_PINHOLE, BLOB_WITH_SPECK, DONUT, m

P = QAParams(island_max_px=1, hole_max_px=1, island_max_fraction=0.0, hole_max_fraction=0.0)


@pytest.mark.parametrize(
    ("name", "fix", "mask", "params", "expected", "changed"),
    [
        # the single-pixel island disappears, the block stays
        ("remove_speck", "remove_islands", BLOB_WITH_SPECK, P,
         np.where(np.arange(BLOB_WITH_SPECK.size).reshape(BLOB_WITH_SPECK.shape) == 4 * 8 + 6, 0, BLOB_WITH_SPECK), 1),
        # the pinhole is filled
        ("fill_pinhole", "fill_holes", BLOB_WITH_PINHOLE, P, np.where(BLOB_WITH_PINHOLE == 0, 0, 255)
         .astype(np.uint8) | m(".......\n.......\n...#...\n.......\n......."), 1),
        # the donut's large hole is NOT a small hole: fill_holes leaves it alone
        ("donut_kept", "fill_holes", DONUT, QAParams(hole_max_px=4, hole_max_fraction=0.0), DONUT, 0),
        # ... but the review-only fill_all_holes fills it (12 px)
        ("donut_filled", "fill_all_holes", DONUT, P, np.where(cv2.floodFill(DONUT.copy(), None, (0, 0), 128)[1] == 128,
                                                              0, 255).astype(np.uint8), 12),
        # antialiased pixels snap to {0, 255} at 128
        ("binarise", "binarise", m(".+##\n.-##"), P, m(".###\n..##"), 2),
        # keep_largest drops the speck too
        ("keep_largest", "keep_largest", BLOB_WITH_SPECK, QAParams(island_max_px=0, island_max_fraction=0.0),
         np.where(np.arange(BLOB_WITH_SPECK.size).reshape(BLOB_WITH_SPECK.shape) == 4 * 8 + 6, 0, BLOB_WITH_SPECK), 1),
        # two equal objects: remove_islands keeps both when they are above the limit
        ("two_objects", "remove_islands", m("##..##\n##..##"), P, m("##..##\n##..##"), 0),
    ],
)
def test_fix_table(name: str, fix: str, mask: np.ndarray, params: QAParams, expected: np.ndarray,
                   changed: int) -> None:
    before = mask.copy()
    res = FIXES[fix](mask, params)
    assert np.array_equal(mask, before), "fixes must not modify their input"
    assert res.fix == fix and res.changed == changed, name
    assert res.mask.dtype == np.uint8 and set(np.unique(res.mask)) <= {0, 255}
    assert np.array_equal(res.mask, expected), (name, res.mask)


def test_fix_resolves_its_finding() -> None:
    # after the safe fixes, islands/holes/non_binary all pass on a mask that had all three problems
    bad = BLOB_WITH_SPECK.copy()
    bad[2, 2] = 0  # pinhole
    bad[3, 4] = 200  # soft pixel (foreground after binarising)
    rep = run_checks(bad, P)
    assert {f.check for f in rep.failed()} >= {"islands", "holes", "non_binary"}
    fixed, applied = apply_fixes(bad, SAFE_FIXES, P)
    assert [a.fix for a in applied] == ["binarise", "remove_islands", "fill_holes"]
    rep2 = run_checks(fixed, P)
    assert all(rep2.get(c).passed for c in ("islands", "holes", "non_binary"))  # type: ignore[union-attr]


def test_fix_on_many_islands_is_exact() -> None:
    # a real-looking mask with 40 random specks: removal equals OpenCV's component filter
    rng = np.random.default_rng(3)
    mask = np.zeros((200, 300), np.uint8)
    cv2.ellipse(mask, (150, 100), (80, 60), 0, 0, 360, 255, -1)
    for _ in range(40):
        y, x = rng.integers(0, 200), rng.integers(0, 300)
        mask[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = 255
    params = QAParams(island_max_px=10, island_max_fraction=0.0)
    res = FIXES["remove_islands"](mask, params)
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask >= 128).astype(np.uint8), connectivity=8)
    big = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
    keep = [k for k in range(1, n) if k == big or stats[k, cv2.CC_STAT_AREA] > 10]
    expected = np.where(np.isin(labels, keep), 255, 0).astype(np.uint8)
    assert np.array_equal(res.mask, expected)


def test_unknown_fix() -> None:
    with pytest.raises(ValueError, match="unknown fix 'blur'; known fixes"):
        get_fix("blur")
    with pytest.raises(ValueError, match="unknown fix"):
        apply_fixes(np.zeros((2, 2), np.uint8), ["blur"], P)


def test_phash_real_photos(ecssd: Path) -> None:
    photos = sorted((ecssd / "images").glob("*.jpg"))[:30]
    images = [io.read_image(p) for p in photos]
    hashes = {p.stem: phash(img) for p, img in zip(photos, images, strict=True)}
    assert all(len(h) == 16 for h in hashes.values())
    # distinct photos: no near-duplicate group
    groups = cluster(hashes, 8)
    assert all(groups[k] == k for k in hashes)
    # recompressed + resized copies join their original's group, and the group id is the smallest id
    img = images[0]
    copy = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    copy = io.decode_image_bytes(io.encode_jpeg(copy, quality=60))
    hashes2 = {**hashes, "zz_copy": phash(copy), "aa_copy": phash(np.clip(img.astype(int) + 20, 0, 255)
                                                                   .astype(np.uint8))}
    groups2 = cluster(hashes2, 8)
    assert groups2["zz_copy"] == groups2[photos[0].stem] == groups2["aa_copy"] == photos[0].stem  # smallest id
    assert hamming(hashes2["zz_copy"], hashes[photos[0].stem]) <= 8
    near = neighbours(hashes2, groups2)
    assert near["zz_copy"] == (photos[0].stem, "aa_copy") and near[photos[1].stem] == ()


def test_cluster_transitive_and_errors() -> None:
    # a-b differ in 2 bits, b-c in 2 bits, a-c in 4: with max 2 all three join through b
    hashes = {"a": "0000000000000000", "b": "0000000000000003", "c": "000000000000000f", "d": "ffffffffffffffff"}
    assert cluster(hashes, 2) == {"a": "a", "b": "a", "c": "a", "d": "d"}
    assert cluster(hashes, 1) == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert cluster({}, 3) == {}
    with pytest.raises(ValueError, match="phash needs"):
        phash(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="empty image"):
        phash(np.zeros((0, 3), np.uint8))


def test_qa_check_command(tmp_path: Path, ecssd: Path) -> None:
    from tests.conftest import maskloop

    # the clean ECSSD 0001 mask carries one 1-px speck: a warning, exit 0 with the default --fail-on error
    proc = maskloop("qa-check", str(ecssd / "masks" / "0001.png"), "--image", str(ecssd / "images" / "0001.jpg"),
                    cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("WARNING islands") and "[fix: remove_islands]" in ln for ln in lines)
    assert any(ln.startswith("ok      edge_alignment") for ln in lines)
    proc = maskloop("qa-check", str(ecssd / "masks" / "0001.png"), "--fail-on", "warning", cwd=tmp_path,
                    check=False)
    assert proc.returncode == 1
    proc = maskloop("qa-check", str(tmp_path / "missing.png"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "missing.png: cannot read file" in proc.stderr
    proc = maskloop("qa-check", str(ecssd / "masks" / "0001.png"), "--fail-on", "fatal", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--fail-on must be one of" in proc.stderr
