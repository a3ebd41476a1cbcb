"""Dice, Volumes, probability maps, aggregation (FPavg, FPcmb, subject level, strata) and FROC."""
import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.metrics import aggregate, describe, evaluate_case, froc, froc_from_maps

SHAPE = (12, 20, 40)


def vol(*voxels, value=1, dtype=np.uint8):
    a = np.zeros(SHAPE, dtype)
    for kji in voxels:
        a[kji] = value
    return a


def test_dice_whole_mask_and_over_detected_cmbs():
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:4, 2:4, 2:4] = 1                      # 8 voxels, detected
    ref[8, 15, 30] = 1                          # 1 voxel, missed
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:4, 2:4, 3:5] = 1                     # 8 voxels, 4 overlap
    pred[8, 2, 30] = 1                          # far away FP
    r = evaluate_case(pred, ref)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert r.dice == pytest.approx(2 * 4 / (9 + 9))
    assert r.dice_detected == pytest.approx(2 * 4 / (8 + 8))


def test_volumes_use_their_geometry_and_refuse_mismatch():
    direction = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)   # rotated grid
    ref = Volume(vol((5, 10, 10)), (0.5, 0.5, 3.0), (10, -20, 5), direction)
    pred = ref.with_array(vol((5, 10, 19)))     # 9 voxels x 0.5 mm = 4.5 mm
    r = evaluate_case(pred, ref, spacing=(9, 9, 9))   # spacing ignored for Volumes
    assert (r.tp, r.fp, r.fn) == (1, 0, 0)
    assert r.matches[0]["distance_mm"] == pytest.approx(4.5)
    assert r.ref[0].centre_ras == pytest.approx(tuple(ref.voxel_to_ras([10, 10, 5])))
    moved = Volume(pred.array, (0.5, 0.5, 3.0), (12, -20, 5), direction)
    with pytest.raises(CMBError, match="sub-7: prediction grid differs"):
        evaluate_case(moved, ref, case="sub-7")
    with pytest.raises(CMBError, match="size"):
        evaluate_case(np.zeros((12, 20, 41), np.uint8), vol())


def test_probability_map_prediction_is_thresholded_and_scored():
    ref = vol((5, 10, 10), (5, 10, 30))
    prob = np.zeros(SHAPE, np.float32)
    prob[5, 10, 10] = 0.9
    prob[5, 10, 11] = 0.6
    prob[5, 10, 30] = 0.4                       # below 0.5: not a detection
    prob[2, 2, 2] = 0.5                         # exactly 0.5: kept (>=), an FP
    r = evaluate_case(prob, ref)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert sorted(e.score for e in r.pred) == pytest.approx([0.5, 0.9])
    with pytest.raises(CMBError):
        evaluate_case(prob * 3, ref)            # non-integer values above 1


def test_scores_from_dict_and_map():
    ref = vol((5, 10, 10))
    pred = vol((5, 10, 10), value=4) + vol((5, 2, 30), value=9)
    r = evaluate_case(pred, ref, pred_scores={4: 0.7, 9: 0.2})
    assert {e.label: e.score for e in r.pred} == {4: 0.7, 9: 0.2}
    smap = np.where(pred > 0, 0.3, 0.0)
    r = evaluate_case(pred, ref, pred_scores=smap)
    assert [e.score for e in r.pred] == pytest.approx([0.3, 0.3])


def test_describe_median_iqr_skips_undefined():
    d = describe([1.0, None, 2.0, 3.0, 4.0])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["median"] == 2.5
    assert d["q1"] == pytest.approx(1.75) and d["q3"] == pytest.approx(3.25) and d["iqr"] == pytest.approx(1.5)
    assert describe([None])["mean"] is None


def make_cases():
    # Case A: 2 refs, 1 found, 1 FP.  B: 1 ref, no prediction.  C: no ref, 2 FPs.  D: nothing.
    a = evaluate_case(vol((5, 10, 10), (5, 2, 30)), vol((5, 10, 11), (5, 18, 5)), case="A")
    b = evaluate_case(vol(), vol((5, 10, 10)), case="B")
    c = evaluate_case(vol((5, 10, 10), (5, 2, 30)), vol(), case="C")
    d = evaluate_case(vol(), vol(), case="D")
    return [a, b, c, d]


