"""Table tests on tiny hand-drawn masks for every check (a comment per case), plus the components engine
against OpenCV's labelling (the reference implementation)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import io
from qa import checks
from qa.checks import Finding, QAParams, run_checks
from qa.components import components


def m(rows: str) -> np.ndarray:
    """Hand-drawn mask: '#' foreground (255), '.' background (0), '+' a soft value (128), '-' (40)."""
    lut = {"#": 255, ".": 0, "+": 128, "-": 40}
    lines = [ln.strip() for ln in rows.strip().splitlines()]
    return np.array([[lut[c] for c in ln] for ln in lines], dtype=np.uint8)


P = QAParams(island_max_px=1, hole_max_px=1, island_max_fraction=0.0, hole_max_fraction=0.0)

DONUT = m("""
    ..........
    .########.
    .########.
    .##....##.
    .##....##.
    .##....##.
    .########.
    .########.
    ..........
""")

BLOB_WITH_SPECK = m("""
    ........
    .####...
    .####...
    .####...
    ......#.
    ........
""")

BLOB_WITH_PINHOLE = m("""
    .......
    .#####.
    .##.##.
    .#####.
    .......
""")

DIAGONAL_TOUCH = m("""
    ......
    .###..
    .###..
    .###..
    ....#.
    ......
""")

DIAGONAL_GAP_HOLE = m("""
    .....
    .##..
    .#.#.
    ..##.
    .....
