"""Location-based suppression of candidates in CSF / venous anatomy (CMBLib/detection/location_filter.py),
its registration gate, and the worker's "location_filter" key."""
import io
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import shared_file  # noqa: E402
from detection_fixtures import dark_spot_model, exact_brain_mask, phantom  # noqa: E402

import CMBLib.location as location  # noqa: E402
from CMBLib.detection.location_filter import ZONES, compartment_distance, model_zones, zone_of  # noqa: E402
from CMBLib.detection.outputs import detection_document  # noqa: E402
from CMBLib.detection.pipeline import detect  # noqa: E402
from CMBLib.errors import CMBError  # noqa: E402

# a phantom long enough (135 mm front to back) for the zone's box to lie in view wherever the
# fake registrations below put the small spot
SPOTS = [((30, 100, 10), 1.6), ((60, 105, 13), 3.5)]
ZONED = {"location_filter": {"zones": ["deep_midline_veins"]}}
ZONE = ["deep_midline_veins"]

# MNI RAS mm.  In the zone: CSF / venous anatomy of the atlas (internal cerebral veins in the
# velum interpositum, vein of Galen and pineal in the quadrigeminal cistern, third ventricle).
VEINS = [(0, -20, 12), (0, -45, 5), (1, -40, 4), (0, -33, 2), (0, -20, 0), (0, -2, -2)]
# Parenchyma inside the old box (|x| <= 4, y -60..5, z -4..22), never set aside: the medial
# thalamic CMB issue 26 found set aside (--location called it thalamus), medial thalamus next
# to the third ventricle, splenium, fornix columns, corpus callosum body.
PARENCHYMA = [(2.1, -3.6, 4.2), (3, -12, 4), (3.5, -20, 6), (2.5, -10, 2), (0, -38, 16), (0, -35, 20),
              (1, 2, 8), (0, 0, 10), (0, -10, 22)]


@pytest.fixture(autouse=True)
def _true_brain(monkeypatch):
    exact_brain_mask(monkeypatch)


def study():
    return phantom(SPOTS, shape_kji=(24, 150, 96), origin=(-40.0, -90.0, -30.0))


def test_the_zone_holds_csf_and_veins_not_parenchyma():
    assert zone_of(VEINS, ZONE) == ZONE * len(VEINS)
    assert zone_of(PARENCHYMA, ZONE) == [None] * len(PARENCHYMA)
    # outside the box whatever the compartment: lateral thalamus, pons, tectum below the box,
    # cortex, occipital midline (sagittal sinus), just off each bound
    outside = [(6, -18, 8), (0, -28, -30), (0, -32, -8), (40, -20, 12), (0, -86, 19),
               (4.01, -20, 12), (0, -60.01, 10), (0, 5.01, 10), (0, -20, -4.01), (0, -20, 22.01)]
    assert zone_of(outside, ZONE) == [None] * len(outside)
    assert zone_of(VEINS, []) == [None] * len(VEINS)
    assert zone_of([(np.nan, 0, 0)], ZONE) == [None]
    # "at most 1 mm": the parenchyma points are farther, the veins on the compartments
    zone = ZONES["deep_midline_veins"]
    assert np.all(compartment_distance(PARENCHYMA, zone.compartments, zone.box_mni_mm) > 1.0)
    assert np.all(compartment_distance(VEINS, zone.compartments, zone.box_mni_mm) <= 1.0)


def test_model_zones_come_from_the_model_and_can_be_turned_off():
    assert model_zones(ZONED) == ("deep_midline_veins",)
    assert model_zones(ZONED, enabled=False) == ()
    assert model_zones({}) == ()
    with pytest.raises(CMBError, match="no location filter"):
        model_zones({"name": "m"}, enabled=True)
    with pytest.raises(CMBError, match="unknown location-filter zone 'choroid'"):
        model_zones({"location_filter": {"zones": ["choroid"]}})
    assert set(ZONES) == {"deep_midline_veins", "symmetric_pairs"}


