"""Domain-randomised whole images from anatomical label maps (SynthSeg-style).

`synthesize_case(labels, rng)` turns a label map (FreeSurfer ids, any grid) into a
clinical-looking acquisition with CMBs and mimics:

1. a random clinical grid: in-plane 0.45-1.0 mm, slice thickness 0.5-5 mm (e.g. 0.5 x 0.5 x
   5 mm), axial with a random tilt;
2. the label map randomly deformed (affine: rotation, scaling; smooth elastic field) and
   sampled onto a *render grid* (the clinical in-plane spacing, <= 1 mm through-plane);
3. optional extra-cerebral layers (CSF, skull, scalp) for non-skull-stripped looks;
4. intensities per tissue from a preset (``t2star``, ``swi``) or fully random, with
   random per-structure jitter and smooth texture;
5. mimics (`mimics.add_mimics`) drawn on the render grid;
6. acquisition: in-plane blur, slice-profile averaging onto the clinical grid;
7. CMBs inserted on the clinical grid (`cmb_insertion`, sub-voxel);
8. bias field, Rician noise, gamma; polarity inverted for QSM-like inputs.

All randomness comes from `rng`; the output image and masks share the clinical grid.
"""
from dataclasses import dataclass, field

import numpy as np

from ..detection.preprocess import resample_to
from ..geometry import Volume
from .cmb_insertion import insert_cmbs, sample_centres
from .mimics import add_mimics

# tissue classes (index) -> FreeSurfer label ids; cortex parcels (1000+/11100+) map to GM
CLASSES = ["background", "wm", "gm", "csf", "thalamus", "caudate", "putamen", "pallidum", "hippo_amyg",
           "brainstem", "cereb_gm", "cereb_wm", "ventral_dc", "choroid", "vessel", "extra_csf", "skull", "scalp"]
FS_TO_CLASS = {
    2: "wm", 41: "wm", 77: "wm", 251: "wm", 252: "wm", 253: "wm", 254: "wm", 255: "wm", 85: "wm",
    3: "gm", 42: "gm", 4: "csf", 5: "csf", 14: "csf", 15: "csf", 24: "csf", 43: "csf", 44: "csf", 72: "csf",
    10: "thalamus", 49: "thalamus", 11: "caudate", 50: "caudate", 12: "putamen", 51: "putamen",
    13: "pallidum", 52: "pallidum", 17: "hippo_amyg", 53: "hippo_amyg", 18: "hippo_amyg", 54: "hippo_amyg",
    26: "caudate", 58: "caudate", 16: "brainstem", 8: "cereb_gm", 47: "cereb_gm", 7: "cereb_wm",
    46: "cereb_wm", 28: "ventral_dc", 60: "ventral_dc", 31: "choroid", 63: "choroid", 30: "vessel",
    62: "vessel",
}
# mean intensities relative to WM = 1 (T2* magnitude: GM > WM, CSF bright-ish, deep GM darker with iron)
PRESETS = {
    "t2star": {"background": 0.03, "wm": 1.0, "gm": 1.22, "csf": 1.35, "thalamus": 0.95, "caudate": 1.08,
               "putamen": 0.88, "pallidum": 0.62, "hippo_amyg": 1.2, "brainstem": 0.9, "cereb_gm": 1.15,
               "cereb_wm": 0.92, "ventral_dc": 0.8, "choroid": 0.9, "vessel": 0.45, "extra_csf": 1.3,
               "skull": 0.12, "scalp": 1.1},
    "swi": {"background": 0.03, "wm": 1.0, "gm": 1.15, "csf": 1.45, "thalamus": 0.9, "caudate": 0.95,
            "putamen": 0.75, "pallidum": 0.45, "hippo_amyg": 1.15, "brainstem": 0.85, "cereb_gm": 1.1,
            "cereb_wm": 0.85, "ventral_dc": 0.65, "choroid": 0.8, "vessel": 0.3, "extra_csf": 1.4,
            "skull": 0.1, "scalp": 1.0},
}
DEEP_GM = ("putamen", "pallidum", "caudate", "thalamus")


