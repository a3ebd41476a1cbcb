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
