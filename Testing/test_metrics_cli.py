"""`cmb evaluate` end to end on temporary files, and file pairing."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from CMBLib.cli import main
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.io import write_volume
from CMBLib.metrics.pairing import case_key, pair_files, read_sidecar

SPACING = (0.5, 0.5, 2.0)
ORIGIN = (-10.0, 20.0, 5.0)


def save(path, array, spacing=SPACING, origin=ORIGIN):
    write_volume(Volume(array, spacing, origin), path)
    return path


def mask(*voxels, value=1, dtype=np.uint8):
    a = np.zeros((10, 30, 30), dtype)
    for kji in voxels:
        a[kji] = value
    return a


@pytest.fixture
def study(tmp_path):
    """Three references; predictions for two, named in different ways, plus a stray one."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    # sub-101: 2 CMBs; prediction finds one (4.5 mm off along i), one duplicate, one FP.
    save(ref / "sub-101.nii.gz", mask((5, 10, 10), (5, 20, 20), value=255))
    p = mask((5, 10, 19), value=1, dtype=np.int16) + mask((5, 12, 10), value=2, dtype=np.int16) \
        + mask((1, 1, 1), value=3, dtype=np.int16)
    save(pred / "sub-101_cmb_mask.nii.gz", p)
    (pred / "sub-101_cmb.json").write_text(json.dumps({"format_version": "1.0", "cmbs": [
        {"label": 1, "max_probability": 0.9, "location": "lobar"},
        {"label": 2, "max_probability": 0.8},
        {"label": 3, "max_probability": 0.4}]}), encoding="utf-8")
    # sub-102_ses-1: 1 CMB, found by a prediction named after the subject and session only.
    save(ref / "sub-102_ses-1_desc-cmb_dseg.nii.gz", mask((3, 15, 15)))
    save(pred / "sub-102_ses-1_T2S_pred.nii.gz", mask((3, 15, 16)))
    # sub-103: 1 CMB, no prediction at all.
    save(ref / "sub-103_CMB.nii.gz", mask((7, 7, 7)))
    # A prediction without reference.
    save(pred / "sub-999_cmb_mask.nii.gz", mask((2, 2, 2)))
    return tmp_path


def test_case_keys_and_pairing(study):
    assert case_key("a/sub-1_T2S_cmb_mask.nii.gz") == "sub-1_T2S"
    assert case_key("NAME_CMB.nii.gz") == "NAME"
    assert case_key("x/sub-2_desc-cmb_dseg.nii.gz") == "sub-2"
    refs = sorted((study / "ref").iterdir())
    preds = sorted(p for p in (study / "pred").iterdir() if p.name.endswith(".nii.gz"))
    cases, unpaired = pair_files(preds, refs)
    got = {c["case"]: (c["pred"].name if c["pred"] else None) for c in cases}
    assert got == {"sub-101": "sub-101_cmb_mask.nii.gz",
                   "sub-102_ses-1": "sub-102_ses-1_T2S_pred.nii.gz",
                   "sub-103": None}
    assert [p.name for p in unpaired] == ["sub-999_cmb_mask.nii.gz"]
    scores, locations = read_sidecar(study / "pred" / "sub-101_cmb_mask.nii.gz")
    assert scores == {1: 0.9, 2: 0.8, 3: 0.4} and locations == {1: "lobar"}


def test_same_file_name_wins_and_ambiguity_is_refused(tmp_path):
    refs = [tmp_path / "case1.nii.gz"]
    assert pair_files([tmp_path / "case1.nii.gz", tmp_path / "case1_pred.nii.gz"], refs)[0][0]["pred"].name \
        == "case1.nii.gz"
    with pytest.raises(CMBError, match="several"):
        pair_files([tmp_path / "sub-1_a_pred.nii.gz", tmp_path / "sub-1_b_pred.nii.gz"], [tmp_path / "sub-1.nii.gz"])


