"""A T2*-like skull-on head made from what the project ships (the demo's default study).

`make_head_study(seed)` builds, from the location atlas (`CMBLib/location/data`, MNI space:
the ICBM 2009a T1 brain at 2 mm, the MARS regions and the CSF compartments at 1 mm):

1. **a brain on a 1 mm MNI grid with T2*-GRE contrast**: the T1 template's intensity turned
   round (CSF brightest, grey matter brighter than white matter), CSF compartments bright,
   and the dark structures of real T2* anatomy (`ANATOMY`): iron in the globus pallidus,
   substantia nigra, red nucleus and dentate nucleus (bilateral, symmetric pairs), the
   internal cerebral veins, vein of Galen, straight sinus and basal veins of Rosenthal,
   a calcified pineal gland and calcified choroid plexus in the atria;
2. **a clinical acquisition** of it (`reacquire`): 0.9 x 0.9 x 3 mm axial slices, slightly
   tilted, slab-averaged through plane;
3. **CMBs of every size** (`CMB_SITES`: lobar, deep and infratentorial, core radius
   0.8-2.6 mm) inserted on that grid, and random cortical veins and flow voids (`add_mimics`);
4. **skull, scalp, sinuses and air-bone edges** around it (`head_shells.add_head`).

Everything is in RAS mm (MNI for the anatomy); arrays are [k, j, i].  Deterministic for a
seed; a few seconds on one core.
"""
from dataclasses import dataclass

import numpy as np

from ..geometry import Volume

SPACING_MM = (0.9, 0.9, 3.0)
PAD_MM = 24.0          # room for the head around the brain box (reacquire adds 10 mm)
# dark anatomy, MNI RAS mm: (name, centre, radii mm, signal fraction left); "pair" = both sides
ANATOMY = (
    ("globus_pallidus", (18.0, -4.0, -2.0), (3.5, 8.0, 5.0), 0.45, True),
    ("substantia_nigra", (11.0, -18.0, -12.0), (2.5, 6.0, 2.5), 0.55, True),
    ("red_nucleus", (5.0, -20.0, -8.0), (2.5, 3.0, 3.0), 0.55, True),
    ("dentate_nucleus", (15.0, -57.0, -34.0), (5.0, 8.0, 4.0), 0.55, True),
    ("pineal_calcification", (0.0, -34.0, 2.0), (2.5, 2.5, 2.0), 0.15, False),
    ("choroid_calcification", (28.0, -42.0, 14.0), (3.0, 3.0, 2.5), 0.2, True),
)
# veins, MNI RAS mm polylines: (name, points, radius mm, signal fraction left, pair)
VEINS = (
    ("internal_cerebral_vein", ((2.0, -2.0, 14.0), (2.0, -15.0, 13.0), (1.5, -30.0, 10.0), (0.5, -38.0, 6.0)),
     1.0, 0.35, True),
    ("vein_of_galen", ((0.0, -38.0, 6.0), (0.0, -44.0, 6.0), (0.0, -48.0, 9.0)), 1.6, 0.3, False),
    ("straight_sinus", ((0.0, -48.0, 9.0), (0.0, -62.0, 6.0), (0.0, -78.0, 2.0)), 2.0, 0.3, False),
    ("basal_vein_of_rosenthal", ((22.0, -4.0, -14.0), (20.0, -18.0, -10.0), (14.0, -30.0, -2.0),
                                 (6.0, -38.0, 4.0), (0.5, -40.0, 6.0)), 1.0, 0.4, True),
)
# CMB sites, MNI RAS mm, and core radius (half width at half maximum) mm: lobar, deep,
# infratentorial; sizes from below 2 mm to about 5 mm across
CMB_SITES = (
    ("frontal", (-32.0, 28.0, 30.0), 1.2),
    ("parietal", (36.0, -52.0, 40.0), 1.8),
    ("occipital", (-22.0, -82.0, 8.0), 0.9),
    ("temporal", (44.0, -20.0, -10.0), 2.2),
    ("thalamus", (-12.0, -18.0, 6.0), 1.5),
    ("basal_ganglia", (26.0, 6.0, 2.0), 2.6),
    ("pons", (-5.0, -28.0, -30.0), 1.4),
    ("cerebellum", (24.0, -66.0, -30.0), 1.0),
)