@dataclass
class SyntheticCase:
    image: Volume                 # clinical grid
    cmb_mask: Volume              # instance labels 1..N (uint16) on the clinical grid
    centres_ras: np.ndarray       # (N, 3) RAS mm
    mimic_labels: Volume          # mimic type ids (uint8) on the clinical grid, see mimics.MIMIC_TYPES
    polarity: str                 # "dark" or "bright" (QSM-like inversion)
    info: dict = field(default_factory=dict)
    cmb_specs: list = field(default_factory=list)


def class_map(fs_labels: np.ndarray) -> np.ndarray:
    """FreeSurfer label ids -> class indices (uint8, see CLASSES); unknown non-zero -> GM."""
    lut = np.zeros(max(int(fs_labels.max()) + 1, 256), np.uint8)
    lut[1:] = CLASSES.index("gm")
    for k, name in FS_TO_CLASS.items():
        if k < len(lut):
            lut[k] = CLASSES.index(name)
    return lut[fs_labels.astype(np.int64)]


def random_clinical_spacing(rng) -> tuple:
    """(si, sj, sk) mm: clinical SWI/T2* geometries, thick slices favoured."""
    r = rng.random()
    if r < 0.25:
        inplane, thick = rng.uniform(0.45, 0.55), rng.uniform(2.5, 5.0)      # e.g. 0.5 x 0.5 x 5
    elif r < 0.55:
        inplane, thick = rng.uniform(0.8, 1.0), rng.uniform(3.0, 5.0)        # 0.86 x 0.86 x 4
    elif r < 0.8:
        inplane, thick = rng.uniform(0.6, 1.0), rng.uniform(1.5, 3.0)
    else:
        inplane = rng.uniform(0.5, 1.0)
        thick = rng.uniform(max(0.5, inplane), 1.2)                          # near isotropic
    return (float(inplane), float(inplane), float(thick))


def _brain_box_ras(volume: Volume, mask: np.ndarray, margin: float):
    idx = np.argwhere(mask)
    corners = np.array([[a, b, c] for a in (idx[:, 0].min(), idx[:, 0].max()) for b in
                        (idx[:, 1].min(), idx[:, 1].max()) for c in (idx[:, 2].min(), idx[:, 2].max())])
    ras = volume.kji_to_ras(corners)
    return ras.min(axis=0) - margin, ras.max(axis=0) + margin


def make_grid(lo_ras, hi_ras, spacing, direction) -> Volume:
    """Geometry (zeros stub) of a grid with `direction` covering the RAS box [lo, hi]."""
    corners = np.array([[x, y, z] for x in (lo_ras[0], hi_ras[0]) for y in (lo_ras[1], hi_ras[1])
                        for z in (lo_ras[2], hi_ras[2])])
    local = corners @ direction  # coordinates along the grid axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    n = np.maximum(1, np.ceil((hi - lo) / np.asarray(spacing))).astype(int)
    origin = direction @ (lo + 0.5 * np.asarray(spacing))
    return Volume(np.zeros(tuple(n[::-1]), np.uint8), tuple(spacing), tuple(origin), direction)


