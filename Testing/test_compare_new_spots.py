"""CMBLib.compare.new_spots: new CMBs from the registered difference image, on the hand-built
phantom pair after a known head motion (Testing/compare_fixtures.py)."""
import numpy as np
import pytest
from compare_fixtures import CENTRE, NEW_CMBS, OLD_CMBS, darken, findings_document, make_pair

from CMBLib.compare import new_spots
from CMBLib.compare.outputs import compare_csv
from CMBLib.compare.pipeline import Findings, compare_studies
from CMBLib.compare.register import prepare, register_followup
from CMBLib.synthesis.followup_pair import apply

PLACE_MM = 2.0                  # a new spot's centre lies this close to the inserted CMB
BLOB = CENTRE + np.array([-25.0, -20.0, -5.0])      # baseline RAS mm: a large new dark blob (16 mm)


@pytest.fixture(scope="module")
def pair():
    b, f, m = make_pair(seed=0, baseline_cmbs=OLD_CMBS, followup_cmbs=np.vstack([OLD_CMBS, NEW_CMBS]))
    f = darken(f, m, BLOB, 8.0, 0.3)
    images = prepare(b, f)
    reg = register_followup(b, f, images=images)
    return b, f, m, images, reg, new_spots.find_spots(b, f, images, reg)


def _nearest(spots, point, key="centre_ras"):
    c = np.array([s[key] for s in spots], float).reshape(-1, 3)
    return np.linalg.norm(c - point, axis=1).min() if len(c) else np.inf


def test_new_dark_spot_found_at_its_place_after_the_motion(pair):
    b, f, m, images, reg, spots = pair
    strong = [s for s in spots if s["peak_darkening"] >= new_spots.DARKENING]
    for p in NEW_CMBS:
        assert _nearest(strong, apply(m, p)[0]) < PLACE_MM            # follow-up RAS
        assert _nearest(strong, p, "baseline_centre_ras") < PLACE_MM   # baseline RAS
    s = min(strong, key=lambda s: np.linalg.norm(np.array(s["centre_ras"]) - apply(m, NEW_CMBS[0])[0]))
    assert new_spots.DIAMETER_MM[0] <= s["diameter_mm"] <= new_spots.DIAMETER_MM[1]
    assert s["volume_mm3"] > 0 and s["peak_darkening"] > 0.3


def test_dark_spot_of_both_scans_and_a_large_dark_blob_are_not_spots(pair):
    b, f, m, images, reg, spots = pair
    strong = [s for s in spots if s["peak_darkening"] >= new_spots.DARKENING]
    for p in OLD_CMBS:                                   # in both scans: cancels
        assert _nearest(strong, apply(m, p)[0]) > 5.0
    assert _nearest(spots, BLOB, "baseline_centre_ras") > 8.0      # too large for a CMB
    assert len(strong) == len(NEW_CMBS)


def test_unexplained_leaves_out_spots_near_a_detection(pair):
    b, f, m, images, reg, spots = pair
    found = [{"centre_ras": apply(m, NEW_CMBS[0])[0].tolist()}]
    out = new_spots.unexplained(spots, [], found, reg, 5.0)
    assert len(out) == 1 and out[0]["how"] == "difference"
    assert np.linalg.norm(np.array(out[0]["centre_ras"]) - apply(m, NEW_CMBS[1])[0]) < PLACE_MM
    old = [{"centre_ras": p.tolist()} for p in NEW_CMBS]     # baseline records (baseline RAS) at both places
    assert new_spots.unexplained(spots, old, [], reg, 5.0) == []
    assert new_spots.unexplained(spots, [], [], reg, 5.0, threshold=2.0) == []


