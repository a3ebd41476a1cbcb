"""`cmb detect`, `cmb models`, `cmb demo`: outputs, batch behaviour and one-line errors."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from detection_fixtures import (  # noqa: E402
    exact_brain_mask,
    oblique,
    phantom,
    tiny_model_folder,
)

from CMBLib.cli import main  # noqa: E402
from CMBLib.detection import model_io  # noqa: E402
from CMBLib.geometry import Volume  # noqa: E402
from CMBLib.io import read_volume, write_volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPOTS = [((30, 40, 10), 1.6), ((60, 55, 13), 3.5)]


@pytest.fixture(autouse=True)
def _true_brain(monkeypatch):
    exact_brain_mask(monkeypatch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(tiny_model_folder(tmp_path_factory.mktemp("model") / "tiny"))


def _study(folder, name, seed=0, **kw):
    vol, centres = phantom(SPOTS, seed=seed, **kw)
    path = Path(folder) / f"{name}.nii.gz"
    write_volume(vol, path)
    return path, centres


def _one_error_line(capsys, what=""):
    captured = capsys.readouterr()
    err = captured.err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, (what, err, captured.out)
    assert lines[0].startswith("cmb detect: error:") and "Traceback" not in err
    return lines[0]


def test_outputs_are_on_the_input_grid_and_json_matches_mask(tmp_path, dark_model, capsys):
    img, centres = _study(tmp_path, "sub-01_T2S", direction=oblique(15.0))
    out = tmp_path / "out"
    assert main(["detect", str(img), "--out", str(out), "--model", dark_model]) == 0
    printed = capsys.readouterr().out
    assert "sub-01_T2S: 2 CMB candidate(s)" in printed
    image = read_volume(img)
    mask = read_volume(out / "sub-01_T2S_cmb_mask.nii.gz")
    assert mask.same_geometry(image, tol_mm=1e-4)
    doc = json.loads((out / "sub-01_T2S_cmb.json").read_text(encoding="utf-8"))
    assert doc["format"] == "cmb-detections" and doc["format_version"] == "1.0"
    assert doc["model"]["name"] == "dark-spot" and doc["threshold"] == 0.5 and doc["device"] == "cpu"
    assert doc["cmb_count"] == 2 and "total" in doc["timings_s"]
    for rec in doc["cmbs"]:
        kji = np.argwhere(mask.array == rec["label"]).mean(axis=0)
        assert rec["centre_ras"] == pytest.approx(mask.kji_to_ras(kji), abs=2e-3)
        assert rec["centre_ijk"] == pytest.approx(kji[::-1], abs=2e-3)
        assert min(np.linalg.norm(np.subtract(rec["centre_ras"], c)) for c in centres) < 1.0
    rows = (out / "sub-01_T2S_cmb.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("label,x_ras,y_ras,z_ras,i,j,k") and len(rows) == 3
    assert float(rows[1].split(",")[1]) == pytest.approx(doc["cmbs"][0]["centre_ras"][0])
    summary = (out / "cmb_summary.csv").read_text(encoding="utf-8").splitlines()
    assert summary[0].startswith("study,status,cmb_count,n_<5mm,n_5-10mm,n_>10mm")
    assert summary[1].startswith("sub-01_T2S,ok,2,1,1,0")


def test_folder_batch_skip_existing_overwrite_and_bad_study(tmp_path, dark_model, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    for n in range(2):
        _study(inp, f"s{n}", seed=n)
    (inp / "s2.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["detect", str(inp), "--out", str(out), "--model", dark_model]) == 2
    line = _one_error_line(capsys)
    assert "s2.nii.gz" in line and "cannot be read" in line
    assert (out / "s0_cmb.json").exists() and (out / "s1_cmb.json").exists()
    summary = (out / "cmb_summary.csv").read_text(encoding="utf-8")
    assert "s2,failed" in summary and "s0,ok,2" in summary
    stamp = (out / "s0_cmb.json").stat().st_mtime_ns
    (inp / "s2.nii.gz").unlink()
    assert main(["detect", str(inp), "--out", str(out), "--model", dark_model]) == 0
    assert "s0: skipped" in capsys.readouterr().out
    assert (out / "s0_cmb.json").stat().st_mtime_ns == stamp
    assert main(["detect", str(inp), "--out", str(out), "--model", dark_model, "--overwrite"]) == 0
    assert (out / "s0_cmb.json").stat().st_mtime_ns != stamp


def test_folder_skips_label_maps_and_own_outputs_with_a_note(tmp_path, dark_model, capsys):
    """A study folder also holds masks: the demo's truth mask, a grown mask, earlier detections."""
    inp = tmp_path / "in"
    img, _ = _study(inp, "sub-01_T2S")
    grid = read_volume(img)
    labels = np.zeros(grid.array.shape, np.int16)
    labels[10, 30:34, 40:44] = 1
    labels[13, 55:58, 60:63] = 2
    write_volume(grid.with_array(labels), inp / "lesions.nii.gz")               # a label map, any name
    write_volume(grid.with_array(labels.astype(np.float32)), inp / "mask_float.nii.gz")  # saved as float
    write_volume(grid.with_array(labels), inp / "sub-01_T2S_truth_mask.nii.gz")  # the demo's truth mask
    assert main(["detect", str(inp), "--out", str(inp), "--model", dark_model]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and "skipping 1 CMB mask(s)" in printed.err  # by name, unread
    assert "sub-01_T2S_truth_mask.nii.gz" in printed.err
    for name in ("lesions", "mask_float"):                                           # by their values
        assert f"{name}: skipped (a label map (mask), not an image)" in printed.out
    assert sorted(p.name for p in inp.glob("*_cmb.json")) == ["sub-01_T2S_cmb.json"]
    summary = (inp / "cmb_summary.csv").read_text(encoding="utf-8")
    assert "lesions,skipped" in summary and "sub-01_T2S,ok,2" in summary
    # a second run over the same folder also passes over the detection output just written
    assert main(["detect", str(inp), "--out", str(inp), "--model", dark_model, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "skipping 2 CMB mask(s)" in err and "sub-01_T2S_cmb_mask.nii.gz" in err
    assert sorted(p.name for p in inp.glob("*_cmb.json")) == ["sub-01_T2S_cmb.json"]


def test_outputs_are_group_readable_under_umask_022(tmp_path, dark_model):
    img, _ = _study(tmp_path, "a")
    old = os.umask(0o022)
    try:
        assert main(["detect", str(img), "--out", str(tmp_path / "out" / "deeper"), "--model", dark_model]) == 0
    finally:
        os.umask(old)
    written = sorted((tmp_path / "out").rglob("*"))
    assert {p.name for p in written} >= {"deeper", "a_cmb_mask.nii.gz", "a_cmb.json", "a_cmb.csv", "cmb_summary.csv"}
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_shards_split_the_sorted_inputs(tmp_path, dark_model):
    imgs = [str(_study(tmp_path, f"c{n}", seed=n)[0]) for n in range(3)]
    out = tmp_path / "out"
    assert main(["detect", *imgs, "--out", str(out), "--model", dark_model, "--shard", "1/2"]) == 0
    assert sorted(p.name for p in out.glob("*_cmb.json")) == ["c0_cmb.json", "c2_cmb.json"]
    assert (out / "cmb_summary_shard1of2.csv").exists()
    assert main(["detect", *imgs, "--out", str(out), "--model", dark_model, "--shard", "2/2"]) == 0
    assert (out / "c1_cmb.json").exists()


def test_bad_shard_and_threshold_are_one_line_errors(tmp_path, dark_model, capsys):
    img, _ = _study(tmp_path, "a")
    for extra, words in ((["--shard", "0/2"], "shards count from 1"), (["--shard", "x"], "expected K/N"),
                         (["--threshold", "2"], "between 0 and 1"), (["--sequence", "DWI"], "unknown sequence")):
        assert main(["detect", str(img), "--out", str(tmp_path / "o"), "--model", dark_model, *extra]) == 2
        assert words in _one_error_line(capsys)


def test_progress_json_lines_parse(tmp_path, dark_model, capsys):
    img, _ = _study(tmp_path, "p")
    assert main(["detect", str(img), "--out", str(tmp_path / "o"), "--model", dark_model,
                 "--progress-json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    progress = [d["progress"] for d in lines if "progress" in d]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 3
    study = next(d for d in lines if d.get("event") == "study")
    assert study["status"] == "ok" and study["cmb_count"] == 2
    assert Path(study["outputs"]["json"]).exists()
    assert lines[-1]["event"] == "done" and lines[-1]["failed"] == 0


def _bad_inputs(folder):
    import SimpleITK as sitk

    folder = Path(folder)
    flat = sitk.GetImageFromArray(np.random.rand(20, 20).astype(np.float32))
    sitk.WriteImage(flat, str(folder / "flat2d.nii.gz"))
    echoes = sitk.GetImageFromArray(np.random.rand(3, 8, 8, 8).astype(np.float32), isVector=False)
    assert echoes.GetDimension() == 4
    sitk.WriteImage(echoes, str(folder / "echoes4d.nii.gz"))
    write_volume(Volume(np.full((8, 8, 8), np.nan, np.float32)), folder / "nan.nrrd")
    # ITK's NIfTI reader turns NaN into 0: a NaN-filled NIfTI is refused as constant (or as NaN)
    write_volume(Volume(np.full((8, 8, 8), np.nan, np.float32)), folder / "nan.nii.gz")
    write_volume(Volume(np.zeros((8, 8, 8), np.float32)), folder / "zeros.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    good, _ = _study(folder, "good")
    data = good.read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    write_volume(read_volume(good), folder / "plain.nii")
    data = (folder / "plain.nii").read_bytes()
    (folder / "truncated.nii").write_bytes(data[: len(data) - 100])
    (folder / "notes.txt").write_text("not an image\n", encoding="utf-8")
    return {"flat2d.nii.gz": "2 dimensions", "echoes4d.nii.gz": "4 dimensions", "nan.nrrd": "NaN",
            "nan.nii.gz": ("constant", "NaN"),
            "zeros.nii.gz": "constant", "empty.nii.gz": "cannot be read", "truncated.nii.gz": "cannot be read",
            "truncated.nii": "truncated",
            "notes.txt": "cannot be read"}


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, tiny_model, capsys):
    cases = _bad_inputs(tmp_path)
    for name, words in cases.items():
        code = main(["detect", str(tmp_path / name), "--out", str(tmp_path / "out"), "--model", tiny_model])
        line = _one_error_line(capsys, name)
        words = (words,) if isinstance(words, str) else words
        assert code == 2 and any(w in line for w in words) and name in line, (name, line)
    assert not list((tmp_path / "out").glob("*_cmb.json"))


def test_subprocess_truncated_file_has_no_traceback(tmp_path, tiny_model):
    _bad_inputs(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "CMBLib", "detect", str(tmp_path / "truncated.nii.gz"),
                           "--out", str(tmp_path / "out"), "--model", tiny_model],
                          cwd=str(REPO), capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cmb detect: error:")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_real_model_folder_runs_end_to_end(tmp_path, tiny_model):
    img, _ = _study(tmp_path, "r")
    out = tmp_path / "o"
    assert main(["detect", str(img), "--out", str(out), "--model", tiny_model, "--device", "cpu"]) == 0
    doc = json.loads((out / "r_cmb.json").read_text(encoding="utf-8"))
    mask = read_volume(out / "r_cmb_mask.nii.gz")
    assert doc["model"]["name"] == "test-model" and doc["model"]["sha256"]
    assert sorted(int(v) for v in np.unique(mask.array) if v) == [r["label"] for r in doc["cmbs"]]


def test_no_bundled_model_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model_io, "MODELS_DIR", tmp_path / "none")
    img, _ = _study(tmp_path, "x")
    assert main(["detect", str(img), "--out", str(tmp_path / "o")]) == 2
    assert "no bundled detection model" in _one_error_line(capsys)
    assert main(["models"]) == 0
    assert "no bundled detection model" in capsys.readouterr().out


def test_models_lists_version_input_and_metrics(tmp_path, monkeypatch, capsys):
    tiny_model_folder(tmp_path / "m1", name="m1", version="2.1", intended_input="SWI 3T",
                      metrics={"rule": "valdo, 5 mm", "sensitivity": 0.875, "fp_per_scan": 1.5,
                               "test": {"all": {"n_cases": 3, "f1": 0.5, "tp": 4, "data": "3 test brains",
                                                "settings": "0.7 / 3 mm"},
                                        "old": {"n_cases": 9, "f1": 0.861}}})
    monkeypatch.setattr(model_io, "MODELS_DIR", tmp_path)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "m1 2.1 (default)" in out and "SWI 3T" in out and "performance    : rule valdo, 5 mm\n" in out
    # one line per measured group that names its data, key figures only, then its data and settings
    assert "\n    test all: n_cases 3, tp 4, f1 0.5\n      data: 3 test brains\n      settings: 0.7 / 3 mm\n" in out
    # figures without their data named are not printed
    assert "0.875" not in out and "0.861" not in out and "not shown: test old" in out


def test_models_names_a_fine_tuned_models_studies():
    from CMBLib.cli.models import _metrics

    meta = {"training_datasets": [{"path": "/data/site-a"}],
            "finetune": {"val_subjects": ["sub-03", "sub-07"], "test_subjects": ["sub-09"]}}
    lines = _metrics({"rule": "valdo, 5 mm", "threshold": 0.5, "validation": {"n_cases": 2, "f1": 0.667},
                      "test": {"n_cases": 1, "f1": 0.6}}, meta)
    assert lines == ["rule valdo, 5 mm", "validation: n_cases 2, f1 0.667",
                     "  data: 2 validation studies of /data/site-a (sub-03, sub-07)", "test: n_cases 1, f1 0.6",
                     "  data: 1 held-out test studies of /data/site-a (sub-09)"]
    assert _metrics({"threshold": 0.7, "all": {"f1": 0.9}}) == [
        "not measured (no figures with their data named)", "(1 group(s) without their data named not shown: all)"]


def test_overview_is_radiological():
    """Patient right on the viewer's left, anterior at the top, for the common grids."""
    from CMBLib.cli.demo import radiological_view

    # RAS-aligned (NIfTI from most converters): i runs to patient right, j to anterior
    assert radiological_view(np.eye(3)) == (False, True, True)
    # LPS-aligned (DICOM order): i runs to patient left, j to posterior: already radiological
    assert radiological_view(np.diag([-1.0, -1.0, 1.0])) == (False, False, False)
    # i along A-P, j along R-L: transpose first; j runs right (flip columns), i runs posterior
    swapped = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert radiological_view(swapped) == (True, False, True)


def test_demo_writes_outputs_and_png(tmp_path, dark_model, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", dark_model, "--n-cmbs", "3", "--study", "phantom"]) == 0
    text = capsys.readouterr().out
    assert "3 CMBs inserted" in text and "found " in text
    for name in ("demo_T2S.nii.gz", "demo_T2S_truth_mask.nii.gz", "demo_T2S_cmb.json", "demo_T2S_cmb.csv",
                 "demo_T2S_cmb_mask.nii.gz", "demo_T2S_overview.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "demo_T2S_overview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = text[text.index("outputs in"):]
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(json.loads((out / "cmb_demo.json").read_text(encoding="utf-8"))["files"])
    assert all(name in listed for name in written), (written, listed)  # the printed list is complete
    assert "synthetic data only" in text.splitlines()[0]  # says up front what to expect
    # a second run replaces its own earlier outputs ...
    assert main(["demo", "--out", str(out), "--model", dark_model, "--n-cmbs", "2", "--study", "phantom"]) == 0
    assert "replacing the outputs of an earlier demo" in capsys.readouterr().out
    assert np.unique(read_volume(out / "demo_T2S_truth_mask.nii.gz").array).tolist() == [0, 1, 2]
    # ... but never a file it did not write
    other = tmp_path / "other"
    other.mkdir()
    (other / "demo_T2S.nii.gz").write_bytes(b"the user's own file")
    assert main(["demo", "--out", str(other), "--model", dark_model]) == 2
    assert "not written by cmb demo" in capsys.readouterr().err
    assert (other / "demo_T2S.nii.gz").read_bytes() == b"the user's own file"
    assert main(["demo", "--out", str(other), "--model", dark_model, "--overwrite", "--study", "phantom"]) == 0



def test_label_map_recognition_needs_piecewise_constant_values():
    from CMBLib.validation import looks_like_label_map

    rng = np.random.default_rng(1)
    noisy_few_integers = np.rint(rng.normal(100, 3, (8, 32, 32)))  # ~25 values, like a rounded phantom
    assert np.unique(noisy_few_integers).size <= 64 and not looks_like_label_map(noisy_few_integers)
    labels = np.zeros((8, 32, 32), np.int16)
    labels[2:6, 4:20, 4:12], labels[2:6, 4:20, 12:28] = 17, 53  # two structures
    assert looks_like_label_map(labels) and looks_like_label_map(labels > 0)
    assert not looks_like_label_map(labels + rng.normal(0, 1, labels.shape))  # not whole numbers


def test_second_stage_flags_choose_the_classifier_and_exclude_each_other(capsys):
    import argparse

    from CMBLib.cli.detect import add_parser, stage2_choice
    from CMBLib.cli.worker import _stage2
    from CMBLib.errors import CMBError

    sub = argparse.ArgumentParser().add_subparsers()
    add_parser(sub)
    parse = sub.choices["detect"].parse_args
    assert stage2_choice(parse(["x.nii.gz", "--out", "o"])) is None  # the model's default
    assert stage2_choice(parse(["x.nii.gz", "--out", "o", "--second-stage"])) is True
    assert stage2_choice(parse(["x.nii.gz", "--out", "o", "--no-second-stage"])) is False
    with pytest.raises(SystemExit):
        parse(["x.nii.gz", "--out", "o", "--second-stage", "--no-second-stage"])
    assert "not allowed with" in capsys.readouterr().err
    assert [_stage2(v) for v in (None, True, False)] == [None, True, False]
    with pytest.raises(CMBError, match="second_stage must be"):
        _stage2("yes")
