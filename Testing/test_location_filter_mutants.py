"""Hand-computed cases for the location filter (CMBLib/detection/location_filter.py) written against the
mutants that survived a complete run of `scripts/mutation_test.py --module location_filter`
(docs/developer.md, "Mutation testing"): the symmetric-pairs zone at the edges of its boxes and of its
4 mm tolerance, and what its `contains` returns; box zones at their bounds, without compartments and at
exactly their tolerance; the linear interpolation of the compartment distance."""
import numpy as np
import pytest

from CMBLib.detection.location_filter import (
    PAIR_BOXES,
    ZONES,
    PairZone,
    Zone,
    _distance_map,
    compartment_distance,
    zone_of,
)

PAIRS = ("symmetric_pairs",)
# the midbrain box: x 2..16, y -30..-8, z -22..-2 (and its mirror, x -16..-2)
Y, Z = -19.0, -8.0


def test_a_pair_on_the_outer_bound_of_a_box_is_set_aside():
    assert zone_of([(16.0, Y, Z), (-16.0, Y, Z)], PAIRS) == ["symmetric_pairs"] * 2        # bounds included
    assert zone_of([(16.5, Y, Z), (-16.5, Y, Z)], PAIRS) == [None, None]


def test_both_candidates_of_a_pair_must_lie_in_the_box():
    # mirror images within 1 mm of each other, but one of them (x = 1.5) is outside the box, on the midline side
    assert zone_of([(1.5, Y, Z), (-2.5, Y, Z)], PAIRS) == [None, None]
    assert zone_of([(2.5, Y, Z), (-1.5, Y, Z)], PAIRS) == [None, None]
    assert zone_of([(2.5, Y, Z), (-2.0, Y, Z)], PAIRS) == ["symmetric_pairs"] * 2           # both inside


def test_a_partner_exactly_4_mm_off_its_mirror_image_pairs():
    assert zone_of([(5.0, Y, Z), (-5.0, Y + 4.0, Z)], PAIRS) == ["symmetric_pairs"] * 2
    assert zone_of([(5.0, Y, Z), (-5.0, Y, Z - 4.0)], PAIRS) == ["symmetric_pairs"] * 2
    assert zone_of([(5.0, Y, Z), (-5.0, Y, Z - 4.5)], PAIRS) == [None, None]


def test_contains_returns_a_boolean_mask():
    zone = PairZone(PAIR_BOXES[:1], "nuclei")
    points = np.array([(5.0, Y, Z), (40.0, 0.0, 0.0), (-5.0, Y, Z)])
    inside = zone.contains(points)
    assert inside.dtype == bool and inside.tolist() == [True, False, True]
    assert points[inside].tolist() == [[5.0, Y, Z], [-5.0, Y, Z]]                          # usable as an index
    assert zone.contains([[5, -19, -8], [-5, -19, -8]]).tolist() == [True, True]           # integer coordinates


# --- box zones (deep_midline_veins) ----------------------------------------------------------------
def test_a_zone_without_compartments_is_its_whole_box_bounds_included():
    zone = Zone(((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)), "unit box")
    points = [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (1.01, 0.5, 0.5), (0.5, -0.01, 0.5)]
    assert zone.in_box(points).tolist() == [True, True, True, False, False]
    assert zone.contains(points).tolist() == [True, True, True, False, False]


def test_a_candidate_exactly_at_the_tolerance_from_a_compartment_is_in_the_zone():
    veins = ZONES["deep_midline_veins"]
    point = (3.5, -20.5, 6.5)                                       # medial thalamus, 1.74 mm from the CSF
    d = float(compartment_distance([point], veins.compartments, veins.box_mni_mm)[0])
    assert 1.0 < d < 3.0
    at = Zone(veins.box_mni_mm, "test", veins.compartments, tolerance_mm=d)
    assert at.contains([point]).tolist() == [True]
    assert Zone(veins.box_mni_mm, "test", veins.compartments, tolerance_mm=d - 1e-6).contains([point]).tolist() == [
        False]


def test_compartment_distance_interpolates_linearly_between_voxel_centres():
    veins = ZONES["deep_midline_veins"]
    dist, to_ijk = _distance_map(tuple(veins.compartments), tuple(tuple(b) for b in veins.box_mni_mm), 6.0)
    for point in ((3.3, -12.6, 4.45), (2.5, -10.5, 2.5)):
        ijk = to_ijk[:3, :3] @ np.array(point) + to_ijk[:3, 3]
        i0 = np.floor(ijk).astype(int)
        f = ijk - i0
        expected = 0.0                                              # trilinear: the 8 corners, weighted
        for corner in np.ndindex(2, 2, 2):
            weight = np.prod([f[a] if c else 1 - f[a] for a, c in enumerate(corner)])
            expected += weight * dist[tuple(i0 + corner)]
        got = compartment_distance([point], veins.compartments, veins.box_mni_mm)[0]
        assert got == pytest.approx(expected, abs=1e-9)


def test_zone_of_reads_coordinates_as_numbers():
    """Centres as read from a CSV (text), or missing (None), are converted like NaN, not compared as text."""
    assert zone_of([("5", "-19", "-8"), ("-5", "-19", "-8"), (None, 0, 0)], PAIRS) == ["symmetric_pairs"] * 2 + [None]
