"""CMB mimics as labelled hard negatives, drawn into any Volume.

Types (ids in the returned label map):

1. ``vein`` -- thin tubes (radius 0.4-1.2 mm) along the cortex and through the white
   matter (medullary veins running towards the ventricles);
2. ``flow_void`` -- short straight vessel segments crossing the slices (round dark dots
   on every slice they cross: the classic CMB look-alike on thick slices);
3. ``calcification`` -- bilateral, roughly symmetric blobs in the basal ganglia;
4. ``cavernoma`` -- lesions larger than 10 mm with a dark rim and a mottled core;
5. ``air_bone`` -- dark partial-volume regions along the inferior brain border (skull base).

All shapes are defined in physical space (RAS mm) and evaluated at sub-voxel
resolution like the CMBs (`cmb_insertion`).  Polarity: on magnitude images (SWI, T2*:
``polarity="dark"``) veins, flow voids, calcification and air are all hypointense; on
QSM (``"bright"``) veins are paramagnetic (bright) while calcification is diamagnetic
(dark), so it appears opposite to CMBs.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..geometry import Volume
from .cmb_insertion import MAX_SUPERSAMPLE, SUBVOXEL_MM, robust_scale

MIMIC_TYPES = {1: "vein", 2: "flow_void", 3: "calcification", 4: "cavernoma", 5: "air_bone"}
TYPE_IDS = {v: k for k, v in MIMIC_TYPES.items()}


@dataclass
class MimicResult:
    image: Volume
    labels: Volume               # uint8 mimic type ids (0 = none), see MIMIC_TYPES
    types: dict[int, str]
    counts: dict[str, int]


def _box_points(volume: Volume, lo_ras, hi_ras, supersample=None):
    """Sub-voxel sample points (RAS) of the voxels whose centres are in an RAS box."""
    corners = np.array([[x, y, z] for x in (lo_ras[0], hi_ras[0]) for y in (lo_ras[1], hi_ras[1])
                        for z in (lo_ras[2], hi_ras[2])])
    ijk = volume.ras_to_voxel(corners)
    shape = np.asarray(volume.shape_ijk)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, shape)
    if np.any(hi <= lo):
        return None, None, None
    sp = np.asarray(volume.spacing, float)
    ss = (np.clip(np.ceil(sp / SUBVOXEL_MM), 1, MAX_SUPERSAMPLE).astype(int) if supersample is None
          else np.asarray(supersample, int))
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in ss]
    ax = [(np.arange(lo[a], hi[a])[:, None] + offs[a][None, :]).ravel() for a in range(3)]
    gk, gj, gi = np.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
    ras = volume.voxel_to_ras(np.stack([gi, gj, gk], axis=-1).reshape(-1, 3))
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    dims = (hi[2] - lo[2], ss[2], hi[1] - lo[1], ss[1], hi[0] - lo[0], ss[0])
    return box, ras, dims


def _average(values, dims):
    return values.reshape(dims).mean(axis=(1, 3, 5)).astype(np.float32)


def render_tube(volume: Volume, points_ras: np.ndarray, radius_mm: float, supersample=None):
    """Partial-volume occupancy (0-1) of a tube of Gaussian cross-section along a polyline."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points_ras, float)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    n = np.maximum(1, np.ceil(seg / 0.25)).astype(int)
    dense = np.concatenate([pts[i] + (pts[i + 1] - pts[i]) * (np.arange(n[i])[:, None] / n[i])
                            for i in range(len(pts) - 1)] + [pts[-1:]])
    reach = 2.5 * radius_mm + 0.5
    box, ras, dims = _box_points(volume, dense.min(axis=0) - reach, dense.max(axis=0) + reach, supersample)
    if box is None:
        return None, None
    d, _ = cKDTree(dense).query(ras, distance_upper_bound=reach)
    d = np.where(np.isfinite(d), d, reach * 10)
    occ = np.exp(-0.5 * (d / (radius_mm / 1.1774)) ** 2)
    return box, _average(occ, dims)


def render_blob(volume: Volume, centre_ras, radius_mm, rng=None, rim: bool = False, mottled: bool = False,
                supersample=None):
    """Occupancy (0-1) of an ellipsoidal blob; `rim`: a dark rim with a lighter core."""
    rng = np.random.default_rng(rng)
    c = np.asarray(centre_ras, float)
    axes = radius_mm * rng.uniform(0.8, 1.2, size=3)
    reach = axes.max() * 1.6 + 1
    box, ras, dims = _box_points(volume, c - reach, c + reach, supersample)
    if box is None:
        return None, None
    r = np.sqrt(np.sum(((ras - c) / axes) ** 2, axis=1))
    soft = 1.0 / (1.0 + np.exp((r - 1.0) * 8))
    if rim:
        core = 0.35 + (0.4 * np.sin(ras[:, 0] * 1.7 + ras[:, 1] * 1.3) * np.cos(ras[:, 2] * 1.1) if mottled else 0)
        occ = soft * np.where(r < 0.75, core, 1.0)
    else:
        occ = soft
    return box, _average(occ, dims)


def _random_curve(start, direction, length_mm, rng, curvature=0.15, step=1.0):
    pts = [np.asarray(start, float)]
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d) + 1e-9
    for _ in range(max(2, int(length_mm / step))):
        d = d + rng.normal(0, curvature, 3)
        d /= np.linalg.norm(d)
        pts.append(pts[-1] + step * d)
    return np.asarray(pts)


