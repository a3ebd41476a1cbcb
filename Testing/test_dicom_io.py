"""DICOM series in: exact geometry (oblique, anisotropic, both slice orders), series choice,
output names, and one-line errors for bad series."""
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from CMBLib.dicom.series import (  # noqa: E402
    choose_series,
    is_dicom_folder,
    read_dicom_volume,
    read_series,
    scan_folder,
    series_name,
)
from CMBLib.dicom.write import write_dicom_series  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.geometry import Volume  # noqa: E402
from CMBLib.io import read_volume, volume_from_sitk  # noqa: E402


def rotation(ax, ay, az):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [ax, ay, az], degrees=True).as_matrix()


def _volume(direction, spacing=(0.45, 0.6, 2.5), shape=(7, 9, 11), integers=True, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-200, 3000, shape).astype(np.float32) if integers else rng.normal(0.1, 0.05, shape)
    return Volume(a.astype(np.float32), spacing, (12.5, -30.25, 41.0), direction)


@pytest.mark.parametrize("direction", [rotation(12, -25, 33), rotation(12, -25, 33) @ np.diag([1, 1, -1]),
                                       np.diag([-1.0, 1.0, 1.0]), rotation(0, 90, 0)],
                         ids=["oblique", "oblique-left-handed", "LAS", "sagittal"])
def test_series_reads_back_with_exact_geometry_and_values(tmp_path, direction):
    vol = _volume(direction)
    write_dicom_series(vol, tmp_path / "s")
    back = read_dicom_volume(tmp_path / "s")
    assert back.array.shape == vol.array.shape
    np.testing.assert_array_equal(back.array, vol.array)  # integers: stored exactly
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)
    # one voxel's world position, hand-checked through both geometries
    np.testing.assert_allclose(back.voxel_to_ras([3, 4, 5]), vol.voxel_to_ras([3, 4, 5]), atol=1e-4)


def test_float_values_survive_rescale_and_gdcm_agrees(tmp_path):
    import SimpleITK as sitk

    vol = _volume(rotation(5, 10, -15), integers=False)
    write_dicom_series(vol, tmp_path / "s")
    back = read_dicom_volume(tmp_path / "s")
    span = float(vol.array.max() - vol.array.min())
    assert np.abs(back.array - vol.array).max() <= span / 65000.0  # int16 steps of the rescale slope
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    gdcm = volume_from_sitk(reader.Execute())
    np.testing.assert_allclose(gdcm.spacing, back.spacing, atol=1e-4)
    np.testing.assert_allclose(gdcm.direction, back.direction, atol=1e-5)
    # GDCM may order slices either way; compare the world positions of the volume's corners
    for kji in ([0, 0, 0], [6, 8, 10]):
        ras = back.kji_to_ras(np.array([kji], float))
        ijk = gdcm.ras_to_voxel(ras)[0]
        assert np.allclose(ijk, np.rint(ijk), atol=1e-3)
        assert np.all((ijk > -0.5) & (ijk < np.array(gdcm.shape_ijk) - 0.5))


def test_file_names_do_not_decide_the_slice_order(tmp_path):
    vol = _volume(np.eye(3))
    paths = write_dicom_series(vol, tmp_path / "s")
    rng = np.random.default_rng(1)
    for n, p in zip(rng.permutation(len(paths)), paths):
        p.rename(p.with_name(f"x{n:03d}"))   # no .dcm suffix, shuffled names
    back = read_dicom_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, vol.array)
    assert read_volume(tmp_path / "s").array.shape == vol.array.shape   # read_volume accepts the folder


def _two_series(folder, second="T1_MPRAGE"):
    write_dicom_series(_volume(np.eye(3)), folder / "a", series_description="SWI_mag", series_number=5,
                       study_uid="1.2.3.4", patient_id="P 007")
    write_dicom_series(_volume(np.eye(3), seed=2), folder / "b", series_description=second, series_number=2,
                       study_uid="1.2.3.4", patient_id="P 007")


def test_series_choice_by_metadata_listing_and_selection(tmp_path):
    _two_series(tmp_path)
    series = scan_folder(tmp_path)
    assert [s.number for s in series] == ["2", "5"]
    chosen = choose_series(series)
    assert [s.description for s in chosen] == ["SWI_mag"]
    assert choose_series(series, "2")[0].description == "T1_MPRAGE"
    assert choose_series(series, series[1].uid)[0].number == "5"
    with pytest.raises(CMBError, match="no series with UID or number '9'"):
        choose_series(series, "9")
    shutil.rmtree(tmp_path / "b")
    _two_series(tmp_path / "c", second="T2STAR_GRE")   # two CMB-sensitive series in one study
    with pytest.raises(CMBError, match=r"2 candidate series; pick one with --series.*T2STAR_GRE.*SWI_mag"):
        choose_series(scan_folder(tmp_path / "c"))


def test_output_names_from_attributes_or_pseudonym(tmp_path):
    _two_series(tmp_path)
    info = choose_series(scan_folder(tmp_path))[0]
    assert series_name(info) == "P_007_5_SWI_mag"
    assert series_name(info, "{PatientID}-{SeriesInstanceUID}").startswith("P_007-1.2.")
    pseudo = series_name(info, pseudonymise=True)
    assert pseudo.startswith("dicom-") and len(pseudo) == 16 and "007" not in pseudo
    assert pseudo == series_name(info, "{PatientID}", pseudonymise=True)  # stable, template ignored


