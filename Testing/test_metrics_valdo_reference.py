"""Cross-check the valdo rule against a small independent re-implementation of the official
VALDO 2021 scorer's algorithm (WhereIsValdo/valdo-eval-2021, PairwiseMeasures with
task 'microbleeds'), written here from its description: components of the binarised
[i, j, k] arrays with full (26) connectivity, unweighted centres of mass, each prediction
to its nearest reference when strictly closer than the threshold, the closest of several
candidates is the TP, FN = references - TP.  Distances scaled by the spacing (mm).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import cdist

from CMBLib.metrics import aggregate, evaluate_case

SHAPE = (8, 12, 12)   # [k, j, i]


def valdo_reference_counts(pred_kji, ref_kji, spacing, threshold):
    """(tp, fp, fn) the way the VALDO scorer counts them (ties: first candidate wins)."""
    seg = (pred_kji.transpose(2, 1, 0) >= 0.5)            # nibabel order [i, j, k]
    ref = np.around(ref_kji.transpose(2, 1, 0), decimals=1).astype(bool)
    struct = ndimage.generate_binary_structure(3, 3)
    seg_cc, n_seg = ndimage.label(seg, struct)
    ref_cc, n_ref = ndimage.label(ref, struct)
    if n_seg == 0:
        return 0, 0, n_ref
    if n_ref == 0:
        return 0, n_seg, 0
    com_seg = np.array([ndimage.center_of_mass(seg_cc == s) for s in range(1, n_seg + 1)]) * spacing
    com_ref = np.array([ndimage.center_of_mass(ref_cc == r) for r in range(1, n_ref + 1)]) * spacing
    dist = cdist(com_seg, com_ref)
    best = {}
    for s in range(n_seg):
        valid = np.where(dist[s] < threshold, dist[s], np.inf)
        if np.isfinite(valid.min()):
            r = int(np.argmin(valid))
            if r not in best or valid[r] < best[r]:
                best[r] = valid[r]
    tp = len(best)
    return tp, n_seg - tp, n_ref - tp


blobs = st.lists(st.tuples(st.integers(0, SHAPE[0] - 1), st.integers(0, SHAPE[1] - 1),
                           st.integers(0, SHAPE[2] - 1), st.integers(1, 2)), max_size=10)


def paint(blob_list, value=1.0, dtype=np.float32):
    a = np.zeros(SHAPE, dtype)
    for k, j, i, size in blob_list:
        a[k:k + size, j:j + size, i:i + size] = value
    return a


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(blobs, blobs), min_size=1, max_size=3),
       st.tuples(*[st.sampled_from([0.5, 0.9, 1.0, 2.5])] * 3), st.sampled_from([2.0, 3.0, 5.0]))
def test_pooled_counts_match_the_valdo_algorithm(cases, spacing, threshold):
    results, expected = [], np.zeros(3, int)
    for pred_blobs, ref_blobs in cases:
        pred = paint(pred_blobs, 0.8)                  # a probability map
        ref = paint(ref_blobs, 1.0)
        results.append(evaluate_case(pred, ref, spacing=spacing, rule="valdo", distance_mm=threshold))
        expected += valdo_reference_counts(pred, ref, np.array(spacing), threshold)
    s = aggregate(results)
    assert (s["tp"], s["fp"], s["fn"]) == tuple(int(x) for x in expected)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases, one per branch of the official scorer (WhereIsValdo/valdo-eval-2021,
# commit ee87c04, evaluation_comparison/pairwise_measures.py, class PairwiseMeasures, task
# 'microbleeds', connectivity=3).  Each case names the lines it follows and gives the numbers
# that code produces, worked out by hand; where `cmb evaluate` deliberately differs the test
# says so and checks our documented number.  Grid: 1 mm unless stated, threshold 5 mm.
# ---------------------------------------------------------------------------------------------
G = (12, 16, 16)  # [k, j, i]


def grid(*blocks, value=1.0):
    """Float array [k, j, i] with `value` in each block ((i0, i1), (j0, j1), (k0, k1)), ends exclusive."""
    a = np.zeros(G, np.float32)
    for (i0, i1), (j0, j1), (k0, k1) in blocks:
        a[k0:k1, j0:j1, i0:i1] = value
    return a


def vox(i, j, k):
    return ((i, i + 1), (j, j + 1), (k, k + 1))


def valdo(pred, ref, spacing=(1.0, 1.0, 1.0), threshold=5.0):
    return evaluate_case(pred, ref, spacing=spacing, rule="valdo", distance_mm=threshold)


def test_threshold_is_strict():
    """`possible_match = np.where(paired_dist < self.thresh_assign, ...)`: exactly 5 mm is not a match."""
    ref = grid(vox(5, 5, 5))
    at_5 = valdo(grid(vox(10, 5, 5)), ref)             # centres 5.0 mm apart
    assert (at_5.tp, at_5.fp, at_5.fn) == (0, 1, 1)    # 'FP', ref -1; the reference is missed
    at_4 = valdo(grid(vox(9, 5, 5)), ref)
    assert (at_4.tp, at_4.fp, at_4.fn, at_4.f1) == (1, 0, 0, 1.0)   # df_easy: count_ref 1 -> 'TP'


def test_distance_is_in_mm_through_pixdim():
    """compare_segmentations passes `pixdim = header.get_zooms()`; centres are multiplied by it."""
    ref = grid(vox(5, 5, 5))
    pred = grid(vox(5, 5, 7))                           # 2 slices apart
    assert valdo(pred, ref, spacing=(0.5, 0.5, 2.0)).tp == 1     # 4 mm
    assert valdo(pred, ref, spacing=(0.5, 0.5, 3.0)).tp == 0     # 6 mm


def test_components_are_26_connected_and_probabilities_cut_at_threshold():
    """`generate_binary_structure(3, 3)`; `seg_binary = seg_img >= threshold` (inclusive)."""
    ref = grid(vox(4, 4, 4), vox(5, 5, 5))              # corner-touching voxels: one CMB
    pred = np.zeros(G, np.float32)
    pred[4, 4, 5] = 0.5                                  # exactly the threshold: kept
    pred[4, 5, 4] = 0.49                                 # below: dropped
    r = valdo(pred, ref)
    assert (r.n_ref, r.n_pred, r.tp, r.fp, r.fn) == (1, 1, 1, 0, 0)


def test_reference_values_are_rounded_to_one_decimal():
    """`self.ref = np.around(ref_img, decimals=1)`, then `.astype(bool)`: a voxel of 0.5 (two raters
    disagreeing) is a reference CMB; 0.04 (a compression error) is not."""
    ref = grid(vox(3, 3, 3), value=0.5) + grid(vox(10, 10, 3), value=0.04)
    r = valdo(grid(vox(3, 3, 4)), ref)
    assert (r.n_ref, r.tp, r.fp, r.fn) == (1, 1, 0, 0)


def test_empty_prediction_all_false_negatives():
    """`flag_seg_empty` -> `all_fn()`: no rows; f1_count_element returns 0, mean_dsc_whenoverlap 0."""
    r = valdo(np.zeros(G, np.float32), grid(vox(3, 3, 3), vox(10, 10, 8)))
    assert (r.tp, r.fp, r.fn, r.f1, r.dice_detected) == (0, 0, 2, 0.0, 0.0)


def test_empty_reference_all_false_positives():
    """`flag_ref_empty` -> `all_fp()`: every component 'FP'.  VALDO's f1_count_element and
    mean_dsc_whenoverlap return NaN here; ours: F1 0.0 (2*0 / (0 + 2 + 0): defined, and it
    counts the false positives), dice_detected None (undefined), as docs/evaluation.md states."""
    r = valdo(grid(vox(3, 3, 3), vox(10, 10, 8)), np.zeros(G, np.float32))
    assert (r.tp, r.fp, r.fn) == (0, 2, 0)
    assert r.f1 == 0.0 and r.dice_detected is None and r.sensitivity is None


def test_duplicates_closest_is_tp_others_fp_and_count_in_dice():
    """df_complex: `distance == min_distance` -> 'TP', the other 'PossibleTP' -> 'FP' but keeps
    `ref` = 1, so mean_dsc_whenoverlap sums it into temp_seg.
    R = 2x2x2 cube at i 4-5, j 4-5, k 4-5 (8 voxels, centre (4.5, 4.5, 4.5)).
    P1 = the cube shifted one voxel along i (centre 1 mm away, 4 voxels overlap).
    P2 = one voxel at (1, 4, 4), 3.57 mm away, separate from P1.
    TP 1, FP 1, FN 1 - 1 = 0; F1 = 2 / (0 + 1 + 2) = 2/3; Dice over R with P1 + P2 = 2*4 / (9 + 8)."""
    ref = grid(((4, 6), (4, 6), (4, 6)))
    pred = grid(((5, 7), (4, 6), (4, 6)), vox(1, 4, 4))
    r = valdo(pred, ref)
    assert (r.tp, r.fp, r.fn, r.duplicates) == (1, 1, 0, 1)
    assert r.f1 == pytest.approx(2 / 3)
    assert r.dice_detected == pytest.approx(8 / 17)


def test_exact_tie_between_two_predictions():
    """Two predictions exactly 2 mm either side of one reference.  VALDO: both equal `min_distance`
    -> both 'TP' (numb_tp 2 for 1 reference; F1 = 4 / (0 + 0 + 4) = 1.0).  Ours, the documented
    difference: one TP (the lower-numbered prediction) and one duplicate FP, F1 2/3."""
    ref = grid(vox(6, 6, 6))
    r = valdo(grid(vox(4, 6, 6), vox(8, 6, 6)), ref)
    assert (r.tp, r.fp, r.fn, r.duplicates) == (1, 1, 0, 1)
    assert r.pred_status == ["TP", "FP"] and r.f1 == pytest.approx(2 / 3)


def test_no_fall_back_to_the_second_nearest_reference():
    """Each row takes `np.argmin(row_valid)`, its nearest reference, once; a loser in df_complex is
    'FP' even when another reference lies within 5 mm of it.
    R1 at i=5, R2 at i=11; P1 on R1 (0 mm), P2 at i=8: 3 mm from R1, 3 mm from R2 -> tie, argmin
    takes R1 (lower label), loses to P1 -> FP; R2 is missed.  TP 1, FP 1, FN 1, F1 0.5."""
    ref = grid(vox(5, 5, 5), vox(11, 5, 5))
    r = valdo(grid(vox(5, 5, 5), vox(8, 5, 5)), ref)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1) and r.f1 == pytest.approx(0.5)
    # shifting P2 half a voxel's worth towards R2 (a 2-voxel P2 at i 9-10: 4.5 mm to R1, 1.5 mm
    # to R2) makes R2 its nearest: both found.
    r = valdo(grid(vox(5, 5, 5), ((9, 11), (5, 6), (5, 6))), ref)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)


def test_reference_tie_goes_to_the_lower_label_in_nibabel_order():
    """`ndimage.label` runs on the nibabel array [i, j, k], so labels follow i first; argmin picks
    the lower label.  R_a at (i=2, j=8), R_b at (i=8, j=2); a prediction at (5, 5) is 4.24 mm from
    both.  VALDO labels R_a 1 (i=2 < 8) and gives it the TP.  In our [k, j, i] array R_b comes
    first in memory order, so a numbering by array order would pick R_b."""
    ref = grid(vox(2, 8, 5), vox(8, 2, 5))
    r = valdo(grid(vox(5, 5, 5)), ref)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)
    found = [e for e, s in zip(r.ref, r.ref_status) if s == "TP"]
    assert [tuple(round(v) for v in found[0].centre_ijk)] == [(2, 8, 5)]


def test_false_negatives_are_references_minus_tp_not_numb_fn():
    """`numb_fn()` is `max(ref_cc) - len(np.unique(df['ref']))`: the FP marker -1 is one of the
    unique values, so with R1 found, R2 missed and one stray FP it says 2 - 2 = 0.  The F1 in the
    same file uses `np.max(label_ref) - numb_tp` = 1, and so do we: F1 = 2 / (1 + 1 + 2) = 0.5."""
    ref = grid(vox(3, 3, 3), vox(12, 12, 3))
    r = valdo(grid(vox(3, 3, 3), vox(3, 12, 10)), ref)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1) and r.f1 == pytest.approx(0.5)
