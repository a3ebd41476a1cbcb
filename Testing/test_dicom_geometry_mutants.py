"""Hand-computed cases for DICOM slice geometry (CMBLib/dicom/series.py: `read_series`,
`_runs_against_normal`, `_natural_key`) written against the mutants that survived a complete run of
`scripts/mutation_test.py --module dicom_geometry` (docs/developer.md, "Mutation testing"): which way
the writer numbered the slices, natural file-name order, and the header the series checks read."""
import re
from types import SimpleNamespace

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from CMBLib.dicom.series import SeriesInfo, _natural_key, _runs_against_normal, read_series  # noqa: E402
from CMBLib.dicom.write import write_dicom_series  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.geometry import Volume  # noqa: E402


def test_natural_key_compares_numbers_as_numbers_and_letters_in_lower_case():
    assert _natural_key("IM10.dcm") == ["im", 10, ".dcm"]
    assert _natural_key("a/Slice_2") == ["a/slice_", 2, ""]
    names = ["IM10.dcm", "IM2.dcm", "im1.dcm"]
    assert sorted(names, key=_natural_key) == ["im1.dcm", "IM2.dcm", "IM10.dcm"]


def _headers(*numbers):
    return [SimpleNamespace(InstanceNumber=n) if n is not None else SimpleNamespace() for n in numbers]


def test_instance_numbers_decide_the_direction_before_file_names():
    ascending_names = ["IM1", "IM2", "IM3"]
    assert _runs_against_normal(_headers(30, 20, 10), ascending_names) is True
    assert _runs_against_normal(_headers(1, 2, 3), ascending_names[::-1]) is False    # steps of 1
    assert _runs_against_normal(_headers(10, 20, 30), ascending_names[::-1]) is False


def test_file_names_decide_when_instance_numbers_do_not():
    # absent, equal or unordered numbers: the names, reversed exactly, say "against the normal"
    for headers in (_headers(None, None, None), _headers(5, 5, 5), _headers(2, 3, 1), _headers(1, None, 3)):
        assert _runs_against_normal(headers, ["IM3", "IM2", "IM1"]) is True
        assert _runs_against_normal(headers, ["IM1", "IM2", "IM3"]) is False
        assert _runs_against_normal(headers, ["IM2", "IM3", "IM1"]) is False           # not exactly reversed
    # names equal but for their case are not in reverse order
    assert _runs_against_normal(_headers(None, None), ["im1.dcm", "IM1.dcm"]) is False


def _series(tmp_path):
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), (0.5, 0.6, 2.0), (0.0, 0.0, 0.0))
    paths = write_dicom_series(vol, tmp_path / "s", series_description="SWI")
    headers = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    return SeriesInfo("1.2.3", "5", "SWI", "MR", "1.2", list(paths), headers)


def test_read_series_judges_the_series_by_its_first_image(tmp_path):
    info = _series(tmp_path)
    info.headers[0].NumberOfFrames = 2
    with pytest.raises(CMBError, match=r"multi-frame \(2 frames\) objects are not supported"):
        read_series(info)


def test_read_series_without_a_sop_class(tmp_path):
    info = _series(tmp_path)
    for h in info.headers:
        del h.SOPClassUID
    volume, headers = read_series(info)
    assert volume.array.shape == (4, 5, 6) and len(headers) == 4 and volume.array.dtype == np.float32


def test_number_of_frames_zero_or_absent_is_one_frame(tmp_path):
    info = _series(tmp_path)
    for h in info.headers:
        h.NumberOfFrames = 0
    assert read_series(info)[0].array.shape == (4, 5, 6)


def test_localisers_mixed_in_are_counted_and_named(tmp_path):
    info = _series(tmp_path)
    info.headers[1].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    with pytest.raises(CMBError, match=rf"1 localiser image\(s\) mixed into the series \(e.g. {info.files[1].name}\)"):
        read_series(info)


def test_a_series_of_localisers_only_or_without_image_type_is_read(tmp_path):
    info = _series(tmp_path)
    for h in info.headers:
        h.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert read_series(info)[0].array.shape == (4, 5, 6)
    for h in info.headers:
        del h.ImageType
    assert read_series(info)[0].array.shape == (4, 5, 6)


@pytest.mark.parametrize("key", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_an_image_without_geometry_is_named(tmp_path, key):
    info = _series(tmp_path)
    delattr(info.headers[2], key)
    with pytest.raises(CMBError, match=rf"{info.files[2].name} has no {key}; the image geometry is unknown"):
        read_series(info)


def _oblique_series(tmp_path):
    from scipy.spatial.transform import Rotation

    direction = Rotation.from_euler("xyz", [12, -25, 33], degrees=True).as_matrix()
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), (0.5, 0.6, 2.0), (1.0, 2.0, 3.0),
                 direction)
    paths = write_dicom_series(vol, tmp_path / "o", series_description="SWI")
    headers = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    return vol, SeriesInfo("1.2.4", "6", "SWI", "MR", "1.2", list(paths), headers)


