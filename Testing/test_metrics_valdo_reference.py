"""Cross-check the valdo rule against a small independent re-implementation of the official
VALDO 2021 scorer's algorithm (WhereIsValdo/valdo-eval-2021, PairwiseMeasures with
task 'microbleeds'), written here from its description: components of the binarised
[i, j, k] arrays with full (26) connectivity, unweighted centres of mass, each prediction
to its nearest reference when strictly closer than the threshold, the closest of several
candidates is the TP, FN = references - TP.  Distances scaled by the spacing (mm).
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import cdist

from CMBLib.metrics import aggregate, evaluate_case

SHAPE = (8, 12, 12)   # [k, j, i]


def valdo_reference_counts(pred_kji, ref_kji, spacing, threshold):
    """(tp, fp, fn) the way the VALDO scorer counts them (ties: first candidate wins)."""
    seg = (pred_kji.transpose(2, 1, 0) >= 0.5)            # nibabel order [i, j, k]
    ref = np.around(ref_kji.transpose(2, 1, 0)).astype(bool)
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
