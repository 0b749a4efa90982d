"""Schwarz-preconditioned CG (the default cf linear solver) against the exact direct solve."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core import io
from pipeline.matting.solve import SolverError, band_system, schwarz_tiles, solve_band_cf, solve_schwarz
from pipeline.matting.trimap import TextureParams, TrimapParams, make_trimap
from pipeline.stages.matte import MatteParams, matte


def ring(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured bright disc on a textured dark background, with a 12 px unknown ring around its edge."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.35 * h) ** 2
    img = np.where(inside[..., None], (220, 180, 140), (30, 60, 90)).astype(np.float64)
    img += rng.normal(0, 12, img.shape)
    img = np.clip(cv2.GaussianBlur(img, (5, 5), 0), 0, 255).astype(np.uint8)
    mask = np.where(inside, 255, 0).astype(np.uint8)
    tri = make_trimap(mask, TrimapParams(band_px=6, texture=TextureParams(enabled=False)), img).trimap
    return np.ascontiguousarray(img), tri


def sad(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.abs(a - b)[where].sum())


def test_tiles_own_every_unknown_once_and_overlap() -> None:
    unknown = np.zeros((50, 70), bool)
    unknown[10:40, 5:65] = True
    uy, ux = np.nonzero(unknown)
    tiles, owner = schwarz_tiles(uy, ux, tile_px=16, overlap_px=3)
    assert len(tiles) == 2 * 4 and owner.shape == (uy.size,)
    assert set(np.unique(owner).tolist()) == set(range(len(tiles)))
    for t, idx in enumerate(tiles):
        owned = np.nonzero(owner == t)[0]
        assert np.isin(owned, idx).all()  # a tile solves all the unknowns it owns ...
        assert idx.size > owned.size      # ... plus the overlap around them
        assert (ux[idx].max() - ux[idx].min()) <= 16 + 2 * 3 - 1


def test_schwarz_equals_direct_on_synthetic_ring() -> None:
    img, tri = ring()
    unknown = tri == 128
    A, b = band_system(img / 255.0, unknown, (tri == 255).astype(float))
    uy, ux = np.nonzero(unknown)
    from pipeline.matting.solve import solve_spd

    exact = solve_spd(A, b, 1e-7, 1000, "test", method="direct")
    # memory_mb > 0: the exact float32 tile factors (the optional local level)
    x, stats = solve_schwarz(A, b, uy, ux, "test", tile_px=24, overlap_px=4, rtol=1e-9, memory_mb=1100)
    assert stats.tiles >= 12 and stats.iterations > 1 and stats.residual <= 1e-9
    assert np.abs(x - exact).max() < 1e-5


def test_schwarz_default_matches_exact_within_tolerance_on_real_photo(alphamatting: Path) -> None:
    """A 2x upscaled crop of a real photo (hair), maskloop's own trimap, small tiles so many of them meet:
    the default tolerance keeps SAD within 0.2% of the exact solve (the product bound is 1%)."""
    y0, y1, x0, x1 = 60, 360, 120, 560
    img = io.read_image(alphamatting / "images" / "GT01.png")[y0:y1, x0:x1]
    gt = io.read_alpha(alphamatting / "alpha" / "GT01.png")[y0:y1, x0:x1]
    img = np.ascontiguousarray(cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    gt = np.clip(cv2.resize(gt, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC), 0, 1)
    tri = make_trimap(np.where(gt >= 0.5, 255, 0).astype(np.uint8), TrimapParams(band_px=20), img).trimap
    u = tri == 128
    assert u.sum() > 40_000
    exact = solve_band_cf(img, tri, linear_solver="direct")
    p = MatteParams()
    fast = solve_band_cf(img, tri, linear_solver="schwarz", schwarz_tile_px=96,
                         schwarz_overlap_px=p.schwarz_overlap_px, schwarz_rtol=p.schwarz_rtol)
    sad_exact, sad_fast = sad(exact, gt, u), sad(fast, gt, u)
    assert abs(sad_fast - sad_exact) / sad_exact < 0.002
    assert sad(fast, exact, u) / sad_exact < 0.005  # distance to the exact alpha, not only its SAD
    known = ~u
    assert np.array_equal(fast[known], (tri[known] == 255).astype(float))


def test_matte_default_is_schwarz_and_matches_direct() -> None:
    img, tri = ring(seed=1)
    assert MatteParams().linear_solver == "schwarz" and MatteParams().tile_px == 0
    p = MatteParams(schwarz_tile_px=32, foreground=False)
    fast = matte(img, tri, p).alpha
    exact = solve_band_cf(img, tri, linear_solver="direct")
    assert np.abs(fast - exact).max() < 1e-3


def test_incomplete_cholesky_level_when_tile_factors_exceed_the_memory_budget() -> None:
    """``memory_mb=0`` (the default): the incomplete-Cholesky local level with the colour coarse space
    (deflation) reaches the same exact solution, with coarse tiles small enough that many of them meet."""
    img, tri = ring(seed=2)
    unknown = tri == 128
    A, b = band_system(img / 255.0, unknown, (tri == 255).astype(float))
    uy, ux = np.nonzero(unknown)
    from pipeline.matting.solve import solve_spd

    exact = solve_spd(A, b, 1e-7, 1000, "test", method="direct")
    colours = img[uy, ux] / 255.0
    x, stats = solve_schwarz(A, b, uy, ux, "test", tile_px=24, overlap_px=4, rtol=1e-9, colours=colours, memory_mb=0,
                             coarse_px=8)
    assert stats.tiles >= 12 and stats.iterations > 1 and stats.residual <= 1e-9
    assert np.abs(x - exact).max() < 1e-5


def test_schwarz_that_does_not_converge_names_the_region() -> None:
    img, tri = ring()
    with pytest.raises(SolverError, match=r"band region at x=.*did not reach rtol=1e-12 within 1 iterations"):
        solve_band_cf(img, tri, linear_solver="schwarz", schwarz_tile_px=24, schwarz_rtol=1e-12, maxiter=1)


def test_unknown_linear_solver() -> None:
    img, tri = ring()
    with pytest.raises(ValueError, match="unknown linear solver 'lu'"):
        solve_band_cf(img, tri, linear_solver="lu")


def test_schwarz_params_validation() -> None:
    with pytest.raises(ValueError, match="schwarz_tile_px"):
        MatteParams(schwarz_tile_px=8)
    with pytest.raises(ValueError, match="schwarz_overlap_px"):
        MatteParams(schwarz_overlap_px=1)
    with pytest.raises(ValueError, match="schwarz_rtol"):
        MatteParams(schwarz_rtol=0)
