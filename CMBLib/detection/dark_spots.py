"""Small dark spots at the scan's own resolution: candidates for the native patch stage (issue 28).

The 3D U-Net works on a 1 x 1 x 2 mm grid; a CMB of 1-3 mm on a 0.86 x 0.86 x 4 mm scan is
averaged away there.  This stage looks at the scan as it was acquired: per slice, the
in-plane **black top-hat** (grey closing minus image, square footprint of `BACKGROUND_MM`
half-width) is the depth of every dark structure narrower than the footprint below its
surroundings, in units of the brain's median intensity (so it does not depend on the
scanner's scale).  Its local maxima inside the brain, deeper than `min_dip`, one per
`min_distance_mm`, are the candidates; a patch network (`patch_net.py`) then tells CMBs
from vessels, sulci and noise.

Units: arrays are ``[k, j, i]`` as `Volume.array`; the *slice axis* is the axis of largest
spacing (axis 0 on a usual axial scan); the top-hat's footprint spans the two other axes.
Distances in mm; centres in RAS mm.

    cands = dark_spot_candidates(volume, brain_mask, top_k=3000)   # list of dicts
"""
from typing import Optional

import numpy as np

from ..geometry import Volume

BACKGROUND_MM = 3.0      # half-width of the top-hat footprint: spots up to ~6 mm across stand out
SMOOTH_PX = 0.5          # in-plane Gaussian (pixels) against single-pixel noise before the top-hat
MIN_DIP = 0.08           # shallowest dip kept (fraction of the brain's median intensity)
MIN_DISTANCE_MM = 1.5    # one candidate per spot (3D, mm)
TOP_K = 3000


def slice_axis(spacing_kji) -> int:
    """Index (in [k, j, i] order) of the through-plane axis: the largest spacing; k on ties."""
    sp = np.asarray(spacing_kji, float)
    return int(np.argmax(sp >= sp.max() - 1e-6))


def brain_median(a: np.ndarray, mask: np.ndarray) -> float:
    """Median intensity inside the mask (the tissue level CMB dips are measured against)."""
    v = a[mask]
    if v.size == 0:
        raise ValueError("the brain mask is empty")
    m = float(np.median(v))
    return m if m > 0 else float(np.mean(np.abs(v))) or 1.0


def dip_map(volume: Volume, brain_mask: np.ndarray) -> tuple:
    """(dip [k, j, i] float32, tissue level): per-slice black top-hat of the lightly smoothed
    image divided by the brain's median intensity; zero outside the mask's bounding box."""
    from scipy import ndimage as ndi

    a = np.asarray(volume.array, np.float32)
    mask = np.asarray(brain_mask, bool)
    if a.ndim != 3 or a.shape != mask.shape:
        raise ValueError(f"image {a.shape} and brain mask {mask.shape} must be the same 3D grid")
    if not np.all(np.isfinite(a[mask])):
        raise ValueError("the image has NaN or infinite values inside the brain")
    level = brain_median(a, mask)
    sp_kji = np.asarray(volume.spacing[::-1], float)
    ax = slice_axis(sp_kji)
    inplane = [d for d in range(3) if d != ax]
    px = float(np.mean(sp_kji[inplane]))
    half = max(1, int(round(BACKGROUND_MM / px)))
    out = np.zeros(a.shape, np.float32)
    idx = np.argwhere(mask)
    reach = 2 * half + 2          # the closing reads 2 x half around a voxel, the smoothing 2 more
    lo = np.maximum(idx.min(axis=0) - reach, 0)
    hi = np.minimum(idx.max(axis=0) + reach + 1, a.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi))
    b = a[box] / level
    sigma = [SMOOTH_PX] * 3
    sigma[ax] = 0.0
    b = ndi.gaussian_filter(b, sigma)
    size = [2 * half + 1] * 3
    size[ax] = 1
    out[box] = ndi.grey_closing(b, size=size) - b
    return out, level


def dark_spot_candidates(volume: Volume, brain_mask: np.ndarray, top_k: int = TOP_K, min_dip: float = MIN_DIP,
                         min_distance_mm: float = MIN_DISTANCE_MM, dip: Optional[np.ndarray] = None) -> list:
    """Deepest local dips inside the brain: 3 x 3 x 3 maxima of `dip_map`, at least `min_dip`,
    taken deepest first, each suppressing shallower ones within `min_distance_mm`, up to
    `top_k`.  Returns dicts: dip (fraction of tissue), kji (voxel index [k, j, i]), centre_ras (mm)."""
    from scipy import ndimage as ndi

    mask = np.asarray(brain_mask, bool)
    d = dip_map(volume, mask)[0] if dip is None else dip
    peaks = (d == ndi.maximum_filter(d, size=3, mode="constant")) & (d >= min_dip) & mask
    kji = np.argwhere(peaks)
    if kji.size == 0:
        return []
    depth = d[tuple(kji.T)]
    order = np.argsort(-depth, kind="stable")
    kji, depth = kji[order], depth[order]
    pos = kji * np.asarray(volume.spacing[::-1], float)
    chosen: list = []
    for n in range(len(kji)):
        if len(chosen) >= top_k:
            break
        if chosen and np.min(np.sum((pos[chosen] - pos[n]) ** 2, axis=1)) < min_distance_mm ** 2:
            continue
        chosen.append(n)
    centres = volume.kji_to_ras(kji[chosen].astype(float)) if chosen else np.zeros((0, 3))
    return [{"dip": float(depth[n]), "kji": [int(v) for v in kji[n]], "centre_ras": [float(v) for v in c]}
            for n, c in zip(chosen, centres)]