def test_cli_end_to_end(study, capsys):
    out = study / "report"
    rc = main(["evaluate", "--pred", str(study / "pred"), "--ref", str(study / "ref"),
               "--rule", "valdo", "--distance-mm", "5", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "TP 2  FP 2  FN 2" in printed.out
    assert "sub-103" in printed.err and "sub-999" in printed.err
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    # sub-101: label 2 (1 mm) is the TP on CMB 1, label 1 (4.5 mm) a duplicate FP, label 3 an FP,
    # CMB 2 an FN.  sub-102: TP (0.5 mm).  sub-103: FN (no prediction).
    assert (doc["tp"], doc["fp"], doc["fn"]) == (2, 2, 2)
    assert doc["missing_prediction_cases"] == ["sub-103"]
    assert [Path(p).name for p in doc["unpaired_predictions"]] == ["sub-999_cmb_mask.nii.gz"]
    assert doc["froc"] is None                              # sub-102 has no scores
    with open(out / "per_case.csv", newline="", encoding="utf-8") as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    assert rows["sub-101"]["tp"] == "1" and rows["sub-101"]["fp"] == "2" and rows["sub-101"]["fn"] == "1"
    assert rows["sub-103"]["missing_prediction"] == "True" and rows["sub-103"]["precision"] == ""
    with open(out / "per_cmb.csv", newline="", encoding="utf-8") as fh:
        cmbs = list(csv.DictReader(fh))
    assert len(cmbs) == 2 + 3 + 1 + 1 + 1
    lobar = [c for c in cmbs if c["location"] == "lobar"]
    assert len(lobar) == 1 and lobar[0]["score"] == "0.9"
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "Missing predictions" in summary and "sub-103" in summary
    # An existing report is not overwritten silently.
    rc = main(["evaluate", "--pred", str(study / "pred"), "--ref", str(study / "ref"), "--out", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["evaluate", "--pred", str(study / "pred"), "--ref", str(study / "ref"), "--out", str(out),
               "--overwrite", "--rule", "touch", "--quiet"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert doc["rule"] == "touch" and (doc["tp"], doc["fp"], doc["fn"]) == (0, 4, 4)


def test_cli_single_files_probability_map_and_froc(tmp_path, capsys):
    ref = save(tmp_path / "case_CMB.nii.gz", mask((5, 10, 10), (5, 20, 20)))
    prob = np.zeros((10, 30, 30), np.float32)
    prob[5, 10, 11] = 0.95
    prob[5, 20, 21] = 0.55
    prob[2, 2, 2] = 0.7
    pred = save(tmp_path / "case_cmb_prob.nii.gz", prob)
    out = tmp_path / "rep"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (doc["tp"], doc["fp"], doc["fn"]) == (2, 1, 0)
    assert doc["froc"]["thresholds"] == pytest.approx([0.95, 0.7, 0.55])
    assert doc["froc"]["sensitivity"] == [0.5, 0.5, 1.0]
    assert (out / "froc.png").stat().st_size > 1000


def test_cli_geometry_mismatch_is_one_line(tmp_path, capsys):
    save(tmp_path / "r" / "sub-1.nii.gz", mask((5, 10, 10)))
    save(tmp_path / "p" / "sub-1.nii.gz", mask((5, 10, 10)), spacing=(1.0, 1.0, 2.0))
    rc = main(["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "sub-1" in err and "spacing" in err


def test_cli_missing_reference_folder(tmp_path, capsys):
    rc = main(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such file" in capsys.readouterr().err


def test_bids_derivatives_tree_as_reference(tmp_path, capsys):
    """Exported dataset layout: one folder per subject, scribbles and .seg.nrrd beside the mask."""
    anat = tmp_path / "derivatives" / "cmb" / "sub-1" / "anat"
    save(anat / "sub-1_desc-cmb_dseg.nii.gz", mask((5, 10, 10), value=2))
    save(anat / "sub-1_desc-scribbles_dseg.nii.gz", mask((5, 10, 10), (1, 1, 1), value=2))
    save(anat / "sub-1_desc-cmb_dseg.nrrd", mask((5, 10, 10), value=2))
    (anat / "sub-1_desc-cmb_annotation.json").write_text(json.dumps(
        {"findings": [{"label": 2, "location": "thalamus"}]}), encoding="utf-8")
    pred = tmp_path / "pred"
    save(pred / "sub-1_T2S.nii.gz", np.ones((10, 30, 30), np.float32))        # the input image
    save(pred / "sub-1_T2S_cmb_mask.nii.gz", mask((5, 10, 11)))
    out = tmp_path / "rep"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "derivatives"),
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert doc["n_cases"] == 1 and (doc["tp"], doc["fp"], doc["fn"]) == (1, 0, 0)
    assert doc["by_location"]["thalamus"]["tp"] == 1
    assert doc["cases"][0]["pred_file"].endswith("sub-1_T2S_cmb_mask.nii.gz")


def test_cli_on_a_real_scan_grid(shared_data, tmp_path):
    """Masks on the grid of a real QSM scan (1.06 x 1.06 x 1.07 mm): physical distances."""
    from CMBLib.io import read_volume

    grid = read_volume(shared_data / "real" / "qsm2016" / "chi_cosmos.nii.gz")
    ref = np.zeros(grid.array.shape, np.uint8)
    pred = np.zeros(grid.array.shape, np.uint8)
    centres = [(80, 80, 80), (60, 100, 90), (100, 60, 70)]        # (k, j, i)
    for k, j, i in centres:
        ref[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 1
    pred[80 - 1:80 + 2, 80 - 1:80 + 2, 84 - 1:84 + 2] = 1         # 4 voxels = 4.24 mm along i: TP
    pred[60 - 1:60 + 2, 100 - 1:100 + 2, 95 - 1:95 + 2] = 1       # 5 voxels = 5.3 mm: FP + FN
    write_volume(grid.with_array(ref), tmp_path / "r" / "qsm.nii.gz")
    write_volume(grid.with_array(pred), tmp_path / "p" / "qsm_cmb_mask.nii.gz")
    out = tmp_path / "o"
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--ref", str(tmp_path / "r"),
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (doc["tp"], doc["fp"], doc["fn"]) == (1, 1, 2)
    with open(out / "per_cmb.csv", newline="", encoding="utf-8") as fh:
        tp = [r for r in csv.DictReader(fh) if r["kind"] == "prediction" and r["status"] == "TP"]
    assert float(tp[0]["distance_mm"]) == pytest.approx(4 * grid.spacing[0], abs=1e-3)


def test_two_named_files_pair_whatever_their_names(tmp_path, capsys):
    """`--pred det/x_cmb_mask.nii.gz --ref y_truth_mask.nii.gz`: the user said which two files to compare."""
    ref = save(tmp_path / "reader_A_final.nii.gz", mask((5, 10, 10), (5, 20, 20)))
    pred = save(tmp_path / "det" / "demo_T2S_cmb_mask.nii.gz", mask((5, 10, 11), (1, 1, 1), dtype=np.int16))
    out = tmp_path / "rep"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--quiet"]) == 0
    assert "TP 1  FP 1  FN 1" in capsys.readouterr().out
    # a folder is not an explicit choice: there names must pair, and here none does
    rc = main(["evaluate", "--pred", str(tmp_path / "det"), "--ref", str(ref), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no prediction pairs" in err and "reader_A_final" in err
    assert not (tmp_path / "r2").exists()


def test_nothing_pairs_is_an_error_not_a_zero_score(tmp_path, capsys):
    save(tmp_path / "ref" / "sub-1_CMB.nii.gz", mask((5, 10, 10)))
    save(tmp_path / "ref" / "sub-2_CMB.nii.gz", mask((5, 10, 10)))
    save(tmp_path / "pred" / "case7_cmb_mask.nii.gz", mask((5, 10, 10)))
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
               "--out", str(tmp_path / "rep"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no prediction pairs" in err and "case7_cmb_mask" in err
    (tmp_path / "empty").mkdir()
    rc = main(["evaluate", "--pred", str(tmp_path / "empty"), "--ref", str(tmp_path / "ref"),
               "--out", str(tmp_path / "rep")])
    assert rc == 2 and "no prediction files" in capsys.readouterr().err


def test_unpaired_files_are_reported_even_when_quiet(study, capsys):
    rc = main(["evaluate", "--pred", str(study / "pred"), "--ref", str(study / "ref"),
               "--out", str(study / "rep"), "--quiet"])
    printed = capsys.readouterr()
    assert rc == 0 and printed.out.count("\n") == 1  # --quiet: one result line ...
    lines = printed.err.splitlines()                 # ... and the unpaired files, one line each
    assert len(lines) == 2
    assert "sub-103_CMB.nii.gz has no prediction" in lines[0] and "false negatives" in lines[0]
    assert "sub-999_cmb_mask.nii.gz has no reference" in lines[1]


def test_demo_truth_mask_pairs_with_the_detection(tmp_path):
    """`cmb demo` writes NAME_truth_mask beside NAME_cmb_mask: the two pair by case name."""
    assert case_key("demo_T2S_truth_mask.nii.gz") == case_key("demo_T2S_cmb_mask.nii.gz") == "demo_T2S"
