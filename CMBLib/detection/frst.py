"""Fast radial symmetry transform (Loy & Zelinsky, TPAMI 2003) for CMB candidates: the first
stage of Xia et al. (seed paper 001), in-plane per slice at the scan's own resolution.

A CMB is a small round dark spot: the image gradient around it points away from its centre
on every side, so each edge pixel p "votes" for the pixel p - n * g(p) / |g(p)| at distance n
against its gradient (the negatively-affected pixel of Loy & Zelinsky).  Per radius n, the
votes' count O_n and gradient magnitude M_n are accumulated, O_n is clipped at kappa_n, and
F_n = (M_n / kappa_n) (O_n / kappa_n) ** alpha is smoothed by a Gaussian of 0.25 n; the
transform is the mean of F_n over the radii.  A disc of radius n collects votes from its
whole rim at its centre; a line (a vein) only from its two sides, spread along its length,
so its response is weaker; a bright spot's gradient points inwards and gives no vote (dark
symmetry only; pass ``dark=False`` for QSM's bright CMBs).

Units: radii are in mm and turned into in-plane pixels from the spacing (a 1-5 mm diameter
CMB: radii 0.5-2.5 mm; at 0.86 mm pixels that is 1, 2, 3 pixels, at 0.45 mm 1-6); arrays are
[k, j, i] (slices first), as `Volume.array`.  The transform is computed on the image divided
by the tissue intensity (median inside the brain; for bright CMBs the 1st-99th percentile
range), so its values do not change when the image is scaled.

    S = frst(volume)                                     # float32 [k, j, i]
    cands = frst_candidates(volume, brain_mask, top_k=100)   # list of dicts, centre_ras in mm
"""
from typing import Optional

import numpy as np

from ..geometry import Volume

ALPHA = 2.0            # radial strictness (Loy & Zelinsky: 2)
KAPPA = {1: 8.0}       # orientation clip per radius in pixels (Loy & Zelinsky: 8 for n = 1, else 9.9)
KAPPA_OTHER = 9.9
GRADIENT_QUANTILE = 50.0   # ignore gradients below this percentile (the noise floor; Loy's beta)
DIAMETERS_MM = (1.0, 5.0)  # CMB diameters the radii cover
MAX_RADII = 6


def radii_pixels(spacing_ji, diameters_mm=DIAMETERS_MM, max_radii: int = MAX_RADII) -> np.ndarray:
    """Integer in-plane radii (pixels) covering CMBs of `diameters_mm` on pixels of
    `spacing_ji` (mm; their mean is used): at least 1 pixel, at most `max_radii` radii."""
    px = float(np.mean(spacing_ji))
    lo = max(1, int(round(diameters_mm[0] / 2 / px)))
    hi = max(lo, int(round(diameters_mm[1] / 2 / px)))
    r = np.arange(lo, hi + 1)
    if r.size > max_radii:
        r = np.unique(np.round(np.linspace(lo, hi, max_radii)).astype(int))
    return r


def _robust_scale(a: np.ndarray, mask: np.ndarray, dark: bool) -> float:
    """The tissue intensity (median inside the mask) for magnitude images, whose CMBs are dips
    proportional to it; for QSM (bright CMBs, values around 0) the 1st-99th percentile range."""
    step = max(1, int(np.ceil((a.size / 2e5) ** (1 / 3))))
    sub = a[::step, ::step, ::step][mask[::step, ::step, ::step]]
    if sub.size == 0:
        sub = a[mask]
    if sub.size == 0:
        return 1.0
    if dark:
        return float(np.median(np.abs(sub))) or 1.0
    lo, hi = np.percentile(sub, [1, 99])
    return float(hi - lo) or 1.0