def fake_registration(subject_ras, mni_ras, **quality):
    """A RegistrationResult that carries the subject point `subject_ras` to MNI `mni_ras` (a
    translation) with the quality figures of a good registration, unless `quality` says otherwise."""
    import SimpleITK as sitk

    from CMBLib.location.registration import RegistrationResult

    s, m = np.asarray(subject_ras, float), np.asarray(mni_ras, float)
    t = sitk.TranslationTransform(3, ((-s[0]) - (-m[0]), (-s[1]) - (-m[1]), s[2] - m[2]))
    figures = dict(metric=-0.5, inside_fraction=1.0, scales=(1.0, 1.0, 1.0), coverage=1.0)
    figures.update({k: v for k, v in quality.items() if k != "interior_mi"})
    res = RegistrationResult(sitk.AffineTransform(3), **figures)
    res.transform.SetTranslation(t.GetOffset())
    res.interior_mi = quality.get("interior_mi", 0.3)
    return res


def _fake_atlas(monkeypatch, registration=None, fail=None):
    """Replace the atlas registration of `detect` by `registration` (or an error); returns the calls."""
    calls = []

    def fake(image, progress=None, cancel=None):
        calls.append(image)
        if fail:
            raise CMBError(fail)
        return registration

    monkeypatch.setattr(location, "registration_for", fake)
    return calls


def _small_spot(vol):
    return np.asarray(vol.voxel_to_ras(list(SPOTS[0][0])), float)


def test_a_vein_candidate_is_set_aside_and_kept_aside(monkeypatch):
    vol, centres = study()
    small = _small_spot(vol)
    # the small spot maps onto the internal cerebral veins, the large one 27 mm to the right
    _fake_atlas(monkeypatch, fake_registration(small, (0.0, -20.0, 12.0)))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 1 and len(res.suppressed) == 1 and res.warnings == []
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
    calls = _fake_atlas(monkeypatch, fake_registration(small, (0.0, -20.0, 12.0)))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location_filter=False)
    assert len(res.records) == 2 and res.suppressed == [] and calls == []


def test_a_thalamic_cmb_next_to_the_third_ventricle_stays_a_finding(monkeypatch):
    """The medial thalamic CMB that the old box set aside (issue 26), and medial thalamus 3 mm off
    the midline: in the old box, more than 1 mm from the third ventricle: findings."""
    vol, _ = study()
    for mni in [(2.1, -3.6, 4.2), (3.0, -12.0, 4.0)]:
        _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), mni))
        res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)
        assert len(res.records) == 2 and res.suppressed == [] and res.warnings == []
        assert sorted(r["location"] for r in res.records)[1] == "thalamus"


def test_location_and_filter_share_one_registration(monkeypatch):
    vol, _ = study()
    calls = _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)
    assert len(calls) == 1 and len(res.records) == 1 and len(res.suppressed) == 1
    assert res.records[0]["location"] and res.records[0]["side"] in ("left", "right", "midline")


def test_the_registration_is_cached_per_image(monkeypatch):
    """`registration_for` registers an image once (the same voxels read again hit the cache)."""
    from CMBLib.location import locate
    from CMBLib.location import registration as reg_module

    calls = []
    monkeypatch.setattr(reg_module, "register_template", lambda *a, **k: calls.append(1) or "registered")
    monkeypatch.setattr(locate, "_REGISTRATIONS", type(locate._REGISTRATIONS)())
    vol, _ = study()
    again = vol.with_array(vol.array.copy())
    assert locate.registration_for(vol) == "registered" == locate.registration_for(again)
    assert len(calls) == 1
    other = vol.with_array(vol.array + 1)
    locate.registration_for(other)
    assert len(calls) == 2


