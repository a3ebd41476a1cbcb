"""`cmb detect DICOM_FOLDER --report --dicom-seg`: same CMBs as from NIfTI, a self-contained
report, one SEG per study referencing the source series; report/SEG library calls."""
import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("highdicom")

from detection_fixtures import exact_brain_mask, oblique, phantom  # noqa: E402

from CMBLib.cli import main  # noqa: E402
from CMBLib.dicom.seg import read_seg_segments  # noqa: E402
from CMBLib.dicom.series import read_series, scan_folder  # noqa: E402
from CMBLib.dicom.write import write_dicom_series  # noqa: E402
from CMBLib.geometry import Volume  # noqa: E402
from CMBLib.io import write_volume  # noqa: E402
from CMBLib.report import distribution_pattern, region_table, report_items  # noqa: E402
from CMBLib.report.outputs import write_study_extras  # noqa: E402
from CMBLib.report.pictures import axial_crop  # noqa: E402

SPOTS = [((30, 40, 10), 1.8), ((60, 55, 13), 3.5)]


@pytest.fixture(autouse=True)
def _true_brain(monkeypatch):
    exact_brain_mask(monkeypatch)


def _study(tmp_path, direction, name="P1"):
    vol, centres = phantom(SPOTS, direction=direction)
    vol = vol.with_array(np.rint(vol.array))  # as a scanner stores it: integers
    nifti = tmp_path / f"{name}.nii.gz"
    write_volume(vol, nifti)
    write_dicom_series(vol, tmp_path / "dicom" / name, patient_id=name, series_description="SWI",
                       series_number=7)
    return vol, centres, nifti, tmp_path / "dicom" / name


@pytest.mark.parametrize("direction", [oblique(15.0), oblique(-10.0) @ np.diag([1.0, 1.0, -1.0])],
                         ids=["oblique", "oblique-reversed-slices"])
def test_dicom_detection_equals_nifti_and_writes_report_and_seg(tmp_path, dark_model, capsys, direction):
    vol, centres, nifti, folder = _study(tmp_path, direction)
    out_n, out_d = tmp_path / "out_nifti", tmp_path / "out_dicom"
    assert main(["detect", str(nifti), "--out", str(out_n), "--model", dark_model]) == 0
    assert main(["detect", str(folder), "--out", str(out_d), "--model", dark_model, "--report",
                 "--dicom-seg"]) == 0
    capsys.readouterr()
    ref = json.loads((out_n / "P1_cmb.json").read_text(encoding="utf-8"))["cmbs"]
    doc = json.loads((out_d / "P1_7_SWI_cmb.json").read_text(encoding="utf-8"))
    got = doc["cmbs"]
    assert len(got) == len(ref) == 2
    for a, b in zip(got, ref):
        assert np.linalg.norm(np.subtract(a["centre_ras"], b["centre_ras"])) < 1e-3
        assert a["voxel_count"] == b["voxel_count"]
    # exactly one SEG, referencing the source series, one segment per CMB centred on its record
    segs = sorted(out_d.glob("*.dcm"))
    assert [p.name for p in segs] == ["P1_7_SWI_cmb_seg.dcm"]
    source_uid = scan_folder(folder)[0].uid
    segments = read_seg_segments(segs[0])
    assert len(segments) == len(got)
    for number, rec in enumerate(got, start=1):
        s = segments[number]
        assert s["referenced_series"] == [source_uid] and s["label"] == f"CMB {rec['label']}"
        assert s["voxel_count"] == rec["voxel_count"]
        assert np.linalg.norm(np.subtract(s["centre_ras"], rec["centre_ras"])) < 1e-3
    import pydicom

    seg = pydicom.dcmread(str(segs[0]))
    item = seg.SegmentSequence[0]
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"   # SCT haemorrhage
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "dark-spot"
    assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "0.0-test"
    assert seg.PatientID == "P1"
    # the report: count, table, embedded pictures, nothing from the network
    html = (out_d / "P1_7_SWI_cmb_report.html").read_text(encoding="utf-8")
    assert "Number of CMBs: 2" in html and "Patient ID" in html and "P1" in html
    assert "dark-spot" in html and "Boston criteria" in html and "MARS" in html
    pictures = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(pictures) == 2 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pictures)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)


