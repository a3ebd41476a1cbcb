"""Atlas route of `cmb locate`: registration of the shipped MNI template to moved,
resampled, contrast-changed copies of the ICBM template, and landmark regions."""
import numpy as np
import pytest
from conftest import shared_file

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.location import locate_points
from CMBLib.location.atlas import load_atlas
from CMBLib.location.regions import category_of

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

    reg, _, _ = load_atlas().lookup(np.array([p for p, _ in LANDMARKS]), 3.0)
    for (p, name), r in zip(LANDMARKS, reg):
        v = np.round(np.linalg.inv(ref.affine) @ (*p, 1.0)).astype(int)[:3]
        assert region_name(data[tuple(v)]) == name
        assert region_name(r) == name


def _write_points(path, pts):
    rows = "".join(f"p{n},{p[0]:.3f},{p[1]:.3f},{p[2]:.3f}\n" for n, p in enumerate(pts))
    path.write_text("id,x,y,z\n" + rows, encoding="utf-8")


def test_cli_inverted_moved_thick_slices(template, tmp_path, capsys):
    """Judged case (a): inverted contrast (background bright too), 10 deg + 15 mm,
    0.9 x 0.9 x 3 mm; at least 11 of 12 landmark regions right (we get 12)."""
    import csv

    from CMBLib.cli import main
    from CMBLib.io import write_volume

    inverted = template.with_array(255.0 - template.array.astype(np.float32))
    moved = moved_copy(inverted, MATRIX, SHIFT)
    assert np.allclose(moved.spacing, (0.9, 0.9, 3.0))
    write_volume(moved, tmp_path / "moved.nii.gz")
    _write_points(tmp_path / "points.csv", moved_landmarks(MATRIX, SHIFT))
    out = tmp_path / "located.csv"
    rc = main(["locate", str(tmp_path / "moved.nii.gz"), str(tmp_path / "points.csv"), "--out", str(out),
               "--summary", str(tmp_path / "mars.csv"), "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 12
    assert {"x", "y", "z", "region", "category", "side"} <= set(rows[0])
    assert [r["id"] for r in rows] == [f"p{n}" for n in range(12)]  # input columns carried
    assert score(rows) >= 11
    for r, (p, name) in zip(rows, LANDMARKS):
        assert r["category"] == category_of(name)
        # Carried back to MNI the landmark lands within 3 mm of where it was put.
        assert np.linalg.norm(np.array([float(r["mni_x"]), float(r["mni_y"]), float(r["mni_z"])]) - p) < 3.0
    assert rows[2]["side"] == "left" and rows[3]["side"] == "right" and rows[0]["side"] == "midline"
    # Existing output is not overwritten silently.
    rc = main(["locate", str(tmp_path / "moved.nii.gz"), str(tmp_path / "points.csv"), "--out", str(out), "--quiet"])
    assert rc == 2


def with_synthetic_head(volume: Volume, brain_value_scale=1.0):
    """Add a scalp (bright) and skull (dark) shell around a skull-stripped brain (mm-based)."""
    from scipy import ndimage

    arr = volume.array.astype(np.float32) * brain_value_scale
    brain = ndimage.binary_fill_holes(volume.array > 0)
    d = ndimage.distance_transform_edt(~brain, sampling=volume.spacing[::-1])
    arr[(d > 3) & (d <= 8)] = 15.0  # skull
    arr[(d > 8) & (d <= 14)] = 200.0  # scalp fat
    return volume.with_array(arr)


def test_head_with_skull_and_t2_like_contrast(template):
    """Not skull-stripped: a synthetic skull and scalp around a T2-like (brain-inverted)
    brain, moved and resampled like case (a)."""
    arr = template.array.astype(np.float32)
    t2 = template.with_array(np.where(arr > 0, 260.0 - arr, 0.0))
    head = with_synthetic_head(t2)
    moved = moved_copy(head, MATRIX.T, -SHIFT)
    recs = locate_points(moved, moved_landmarks(MATRIX.T, -SHIFT))
    assert score(recs) >= 11
    assert sum(r["category"] == category_of(n) for r, (_, n) in zip(recs, LANDMARKS)) >= 11


def test_registration_failure_is_reported():
    rng = np.random.default_rng(0)
    noise = Volume(rng.normal(size=(30, 50, 50)).astype(np.float32), (4.0, 4.0, 4.0))
    with pytest.raises(CMBError, match="registration failed"):
        locate_points(noise, [[0.0, 0.0, 0.0]])


def test_qsm_landmarks_get_their_category():
    """Real QSM (COSMOS, 2016 challenge): iron-rich globus pallidus (brightest deep grey
    matter, one per hemisphere) must be deep; points 8 mm inside the brain mask's
    anterior and posterior ends must be lobar; a point 40 mm outside the brain is outside."""
    from scipy import ndimage

    from CMBLib.io import read_volume

    qsm = read_volume(shared_file("real/qsm2016/chi_cosmos.nii.gz"))
    mask = read_volume(shared_file("real/qsm2016/msk.nii.gz")).array > 0
    smooth = ndimage.gaussian_filter(qsm.array.astype(np.float32), 1.5)
    k, j, i = np.nonzero(mask)
    kc, jc, ic = (int(np.mean(a)) for a in (k, j, i))
    points = []
    for lo, hi in ((ic - 30, ic - 8), (ic + 8, ic + 30)):  # pallidum: brightest deep spot per side
        box = np.zeros_like(mask)
        box[kc - 20:kc + 5, jc - 15:jc + 20, lo:hi] = True
        points.append(np.unravel_index(np.argmax(np.where(box & mask, smooth, -np.inf)), mask.shape))
    ras = [qsm.kji_to_ras(np.array(p, float)) for p in points]
    mid = mask[kc + 10, :, ic]
    front, back = np.flatnonzero(mid)[[-1, 0]]
    step = int(round(8 / qsm.spacing[1]))
    ras.append(qsm.kji_to_ras(np.array([kc + 10, front - step, ic], float)))
    ras.append(qsm.kji_to_ras(np.array([kc + 10, back + step, ic + 10], float)))
    ras.append(qsm.kji_to_ras(np.array([kc, jc, ic], float)) + np.array([0.0, 0.0, 120.0]))
    recs = locate_points(qsm, np.array(ras))
    cats = [r["category"] for r in recs]
    assert cats == ["deep", "deep", "lobar", "lobar", "outside"], recs
    assert recs[0]["side"] != recs[1]["side"]
    assert recs[2]["region"] == "frontal" and recs[3]["region"] in ("occipital", "parietal")


def test_bspline_point_inversion():
    import SimpleITK as sitk

    from CMBLib.location.registration import _invert_point

    grid = sitk.Image([20, 20, 20], sitk.sitkFloat32)
    grid.SetSpacing([5.0, 5.0, 5.0])
    bspline = sitk.BSplineTransformInitializer(grid, [3, 3, 3], 3)
    rng = np.random.default_rng(1)
    bspline.SetParameters(rng.uniform(-4, 4, len(bspline.GetParameters())).tolist())
    for x in ([30.0, 40.0, 50.0], [10.0, 80.0, 20.0]):
        y = np.array(bspline.TransformPoint(x))
        assert np.allclose(_invert_point(bspline, y), x, atol=0.05)


def test_atlas_agrees_with_mars_reference_parcellation():
    """Per-hemisphere core (most interior voxel) of every region of the MARS reference
    parcellation gets the same region from the shipped atlas (26 of 26), and >= 80% of the
    voxels both call brain agree (measured 84.7%)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to
    from scipy import ndimage

    from CMBLib.location.regions import REGIONS, region_name

    ref = nib.load(str(shared_file("atlases/mars_regions_mni152_1mm.nii.gz")))
    data = np.asanyarray(ref.dataobj)
    atlas = load_atlas()
    ours = np.asanyarray(resample_from_to(nib.Nifti1Image(atlas.region, atlas.label_affine), ref, order=0).dataobj)
    both = (data > 0) & (ours > 0)
    assert np.mean(ours[both] == data[both]) >= 0.80
    x_of_i = ref.affine[0, 0] * np.arange(data.shape[0]) + ref.affine[0, 3]
    cores = []
    for rid, (name, _) in REGIONS.items():
        for left in (True, False):
            m = (data == rid) & ((x_of_i < 0) if left else (x_of_i >= 0))[:, None, None]
            nz = np.argwhere(m)
            lo, hi = nz.min(0), nz.max(0) + 1
            d = ndimage.distance_transform_edt(np.pad(m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 1))
            ijk = np.array(np.unravel_index(np.argmax(d), d.shape)) - 1 + lo
            cores.append(((ref.affine @ np.append(ijk, 1.0))[:3], name))
    reg, _, _ = atlas.lookup(np.array([p for p, _ in cores]), 3.0)
    assert [region_name(r) for r in reg] == [n for _, n in cores]


def test_small_crop_is_refused():
    """A 24 x 24 x 41 mm crop of a real GRE (first echo) cannot be placed in the brain."""
    import SimpleITK as sitk

    from CMBLib.io import volume_from_sitk

    echo1 = volume_from_sitk(sitk.ReadImage(str(shared_file("real/gre_multiecho_small/mag.nii.gz")))[:, :, :, 0])
    with pytest.raises(CMBError, match="covers only"):
        locate_points(echo1, [echo1.voxel_to_ras(np.array(echo1.shape_ijk) / 2)])