""")


@pytest.mark.parametrize(
    ("name", "mask", "params", "islands", "holes", "large_holes"),
    [
        # a 3x3 square: nothing to report
        ("square", m("....\n.##.\n.##.\n...."), P, 0, 0, 0),
        # donut with a 3x4 hole: legitimate large hole -> info only, never a small-hole finding
        ("donut", DONUT, QAParams(hole_max_px=4, hole_max_fraction=0.0), 0, 0, 1),
        # the same donut with a generous small-hole limit: its hole becomes a fixable small hole
        ("donut_small_limit", DONUT, QAParams(hole_max_px=12, hole_max_fraction=0.0), 0, 1, 0),
        # a single-pixel island away from the object
        ("single_pixel_island", BLOB_WITH_SPECK, P, 1, 0, 0),
        # a single-pixel pinhole inside the object
        ("single_pixel_hole", BLOB_WITH_PINHOLE, P, 0, 1, 0),
        # pixel touching the block diagonally: part of the object with 8-connectivity ...
        ("diagonal_8", DIAGONAL_TOUCH, QAParams(connectivity=8, island_max_px=1, island_max_fraction=0.0), 0, 0, 0),
        # ... but an island with 4-connectivity
        ("diagonal_4", DIAGONAL_TOUCH, QAParams(connectivity=4, island_max_px=1, island_max_fraction=0.0), 1, 0, 0),
        # background pixel sealed only under 4-connectivity: a hole for hole_connectivity=4 ...
        ("diag_gap_4", DIAGONAL_GAP_HOLE, QAParams(hole_connectivity=4, hole_max_px=1, hole_max_fraction=0.0),
         0, 1, 0),
        # ... but it leaks out diagonally with hole_connectivity=8 (the default): no hole
        ("diag_gap_8", DIAGONAL_GAP_HOLE, QAParams(hole_connectivity=8, hole_max_px=1, hole_max_fraction=0.0),
         0, 0, 0),
        # two equal blocks: neither is an island when above the size limit
        ("two_objects", m("##..##\n##..##"), P, 0, 0, 0),
        # a background pocket open to the image border is not a hole
        ("open_pocket", m("#.#\n#.#\n###"), P, 0, 0, 0),
    ],
)
def test_islands_and_holes(name: str, mask: np.ndarray, params: QAParams, islands: int, holes: int,
                           large_holes: int) -> None:
    rep = run_checks(mask, params)
    got = {c: rep.get(c) for c in ("islands", "holes", "large_holes")}
    assert all(f is not None for f in got.values()), name
    assert (got["islands"].value, got["holes"].value, got["large_holes"].value) == (islands, holes, large_holes), name
    assert got["islands"].passed == (islands == 0)
    assert got["holes"].passed == (holes == 0)
    if holes:
        assert got["holes"].fixable and got["holes"].fix == "fill_holes" and got["holes"].severity == "warning"
    if large_holes:
        assert got["large_holes"].severity == "info" and not got["large_holes"].fixable


def test_island_region_and_relative_limit() -> None:
    # region is the speck's box; an island limit relative to the object (12 px object x 0.1 = 1.2 px)
    f = run_checks(BLOB_WITH_SPECK, QAParams(island_max_fraction=0.1, island_max_px=0)).get("islands")
    assert f is not None and f.region == (6, 4, 7, 5) and f.threshold == pytest.approx(1.3)
    # with a relative limit below the speck's size nothing is flagged
    f = run_checks(BLOB_WITH_SPECK, QAParams(island_max_fraction=0.01, island_max_px=0)).get("islands")
    assert f is not None and f.passed


@pytest.mark.parametrize(
    ("name", "mask", "empty", "full", "fg_ok"),
    [
        # all background: empty (error) and foreground fraction too low
        ("empty", np.zeros((4, 5), np.uint8), False, True, False),
        # all foreground: full (error) and fraction too high
        ("full", np.full((4, 5), 255, np.uint8), True, False, False),
        # 4 of 20 pixels: fine
        ("normal", m(".....\n.##..\n.##..\n....."), True, True, True),
    ],
)
def test_empty_full_fraction(name: str, mask: np.ndarray, empty: bool, full: bool, fg_ok: bool) -> None:
    rep = run_checks(mask, QAParams())
    assert rep.get("empty").passed is empty, name  # type: ignore[union-attr]
    assert rep.get("full").passed is full, name  # type: ignore[union-attr]
    assert rep.get("fg_fraction").passed is fg_ok, name  # type: ignore[union-attr]
    if not empty:
        assert rep.get("empty").severity == "error"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "mask", "passed", "region", "value"),
    [
        # object inside the frame: passes
        ("inside", m(".....\n.##..\n.##..\n....."), True, None, 0.0),
        # object touching the left border on rows 1-2: 2 of 14 border pixels
        ("left", m(".....\n##...\n##...\n....."), False, (0, 1, 1, 3), 2 / 14),
        # object touching top and right in the corner (corner pixel counted once)
        ("corner", m("...##\n...##\n.....\n....."), False, (3, 0, 5, 2), 3 / 14),
    ],
)
def test_border(name: str, mask: np.ndarray, passed: bool, region: tuple[int, int, int, int] | None,
                value: float) -> None:
    f = run_checks(mask, QAParams()).get("border")
    assert f is not None
    assert f.passed is passed and f.region == region and f.value == pytest.approx(value), name
    if not passed:
        assert f.severity == "info"


@pytest.mark.parametrize(
    ("name", "mask", "passed", "count"),
    [
        # clean {0, 255}
        ("binary", m("..##\n..##"), True, 0),
        # antialiased edge: two soft pixels
        ("antialiased", m(".+##\n.-##"), False, 2),
        # values 1 and 254 (JPEG damage) count as non-binary too
        ("jpeg", np.array([[0, 1, 254, 255]], np.uint8), False, 2),
    ],
)
def test_non_binary(name: str, mask: np.ndarray, passed: bool, count: int) -> None:
    f = run_checks(mask, QAParams()).get("non_binary")
    assert f is not None and f.passed is passed, name
    assert f.value == pytest.approx(count / mask.size)
    if not passed:
        assert f.fixable and f.fix == "binarise" and f"{count} pixels" in f.detail


def test_size_mismatch_skips_image_checks() -> None:
    # mask 4x5 vs image 6x5: size_mismatch error; edge alignment cannot run and is left out
    image = np.zeros((6, 5, 3), np.uint8)
    rep = run_checks(m(".....\n.##..\n.##..\n....."), QAParams(), image=image)
    f = rep.get("size_mismatch")
    assert f is not None and not f.passed and f.severity == "error" and "mask is 5x4, image is 5x6" in f.detail
    assert rep.get("edge_alignment") is None
    # image_shape alone also enables the size check
    assert not run_checks(np.zeros((2, 2), np.uint8), QAParams(), image_shape=(3, 2)).get("size_mismatch").passed  # type: ignore[union-attr]


def _disc_scene(shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a dark textured background, and its mask (optionally shifted)."""
    rng = np.random.default_rng(0)
    img = (rng.random((120, 160)) * 40).astype(np.uint8)
    cv2.circle(img, (80, 60), 35, 220, -1)
    mask = np.zeros((120, 160), np.uint8)
    cv2.circle(mask, (80 + shift[0], 60 + shift[1]), 35, 255, -1)
    return np.repeat(img[:, :, None], 3, axis=2), mask