def deform_labels(labels: Volume, grid: Volume, rng, max_rotation_deg=12.0, scale=(0.9, 1.1),
                  elastic_mm=3.0, control_mm=24.0) -> np.ndarray:
    """Sample `labels` (nearest) on `grid` through a random affine + smooth elastic warp.

    The mapping (grid voxel -> label voxel) is computed on a coarse lattice (~4 mm) and
    interpolated trilinearly, which is exact for the affine part and smooth for the rest.
    """
    from scipy import ndimage as ndi

    shape = grid.array.shape
    sp_kji = np.asarray(grid.spacing)[::-1]
    cshape = [max(2, int(np.ceil(n * s / 4.0)) + 1) for n, s in zip(shape, sp_kji)]
    axes = [np.linspace(0, n - 1, c) for n, c in zip(shape, cshape)]
    gk, gj, gi = np.meshgrid(*axes, indexing="ij")
    ras = grid.voxel_to_ras(np.stack([gi, gj, gk], axis=-1).reshape(-1, 3))
    centre = ras.mean(axis=0)
    rot = _euler(np.deg2rad(max_rotation_deg) * rng.uniform(-1, 1, 3))
    s = rng.uniform(*scale, size=3)
    ras = (ras - centre) @ (rot * s).T + centre
    ctrl = [max(2, int(np.ceil(n * sp / control_mm)) + 1) for n, sp in zip(shape, sp_kji)]
    for a in range(3):
        coarse = rng.normal(0, elastic_mm, ctrl)
        ras[:, a] += ndi.zoom(coarse, [c / q for c, q in zip(cshape, ctrl)], order=3, mode="nearest",
                              grid_mode=False)[: cshape[0], : cshape[1], : cshape[2]].ravel()
    ijk = labels.ras_to_voxel(ras).reshape(cshape + [3])
    coords = []
    for a in (2, 1, 0):  # k, j, i of the label volume, upsampled to the full grid
        coords.append(ndi.zoom(ijk[..., a].astype(np.float32), [n / c for n, c in zip(shape, cshape)], order=1,
                               grid_mode=False)[: shape[0], : shape[1], : shape[2]])
    out = ndi.map_coordinates(np.asarray(labels.array), coords, order=0, mode="constant", cval=0)
    return out.reshape(shape)


def _euler(a):
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _add_head(cls: np.ndarray, spacing_kji, rng) -> np.ndarray:
    """Extra-cerebral CSF, skull and scalp shells around the brain (class indices)."""
    from scipy import ndimage as ndi

    brain = cls > 0
    d = ndi.distance_transform_edt(~brain, sampling=spacing_kji)
    t_csf, t_skull, t_scalp = rng.uniform(1, 3), rng.uniform(4, 8), rng.uniform(3, 7)
    out = cls.copy()
    out[(d > 0) & (d <= t_csf)] = CLASSES.index("extra_csf")
    out[(d > t_csf) & (d <= t_csf + t_skull)] = CLASSES.index("skull")
    out[(d > t_csf + t_skull) & (d <= t_csf + t_skull + t_scalp)] = CLASSES.index("scalp")
    return out


def smooth_field(shape, spacing_kji, rng, scale_mm=40.0, amplitude=0.2):
    """A smooth random multiplicative field (1 +- amplitude), e.g. a bias field."""
    from scipy import ndimage as ndi

    cshape = [max(2, int(np.ceil(n * s / scale_mm)) + 1) for n, s in zip(shape, spacing_kji)]
    coarse = rng.normal(0, 1, cshape)
    coarse = ndi.zoom(coarse, 2, order=3, mode="nearest")  # smooth, then cheap trilinear upsampling
    f = ndi.zoom(coarse.astype(np.float32), [n / c for n, c in zip(shape, coarse.shape)], order=1)[
        : shape[0], : shape[1], : shape[2]]
    f = f / (np.abs(f).max() + 1e-6)
    return (1 + amplitude * f).astype(np.float32)


