"""Hand-computed cases for the matching rules and the file pairing (CMBLib/metrics/matching.py,
pairing.py) that the rule tests left open: written to kill the mutants that
`scripts/mutation_test.py --module metrics` found surviving (docs/developer.md)."""
import json
from pathlib import Path

import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.metrics.matching import match, match_one_to_one, match_points, match_touch, match_valdo
from CMBLib.metrics.pairing import _find, _parse_sidecar, pair_files, subject_session


# --- matching ---------------------------------------------------------------------------------------
def test_keep_drops_predictions_and_maps_back_to_their_positions():
    # 4 predictions x 2 references; prediction 1 is dropped (below a FROC threshold)
    d = np.array([[1.0, 9.0], [0.5, 9.0], [9.0, 2.0], [3.0, 9.0]])
    keep = np.array([1, 0, 1, 1])                       # any truthy values, as a FROC step passes
    m = match("valdo", d, keep=keep)
    # without prediction 1: pred 0 (1.0 mm) is the TP of ref 0, pred 3 (3.0 mm) its duplicate
    assert m.pred_status == ["TP", "dropped", "TP", "FP"]
    assert m.ref_status == ["TP", "TP"] and (m.tp, m.fp, m.fn) == (2, 1, 0)
    assert m.pairs == [(0, 0), (2, 1)] and m.assigned == [(0, 0), (2, 1), (3, 0)] and m.duplicates == 1
    # all kept is the plain result; nothing kept leaves every prediction dropped
    assert match("valdo", d, keep=np.ones(4, bool)) == match("valdo", d)
    nothing = match("valdo", d, keep=np.zeros(4, bool))
    assert nothing.pred_status == ["dropped"] * 4 and nothing.ref_status == ["FN", "FN"]
    assert nothing.pairs == [] and nothing.assigned == [] and nothing.duplicates == 0
    o = match("one_to_one", d, keep=[True, False, True, True])
    assert o.pred_status == ["TP", "dropped", "TP", "FP"] and o.pairs == [(0, 0), (2, 1)] and o.assigned == o.pairs
    t = match("touch", np.zeros((3, 1)), overlaps={(0, 0): 2, (1, 0): 5, (2, 0): 1}, keep=[False, True, True])
    assert t.pred_status == ["dropped", "TP", "duplicate"] and t.pairs == [(1, 0), (2, 0)] and t.duplicates == 1


def test_match_accepts_integer_distances_and_the_rule_spelling():
    m = match(" One-To-One ", [[1, 7], [6, 4]], distance_mm=5)
    assert m.pred_status == ["TP", "TP"] and m.pairs == [(0, 0), (1, 1)]
    with pytest.raises(CMBError):
        match("valdo", [1.0, 2.0])


def test_valdo_counts_every_duplicate():
    d = np.array([[1.0, 9.0], [2.0, 9.0], [9.0, 1.0], [9.0, 2.0], [9.0, 3.0]])
    m = match_valdo(d)
    assert m.duplicates == 3 and m.pred_status == ["TP", "FP", "TP", "FP", "FP"] and (m.tp, m.fp) == (2, 3)


def test_one_to_one_prefers_more_pairs_over_a_shorter_total():
    # the shortest pair (p1-r0, 0.1 mm) blocks the only way to pair both references
    d = np.array([[4.9, 50.0], [0.1, 4.9]])
    m = match_one_to_one(d)
    assert m.pairs == [(0, 0), (1, 1)] and m.pred_status == ["TP", "TP"] and m.duplicates == 0
    one = match_one_to_one(np.array([[3.0, 40.0]]))       # one prediction: its allowed reference
    assert one.pairs == [(0, 0)] and one.ref_status == ["TP", "FN"] and one.pred_status == ["TP"]
    assert match_one_to_one(np.array([[3.0], [40.0]])).pred_status == ["TP", "FP"]
    assert match_one_to_one(np.array([[5.5]])).pred_status == ["FP"]                # 5 mm by default
    # five pairs of 4.99 mm (24.95 in all) against four of 0.01 mm plus one forbidden pair: a forbidden
    # pair must cost more than any sum of allowed ones, or the optimum drops a pair
    d = np.full((5, 5), 50.0)
    for i in range(5):
        d[i, i] = 4.99
    for i in range(4):
        d[i + 1, i] = 0.01
    assert match_one_to_one(d).pairs == [(i, i) for i in range(5)]


def test_touch_goes_on_after_a_prediction_that_touches_nothing():
    m = match_touch(4, 2, {(1, 0): 3, (2, 0): 1, (3, 0): 1, (3, 1): 0})
    assert m.pred_status == ["FP", "TP", "duplicate", "duplicate"] and m.duplicates == 2
    assert m.ref_status == ["TP", "FN"]


def test_match_points_uses_the_distance_and_the_difference():
    pred = [[0.0, 0.0, 3.0], [10.0, 0.0, 0.0]]
    ref = [[0, 0, 0], [10, 0, 3]]
    assert match_points(pred, ref).pred_status == ["TP", "TP"]                 # 3 mm each
    assert match_points(pred, ref, distance_mm=2.5).pred_status == ["FP", "FP"]
    # p + r instead of p - r would put (1, 1, 1) 2 * |(1, 1, 1)| away from itself
    assert match_points([[5.0, 5.0, 5.0]], [[5.0, 5.0, 5.0]], distance_mm=0.5).tp == 1
    assert match_points(np.array([1, 2, 3]), np.array([[1, 2, 4]]), "one-to-one").tp == 1   # one point, ints