def test_a_failed_registration_keeps_every_candidate_with_a_warning(monkeypatch):
    vol, _ = study()
    _fake_atlas(monkeypatch, fail="no foreground found in the image; cannot register the atlas to it")
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2 and res.suppressed == []
    assert res.warnings == ["location filter not applied: no foreground found in the image; "
                            "cannot register the atlas to it"]
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)
    assert len(res.records) == 2 and not any("location" in r for r in res.records)
    assert res.warnings[0].startswith("location filter not applied and location not determined: no foreground")


@pytest.mark.parametrize("quality, reason", [
    ({"interior_mi": 0.01}, "does not look like a brain"),
    ({"coverage": 0.4}, "40% of the brain (a slab)"),
    ({"scales": (0.5, 1.0, 1.0)}, "implausible scale"),
])
def test_the_gate_refuses_a_poor_registration_with_one_warning(monkeypatch, quality, reason):
    vol, _ = study()
    _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0), **quality))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2 and res.suppressed == []
    assert len(res.warnings) == 1 and res.warnings[0].startswith("location filter not applied: ")
    assert reason in res.warnings[0]


def test_the_gate_refuses_a_zone_outside_the_field_of_view(monkeypatch):
    vol, _ = study()
    # the spot is the zone's back end: its front (y 5) lies 65 mm ahead, off the image
    _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -60.0, 12.0)))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2 and res.warnings == ["location filter not applied: the deep midline lies "
                                                      "partly outside the field of view"]


def test_no_registration_when_no_candidate_is_near_a_zone(monkeypatch):
    from CMBLib.detection import pipeline

    vol, _ = study()
    calls = _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    monkeypatch.setattr(pipeline, "NEAR_ZONE_MM", 5.0)          # both spots farther from the centre
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert calls == [] and len(res.records) == 2 and res.warnings == []
    res = detect(vol, dark_spot_model(**ZONED), device="cpu", location=True)   # location still registers
    assert len(calls) == 1


def test_models_without_zones_never_register(monkeypatch):
    vol, _ = study()
    calls = _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    res = detect(vol, dark_spot_model(), device="cpu")
    assert len(res.records) == 2 and calls == [] and res.settings["location_filter"] == []


def test_a_missing_registration_library_is_a_warning(monkeypatch):
    vol, _ = study()

    def no_sitk(*a, **k):
        raise ModuleNotFoundError("No module named 'SimpleITK'", name="SimpleITK")

    monkeypatch.setattr(location, "registration_for", no_sitk)
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    assert len(res.records) == 2
    assert res.warnings == ["location filter not applied: atlas registration needs SimpleITK, not installed"]


def test_the_gate_says_no_on_a_phantom():
    """A real registration of an ellipsoidal phantom (uniform noisy 'brain', a dark dot at its
    centre): it may pass the old checks (a brain-shaped outline), the filter's gate refuses it."""
    from CMBLib.location import registration as R
    from CMBLib.location.atlas import load_atlas

    vol, _ = phantom([((56, 60, 16), 2.0)], spacing=(1.2, 1.2, 3.0), shape_kji=(40, 120, 112), seed=3)
    a = np.asarray(vol.array)
    k, j, i = np.meshgrid(*(np.arange(n) for n in a.shape), indexing="ij")
    x, y, z = (i - 55.5) * 1.2, (j - 59.5) * 1.2, (k - 19.5) * 3.0
    big = (x / 68) ** 2 + (y / 82) ** 2 + (z / 58) ** 2 <= 1          # brain-sized
    vol = vol.with_array(np.where(big, np.where(a == 30, 30.0, 100 + 3 * np.random.default_rng(0).standard_normal(
        a.shape)), 0).astype(np.float32))
    template, mask = load_atlas().template_sitk()
    try:
        res = R.register_template(template, mask, vol)
    except CMBError:
        return                                             # refused by the old checks already
    problems = R.filter_problems(res, vol, ZONES["deep_midline_veins"].box_mni_mm)
    assert any("does not look like a brain" in p for p in problems), problems


