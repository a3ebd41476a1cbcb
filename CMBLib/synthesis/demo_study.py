"""A small, fast synthetic T2*-like study for `cmb demo` and tests (no data files needed).

An analytic brain: ellipsoidal head (scalp, dark skull), cortex (GM brighter than WM, as
on T2*), white matter, bright-ish CSF in two ventricles, darker basal ganglia, a few dark
veins, a smooth bias field and Rician-like noise.  CMBs are inserted with
`cmb_insertion.insert_cmbs` (dark polarity).  Grid: 128 x 128 x 40 voxels at
0.9 x 0.9 x 3 mm, axial, RAS origin at the corner so the head centre is near (57, 57, 60).

`make_real_background_case` is its counterpart on a real brain (the QSM challenge volume in
../shared/data, given by path): the regression case of the bundled model's tests and of
benchmarks/check_devices.py.
"""

import numpy as np

from ..geometry import Volume
from .cmb_insertion import insert_cmbs, sample_centres

SHAPE_KJI = (40, 128, 128)
SPACING = (0.9, 0.9, 3.0)


def _coords(shape_kji, spacing):
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape_kji), indexing="ij")
    return i * spacing[0], j * spacing[1], k * spacing[2]


def make_demo_phantom(seed: int = 0, shape_kji=SHAPE_KJI, spacing=SPACING):
    """(image Volume, brain mask bool [k, j, i], tissue labels uint8 [k, j, i]).

    Labels: 0 air, 1 scalp, 2 skull, 3 CSF, 4 GM, 5 WM, 6 deep GM, 7 vein.
    """
    rng = np.random.default_rng(seed)
    x, y, z = _coords(shape_kji, spacing)
    cx, cy, cz = [(n - 1) * s / 2 for n, s in zip(shape_kji[::-1], spacing)]
    a, b, c = 0.42 * shape_kji[2] * spacing[0], 0.46 * shape_kji[1] * spacing[1], 0.45 * shape_kji[0] * spacing[2]

    def ell(sa, sb, sc, ox=0.0, oy=0.0, oz=0.0):
        return ((x - cx - ox) / sa) ** 2 + ((y - cy - oy) / sb) ** 2 + ((z - cz - oz) / sc) ** 2

    head = ell(a, b, c)
    lab = np.zeros(shape_kji, np.uint8)
    lab[head <= 1.0] = 1
    lab[head <= 0.88] = 2
    brain = head <= 0.74
    lab[brain] = 3
    # cortex ribbon with a wavy inner border (gyri)
    theta = np.arctan2(y - cy, x - cx)
    wav = 0.05 * np.sin(9 * theta + rng.uniform(0, 6)) * np.cos(3 * (z - cz) / c * np.pi)
    lab[head <= 0.70] = 4
    lab[head <= 0.48 + wav] = 5
    for sx in (-1, 1):  # ventricles and basal ganglia, bilateral
        lab[ell(0.12 * a, 0.35 * b, 0.25 * c, sx * 0.14 * a, 0.0, 0.05 * c) <= 1] = 3
        lab[ell(0.12 * a, 0.15 * b, 0.18 * c, sx * 0.36 * a, 0.05 * b, -0.05 * c) <= 1] = 6
    # a few veins: thin tubes along the cortex (arcs) and through the white matter
    veins = np.zeros(shape_kji, bool)
    for _ in range(6):
        t0 = rng.uniform(-np.pi, np.pi)
        zc = cz + rng.uniform(-0.5, 0.5) * c
        rr = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
        dth = np.angle(np.exp(1j * (theta - t0)))
        veins |= (np.abs(rr - rng.uniform(0.55, 0.8)) < 0.012) & (np.abs(dth) < 0.6) & (np.abs(z - zc) < 2.0)
    for _ in range(3):
        x0, y0 = cx + rng.uniform(-0.3, 0.3) * a, cy + rng.uniform(-0.4, 0.4) * b
        veins |= ((x - x0) ** 2 + (y - y0) ** 2 < 0.8 ** 2) & (np.abs(z - cz) < 0.5 * c)
    lab[veins & (lab >= 3)] = 7
    means = {0: 5.0, 1: 90.0, 2: 12.0, 3: 75.0, 4: 95.0, 5: 70.0, 6: 52.0, 7: 25.0}
    img = np.zeros(shape_kji, np.float32)
    for k, m in means.items():
        img[lab == k] = m * rng.uniform(0.93, 1.07)
    from scipy import ndimage as ndi

    img = ndi.gaussian_filter(img, sigma=(0.4, 0.6, 0.6))
    bias = 1 + 0.12 * np.sin(x / (2 * a) * np.pi + rng.uniform(0, 3)) * np.cos(y / (2 * b) * np.pi)
    img = img * bias
    noise = rng.normal(0, 3.0, size=(2,) + shape_kji)
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)
    vol = Volume(img, spacing, (0.0, 0.0, 0.0), np.eye(3))
    return vol, brain, lab


