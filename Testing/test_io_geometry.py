"""I/O round trips keep geometry; voxel <-> RAS conversion; validation messages."""
import gzip

import numpy as np
import pytest
from conftest import shared_file

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume, bombs_size_class, equivalent_diameter_mm, sphere_voxel_count
from CMBLib.io import read_points_csv, read_segmentation, read_volume, write_segmentation, write_volume
from CMBLib.validation import validate_image, validate_labelmap


def _oblique_volume():
    theta = np.deg2rad(20)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return Volume(a, spacing=(0.5, 0.75, 4.0), origin=(10.0, -20.0, 30.0), direction=direction)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_round_trip_keeps_array_and_geometry(tmp_path, suffix):
    vol = _oblique_volume()
    path = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.same_geometry(vol)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-4)


def test_voxel_ras_conversion_hand_computed():
    vol = Volume(np.zeros((3, 3, 3)), spacing=(2.0, 3.0, 4.0), origin=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(vol.voxel_to_ras([1, 1, 1]), [3.0, 5.0, 7.0])
    np.testing.assert_allclose(vol.ras_to_voxel([3.0, 5.0, 7.0]), [1, 1, 1])
    np.testing.assert_allclose(vol.kji_to_ras([2, 0, 1]), [3.0, 2.0, 11.0])
    oblique = _oblique_volume()
    pts = np.random.default_rng(0).uniform(-5, 5, (10, 3))
    np.testing.assert_allclose(oblique.ras_to_voxel(oblique.voxel_to_ras(pts)), pts, atol=1e-9)


def test_nifti_orientation_matches_nibabel(shared_data):
    nib = pytest.importorskip("nibabel")
    path = shared_file("real/freesurfer_subject/norm.nii.gz")  # LIA orientation
    vol = read_volume(path)
    np.testing.assert_allclose(vol.ijk_to_ras, nib.load(str(path)).affine, atol=1e-3)


def test_seg_nrrd_round_trip_keeps_names_and_tags(tmp_path):
    vol = _oblique_volume()
    lab = np.zeros(vol.array.shape, np.int16)
    lab[1, 2, 3] = 4
    lab[2, 2, 2:4] = 9
    segs = [{"labelValue": 4, "name": "CMB 4", "tags": {"size_class": "<5mm"}},
            {"labelValue": 9, "name": "CMB 9", "tags": {"certainty": "uncertain"}}]
    write_segmentation(vol.with_array(lab), segs, tmp_path / "m.seg.nrrd")
    back, segments = read_segmentation(tmp_path / "m.seg.nrrd")
    np.testing.assert_array_equal(back.array, lab)
    assert back.same_geometry(vol)
    by_label = {s["labelValue"]: s for s in segments}
    assert by_label[4]["name"] == "CMB 4" and by_label[9]["tags"]["certainty"] == "uncertain"
    np.testing.assert_array_equal(read_volume(tmp_path / "m.seg.nrrd").array, lab)


def test_write_is_atomic_and_refuses_overwrite(tmp_path):
    vol = _oblique_volume()
    path = write_volume(vol, tmp_path / "v.nii.gz")
    before = path.read_bytes()
    with pytest.raises(CMBError, match="exists"):
        write_volume(vol.with_array(vol.array * 2), path, overwrite=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]  # no temporary left behind


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "cannot be read"),
    ("truncated", "cannot be read"),
])
def test_corrupt_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "bad.nii.gz"
    if content == "truncated":
        write_volume(_oblique_volume(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(gzip.compress(content))
    with pytest.raises(CMBError, match=message) as err:
        read_volume(path)
    assert "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CMBError, match="not found"):
        read_volume(tmp_path / "nothing.nii.gz")
    with pytest.raises(CMBError, match="folder"):
        read_volume(tmp_path)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 5)), "2 dimensions"),
    (np.zeros((2, 3, 4, 5)), "4 dimensions"),
    (np.zeros((1, 8, 8)), "2D"),
    (np.full((3, 4, 5), np.nan), "NaN"),
    (np.ones((3, 4, 5)), "constant"),
])
def test_validate_image_messages(array, message):
    with pytest.raises(CMBError, match=message):
        validate_image(Volume(array))


def test_validate_spacing_and_labelmap():
    img = Volume(np.random.default_rng(0).random((3, 4, 5)))
    with pytest.raises(CMBError, match="spacing"):
        validate_image(Volume(img.array, spacing=(1.0, 0.0, 1.0)))
    with pytest.raises(CMBError, match="geometry differs"):
        validate_labelmap(Volume(np.zeros((3, 4, 5)), origin=(0.0, 0.0, 5.0)), img)
    with pytest.raises(CMBError, match="non-integer"):
        validate_labelmap(img.with_array(np.full((3, 4, 5), 0.5)), img)


def test_points_csv(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("label,x,y,z\n1,1.5,-2,3\n2,4,5,6\n", encoding="utf-8")
    np.testing.assert_allclose(read_points_csv(p), [[1.5, -2, 3], [4, 5, 6]])
    p.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(CMBError, match="x,y,z"):
        read_points_csv(p)


def test_size_helpers():
    assert sphere_voxel_count(10.0, (1.0, 1.0, 1.0)) == 524  # 4/3 pi 5^3 = 523.6
    assert equivalent_diameter_mm(4 / 3 * np.pi * 8) == pytest.approx(4.0)
    assert bombs_size_class(4.99) == "<5mm" and bombs_size_class(5.0) == "5-10mm"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nan_voxels_in_nifti_are_refused(tmp_path, suffix):
    """SimpleITK turns NaN into 0 when reading NIfTI; read_volume must still refuse them."""
    import SimpleITK as sitk

    a = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    a[1, 2, 3] = np.nan
    a[4, 4, 4] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / f"nan{suffix}"))
    with pytest.raises(CMBError, match="2 voxels are NaN or infinite"):
        read_volume(tmp_path / f"nan{suffix}")


def test_atomic_writes_honour_the_umask(tmp_path):
    import os

    from CMBLib.io import write_text_atomic

    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640   # mkstemp alone would give 0600
