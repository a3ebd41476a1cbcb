"""Property tests (hypothesis): invariants of the matching rules on random small masks."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from CMBLib.metrics import evaluate_case
from CMBLib.metrics.matching import match_one_to_one, match_valdo

SHAPE = (6, 10, 10)
voxel = st.tuples(st.integers(0, SHAPE[0] - 1), st.integers(0, SHAPE[1] - 1), st.integers(0, SHAPE[2] - 1))
masks = st.lists(voxel, max_size=12).map(lambda vs: _mask(vs))
spacings = st.tuples(*[st.sampled_from([0.5, 1.0, 3.0])] * 3)
rules = st.sampled_from(["valdo", "touch", "one_to_one"])


def _mask(voxels):
    a = np.zeros(SHAPE, np.uint8)
    for v in voxels:
        a[v] = 1
    return a


@settings(max_examples=60, deadline=None)
@given(masks, spacings, rules, st.sampled_from([6, 26]))
def test_prediction_equal_to_reference_is_perfect(ref, spacing, rule, connectivity):
    r = evaluate_case(ref.copy(), ref, spacing=spacing, rule=rule, connectivity=connectivity)
    assert r.fp == 0 and r.fn == 0 and r.tp == r.n_ref
    if r.n_ref:
        assert r.f1 == 1.0 and r.dice == 1.0 and r.dice_detected == 1.0
    else:
        assert r.f1 is None and r.dice is None


@settings(max_examples=60, deadline=None)
@given(masks, masks, spacings, st.floats(0.0, 8.0))
def test_counting_invariants(pred, ref, spacing, distance):
    v = evaluate_case(pred, ref, spacing=spacing, rule="valdo", distance_mm=distance)
    o = evaluate_case(pred, ref, spacing=spacing, rule="one_to_one", distance_mm=distance)
    t = evaluate_case(pred, ref, spacing=spacing, rule="touch")
    for r in (v, o):
        assert r.tp + r.fp == r.n_pred and r.tp + r.fn == r.n_ref
    assert t.tp + t.fn == t.n_ref and t.fp + t.duplicates <= t.n_pred
    # The optimal assignment finds at least as many pairs as the nearest-reference rule.
    assert o.tp >= v.tp
    # One-to-one is symmetric in prediction and reference.
    swapped = evaluate_case(ref, pred, spacing=spacing, rule="one_to_one", distance_mm=distance)
    assert swapped.tp == o.tp
    # Every counted pair is within the threshold.
    assert all(m["distance_mm"] < distance for m in v.matches + o.matches)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0, 10), min_size=3, max_size=3), min_size=1, max_size=6),
       st.lists(st.lists(st.floats(0, 10), min_size=3, max_size=3), min_size=1, max_size=6),
       st.floats(0.5, 6.0), st.floats(0.0, 3.0))
def test_larger_threshold_never_finds_fewer(preds, refs, d1, extra):
    p, r = np.array(preds), np.array(refs)
    dist = np.sqrt(((p[:, None] - r[None]) ** 2).sum(-1))
    assert match_one_to_one(dist, d1 + extra).tp >= match_one_to_one(dist, d1).tp
    assert match_valdo(dist, d1 + extra).tp >= match_valdo(dist, d1).tp


@settings(max_examples=60, deadline=None)
@given(masks, st.sampled_from([6, 26]))
def test_component_numbering_equals_labelling_the_ijk_array(mask, connectivity):
    """Numbering as ndimage.label on the [i, j, k] (nibabel) array, as the VALDO scorer."""
    from scipy import ndimage

    from CMBLib.metrics import label_elements
    from CMBLib.metrics.components import structure

    ours, n = label_elements(mask, connectivity)
    theirs, m = ndimage.label(mask.transpose(2, 1, 0), structure(connectivity))
    assert n == m
    assert np.array_equal(ours, theirs.transpose(2, 1, 0))
