"""`cmb benchmark valdo|cuhk`: release layouts, the CUHK index convention, known answers, resuming, bad input.

The synthetic releases (Testing/benchmark_fixtures.py) have the releases' file names,
spacings, a radiological orientation and the CUHK 1-based (i, j, k) centre lists; dark
spots placed by hand are what the dark-spot test model finds, one spot is no CMB (a false
positive) and one CMB has no spot (a miss).
"""
import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmark_fixtures import (  # noqa: E402
    CUHK_EXPECTED,
    CUHK_SPACING,
    CUHK_SUBJECTS,
    VALDO_EXPECTED,
    inner_brain_mask,
    write_cuhk,
    write_valdo,
)
from detection_fixtures import use_dark_spot_model  # noqa: E402

from CMBLib.benchmark import datasets  # noqa: E402
from CMBLib.benchmark.datasets import (  # noqa: E402
    cuhk_reference_ijk,
    find_subjects,
    read_cuhk_mat,
    subject_series,
    valdo_cohort,
    valdo_subjects,
)
from CMBLib.cli import main  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402
from CMBLib.io import read_volume  # noqa: E402


def _run(argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _rows(path):
    with open(path, newline="") as fh:
        return {r["subject"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def valdo(tmp_path_factory):
    """One benchmark run on the synthetic VALDO release (shared by the tests below)."""
    root = tmp_path_factory.mktemp("valdo")
    with pytest.MonkeyPatch.context() as mp:
        model = use_dark_spot_model(mp)
        inner_brain_mask(mp)
        data = write_valdo(root / "Task2")
        out = root / "report"
        rc, stdout, stderr = _run(["benchmark", "valdo", str(data), "--out", str(out), "--model", model,
                                   "--device", "cpu"])
    return {"data": data, "out": out, "rc": rc, "stdout": stdout, "stderr": stderr, "model": model}


def test_valdo_known_answers(valdo):
    out = valdo["out"]
    assert valdo["rc"] == 0, valdo["stderr"]
    m = json.loads((out / "metrics.json").read_text())
    assert list(m)[list(m).index("tp"):list(m).index("tp") + 3] == ["tp", "fp", "fn"]   # as cmb evaluate writes
    assert {k: m[k] for k in ("tp", "fp", "fn")} == VALDO_EXPECTED
    assert m["n_cases"] == 3 and m["rule"] == "valdo" and m["distance_mm"] == 5.0
    assert m["sensitivity"] == pytest.approx(0.75) and m["precision"] == pytest.approx(0.75)
    assert m["fp_per_subject"] == pytest.approx(1 / 3)
    # sizes of the reference masks: 1.0 mm ball on 4 mm slices (missed), 1.8 mm ball at 0.8 mm,
    # 2.0 mm ball on 3 mm slices, 2.5 mm ball on 4 mm slices (equivalent diameters of the components)
    sizes = {k: (v["n_ref"], v["tp"], v["fn"]) for k, v in m["by_size_mm"].items()}
    assert sizes == {"<3mm": (1, 0, 1), "3-4mm": (1, 1, 0), "4-5mm": (1, 1, 0), ">=5mm": (1, 1, 0)}
    cohorts = {k: (v["tp"], v["fp"], v["fn"], v["subjects"]) for k, v in m["by_cohort"].items()}
    assert cohorts == {"1": (1, 1, 1, ["sub-101"]), "2": (1, 0, 0, ["sub-201"]), "3": (1, 0, 0, ["sub-301"])}
    assert m["cohorts"]["inferred_from"] == "the T2S voxel grid"
    assert {k: v["subjects"] for k, v in m["by_slice_thickness"].items()} == {
        "0.8 mm": ["sub-201"], "3.0 mm": ["sub-301"], "4.0 mm": ["sub-101"]}
    assert {k: v["subjects"] for k, v in m["by_subject_series"].items()} == {
        "sub-1NN": ["sub-101"], "sub-2NN": ["sub-201"], "sub-3NN": ["sub-301"]}
    # the subject without its label map is listed, not scored
    assert m["skipped_subjects"] == [{"subject": "sub-302", "status": "skipped",
                                      "reason": "missing sub-302_space-T2S_CMB.nii.gz"}]
    assert "sub-302: skipped (missing sub-302_space-T2S_CMB.nii.gz)" in valdo["stderr"]
    rows = _rows(out / "per_subject.csv")
    assert [rows[s]["status"] for s in ("sub-101", "sub-201", "sub-301", "sub-302")] == ["scored"] * 3 + ["skipped"]
    assert (rows["sub-101"]["tp"], rows["sub-101"]["fp"], rows["sub-101"]["fn"], rows["sub-101"]["cohort"]) == \
        ("1", "1", "1", "1")
    assert "TP 3  FP 1  FN 1" in valdo["stdout"]


def test_valdo_froc_and_report(valdo):
    out = valdo["out"]
    m = json.loads((out / "metrics.json").read_text())
    fr = m["froc"]
    assert fr["thresholds"][0] == 0.95 and fr["thresholds"][-1] == 0.05 and 0.5 in fr["thresholds"]
    # spots score ~0.92 (4 mm slices) and 1.0: at 0.95 only the two thin-slice CMBs remain, below
    # it every CMB the model can see (3 of 4) and the false positive
    assert fr["sensitivity"][0] == 0.5 and fr["fp_per_subject"][0] == 0.0
    at_op = fr["thresholds"].index(0.5)
    assert fr["sensitivity"][at_op] == m["sensitivity"] and fr["fp_per_subject"][at_op] == m["fp_per_subject"]
    assert fr["cpm"] == pytest.approx((2 * 0.5 + 5 * 0.75) / 7)
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert "sub-302" in page and "inferred from the T2S voxel grid" in page
    for name in ("per_case.csv", "per_cmb.csv", "summary.md", "benchmark.json"):
        assert (out / name).is_file(), name
    det = out / "detections"
    assert (det / "sub-101_space-T2S_desc-masked_T2S_cmb_prob.nii.gz").is_file()


def test_valdo_agrees_with_cmb_evaluate(valdo, tmp_path):
    """The operating point is `cmb evaluate` on the detection masks against the label maps."""
    refs = sorted(str(p) for p in Path(valdo["data"]).glob("sub-*/sub-*_space-T2S_CMB.nii.gz"))
    rc, _, err = _run(["evaluate", "--pred", str(valdo["out"] / "detections"), "--ref", *refs,
                       "--out", str(tmp_path / "ev")])
    assert rc == 0, err
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    m = json.loads((valdo["out"] / "metrics.json").read_text())
    assert (ev["tp"], ev["fp"], ev["fn"]) == (m["tp"], m["fp"], m["fn"])


def test_valdo_resumes_and_refuses_other_settings(valdo, monkeypatch):
    from CMBLib.detection import pipeline

    def no_detection(*args, **kwargs):
        raise AssertionError("detection ran again")

    monkeypatch.setattr(pipeline, "detect", no_detection)
    use_dark_spot_model(monkeypatch)
    out = valdo["out"]
    before = json.loads((out / "metrics.json").read_text())
    rc, stdout, stderr = _run(["benchmark", "valdo", str(valdo["data"]), "--out", str(out),
                               "--model", valdo["model"], "--device", "cpu"])
    assert rc == 0, stderr
    assert stderr.count("(detections reused)") == 3
    after = json.loads((out / "metrics.json").read_text())
    assert (after["tp"], after["fp"], after["fn"], after["froc"]) == (before["tp"], before["fp"], before["fn"],
                                                                      before["froc"])
    # another threshold into the same folder: refused, one line, nothing changed
    listing = sorted(p.name for p in out.rglob("*"))
    rc, stdout, stderr = _run(["benchmark", "valdo", str(valdo["data"]), "--out", str(out),
                               "--model", valdo["model"], "--threshold", "0.3"])
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("cmb benchmark: error:") and "threshold" in lines[0]
    assert sorted(p.name for p in out.rglob("*")) == listing


def test_cuhk_known_answers_and_limit(tmp_path, monkeypatch):
    model = use_dark_spot_model(monkeypatch)
    inner_brain_mask(monkeypatch)
    data = write_cuhk(tmp_path / "cuhk")
    out = tmp_path / "report"
    rc, stdout, stderr = _run(["benchmark", "cuhk", str(data), "--out", str(out), "--model", model,
                               "--device", "cpu"])
    assert rc == 0, stderr
    m = json.loads((out / "metrics.json").read_text())
    assert {k: m[k] for k in ("tp", "fp", "fn")} == CUHK_EXPECTED
    assert m["by_size_mm"] is None and m["by_size_class"] is None      # centre lists carry no size
    assert m["skipped_subjects"] == [{"subject": "03", "status": "skipped",
                                      "reason": "missing 03.nii or 03.nii.gz (SWI image)"}]
    assert list(m["by_slice_thickness"]) == ["2.0 mm"]
    # the reference CMBs of per_cmb.csv sit at cen - 1, (i, j, k)
    with open(out / "per_cmb.csv", newline="") as fh:
        refs = [(r["case"], float(r["i"]), float(r["j"]), float(r["k"]), r["status"])
                for r in csv.DictReader(fh) if r["kind"] == "reference"]
    want = [("01", 45.0, 58.0, 12.0, "TP"), ("01", 60.0, 66.0, 12.0, "FN"), ("02", 62.0, 38.0, 11.0, "TP")]
    assert refs == want
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "centre points without masks" in page

    # --limit 1 on a new folder: the first subject only
    rc, stdout, stderr = _run(["benchmark", "cuhk", str(data), "--out", str(tmp_path / "quick"), "--model", model,
                               "--device", "cpu", "--limit", "1"])
    assert rc == 0, stderr
    q = json.loads((tmp_path / "quick" / "metrics.json").read_text())
    assert (q["n_cases"], q["tp"], q["fp"], q["fn"]) == (1, 1, 1, 1)
    assert q["benchmark"]["limit"] == 1 and q["benchmark"]["n_subjects_listed"] == 3


def test_cuhk_index_convention_on_an_asymmetric_grid(tmp_path):
    """cen holds 1-based (i, j, k) in the NIfTI array order nibabel and MATLAB use; CMBLib's
    arrays are [k, j, i].  The spots are where cen - 1 points, not where the swapped order does."""
    nib = pytest.importorskip("nibabel")
    data = write_cuhk(tmp_path / "cuhk", orphan_mat=None)
    spec = CUHK_SUBJECTS["01"]
    path = data / "01.nii"
    vol = read_volume(path)
    assert vol.shape_ijk == spec["shape"] and len(set(spec["shape"])) == 3
    assert vol.spacing == pytest.approx(CUHK_SPACING)
    ijk = cuhk_reference_ijk(data / "01.mat", vol.shape_ijk)
    assert ijk.tolist() == [list(map(float, c)) for c in spec["cen_ijk"]]
    cen, gt_num = read_cuhk_mat(data / "01.mat")
    assert gt_num == 2 and cen.tolist() == [[46.0, 59.0, 13.0], [61.0, 67.0, 13.0]]
    arr = np.asarray(nib.load(str(path)).dataobj)        # nibabel (= MATLAB) order: [i, j, k]
    assert arr.shape == spec["shape"]
    i, j, k = (int(v) for v in cen[0] - 1)
    assert arr[i, j, k] == 30.0 and vol.array[k, j, i] == 30.0          # the spot, both ways
    assert arr[j, i, k] != 30.0 and vol.array[k, i, j] != 30.0          # the swapped order misses it
    # and its RAS position is the same through nibabel's affine (RAS) and CMBLib's geometry
    assert np.allclose(vol.voxel_to_ras(ijk[0]), (nib.load(str(path)).affine @ [i, j, k, 1])[:3], atol=1e-4)


def test_layout_errors_write_nothing(tmp_path, monkeypatch):
    use_dark_spot_model(monkeypatch)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("hello")
    (odd / "sub-01").mkdir()
    for dataset in ("valdo", "cuhk"):
        out = tmp_path / f"out_{dataset}"
        rc, stdout, stderr = _run(["benchmark", dataset, str(odd), "--out", str(out), "--model", "dark-spot"])
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
        assert lines[0].startswith("cmb benchmark: error:") and f"not the {dataset.upper()} release layout" in lines[0]
        assert not out.exists()
    rc, _, stderr = _run(["benchmark", "valdo", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "no such folder" in stderr and not (tmp_path / "o").exists()
    # each layout named under the other command: the message says which command fits
    cuhk = write_cuhk(tmp_path / "c", subjects={"07": dict(CUHK_SUBJECTS["02"], shape=(20, 18, 8),
                                                            spots=[], cen_ijk=[])})
    rc, _, stderr = _run(["benchmark", "valdo", str(cuhk), "--out", str(tmp_path / "o")])
    assert rc == 2 and "use `cmb benchmark cuhk`" in stderr and not (tmp_path / "o").exists()


def test_out_folder_with_other_files_is_refused(tmp_path, monkeypatch):
    use_dark_spot_model(monkeypatch)
    cuhk = write_cuhk(tmp_path / "c", subjects={"07": dict(CUHK_SUBJECTS["02"], shape=(20, 18, 8),
                                                            spots=[], cen_ijk=[])})
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    rc, _, stderr = _run(["benchmark", "cuhk", str(cuhk), "--out", str(out), "--model", "dark-spot"])
    assert rc == 2 and "holds other files" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_valdo_subjects_and_cohorts(tmp_path):
    for sub, files in {"sub-101": ("T2S", "CMB"), "sub-205": ("CMB",), "sub-310": ("T2S",)}.items():
        (tmp_path / sub).mkdir()
        for f in files:
            name = f"{sub}_space-T2S_CMB.nii.gz" if f == "CMB" else f"{sub}_space-T2S_desc-masked_T2S.nii.gz"
            (tmp_path / sub / name).write_bytes(b"")
    (tmp_path / "derivatives").mkdir()
    subs = {s.name: s.problem for s in valdo_subjects(tmp_path)}
    assert subs == {"sub-101": "", "sub-205": "missing sub-205_space-T2S_desc-masked_T2S.nii.gz",
                    "sub-310": "missing sub-310_space-T2S_CMB.nii.gz"}
    assert [s.name for s in find_subjects("valdo", tmp_path)] == ["sub-101", "sub-205", "sub-310"]
    assert valdo_cohort((0.45, 0.45, 4.0)) == "1" and valdo_cohort((0.49, 0.49, 0.8)) == "2"
    assert valdo_cohort((1.0, 1.0, 3.0)) == "3" and valdo_cohort((1.0, 1.0, 4.0)) == "3"
    assert valdo_cohort((4.0, 0.45, 0.45)) == "1"          # slice axis not last
    assert subject_series("sub-101") == "sub-1NN" and subject_series("sub-12") == ""
    assert set(datasets.COHORTS) == {"1", "2", "3"}


def test_cuhk_mat_problems(tmp_path, monkeypatch):
    import scipy.io

    def mat(name, **variables):
        p = tmp_path / name
        scipy.io.savemat(str(p), variables)
        return p

    assert cuhk_reference_ijk(mat("1.mat", cen=np.zeros((0, 3)), gt_num=0.0), (10, 10, 10)).shape == (0, 3)
    with pytest.raises(CMBError, match="gt_num is 3 but cen lists 1"):
        cuhk_reference_ijk(mat("2.mat", cen=np.array([[2.0, 3.0, 4.0]]), gt_num=3.0), (10, 10, 10))
    with pytest.raises(CMBError, match="below 1; the release's indices are 1-based"):
        cuhk_reference_ijk(mat("3.mat", cen=np.array([[0.0, 3.0, 4.0]]), gt_num=1.0), (10, 10, 10))
    with pytest.raises(CMBError, match=r"lies outside the image of \(10, 20, 5\) voxels"):
        cuhk_reference_ijk(mat("4.mat", cen=np.array([[2.0, 12.0, 7.0]])), (10, 20, 5))  # j <= 20, k > 5
    with pytest.raises(CMBError, match="no variable 'cen'"):
        read_cuhk_mat(mat("5.mat", centres=np.ones((1, 3))))
    with pytest.raises(CMBError, match="expected N x 3"):
        read_cuhk_mat(mat("6.mat", cen=np.ones((2, 4))))
    # a MATLAB v7.3 file is HDF5: a clear message when h5py is not installed
    v73 = tmp_path / "7.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema "
                    .ljust(128, b" ") + b"\x00" * 512)
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(CMBError, match=r"MATLAB v7.3 \(HDF5\) file.*install h5py.*-v7"):
        read_cuhk_mat(v73)


def test_cuhk_subject_with_a_bad_mat_is_skipped_others_scored(tmp_path, monkeypatch):
    import scipy.io

    model = use_dark_spot_model(monkeypatch)
    inner_brain_mask(monkeypatch)
    data = write_cuhk(tmp_path / "cuhk", subjects={"02": CUHK_SUBJECTS["02"]}, orphan_mat=None)
    shape = CUHK_SUBJECTS["02"]["shape"]
    # 05: centre given in the wrong (k, j, i) order -> outside the image
    write_cuhk(tmp_path / "tmp5", subjects={"05": CUHK_SUBJECTS["02"]}, orphan_mat=None)
    (tmp_path / "tmp5" / "05.nii.gz").rename(data / "05.nii.gz")
    scipy.io.savemat(str(data / "05.mat"), {"cen": np.array([[12.0, 40.0, float(shape[0] - 5)]]), "gt_num": 1.0})
    rc, stdout, stderr = _run(["benchmark", "cuhk", str(data), "--out", str(tmp_path / "r"), "--model", model,
                               "--device", "cpu", "--quiet"])
    assert rc == 0, stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (m["n_cases"], m["tp"], m["fp"], m["fn"]) == (1, 1, 0, 0)
    [skip] = m["skipped_subjects"]
    assert skip["subject"] == "05" and "lies outside the image" in skip["reason"] and "(i, j, k)" in skip["reason"]
    assert "05: skipped" in stderr and "02:" not in stderr        # --quiet: only skipped subjects