def add_mimics(volume: Volume, brain_mask: np.ndarray, rng=None, polarity: str = "dark",
               deep_gm_mask: Optional[np.ndarray] = None, n_veins: int = 12, n_flow_voids: int = 6,
               calcification: bool = True, cavernoma: bool = False, air_bone: bool = True,
               contrast=(0.3, 0.8), supersample=None) -> MimicResult:
    """Draw mimics into `volume` inside/along `brain_mask` (bool [k, j, i]).

    deep_gm_mask: where calcification may go (e.g. pallidum/putamen); without it, two
    symmetric points about 20 mm left and right of the brain centre are used.
    Returns a `MimicResult` (image, type label map, counts).
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(rng)
    img = np.asarray(volume.array, np.float32).copy()
    labels = np.zeros(img.shape, np.uint8)
    att_total = np.zeros(img.shape, np.float32)
    signed = np.zeros(img.shape, np.float32)  # +1 same sign as CMBs, -1 opposite (QSM calcification)
    counts = {v: 0 for v in MIMIC_TYPES.values()}
    brain = np.asarray(brain_mask, bool)
    if not brain.any():
        return MimicResult(volume.with_array(img), volume.with_array(labels), dict(MIMIC_TYPES), counts)
    sp_kji = np.asarray(volume.spacing, float)[::-1]
    depth = ndi.distance_transform_edt(brain, sampling=sp_kji)
    centre = volume.kji_to_ras(np.argwhere(brain).mean(axis=0))

    def pick(mask):
        idx = np.argwhere(mask)
        if len(idx) == 0:
            return None
        return volume.kji_to_ras(idx[rng.integers(len(idx))] + rng.uniform(-0.5, 0.5, 3))

    def stamp(box, occ, type_name, c, sign=1.0):
        if box is None:
            return
        a = occ * c
        t = att_total[box]
        att_total[box] = 1 - (1 - t) * (1 - a)
        signed[box] = np.where(a > 0.02, sign, signed[box])
        lab = labels[box]
        lab[(occ >= 0.5) & (lab == 0)] = TYPE_IDS[type_name]
        counts[type_name] += 1

    surface = (depth > 1.0) & (depth < 4.0)
    inner = depth > 12.0
    for v in range(n_veins):
        if v % 2 == 0:  # cortical vein: tangential, along the surface
            p = pick(surface)
            if p is None:
                continue
            radial = p - centre
            tang = np.cross(radial, rng.normal(size=3))
            curve = _random_curve(p, tang, rng.uniform(15, 45), rng, curvature=0.12)
            rad = rng.uniform(0.5, 1.2)
        else:  # medullary vein: from the cortex towards the centre, thin
            p = pick(inner)
            if p is None:
                continue
            direction = (p - centre) + rng.normal(0, 10, 3)
            curve = _random_curve(p, direction, rng.uniform(10, 30), rng, curvature=0.08)
            rad = rng.uniform(0.35, 0.7)
        box, occ = render_tube(volume, curve, rad, supersample)
        stamp(box, occ, "vein", rng.uniform(*contrast))
    slice_axis = volume.direction[:, 2]
    for _ in range(n_flow_voids):
        p = pick(depth > 2.0)
        if p is None:
            continue
        d = slice_axis + rng.normal(0, 0.25, 3)
        d /= np.linalg.norm(d)
        half = rng.uniform(3, 12)
        box, occ = render_tube(volume, np.array([p - half * d, p + half * d]), rng.uniform(0.6, 1.5), supersample)
        stamp(box, occ, "flow_void", rng.uniform(*contrast))
    if calcification:
        if deep_gm_mask is not None and np.asarray(deep_gm_mask).any():
            p = pick(np.asarray(deep_gm_mask, bool))
        else:
            p = centre + np.array([rng.choice([-1, 1]) * rng.uniform(15, 25), rng.uniform(-5, 10), rng.uniform(-5, 5)])
        if p is not None:
            q = p.copy()
            q[0] = 2 * centre[0] - p[0]  # mirror across the mid-sagittal plane (RAS x)
            r = rng.uniform(1.5, 4.0)
            c = rng.uniform(*contrast)
            sign = 1.0 if polarity == "dark" else -1.0
            for s in (p, q + rng.normal(0, 1.5, 3)):
                box, occ = render_blob(volume, s, r * rng.uniform(0.8, 1.2), rng, supersample=supersample)
                stamp(box, occ, "calcification", c, sign)
    if cavernoma:
        p = pick(depth > 10.0)
        if p is not None:
            box, occ = render_blob(volume, p, rng.uniform(5.5, 9.0), rng, rim=True, mottled=True,
                                   supersample=supersample)
            stamp(box, occ, "cavernoma", rng.uniform(0.6, 0.95))
    if air_bone:
        # dark partial volume along the inferior border (lowest 15 % of the brain in RAS z)
        idx = np.argwhere(surface)
        if len(idx):
            z = volume.kji_to_ras(idx)[:, 2]
            low = idx[z < np.percentile(z, 15)]
            for _ in range(2):
                if len(low) == 0:
                    break
                p = volume.kji_to_ras(low[rng.integers(len(low))])
                box, occ = render_blob(volume, p, rng.uniform(4, 9), rng, supersample=supersample)
                stamp(box, occ, "air_bone", rng.uniform(0.5, 0.9))
    if polarity == "dark":
        img = img * (1 - att_total)
    else:
        scale = robust_scale(img, brain)
        img = img + att_total * signed * scale
    return MimicResult(volume.with_array(img), volume.with_array(labels), dict(MIMIC_TYPES), counts)
