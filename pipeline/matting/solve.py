"""Band-limited closed-form matting: the matting Laplacian built only where the trimap is unknown.

pymatting's :func:`~pymatting.estimate_alpha_cf` builds the closed-form matting Laplacian
(Levin et al., 2008) over the *whole* image (25 float64 + 25 int64 per pixel for radius 1) and then
solves for the unknown pixels. The rows of that system that matter only involve pixels within
``2 * radius`` of an unknown pixel, so this module:

1. splits the unknown region into **independent regions** (unknown pixels more than ``2r + 1`` apart
   never share a window, so their systems decouple exactly);
2. crops each region's bounding box plus a ``2r`` margin (every window touching one of its unknown
   pixels lies inside the crop, with the same validity as in the full frame);
3. builds the Laplacian rows of the region's unknown pixels only (:func:`band_system`, numba), moving
   the known pixels' terms to the right-hand side;
4. splits a region larger than ``tile_px`` into square **tiles with margins** (the tile core is kept,
   the margin only supplies context), when tiling is enabled;
5. solves each system with a sparse direct solver, pymatting's thresholded incomplete Cholesky +
   conjugate gradients, or (default) conjugate gradients preconditioned by a **two-level overlapping
   Schwarz** method (:func:`solve_schwarz`): the band is cut into ``schwarz_tile_px`` tiles, each
   tile's unknowns plus ``schwarz_overlap_px`` pixels around it are factorised exactly (sparse LU of the
   principal submatrix), and a coarse space of one constant per tile (Nicolaides) carries the smooth,
   long-range part of the solution that tiles alone cannot. CG then converges to the *exact* solution of
   the whole band: tiles only precondition, they never cut the system, so there are no seams.

Without approximate tiling (``tile_px = 0``) every mode solves the same system as the full-frame solve
(to the solver tolerance); ``tile_px > 0`` cuts regions into independent tiles, which costs accuracy at
the seams (measured in ``benchmarks/README.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

FG, UNKNOWN, BG = 255, 128, 0
# Sparse LU beats incomplete Cholesky + CG on band-shaped systems up to about this many unknowns
# (2.6x on a 66k-pixel band tile); on large blob-shaped unknown regions its fill grows faster and CG wins.
AUTO_DIRECT_MAX = 100_000
LINEAR_SOLVERS = ("auto", "direct", "cg", "schwarz")


class SolverError(RuntimeError):
    """The linear solver did not converge (or the preconditioner failed) for a band region."""


@dataclass(frozen=True)
class Region:
    """One independent piece of work: a crop ``[y0:y1, x0:x1]`` of the image whose unknown pixels
    selected by ``solve_mask`` (bool, crop-sized) are solved, and whose pixels selected by ``keep``
    (bool, crop-sized, a subset of ``solve_mask``) are written back."""

    y0: int
    y1: int
    x0: int
    x1: int
    solve_mask: np.ndarray
    keep: np.ndarray

    @property
    def n_unknown(self) -> int:
        return int(np.count_nonzero(self.solve_mask))


# --------------------------------------------------------------------------- numba kernels

_KERNELS: dict[str, Callable[..., object]] = {}


def _kernels() -> dict[str, Callable[..., object]]:
    """Compile (or load from ``NUMBA_CACHE_DIR``) the numba kernels on first use, not at import."""
    if _KERNELS:
        return _KERNELS
    from numba import njit

    @njit(cache=True, nogil=True)
    def accumulate(image, index, known_alpha, cy, cx, epsilon, r, values, b):  # type: ignore[no-untyped-def]
        size = 2 * r + 1
        area = size * size
        c = np.empty((size, size, 3))
        for k in range(cy.shape[0]):
            y = cy[k]
            x = cx[k]
            for ch in range(3):
                s = 0.0
                for dy in range(size):
                    for dx in range(size):
                        s += image[y + dy - r, x + dx - r, ch]
                mean = s / area
                for dy in range(size):
                    for dx in range(size):
                        c[dy, dx, ch] = image[y + dy - r, x + dx - r, ch] - mean
            a00 = a01 = a02 = a11 = a12 = a22 = 0.0
            for dy in range(size):
                for dx in range(size):
                    a00 += c[dy, dx, 0] * c[dy, dx, 0]
                    a01 += c[dy, dx, 0] * c[dy, dx, 1]
                    a02 += c[dy, dx, 0] * c[dy, dx, 2]
                    a11 += c[dy, dx, 1] * c[dy, dx, 1]
                    a12 += c[dy, dx, 1] * c[dy, dx, 2]
                    a22 += c[dy, dx, 2] * c[dy, dx, 2]
            # epsilon is added before the division, as pymatting's cf_laplacian does
            a00 = (a00 + epsilon) / area
            a01 /= area
            a02 /= area
            a11 = (a11 + epsilon) / area
            a12 /= area
            a22 = (a22 + epsilon) / area
            # inverse of the symmetric 3x3 covariance via its adjugate
            i00 = a11 * a22 - a12 * a12
            i01 = a02 * a12 - a01 * a22
            i02 = a01 * a12 - a02 * a11
            i11 = a00 * a22 - a02 * a02
            i12 = a01 * a02 - a00 * a12
            i22 = a00 * a11 - a01 * a01
            det = a00 * i00 + a01 * i01 + a02 * i02
            inv = 1.0 / det
            m00 = i00 * inv
            m01 = i01 * inv
            m02 = i02 * inv
            m11 = i11 * inv
            m12 = i12 * inv
            m22 = i22 * inv
            for dyi in range(size):
                for dxi in range(size):
                    yi = y + dyi - r
                    xi = x + dxi - r
                    ii = index[yi, xi]
                    if ii < 0:
                        continue
                    s0 = c[dyi, dxi, 0]
                    s1 = c[dyi, dxi, 1]
                    s2 = c[dyi, dxi, 2]
                    c0 = m00 * s0 + m01 * s1 + m02 * s2
                    c1 = m01 * s0 + m11 * s1 + m12 * s2
                    c2 = m02 * s0 + m12 * s1 + m22 * s2
                    for dyj in range(size):
                        for dxj in range(size):
                            yj = y + dyj - r
                            xj = x + dxj - r
                            t = c0 * c[dyj, dxj, 0] + c1 * c[dyj, dxj, 1] + c2 * c[dyj, dxj, 2]
                            value = -(1.0 + t) / area
                            if dyi == dyj and dxi == dxj:
                                value += 1.0
                            jj = index[yj, xj]
                            if jj >= 0:
                                values[ii, yj - yi + 2 * r, xj - xi + 2 * r] += value
                            else:
                                b[ii] -= value * known_alpha[yj, xj]

    @njit(cache=True, nogil=True)
    def csr_pass(index, uy, ux, values, r, indptr, indices, data, write):  # type: ignore[no-untyped-def]
        # one walk over the rows' window entries: counts them (write=False) or fills the CSR arrays
        h, w = index.shape
        span = 4 * r + 1
        k = 0
        for ii in range(uy.shape[0]):
            y = uy[ii]
            x = ux[ii]
            for dy in range(span):
                yj = y + dy - 2 * r
                if yj < 0 or yj >= h:
                    continue
                for dx in range(span):
                    xj = x + dx - 2 * r
                    if xj < 0 or xj >= w:
                        continue
                    jj = index[yj, xj]
                    if jj >= 0 and (values[ii, dy, dx] != 0.0 or jj == ii):
                        if write:
                            indices[k] = jj
                            data[k] = values[ii, dy, dx]
                        k += 1
            if write:
                indptr[ii + 1] = k
        return k

    @njit(cache=True, nogil=True)
    def to_csr(index, uy, ux, values, r):  # type: ignore[no-untyped-def]
        # two passes: the exact number of entries first (no over-allocation and no trimming copy: at 1M
        # unknowns that is ~0.5 GB less at the peak of the assembly)
        indptr = np.zeros(uy.shape[0] + 1, dtype=np.int64)
        nnz = csr_pass(index, uy, ux, values, r, indptr, np.empty(0, np.int32), np.empty(0, np.float64), False)
        indices = np.empty(nnz, dtype=np.int32)
        data = np.empty(nnz, dtype=np.float64)
        csr_pass(index, uy, ux, values, r, indptr, indices, data, True)
        return indptr, indices, data

    @njit(cache=True, nogil=True)
    def chol_solve32(data, indices, indptr, x):  # type: ignore[no-untyped-def]
        # x <- (L L^T)^-1 x in place, L lower triangular in CSC (diagonal first in each column), float32
        n = x.shape[0]
        for j in range(n):
            t = x[j] / data[indptr[j]]
            x[j] = t
            for k in range(indptr[j] + 1, indptr[j + 1]):
                x[indices[k]] -= data[k] * t
        for i in range(n - 1, -1, -1):
            s = x[i]
            for k in range(indptr[i] + 1, indptr[i + 1]):
                s -= data[k] * x[indices[k]]
            x[i] = s / data[indptr[i]]

    _KERNELS["chol_solve32"] = chol_solve32
    _KERNELS["accumulate"] = accumulate
    _KERNELS["to_csr"] = to_csr
    return _KERNELS


# --------------------------------------------------------------------------- system assembly


def band_system(
    image: np.ndarray, unknown: np.ndarray, known_alpha: np.ndarray, epsilon: float = 1e-7, radius: int = 1
) -> tuple[object, np.ndarray]:
    """The closed-form system ``L_UU x = b`` restricted to the ``unknown`` pixels of ``image``.

    ``image``: float64 ``(h, w, 3)`` in ``[0, 1]``; ``unknown``: bool ``(h, w)``; ``known_alpha``: float64
    ``(h, w)``, the alpha of known pixels (0 or 1; ignored where unknown). Returns a scipy CSR matrix of
    shape ``(n, n)`` (``n`` = unknown count, row-major order) and ``b`` float64 ``(n,)``; this equals the
    corresponding rows/columns of pymatting's ``cf_laplacian`` with ``b = -L_UK alpha_K``.
    """
    import scipy.sparse

    h, w = unknown.shape
    r = int(radius)
    uy, ux = np.nonzero(unknown)
    n = uy.size
    index = np.full((h, w), -1, dtype=np.int64)
    index[uy, ux] = np.arange(n, dtype=np.int64)
    # window centres (valid: at least r from the border) whose window touches an unknown pixel
    k = 2 * r + 1
    touch = cv2.dilate(unknown.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    valid = np.zeros((h, w), dtype=bool)
    if h > 2 * r and w > 2 * r:
        valid[r : h - r, r : w - r] = True
    cy, cx = np.nonzero(touch & valid)
    span = 4 * r + 1
    values = np.zeros((n, span, span), dtype=np.float64)
    b = np.zeros(n, dtype=np.float64)
    kern = _kernels()
    kern["accumulate"](
        np.ascontiguousarray(image, dtype=np.float64), index, np.ascontiguousarray(known_alpha, dtype=np.float64),
        cy.astype(np.int64), cx.astype(np.int64), float(epsilon), r, values, b,
    )
    csr: Any = kern["to_csr"](index, uy.astype(np.int64), ux.astype(np.int64), values, r)
    indptr, indices, data = csr
    del values
    A = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n))
    return A, b


def solve_spd(A: object, b: np.ndarray, rtol: float, maxiter: int, where: str, method: str = "auto") -> np.ndarray:
    """Solve ``A x = b`` (A sparse symmetric positive definite).

    ``method="auto"`` (default): direct up to :data:`AUTO_DIRECT_MAX` unknowns, else cg.
    ``method="direct"``: sparse LU (SuperLU) with a minimum-degree ordering of ``A + A^T``, exact and, on
    band systems, 2-3x faster than the iterative path. ``method="cg"``: pymatting's thresholded incomplete
    Cholesky + conjugate gradients (pymatting's own method) on a reverse Cuthill-McKee ordering, stopping
    at ``rtol`` / ``maxiter``. Raises :class:`SolverError` naming ``where`` when the solve fails or does
    not converge.
    """
    import scipy.sparse

    if b.size == 0:
        return b.copy()
    if method == "auto":
        method = "direct" if b.size <= AUTO_DIRECT_MAX else "cg"
    if method == "direct":
        import scipy.sparse.linalg as sla

        try:
            lu = sla.splu(scipy.sparse.csc_matrix(A), permc_spec="MMD_AT_PLUS_A",
                          options={"SymmetricMode": True})
            x_direct: np.ndarray = lu.solve(b)
        except (RuntimeError, MemoryError) as exc:
            raise SolverError(f"{where}: sparse direct solve failed ({exc}); try matte.linear_solver: cg") from exc
        if not np.all(np.isfinite(x_direct)):
            raise SolverError(f"{where}: direct solver produced non-finite values (singular system)")
        return x_direct
    if method != "cg":
        raise ValueError(f"unknown linear solver {method!r}; use 'auto', 'direct' or 'cg'")
    from pymatting import cg, ichol
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    # Reverse Cuthill-McKee ordering follows the band instead of image rows: far less fill in the
    # incomplete Cholesky factor (3-4x faster factorisation and solve on 3x upscaled photos).
    perm = reverse_cuthill_mckee(scipy.sparse.csr_matrix(A), symmetric_mode=True)
    A = scipy.sparse.csr_matrix(A)[perm][:, perm]
    b = b[perm]
    csc = scipy.sparse.csc_matrix(A)
    try:
        precond = ichol(csc)
    except ValueError as exc:
        raise SolverError(f"{where}: incomplete Cholesky preconditioner failed: {exc}") from exc
    try:
        x: np.ndarray = cg(A, b, M=precond, rtol=rtol, maxiter=maxiter)
    except ValueError as exc:
        raise SolverError(
            f"{where}: conjugate gradients did not converge within {maxiter} iterations (rtol={rtol:g}); "
            "raise matte.maxiter or matte.rtol, or check the trimap's unknown band"
        ) from exc
    if not np.all(np.isfinite(x)):
        raise SolverError(f"{where}: solver produced non-finite values")
    out = np.empty_like(x)
    out[perm] = x
    return out


def _single_precision(factor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """pymatting's incomplete Cholesky factor as a float32 solve (values float32, row indices int32): the
    triangular solves are memory-bound, so half the bytes make them faster; the float64 factor is freed.
    Flexible CG absorbs the single-precision preconditioner (as it does the float32 tile factors)."""
    data, rows, ptr = factor.Ltuple
    factor.Ltuple = None  # one array at a time: each float64/int64 original is freed once converted
    rows32 = rows.astype(np.int32)
    del rows
    data32 = data.astype(np.float32)
    del data
    solve = _kernels()["chol_solve32"]

    def apply(r: np.ndarray) -> np.ndarray:
        x = r.astype(np.float32)
        solve(data32, rows32, ptr, x)
        return x.astype(np.float64)

    return apply


@dataclass(frozen=True)
class SchwarzStats:
    """What one Schwarz-preconditioned solve did (for logs and benchmarks)."""

    unknowns: int
    tiles: int
    iterations: int
    residual: float


def schwarz_tiles(uy: np.ndarray, ux: np.ndarray, tile_px: int, overlap_px: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Overlapping subdomains of the unknowns at pixel positions ``(uy, ux)`` (int arrays, length ``n``).

    The bounding box of the unknowns is cut into ``tile_px`` squares; tile ``t`` *owns* the unknowns in
    its square (``owner[i] == t``; every unknown has exactly one owner) and *solves* those within
    ``overlap_px`` pixels (Chebyshev) of the square. Returns the sorted unknown indices of each tile and
    ``owner`` (int64 ``(n,)``, tiles numbered 0.. in row-major order, empty squares dropped).
    """
    y0, x0 = int(uy.min()), int(ux.min())
    h, w = int(uy.max()) - y0 + 1, int(ux.max()) - x0 + 1
    index = np.full((h, w), -1, dtype=np.int64)
    index[uy - y0, ux - x0] = np.arange(uy.size, dtype=np.int64)
    nx = -(-w // tile_px)
    cell = ((uy - y0) // tile_px) * nx + (ux - x0) // tile_px
    cells, owner = np.unique(cell, return_inverse=True)
    tiles = []
    for c in cells:
        ty, tx = int(c) // nx * tile_px, int(c) % nx * tile_px
        box = index[max(ty - overlap_px, 0) : ty + tile_px + overlap_px, max(tx - overlap_px, 0) : tx + tile_px + overlap_px]
        tiles.append(np.sort(box[box >= 0]))
    return tiles, owner.astype(np.int64).ravel()


# bytes of single-precision SuperLU factors per subdomain unknown (measured on 3x alphamatting bands with
# 256 px tiles and 16 px overlap: 1.45 KB on GT07, 1.86 KB on GT04's wide fur band); chooses the local level
LU_BYTES_PER_UNKNOWN = 1900


def coarse_space(uy: np.ndarray, ux: np.ndarray, owner: np.ndarray, colours: np.ndarray | None) -> Any:
    """The coarse basis ``Z`` (sparse ``(n, k)``): per tile the indicator of the unknowns it owns and, when
    ``colours`` (float ``(n, 3)``) is given, also the owned unknowns' colours minus the tile's mean colour:
    the locally affine-in-colour functions the matting Laplacian nearly annihilates (its near null space)."""
    import scipy.sparse

    n = owner.size
    nt = int(owner.max()) + 1
    if colours is None:
        return scipy.sparse.csr_matrix((np.ones(n), (np.arange(n), owner)), shape=(n, nt))
    count = np.bincount(owner, minlength=nt).astype(np.float64)
    mean = np.stack([np.bincount(owner, colours[:, c], minlength=nt) / count for c in range(3)], axis=1)
    vals = np.concatenate([np.ones((n, 1)), colours - mean[owner]], axis=1)
    cols = 4 * owner[:, None] + np.arange(4)[None, :]
    return scipy.sparse.csr_matrix((vals.ravel(), (np.repeat(np.arange(n), 4), cols.ravel())), shape=(n, 4 * nt))


def _coarse_solver(mat: Any, Z: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``v -> Z (Z^T A Z)^-1 Z^T v``: a sparse LU of the Galerkin matrix (it couples neighbouring tiles only, so
    thousands of coarse functions cost megabytes, not the gigabytes of a dense factor), with a tiny diagonal
    shift for rank safety (a tile of one flat colour has all-zero colour functions)."""
    import scipy.sparse
    import scipy.sparse.linalg as sla

    A0 = scipy.sparse.csc_matrix(Z.T @ (mat @ Z))
    diag = np.abs(A0.diagonal())
    A0 = A0 + scipy.sparse.identity(A0.shape[0], format="csc") * (1e-12 * float(diag.max() if diag.size else 1.0))
    lu = sla.splu(A0, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    ZT = scipy.sparse.csr_matrix(Z.T)
    return lambda v: Z @ lu.solve(ZT @ v)  # type: ignore[no-any-return]


def solve_schwarz(
    A: object,
    b: np.ndarray,
    uy: np.ndarray,
    ux: np.ndarray,
    where: str,
    tile_px: int = 256,
    overlap_px: int = 16,
    rtol: float = 1e-6,
    maxiter: int = 500,
    threads: int = 1,
    colours: np.ndarray | None = None,
    memory_mb: float = 0.0,
    coarse_px: int = 32,
) -> tuple[np.ndarray, SchwarzStats]:
    """Solve ``A x = b`` (sparse SPD, one row per unknown pixel at ``(uy[i], ux[i])``) by conjugate
    gradients with a two-level preconditioner; stops when ``|b - A x| <= rtol |b|``.

    Local level: by default (``memory_mb = 0``) a **thresholded incomplete Cholesky** of the whole region
    (pymatting's ``ichol``, threshold 1e-3). When ``memory_mb > 0`` and the region's single-precision LU
    factors fit it (estimated at :data:`LU_BYTES_PER_UNKNOWN`), **additive Schwarz** instead:
    :func:`schwarz_tiles` subdomains (``tile_px``, ``overlap_px``), each factorised exactly (SuperLU of
    ``A[idx][:, idx]`` in float32, symmetric mode) — about 3x the memory, faster on some bands, slower on
    others. Coarse level: per ``coarse_px`` tile a constant and, with ``colours`` (float ``(n, 3)``), the three
    colour channels minus the tile's mean (:func:`coarse_space`, the matting Laplacian's near null space);
    the Schwarz local level uses one constant per subdomain tile. The levels are combined by **deflation**
    (A-DEF2): ``M(r) = Q r + L^-1 (r - A Q r)`` with ``Q = Z (Z^T A Z)^-1 Z^T``, starting from ``x0 = Q b``;
    on the 3x alphamatting tuning photos this halves the iterations of the additive combination. CG uses
    the flexible (Polak-Ribiere) update, robust to the inexact local solves. A system that fits one tile is
    solved directly. Returns ``x`` (float64 ``(n,)``) and :class:`SchwarzStats`; raises
    :class:`SolverError` naming ``where`` on a failed factorisation or no convergence within ``maxiter``.
    """
    import scipy.sparse
    import scipy.sparse.linalg as sla

    n = b.size
    if n == 0:
        return b.copy(), SchwarzStats(0, 0, 0, 0.0)
    mat: Any = scipy.sparse.csr_matrix(A)
    tiles, owner = schwarz_tiles(uy, ux, tile_px, overlap_px)
    if len(tiles) == 1:
        x = solve_spd(mat, b, rtol, maxiter, where, method="direct")
        return x, SchwarzStats(n, 1, 0, 0.0)
    local: Callable[[np.ndarray], np.ndarray]
    if memory_mb > 0 and sum(t.size for t in tiles) * LU_BYTES_PER_UNKNOWN <= memory_mb * 2**20:
        def factor(idx: np.ndarray) -> Any:
            sub = scipy.sparse.csc_matrix(mat[idx][:, idx], dtype=np.float32)
            try:
                return sla.splu(sub, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
            except (RuntimeError, MemoryError) as exc:
                raise SolverError(f"{where}: Schwarz subdomain factorisation failed ({exc}); "
                                  "try matte.linear_solver: cg") from exc

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                lus = list(pool.map(factor, tiles))
        else:
            lus = [factor(idx) for idx in tiles]

        def local_lu(r: np.ndarray) -> np.ndarray:
            z = np.zeros_like(r)
            r32 = r.astype(np.float32)
            for idx, lu in zip(tiles, lus, strict=True):
                z[idx] += lu.solve(r32[idx])
            return z

        local = local_lu
        Z = coarse_space(uy, ux, owner, None)
        n_tiles = len(tiles)
    else:
        from pymatting import ichol

        try:
            # CSR of a symmetric matrix: pymatting reads its transpose, the CSC view of the same arrays (no copy)
            local = _single_precision(ichol(mat, discard_threshold=1e-3,
                                            shifts=[1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]))
        except ValueError as exc:
            raise SolverError(f"{where}: incomplete Cholesky preconditioner failed: {exc}") from exc
        small, owner = schwarz_tiles(uy, ux, coarse_px, 0)
        Z = coarse_space(uy, ux, owner, colours)
        n_tiles = len(small)
        del small
    coarse = _coarse_solver(mat, Z)

    def precondition(r: np.ndarray) -> np.ndarray:
        q = coarse(r)
        return q + local(r - mat @ q)  # type: ignore[no-any-return]

    norm_b = float(np.linalg.norm(b))
    if norm_b == 0.0:
        return np.zeros(n), SchwarzStats(n, n_tiles, 0, 0.0)
    x = coarse(b)
    r = b - mat @ x
    z = precondition(r)
    p = z.copy()
    rz = float(r @ z)
    res = 1.0
    for it in range(1, maxiter + 1):
        Ap = mat @ p
        step = rz / float(p @ Ap)
        x += step * p
        r -= step * Ap
        res = float(np.linalg.norm(r)) / norm_b
        if not np.isfinite(res):
            raise SolverError(f"{where}: Schwarz-preconditioned CG produced non-finite values")
        if res <= rtol:
            return x, SchwarzStats(n, n_tiles, it, res)
        z_new = precondition(r)
        rz_new = float(r @ z_new)
        p = z_new + (float(r @ (z_new - z)) / rz) * p  # flexible (Polak-Ribiere) CG
        z, rz = z_new, rz_new
    raise SolverError(
        f"{where}: Schwarz-preconditioned CG did not reach rtol={rtol:g} within {maxiter} iterations "
        f"(residual {res:.2e}); raise matte.maxiter or use matte.linear_solver: cg"
    )


# --------------------------------------------------------------------------- regions / tiles


def split_regions(unknown: np.ndarray, margin: int, tile_px: int = 0) -> list[Region]:
    """Independent regions of ``unknown`` (bool ``(H, W)``), each cropped with ``margin`` pixels.

    Unknown pixels closer than ``margin + 1`` (Chebyshev) stay in one region. ``tile_px > 0`` splits a
    region whose bounding box is larger than ``tile_px`` in either side into ``tile_px`` tiles: each tile
    solves the region's unknown pixels in its core expanded by ``margin`` and keeps only its core.
    Regions come sorted by position (deterministic).
    """
    h, w = unknown.shape
    if not unknown.any():
        return []
    k = margin // 2 * 2 + 1
    grown = cv2.dilate(unknown.astype(np.uint8), np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    regions: list[Region] = []
    for lab in range(1, n):
        x, y, bw, bh = (int(v) for v in stats[lab, :4])
        if tile_px > 0 and (bw > tile_px or bh > tile_px):
            for ty in range(y, y + bh, tile_px):
                for tx in range(x, x + bw, tile_px):
                    cy1, cx1 = min(ty + tile_px, y + bh), min(tx + tile_px, x + bw)
                    regions.extend(_crop(unknown, labels, lab, ty, cy1, tx, cx1, margin, h, w))
        else:
            regions.extend(_crop(unknown, labels, lab, y, y + bh, x, x + bw, margin, h, w))
    return regions


def _crop(
    unknown: np.ndarray, labels: np.ndarray, lab: int, cy0: int, cy1: int, cx0: int, cx1: int, margin: int,
    h: int, w: int,
) -> Iterator[Region]:
    y0, y1 = max(cy0 - margin, 0), min(cy1 + margin, h)
    x0, x1 = max(cx0 - margin, 0), min(cx1 + margin, w)
    mine = unknown[y0:y1, x0:x1] & (labels[y0:y1, x0:x1] == lab)
    core = np.zeros_like(mine)
    core[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = True
    keep = mine & core
    if keep.any():
        yield Region(y0, y1, x0, x1, mine, keep)


# --------------------------------------------------------------------------- the solve


def solve_band_cf(
    image: np.ndarray,
    trimap: np.ndarray,
    epsilon: float = 1e-7,
    radius: int = 1,
    rtol: float = 1e-7,
    maxiter: int = 10000,
    tile_px: int = 0,
    tile_margin: int = 32,
    threads: int = 1,
    where: str = "",
    linear_solver: str = "auto",
    schwarz_tile_px: int = 256,
    schwarz_overlap_px: int = 16,
    schwarz_rtol: float = 1e-6,
    schwarz_memory_mb: float = 0.0,
    schwarz_coarse_px: int = 32,
) -> np.ndarray:
    """Closed-form alpha solved only in the trimap's unknown band.

    ``image``: RGB ``(H, W, 3)`` uint8 (or float in ``[0, 1]``); ``trimap``: uint8 ``(H, W)`` in
    ``{0, 128, 255}``. Returns alpha float64 ``(H, W)`` in ``[0, 1]`` (known pixels straight from the
    trimap). ``linear_solver``: ``auto``, ``direct`` (sparse LU) or ``cg`` (see :func:`solve_spd`), or
    ``schwarz`` (:func:`solve_schwarz` with ``schwarz_tile_px``, ``schwarz_overlap_px``,
    ``schwarz_rtol``, ``schwarz_memory_mb``, ``schwarz_coarse_px``; at most ``maxiter`` iterations). ``tile_px = 0`` solves each band region as one
    system (exact up to the solver tolerance); ``tile_px > 0`` cuts regions into independent tiles (an
    approximation). ``threads > 1`` solves regions concurrently (the numba kernels and the ichol
    factorisation release the GIL).
    """
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"unknown linear solver {linear_solver!r}; use one of {', '.join(LINEAR_SOLVERS)}")
    img = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    unknown = trimap == UNKNOWN
    alpha = (trimap == FG).astype(np.float64)
    margin = 2 * int(radius)
    regions = split_regions(unknown, margin=margin if tile_px <= 0 else max(tile_margin, margin), tile_px=tile_px)

    def work(reg: Region) -> tuple[Region, np.ndarray]:
        sub = img[reg.y0 : reg.y1, reg.x0 : reg.x1]
        known = alpha[reg.y0 : reg.y1, reg.x0 : reg.x1]
        A, b = band_system(sub, reg.solve_mask, known, epsilon=epsilon, radius=radius)
        at = f"{where}band region at x={reg.x0}..{reg.x1}, y={reg.y0}..{reg.y1}"
        if linear_solver == "schwarz":
            uy, ux = np.nonzero(reg.solve_mask)
            x, stats = solve_schwarz(A, b, uy, ux, at, tile_px=schwarz_tile_px, overlap_px=schwarz_overlap_px,
                                     rtol=schwarz_rtol, maxiter=maxiter, colours=sub[uy, ux],
                                     memory_mb=schwarz_memory_mb, coarse_px=schwarz_coarse_px)
            log.debug("%s: %d unknowns, %d tiles, %d iterations", at, stats.unknowns, stats.tiles, stats.iterations)
        else:
            x = solve_spd(A, b, rtol, maxiter, method=linear_solver, where=at)
        return reg, x

    order = sorted(regions, key=lambda g: -g.n_unknown)  # biggest first: better load balance
    if threads > 1 and len(order) > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, order))
    else:
        results = [work(g) for g in order]
    for reg, x in results:
        full = np.zeros(reg.solve_mask.shape, dtype=np.float64)
        full[reg.solve_mask] = x
        view = alpha[reg.y0 : reg.y1, reg.x0 : reg.x1]
        view[reg.keep] = full[reg.keep]
    np.clip(alpha, 0.0, 1.0, out=alpha)
    return alpha