def _rewrite(path, **attrs):
    ds = pydicom.dcmread(str(path))
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(str(path))


def _bad_series(tmp_path, kind):
    vol = _volume(np.eye(3), shape=(6, 8, 8))
    paths = write_dicom_series(vol, tmp_path / "s", series_description="SWI")
    if kind == "missing":
        paths[2].unlink()
    elif kind == "spacing":
        ipp = [float(v) for v in pydicom.dcmread(str(paths[3])).ImagePositionPatient]
        _rewrite(paths[3], ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.7])
    elif kind == "orientation":
        _rewrite(paths[1], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    elif kind == "localiser":
        _rewrite(paths[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    elif kind == "duplicate":
        shutil.copy(paths[1], paths[1].with_name("copy.dcm"))
        _rewrite(paths[1].with_name("copy.dcm"), SOPInstanceUID=pydicom.uid.generate_uid())
    elif kind == "multiframe":
        for p in paths:
            _rewrite(p, NumberOfFrames=2)
    elif kind == "enhanced":
        for p in paths:
            _rewrite(p, SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1")
    elif kind == "compressed":
        for p in paths:
            ds = pydicom.dcmread(str(p))
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000, data not really encoded
            ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01garbage" * 8])
            ds["PixelData"].VR = "OB"
            ds.save_as(str(p), enforce_file_format=True) if int(pydicom.__version__[0]) >= 3 else ds.save_as(str(p))
    elif kind == "tilt":
        for n, p in enumerate(paths):
            ipp = [float(v) for v in pydicom.dcmread(str(p)).ImagePositionPatient]
            _rewrite(p, ImagePositionPatient=[ipp[0], ipp[1] + 0.8 * n, ipp[2]])
    return tmp_path / "s"


@pytest.mark.parametrize("kind,words", [
    ("missing", "1 slice(s) missing"), ("spacing", "uneven slice spacing"),
    ("orientation", "different orientations"), ("localiser", "localiser image(s) mixed into the series"),
    ("duplicate", "share a slice position"), ("multiframe", "multi-frame"),
    ("enhanced", "Enhanced MR Image objects are not supported"), ("compressed", "cannot be decoded"),
    ("tilt", "not stacked along their normal")])
def test_bad_series_is_one_line_exit_2_naming_the_series(tmp_path, capsys, kind, words):
    from CMBLib.cli import main

    folder = _bad_series(tmp_path, kind)
    info = scan_folder(folder)
    with pytest.raises(CMBError) as err:
        read_series(info[0])
    assert words in str(err.value)
    assert main(["grow", str(folder), "--points", str(_points(tmp_path)), "-o", str(tmp_path / "m.nii.gz")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and words in err[0] and 'series 1 "SWI"' in err[0], err


def _points(tmp_path):
    p = tmp_path / "points.csv"
    p.write_text("x,y,z\n14,-28,46\n", encoding="utf-8")
    return p


def test_non_dicom_folder_is_not_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    assert not is_dicom_folder(tmp_path)
    write_dicom_series(_volume(np.eye(3)), tmp_path / "deep" / "er")
    assert is_dicom_folder(tmp_path)
    assert Path(scan_folder(tmp_path)[0].files[0]).parent.name == "er"


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, 1.0])], ids=["RAS", "LAS"])
def test_slice_order_follows_file_names_when_instance_numbers_are_useless(tmp_path, direction):
    vol = _volume(direction, shape=(12, 5, 6))
    for p in write_dicom_series(vol, tmp_path / "s"):
        _rewrite(p, InstanceNumber=1)
    back = read_dicom_volume(tmp_path / "s")     # IMG0001 ... IMG0012 follow k
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)


def test_a_seg_or_sr_beside_the_series_is_not_a_series(tmp_path):
    pytest.importorskip("highdicom")
    from CMBLib.dicom.seg import write_seg

    vol = _volume(np.eye(3))
    write_dicom_series(vol, tmp_path / "s")
    image, headers = read_series(scan_folder(tmp_path / "s")[0])
    mask = np.zeros(image.array.shape, np.int16)
    mask[3, 4, 5] = 1
    write_seg(tmp_path / "s" / "out" / "x_cmb_seg.dcm", image.with_array(mask), headers)
    series = scan_folder(tmp_path / "s")
    assert len(series) == 1 and len(series[0].files) == 7


def test_files_without_the_part10_preamble_are_read(tmp_path):
    vol = _volume(rotation(0, 0, 30))
    for p in write_dicom_series(vol, tmp_path / "s"):
        ds = pydicom.dcmread(str(p))
        del ds.file_meta
        ds.preamble = None
        if int(pydicom.__version__.split(".")[0]) >= 3:
            pydicom.dcmwrite(str(p), ds, implicit_vr=True, little_endian=True)
        else:
            ds.is_implicit_VR, ds.is_little_endian = True, True
            ds.save_as(str(p), write_like_original=True)
        assert p.read_bytes()[128:132] != b"DICM"
    back = read_dicom_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-6)


def test_new_packages_are_listed_in_cmake_and_parse_on_python39():
    import ast

    lib = Path(__file__).resolve().parents[1] / "CMBLib"
    cmake = (lib / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = {ln.strip() for ln in cmake.splitlines()}
    files = [p for sub in ("dicom", "report") for p in (lib / sub).glob("*.py")] + [lib / "cli" / "report.py"]
    assert len(files) == 12
    for path in files:
        assert str(path.relative_to(lib)) in listed, path
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