@pytest.mark.parametrize(
    ("name", "shift", "passed"),
    [
        # mask exactly on the disc: aligned (score 1)
        ("aligned", (0, 0), True),
        # mask shifted 12 px right: the boundary sits on flat regions, a shifted copy matches better
        ("shifted_x", (12, 0), False),
        # shifted diagonally
        ("shifted_xy", (-8, 9), False),
    ],
)
def test_edge_alignment(name: str, shift: tuple[int, int], passed: bool) -> None:
    image, mask = _disc_scene(shift)
    f = run_checks(mask, QAParams(), image=image).get("edge_alignment")
    assert f is not None and f.passed is passed, (name, f)
    if passed:
        assert f.value == pytest.approx(1.0)
    else:
        assert f.value < 0.9 and f"dx={-shift[0]:+d}px" in f.detail


def test_jaggedness_smooth_vs_stairs() -> None:
    # a smooth disc has no stair steps; the same disc rebuilt from an 8x coarser grid is blocky
    smooth = np.zeros((240, 240), np.uint8)
    cv2.circle(smooth, (120, 120), 90, 255, -1)
    coarse = np.where(cv2.resize(smooth, (30, 30), interpolation=cv2.INTER_AREA) >= 128, 255, 0).astype(np.uint8)
    blocky = cv2.resize(coarse, (240, 240), interpolation=cv2.INTER_NEAREST)
    f_s = run_checks(smooth, QAParams()).get("jaggedness")
    f_b = run_checks(blocky, QAParams()).get("jaggedness")
    assert f_s is not None and f_s.passed and f_s.value < 0.05
    assert f_b is not None and not f_b.passed and f_b.value > 0.3


@pytest.mark.parametrize(
    ("name", "pre", "corr", "iou", "passed"),
    [
        # identical masks: IoU 1, nothing changed
        ("same", m("....\n.##.\n.##.\n...."), m("....\n.##.\n.##.\n...."), 1.0, True),
        # the human halved the object: IoU 0.5 (at the threshold: passes)
        ("halved", m("....\n.##.\n.##.\n...."), m("....\n.#..\n.#..\n...."), 0.5, True),
        # the human moved the object completely: IoU 0
        ("moved", m("##..\n##..\n....\n...."), m("....\n....\n..##\n..##"), 0.0, False),
        # both empty: nothing to disagree on
        ("both_empty", np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8), 1.0, True),
    ],
)
def test_disagreement(name: str, pre: np.ndarray, corr: np.ndarray, iou: float, passed: bool) -> None:
    rep = run_checks(corr, QAParams(), pre=pre)
    f = rep.get("disagreement")
    assert f is not None and f.value == pytest.approx(iou) and f.passed is passed, name
    assert rep.disagreement is not None
    assert rep.disagreement.pixels_changed == int(np.count_nonzero((pre >= 128) != (corr >= 128)))
    assert 0.0 <= rep.disagreement.boundary_f <= 1.0


def test_boundary_f_tolerance() -> None:
    # a 1-px shift of a large square: IoU drops but boundary F within tolerance stays 1
    a = np.zeros((100, 100), bool)
    a[20:80, 20:80] = True
    b = np.roll(a, 1, axis=1)
    d = checks.disagreement(a, b, tolerance=0.01)
    assert d.tolerance_px == 1 and d.boundary_f == pytest.approx(1.0) and d.iou < 1.0
    d0 = checks.disagreement(a, np.roll(a, 5, axis=1), tolerance=0.01)
    assert d0.boundary_f < 0.6


def test_components_match_opencv() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        fg = rng.random((h, w)) < rng.random()
        for conn in (4, 8):
            f, b = components(fg, conn)
            for comps, arr, c in ((f, fg, conn), (b, ~fg, 12 - conn)):
                _n, _, st, _ = cv2.connectedComponentsWithStats(arr.astype(np.uint8), connectivity=c)
                ref = sorted((int(a), int(x), int(y), int(x + ww), int(y + hh)) for x, y, ww, hh, a in st[1:])
                ours = sorted(zip(comps.area.tolist(), comps.x0.tolist(), comps.y0.tolist(), comps.x1.tolist(),
                                  comps.y1.tolist(), strict=True))
                assert ours == ref


