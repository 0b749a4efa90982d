"""Weight-free salient-object priors for the ``grabcut`` pre-annotator (pure array functions).

- :func:`minimum_barrier_distance`: the minimum barrier distance of every pixel to the image border
  (Strand et al. 2013; the raster-scan approximation of Zhang et al., "Minimum Barrier Salient Object
  Detection at 80 FPS", ICCV 2015), summed over the Lab channels. A background region connected to the border
  through a path of similar colours gets a small distance even when it differs in colour from the border
  itself (a lawn shading into sky); an object's pixels are separated from the border by a colour barrier.
- :func:`backgroundness`: Mahalanobis colour distance to each border strip's colour distribution, summed
  over the four strips minus the largest (MB+'s backgroundness: robust to an object touching one side).
- :func:`salient_map`: the two cues added, times a mild centre prior, smoothed by a morphological
  opening + closing at 5% of the image's geometric side, normalised to [0, 1].
- :func:`foreground_core`: the deepest part of the largest salient region, used as *definite* foreground so
  that GrabCut cannot collapse to an empty mask when object and background colours overlap (camouflage).

Every function works on the small ``work_side`` copy (about 200 px): the whole map costs a few milliseconds.
The raster scan is compiled with numba (cached on disk after the first call).
"""

from __future__ import annotations

import cv2
import numba
import numpy as np


@numba.njit(cache=True)  # type: ignore[misc]
def _mbd_scan(img: np.ndarray, passes: int) -> np.ndarray:  # pragma: no cover - compiled
    h, w, c = img.shape
    out = np.zeros((h, w), np.float32)
    for ch in range(c):
        val = img[:, :, ch]
        dist = np.full((h, w), np.inf, np.float32)
        hi = val.copy()
        lo = val.copy()
        for y in range(h):
            dist[y, 0] = 0.0
            dist[y, w - 1] = 0.0
        for x in range(w):
            dist[0, x] = 0.0
            dist[h - 1, x] = 0.0
        for p in range(passes):
            step = 1 if p % 2 == 0 else -1
            ys = range(1, h - 1) if step == 1 else range(h - 2, 0, -1)
            for y in ys:
                xs = range(1, w - 1) if step == 1 else range(w - 2, 0, -1)
                for x in xs:
                    v = val[y, x]
                    for k in range(2):
                        yy = y - step if k == 0 else y
                        xx = x if k == 0 else x - step
                        u = max(hi[yy, xx], v)
                        lw = min(lo[yy, xx], v)
                        if u - lw < dist[y, x]:
                            dist[y, x] = u - lw
                            hi[y, x] = u
                            lo[y, x] = lw
        for y in range(h):
            for x in range(w):
                out[y, x] += dist[y, x]
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    """float ``(h, w)`` -> float32 in [0, 1]: minimum to 0, 99.5th percentile to 1 (clipped)."""
    lo, hi = float(x.min()), float(np.percentile(x, 99.5))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def minimum_barrier_distance(image: np.ndarray, passes: int = 3) -> np.ndarray:
    """Minimum barrier distance to the border, float32 ``(h, w)`` in [0, 1] (1 = most salient).

    ``image``: RGB uint8 ``(h, w, 3)`` (small: the scan is O(h w passes)). Computed per Lab channel on a
    3x3-blurred copy and summed; ``passes`` alternating forward/backward raster scans (3 is the published
    setting).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"minimum_barrier_distance needs an RGB uint8 (h, w, 3) image, got {image.shape} {image.dtype}")
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (3, 3), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    return normalise(_mbd_scan(np.ascontiguousarray(lab), int(passes)))


def border_strips(h: int, w: int, frac: float) -> list[tuple[slice, slice]]:
    """The four border strips (top, bottom, left, right) ``frac`` of the shorter side wide, as slices."""
    b = max(2, round(frac * min(h, w)))
    return [(slice(0, b), slice(None)), (slice(h - b, h), slice(None)), (slice(None), slice(0, b)),
            (slice(None), slice(w - b, w))]


def backgroundness(image: np.ndarray, border_frac: float = 0.1) -> np.ndarray:
    """Colour distance to the border, float32 ``(h, w)`` in [0, 1] (1 = unlike every side).

    For each border strip (``border_frac`` of the shorter side), the Mahalanobis distance of every pixel's
    Lab colour to the strip's mean and covariance, normalised by its maximum; the sum over the four sides
    minus the largest one (a side the object covers does not count).
    """
    h, w = image.shape[:2]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
    flat = lab.reshape(-1, 3)
    dists = []
    for ys, xs in border_strips(h, w, border_frac):
        strip = lab[ys, xs].reshape(-1, 3)
        inv = np.linalg.inv(np.cov(strip.T) + np.eye(3))
        d = flat - strip.mean(axis=0)
        dist = np.sqrt(np.einsum("ni,ij,nj->n", d, inv, d))
        dists.append(dist / (dist.max() + 1e-6))
    stacked = np.stack(dists, axis=1)
    return normalise((stacked.sum(axis=1) - stacked.max(axis=1)).reshape(h, w))


def centre_prior(h: int, w: int, sigma: float = 0.5) -> np.ndarray:
    """Gaussian centre prior float32 ``(h, w)`` in (0, 1], ``sigma`` relative to each side."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.exp(-(((yy - h / 2) / (sigma * h)) ** 2 + ((xx - w / 2) / (sigma * w)) ** 2)).astype(np.float32)