# --- pairing ---------------------------------------------------------------------------------------
def test_subject_and_session_from_a_name():
    assert subject_session("sub-01_ses-2_T2S.nii.gz") == ("sub-01", "ses-2")
    assert subject_session("sub-7A_T2S") == ("sub-7A", None)
    assert subject_session("ses-1_x") == (None, "ses-1")
    assert subject_session("case3") == (None, None)


P = Path("/p")
R = Path("/r")


def test_find_prefers_a_detection_output_then_the_same_name_then_the_case_key():
    ref = R / "Case1.nii.gz"
    image, output = P / "Case1.nii.gz", P / "Case1_cmb_mask.nii.gz"
    assert _find(ref, [image, output], "prediction") == output
    assert _find(ref, [image], "prediction") == image
    assert _find(ref, [], "prediction") is None
    # two detection outputs of the case (two folders): the same-named file decides
    other = Path("/q/Case1_cmb_mask.nii.gz")
    assert _find(ref, [output, other, image], "prediction") == image
    assert _find(R / "case1_CMB.nii.gz", [P / "CASE1_seg.nii.gz"], "prediction") == P / "CASE1_seg.nii.gz"
    # several with the case key: the one carrying a tag, else a refusal naming them
    assert _find(ref, [P / "case1.nrrd", P / "case1_pred.nii.gz"], "prediction") == P / "case1_pred.nii.gz"
    with pytest.raises(CMBError, match="several predictions match it"):
        _find(ref, [P / "case1_seg.nii.gz", P / "case1_pred.nii.gz"], "prediction")


def test_find_by_subject_and_session():
    ref = R / "sub-01_ses-1_CMB.nii.gz"
    same = P / "sub-01_ses-1_run-2_T2S_pred.nii.gz"
    assert _find(ref, [same, P / "sub-02_ses-1_a.nii.gz"], "prediction") == same
    assert _find(ref, [P / "sub-01_ses-2_a.nii.gz"], "prediction") is None            # other session
    no_session = P / "sub-01_other.nii.gz"
    assert _find(ref, [no_session], "prediction") == no_session                      # no session named
    assert _find(R / "sub-01_CMB.nii.gz", [P / "sub-01_ses-3_x.nii.gz"], "prediction") == P / "sub-01_ses-3_x.nii.gz"
    assert _find(R / "case_CMB.nii.gz", [P / "other.nii.gz"], "prediction") is None   # no subject to go by
    with pytest.raises(CMBError, match="several predictions share subject sub-01"):
        _find(ref, [P / "sub-01_ses-1_a.nii.gz", P / "sub-01_ses-1_b.nii.gz"], "prediction")


def test_pair_files_end_to_end():
    refs = [R / "sub-01_CMB.nii.gz", R / "sub-02_CMB.nii.gz"]
    preds = [P / "sub-01_cmb_mask.nii.gz", P / "sub-01_cmb_prob.nii.gz", P / "sub-02_cmb_prob.nii.gz",
             P / "sub-09_cmb_mask.nii.gz"]
    cases, unpaired = pair_files(preds, refs)
    assert [(c["case"], c["pred"], c["scores"]) for c in cases] == [
        ("sub-01", preds[0], preds[1]), ("sub-02", preds[2], preds[2])]
    assert unpaired == [preds[3]]


def _sidecar(tmp_path, data):
    path = tmp_path / "x_cmb.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return _parse_sidecar(path)


def test_sidecar_records_scores_and_locations(tmp_path):
    records = [
        "not a record", {"score": 0.7}, {"label": "x", "score": 0.5},      # skipped, and the rest still read
        {"label": 1, "probability": 0.4, "max_probability": 0.9, "location": {"name": "Lobar", "region": "x"}},
        {"label": "2", "score": "high", "confidence": 0.3, "location": {"name": "", "region": "Deep"}},
        {"label": 3, "prob_max": 1, "location": {"label": "Infratentorial"}},
        {"label": 4, "location": "Unknown"}, {"label": 5, "location": "unreviewed"}, {"label": 6, "location": ""},
        {"label": None, "score": 0.1},
    ]
    scores, locations = _sidecar(tmp_path, {"cmbs": "none", "findings": records})
    assert scores == {1: 0.9, 2: 0.3, 3: 1.0} and isinstance(scores[3], float)
    assert locations == {1: "Lobar", 2: "Deep", 3: "Infratentorial"}
    assert _sidecar(tmp_path, records[3:4]) == ({1: 0.9}, {1: "Lobar"})           # a bare list of records
    assert _sidecar(tmp_path, {"records": {"label": 1}}) == ({}, {})
    assert _sidecar(tmp_path, {"detections": [{"label": 2, "probability_max": 0.25}]}) == ({2: 0.25}, {})
    assert _sidecar(tmp_path, "text") == ({}, {})
    assert _sidecar(tmp_path, 5) == ({}, {})                                      # JSON, but no records
    (tmp_path / "x_cmb.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CMBError, match="cannot be read as a CMB sidecar JSON"):
        _parse_sidecar(tmp_path / "x_cmb.json")


def test_match_points_reads_coordinates_as_numbers():
    """Centres as read from a CSV (text) are converted, not compared as strings."""
    m = match_points([["0", "0", "3"]], [["0", "0", "0"], ["9", "9", "9"]])
    assert m.pred_status == ["TP"] and m.ref_status == ["TP", "FN"]