@dataclass
class HeadStudy:
    """The demo head: image, CMB truth, and what was drawn where."""

    image: Volume                 # float32 skull-on T2*-like magnitude
    cmb_mask: Volume              # uint16 instance labels 1..N on the image grid
    centres_ras: np.ndarray       # (N, 3) RAS mm
    cmb_sites: list               # N site names (CMB_SITES order)
    brain_mask: np.ndarray        # bool [k, j, i] on the image grid
    mimics: dict                  # name -> RAS mm centre (anatomy) or count (random mimics)


def _mni_grid():
    """(Atlas, the atlas's 1 mm label grid as an empty Volume, MNI RAS)."""
    from ..location.atlas import Atlas

    atlas = Atlas()
    aff = atlas.label_affine
    shape_kji = atlas.compartment.shape[::-1]                      # nibabel (i, j, k) -> [k, j, i]
    grid = Volume(np.zeros(shape_kji, np.float32), spacing=tuple(np.abs(np.diag(aff)[:3])),
                  origin=tuple(aff[:3, 3]), direction=np.diag(np.sign(np.diag(aff)[:3])))
    return atlas, grid


def t2s_brain(atlas, full: Volume):
    """(image Volume, brain bool [k, j, i]) on the 1 mm MNI grid `full`, cut 12 mm below the brain's
    lowest index on each axis (the far sides are kept): T2*-like contrast."""
    from scipy import ndimage as ndi

    from ..detection.preprocess import resample_to

    comp = np.asarray(atlas.compartment).transpose(2, 1, 0)
    region = np.asarray(atlas.region).transpose(2, 1, 0)
    t1 = resample_to(atlas.template, full, full.shape_ijk, order=1)
    inside = resample_to(atlas.template_mask.with_array(atlas.template_mask.array.astype(np.float32)), full,
                         full.shape_ijk, order=1) > 0.5
    brain = ndi.binary_fill_holes(inside | (region > 0) | (comp > 0))
    box = tuple(slice(max(0, s.start - 12), n) for s, n in zip(ndi.find_objects(brain.astype(np.uint8))[0],
                                                               brain.shape))
    t1, brain, comp = t1[box], brain[box], comp[box]
    origin = full.kji_to_ras([s.start for s in box])
    grid = Volume(np.zeros(t1.shape, np.float32), full.spacing, tuple(origin), full.direction)
    lo, hi = np.percentile(t1[inside[box]], (2, 98))
    w = np.clip((t1 - lo) / (hi - lo), 0.0, 1.1)                  # 0 CSF .. 1 white matter (T1)
    img = 1.0 - 0.42 * w                                          # T2*: CSF 1.0, GM ~0.75, WM ~0.6
    img = np.where(comp > 0, np.maximum(img, 0.95), img)          # ventricles and cisterns
    return grid.with_array((img * brain).astype(np.float32)), brain