def test_pseudonymised_names_and_report_keep_identifiers_out(tmp_path, dark_model, capsys):
    _, _, _, folder = _study(tmp_path, np.eye(3), name="Smith")
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--out", str(out), "--model", dark_model, "--report",
                 "--pseudonymise"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert all("Smith" not in n for n in names) and any(n.endswith("_cmb_report.html") for n in names)
    html = next(out.glob("*_cmb_report.html")).read_text(encoding="utf-8")
    assert "Smith" not in html and "withheld" in html


def test_dicom_seg_needs_dicom_input(tmp_path, dark_model, capsys):
    _, _, nifti, _ = _study(tmp_path, np.eye(3))
    assert main(["detect", str(nifti), "--out", str(tmp_path / "o"), "--model", dark_model, "--dicom-seg"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--dicom-seg needs DICOM input" in err[0]
    assert not (tmp_path / "o" / "P1_cmb.json").exists()


def test_batch_report_writes_cohort_summary(tmp_path, dark_model, capsys):
    _study(tmp_path, np.eye(3), name="A")
    _study(tmp_path, np.eye(3), name="B")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "A.nii.gz"), str(tmp_path / "B.nii.gz"), "--out", str(out),
                 "--model", dark_model, "--report"]) == 0
    html = (out / "cmb_report.html").read_text(encoding="utf-8")
    assert "2 studies, 2 processed, 4 CMBs in total" in html
    assert html.count("data:image/png;base64,") == 1   # the histogram
    assert (out / "A_cmb_report.html").is_file() and (out / "B_cmb_report.html").is_file()


def test_seg_and_report_from_annotation_findings(tmp_path):
    vol, centres, _, folder = _study(tmp_path, oblique(20.0))
    image, headers = read_series(scan_folder(folder)[0])
    mask = np.zeros(image.array.shape, np.int16)
    kji = [np.rint(image.ras_to_voxel(np.array([c]))[0][::-1]).astype(int) for c in centres]
    findings = []
    for n, (k, j, i) in enumerate(kji):
        label = 3 * n + 2    # annotation labels need not be 1..N
        mask[k, j - 1:j + 2, i - 1:i + 2] = label
        findings.append({"label": label, "centre_ras": image.kji_to_ras(np.array([[k, j, i]], float))[0].tolist(),
                         "certainty": "uncertain" if n else "certain", "review_status": "confirmed",
                         "location": "cortex_gwj" if n else "thalamus", "side": "left",
                         "mask": {"diameter_mm": 3.0, "volume_mm3": 14.0}})
    findings.append({"label": 9, "centre_ras": findings[0]["centre_ras"], "review_status": "rejected",
                     "certainty": "certain", "location": "frontal", "side": "right"})
    paths = write_study_extras(tmp_path / "o", "ann", image, image.with_array(mask), findings, report=True,
                               dicom_headers=headers, study={"name": "ann", "rater": "R1"}, source="annotation")
    segments = read_seg_segments(paths["seg"])
    assert [s["label"] for s in segments.values()] == ["CMB 2", "CMB 5"]   # the rejected one is left out
    for s, f in zip(segments.values(), findings):
        assert np.linalg.norm(np.subtract(s["centre_ras"], f["centre_ras"])) < 1e-3
    import pydicom

    assert pydicom.dcmread(str(paths["seg"])).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    html = Path(paths["report"]).read_text(encoding="utf-8")
    assert "Number of CMBs: 2</b> (1 definite, 1 possible); 1 rejected finding(s) not counted" in html
    assert "mixed distribution" in html and "rater R1" in html and "confirmed" in html


def _item(region, category, side="left", certainty=None, status=None):
    return {"centre_ras": [0, 0, 0], "location": region, "location_category": category, "side": side,
            "certainty": certainty, "review_status": status}


