"""Skull-on heads around a real brain (label shells, as SynthSeg / SynthStrip's generators).

Most clinical SWI / T2* scans arrive with skull, scalp, sinuses and air-bone edges; the
detector's training data are skull-stripped.  `add_head(image, brain_mask, rng)` turns a
skull-stripped image (0 outside the brain) into a skull-on one on a padded copy of its own
grid:

1. a **label map** of shells around the brain, from the brain outwards (`SHELLS`): CSF
   (also filling the sulci up to a closed envelope of the brain), inner table of the skull,
   diploe, outer table, muscle (galea / temporalis), subcutaneous fat, skin; each shell has a
   random thickness in its range (`THICKNESS_MM`), modulated smoothly over the head and
   clipped to the range; below the brain an optional neck, in front optional eyes in
   orbital fat;
2. **air** in the sinuses (frontal, sphenoid) and the mastoids: random ellipsoids outside
   the brain's CSF, walled by cortical bone, with **susceptibility blooming** (a signal loss
   that decays over a few mm, longest along S-I) that reaches into the nearby brain when
   ``bloom_into_brain`` (orbitofrontal and inferior temporal dropout);
3. **intensities** per label, random in `INTENSITY` (fractions of the brain's median:
   bone and air dark, CSF and eyes bright, fat and diploe intermediate to bright), with
   a smooth texture, a receive-coil profile that brightens the periphery, and Rician
   noise outside the brain;
4. rendered on a thin-slice render grid (<= 1 mm through plane, >= 1 mm in plane) and
   averaged onto the image's slices, so thick slices get the partial volume of a real
   acquisition.

The brain's own voxels are kept (multiplied by the blooming only), so a skull-on case and
its skull-stripped original differ by the head alone.  `crop_slices` / `random_slab` give
partial coverage (slabs of 7-20 slices).  The grid's k axis is taken as S-I (axial or
oblique-axial scans, the only kind the project's cases have).  All randomness comes from
`rng`: the same seed gives the same head.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..geometry import Volume

SHELLS = ("csf", "inner_table", "diploe", "outer_table", "muscle", "fat", "skin")
LABELS = {"background": 0, "brain": 1, "csf": 2, "inner_table": 3, "diploe": 4, "outer_table": 5,
          "muscle": 6, "fat": 7, "skin": 8, "sinus_air": 9, "mastoid_air": 10, "eye": 11, "neck": 12}
THICKNESS_MM = {"csf": (0.5, 4.0), "inner_table": (1.0, 2.5), "diploe": (0.5, 6.0), "outer_table": (1.0, 2.5),
                "muscle": (0.5, 8.0), "fat": (1.0, 6.0), "skin": (1.0, 3.0)}
# mean intensity on a T2* / SWI magnitude image, as a fraction of the brain's median (the
# diploe: fatty marrow in trabecular bone, whose susceptibility shortens T2*: dark to medium)
INTENSITY = {"background": (0.0, 0.02), "csf": (1.1, 1.7), "inner_table": (0.02, 0.15), "diploe": (0.15, 0.8),
             "outer_table": (0.02, 0.15), "muscle": (0.35, 0.8), "fat": (0.6, 1.5), "skin": (0.5, 1.1),
             "sinus_air": (0.0, 0.03), "mastoid_air": (0.0, 0.03), "eye": (1.1, 1.7), "neck": (0.35, 0.9)}
AIR = ("sinus_air", "mastoid_air")
PAD_MM = 40.0


@dataclass
class HeadCase:
    """A skull-on image on a padded copy of the input grid (the input's voxels at `pad`)."""

    image: Volume                 # float32 skull-on image
    brain_mask: np.ndarray        # bool [k, j, i]: the input's brain mask, padded
    labels: Volume                # uint8 `LABELS` (the label at each voxel's centre)
    pad: tuple                    # ((k_lo, k_hi), (j_lo, j_hi), (i_lo, i_hi)) voxels added
    info: dict = field(default_factory=dict)

    def padded(self, array, value=0) -> np.ndarray:
        """An array on the input grid (e.g. a CMB mask) on this case's padded grid."""
        return np.pad(np.asarray(array), self.pad, constant_values=value)


def padded_grid(volume: Volume, pad) -> Volume:
    """Geometry of `volume` grown by `pad` ((k_lo, k_hi), (j_lo, j_hi), (i_lo, i_hi)) voxels (zeros)."""
    (k0, k1), (j0, j1), (i0, i1) = pad
    n = np.asarray(volume.array.shape) + [k0 + k1, j0 + j1, i0 + i1]
    origin = volume.voxel_to_ras([-i0, -j0, -k0])
    return Volume(np.zeros(tuple(int(v) for v in n), np.uint8), volume.spacing, tuple(origin), volume.direction)


def crop_slices(volume: Volume, k0: int, k1: int) -> Volume:
    """Slices k0..k1-1 of `volume` (partial coverage), geometry kept in RAS."""
    a = np.asarray(volume.array)[k0:k1]
    return Volume(np.ascontiguousarray(a), volume.spacing, tuple(volume.voxel_to_ras([0, 0, k0])),
                  volume.direction)


def random_slab(brain_mask: np.ndarray, rng, n_slices=(7, 20)) -> tuple:
    """(k0, k1): a slab of a random number of slices in `n_slices` whose centre lies in the
    middle 70 % of the brain's extent along k."""
    rng = np.random.default_rng(rng)
    ks = np.flatnonzero(np.asarray(brain_mask).any(axis=(1, 2)))
    n = int(rng.integers(n_slices[0], n_slices[1] + 1))
    lo, hi = ks.min(), ks.max()
    c = lo + (hi - lo) * rng.uniform(0.15, 0.85)
    k0 = int(np.clip(round(c - n / 2), 0, max(0, brain_mask.shape[0] - n)))
    return k0, min(brain_mask.shape[0], k0 + n)


def _smooth(shape, spacing_kji, rng, scale_mm, amplitude):
    """A smooth random field 1 +- `amplitude` (features of about `scale_mm`): Gaussian noise
    on a grid of `scale_mm` knots, linearly interpolated."""
    cshape = [max(2, int(np.ceil(n * s / scale_mm)) + 1) for n, s in zip(shape, spacing_kji)]
    f = _upsample(rng.normal(0, 1, cshape).astype(np.float32), shape)
    f /= np.abs(f).max() + 1e-6
    return 1.0 + amplitude * f


def _upsample(a: np.ndarray, shape) -> np.ndarray:
    """Linear upsampling of a block-reduced array back to `shape` (the blocks' centres
    aligned, edges held), one axis at a time: a gather and a blend per axis."""
    out = np.asarray(a, np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        if m == n:
            continue
        pos = (np.arange(n, dtype=np.float32) + 0.5) * (m / n) - 0.5
        i0 = np.clip(np.floor(pos).astype(int), 0, m - 1)
        i1 = np.clip(i0 + 1, 0, m - 1)
        w = np.clip(pos - i0, 0, 1).astype(np.float32)
        sh = [1] * out.ndim
        sh[axis] = n
        out = np.take(out, i0, axis=axis) * (1 - w).reshape(sh) + np.take(out, i1, axis=axis) * w.reshape(sh)
    return out


def _block_mean(a: np.ndarray, f) -> np.ndarray:
    from skimage.measure import block_reduce

    return block_reduce(a.astype(np.float32), tuple(int(v) for v in f), np.mean)


def _ellipsoid(shape, grid: Volume, centre, radii, rot, margin_mm: float = 0.0):
    """(slices, bool mask inside them): the voxels of `grid` (array `shape`) inside the
    ellipsoid (RAS centre, radii mm along the columns of `rot`), in its bounding box grown
    by `margin_mm`; (None, None) when the box misses the grid."""
    r = float(max(radii)) + margin_mm
    corners = np.array([[x, y, z] for x in (-r, r) for y in (-r, r) for z in (-r, r)]) + centre
    ijk = grid.ras_to_voxel(corners)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, np.asarray(shape[::-1]) - 1)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, np.asarray(shape[::-1]))
    if np.any(hi <= lo):
        return None, None
    k, j, i = np.meshgrid(*(np.arange(lo[a], hi[a]) for a in (2, 1, 0)), indexing="ij")
    ras = grid.voxel_to_ras(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)) - centre
    q = (ras @ rot) / np.asarray(radii)
    inside = (q ** 2).sum(axis=1) <= 1.0
    sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    return sl, inside.reshape(k.shape)


