"""Hand-computed cases for the valdo, touch and one-to-one matching rules."""
import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.metrics import evaluate_case
from CMBLib.metrics.matching import match_one_to_one, match_touch, match_valdo

SHAPE = (12, 20, 40)   # [k, j, i]


def vol(*voxels, value=1, dtype=np.uint8):
    """Mask with the given (k, j, i) voxels set to `value`."""
    a = np.zeros(SHAPE, dtype)
    for kji in voxels:
        a[kji] = value
    return a


def counts(r):
    return (r.tp, r.fp, r.fn)


# --- two predictions on one reference ------------------------------------------------
def test_two_predictions_on_one_reference_valdo_and_one_to_one():
    ref = vol((5, 10, 20))
    pred = vol((5, 10, 22), (5, 10, 17))            # 2 mm and 3 mm away
    r = evaluate_case(pred, ref, rule="valdo")
    assert counts(r) == (1, 1, 0)
    assert r.duplicates == 1
    assert r.pred_status == ["FP", "TP"]              # element 1 is i=17 (3 mm), element 2 i=22 (2 mm)
    assert r.matches == [{"pred": 2, "ref": 1, "distance_mm": 2.0, "overlap_voxels": 0}]
    assert counts(evaluate_case(pred, ref, rule="one-to-one")) == (1, 1, 0)


def test_two_predictions_touching_one_reference_touch():
    ref = np.zeros(SHAPE, np.uint8)
    ref[4:7, 9:12, 19:22] = 1                         # 3x3x3 cube
    pred = np.zeros(SHAPE, np.uint8)
    pred[5, 10, 17:20] = 1                            # enters the cube from the left (1 voxel inside)
    pred[5, 10, 21:24] = 1                            # and from the right (1 voxel inside)
    r = evaluate_case(pred, ref, rule="touch")
    assert r.n_pred == 2
    assert counts(r) == (1, 0, 0)
    assert r.duplicates == 1
    assert sorted(r.pred_status) == ["TP", "duplicate"]
    assert r.sensitivity == 1.0 and r.precision == 1.0


def test_touch_without_overlap_is_fp_and_fn():
    ref = vol((5, 10, 20))
    pred = vol((5, 10, 22))
    assert counts(evaluate_case(pred, ref, rule="touch")) == (0, 1, 1)
    assert counts(evaluate_case(pred, ref, rule="valdo")) == (1, 0, 0)


def test_one_prediction_touching_two_references_detects_both():
    ref = vol((5, 10, 10), (5, 10, 14))
    pred = np.zeros(SHAPE, np.uint8)
    pred[5, 10, 10:15] = 1
    r = evaluate_case(pred, ref, rule="touch")
    assert counts(r) == (2, 0, 0)
    # valdo: the prediction's centre (i=12) is 2 mm from each; it takes the first; the other is FN.
    assert counts(evaluate_case(pred, ref, rule="valdo")) == (1, 0, 1)


# --- one prediction between two references -------------------------------------------
def test_one_prediction_between_two_references():
    ref = vol((5, 10, 10), (5, 10, 16))
    pred = vol((5, 10, 13))                           # 3 mm from both: tie goes to reference 1
    r = evaluate_case(pred, ref, rule="valdo")
    assert counts(r) == (1, 0, 1)
    assert r.ref_status == ["TP", "FN"]
    assert counts(evaluate_case(pred, ref, rule="one_to_one")) == (1, 0, 1)


def test_valdo_does_not_fall_back_to_second_nearest_reference():
    ref = vol((5, 10, 10), (5, 10, 16))
    # A: 1 mm from ref 1, 5 mm from ref 2.  B: 2.83 mm from ref 1, 4.47 mm from ref 2.
    pred = vol((5, 10, 11), (5, 12, 12))
    v = evaluate_case(pred, ref, rule="valdo")
    assert counts(v) == (1, 1, 1)                     # B is a duplicate on ref 1 although within 5 mm of ref 2
    o = evaluate_case(pred, ref, rule="one_to_one")
    assert counts(o) == (2, 0, 0)                     # optimal assignment pairs it with reference 2