def test_errors() -> None:
    with pytest.raises(ValueError, match="single-channel"):
        run_checks(np.zeros((2, 2, 3), np.uint8), QAParams())
    with pytest.raises(ValueError, match="uint8"):
        run_checks(np.zeros((2, 2), np.uint16), QAParams())
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        QAParams(connectivity=6)
    with pytest.raises(ValueError, match="hole_connectivity must be 4 or 8"):
        QAParams(hole_connectivity=5)
    with pytest.raises(ValueError, match="island_max_fraction must be in"):
        QAParams(island_max_fraction=2.0)
    with pytest.raises(ValueError, match="min_fg_fraction"):
        QAParams(min_fg_fraction=0.5, max_fg_fraction=0.4)
    with pytest.raises(ValueError, match="island_max_px"):
        QAParams(island_max_px=-1)
    with pytest.raises(ValueError, match="edge_max_side"):
        QAParams(edge_max_side=8)
    with pytest.raises(ValueError, match="edge_max_shift"):
        QAParams(edge_max_shift=0)
    with pytest.raises(ValueError, match="jagged_min_run"):
        QAParams(jagged_min_run=1)
    with pytest.raises(ValueError, match="jagged_max_side"):
        QAParams(jagged_max_side=8)
    with pytest.raises(ValueError, match="phash_max_distance"):
        QAParams(phash_max_distance=65)
    with pytest.raises(ValueError, match="unknown check"):
        Finding("nope", True, "none", 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown severity"):
        Finding("islands", False, "fatal", 0.0, 0.0)
    with pytest.raises(ValueError, match="passed finding has severity 'none'"):
        Finding("islands", True, "warning", 0.0, 0.0)
    with pytest.raises(ValueError, match="needs a severity"):
        Finding("islands", False, "none", 0.0, 0.0)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        components(np.zeros((2, 2), bool), 6)
    with pytest.raises(ValueError, match="2-D"):
        components(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="differ in size"):
        checks.check_edge_alignment(np.zeros((3, 3, 3), np.uint8), np.zeros((4, 4), bool), QAParams())
    with pytest.raises(ValueError, match="differ in size"):
        checks.disagreement(np.zeros((3, 3), bool), np.zeros((4, 4), bool), 0.01)
    with pytest.raises(ValueError, match="uint8"):
        checks.check_non_binary(np.zeros((2, 2), np.float32), QAParams())


def test_readable_and_max_severity() -> None:
    f = checks.check_readable("x.png: not a decodable image")
    assert not f.passed and f.severity == "error" and "decodable" in f.detail
    assert checks.max_severity([f, checks.check_readable("")]) == "error"
    assert checks.max_severity([]) == "none"


def test_large_real_mask_paths(ecssd: Path) -> None:
    """Real ECSSD photo + mask upscaled 4x (the shrink paths of edge alignment, jaggedness, boundary F):
    components equal OpenCV's, an aligned mask passes, a shifted one fails, a smooth upscale is not jagged."""
    root = ecssd
    img = io.read_image(root / "images" / "0003.jpg")
    grey = io.read_gray(root / "masks" / "0003.png")
    h, w = grey.shape
    big_img = cv2.resize(img, (w * 4, h * 4), interpolation=cv2.INTER_LINEAR)
    big = np.where(cv2.resize(grey, (w * 4, h * 4), interpolation=cv2.INTER_LINEAR) >= 128, 255, 0).astype(np.uint8)
    fg = big >= 128
    f, b = components(fg, 8, 4)
    n_fg = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)[0] - 1
    n_bg = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)[0] - 1
    assert (f.count, b.count) == (n_fg, n_bg)
    assert int(f.area.sum()) == int(fg.sum())
    rep = run_checks(big, QAParams(), image=big_img, pre=big)
    assert rep.get("edge_alignment").passed  # type: ignore[union-attr]
    assert rep.get("jaggedness").passed  # type: ignore[union-attr]
    assert rep.disagreement is not None and rep.disagreement.boundary_f == pytest.approx(1.0)
    shifted = np.roll(big, (h * 4) // 12, axis=0)
    f_shift = run_checks(shifted, QAParams(), image=big_img).get("edge_alignment")
    assert f_shift is not None and not f_shift.passed
