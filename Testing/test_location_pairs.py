"""The location filter's `symmetric_pairs` zone: mirror-image pairs in deep iron / calcification
boxes are set aside together; a lone candidate, a pair outside the boxes (thalami) or a pair
farther than the tolerance from mirror images stays (CMBLib.detection.location_filter)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from CMBLib.detection.location_filter import PAIR_BOXES, ZONES, PairZone, zone_of, zones_box

PAIRS = ("symmetric_pairs",)
RED_NUCLEUS = (5.0, -19.0, -8.0)
CHOROID = (28.0, -42.0, 14.0)


def mirror(p):
    return (-p[0], p[1], p[2])


def test_a_mirror_pair_in_a_deep_box_is_set_aside_together():
    pts = [RED_NUCLEUS, mirror(RED_NUCLEUS), CHOROID, (-27.0, -44.5, 16.0)]   # second pair 1, 2.5, 2 mm off
    assert zone_of(pts, PAIRS) == ["symmetric_pairs"] * 4


def test_a_lone_candidate_stays():
    assert zone_of([RED_NUCLEUS], PAIRS) == [None]
    assert zone_of([RED_NUCLEUS, (-5.0, -19.0, 10.0)], PAIRS) == [None, None]      # partner 18 mm higher


def test_tolerance_is_per_axis_4_mm():
    off = [(0.0, 3.9, 0.0), (-3.9, 0.0, 0.0), (0.0, 0.0, -3.9), (0.0, 4.2, 0.0), (-4.2, 0.0, 0.0), (0.0, 0.0, 4.2)]
    got = [zone_of([RED_NUCLEUS, np.add(mirror(RED_NUCLEUS), d)], PAIRS)[0] for d in off]
    assert got == ["symmetric_pairs"] * 3 + [None] * 3


def test_bilateral_thalamic_cmbs_are_never_set_aside():
    """The thalami (a common site of bilateral hypertensive CMBs) hold no pair box."""
    thalamus = (12.0, -18.0, 6.0)
    assert zone_of([thalamus, mirror(thalamus)], PAIRS) == [None, None]


def test_a_pair_must_share_one_structure():
    """Mirror images across two different boxes (pallidum on one side, nigra on the other) do not
    pair: each needs its partner in its own structure's box."""
    gp = (19.0, -4.0, -1.0)
    assert zone_of([gp, (-11.0, -16.0, -11.0)], PAIRS) == [None, None]


def test_zones_box_leaves_pair_zones_out_of_the_field_of_view_check():
    assert zones_box(PAIRS) is None
    assert zones_box(("deep_midline_veins",) + PAIRS) == ZONES["deep_midline_veins"].box_mni_mm


def test_box_mni_mm_holds_every_box_and_its_mirror():
    box = ZONES["symmetric_pairs"].box_mni_mm
    for _, b in PAIR_BOXES:
        assert box[0][0] <= -b[0][1] and b[0][1] <= box[0][1]
        assert box[1][0] <= b[1][0] and b[1][1] <= box[1][1]
        assert box[2][0] <= b[2][0] and b[2][1] <= box[2][1]


@settings(max_examples=60, deadline=None)
@given(st.floats(-60, 60), st.floats(-90, 60), st.floats(-50, 60))
def test_a_single_point_is_never_a_pair(x, y, z):
    assert zone_of([(x, y, z)], PAIRS) == [None]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([b for _, b in PAIR_BOXES]), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
       st.floats(-3.9, 3.9), st.floats(-3.9, 3.9), st.floats(-3.9, 3.9))
def test_mirror_images_inside_a_box_pair_up(box, u, v, w, dx, dy, dz):
    p = tuple(lo + f * (hi - lo) for (lo, hi), f in zip(box, (u, v, w)))
    q = np.add(mirror(p), (dx, dy, dz))
    inside = all(lo <= c <= hi for c, (lo, hi) in zip(mirror(q), box))
    got = zone_of([p, tuple(q)], PAIRS)
    assert got == (["symmetric_pairs"] * 2 if inside else got)
    assert got[0] == got[1]                       # set aside together or not at all


def test_order_and_nan_do_not_matter():
    pts = [mirror(RED_NUCLEUS), (np.nan, 0.0, 0.0), RED_NUCLEUS]
    assert zone_of(pts, PAIRS) == ["symmetric_pairs", None, "symmetric_pairs"]
    zone = PairZone(PAIR_BOXES[:1], "nuclei", tolerance_mm=1.0)
    assert zone.contains(np.array([RED_NUCLEUS, np.add(mirror(RED_NUCLEUS), (1.5, 0, 0))])).tolist() == [False, False]


def test_near_zones_asks_for_a_registration_only_with_two_candidates_for_pairs():
    from CMBLib.detection.pipeline import near_zones
    from CMBLib.geometry import Volume

    vol = Volume(np.ones((20, 40, 40), np.float32), (2.0, 2.0, 2.0), (-40.0, -40.0, -20.0), np.eye(3))
    far = {"centre_ras": [0.0, 0.0, 90.0]}          # 90 mm from the centroid: beyond the box zone's 62 mm
    farther = {"centre_ras": [0.0, 0.0, 130.0]}
    assert not near_zones(vol, [far], zones=("deep_midline_veins",) + PAIRS)
    assert near_zones(vol, [far, dict(far)], zones=("deep_midline_veins",) + PAIRS)
    assert not near_zones(vol, [far, dict(far)], zones=("deep_midline_veins",))
    assert not near_zones(vol, [far, farther], zones=PAIRS)
