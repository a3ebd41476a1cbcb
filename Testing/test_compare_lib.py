"""CMBLib.compare: ARIA-H categories, matching classes, registration of a known head motion,
the quality gate and the flag near regions that turned dark (hand-built cases)."""
import numpy as np
import pytest
from compare_fixtures import CENTRE, darken, make_pair

from CMBLib.compare import quality
from CMBLib.compare.aria import aria_h_category
from CMBLib.compare.matching import field_of_view, match_findings, probability_support
from CMBLib.compare.register import prepare, register_followup
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.synthesis.followup_pair import apply, rigid_motion

REGISTRATION_ERROR_MM = 1.0     # stated accuracy on the phantom: every test point within 1 mm


@pytest.mark.parametrize("n, category", [(0, "none"), (1, "mild"), (4, "mild"), (5, "moderate"), (9, "moderate"),
                                         (10, "severe"), (37, "severe")])
def test_aria_h_category_boundaries(n, category):
    assert aria_h_category(n) == category


@pytest.mark.parametrize("bad", [-1, 2.5, True, "3"])
def test_aria_h_category_refuses_non_counts(bad):
    with pytest.raises(CMBError):
        aria_h_category(bad)


def _records(points):
    return [{"label": n + 1, "centre_ras": list(map(float, p)), "diameter_mm": 3.0, "max_probability": 0.9}
            for n, p in enumerate(points)]


MOTION = rigid_motion((5, -3, 10), (6, -4, 8), (0, 0, 0))      # follow-up sees baseline x at MOTION x
BASE = np.array([[10.0, 20, 30], [-30, 5, 12], [25, -40, 0], [0, 0, -20]])


def _to_baseline(p):
    return apply(np.linalg.inv(MOTION), p)


def _to_followup(p):
    return apply(MOTION, p)


def test_matching_classes_new_persisting_gone():
    # follow-up: baseline 0 and 1 moved with 1-3 mm jitter, baseline 2 and 3 gone, two new ones
    follow_b = np.array([BASE[0] + [1.0, 0, 0], BASE[1] + [0, 2.0, -2.0], [40.0, 40, 40], [-20, -20, 30]])
    out = match_findings(_records(BASE), _records(_to_followup(follow_b)), _to_baseline, _to_followup, 5.0)
    assert [e["baseline_label"] for e in out["persisting"]] == [1, 2]
    assert [e["label"] for e in out["new"]] == [3, 4]
    assert [e["baseline_label"] for e in out["no_longer_seen"]] == [3, 4]
    # coordinates: centre_ras in the follow-up's RAS, baseline_centre_ras in the baseline's
    np.testing.assert_allclose(out["persisting"][0]["baseline_centre_ras"], BASE[0])
    np.testing.assert_allclose(out["persisting"][0]["centre_ras"], _to_followup(BASE[0] + [1.0, 0, 0])[0])
    np.testing.assert_allclose(out["no_longer_seen"][0]["centre_ras"], _to_followup(BASE[2])[0])
    assert all(e["baseline_centre_ras"] is None for e in out["new"])


def test_matching_tolerance_and_one_to_one():
    near = BASE[0] + [4.9, 0, 0]
    out = match_findings(_records(BASE[:1]), _records(_to_followup(near)), _to_baseline, _to_followup, 5.0)
    assert len(out["persisting"]) == 1 and not out["new"]
    out = match_findings(_records(BASE[:1]), _records(_to_followup(near)), _to_baseline, _to_followup, 4.0)
    assert len(out["new"]) == 1 and len(out["no_longer_seen"]) == 1
    # two follow-up CMBs near one baseline CMB: one persists, the other is new (one to one)
    two = np.array([BASE[0] + [1.0, 0, 0], BASE[0] + [-3.0, 0, 0]])
    out = match_findings(_records(BASE[:1]), _records(_to_followup(two)), _to_baseline, _to_followup, 5.0)
    assert [e["label"] for e in out["persisting"]] == [1] and [e["label"] for e in out["new"]] == [2]