def test_a_real_brain_keeps_its_thalamic_cmb_and_sets_its_vein_aside():
    """The real FreeSurfer brain as a T2*-like image (1.6 - norm / 110), registered for real:
    a point of the medial thalamus 2-3 mm lateral of the third ventricle (its own labels) is not in
    the zone, a point of the velum interpositum just above the third ventricle is."""
    from scipy import ndimage

    from CMBLib.geometry import Volume
    from CMBLib.io import read_volume

    labels = read_volume(shared_file("real/freesurfer_subject/aparc.a2009s+aseg.nii.gz"))
    norm = read_volume(shared_file("real/freesurfer_subject/norm.nii.gz"))
    lab = np.asarray(labels.array)
    # every other voxel (2 mm, the same world coordinates; 8 x less work), sulcal CSF kept bright
    small = np.ascontiguousarray(lab[::2, ::2, ::2])
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(small > 0, iterations=2) | (small > 0))
    t2s = np.clip(1.6 - norm.array[::2, ::2, ::2].astype(np.float32) / 110, 0.05, None) * brain
    image = Volume(t2s.astype(np.float32), tuple(2 * s for s in norm.spacing), norm.origin, norm.direction)
    reg = location.registration_for(image)
    box = tuple(slice(max(a.min() - 12, 0), a.max() + 12) for a in np.nonzero(lab == 14))   # around the 3rd ventricle
    crop = lab[box]
    v3 = labels.kji_to_ras(np.argwhere(lab == 14).astype(float))
    x_mid = float(np.median(v3[:, 0]))
    d3 = ndimage.distance_transform_edt(crop != 14)
    corner = np.array([b.start for b in box], float)
    thal = np.isin(crop, (10, 49)) & (d3 >= 2.0) & (d3 <= 3.0)
    pts = labels.kji_to_ras(np.argwhere(thal) + corner)
    medial = pts[(np.abs(pts[:, 0] - x_mid) >= 2.5) & (np.abs(pts[:, 2] - np.median(v3[:, 2])) <= 3)]
    assert len(medial) > 20
    picked = medial[np.random.default_rng(0).choice(len(medial), 20, replace=False)]
    assert zone_of(reg.subject_to_template_ras(picked), ZONE) == [None] * 20
    csf = labels.kji_to_ras(np.argwhere(np.isin(crop, (14, 24))) + corner)
    roof = csf[np.abs(csf[:, 0] - x_mid) <= 1.0]
    y = float(np.median(v3[:, 1]))
    vein = roof[np.abs(roof[:, 1] - y) <= 1.0]
    vein = vein[np.argmax(vein[:, 2])] - (0.0, 0.0, 1.0)          # 1 mm below the top of the midline CSF
    assert zone_of(reg.subject_to_template_ras(vein[None]), ZONE) == ZONE


def test_the_worker_honours_location_filter_false(monkeypatch, tmp_path):
    """Through the worker's JSON protocol: by default the vein candidate is set aside (one finding,
    one suppressed candidate in NAME_cmb.json); with "location_filter": false both are findings;
    a value other than true / false / null is refused."""
    from CMBLib.cli.worker import serve
    from CMBLib.detection import model_io
    from CMBLib.io import write_volume

    vol, _ = study()
    write_volume(vol, tmp_path / "img.nrrd")
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model(**ZONED))
    _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    jobs = [{"id": "default", "location_filter": None}, {"id": "off", "location_filter": False},
            {"id": "on", "location_filter": True}, {"id": "bad", "location_filter": "no"}]
    lines = [json.dumps(dict(job, image=str(tmp_path / "img.nrrd"), out=str(tmp_path / job["id"]), device="cpu"))
             for job in jobs]
    events = []
    serve(io.StringIO("\n".join(lines) + "\n"), events.append)
    answers = {e["id"]: e for e in events if e["event"] in ("result", "error")}
    docs = {k: json.loads(open(answers[k]["outputs"]["json"], encoding="utf-8").read())
            for k in ("default", "off", "on")}
    assert answers["default"]["cmb_count"] == 1 and len(docs["default"]["suppressed_candidates"]) == 1
    assert answers["off"]["cmb_count"] == 2 and docs["off"]["suppressed_candidates"] == []
    assert answers["on"]["cmb_count"] == 1
    assert answers["bad"]["event"] == "error" and "location_filter must be true, false or null" in \
        answers["bad"]["message"]