def _ellipsoid(grid: Volume, centre, radii) -> np.ndarray:
    """Smooth (0..1) ellipsoid weight on `grid`, edges 1 voxel soft."""
    k, j, i = np.indices(grid.array.shape, dtype=np.float32)
    ras = grid.voxel_to_ras(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(k.shape + (3,))
    r = np.sqrt((((ras - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))
    return np.clip((1.0 - r) * max(radii) + 0.5, 0.0, 1.0)


def draw_anatomy(image: Volume, rng) -> tuple:
    """Iron, calcification and deep veins (`ANATOMY`, `VEINS`) drawn into a 1 mm MNI image.

    Returns (image, {name: centre RAS mm}).  Signal is multiplied by 1 - w (1 - fraction)."""
    from .mimics import render_tube

    a = np.asarray(image.array, np.float32).copy()
    where = {}
    for name, centre, radii, left, pair in ANATOMY:
        for side in ((1.0, -1.0) if pair else (1.0,)):
            c = (centre[0] * side, centre[1], centre[2])
            sub, box = _box(image, c, max(radii) + 2.0)
            w = _ellipsoid(sub, c, radii) * rng.uniform(0.85, 1.0)
            a[box] *= 1.0 - (1.0 - left) * w
            where[f"{name}_{'right' if side > 0 else 'left'}" if pair else name] = c
    for name, points, radius, left, pair in VEINS:
        for side in ((1.0, -1.0) if pair else (1.0,)):
            pts = np.array(points, float) * [side, 1.0, 1.0]
            box, w = render_tube(image, pts, radius)
            if box is not None:
                a[box] *= 1.0 - (1.0 - left) * w
            where[f"{name}_{'right' if side > 0 else 'left'}" if pair else name] = tuple(pts.mean(0))
    return image.with_array(a), where


def _box(grid: Volume, centre, half_mm: float):
    """(sub-grid Volume, array slices) of the voxels within `half_mm` of `centre` (RAS mm)."""
    c = np.asarray(grid.ras_to_voxel(np.asarray(centre, float)))[::-1]     # k, j, i
    h = half_mm / np.asarray(grid.spacing)[::-1]
    shape = grid.array.shape
    box = tuple(slice(int(max(0, np.floor(x - r))), int(min(n, np.ceil(x + r) + 1))) for x, r, n in zip(c, h, shape))
    origin = grid.kji_to_ras([s.start for s in box])
    sub = Volume(np.zeros(tuple(s.stop - s.start for s in box), np.float32), grid.spacing, tuple(origin),
                 grid.direction)
    return sub, box


def make_head_study(seed: int = 0, n_cmbs: int = len(CMB_SITES), spacing=SPACING_MM) -> HeadStudy:
    """The demo's default study (module docstring): a skull-on T2*-like head with `n_cmbs`
    CMBs at `CMB_SITES` (cycled with jitter beyond their number) and the anatomy's mimics."""
    from scipy import ndimage as ndi

    from .cmb_insertion import insert_cmbs
    from .head_shells import add_head
    from .label_synthesis import reacquire, smooth_field
    from .mimics import add_mimics

    rng = np.random.default_rng(seed + 7000)
    atlas, mni_grid = _mni_grid()
    brain_img, brain = t2s_brain(atlas, mni_grid)
    sp_kji = np.asarray(brain_img.spacing)[::-1]
    texture = smooth_field(brain.shape, sp_kji, rng, scale_mm=6.0, amplitude=0.04)
    brain_img = brain_img.with_array(brain_img.array * (1.0 + texture) * brain)
    brain_img, where = draw_anatomy(brain_img, rng)
    img, mask = reacquire(brain_img, spacing, rng, mask=brain, tilt_deg=6.0)
    sites = [CMB_SITES[i % len(CMB_SITES)] for i in range(n_cmbs)]
    centres = np.array([np.asarray(c) + (rng.uniform(-4, 4, 3) if i >= len(CMB_SITES) else 0.0)
                        for i, (_, c, _) in enumerate(sites)], float).reshape(-1, 3)
    ins = None
    if n_cmbs:
        from .cmb_insertion import random_spec

        specs = [random_spec(c, rng, radius_mm=(r, r), contrast=(0.65, 0.85), dipole_prob=0.0)
                 for c, (_, _, r) in zip(centres, sites)]
        ins = insert_cmbs(img, specs=specs, rng=rng, brain_mask=mask)
        img = ins.image
    mim = add_mimics(img, ndi.binary_erosion(mask, iterations=1), rng=rng, n_veins=8, n_flow_voids=4,
                     calcification=False, air_bone=False, contrast=(0.3, 0.6))
    if ins is not None:   # mimics never cover a CMB
        keep = ins.mask.array > 0
        img = img.with_array(np.where(keep, img.array, mim.image.array))
    else:
        img = mim.image
    head = add_head(img, mask, rng, fine_mask=brain_img.with_array(brain.astype(np.float32)), pad_mm=PAD_MM)
    truth = np.zeros(mask.shape, np.uint16) if ins is None else np.asarray(ins.mask.array, np.uint16)
    where.update({f"random_{k}": v for k, v in mim.counts.items() if v})
    return HeadStudy(image=head.image, cmb_mask=head.image.with_array(head.padded(truth)),
                     centres_ras=centres if ins is None else np.asarray(ins.centres_ras),
                     cmb_sites=[s[0] for s in sites], brain_mask=head.brain_mask, mimics=where)