def test_pipeline_counts_a_difference_spot_once(pair):
    b, f, m, images, reg, spots = pair
    base = Findings(findings_document(b, OLD_CMBS)["cmbs"], source="hand")
    # the "detector" found the old CMBs and the first new one on the follow-up, missed the second
    follow = Findings(findings_document(f, apply(m, np.vstack([OLD_CMBS, NEW_CMBS[:1]])))["cmbs"], source="hand")
    off = compare_studies(b, f, base, follow, difference=False)
    assert len(off.classes["new"]) == 1 and off.aria_h_category == "mild" and not off.difference_spots
    on = compare_studies(b, f, base, follow, difference=True)
    new = on.classes["new"]
    assert len(new) == 2 and on.aria_h_category == "mild"
    assert [e.get("how", "new") for e in new].count("difference") == 1
    extra = next(e for e in new if e.get("how") == "difference")
    assert np.linalg.norm(np.array(extra["centre_ras"]) - apply(m, NEW_CMBS[1])[0]) < PLACE_MM
    assert sorted(np.unique(on.new_mask.array).tolist()) == [0, 1, 2]
    lab = np.argwhere(on.new_mask.array == 2).mean(axis=0)
    assert np.linalg.norm(f.kji_to_ras(lab[None])[0] - apply(m, NEW_CMBS[1])[0]) < PLACE_MM
    assert ",difference," in compare_csv(on)
    assert on.settings["difference"] is True and "difference" in on.timings


def test_a_spot_where_the_reader_rejected_a_finding_is_not_proposed_again(pair, tmp_path):
    """Reviewed findings: the follow-up's finding at the second new CMB was rejected by the reader
    (read_findings leaves it out of the records); the difference image does not bring it back."""
    import json

    from CMBLib.compare.pipeline import read_findings

    b, f, m, images, reg, spots = pair
    doc = findings_document(f, apply(m, np.vstack([OLD_CMBS, NEW_CMBS])))
    doc["cmbs"][-1]["review_status"] = "rejected"
    (tmp_path / "f_cmb.json").write_text(json.dumps(doc))
    follow = read_findings(tmp_path / "f_cmb.json", f, "follow-up")
    assert len(follow.records) == len(OLD_CMBS) + 1 and len(follow.rejected) == 1
    base = Findings(findings_document(b, OLD_CMBS)["cmbs"], source="hand")
    on = compare_studies(b, f, base, follow, difference=True)
    assert len(on.classes["new"]) == 1 and not any(e.get("how") == "difference" for e in on.classes["new"])


def test_a_dark_spot_of_both_scans_shifted_by_a_residual_misregistration_cancels(monkeypatch):
    """The same dark focus in both scans, 1.5 mm apart after the motion (a residual
    misregistration): comparing with the baseline's darkest value within NEIGHBOUR_MM (1.5 mm)
    cancels it; comparing voxel to voxel would report it as new."""
    spot = CENTRE + np.array([10.0, -5.0, -15.0])        # baseline RAS mm
    b, f, m = make_pair(seed=0)
    b = darken(b, np.eye(4), spot, 2.5, 0.2)
    f = darken(f, m, spot + np.array([1.5, 0.0, 0.0]), 2.5, 0.2)
    images = prepare(b, f)
    reg = register_followup(b, f, images=images)

    def strongest_near():
        near = [s["peak_darkening"] for s in new_spots.find_spots(b, f, images, reg)
                if np.linalg.norm(np.array(s["baseline_centre_ras"]) - spot) < 4.0]
        return max(near, default=0.0)

    assert strongest_near() < new_spots.DARKENING               # measured 0.17
    monkeypatch.setattr(new_spots, "NEIGHBOUR_MM", 0.0)
    assert strongest_near() > new_spots.DARKENING + 0.05        # measured 0.39


def test_sitk_followup_to_baseline_agrees_with_the_ras_matrix(pair):
    """The SimpleITK transform (LPS) built from the registration matrix maps follow-up points
    where `to_baseline` (RAS) does, and is the inverse of the registration's own transform."""
    b, f, m, images, reg, spots = pair
    t = reg.sitk_followup_to_baseline()
    flip = np.array([-1.0, -1.0, 1.0])
    for p in apply(m, NEW_CMBS):                                  # follow-up RAS mm
        q = np.array(t.TransformPoint((p * flip).tolist())) * flip
        np.testing.assert_allclose(q, reg.to_baseline(p)[0], atol=1e-6)
        back = np.array(reg.sitk_transform.TransformPoint((q * flip).tolist())) * flip
        np.testing.assert_allclose(back, p, atol=1e-3)
