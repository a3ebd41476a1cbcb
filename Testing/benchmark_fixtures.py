"""Small synthetic releases of the public CMB data sets, in their exact layouts (for test_benchmark.py).

Shapes are small, but spacings, orientations, file names and the CUHK index convention are
the releases': VALDO ``sub-NNN/sub-NNN_space-T2S_desc-masked_T2S.nii.gz`` with
``sub-NNN_space-T2S_CMB.nii.gz`` (and T1, T2), CUHK ``NN.nii[.gz]`` beside ``NN.mat`` with
``cen`` (1-based (i, j, k)) and ``gt_num``.  Dark spots are what the dark-spot test model
finds (Testing/detection_fixtures.py).
"""
from pathlib import Path

import numpy as np

from CMBLib.geometry import Volume
from CMBLib.io import write_volume

RADIOLOGICAL = np.diag([-1.0, -1.0, 1.0])   # i towards the patient's left, j posterior (as scanners write)


def head(shape_ijk, spacing, semi_axes_mm, direction=None, seed=0):
    """Volume of a masked head: an ellipsoidal 'brain' N(100, 3) with `semi_axes_mm` (i, j, k)
    centred in the field of view, on zero (use with `inner_brain_mask`)."""
    rng = np.random.default_rng(seed)
    shape_kji = tuple(int(n) for n in shape_ijk[::-1])
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape_kji), indexing="ij")
    ext = [n * s for n, s in zip(shape_ijk, spacing)]
    ci, cj, ck = [(n - 1) / 2 for n in shape_ijk]
    x, y, z = (i - ci) * spacing[0], (j - cj) * spacing[1], (k - ck) * spacing[2]
    ax, ay, az = semi_axes_mm
    brain = (x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2 <= 1
    a = np.where(brain, rng.normal(100, 3, shape_kji), 0.0).astype(np.float32)
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    return Volume(a, spacing, (-ext[0] / 2, -ext[1] / 2, -ext[2] / 2), direction), (i, j, k)


def ball(grid, spacing, centre_ijk, radius_mm):
    """Boolean [k, j, i] ball of `radius_mm` around voxel `centre_ijk`."""
    i, j, k = grid
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((i, j, k), centre_ijk, spacing))
    return d2 <= radius_mm ** 2


def study(shape_ijk, spacing, semi_axes_mm, spots, cmbs, direction=None, seed=0):
    """(image Volume, label Volume): dark `spots` [(ijk, r_mm)] in the image, CMB labels 1..N
    at `cmbs` [(ijk, r_mm)] in the label map (a spot without a label is a false positive to
    be, a label without a spot a CMB the detector cannot see)."""
    vol, grid = head(shape_ijk, spacing, semi_axes_mm, direction, seed=seed)
    a = vol.array
    for c, r in spots:
        a[ball(grid, spacing, c, r)] = 30.0
    lab = np.zeros(a.shape, np.uint8)
    for n, (c, r) in enumerate(cmbs, 1):
        lab[ball(grid, spacing, c, r)] = n
    return vol, vol.with_array(lab)


# VALDO: one subject per cohort grid, a false positive, a miss, a subject without its label map.
# Fields of view: the brain plus 4 mm of background in-plane and 8 mm through-plane.
VALDO_SUBJECTS = {
    # cohort 1: 3T, 0.45 x 0.45 x 4 mm (release 512 x 512 x 35)
    "sub-101": dict(shape=(116, 125, 12), spacing=(0.45, 0.45, 4.0), semi=(22, 24, 16),
                    spots=[((45, 70, 6), 2.5), ((72, 52, 6), 2.5)],        # the second is not a CMB: FP
                    cmbs=[((45, 70, 6), 2.5), ((60, 78, 5), 1.0)]),         # the second has no spot: FN
    # cohort 2: 1.5T 3D, 0.49 x 0.49 x 0.8 mm (release 512 x 512 x 192)
    "sub-201": dict(shape=(98, 106, 55), spacing=(0.49, 0.49, 0.8), semi=(20, 22, 14),
                    spots=[((42, 60, 28), 1.8)], cmbs=[((42, 60, 28), 1.8)]),
    # cohort 3: 1 x 1 x 3 mm (release 256 x 256 x 36-49)
    "sub-301": dict(shape=(52, 56, 18), spacing=(1.0, 1.0, 3.0), semi=(22, 24, 18),
                    spots=[((20, 34, 9), 2.0)], cmbs=[((20, 34, 9), 2.0)]),
}
VALDO_EXPECTED = {"tp": 3, "fp": 1, "fn": 1}