def test_distribution_pattern_and_table_counts():
    assert distribution_pattern(report_items([])) == "none"
    lobar = [_item("frontal", "lobar"), _item("occipital", "lobar", "right")]
    assert distribution_pattern(report_items(lobar)) == "strictly_lobar"
    deep = [_item("thalamus", "deep"), _item("brainstem", "infratentorial", "midline")]
    assert distribution_pattern(report_items(deep)) == "deep_infratentorial"
    assert distribution_pattern(report_items(lobar + deep)) == "mixed"
    assert distribution_pattern(report_items([_item("", "")])) == "unknown"
    rejected_deep = [dict(_item("thalamus", "deep"), review_status="rejected")]
    assert distribution_pattern(report_items(lobar + rejected_deep)) == "strictly_lobar"
    rows = region_table(report_items([_item("frontal", "lobar", certainty="certain"),
                                      _item("frontal", "lobar", certainty="uncertain"),
                                      _item("subcortical_wm", "", "right", certainty="certain"),
                                      _item("brainstem", "infratentorial", "midline")]))
    by = {(r["category"], r["region"], r["side"]): r for r in rows}
    assert (by[("lobar", "frontal", "left")]["definite"], by[("lobar", "frontal", "left")]["possible"]) == (1, 1)
    assert by[("lobar", "subcortical_wm", "right")]["total"] == 1
    assert by[("infratentorial", "brainstem", "midline")]["total"] == 1
    assert by[("lobar", "", "")]["total"] == 3 and by[("all", "", "")]["total"] == 4


def test_axial_crop_is_in_radiological_convention():
    a = np.zeros((5, 41, 41), np.float32)
    a[2, 20, 30] = 100.0        # i = 30: with direction diag(-1, 1, 1) that is x = -10 mm (patient's left)
    a[2, 30, 20] = 50.0         # j = 30: y = +10 mm (anterior)
    vol = Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([-1.0, 1.0, 1.0]))
    centre = vol.voxel_to_ras([20, 20, 2])
    crop = axial_crop(vol, centre, half_width_mm=15.0, pixel_mm=1.0)
    assert crop.shape == (31, 31)
    row, col = np.unravel_index(np.nanargmax(crop), crop.shape)
    assert (row, col) == (15, 25)          # patient's left -> right half of the picture
    rows, cols = np.nonzero(crop == 50.0)
    assert (rows[0], cols[0]) == (5, 15)   # anterior -> top half


def test_cmb_report_from_exported_annotation_of_a_dicom_series(tmp_path, capsys):
    vol, centres, _, folder = _study(tmp_path, oblique(10.0))
    image = read_series(scan_folder(folder)[0])[0]
    scribbles = np.zeros(image.array.shape, np.uint16)
    for n, c in enumerate(centres, start=1):
        k, j, i = np.rint(image.ras_to_voxel(np.array([c]))[0][::-1]).astype(int)
        scribbles[k, j, i] = n
    write_volume(image.with_array(scribbles), tmp_path / "scr.nii.gz")
    ds = tmp_path / "ds"
    assert main(["export", "--image", str(folder), "--scribbles", str(tmp_path / "scr.nii.gz"), "--out", str(ds),
                 "--subject", "01", "--no-location"]) == 0
    out = tmp_path / "rep"
    assert main(["report", "--dataset", str(ds), "--subject", "01", "--image", str(folder), "--out", str(out),
                 "--dicom-seg"]) == 0
    segments = read_seg_segments(out / "sub-01_cmb_seg.dcm")
    assert len(segments) == 2
    for s, c in zip(segments.values(), centres):
        assert np.linalg.norm(np.subtract(s["centre_ras"], c)) < 2.0
    html = (out / "sub-01_cmb_report.html").read_text(encoding="utf-8")
    assert "Number of CMBs: 2" in html and "rater annotation" in html and "unreviewed" in html
    # from detections, and the cohort page over a detect output folder
    det = tmp_path / "det"
    assert main(["report", "--cohort", str(tmp_path)]) == 2
    assert "no NAME_cmb.json" in capsys.readouterr().err
    assert main(["report", "--detections", str(det / "x_cmb.json"), "--image", str(folder), "--out", str(det)]) == 2


