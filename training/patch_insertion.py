"""On-the-fly synthetic CMBs inserted into training patches on the model grid.

The cached cases carry a fixed set of CMBs (841 in the bundled model's cache today), which a network
learns by heart.  Here every "insert" patch gets fresh CMBs at random positions of any
background patch (next to veins, sulci and the brain edge included), so each step sees
new CMBs.  The patch is already preprocessed (`CMBLib.detection.preprocess`: CMBs dark,
intensities ``(x - p50) / (p95 - p5)``), on the model grid ([k, j, i], spacing given as
(i, j, k) mm).

A CMB is a radial profile ``exp(-ln 2 (r / R)^p)`` (R: half-maximum radius in mm,
p: 2 = Gaussian ... 6 = nearly flat-topped sphere), slightly ellipsoidal, plus an optional
weak blooming halo.  It is integrated over each model voxel in-plane and over a slab of
thickness ``slab_mm`` (the native slice thickness, >= the model's 2 mm) along k, so
thick-slice partial volume lowers the visible contrast as in a real acquisition.

Intensity models (CMB attenuation ``a`` in [0, 1] per voxel):

* magnitude (SWI, T2*): ``x' = x0 + (x - x0) (1 - a)`` with ``x0`` the normalised
  zero-signal level (unknown after normalisation: drawn from `zero_level`);
* additive (QSM, negated): ``x' = x - a * k`` with ``k`` in `additive_scale`.

Labels: voxels with at least half the CMB's peak attenuation on the grid (as
`CMBLib.synthesis.cmb_insertion`), always including the peak voxel.
"""
from collections.abc import Sequence

import numpy as np

LN2 = float(np.log(2.0))


def cmb_attenuation(shape_kji, spacing_ijk, centre_kji, radius_mm: float, power: float = 2.0,
                    axes_scale=(1.0, 1.0, 1.0), slab_mm: float = 2.0, halo_weight: float = 0.0,
                    halo_scale: float = 2.0, inplane_samples: int = 3, slab_step_mm: float = 0.5) -> np.ndarray:
    """Voxel-averaged attenuation in [0, 1] (float32, `shape_kji`) of one CMB.

    centre_kji: CMB centre in voxel coordinates (k, j, i, may be fractional);
    spacing_ijk: voxel size (i, j, k) mm; axes_scale: ellipsoid scale along (k, j, i).
    Each voxel averages the profile over its in-plane extent and over `slab_mm` along k
    (centred on the voxel centre; `slab_mm` below the voxel size is raised to it).
    """
    sp_kji = np.asarray(spacing_ijk, float)[::-1]
    c = np.asarray(centre_kji, float)
    scale = np.asarray(axes_scale, float)
    slab = max(float(slab_mm), sp_kji[0])
    reach_mm = radius_mm * scale.max() * (halo_scale * 2.2 if halo_weight > 0 else 2.2) + slab / 2 + 1.0
    half = np.ceil(reach_mm / sp_kji).astype(int)
    lo = np.maximum(np.floor(c).astype(int) - half, 0)
    hi = np.minimum(np.floor(c).astype(int) + half + 1, np.asarray(shape_kji))
    out = np.zeros(tuple(shape_kji), np.float32)
    if np.any(hi <= lo):
        return out
    nz = max(1, int(np.ceil(slab / slab_step_mm)))
    offs_k = ((np.arange(nz) + 0.5) / nz - 0.5) * slab / sp_kji[0]     # voxel units along k
    offs_p = (np.arange(inplane_samples) + 0.5) / inplane_samples - 0.5
    kk = (np.arange(lo[0], hi[0])[:, None] + offs_k[None]).ravel()
    jj = (np.arange(lo[1], hi[1])[:, None] + offs_p[None]).ravel()
    ii = (np.arange(lo[2], hi[2])[:, None] + offs_p[None]).ravel()
    dk = ((kk - c[0]) * sp_kji[0] / scale[0])[:, None, None]
    dj = ((jj - c[1]) * sp_kji[1] / scale[1])[None, :, None]
    di = ((ii - c[2]) * sp_kji[2] / scale[2])[None, None, :]
    r = np.sqrt(dk ** 2 + dj ** 2 + di ** 2) / radius_mm
    att = np.exp(-LN2 * r ** power)
    if halo_weight > 0:
        halo = np.exp(-LN2 * (r / halo_scale) ** 2)
        att = att + halo_weight * halo * (1 - att)
    n = hi - lo
    att = att.reshape(n[0], nz, n[1], inplane_samples, n[2], inplane_samples).mean(axis=(1, 3, 5))
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = att
    return out


