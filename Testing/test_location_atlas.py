"""Atlas route of `cmb locate`: registration of the shipped MNI template to moved,
resampled, contrast-changed copies of the ICBM template, and landmark regions."""
import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.location import locate_points
from CMBLib.location.atlas import load_atlas
from CMBLib.location.regions import category_of

from conftest import shared_file

# 12 landmarks (MNI RAS mm) in 12 distinct MARS regions; each lies where both the
# shipped atlas and the MARS reference parcellation agree (checked in test below).
LANDMARKS = [
    ((0.0, -28.0, -35.0), "brainstem"),
    ((25.0, -65.0, -35.0), "cerebellum"),
    ((-24.0, 0.0, 1.0), "basal_ganglia"),
    ((12.0, -18.0, 8.0), "thalamus"),
    ((-22.0, -13.0, 12.0), "internal_capsule"),
    ((30.0, 0.0, 14.0), "external_capsule"),
    ((0.0, -5.0, 25.0), "corpus_callosum"),
    ((-28.0, -10.0, 30.0), "deep_periventricular_wm"),
    ((30.0, 45.0, 25.0), "frontal"),
    ((-40.0, -55.0, 45.0), "parietal"),
    ((55.0, -20.0, -10.0), "temporal"),
    ((-20.0, -90.0, 5.0), "occipital"),
]


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def moved_copy(volume: Volume, matrix, shift, spacing=(0.9, 0.9, 3.0), slice_mm=3.0):
    """`volume` moved by p' = matrix @ p + shift (RAS mm), on a new axis-aligned grid of
    `spacing` (mm); thick slices simulated by smoothing along z first."""
    import SimpleITK as sitk

    from CMBLib.io import volume_from_sitk, volume_to_sitk

    img = sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32)
    img = sitk.DiscreteGaussian(img, [0.01, 0.01, (slice_mm / 2.355) ** 2], 32, 0.01, True)
    ras_corners = volume.voxel_to_ras(np.array([[i, j, k] for i in (0, volume.shape_ijk[0] - 1)
                                                for j in (0, volume.shape_ijk[1] - 1)
                                                for k in (0, volume.shape_ijk[2] - 1)]))
    moved = ras_corners @ np.asarray(matrix).T + shift
    lo, hi = moved.min(0), moved.max(0)
    size = [int(np.ceil((h - lo_) / s)) + 1 for lo_, h, s in zip(lo, hi, spacing)]
    f = np.diag([-1.0, -1.0, 1.0])
    inv = np.linalg.inv(matrix)
    t = sitk.AffineTransform(3)  # output (moved, LPS) -> input (original, LPS)
    t.SetMatrix((f @ inv @ f).ravel().tolist())
    t.SetTranslation((f @ (-inv @ shift)).tolist())
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetOrigin((f @ lo).tolist())
    ref.SetDirection(np.diag([-1.0, -1.0, 1.0]).ravel().tolist())  # RAS-aligned axes
    # With direction LPS-diag(-1,-1,1) the grid runs along +R, +A, +S from `lo`.
    out = sitk.Resample(img, ref, t, sitk.sitkLinear, 0.0)
    return volume_from_sitk(out)


def moved_landmarks(matrix, shift):
    pts = np.array([p for p, _ in LANDMARKS])
    return pts @ np.asarray(matrix).T + shift


MATRIX = rotation((1.0, 0.4, 0.3), 10.0)
SHIFT = np.array([10.0, -8.0, 8.0])  # 15.1 mm


@pytest.fixture(scope="module")
def template():
    from CMBLib.io import read_volume

    return read_volume(shared_file("atlases/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))


def score(records):
    return sum(r["region"] == name for r, (_, name) in zip(records, LANDMARKS))


def test_landmarks_agree_with_mars_reference():
    import nibabel as nib

    ref = nib.load(str(shared_file("atlases/mars_regions_mni152_1mm.nii.gz")))
    data = np.asanyarray(ref.dataobj)
    from CMBLib.location.regions import region_name

    reg, _, _ = load_atlas().lookup(np.array([p for p, _ in LANDMARKS]), 0.0)
    for (p, name), r in zip(LANDMARKS, reg):
        v = np.round(np.linalg.inv(ref.affine) @ (*p, 1.0)).astype(int)[:3]
        assert region_name(data[tuple(v)]) == name
        assert region_name(r) == name