def synthesize_case(labels: Volume, rng=None, preset: str = "random", spacing=None, n_cmbs=(0, 10),
                    head_prob: float = 0.4, invert_prob: float = 0.15, mimic_scale: float = 1.0,
                    cmb_radius_mm=(1.0, 2.5), cmb_contrast=(0.4, 0.95)) -> SyntheticCase:
    """One domain-randomised case from a FreeSurfer label map (see module docstring).

    preset: "t2star", "swi", "random" (either preset, or fully random intensities with
    probability 0.2).  spacing: (si, sj, sk) mm of the clinical grid, or None for random.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(rng)
    cls_in = labels.with_array(class_map(np.asarray(labels.array)))
    brain_in = cls_in.array > 0
    spacing = tuple(spacing) if spacing is not None else random_clinical_spacing(rng)
    tilt = np.deg2rad(8) * rng.uniform(-1, 1, 3)
    direction = _euler(tilt)  # axial, slices along S-I, slightly tilted
    lo, hi = _brain_box_ras(cls_in, brain_in, margin=15.0)
    # render grid: >= 1 mm in-plane (the model works at ~1 mm), <= 1 mm through-plane
    render_sp = (max(spacing[0], 1.0), max(spacing[1], 1.0), min(1.0, spacing[2]))
    render = make_grid(lo, hi, render_sp, direction)
    cls = deform_labels(cls_in, render, rng)
    sp_kji = np.asarray(render_sp)[::-1]
    invert = rng.random() < invert_prob   # QSM-like: no head, background 0, CMBs bright
    if not invert and rng.random() < head_prob:
        cls = _add_head(cls, sp_kji, rng)
    # intensities
    kind = preset
    if preset == "random":
        kind = "random" if rng.random() < 0.2 else str(rng.choice(["t2star", "swi"]))
    if kind == "random":
        means = {c: rng.uniform(0.05, 1.5) for c in CLASSES}
        means["background"] = rng.uniform(0, 0.1)
    else:
        means = {c: m * rng.uniform(0.9, 1.1) for c, m in PRESETS[kind].items()}
    lut = np.array([means[c] for c in CLASSES], np.float32)
    img = lut[cls]
    std = rng.uniform(0.01, 0.06)
    img = img * smooth_field(cls.shape, sp_kji, rng, scale_mm=rng.uniform(4, 12), amplitude=std * 2)
    img += rng.normal(0, std * 0.5, img.shape).astype(np.float32) * (cls > 0)
    render_vol = render.with_array(img.astype(np.float32))
    # mimics on the render grid (fine sampling in z) so slab averaging gives partial volume
    brain = (cls > 0) & (cls < CLASSES.index("extra_csf"))
    deep = np.isin(cls, [CLASSES.index(c) for c in ("putamen", "pallidum")])
    mim = add_mimics(render_vol, brain, rng, polarity="dark", deep_gm_mask=deep,
                     n_veins=int(rng.integers(6, 22) * mimic_scale),
                     n_flow_voids=int(rng.integers(2, 10) * mimic_scale),
                     calcification=rng.random() < 0.4, cavernoma=rng.random() < 0.1,
                     air_bone=rng.random() < 0.5, contrast=(0.25, 0.85), supersample=(2, 2, 2))
    img = ndi.gaussian_filter(mim.image.array, [0.0, rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)])
    mlab = mim.labels.array
    # acquisition: slab averaging through-plane, then linear resampling in-plane
    clinical, (img, mlab, brain_f) = acquire_on_clinical_grid(
        render, spacing, [(img, "mean"), (mlab, "max"), (brain.astype(np.float32), "mean")])  # brain_f: brain fraction
    brain_c = brain_f > 0.5
    clin = clinical.with_array(img.astype(np.float32))
    # CMBs inside the brain parenchyma (not CSF), at least 8 mm apart
    n = int(rng.integers(n_cmbs[0], n_cmbs[1] + 1))
    allowed = ndi.binary_erosion(brain_c, iterations=1)
    centres = sample_centres(allowed, clin, n, rng, min_distance_mm=8.0)
    ins = insert_cmbs(clin, centres_ras=centres, rng=rng, polarity="dark", radius_mm=cmb_radius_mm,
                      contrast=cmb_contrast)
    img = ins.image.array
    # bias field, noise, gamma
    img = img * smooth_field(img.shape, np.asarray(spacing)[::-1], rng, scale_mm=rng.uniform(60, 140),
                             amplitude=rng.uniform(0.0, 0.35))
    noise_sd = rng.uniform(0.01, 0.08)
    n1, n2 = rng.normal(0, noise_sd, (2,) + img.shape).astype(np.float32)
    img = np.sqrt((img + n1) ** 2 + n2 ** 2)
    img = np.power(np.maximum(img, 0) / (img.max() + 1e-6), np.exp(rng.normal(0, 0.25))).astype(np.float32)
    polarity = "dark"
    inside = ndi.binary_dilation(brain_c, iterations=1)
    if invert:
        img = np.where(inside, 1.0 - img, 0.0).astype(np.float32)
        polarity = "bright"
    elif not (cls >= CLASSES.index("extra_csf")).any():
        img = np.where(inside, img, 0.0).astype(np.float32)  # skull-stripped look
    img = (img * 1000).astype(np.float32)
    info = {"preset": kind, "spacing": list(spacing), "n_cmbs": int(len(ins.centres_ras)),
            "mimics": mim.counts, "polarity": polarity}
    return SyntheticCase(clinical.with_array(img), ins.mask, ins.centres_ras,
                         clinical.with_array(mlab.astype(np.uint8)),
                         polarity, info, ins.specs)


def acquire_on_clinical_grid(render: Volume, spacing, arrays):
    """Bring arrays from a thin render grid onto the clinical grid of `spacing` (mm).

    Through-plane: slabs of round(spacing[2] / render k-spacing) render slices are averaged
    ("mean", partial volume) or max-pooled ("max", label maps).  In-plane: linear ("mean")
    or nearest-neighbour ("max") resampling to spacing[0], spacing[1].
    arrays: list of (array [k, j, i] on `render`, "mean" | "max").
    Returns (clinical grid Volume with an empty uint8 array, list of arrays on it).
    """
    render_sp, direction = render.spacing, render.direction
    f = max(1, int(round(spacing[2] / render_sp[2])))
    slab = render
    if f > 1:
        pooled = []
        for a, how in arrays:
            nk = a.shape[0] // f
            blocks = a[: nk * f].reshape(nk, f, *a.shape[1:])
            pooled.append((blocks.max(axis=1) if how == "max" else blocks.mean(axis=1), how))
        arrays = pooled
        origin = render.voxel_to_ras([0, 0, (f - 1) / 2.0])
        slab = Volume(np.zeros(arrays[0][0].shape, np.uint8), (render_sp[0], render_sp[1], render_sp[2] * f),
                      tuple(origin), direction)
    real_sp = (spacing[0], spacing[1], slab.spacing[2])
    n_ij = [max(1, int(round(slab.shape_ijk[a] * slab.spacing[a] / real_sp[a]))) for a in (0, 1)]
    origin = slab.voxel_to_ras([-0.5 + 0.5 * real_sp[0] / slab.spacing[0],
                                -0.5 + 0.5 * real_sp[1] / slab.spacing[1], 0])
    shape_kji = (arrays[0][0].shape[0], n_ij[1], n_ij[0])
    clinical = Volume(np.zeros(shape_kji, np.uint8), real_sp, tuple(origin), direction)
    out = []
    for a, how in arrays:
        if n_ij != list(slab.shape_ijk[:2]):
            src = a if how == "max" else a.astype(np.float32)
            a = resample_to(slab.with_array(src), clinical, clinical.shape_ijk, order=0 if how == "max" else 1)
        out.append(a)
    return clinical, out


def reacquire(volume: Volume, spacing, rng=None, mask=None, tilt_deg: float = 8.0):
    """Re-sample a real image on a clinical grid: thin render grid, slab averaging through
    plane (slice thickness spacing[2]), linear resampling in plane.

    Returns (image Volume, mask bool array or None) on the new grid (axial, tilted by up
    to `tilt_deg` degrees about each axis).
    """
    rng = np.random.default_rng(rng)
    direction = _euler(np.deg2rad(tilt_deg) * rng.uniform(-1, 1, 3))
    m = np.asarray(mask, bool) if mask is not None else np.asarray(volume.array) != 0
    lo, hi = _brain_box_ras(volume, m, margin=10.0)
    render_sp = (max(spacing[0], 1.0), max(spacing[1], 1.0), min(1.0, spacing[2]))
    render = make_grid(lo, hi, render_sp, direction)
    img = resample_to(volume.with_array(np.asarray(volume.array, np.float32)), render, render.shape_ijk, order=1)
    mk = resample_to(volume.with_array(m.astype(np.float32)), render, render.shape_ijk, order=1)
    clinical, (img, mk) = acquire_on_clinical_grid(render, spacing, [(img, "mean"), (mk, "mean")])
    return clinical.with_array(img.astype(np.float32)), mk > 0.5