def _gaussian_inplane(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """In-plane Gaussian of a [k, j, i] float32 stack (truncated at 2.5 sigma), separable."""
    from scipy import ndimage

    if sigma_px <= 0:
        return a
    out = ndimage.gaussian_filter1d(a, sigma_px, axis=1, truncate=2.5)
    return ndimage.gaussian_filter1d(out, sigma_px, axis=2, truncate=2.5, output=out)


def frst(volume: Volume, mask: Optional[np.ndarray] = None, radii_px=None, dark: bool = True,
         alpha: float = ALPHA, gradient_quantile: float = GRADIENT_QUANTILE) -> np.ndarray:
    """The dark (or bright) radial symmetry transform, float32 [k, j, i], >= 0.

    mask: bool [k, j, i], the brain; only gradients there vote (None: every non-zero voxel).
    radii_px: in-plane radii in pixels (default `radii_pixels` for 1-5 mm CMBs).
    gradient_quantile: gradients below this percentile of the voting voxels' do not vote.
    Speed: the work is done inside the mask's bounding box, padded in-plane by the largest
    radius so every vote lands inside (no bounds checks, flat indices), a few slices at a
    time (the arrays stay in the processor's cache); the votes of all radii are summed and
    smoothed once (Gaussian of 0.25 x the mean radius; Loy & Zelinsky smooth each radius
    by 0.25 n).
    """
    a = np.asarray(volume.array, dtype=np.float32)
    out = np.zeros(a.shape, np.float32)
    sj, si = float(volume.spacing[1]), float(volume.spacing[0])
    radii = [int(n) for n in (radii_pixels((sj, si)) if radii_px is None else radii_px)]
    mask = (a != 0) if mask is None else np.asarray(mask, bool)
    if not mask.any() or not radii:
        return out
    scale = _robust_scale(a, mask, dark)
    r = max(radii) + 1
    kk, jj, ii = (np.flatnonzero(mask.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    box = (slice(kk[0], kk[-1] + 1), slice(max(jj[0] - r, 0), jj[-1] + r + 1),
           slice(max(ii[0] - r, 0), ii[-1] + r + 1))
    pad = ((0, 0), (r, r), (r, r))
    img = np.pad(a[box] * np.float32((1.0 if dark else -1.0) / scale), pad, mode="edge")
    vote = np.pad(mask[box], pad)
    step = (sj, si) if abs(sj - si) > 1e-6 * max(sj, si) else None
    # the noise floor of the gradient magnitude, from every 4th slice
    sample = _gradient(img[::4])[2][vote[::4]]
    sample = sample[sample > 0]
    floor = float(np.percentile(sample[:: max(1, sample.size // 200000)], gradient_quantile)) if sample.size else 0.0
    nk = img.shape[0]
    chunk = max(1, int(2 ** 18 // (img.shape[1] * img.shape[2])))
    smooth = 0.25 * float(np.mean(radii))
    res = np.empty(img.shape, np.float32)
    for k0 in range(0, nk, chunk):
        part = slice(k0, min(k0 + chunk, nk))
        res[part] = _gaussian_inplane(_votes(img[part], vote[part], radii, floor, alpha, step), smooth)
    out[box] = res[:, r:img.shape[1] - r, r:img.shape[2] - r]
    return out


def _gradient(img):
    """In-plane central differences (per pixel) of a [k, j, i] stack and their magnitude."""
    gj = np.zeros_like(img)
    gi = np.zeros_like(img)
    np.subtract(img[:, 2:], img[:, :-2], out=gj[:, 1:-1])
    np.subtract(img[:, :, 2:], img[:, :, :-2], out=gi[:, :, 1:-1])
    gj *= 0.5
    gi *= 0.5
    return gj, gi, np.hypot(gj, gi)


def _votes(img, vote, radii, floor, alpha, step):
    """Mean over the radii of F_n = (M_n / kappa) (min(O_n, kappa) / kappa) ** alpha, unsmoothed,
    for a padded stack `img` [k, j, i] (votes never leave it: padding >= the largest radius)."""
    gj, gi, mag = _gradient(img)
    idx = np.flatnonzero(vote & (mag > floor))
    total = np.zeros(img.shape, np.float32)
    if idx.size == 0:
        return total
    ni = img.shape[2]
    m = mag.ravel()[idx]
    uj = gj.ravel()[idx] / m
    ui = gi.ravel()[idx] / m
    if step is not None:   # non-square pixels: the vote's step is measured in mm
        px = 0.5 * (step[0] + step[1])
        uj, ui = uj * np.float32(px / step[0]), ui * np.float32(px / step[1])
    flat = total.ravel()
    for n in radii:
        # dark centre: against the gradient (which points from dark to bright)
        target = idx - (np.rint(n * uj).astype(np.intp) * ni + np.rint(n * ui).astype(np.intp))
        o = np.bincount(target, minlength=flat.size).astype(np.float32)
        mm = np.bincount(target, weights=m, minlength=flat.size).astype(np.float32)
        kappa = KAPPA.get(n, KAPPA_OTHER)
        np.minimum(o, kappa, out=o)
        o *= np.float32(1.0 / kappa)
        if alpha == 2.0:
            o *= o
        else:
            o **= alpha
        o *= mm
        o *= np.float32(1.0 / (kappa * len(radii)))
        flat += o
    return total


def frst_candidates(volume: Volume, brain_mask: Optional[np.ndarray] = None, top_k: int = 100,
                    min_distance_mm: float = 3.0, dark: bool = True, radii_px=None,
                    transform: Optional[np.ndarray] = None) -> list:
    """CMB candidates: local maxima of the transform inside the brain, grouped across slices.

    A voxel is a candidate peak when it is the maximum of the transform over its 3 x 3 x 3
    neighbourhood; peaks are taken by score, each suppressing the weaker ones within
    `min_distance_mm` (3D, mm: one candidate per dark blob spanning several slices), up to
    `top_k`.  brain_mask: bool [k, j, i]
    (default: the non-zero voxels).  Returns dicts: score, kji (voxel index), centre_ras (mm),
    the score-weighted centre over the peak's 3 x 3 in-plane neighbourhood.
    """
    from scipy import ndimage

    a = np.asarray(volume.array)
    mask = (a != 0) if brain_mask is None else np.asarray(brain_mask, bool)
    s = frst(volume, mask, radii_px=radii_px, dark=dark) if transform is None else transform
    sp = np.asarray(volume.spacing[::-1], float)          # k, j, i
    kk, jj, ii = (np.flatnonzero(mask.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    if kk.size == 0:
        return []
    box = (slice(kk[0], kk[-1] + 1), slice(jj[0], jj[-1] + 1), slice(ii[0], ii[-1] + 1))
    sb = s[box]
    peaks = (sb == ndimage.maximum_filter(sb, size=3, mode="constant")) & (sb > 0) & mask[box]
    kji = np.argwhere(peaks) + [kk[0], jj[0], ii[0]]
    if kji.size == 0:
        return []
    score = s[tuple(kji.T)]
    order = np.argsort(-score, kind="stable")
    kji, score = kji[order], score[order]
    pos = kji * sp
    chosen = []
    for n in range(len(kji)):            # greedy suppression in mm (few thousand peaks at most)
        if len(chosen) >= top_k:
            break
        if chosen and np.min(np.sum((pos[chosen] - pos[n]) ** 2, axis=1)) < min_distance_mm ** 2:
            continue
        chosen.append(n)
    out = []
    for n in chosen:
        k, j, i = (int(v) for v in kji[n])
        j0, j1 = max(j - 1, 0), min(j + 2, s.shape[1])
        i0, i1 = max(i - 1, 0), min(i + 2, s.shape[2])
        patch = s[k, j0:j1, i0:i1].astype(np.float64)
        jj, ii = np.mgrid[j0:j1, i0:i1]
        wsum = patch.sum()
        centre = np.array([k, (patch * jj).sum() / wsum, (patch * ii).sum() / wsum]) if wsum > 0 else \
            np.array([k, j, i], float)
        out.append({"score": float(score[n]), "kji": [k, j, i],
                    "centre_ras": [float(v) for v in volume.kji_to_ras(centre)]})
    return out
