"""`cmb grow` end to end: same label ids, metadata JSON, points, one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from phantoms import PhantomCMB, dice, make_phantom

from CMBLib.cli import main
from CMBLib.io import read_volume, write_volume


@pytest.fixture()
def study(tmp_path):
    cmbs = [PhantomCMB((10.0, 10.0, 10.0), 2.5, 0.6), PhantomCMB((24.0, 22.0, 12.0), 3.5, 0.5),
            PhantomCMB((12.0, 26.0, 14.0), 2.0, 0.7)]
    vol, truth, scr = make_phantom(cmbs, (36, 36, 14), (0.9, 0.9, 2.0), noise=0.03, seed=5)
    relabel = {1: 3, 2: 11, 3: 250}
    scr_arr = np.zeros_like(scr.array)
    truth_arr = np.zeros_like(truth.array)
    for old, new in relabel.items():
        scr_arr[scr.array == old] = new
        truth_arr[truth.array == old] = new
    write_volume(vol, tmp_path / "t2s.nii.gz")
    write_volume(scr.with_array(scr_arr.astype(np.uint16)), tmp_path / "scribbles.nrrd")
    return tmp_path, truth.with_array(truth_arr), relabel


def test_grow_keeps_label_ids_and_writes_metadata(study):
    folder, truth, relabel = study
    out = folder / "mask.nii.gz"
    assert main(["grow", str(folder / "t2s.nii.gz"), str(folder / "scribbles.nrrd"), "-o", str(out), "--quiet"]) == 0
    mask = read_volume(out)
    assert mask.same_geometry(read_volume(folder / "t2s.nii.gz"))
    assert sorted(int(v) for v in np.unique(mask.array) if v) == [3, 11, 250]
    for lab in relabel.values():
        assert dice(mask.array == lab, truth.array == lab) > 0.75
    doc = json.loads((folder / "mask.json").read_text(encoding="utf-8"))
    assert doc["format"] == "cmb-grow" and [c["label"] for c in doc["cmbs"]] == [3, 11, 250]
    for c in doc["cmbs"]:
        assert c["voxel_count"] == int((mask.array == c["label"]).sum())
        assert c["size_class"] in ("<5mm", "5-10mm")


def test_grow_refuses_to_overwrite(study):
    folder, _, _ = study
    out = folder / "mask.nii.gz"
    args = ["grow", str(folder / "t2s.nii.gz"), str(folder / "scribbles.nrrd"), "-o", str(out), "--quiet"]
    assert main(args) == 0
    before = out.read_bytes()
    assert main(args) == 2
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "--mode", "parent_son", "--connectivity", "26", "--tolerance", "0.3"]) == 0
    # the overwrite really happened, with the options asked for
    doc = json.loads((folder / "mask.json").read_text(encoding="utf-8"))
    assert doc["settings"]["mode"] == "parent_son" and doc["settings"]["connectivity"] == 26
    assert [c["tolerance"] for c in doc["cmbs"]] == [0.3, 0.3, 0.3]
    assert all(c["mode"] == "parent_son" and not c["tolerance_auto"] for c in doc["cmbs"])
    mask = read_volume(out)
    assert [c["voxel_count"] for c in doc["cmbs"]] == [int((mask.array == c["label"]).sum()) for c in doc["cmbs"]]


def test_grow_from_points_csv(study):
    folder, truth, relabel = study
    (folder / "centres.csv").write_text("x,y,z\n10.0,10.0,10.0\n24.0,22.0,12.0\n", encoding="utf-8")
    out = folder / "from_points.nii.gz"
    args = ["grow", str(folder / "t2s.nii.gz"), "--points", str(folder / "centres.csv"), "-o", str(out), "--quiet"]
    assert main(args) == 0
    mask = read_volume(out)
    assert dice(mask.array == 1, truth.array == 3) > 0.75
    assert dice(mask.array == 2, truth.array == 11) > 0.75


def test_cli_errors_are_one_line(study, capsys):
    folder, _, _ = study
    bad = folder / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    rc = main(["grow", str(bad), str(folder / "scribbles.nrrd"), "-o", str(folder / "m.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cmb grow: error:") and err.count("\n") == 1
    rc = main(["grow", str(folder / "t2s.nii.gz"), "-o", str(folder / "m.nii.gz")])
    assert rc == 2 and "SCRIBBLES" in capsys.readouterr().err


def test_cli_subprocess_geometry_mismatch(study):
    folder, _, _ = study
    img = read_volume(folder / "t2s.nii.gz")
    other = img.with_array(np.zeros_like(img.array, dtype=np.uint8))
    other.origin = (5.0, 0.0, 0.0)
    write_volume(other, folder / "shifted.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "CMBLib", "grow", str(folder / "t2s.nii.gz"),
                           str(folder / "shifted.nii.gz"), "-o", str(folder / "m.nii.gz")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "geometry differs" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