def _rotation(rng, max_deg=20.0):
    from .label_synthesis import _euler

    return _euler(np.deg2rad(max_deg) * rng.uniform(-1, 1, 3))


def add_head(image: Volume, brain_mask, rng=None, fine_mask: Optional[Volume] = None, pad_mm: float = PAD_MM,
             keep_slices: bool = False, air: bool = True, eyes: bool = True, neck: bool = True,
             bloom_into_brain: bool = True, noise=(0.01, 0.04), thickness_mm: Optional[dict] = None) -> HeadCase:
    """A skull-on head around the brain of `image` (see the module docstring).

    image: a skull-stripped T2*-like image (brain voxels > 0).  brain_mask: bool [k, j, i] on
    `image`'s grid, or a Volume on any grid.  fine_mask: optionally the brain on a finer grid
    (e.g. the 1 mm mask the image was made from): smoother shells, and the brain beyond
    the image's first and last slices, so that a slab's skull lies where the whole head's
    would.  pad_mm: room added around the grid (each side).  keep_slices: pad in plane only
    (partial coverage stays partial).  noise: Rician noise sd outside the brain, fraction of
    the brain's median.  thickness_mm: ranges per shell (default `THICKNESS_MM`).
    """
    from scipy import ndimage as ndi

    from ..detection.preprocess import resample_to

    rng = np.random.default_rng(rng)
    ranges = dict(THICKNESS_MM, **(thickness_mm or {}))
    a = np.asarray(image.array, np.float32)
    if isinstance(brain_mask, Volume):
        fine = brain_mask.with_array((np.asarray(brain_mask.array) != 0).astype(np.float32))
        mask_g = resample_to(fine, image, image.shape_ijk, order=1) > 0.5
    else:
        mask_g = np.asarray(brain_mask) != 0
        fine = image.with_array(mask_g.astype(np.float32))
    if fine_mask is not None:
        fine = fine_mask.with_array((np.asarray(fine_mask.array) != 0).astype(np.float32))
    ref = float(np.median(a[mask_g & (a > 0)])) if np.any(mask_g & (a > 0)) else 1.0
    sp = np.asarray(image.spacing, float)                                   # i, j, k
    pad = tuple((int(np.ceil(pad_mm / s)),) * 2 for s in sp[::-1])
    grid = padded_grid(image, pad)
    # render grid: >= 1 mm in plane (whole blocks of the image's voxels), <= 1 mm through plane
    m_ij = [max(1, int(np.floor(1.0 / s))) for s in sp[:2]]
    f_k = max(1, int(np.ceil(sp[2] / 1.0 - 1e-6)))
    nk, nj, ni = grid.array.shape
    r_shape = (nk * f_k, int(np.ceil(nj / m_ij[1])), int(np.ceil(ni / m_ij[0])))
    r_sp = (sp[0] * m_ij[0], sp[1] * m_ij[1], sp[2] / f_k)
    r_origin = grid.voxel_to_ras([(m_ij[0] - 1) / 2.0, (m_ij[1] - 1) / 2.0, -0.5 + 0.5 / f_k])
    render = Volume(np.zeros(r_shape, np.uint8), r_sp, tuple(r_origin), grid.direction)
    sp_r = np.asarray(r_sp)[::-1]                                           # k, j, i
    frac = resample_to(fine, render, render.shape_ijk, order=1)
    brain = frac > 0.5
    # envelope: the brain closed on a ~2 mm work grid (sulci become CSF); on that grid a
    # signed distance to it and each shell's thickness, combined into one continuous shell
    # coordinate u (0 at the envelope, s at the inner edge of shell s), then linearly up
    fw = [max(1, int(round(2.0 / s))) for s in sp_r]
    bw = _block_mean(brain, fw) > 0.25
    sp_w = sp_r * fw
    rc = rng.uniform(8.0, 15.0)
    to_brain = ndi.distance_transform_edt(~bw, sampling=sp_w)
    env_w = ndi.binary_fill_holes(ndi.distance_transform_edt(to_brain <= rc, sampling=sp_w) > rc) | bw
    # the cranial cavity is near convex in each axial slice: no scalp between the frontal
    # lobes or the temporal lobes and the cerebellum (there: skull base, below)
    r2 = rng.uniform(20.0, 30.0)
    in_plane = (1e6, sp_w[1], sp_w[2])
    grown = np.pad(to_brain <= 0, ((0, 0), (1, 1), (1, 1)))
    grown = ndi.distance_transform_edt(~grown, sampling=in_plane) <= r2
    env_w |= (ndi.distance_transform_edt(grown, sampling=in_plane) > r2)[:, 1:-1, 1:-1]
    # wide gaps inside the envelope (between the temporal lobes, brainstem and cerebellum):
    # skull base, not CSF; narrow ones (sulci, fissures) stay CSF
    base_w = env_w & (to_brain > rng.uniform(3.0, 5.0))
    half = 0.5 * float(sp_w.min())
    d_w = np.where(env_w, -ndi.distance_transform_edt(env_w, sampling=sp_w) + half,
                   ndi.distance_transform_edt(~env_w, sampling=sp_w) - half).astype(np.float32)
    w_shape = env_w.shape
    idx_w = np.argwhere(bw)
    centre_w = idx_w.mean(axis=0)
    ii = np.arange(w_shape[2], dtype=np.float32)[None, None, :]
    lateral = np.abs(ii - centre_w[2]) / max(1.0, float(np.abs(idx_w[:, 2] - centre_w[2]).max()))
    u_w = np.where(d_w <= 0, d_w / ranges["csf"][0], 0.0).astype(np.float32)
    inner = np.zeros(w_shape, np.float32)
    drawn = {}
    for n, s in enumerate(SHELLS):
        lo, hi = ranges[s]
        base = rng.uniform(lo, hi)
        t = base * _smooth(w_shape, sp_w, rng, rng.uniform(30, 80), rng.uniform(0.1, 0.5))
        if s == "muscle":  # temporalis: thicker laterally
            t = t + rng.uniform(0, hi - lo) * np.clip(lateral, 0, 1) ** 4
        t = np.clip(t, lo, hi).astype(np.float32)
        drawn[s] = {"base_mm": round(float(base), 3), "min_mm": round(float(t.min()), 3),
                    "max_mm": round(float(t.max()), 3)}
        here = (d_w > inner) & (d_w <= inner + t)
        u_w[here] = n + (d_w[here] - inner[here]) / t[here]
        inner += t
    beyond = d_w > inner
    u_w[beyond] = len(SHELLS) + (d_w[beyond] - inner[beyond]) / 5.0
    up = [m * f for m, f in zip(w_shape, fw)]
    u = _upsample(u_w, up)[: r_shape[0], : r_shape[1], : r_shape[2]]
    shell = np.floor(np.clip(u, -1, len(SHELLS))).astype(np.int16)
    lut_shell = np.array([LABELS["csf"]] + [LABELS[s] for s in SHELLS] + [0], np.uint8)   # index shell + 1
    lab = lut_shell[np.clip(shell, -1, len(SHELLS)) + 1]
    lab[u <= 0] = LABELS["csf"]
    lab[(u <= 0) & (_upsample(base_w.astype(np.float32), up)[: r_shape[0], : r_shape[1], : r_shape[2]] > 0.5)] = \
        LABELS["inner_table"]
    lab[brain] = LABELS["brain"]
    box = _brain_box(render, brain)
    pockets = []
    if air:
        lab, pockets = _air(lab, render, box, u, rng)
    if eyes and rng.random() < 0.8:
        lab = _eyes(lab, render, box, u, rng, pockets)
    if neck:
        lab = _neck(lab, brain, sp_r, rng)
    # intensities
    means = {name: ref * rng.uniform(*INTENSITY[name]) for name in INTENSITY}
    means["brain"] = 0.0
    lut = np.zeros(max(LABELS.values()) + 1, np.float32)
    for name, v in LABELS.items():
        lut[v] = means.get(name, 0.0)
    head = lut[lab]
    tex = _smooth(w_shape, sp_w, rng, rng.uniform(3, 8), rng.uniform(0.05, 0.2))
    head *= _upsample(tex, up)[: r_shape[0], : r_shape[1], : r_shape[2]]
    head *= _coil_profile(r_shape, sp_r, brain, rng.uniform(0.0, 1.0))
    bloom = np.ones(r_shape, np.float32)
    air_mask = np.isin(lab, [LABELS[n] for n in AIR])
    if air_mask.any():
        sigma_mm = np.array([rng.uniform(3, 8), rng.uniform(1.5, 4), rng.uniform(1.5, 4)])   # k (S-I), j, i
        strength = rng.uniform(0.4, 0.95)
        reach = np.ceil(3 * sigma_mm / sp_r).astype(int)
        where = np.argwhere(air_mask)
        box_lo = np.maximum(where.min(axis=0) - reach, 0)
        box_hi = np.minimum(where.max(axis=0) + reach + 1, r_shape)
        sl = tuple(slice(int(p), int(q)) for p, q in zip(box_lo, box_hi))
        local = ndi.gaussian_filter(air_mask[sl].astype(np.float32), sigma_mm / sp_r)
        bloom[sl] = 1.0 - strength * np.clip(2.0 * local, 0, 1)
        head *= bloom
    head = np.where(brain, 0.0, head * (1.0 - frac)).astype(np.float32)
    # onto the image's grid: slab averaging through plane, linear in plane
    slab_geom = Volume(np.zeros((nk,) + r_shape[1:], np.uint8), (r_sp[0], r_sp[1], sp[2]),
                       tuple(grid.voxel_to_ras([(m_ij[0] - 1) / 2.0, (m_ij[1] - 1) / 2.0, 0])), grid.direction)

    def to_grid(arr, how="mean"):
        if how == "mean":
            arr = arr.reshape(nk, f_k, *r_shape[1:]).mean(axis=1)
        else:
            arr = arr[f_k // 2::f_k]
        return resample_to(slab_geom.with_array(arr), grid, grid.shape_ijk, order=1 if how == "mean" else 0)

    head_g = to_grid(head)
    bloom_g = to_grid(bloom) if bloom_into_brain else np.ones(grid.array.shape, np.float32)
    lab_g = to_grid(lab, "centre").astype(np.uint8)
    a_pad = np.pad(a, pad) * bloom_g
    brain_g = np.pad(mask_g, pad)
    sd = rng.uniform(*noise) * ref
    n1, n2 = rng.normal(0, sd, (2,) + head_g.shape).astype(np.float32)
    outside = np.sqrt((head_g + n1) ** 2 + n2 ** 2)
    out = np.where(brain_g, a_pad + head_g, outside).astype(np.float32)
    info = {"reference": ref, "thickness": drawn, "closing_mm": round(float(rc), 3), "air": pockets,
            "means": {k: round(float(v / ref), 4) for k, v in means.items() if k != "brain"},
            "noise_sd": round(float(sd / ref), 4), "render_spacing": [float(v) for v in r_sp]}
    case = HeadCase(grid.with_array(out), brain_g, grid.with_array(lab_g), pad, info)
    if keep_slices:
        k0 = pad[0][0]
        k1 = k0 + a.shape[0]
        case = HeadCase(crop_slices(case.image, k0, k1), brain_g[k0:k1], crop_slices(case.labels, k0, k1),
                        ((0, 0),) + pad[1:], info)
    return case


def _brain_box(render: Volume, brain: np.ndarray) -> tuple:
    """(lo, hi) RAS corners of the brain's bounding box (from a subsample of its voxels)."""
    idx = np.argwhere(brain)
    if len(idx) > 20000:
        idx = idx[:: len(idx) // 20000]
    ras = render.kji_to_ras(idx)
    return ras.min(axis=0), ras.max(axis=0)


def _air(lab, render: Volume, box, u, rng):
    """Sinus and mastoid air (ellipsoids outside the brain's CSF, inside the skin), walled by bone."""
    from scipy import ndimage as ndi

    lo, hi = box
    size = hi - lo
    cx = 0.5 * (lo[0] + hi[0])
    wanted = []
    if rng.random() < 0.85:   # frontal sinus: in the frontal bone, low in front of the frontal lobes
        wanted.append(("sinus_air", [cx + rng.uniform(-5, 5), hi[1] + rng.uniform(-6, 4),
                                     lo[2] + rng.uniform(0.15, 0.3) * size[2]],
                       [rng.uniform(8, 18), rng.uniform(4, 9), rng.uniform(6, 14)]))
    if rng.random() < 0.8:    # sphenoid sinus: under the middle of the skull base
        wanted.append(("sinus_air", [cx + rng.uniform(-4, 4), lo[1] + rng.uniform(0.55, 0.68) * size[1],
                                     lo[2] + rng.uniform(0.0, 0.15) * size[2]],
                       [rng.uniform(8, 14), rng.uniform(8, 14), rng.uniform(7, 12)]))
    for side in (-1, 1):      # mastoid air cells, behind the ears
        if rng.random() < 0.8:
            x = (lo[0] if side < 0 else hi[0]) - side * rng.uniform(2, 12)
            wanted.append(("mastoid_air", [x, lo[1] + rng.uniform(0.2, 0.4) * size[1],
                                           lo[2] + rng.uniform(0.08, 0.25) * size[2]],
                           [rng.uniform(6, 14), rng.uniform(6, 14), rng.uniform(6, 12)]))
    pockets = []
    sp = np.asarray(render.spacing)[::-1]
    soft = (LABELS["brain"], LABELS["csf"])
    for name, c, r in wanted:
        sl, e = _ellipsoid(lab.shape, render, np.asarray(c, float), r, _rotation(rng), margin_mm=2.0)
        if sl is None:
            continue
        e &= (u[sl] > 1.1) & (u[sl] < len(SHELLS) - 1.5) & ~np.isin(lab[sl], soft)
        if not e.any():
            continue
        wall = (ndi.distance_transform_edt(~e, sampling=sp) <= 1.5) & ~e & ~np.isin(lab[sl], soft)
        lab[sl][wall] = LABELS["inner_table"]
        lab[sl][e] = LABELS[name]
        pockets.append({"kind": name, "centre_ras": [round(float(v), 2) for v in c],
                        "radii_mm": [round(float(v), 2) for v in r], "voxels": int(e.sum())})
    return lab, pockets


def _eyes(lab, render: Volume, box, u, rng, pockets):
    """Two bright globes in orbital fat, in front of and below the frontal lobes, walled by bone."""
    from scipy import ndimage as ndi

    sp = np.asarray(render.spacing)[::-1]
    lo, hi = box
    cx = 0.5 * (lo[0] + hi[0])
    y = hi[1] - rng.uniform(0, 12)
    z = lo[2] + rng.uniform(0.12, 0.25) * (hi[2] - lo[2])
    sep = rng.uniform(28, 34)
    keep = [LABELS[n] for n in ("brain", "csf") + AIR]
    for side in (-1, 1):
        c = np.array([cx + side * sep, y, z])
        r = rng.uniform(11, 12.5)
        r_fat = r + rng.uniform(3, 6)
        sl, fat = _ellipsoid(lab.shape, render, c, [r_fat] * 3, np.eye(3))
        if sl is None:
            continue
        room = (u[sl] > 2.5) & ~np.isin(lab[sl], keep)     # the orbit: outside the skull's inner table
        ras_r = np.linalg.norm(render.kji_to_ras(np.argwhere(fat)) - c, axis=1)
        globe = np.zeros_like(fat)
        globe[tuple(np.argwhere(fat)[ras_r <= r].T)] = True
        wall = (ndi.distance_transform_edt(~(fat & room), sampling=sp) <= 1.5) & ~(fat & room) & \
            ~np.isin(lab[sl], keep)
        lab[sl][wall] = LABELS["inner_table"]                  # orbital walls and roof
        lab[sl][fat & ~globe & room] = LABELS["fat"]
        lab[sl][globe & room] = LABELS["eye"]
        pockets.append({"kind": "eye", "centre_ras": [round(float(v), 2) for v in c], "radii_mm": [round(r, 2)] * 3,
                        "voxels": int((globe & room).sum())})
    return lab


def _neck(lab, brain, sp_r, rng):
    """Soft tissue below the brain: the head's outline at the brain's lowest slices carried
    down (k taken as S-I), skin and fat at its rim, muscle inside."""
    from scipy import ndimage as ndi

    ks = np.flatnonzero(brain.any(axis=(1, 2)))
    if not len(ks) or ks.min() == 0:
        return lab
    k_lo = int(ks.min())
    n_ref = max(1, int(round(10.0 / sp_r[0])))
    foot = (lab[k_lo:k_lo + n_ref] != 0).any(axis=0)
    foot = ndi.binary_fill_holes(foot)
    if not foot.any():
        return lab
    d2 = ndi.distance_transform_edt(foot, sampling=sp_r[1:])
    t_skin, t_fat = rng.uniform(1, 3), rng.uniform(2, 8)
    slab2d = np.where(d2 <= t_skin, LABELS["skin"], np.where(d2 <= t_skin + t_fat, LABELS["fat"],
                                                             LABELS["neck"])).astype(np.uint8)
    slab2d[~foot] = 0
    for k in range(k_lo - 1, -1, -1):
        fill = (lab[k] == 0) & (slab2d > 0)
        lab[k][fill] = slab2d[fill]
    return lab


def _coil_profile(shape, sp_kji, brain, strength: float) -> np.ndarray:
    """Receive-coil sensitivity: 1 at the brain's centre rising to 1 + strength at the periphery
    (in plane, radius = the brain's in-plane half-size + 30 mm)."""
    idx = np.argwhere(brain[:: max(1, brain.shape[0] // 8)])
    if not len(idx):
        return np.ones(shape, np.float32)
    c = idx[:, 1:].mean(axis=0)
    half = np.abs(idx[:, 1:] - c).max(axis=0) * sp_kji[1:] + 30.0
    j = ((np.arange(shape[1]) - c[0]) * sp_kji[1] / half[0]) ** 2
    i = ((np.arange(shape[2]) - c[1]) * sp_kji[2] / half[1]) ** 2
    prof = (1.0 + strength * np.clip(j[:, None] + i[None, :], 0, 1.5)).astype(np.float32)
    return np.broadcast_to(prof, shape)