# --- distance threshold ----------------------------------------------------------------
@pytest.mark.parametrize("rule", ["valdo", "one_to_one"])
def test_prediction_just_inside_and_just_outside(rule):
    ref = vol((5, 10, 10))
    inside = vol((5, 10, 14), (5, 10, 15))            # centre i = 14.5: 4.5 mm
    at_threshold = vol((5, 10, 15))                    # exactly 5 mm: outside (VALDO: dist < 5)
    assert counts(evaluate_case(inside, ref, rule=rule, distance_mm=5)) == (1, 0, 0)
    assert counts(evaluate_case(at_threshold, ref, rule=rule, distance_mm=5)) == (0, 1, 1)
    assert counts(evaluate_case(at_threshold, ref, rule=rule, distance_mm=5.001)) == (1, 0, 0)
    assert counts(evaluate_case(inside, ref, rule=rule, distance_mm=4.5)) == (0, 1, 1)


def test_distance_in_voxels_as_the_original_valdo_code():
    ref = vol((5, 10, 10))
    pred = vol((7, 10, 10))                           # 2 voxels along k: 6 mm at 3 mm slices
    assert counts(evaluate_case(pred, ref, spacing=(0.5, 0.5, 3.0))) == (0, 1, 1)
    r = evaluate_case(pred, ref, spacing=(0.5, 0.5, 3.0), distance_units="voxels")
    assert counts(r) == (1, 0, 0) and r.matches[0]["distance_mm"] == 2.0


def test_anisotropic_spacing_distances_in_mm():
    spacing = (0.5, 0.5, 3.0)                         # (si, sj, sk) mm
    ref = vol((5, 10, 10))
    far_in_voxels = vol((5, 10, 19))                  # 9 voxels along i = 4.5 mm
    near_in_voxels = vol((7, 10, 10))                 # 2 voxels along k = 6 mm
    assert counts(evaluate_case(far_in_voxels, ref, spacing=spacing)) == (1, 0, 0)
    assert counts(evaluate_case(near_in_voxels, ref, spacing=spacing)) == (0, 1, 1)
    r = evaluate_case(far_in_voxels, ref, spacing=spacing)
    assert r.matches[0]["distance_mm"] == pytest.approx(4.5)
    assert r.ref[0].centre_ras == pytest.approx((5.0, 5.0, 15.0))
    assert r.ref[0].volume_mm3 == pytest.approx(0.75)


# --- empty masks, undefined ratios -------------------------------------------------------
@pytest.mark.parametrize("rule", ["valdo", "touch", "one_to_one"])
def test_empty_reference(rule):
    pred = vol((5, 10, 10), (5, 10, 30))
    r = evaluate_case(pred, vol(), rule=rule)
    assert counts(r) == (0, 2, 0)
    assert r.sensitivity is None and r.precision == 0.0 and r.f1 == 0.0
    assert r.count_difference == 2 and r.dice == 0.0 and r.dice_detected is None


@pytest.mark.parametrize("rule", ["valdo", "touch", "one_to_one"])
def test_empty_prediction(rule):
    ref = vol((5, 10, 10), (5, 10, 30))
    r = evaluate_case(vol(), ref, rule=rule)
    assert counts(r) == (0, 0, 2)
    assert r.sensitivity == 0.0 and r.precision is None and r.f1 == 0.0
    assert r.ref_status == ["FN", "FN"]


def test_both_empty_is_undefined_not_zero_or_one():
    r = evaluate_case(vol(), vol())
    assert counts(r) == (0, 0, 0)
    assert r.sensitivity is None and r.precision is None and r.f1 is None and r.dice is None
    assert r.count_difference == 0


def test_missing_prediction_counts_all_false_negatives():
    r = evaluate_case(None, vol((5, 10, 10), (5, 10, 30)))
    assert counts(r) == (0, 0, 2) and r.missing_prediction


# --- label values and elements ----------------------------------------------------------
def test_label_values_other_than_one():
    ref = vol((5, 10, 10), (5, 10, 30), value=255)
    pred = vol((5, 10, 11), value=7) + vol((5, 10, 29), value=3)
    r = evaluate_case(pred, ref)
    assert counts(r) == (2, 0, 0)
    assert sorted(e.label for e in r.pred) == [3, 7]
    assert [e.label for e in r.ref] == [255, 255]