def make_demo_study(seed: int = 0, n_cmbs: int = 6) -> tuple[Volume, Volume, np.ndarray]:
    """(image, cmb_mask, centres_ras): a T2*-like synthetic study with `n_cmbs` CMBs.

    cmb_mask is an instance label map (uint16, 1..N) on the image grid; centres_ras is
    (N, 3) RAS mm.  Deterministic for a given seed; runs in about a second.
    """
    rng = np.random.default_rng(seed + 1000)
    vol, brain, lab = make_demo_phantom(seed)
    from scipy import ndimage as ndi

    allowed = ndi.binary_erosion(brain, iterations=2) & np.isin(lab, (4, 5, 6))
    centres = sample_centres(allowed, vol, n_cmbs, rng, min_distance_mm=12.0)
    res = insert_cmbs(vol, centres_ras=centres, rng=rng, polarity="dark", radius_mm=(1.2, 2.2),
                      contrast=(0.6, 0.9), dipole_prob=0.0)
    return res.image, res.mask, res.centres_ras


def make_real_background_case(chi_path, mask_path) -> tuple[Volume, np.ndarray]:
    """(image, centres_ras (3, 3)): pseudo-T2* of a 48 mm slab of a real QSM brain (thalami,
    internal cerebral veins, deep grey matter) on a 0.86 x 0.86 x 4 mm grid, three dark CMBs
    inserted (radius 1.6 mm, contrast 0.7).  chi_path / mask_path: the susceptibility map and
    brain mask (2016 QSM challenge: chi_cosmos.nii.gz, msk.nii.gz).  Deterministic."""
    from scipy import ndimage as ndi

    from ..io import read_volume
    from .label_synthesis import reacquire

    chi = read_volume(chi_path)
    msk = read_volume(mask_path).array > 0
    kc = int(np.argwhere(msk).mean(axis=0)[0])
    sl = slice(kc - 20, kc + 25)
    a = np.zeros(msk.shape, np.float32)
    m = np.zeros(msk.shape, bool)
    a[sl], m[sl] = chi.array[sl], msk[sl]
    img = np.where(m, np.clip(np.exp(-5.0 * np.abs(ndi.gaussian_filter(a, 0.5))), 0.02, None), 0.0)
    vol, mk = reacquire(chi.with_array(img.astype(np.float32)), (0.86, 0.86, 4.0), rng=0, mask=m, tilt_deg=0.0)
    c = vol.kji_to_ras(np.argwhere(mk).mean(axis=0))
    centres = np.array([c + [-25, 10, 0], c + [22, -15, 4], c + [-12, -30, -8]])
    ins = insert_cmbs(vol, centres_ras=centres, rng=1, polarity="dark", radius_mm=(1.6, 1.6), contrast=(0.7, 0.7))
    return vol.with_array((np.where(mk, ins.image.array, 0.0) * 1000).astype(np.float32)), centres
