"""The internal cerebral veins and the vein of Galen as a synthetic mimic (dark on T2*-GRE / SWI).

On clinical T2* the paired internal cerebral veins run front to back along the roof of the
third ventricle, 1-2 mm either side of the midline, and join behind into the vein of Galen,
which turns up and back under the splenium.  On thick axial slices a stretch of them looks
like a dark focus between the thalami: the detector's one repeated false positive on real
clinical scans (issue 13).  Coordinates are RAS mm.
"""
import numpy as np

from ..geometry import Volume
from .mimics import render_tube

THIRD_VENTRICLE, THALAMI = 14, (10, 49)   # FreeSurfer colour-table ids
MIDLINE_CSF = (14, 24)                     # third ventricle, CSF (aseg labels the velum interpositum 24)
PAIR_SEPARATION_MM = 3.0


def deep_vein_path(labels: Volume, step_mm: float = 2.0) -> np.ndarray:
    """(N, 3) RAS mm midline between the two internal cerebral veins of a FreeSurfer label
    map: 1.5 mm above the top of the third ventricle (label 14), front to back over the
    extent of the thalami (3rd-97th percentile of labels 10 / 49 along RAS y)."""
    lab = np.asarray(labels.array)
    v3 = labels.kji_to_ras(np.argwhere(lab == THIRD_VENTRICLE).astype(float))
    th = labels.kji_to_ras(np.argwhere(np.isin(lab, THALAMI)).astype(float))
    if not len(v3) or not len(th):
        raise ValueError("the label map has no third ventricle (14) or thalami (10, 49)")
    y0, y1 = np.percentile(th[:, 1], 3), np.percentile(th[:, 1], 97)
    x_mid = float(np.median(v3[:, 0]))
    pts = []
    for y in np.arange(y1, y0, -step_mm):
        near = v3[np.abs(v3[:, 1] - y) <= step_mm / 2]
        if len(near):
            pts.append((x_mid, y, near[:, 2].max() + 1.5))
    return np.array(pts, dtype=float)


def velum_vein_path(labels: Volume, step_mm: float = 2.0) -> np.ndarray:
    """(N, 3) RAS mm midline between the internal cerebral veins where they run: in the velum
    interpositum, 1 mm below the top of the midline CSF (labels 14 and 24 within 2 mm of the
    third ventricle's median x), front to back over the extent of the thalami, the front and
    back ends that dip more than 4 mm below the median height (down the foramen of Monro and
    the third ventricle's posterior recess) left out.  `deep_vein_path` runs 1.5 mm above the
    third ventricle's own label instead, which on a brain whose thalami meet above it (an
    interthalamic adhesion) lies in thalamus."""
    lab = np.asarray(labels.array)
    v3 = labels.kji_to_ras(np.argwhere(lab == THIRD_VENTRICLE).astype(float))
    mid = labels.kji_to_ras(np.argwhere(np.isin(lab, MIDLINE_CSF)).astype(float))
    th = labels.kji_to_ras(np.argwhere(np.isin(lab, THALAMI)).astype(float))
    if not len(v3) or not len(th):
        raise ValueError("the label map has no third ventricle (14) or thalami (10, 49)")
    x_mid = float(np.median(v3[:, 0]))
    mid = mid[np.abs(mid[:, 0] - x_mid) <= 2.0]
    y0, y1 = np.percentile(th[:, 1], 3), np.percentile(th[:, 1], 97)
    pts = []
    for y in np.arange(y1, y0, -step_mm):
        near = mid[np.abs(mid[:, 1] - y) <= step_mm / 2]
        if len(near):
            pts.append((x_mid, y, near[:, 2].max() - 1.0))
    pts = np.array(pts, dtype=float)
    high = np.flatnonzero(pts[:, 2] >= np.median(pts[:, 2]) - 4.0)
    return pts[high[0]:high[-1] + 1]


def pineal_centre(labels: Volume) -> np.ndarray:
    """RAS mm of the pineal gland: 3 mm behind and 1 mm below the posterior end of the third
    ventricle (its voxels within 1.5 mm of its most posterior one), in the quadrigeminal cistern."""
    lab = np.asarray(labels.array)
    v3 = labels.kji_to_ras(np.argwhere(lab == THIRD_VENTRICLE).astype(float))
    if not len(v3):
        raise ValueError("the label map has no third ventricle (14)")
    back = v3[v3[:, 1] <= v3[:, 1].min() + 1.5].mean(axis=0)
    return back + (0.0, -3.0, -1.0)


def draw_pineal(volume: Volume, centre_ras, radius_mm: float, contrast: float, rng=None):
    """`volume` with a calcified pineal gland (a dark blob, signal x (1 - contrast x occupancy))."""
    from .mimics import render_blob

    arr = np.asarray(volume.array, np.float32).copy()
    box, occ = render_blob(volume, centre_ras, radius_mm, rng)
    if box is not None:
        arr[box] *= 1.0 - contrast * occ
    return volume.with_array(arr)


def draw_deep_veins(volume: Volume, path: np.ndarray, radius_mm: float, contrast: float):
    """`volume` with the vein pair (x +- 1.5 mm along `path`, half-maximum radius
    `radius_mm`) and a vein of Galen (from the back end of `path`, 12 mm back and 6 mm up,
    1.6 x wider) darkened in: signal x (1 - contrast x occupancy).  Returns (Volume, the
    centre lines' points (M, 3) RAS mm)."""
    arr = np.asarray(volume.array, np.float32).copy()
    path = np.asarray(path, dtype=float)
    back = path[-1]
    half = PAIR_SEPARATION_MM / 2
    tubes = [(path + (dx, 0.0, 0.0), radius_mm) for dx in (-half, half)]
    tubes.append((np.array([back, back + (0.0, -12.0, 6.0)]), 1.6 * radius_mm))
    for pts, r in tubes:
        box, occ = render_tube(volume, pts, r)
        if box is not None:
            arr[box] *= 1.0 - contrast * occ
    return volume.with_array(arr), np.concatenate([t[0] for t in tubes])