def test_detect_bad_or_ambiguous_dicom_is_one_line_and_the_batch_goes_on(tmp_path, dark_model, capsys):
    _, _, nifti, good = _study(tmp_path, np.eye(3))
    bad = tmp_path / "dicom" / "bad"
    paths = write_dicom_series(phantom([])[0], bad, series_description="SWI_bad", series_number=3)
    paths[5].unlink()
    two = tmp_path / "dicom2"
    write_dicom_series(phantom([])[0], two / "a", series_description="SWI", series_number=4, study_uid="1.2.3")
    write_dicom_series(phantom([])[0], two / "b", series_description="T2STAR", series_number=5, study_uid="1.2.3")
    out = tmp_path / "out"
    assert main(["detect", str(good), str(bad), str(two), "--out", str(out), "--model", dark_model]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and all(ln.startswith("cmb detect: error:") for ln in err), err
    assert any('series 3 "SWI_bad"' in ln and "1 slice(s) missing" in ln for ln in err)
    assert any("2 candidate series" in ln and "4 = SWI" in ln and "5 = T2STAR" in ln for ln in err)
    assert (out / "P1_7_SWI_cmb.json").is_file()


def _sitk_series(vol, folder):
    """Write `vol` as SimpleITK's DicomSeriesFromArray example does: per-slice StudyInstanceUIDs,
    no FrameOfReferenceUID, SliceThickness or SeriesNumber, SpacingBetweenSlices 1."""
    import SimpleITK as sitk

    from CMBLib.io import volume_to_sitk

    folder.mkdir(parents=True)
    img = volume_to_sitk(vol.with_array(np.rint(vol.array).astype(np.int16)))
    d = img.GetDirection()
    tags = [("0008|0008", "DERIVED\\SECONDARY"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.99"),
            ("0020|0037", "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
            ("0008|103e", "T2STAR"), ("0008|0060", "MR"), ("0010|0020", "PAT42")]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        for tag, value in tags:
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0013", str(k))
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(s)


def test_series_written_by_simpleitk_gives_the_nifti_cmbs_and_a_valid_seg(tmp_path, dark_model, capsys):
    vol, centres = phantom([SPOTS[1]], direction=oblique(-25.0) @ np.diag([-1.0, 1.0, 1.0]))
    vol = vol.with_array(np.rint(vol.array))
    write_volume(vol, tmp_path / "P.nii.gz")
    _sitk_series(vol, tmp_path / "sitk")
    assert main(["detect", str(tmp_path / "P.nii.gz"), "--out", str(tmp_path / "a"), "--model", dark_model]) == 0
    assert main(["detect", str(tmp_path / "sitk"), "--out", str(tmp_path / "b"), "--model", dark_model,
                 "--dicom-seg", "--dicom-sr", "--report"]) == 0
    ref = json.loads((tmp_path / "a" / "P_cmb.json").read_text(encoding="utf-8"))["cmbs"]
    got = json.loads(next((tmp_path / "b").glob("*_cmb.json")).read_text(encoding="utf-8"))["cmbs"]
    assert len(got) == len(ref) == 1
    assert np.linalg.norm(np.subtract(got[0]["centre_ras"], ref[0]["centre_ras"])) < 1e-3
    segs = list((tmp_path / "b").glob("*_cmb_seg.dcm"))
    assert len(segs) == 1
    seg = read_seg_segments(segs[0])[1]
    assert seg["referenced_series"] == ["1.2.826.0.1.3680043.2.1125.1.99"]
    assert np.linalg.norm(np.subtract(seg["centre_ras"], got[0]["centre_ras"])) < 1e-3

    # the TID 1500 SR: one volumetric group per CMB, measurements of its record, pointing at the SEG
    import highdicom as hd
    import pydicom

    sr = pydicom.dcmread(str(next((tmp_path / "b").glob("*_cmb_sr.dcm"))))
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr)
    groups = doc.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 1
    values = {m.name.meaning: m.value for m in groups[0].get_measurements()}
    assert values["Volume"] == pytest.approx(got[0]["volume_mm3"], rel=1e-4)
    assert values["Diameter"] == pytest.approx(got[0]["diameter_mm"], rel=1e-4)
    assert str(pydicom.dcmread(str(segs[0])).SOPInstanceUID) in str(sr.ContentSequence)