def salient_map(image: np.ndarray) -> np.ndarray:
    """Saliency float32 ``(h, w)`` in [0, 1] of a small RGB uint8 ``(h, w, 3)`` image (see the module doc)."""
    h, w = image.shape[:2]
    s = normalise(minimum_barrier_distance(image) + backgroundness(image))
    s = normalise(s * (0.5 + 0.5 * centre_prior(h, w)))
    k = max(3, round(0.05 * np.sqrt(h * w)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    s = cv2.morphologyEx(s, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(s, cv2.MORPH_CLOSE, kernel)  # type: ignore[no-any-return]


def otsu_threshold(saliency: np.ndarray) -> float:
    """Otsu's threshold of a [0, 1] map, in [0, 1]."""
    s8 = np.clip(saliency * 255.0, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255.0


def foreground_core(saliency: np.ndarray, depth: float = 0.5) -> np.ndarray:
    """bool ``(h, w)``, never empty: pixels of the largest region above Otsu's threshold whose distance to
    the region's edge is at least ``depth`` x the region's maximum (its "spine"); the saliency maximum when
    nothing is above the threshold."""
    fg = saliency > otsu_threshold(saliency)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return saliency >= saliency.max()  # type: ignore[no-any-return]
    region = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    return dist >= depth * float(dist.max())  # type: ignore[no-any-return]


PRIORS = {
    "mbd": minimum_barrier_distance,
    "backgroundness": backgroundness,
}
"""Saliency cues a segmenter may take as extra input channels (``train.priors``), name -> function of an RGB
uint8 ``(h, w, 3)`` image returning float32 ``(h, w)`` in [0, 1]."""


def prior_channels(image: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The named :data:`PRIORS` of an RGB uint8 ``(h, w, 3)`` image as float32 ``(h, w, len(names))`` in
    [-1, 1] (``2 p - 1``, centred like normalised image channels). ``names`` empty -> ``(h, w, 0)``."""
    unknown = sorted(set(names) - set(PRIORS))
    if unknown:
        raise ValueError(f"unknown saliency priors {unknown}; choose from {sorted(PRIORS)}")
    h, w = image.shape[:2]
    if not names:
        return np.zeros((h, w, 0), np.float32)
    return np.stack([2.0 * PRIORS[n](image) - 1.0 for n in names], axis=-1).astype(np.float32)