def test_orientation_cosines_are_normalised_and_taken_from_the_first_image(tmp_path):
    vol, info = _oblique_series(tmp_path)
    assert np.allclose(read_series(info)[0].direction, vol.direction, atol=1e-6)
    for h in info.headers:                                   # cosines written unnormalised: the same geometry
        h.ImageOrientationPatient = [2.0 * float(v) for v in h.ImageOrientationPatient]
    got = read_series(info)[0]
    assert np.allclose(got.direction, vol.direction, atol=1e-6) and np.allclose(got.origin, vol.origin, atol=1e-4)
    # a second image tilted by less than the tolerance: the first image's orientation is the volume's
    vol, info = _oblique_series(tmp_path / "b")
    iop = np.array([float(v) for v in info.headers[1].ImageOrientationPatient])
    info.headers[1].ImageOrientationPatient = list(iop + [4e-4, -4e-4, 4e-4, 4e-4, 4e-4, -4e-4])
    assert np.allclose(read_series(info)[0].direction, vol.direction, atol=1e-9)


def test_orientations_are_compared_with_the_first_image(tmp_path):
    # image 1 is 0.6e-3 off image 0 and image 2 1.2e-3 off: too far from the first, though each is near image 1
    info = _series(tmp_path)
    for n, off in ((1, 6e-4), (2, 1.2e-3)):
        iop = np.array([float(v) for v in info.headers[n].ImageOrientationPatient])
        info.headers[n].ImageOrientationPatient = list(iop + [0.0, 0.0, 0.0, 0.0, 0.0, off])
    with pytest.raises(CMBError, match="images have different orientations"):
        read_series(info)


def test_row_and_column_directions_must_be_perpendicular(tmp_path):
    info = _series(tmp_path)
    col = np.array([0.01, 1.0, 0.0]) / np.linalg.norm([0.01, 1.0, 0.0])
    for h in info.headers:
        h.ImageOrientationPatient = [1.0, 0.0, 0.0, *col]
    with pytest.raises(CMBError, match="not perpendicular"):
        read_series(info)


@pytest.mark.parametrize("change", ["size", "spacing", "spacing_1e-6"])
def test_images_must_share_size_and_pixel_spacing(tmp_path, change):
    info = _series(tmp_path)
    h = info.headers[1]
    if change == "size":
        h.Rows = int(h.Rows) + 1
    elif change == "spacing":
        for other in info.headers:                            # 0.6 and 0.7 mm both round to 1
            other.PixelSpacing = [0.6, 0.6]
        h.PixelSpacing = [0.7, 0.6]
    else:                                                     # a difference below 1e-5 mm is no difference
        for other in info.headers:
            other.PixelSpacing = [0.6, 0.5]
        h.PixelSpacing = [0.600001, 0.5]
        assert read_series(info)[0].spacing[:2] == (0.5, 0.6)           # the first image's
        return
    with pytest.raises(CMBError, match=r"images differ in size or pixel spacing \((2 sizes, 1|1 sizes, 2) spacings"):
        read_series(info)


def _stack(tmp_path, n=6, step=2.0):
    vol = Volume(np.arange(n * 5 * 6, dtype=np.float32).reshape(n, 5, 6), (0.5, 0.6, step), (0.0, 0.0, 0.0))
    paths = write_dicom_series(vol, tmp_path / f"n{n}", series_description="SWI")
    headers = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
    return SeriesInfo("1.2.5", "7", "SWI", "MR", "1.2", list(paths), headers)


def _move(info, index, dx=0.0, dz=0.0):
    """Shift image `index` in patient x (in plane) and z (along the slice normal of an axial stack)."""
    h = info.headers[index]
    x, y, z = (float(v) for v in h.ImagePositionPatient)
    h.ImagePositionPatient = [x + dx, y, z + dz]


def test_a_column_direction_slightly_off_perpendicular_is_made_perpendicular(tmp_path):
    info = _series(tmp_path)
    col = np.array([5e-4, 1.0, 0.0]) / np.linalg.norm([5e-4, 1.0, 0.0])  # 5e-4 off: below the 1e-3 refusal
    for h in info.headers:
        h.ImageOrientationPatient = [1.0, 0.0, 0.0, *col]
    d = read_series(info)[0].direction                                  # LPS (1,0,0), (0,1,0) in RAS
    assert np.allclose(d[:, 1], [0.0, -1.0, 0.0], atol=1e-12) and np.allclose(d[:, 0], [-1.0, 0.0, 0.0])


def test_two_slices_one_mm_apart_are_a_volume(tmp_path):
    volume, _ = read_series(_stack(tmp_path, n=2, step=1.0))
    assert volume.array.shape == (2, 5, 6) and volume.spacing == pytest.approx((0.5, 0.6, 1.0))