def test_aggregate_pooled_and_thesis_metrics():
    s = aggregate(make_cases())
    assert (s["tp"], s["fp"], s["fn"]) == (1, 3, 2)
    assert s["n_cases"] == 4 and s["n_ref"] == 3 and s["n_pred"] == 4
    assert s["sensitivity"] == pytest.approx(1 / 3) and s["precision"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(2 / (2 + 3 + 2))
    assert s["fp_per_subject"] == pytest.approx(3 / 4)       # FPavg
    assert s["fp_per_cmb"] == pytest.approx(3 / 3)           # FPcmb
    sl = s["subject_level"]
    assert (sl["tp"], sl["fp"], sl["fn"], sl["tn"]) == (1, 1, 1, 1)
    assert sl["tpr"] == sl["tnr"] == sl["ppv"] == sl["f1"] == sl["accuracy"] == 0.5
    # Per-subject F1: A 0.5, B 0, C 0, D undefined -> n = 3.
    assert s["per_subject"]["f1"]["n"] == 3 and s["per_subject"]["f1"]["mean"] == pytest.approx(0.5 / 3)
    assert s["per_subject"]["sensitivity"]["n"] == 2


def test_stratified_by_size_class_and_location():
    ref = np.zeros((20, 20, 40), np.uint8)
    ref[2:7, 2:7, 2:7] = 1                  # 125 mm3 -> 6.2 mm: '5-10mm'
    ref[15, 15, 30] = 2                     # 1 mm3: '<5mm', missed
    pred = np.zeros_like(ref)
    pred[3:6, 3:6, 3:6] = 1
    r = evaluate_case(pred, ref, ref_locations={1: "lobar", 2: "deep"}, pred_locations={1: "lobar"})
    s = aggregate([r])
    assert s["by_size_class"]["5-10mm"] == {"n_ref": 1, "tp": 1, "fn": 0, "n_pred": 0, "fp": 0, "sensitivity": 1.0}
    assert s["by_size_class"]["<5mm"]["fn"] == 1 and s["by_size_class"]["<5mm"]["n_pred"] == 1
    assert s["by_location"]["deep"]["sensitivity"] == 0.0
    assert s["by_location"]["lobar"]["tp"] == 1 and s["by_location"]["lobar"]["n_pred"] == 1


def test_froc_from_scores_rematches_duplicates():
    ref = vol((5, 10, 10), (5, 10, 30))
    pred = vol((5, 10, 11), value=1) + vol((5, 10, 14), value=2) + vol((5, 2, 30), value=3)
    # label 1: 1 mm from ref 1 (low score); label 2: 4 mm from ref 1 (high score); label 3: FP.
    r = evaluate_case(pred, ref, pred_scores={1: 0.3, 2: 0.9, 3: 0.6})
    curve = froc([r])
    assert curve["thresholds"] == [0.9, 0.6, 0.3]
    assert curve["sensitivity"] == [0.5, 0.5, 0.5]
    # At 0.9 label 2 alone is a TP; at 0.3 label 1 is closer, so label 2 becomes an FP.
    assert curve["fp_per_subject"] == [0.0, 1.0, 2.0]
    assert curve["sensitivity_at"]["0.125"] == 0.5
    assert froc([evaluate_case(pred, ref)]) is None   # no scores -> no curve


def test_froc_from_probability_maps():
    ref = vol((5, 10, 10))
    prob = np.zeros(SHAPE, np.float32)
    prob[5, 10, 10] = 0.7
    prob[2, 2, 2] = 0.4
    curve = froc_from_maps([(prob, ref)], thresholds=[0.3, 0.5, 0.8])
    assert curve["thresholds"] == [0.8, 0.5, 0.3]
    assert curve["sensitivity"] == [0.0, 1.0, 1.0]
    assert curve["fp_per_subject"] == [0.0, 0.0, 1.0]


def test_dice_over_detected_is_valdo_mean_diceover_with_duplicates():
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:4, 2:4, 2:4] = 1                      # A: 8 voxels
    ref[8, 15, 30] = 1                          # B: 1 voxel
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:4, 2:4, 3:5] = 1                     # on A, 4 voxels overlap, centre 1 mm away: TP
    pred[3, 6, 2] = 1                           # 3.6 mm from A's centre: duplicate FP, still assigned to A
    pred[8, 15, 30] = 1                         # exactly B
    r = evaluate_case(pred, ref)
    assert (r.tp, r.fp, r.fn, r.duplicates) == (2, 1, 0, 1)
    assert r.dice_detected == pytest.approx((2 * 4 / (8 + 9) + 1.0) / 2)
    assert r.dice == pytest.approx(2 * 5 / (10 + 9))
    assert evaluate_case(np.zeros_like(ref), ref).dice_detected == 0.0
