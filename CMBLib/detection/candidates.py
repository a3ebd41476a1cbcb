"""CMB candidates from a probability map: connected components, size limits, properties.

Everything here works on the input's native grid (arrays [k, j, i], spacing in mm).

Size limits are in mm of *equivalent diameter* (the diameter of the sphere with the
component's volume).  The default minimum is 2 mm, the usual clinical lower bound.  On a
thick-slice clinical grid (0.86 x 0.86 x 4 mm) one voxel is 2.96 mm^3, i.e. 1.78 mm
equivalent diameter, so the 2 mm limit keeps components of two or more voxels: it removes
single-voxel specks without dropping a CMB that shows on one slice only (a 3 x 3 voxel
spot on one slice is 26.6 mm^3, 3.7 mm).  Because a 4 mm slice inflates the volume of a
small focus, the limit is deliberately lenient there.  On a 1 mm isotropic grid 2 mm means
at least 5 voxels.  The maximum (10 mm, BOMBS) drops larger blobs (haemorrhages, veins
merged into a long component).

Shape: the physical-space inertia (covariance) tensor of the component, each voxel
counted as its box (so a one-slice focus has the slice thickness as extent), gives
eigenvalues l1 >= l2 >= l3 (mm^2).  ``elongation = sqrt(l1 / l3)`` (1 for a ball), and
``sphericity`` is the Wadell sphericity of the ellipsoid with those moments (1 for a
ball, lower for rods and discs).  ``vessel_like`` is set when elongation >= 3: a hint for
the reviewer (veins are the classic mimic), not a filter.
"""
from typing import Optional

import numpy as np
from scipy import ndimage

from ..geometry import Volume, bombs_size_class, equivalent_diameter_mm

VESSEL_ELONGATION = 3.0


def find_candidates(probability: Volume, threshold: float = 0.5, min_diameter_mm: float = 2.0,
                    max_diameter_mm: float = 10.0, brain_mask: Optional[np.ndarray] = None,
                    connectivity: int = 26) -> tuple[np.ndarray, list[dict], dict]:
    """Label the components of ``probability >= threshold`` and keep those within the limits.

    `probability`: Volume of values in [0, 1] on the native grid.  `brain_mask`: optional
    boolean array of the same shape; a component whose centre lies outside it is dropped.
    Returns (instance label array int16 [k, j, i] numbered 1..N by descending max
    probability, list of records (see `component_properties`), counts of what was dropped).
    """
    prob = np.asarray(probability.array, dtype=np.float32)
    binary = prob >= float(threshold)
    structure = ndimage.generate_binary_structure(3, 3 if connectivity == 26 else 1)
    labels, n = ndimage.label(binary, structure=structure)
    dropped = {"too_small": 0, "too_large": 0, "outside_brain": 0}
    kept = []
    # size limits first, from voxel counts (cheap), so noise specks cost nothing more
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    diameters = np.array([equivalent_diameter_mm(c * probability.voxel_volume_mm3) for c in counts])
    objects = ndimage.find_objects(labels)
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        if diameters[lab] < min_diameter_mm:
            dropped["too_small"] += 1
            continue
        if diameters[lab] > max_diameter_mm:
            dropped["too_large"] += 1
            continue
        comp = labels[sl] == lab
        rec = component_properties(comp, sl, prob[sl], probability)
        if brain_mask is not None:
            kji = tuple(int(round(v)) for v in rec["centre_ijk"][::-1])
            inside = all(0 <= v < s for v, s in zip(kji, brain_mask.shape)) and bool(brain_mask[kji])
            if not inside:
                dropped["outside_brain"] += 1
                continue
        kept.append((lab, sl, rec))
    kept.sort(key=lambda t: (-t[2]["max_probability"], t[2]["centre_ijk"][2], t[2]["centre_ijk"][1],
                             t[2]["centre_ijk"][0]))
    out = np.zeros(prob.shape, dtype=np.int16)
    records = []
    for new, (lab, sl, rec) in enumerate(kept, start=1):
        out[sl][labels[sl] == lab] = new
        rec["label"] = new
        records.append(rec)
    return out, records, dropped


def component_properties(comp: np.ndarray, sl, prob: np.ndarray, grid: Volume) -> dict:
    """Properties of one component: boolean `comp` inside bounding box `sl` of `grid`.

    Centre = voxel centroid, as (i, j, k) voxel index and RAS mm; volume in mm^3;
    diameters in mm; probabilities over the component's voxels.
    """
    kji = np.argwhere(comp).astype(float) + np.array([s.start for s in sl], dtype=float)
    centre_kji = kji.mean(axis=0)
    centre_ijk = centre_kji[::-1]
    nvox = int(kji.shape[0])
    volume_mm3 = nvox * grid.voxel_volume_mm3
    diameter = equivalent_diameter_mm(volume_mm3)
    p = prob[comp]
    elong, spher = shape_measures(kji[:, ::-1], grid)
    return {
        "label": 0,
        "centre_ras": [round(float(v), 3) for v in grid.voxel_to_ras(centre_ijk)],
        "centre_ijk": [round(float(v), 3) for v in centre_ijk],
        "voxel_count": nvox,
        "volume_mm3": round(float(volume_mm3), 3),
        "diameter_mm": round(float(diameter), 3),
        "size_class": bombs_size_class(diameter),
        "max_probability": round(float(p.max()), 4),
        "mean_probability": round(float(p.mean()), 4),
        "elongation": round(float(elong), 3),
        "sphericity": round(float(spher), 3),
        "vessel_like": bool(elong >= VESSEL_ELONGATION),
    }


def inertia_eigenvalues(ijk: np.ndarray, grid: Volume) -> np.ndarray:
    """Eigenvalues (mm^2, descending) of the covariance of voxel boxes at `ijk` (N, 3) in RAS mm."""
    m = grid.direction @ np.diag(grid.spacing)  # voxel axes in mm
    pts = np.asarray(ijk, dtype=float) @ m.T
    cov = np.cov(pts.T, bias=True) if len(pts) > 1 else np.zeros((3, 3))
    cov = cov + m @ m.T / 12.0  # each voxel is a box, not a point
    return np.sort(np.clip(np.linalg.eigvalsh(cov), 1e-12, None))[::-1]


def shape_measures(ijk: np.ndarray, grid: Volume) -> tuple[float, float]:
    """(elongation sqrt(l1/l3) >= 1, Wadell sphericity of the moment ellipsoid in (0, 1])."""
    lam = inertia_eigenvalues(ijk, grid)
    a, b, c = np.sqrt(5.0 * lam)  # semi-axes of the ellipsoid with these moments
    elongation = float(np.sqrt(lam[0] / lam[2]))
    p = 1.6075  # Knud Thomsen's approximation of the ellipsoid's surface
    area_term = (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1.0 / p)
    sphericity = float((a * b * c) ** (2.0 / 3.0) / area_term)
    return elongation, min(sphericity, 1.0)