def insert_random_cmbs(x: np.ndarray, y: np.ndarray, brain: np.ndarray, rng, spacing_ijk=(1.0, 1.0, 2.0),
                       n_cmbs: tuple[int, int] = (1, 3), radius_mm: tuple[float, float] = (0.9, 3.0),
                       contrast: tuple[float, float] = (0.3, 0.95), slab_mm: tuple[float, float] = (2.0, 5.0),
                       zero_level: tuple[float, float] = (-2.0, -0.6), additive_prob: float = 0.2,
                       additive_scale: tuple[float, float] = (0.8, 3.0), min_peak: float = 0.2,
                       min_distance_mm: float = 7.0, margin: int = 4, edge_prob: float = 0.0,
                       edge_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Insert 1-3 random CMBs into patch `x` (float32 [k, j, i]) inside `brain` (bool).

    `y` (0/1 target) gets the new CMBs' labels; CMBs keep `min_distance_mm` from existing
    ones.  CMBs whose peak attenuation on the grid falls below `min_peak` (invisible after
    slab averaging) are redrawn.  With probability `edge_prob` a patch's CMBs go within
    `edge_mm` of the brain's edge (cortical CMBs next to sulci and the skull, which a
    uniform draw under-samples), when the patch holds such voxels.  Returns (x, y, number
    inserted).
    """
    x = np.array(x, np.float32, copy=True)
    y = np.array(y, np.uint8, copy=True)
    sp_kji = np.asarray(spacing_ijk, float)[::-1]
    inner = np.zeros(brain.shape, bool)
    sl = tuple(slice(min(margin, s // 4), s - min(margin, s // 4)) for s in brain.shape)
    inner[sl] = brain[sl]
    if edge_prob > 0 and rng.random() < edge_prob:
        rim = inner & (brain_edge_distance(brain, spacing_ijk) <= edge_mm)
        if rim.any():
            inner = rim
    cand = np.argwhere(inner)
    if len(cand) == 0:
        return x, y, 0
    taken = [p * sp_kji for p in np.argwhere(y > 0)[:: max(1, int(y.sum()) // 50 or 1)]]
    additive = rng.random() < additive_prob
    x0 = rng.uniform(*zero_level)
    k_add = rng.uniform(*additive_scale)
    total = np.zeros(x.shape, np.float32)
    placed = 0
    for _ in range(int(rng.integers(n_cmbs[0], n_cmbs[1] + 1))):
        for _try in range(20):
            c = cand[rng.integers(len(cand))] + rng.uniform(-0.5, 0.5, 3)
            if all(np.linalg.norm(c * sp_kji - t) >= min_distance_mm for t in taken):
                break
        else:
            continue
        for _try in range(10):
            att = cmb_attenuation(x.shape, spacing_ijk, c, rng.uniform(*radius_mm), power=rng.uniform(2.0, 6.0),
                                  axes_scale=rng.uniform(0.8, 1.25, 3), slab_mm=rng.uniform(*slab_mm),
                                  halo_weight=rng.uniform(0.0, 0.35) if rng.random() < 0.5 else 0.0,
                                  halo_scale=rng.uniform(1.5, 2.5))
            att *= rng.uniform(*contrast)
            peak = float(att.max())
            if peak >= min_peak:
                break
        else:
            continue
        sel = att >= 0.5 * peak
        sel[np.unravel_index(int(np.argmax(att)), att.shape)] = True
        y[sel] = 1
        total = 1 - (1 - total) * (1 - att)
        taken.append(c * sp_kji)
        placed += 1
    if placed:
        if additive:
            x = x - total * k_add
        else:
            x = np.where(x > x0, x0 + (x - x0) * (1 - total), x)
    return x.astype(np.float32), y, placed


def brain_edge_distance(brain: np.ndarray, spacing_ijk=(1.0, 1.0, 2.0)) -> np.ndarray:
    """Distance (mm) of each brain voxel of a patch to the nearest non-brain voxel; the
    patch's own borders do not count as an edge (0 outside the brain)."""
    from scipy import ndimage as ndi

    padded = np.pad(np.asarray(brain, bool), 1, mode="edge")
    dist = ndi.distance_transform_edt(padded, sampling=np.asarray(spacing_ijk, float)[::-1])
    return dist[1:-1, 1:-1, 1:-1].astype(np.float32)


def crop_brain(case: dict, start: Sequence[int], patch_kji: Sequence[int]) -> np.ndarray:
    """The brain mask of `case` cropped like a patch starting at `start` ([k, j, i])."""
    from .sampling import _crop

    return _crop(case["brain"], start, patch_kji, False)