def test_the_worker_null_is_the_models_default_and_true_needs_a_filter(monkeypatch, tmp_path):
    """"location_filter": null means the model's default, not "on": a model without a filter sets
    nothing aside (both candidates are findings, no registration asked for) and true is refused
    for it in one line; false and null differ only for a model with a filter (test above)."""
    from CMBLib.cli.worker import serve
    from CMBLib.detection import model_io
    from CMBLib.io import write_volume

    vol, _ = study()
    write_volume(vol, tmp_path / "img.nrrd")
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model())
    calls = _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    jobs = [{"id": "default"}, {"id": "null", "location_filter": None}, {"id": "off", "location_filter": False},
            {"id": "on", "location_filter": True}]
    lines = [json.dumps(dict(job, image=str(tmp_path / "img.nrrd"), out=str(tmp_path / job["id"]), device="cpu"))
             for job in jobs]
    events = []
    serve(io.StringIO("\n".join(lines) + "\n"), events.append)
    answers = {e["id"]: e for e in events if e["event"] in ("result", "error")}
    for key in ("default", "null", "off"):
        doc = json.loads(open(answers[key]["outputs"]["json"], encoding="utf-8").read())
        assert answers[key]["cmb_count"] == 2 and doc["suppressed_candidates"] == [], key
    assert calls == []
    assert answers["on"]["event"] == "error" and "has no location filter" in answers["on"]["message"]
    assert not (tmp_path / "on").exists() or not any((tmp_path / "on").iterdir())


def test_set_aside_candidates_have_their_own_table_and_thumbnails_in_the_report(monkeypatch, tmp_path):
    """`cmb detect --report` and `cmb report --detections` show the candidates set aside, apart from
    the counted findings, each with a thumbnail; the count of CMBs leaves them out."""
    import re

    from CMBLib.cli import main
    from CMBLib.detection import model_io
    from CMBLib.io import write_volume
    from CMBLib.report.html import study_report_html

    vol, _ = study()
    _fake_atlas(monkeypatch, fake_registration(_small_spot(vol), (0.0, -20.0, 12.0)))
    res = detect(vol, dark_spot_model(**ZONED), device="cpu")
    page = study_report_html(vol, res.records, suppressed=res.suppressed)
    assert "Number of CMBs: 1</b>" in page
    aside = page[page.index("Set aside by the location filter (1, not counted)"):]
    assert "deep midline veins" in aside and aside.count("data:image/png;base64,") == 1
    assert page.count("data:image/png;base64,") == 2        # the finding's thumbnail and the set-aside one
    assert "Set aside" not in study_report_html(vol, res.records)
    # the command line, from the written NAME_cmb.json
    write_volume(vol, tmp_path / "img.nii.gz")
    monkeypatch.setattr(model_io, "load_model", lambda name, device="cpu", models_dir=None: dark_spot_model(**ZONED))
    assert main(["detect", str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--report"]) == 0
    page = (tmp_path / "out" / "img_cmb_report.html").read_text(encoding="utf-8")
    assert re.search(r"Set aside by the location filter \(1, not counted\)", page)
    assert main(["report", "--detections", str(tmp_path / "out" / "img_cmb.json"), "--image",
                 str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / "again")]) == 0
    page = (tmp_path / "again" / "img_cmb_report.html").read_text(encoding="utf-8")
    assert "Set aside by the location filter (1, not counted)" in page and "aside 1" in page