def test_matching_probability_support_and_field_of_view():
    grid = Volume(np.zeros((40, 40, 40), np.float32), (2.0, 2.0, 2.0), (-40.0, -40.0, -40.0))
    prob = grid.array.copy()
    spot = np.array([30.0, 30, 30])                      # baseline RAS: a CMB under the threshold
    k, j, i = np.rint(grid.ras_to_voxel(spot)[::-1]).astype(int)
    prob[k, j, i] = 0.45
    support = probability_support(grid.with_array(prob))
    follow = _records(_to_followup(np.array([spot + [1.0, 0, 0], [-30.0, -30, -30]])))
    out = match_findings([], follow, _to_baseline, _to_followup, 5.0, baseline_support=support, support=0.3)
    assert [e["label"] for e in out["new"]] == [2]
    assert out["persisting"][0]["how"] == "baseline below threshold"
    np.testing.assert_allclose(out["persisting"][0]["baseline_centre_ras"], spot)
    # a follow-up CMB where the baseline has no image is neither new nor gone
    small = Volume(np.zeros((10, 10, 10), np.float32), (2.0, 2.0, 2.0), (-40.0, -40.0, -40.0))
    out = match_findings([], follow, _to_baseline, _to_followup, 5.0, in_baseline_view=field_of_view(small))
    assert len(out["outside_common_view"]) == 1 and [e["label"] for e in out["new"]] == [2]


@pytest.fixture(scope="module")
def moved_pair():
    b, f, m = make_pair(seed=0)
    images = prepare(b, f)
    return b, f, m, images, register_followup(b, f, images=images)


def test_registration_recovers_known_rotation_and_translation(moved_pair):
    b, f, m, images, reg = moved_pair
    pts = CENTRE + np.random.default_rng(0).uniform(-40, 40, (200, 3))   # baseline RAS mm inside the brain
    err = np.linalg.norm(reg.to_baseline(apply(m, pts)) - pts, axis=1)
    assert err.max() < REGISTRATION_ERROR_MM, err.max()
    np.testing.assert_allclose(reg.to_followup(reg.to_baseline(pts)), pts, atol=1e-6)
    figures = quality.assess(reg, images)
    assert quality.problems(figures) == []
    assert abs(figures["rotation_deg"] - 10.9) < 1.0      # the motion: 6, -4, 8 degrees about R, A, S


def test_quality_gate_refuses_an_unrelated_image():
    b, f, _ = make_pair(seed=0, followup_seed=5)
    images = prepare(b, f)
    figures = quality.assess(register_followup(b, f, images=images), images)
    with pytest.raises(CMBError, match="cannot be trusted.*do not look alike"):
        quality.check(figures)


def test_quality_gate_figures():
    ok = {"correlation": 0.9, "overlap": 0.95, "followup_overlap": 0.97, "rotation_deg": 5.0, "scales": [1, 1, 1]}
    assert quality.problems(ok) == []
    assert "share only" in quality.problems(dict(ok, overlap=0.1, followup_overlap=0.2))[0]
    assert quality.problems(dict(ok, overlap=0.2, followup_overlap=0.9)) == []     # a follow-up slab
    assert "turns the head" in quality.problems(dict(ok, rotation_deg=60.0))[0]
    assert "scales" in quality.problems(dict(ok, scales=[1.3, 1.0, 1.0]))[0]


def test_dark_regions_flag_a_new_superficial_dark_band(moved_pair):
    from CMBLib.compare import siderosis

    b, f, m, images, reg = moved_pair
    assert siderosis.dark_regions(images, reg) == []          # the same head: nothing turned dark
    edge = CENTRE + np.array([0.0, 0.0, 44.0])               # 4 mm under the top of the phantom
    darker = darken(f, m, edge, 9.0, 0.25)
    images2 = prepare(b, darker)
    reg2 = register_followup(b, darker, images=images2)
    regions = siderosis.dark_regions(images2, reg2)
    assert len(regions) == 1 and regions[0]["superficial"]
    assert np.linalg.norm(np.array(regions[0]["baseline_centre_ras"]) - edge) < 8.0
    near = siderosis.flag_near([edge + [0, 6.0, 0], CENTRE - [0, 0, 30.0]], regions)
    assert near == [0, None]