def test_touching_instances_components_versus_labels():
    ref = np.zeros(SHAPE, np.int16)
    ref[5, 10, 10:12] = 1
    ref[5, 10, 12:14] = 2                              # touches label 1
    pred = vol((5, 10, 11), (5, 10, 12))
    by_component = evaluate_case(pred, ref)
    assert by_component.n_ref == 1 and counts(by_component) == (1, 0, 0)
    by_label = evaluate_case(pred, ref, elements="labels")
    assert by_label.n_ref == 2 and by_label.n_pred == 1
    assert counts(by_label) == (1, 0, 1)


def test_connectivity_six_versus_twenty_six():
    ref = vol((5, 10, 10), (6, 11, 11))                # corner neighbours
    assert evaluate_case(ref, ref, connectivity=26).n_ref == 1
    r6 = evaluate_case(ref, ref, connectivity=6)
    assert r6.n_ref == 2 and counts(r6) == (2, 0, 0)


def test_bad_arguments_raise_cmb_error():
    with pytest.raises(CMBError):
        evaluate_case(vol(), vol(), rule="nearest")
    with pytest.raises(CMBError):
        evaluate_case(vol(), vol(), connectivity=8)
    with pytest.raises(CMBError):
        evaluate_case(np.zeros((4, 4, 4)), vol())
    with pytest.raises(CMBError):
        evaluate_case(vol(), vol(), spacing=(1, 0, 1))


# --- the matching functions directly ----------------------------------------------------
def test_matching_functions_on_distance_matrices():
    d = np.array([[1.0, 4.0], [2.0, 6.0], [9.0, 9.0]])
    v = match_valdo(d, 5.0)
    assert (v.tp, v.fp, v.fn) == (1, 2, 1) and v.pairs == [(0, 0)]
    o = match_one_to_one(d, 5.0)
    assert (o.tp, o.fp, o.fn) == (2, 1, 0) and o.pairs == [(0, 1), (1, 0)]
    t = match_touch(3, 2, {(0, 0): 3, (1, 0): 1})
    assert (t.tp, t.fp, t.fn) == (1, 1, 1) and t.pred_status == ["TP", "duplicate", "FP"]


def test_ties_follow_the_valdo_scorer_numbering():
    """Components are numbered in (i, j, k) order, as the scorer labels nibabel [i, j, k] arrays."""
    ref = vol((2, 5, 20), (8, 5, 10))                  # first in k order: i=20; first in i order: i=10
    pred = vol((5, 5, 15))                             # equally far (5.83 mm) from both
    r = evaluate_case(pred, ref, distance_mm=6)
    assert [e.centre_ijk[0] for e in r.ref] == [10.0, 20.0]
    assert r.ref_status == ["TP", "FN"]


def test_float_reference_is_rounded_like_valdo():
    ref = np.zeros(SHAPE, np.float32)
    ref[5, 10, 10] = 0.6                               # np.around(x, decimals=1) != 0: a CMB
    ref[5, 10, 30] = 0.4                               # 0.4: a CMB too (VALDO rounds to one decimal)
    ref[5, 18, 2] = 0.04                               # rounds to 0.0: nothing
    r = evaluate_case(vol(), ref)
    assert r.n_ref == 2 and r.fn == 2


def test_match_points_valdo_on_centres():
    """Hand-made: two findings 3 mm and 4 mm from reference 0 (the closer is the TP, the other a
    duplicate FP), one exactly 5 mm from reference 1 (not < 5 mm: FP), reference 1 missed."""
    from CMBLib.errors import CMBError
    from CMBLib.metrics import match_points

    ref = [[0, 0, 0], [20, 0, 0]]
    pred = [[4, 0, 0], [0, 3, 0], [20, 5, 0]]
    m = match_points(pred, ref)
    assert m.pred_status == ["FP", "TP", "FP"] and m.ref_status == ["TP", "FN"]
    assert (m.tp, m.fp, m.fn, m.duplicates) == (1, 2, 1, 1) and m.assigned == [(0, 0), (1, 0)]
    assert match_points(np.zeros((0, 3)), ref).fn == 2 and match_points(pred, []).fp == 3
    with pytest.raises(CMBError, match="touch rule needs masks"):
        match_points(pred, ref, rule="touch")
