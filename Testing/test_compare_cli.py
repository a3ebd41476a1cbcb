"""`cmb compare` end to end on small hand-built pairs: outputs, exit 2 with nothing written."""
import json

import numpy as np
import pytest
from compare_fixtures import NEW_CMBS as NEW
from compare_fixtures import OLD_CMBS as OLD
from compare_fixtures import findings_document, make_pair, write_pair

from CMBLib.cli import main
from CMBLib.io import read_volume, write_volume
from CMBLib.synthesis.followup_pair import apply


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return d, write_pair(d)


def _run(d, out, *extra):
    return main(["compare", str(d / "base.nii.gz"), str(d / "follow.nii.gz"), "--out", str(out),
                 "--baseline-findings", str(d / "base_cmb.json"), "--followup-findings", str(d / "follow_cmb.json"),
                 "--threads", "1", *extra])


def test_compare_end_to_end(pair, tmp_path, capsys):
    d, m = pair
    out = tmp_path / "cmp"
    assert _run(d, out) == 0
    assert "new CMBs: 2 (ARIA-H mild)" in capsys.readouterr().out
    doc = json.loads((out / "compare.json").read_text())
    assert doc["format"] == "cmb-compare" and doc["aria_h_category"] == "mild"
    assert doc["settings"]["difference"] is True          # on by default; the spots lie at the detections
    assert doc["counts"] == {"new": 2, "persisting": 3, "no_longer_seen": 0, "outside_common_view": 0}
    np.testing.assert_allclose([e["centre_ras"] for e in doc["new"]], apply(m, NEW), atol=0.01)
    persisting = sorted(doc["persisting"], key=lambda e: e["baseline_label"])
    np.testing.assert_allclose([e["baseline_centre_ras"] for e in persisting], OLD, atol=0.01)
    assert max(e["distance_mm"] for e in persisting) < 1.0          # the registration's error at the CMBs
    found = np.array(doc["registration"]["followup_to_baseline_ras"])
    assert np.abs(apply(found, apply(m, OLD)) - OLD).max() < 1.0
    rows = (out / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("class,number,x_ras") and len(rows) == 6
    mask = read_volume(out / "new_cmb_mask.nii.gz")
    follow = read_volume(d / "follow.nii.gz")
    assert mask.same_geometry(follow) and sorted(np.unique(mask.array)) == [0, 1, 2]
    for label, c in enumerate(apply(m, NEW), start=1):
        i, j, k = np.rint(follow.ras_to_voxel(c)).astype(int)
        assert mask.array[k, j, i] == label
    html = (out / "compare_report.html").read_text()
    assert html.count("alt='baseline") == 2 and html.count("alt='follow-up") == 2
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.json", "compare_report.html",
                                                     "new_cmb_mask.nii.gz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary folder left
    # a second run does not replace the comparison unless --overwrite
    before = (out / "compare.json").read_text()
    assert _run(d, out) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
    assert (out / "compare.json").read_text() == before
    assert _run(d, out, "--overwrite", "--tolerance-mm", "0.01") == 0
    assert json.loads((out / "compare.json").read_text())["counts"]["new"] == 5


def test_compare_refuses_unrelated_images_and_writes_nothing(tmp_path, capsys):
    b, f, _ = make_pair(seed=0, followup_seed=5)
    write_volume(b, tmp_path / "base.nii.gz")
    write_volume(f, tmp_path / "other.nii.gz")
    (tmp_path / "base_cmb.json").write_text(json.dumps(findings_document(b, OLD)))
    (tmp_path / "other_cmb.json").write_text(json.dumps(findings_document(f, NEW)))
    out = tmp_path / "cmp"
    code = main(["compare", str(tmp_path / "base.nii.gz"), str(tmp_path / "other.nii.gz"), "--out", str(out),
                 "--baseline-findings", str(tmp_path / "base_cmb.json"),
                 "--followup-findings", str(tmp_path / "other_cmb.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot be trusted" in err[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.nii.gz", "base_cmb.json", "other.nii.gz",
                                                          "other_cmb.json"]


def test_compare_bad_input_one_line(pair, tmp_path, capsys):
    d, _ = pair
    assert main(["compare", str(d / "base.nii.gz"), str(tmp_path / "missing.nii.gz"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "follow-up" in capsys.readouterr().err
    assert main(["compare", str(d / "base.nii.gz"), str(d / "follow.nii.gz"), "--out", str(tmp_path / "o"),
                 "--baseline-findings", str(d / "follow_cmb.json")]) == 2      # findings of the other image
    assert "belong to an image of size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_compare_difference_adds_a_missed_new_cmb_once(pair, tmp_path):
    d, m = pair
    follow = read_volume(d / "follow.nii.gz")
    # the follow-up's findings miss the second new CMB; the difference image finds it
    (tmp_path / "f_cmb.json").write_text(json.dumps(findings_document(follow, apply(m, np.vstack([OLD, NEW[:1]])))))
    counts = {}
    for flag in ("--difference", "--no-difference"):
        out = tmp_path / flag
        assert main(["compare", str(d / "base.nii.gz"), str(d / "follow.nii.gz"), "--out", str(out),
                     "--baseline-findings", str(d / "base_cmb.json"), "--followup-findings",
                     str(tmp_path / "f_cmb.json"), "--threads", "1", flag]) == 0
        doc = json.loads((out / "compare.json").read_text())
        assert doc["settings"]["difference"] is (flag == "--difference")
        counts[flag] = [e.get("how", "") for e in doc["new"]]
    assert counts["--no-difference"] == [""] and counts["--difference"] == ["", "difference"]
    doc = json.loads((tmp_path / "--difference" / "compare.json").read_text())
    assert np.linalg.norm(np.array(doc["new"][1]["centre_ras"]) - apply(m, NEW[1:])[0]) < 2.0
    assert "found on the difference image" in (tmp_path / "--difference" / "compare_report.html").read_text()