def test_slice_steps_within_two_percent_are_even(tmp_path):
    info = _stack(tmp_path)
    _move(info, 3, dz=0.04)                  # steps 2.04 and 1.96 around a median of 2: within 0.02 x 2 + 0.001
    assert read_series(info)[0].spacing[2] == pytest.approx(2.0)
    info = _stack(tmp_path / "b")
    _move(info, 3, dz=0.05)
    with pytest.raises(CMBError, match="uneven slice spacing"):
        read_series(info)


def _gap(tmp_path, shift):
    """Six slices 2 mm apart without the fourth, the later ones moved `shift` mm along the normal."""
    info = _stack(tmp_path)
    del info.headers[3], info.files[3]
    for n in (3, 4):
        _move(info, n, dz=shift)
    return info


def test_a_missing_slice_is_told_from_uneven_steps(tmp_path):
    for shift in (0.0, 0.04):                                 # a gap of 4 or 4.04 mm: one slice missing
        with pytest.raises(CMBError, match=r"1 slice\(s\) missing"):
            read_series(_gap(tmp_path / str(shift), shift))
    with pytest.raises(CMBError, match="uneven slice spacing"):     # 4.1 mm: 2.05 steps, not a whole number
        read_series(_gap(tmp_path / "u", 0.1))
    info = _stack(tmp_path / "near")
    _move(info, 5, dz=-1.99)                                  # the last 0.01 mm from its neighbour: no gap
    with pytest.raises(CMBError, match="uneven slice spacing"):
        read_series(info)


def test_a_sheared_stack_is_refused(tmp_path):
    info = _stack(tmp_path)
    _move(info, 2, dx=0.5)                                    # 0.5 mm in plane: more than 0.05 x 2 mm
    with pytest.raises(CMBError, match="not stacked along their normal"):
        read_series(info)


def test_a_small_in_plane_offset_is_tolerated(tmp_path):
    info = _stack(tmp_path)
    _move(info, 2, dx=0.05)                                   # 0.05 mm: below 0.05 x 2 mm
    assert read_series(info)[0].array.shape == (6, 5, 6)


def test_slices_numbered_against_the_normal_keep_their_order(tmp_path):
    info = _series(tmp_path)
    for h, number in zip(info.headers, (4, 3, 2, 1)):
        h.InstanceNumber = number
    volume, headers = read_series(info)
    assert [int(h.InstanceNumber) for h in headers] == [1, 2, 3, 4]
    assert volume.array[0].tolist() == np.arange(90, 120, dtype=np.float32).reshape(5, 6).tolist()


class _WithMeta:
    """A header whose file meta holds a transfer syntax as plain text (no pydicom UID with a name)."""

    def __init__(self, ds, meta):
        self._ds, self.file_meta = ds, meta

    def __getattr__(self, key):
        return getattr(self._ds, key)


def test_an_undecodable_image_names_its_transfer_syntax(tmp_path):
    info = _series(tmp_path)
    ds = pydicom.dcmread(str(info.files[1]))
    ds.PixelData = b"\x00\x01"                                # far too short for 5 x 6 pixels
    ds.save_as(str(info.files[1]))
    info.headers[1] = _WithMeta(info.headers[1], SimpleNamespace(TransferSyntaxUID="1.2.840.10008.1.2.4.50"))
    with pytest.raises(CMBError, match=r"pixel data of .* cannot be decoded \(transfer syntax 1.2.840.10008.1.2.4.50;"):
        read_series(info)


@pytest.mark.parametrize("syntax, shown", [
    (pydicom.uid.UID("1.2.840.10008.1.2.4.50"), "JPEG Baseline (Process 1)"),    # a known UID: its name
    (None, ""),                                                                    # none recorded
])
def test_an_undecodable_image_names_a_known_transfer_syntax(tmp_path, syntax, shown):
    info = _series(tmp_path)
    ds = pydicom.dcmread(str(info.files[1]))
    ds.PixelData = b"\x00\x01"
    ds.save_as(str(info.files[1]))
    meta = SimpleNamespace() if syntax is None else SimpleNamespace(TransferSyntaxUID=syntax)
    info.headers[1] = _WithMeta(info.headers[1], meta)
    with pytest.raises(CMBError, match=rf"cannot be decoded \(transfer syntax {re.escape(shown)};"):
        read_series(info)


def _rewrite_files(info, **attrs):
    for path in info.files:
        ds = pydicom.dcmread(str(path))
        for key, value in attrs.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(str(path))


def test_rescale_absent_or_zero_slope_leaves_the_stored_values(tmp_path):
    info = _series(tmp_path)
    stored = read_series(info)[0].array.copy()
    _rewrite_files(info, RescaleSlope=None, RescaleIntercept=None)
    assert np.array_equal(read_series(info)[0].array, stored)
    _rewrite_files(info, RescaleSlope=0, RescaleIntercept=0)         # a zero slope means none
    assert np.array_equal(read_series(info)[0].array, stored)
    _rewrite_files(info, RescaleSlope=2, RescaleIntercept=-5)
    assert np.array_equal(read_series(info)[0].array, stored * 2 - 5)
