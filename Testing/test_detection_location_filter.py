"""Location-based suppression of candidates in mimic zones (CMBLib/detection/location_filter.py)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from detection_fixtures import dark_spot_model, exact_brain_mask, phantom  # noqa: E402

import CMBLib.location as location  # noqa: E402
from CMBLib.detection.location_filter import ZONES, model_zones, zone_of  # noqa: E402
from CMBLib.detection.outputs import detection_document  # noqa: E402
from CMBLib.detection.pipeline import detect  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402

SPOTS = [((30, 40, 10), 1.6), ((60, 55, 13), 3.5)]
ZONED = {"location_filter": {"zones": ["deep_midline_veins"]}}


@pytest.fixture(autouse=True)
def _true_brain(monkeypatch):
    exact_brain_mask(monkeypatch)


def test_zone_bounds_hand_checked():
    # inside: internal cerebral vein level, vein of Galen, foramen of Monro; bounds included
    inside = [(0, -20, 12), (1.5, -40, 4), (-1, 0, 8), (0, -55, 10), (4.0, -60.0, 22.0), (-4.0, 5.0, -4.0)]
    # outside: medial thalamus 6 mm off the midline, pons, tectum, corpus callosum body, genu,
    # cortex, occipital midline (sagittal sinus), just off each bound
    outside = [(6, -18, 8), (0, -28, -30), (0, -32, -8), (0, -10, 26), (0, 20, 10), (40, -20, 12), (0, -86, 19),
               (4.01, -20, 12), (0, -60.01, 10), (0, 5.01, 10), (0, -20, -4.01), (0, -20, 22.01)]
    assert zone_of(inside, ["deep_midline_veins"]) == ["deep_midline_veins"] * len(inside)
    assert zone_of(outside, ["deep_midline_veins"]) == [None] * len(outside)
    assert zone_of(inside, []) == [None] * len(inside)


def test_model_zones_come_from_the_model_and_can_be_turned_off():
    assert model_zones(ZONED) == ("deep_midline_veins",)
    assert model_zones(ZONED, enabled=False) == ()
    assert model_zones({}) == ()
    with pytest.raises(CMBError, match="no location filter"):
        model_zones({"name": "m"}, enabled=True)
    with pytest.raises(CMBError, match="unknown location-filter zone 'choroid'"):
        model_zones({"location_filter": {"zones": ["choroid"]}})
    assert set(ZONES) == {"deep_midline_veins"}


def _fake_atlas(monkeypatch, mni_of_point, fail=None):
    """Replace the atlas route by a function RAS -> MNI (or an error)."""
    calls = []

    def fake(image, points, progress=None, cancel=None, **kw):
        calls.append(np.asarray(points))
        if fail:
            raise CMBError(fail)
        out = []
        for p in np.asarray(points):
            m = mni_of_point(p)
            out.append({"region": "thalamus", "category": "deep", "side": "left",
                        "mni_x": m[0], "mni_y": m[1], "mni_z": m[2]})
        return out

    monkeypatch.setattr(location, "locate_points", fake)
    return calls


def test_a_candidate_in_the_zone_is_suppressed_and_kept_aside(monkeypatch):
    vol, centres = phantom(SPOTS)
    small = np.asarray(centres[0])
    # the small spot maps onto the midline between the thalami, the large one 30 mm lateral
    _fake_atlas(monkeypatch, lambda p: (0.5, -20.0, 12.0) if np.linalg.norm(p - small) < 3 else (30.0, -20.0, 12.0))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 1 and len(res.suppressed) == 1
    kept, gone = res.records[0], res.suppressed[0]
    assert np.linalg.norm(np.subtract(gone["centre_ras"], small)) < 1.0
    assert gone["suppressed_by"] == "deep_midline_veins" and gone["label"] == 0
    # the mask holds only the kept finding, renumbered 1
    assert kept["label"] == 1 and set(np.unique(res.mask.array)) == {0, 1}
    assert res.dropped["location"] == 1
    assert res.settings["location_filter"] == ["deep_midline_veins"]
    doc = json.loads(json.dumps(detection_document(res), default=float))
    assert doc["cmb_count"] == 1 and doc["suppressed_candidates"][0]["suppressed_by"] == "deep_midline_veins"
    # turned off: both are findings, no registration asked for
    calls = _fake_atlas(monkeypatch, lambda p: (0.0, -20.0, 12.0))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location_filter=False)
    assert len(res.records) == 2 and res.suppressed == [] and calls == []


def test_location_is_computed_once_for_filter_and_location(monkeypatch):
    vol, _ = phantom(SPOTS)
    calls = _fake_atlas(monkeypatch, lambda p: (30.0, -20.0, 12.0))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)
    assert len(calls) == 1 and len(res.records) == 2
    assert all(r["location"] == "thalamus" and r["side"] == "left" for r in res.records)


def test_a_failed_registration_keeps_every_candidate_with_a_warning(monkeypatch):
    vol, _ = phantom(SPOTS)
    _fake_atlas(monkeypatch, None, fail="no foreground found in the image; cannot register the atlas to it")
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2 and res.suppressed == []
    assert res.warnings == ["location filter not applied: no foreground found in the image; "
                            "cannot register the atlas to it"]
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)
    assert len(res.records) == 2 and not any("location" in r for r in res.records)
    assert res.warnings[0].startswith("location filter not applied and location not determined: no foreground")


def test_models_without_zones_never_register(monkeypatch):
    vol, _ = phantom(SPOTS)
    calls = _fake_atlas(monkeypatch, lambda p: (0.0, -20.0, 12.0))
    res = detect(vol, dark_spot_model(), device="cpu")
    assert len(res.records) == 2 and calls == [] and res.settings["location_filter"] == []


def test_a_missing_registration_library_is_a_warning(monkeypatch):
    vol, _ = phantom(SPOTS)

    def no_sitk(*a, **k):
        raise ModuleNotFoundError("No module named 'SimpleITK'", name="SimpleITK")

    monkeypatch.setattr(location, "locate_points", no_sitk)
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2
    assert res.warnings == ["location filter not applied: atlas registration needs SimpleITK, not installed"]
