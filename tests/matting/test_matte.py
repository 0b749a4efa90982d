"""Band-limited alpha solve vs pymatting's full-frame solve, trimap validation, solver failures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import io
from pipeline.matting.solve import SolverError, band_system, solve_band_cf, split_regions
from pipeline.stages.matte import SOLVERS, MatteParams, TrimapInvalid, encode_alpha, matte, validate_trimap

# Tolerance of the equality test: both solves stop at CG rtol 1e-7 with different (equally valid)
# preconditioners, so alpha agrees to ~1e-4 on real photos; we allow 2e-3 (half an 8-bit level).
EQUAL_TOL = 2e-3


def crop(alphamatting: Path, name: str, trimap: str = "Trimap1", box: tuple[int, int, int, int] = (120, 300, 220, 440)):
    y0, y1, x0, x1 = box
    img = io.read_image(alphamatting / "images" / f"{name}.png")[y0:y1, x0:x1]
    tri = io.read_trimap(alphamatting / "trimaps" / trimap / f"{name}.png")[y0:y1, x0:x1]
    gt = io.read_alpha(alphamatting / "alpha" / f"{name}.png")[y0:y1, x0:x1]
    return np.ascontiguousarray(img), np.ascontiguousarray(tri), gt


def test_band_system_equals_pymatting_laplacian_rows(alphamatting: Path) -> None:
    from pymatting import cf_laplacian, trimap_split

    img, tri, _ = crop(alphamatting, "GT02", box=(150, 230, 250, 360))
    img64, tri01 = img / 255.0, tri / 255.0
    is_fg, _, is_known, is_unknown = trimap_split(tri01)
    L = cf_laplacian(img64, is_known=is_known)
    L_U = L[is_unknown][:, is_unknown]
    b_ref = -L[is_unknown][:, is_known].dot(is_fg[is_known])
    A, b = band_system(img64, is_unknown.reshape(tri.shape), (tri == 255).astype(float))
    assert A.shape == L_U.shape and A.shape[0] > 1000
    assert abs(A - L_U).max() < 1e-8 * abs(L_U).max()
    assert np.abs(b - b_ref).max() < 1e-8 * np.abs(b_ref).max()


@pytest.mark.parametrize("name,trimap", [("GT02", "Trimap1"), ("GT05", "Trimap2")])
def test_band_limited_solve_equals_full_frame(alphamatting: Path, name: str, trimap: str) -> None:
    from pymatting import estimate_alpha_cf

    img, tri, _ = crop(alphamatting, name, trimap)
    assert 0 < np.count_nonzero(tri == 128) < tri.size
    ours = solve_band_cf(img, tri, tile_px=0)
    ref = estimate_alpha_cf(img / 255.0, tri / 255.0)
    assert np.abs(ours - ref).max() < EQUAL_TOL
    known = tri != 128
    assert np.array_equal(ours[known], (tri[known] == 255).astype(float))  # known pixels from the trimap


def test_tiled_solve_stays_close_to_exact(alphamatting: Path) -> None:
    img, tri, gt = crop(alphamatting, "GT02", box=(100, 400, 150, 550))
    exact = solve_band_cf(img, tri, tile_px=0)
    tiled = solve_band_cf(img, tri, tile_px=64, tile_margin=24, threads=2)
    u = tri == 128
    sad_exact, sad_tiled = np.abs(exact - gt)[u].sum(), np.abs(tiled - gt)[u].sum()
    assert abs(sad_tiled - sad_exact) / sad_exact < 0.02
    assert np.abs(exact - tiled)[u].mean() < 0.01


def test_regions_are_independent_and_cover_the_band() -> None:
    unknown = np.zeros((60, 60), bool)
    unknown[5:10, 5:50] = True
    unknown[40:45, 5:50] = True   # far apart: two regions
    unknown[12:14, 20:22] = True  # 2 px below the first strip (<= 2r+1): same region as it
    regs = split_regions(unknown, margin=2)
    assert len(regs) == 2
    keep = np.zeros_like(unknown)
    for r in regs:
        keep[r.y0 : r.y1, r.x0 : r.x1] |= r.keep
    assert np.array_equal(keep, unknown)
    tiles = split_regions(unknown, margin=4, tile_px=16)
    cover = np.zeros(unknown.shape, int)
    for r in tiles:
        cover[r.y0 : r.y1, r.x0 : r.x1] += r.keep
    assert len(tiles) > 2 and np.array_equal(cover, unknown.astype(int))  # each pixel kept exactly once


def synthetic(h: int = 40, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = (250, 240, 230)
    img[:, : w // 2] = (10, 20, 30)
    img = cv2.GaussianBlur(img, (7, 7), 0)
    img = np.ascontiguousarray(img + np.random.default_rng(0).integers(0, 6, img.shape, dtype=np.uint8))
    tri = np.zeros((h, w), np.uint8)
    tri[:, w // 2 + 4 :] = 255
    tri[:, w // 2 - 4 : w // 2 + 4] = 128
    return img, tri


def test_matte_outputs_alpha_and_foreground() -> None:
    img, tri = synthetic()
    m = matte(img, tri, MatteParams())
    assert m.alpha.shape == tri.shape and m.alpha.min() >= 0 and m.alpha.max() <= 1
    assert m.alpha[:, 30:].min() == 1.0 and m.alpha[:, :10].max() == 0.0
    assert m.alpha[:, 17].mean() < m.alpha[:, 22].mean()  # rises across the edge
    assert m.foreground is not None and m.foreground.shape == img.shape and m.foreground.dtype == np.uint8
    # foreground colour in the band is the bright side's colour, not a mix with the dark background
    assert m.foreground[:, 20:24].mean() > 200


@pytest.mark.parametrize("solver", ["knn", "rw"])
def test_other_solvers_run_on_band_regions(solver: str) -> None:
    img, tri = synthetic()
    alpha = SOLVERS[solver](img, tri, MatteParams(solver=solver))
    assert alpha[:, 30:].min() == 1.0 and alpha[:, :10].max() == 0.0
    assert alpha[:, 16].mean() < alpha[:, 23].mean()


def test_encode_alpha_bits() -> None:
    a = np.array([[0.0, 0.5, 1.0]])
    assert encode_alpha(a, 8).tolist() == [[0, 128, 255]] and encode_alpha(a, 8).dtype == np.uint8
    assert encode_alpha(a, 16).tolist() == [[0, 32768, 65535]] and encode_alpha(a, 16).dtype == np.uint16


# --------------------------------------------------------------------------- bad input


def test_trimap_without_unknown_pixels() -> None:
    tri = np.zeros((8, 8), np.uint8)
    tri[:, 4:] = 255
    with pytest.raises(TrimapInvalid, match="no unknown"):
        validate_trimap(tri, (8, 8))


def test_trimap_without_foreground() -> None:
    tri = np.zeros((8, 8), np.uint8)
    tri[:, 4:] = 128
    with pytest.raises(TrimapInvalid, match="no foreground"):
        validate_trimap(tri, (8, 8))


def test_trimap_of_wrong_size() -> None:
    with pytest.raises(TrimapInvalid, match="trimap is 8x6 but the image is 8x8"):
        validate_trimap(np.full((6, 8), 128, np.uint8), (8, 8))


def test_trimap_with_values_outside_the_three_levels() -> None:
    tri = np.full((8, 8), 128, np.uint8)
    tri[0, 0] = 255
    tri[1, 1] = 77
    with pytest.raises(TrimapInvalid, match=r"1 pixels outside \{0, 128, 255\} \(e.g. \[77\]\)"):
        validate_trimap(tri, (8, 8))


def test_solver_that_does_not_converge() -> None:
    img, tri = synthetic()
    with pytest.raises(SolverError, match="did not converge within 1 iterations"):
        matte(img, tri, MatteParams(linear_solver="cg", maxiter=1, rtol=1e-12))


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="tile_px"):
        MatteParams(tile_px=10)
    with pytest.raises(ValueError, match="epsilon"):
        MatteParams(epsilon=0)