def write_valdo(root, subjects=None, missing_label=("sub-302",)):
    """A VALDO task-2 release folder; subjects in `missing_label` lack their CMB file."""
    root = Path(root)
    for n, (sub, spec) in enumerate((subjects or VALDO_SUBJECTS).items()):
        img, lab = study(spec["shape"], spec["spacing"], spec["semi"], spec["spots"], spec["cmbs"], RADIOLOGICAL,
                         seed=n)
        folder = root / sub
        folder.mkdir(parents=True, exist_ok=True)
        write_volume(img, folder / f"{sub}_space-T2S_desc-masked_T2S.nii.gz")
        write_volume(img, folder / f"{sub}_space-T2S_desc-masked_T1.nii.gz")
        write_volume(img, folder / f"{sub}_space-T2S_desc-masked_T2.nii.gz")
        write_volume(lab, folder / f"{sub}_space-T2S_CMB.nii.gz")
    for sub in missing_label:
        spec = VALDO_SUBJECTS["sub-301"]
        img, _ = study(spec["shape"], spec["spacing"], spec["semi"], spec["spots"], [], RADIOLOGICAL)
        (root / sub).mkdir(parents=True, exist_ok=True)
        write_volume(img, root / sub / f"{sub}_space-T2S_desc-masked_T2S.nii.gz")
    return root


# CUHK: SWI at 0.45 x 0.45 x 2 mm (release about 512 x 512 x 150), asymmetric shapes and positions.
CUHK_SUBJECTS = {
    "01": dict(shape=(116, 98, 24), semi=(22, 18, 16), suffix=".nii",
               spots=[((45, 58, 12), 2.5), ((70, 40, 11), 2.5)],
               cen_ijk=[(45, 58, 12), (60, 66, 12)]),     # second spot FP, second centre a miss
    "02": dict(shape=(107, 89, 22), semi=(20, 16, 14), suffix=".nii.gz",
               spots=[((62, 38, 11), 2.5)], cen_ijk=[(62, 38, 11)]),
}
CUHK_SPACING = (0.45, 0.45, 2.0)
CUHK_EXPECTED = {"tp": 2, "fp": 1, "fn": 1}


def write_cuhk(root, subjects=None, orphan_mat="03"):
    """A CUHK release folder: NN.nii / NN.nii.gz beside NN.mat (cen 1-based (i, j, k), gt_num)."""
    import scipy.io

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n, (num, spec) in enumerate((subjects or CUHK_SUBJECTS).items()):
        img, _ = study(spec["shape"], CUHK_SPACING, spec["semi"], spec["spots"], [], RADIOLOGICAL, seed=10 + n)
        write_volume(img, root / f"{num}{spec['suffix']}")
        cen = np.array(spec["cen_ijk"], dtype=float).reshape(-1, 3) + 1.0     # MATLAB: 1-based (i, j, k)
        scipy.io.savemat(str(root / f"{num}.mat"), {"cen": cen, "gt_num": float(len(cen))})
    if orphan_mat:
        scipy.io.savemat(str(root / f"{orphan_mat}.mat"), {"cen": np.array([[5.0, 5.0, 5.0]]), "gt_num": 1.0})
    return root


def inner_brain_mask(monkeypatch, depth_mm: float = 3.0):
    """Make detection's brain mask the head's non-zero voxels deeper than `depth_mm` from the
    background, so the partial-volume rim of these small synthetic brains is neither counted
    in the model's intensity normalisation nor detected as a dark spot; the tests then do not
    depend on the heuristics of `preprocess.brain_mask_from_image`."""
    from scipy import ndimage

    from CMBLib.detection import preprocess

    def inner(volume, *args, **kwargs):
        head = np.asarray(volume.array) != 0
        return ndimage.distance_transform_edt(head, sampling=volume.spacing[::-1]) > depth_mm

    monkeypatch.setattr(preprocess, "brain_mask_from_image", inner)
