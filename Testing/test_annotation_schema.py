"""The annotation document: schema validation, error messages, builders, vocabulary, taxonomy map."""
import json
from pathlib import Path

import pytest

from CMBLib.annotation import vocabulary as V
from CMBLib.annotation.detections import accepted_labels, add_detections, add_findings, findings_from_detections
from CMBLib.annotation.document import (
    complete_document,
    document_errors,
    load_document,
    load_schema,
    new_document,
    new_finding,
    new_mimic,
    new_other_finding,
    next_label,
    save_document,
    set_field,
    validate_document,
)
from CMBLib.errors import CMBError

TAXONOMY = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "cmb_annotation_taxonomy.json"


def good_document():
    doc = new_document("P01", "SWI", rater="SI")
    doc["findings"] = [
        new_finding(1, certainty="certain", size_class="<5mm", location="subcortical_wm", side="left",
                    cause="caa", review_status="confirmed"),
        new_finding(2, certainty="uncertain", location="thalamus", side="right", cause="hypertension"),
        new_finding(3, cause="other", cause_other="amyloid-related", multiple=True, centre_ras=[1.0, 2.0, 3.0],
                    mask={"voxel_count": 8, "volume_mm3": 8.0, "diameter_mm": 2.48}),
    ]
    doc["mimics"] = [new_mimic(1, [10, -5, 2.5], "basal_ganglia_calcification", side="bilateral")]
    doc["other_findings"] = [new_other_finding(1, [0, 0, 0], "DVA", "left frontal")]
    doc["study"].update(inclusion="include", quality="sufficient", artefacts=["motion", "metal"])
    return doc


def test_good_document_validates_and_round_trips_through_json(tmp_path):
    doc = good_document()
    assert document_errors(doc) == []
    assert doc["findings"][0]["location_group"] == "lobar"
    assert doc["findings"][1]["location_group"] == "deep"
    path = save_document(doc, tmp_path / "a.json")
    assert load_document(path) == doc
    assert doc["schema_version"] == V.SCHEMA_VERSION and doc["tool"]["name"] == "CMBScribbleAnnotator"


@pytest.mark.parametrize("where, value, message", [
    (("findings", 2, "certainty"), "maybe",
     "findings[2].certainty: 'maybe' is not one of certain, uncertain, unreviewed"),
    (("findings", 0, "size_class"), "7mm", "findings[0].size_class: '7mm' is not one of <5mm, 5-10mm, unreviewed"),
    (("findings", 1, "review_status"), "accepted",
     "findings[1].review_status: 'accepted' is not one of proposed, confirmed, rejected, unreviewed"),
    (("mimics", 0, "type"), "vein", "mimics[0].type: 'vein' is not one of basal_ganglia_calcification"),
    (("study", "quality"), "good", "study.quality: 'good' is not one of sufficient"),
    (("findings", 0, "multiple"), "yes", "findings[0].multiple: 'yes' is not of type boolean"),
    (("findings", 0, "label"), 0, "findings[0].label: 0 fails minimum 1"),
    (("study", "subject"), "sub-01", "study.subject: 'sub-01' fails pattern"),
])
def test_bad_values_are_named_with_their_allowed_values(where, value, message):
    doc = good_document()
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(CMBError) as err:
        validate_document(doc)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_location_error_lists_every_location():
    doc = good_document()
    doc["findings"][0]["location"] = "lobar"
    text = document_errors(doc)[0]
    assert text.startswith("findings[0].location: 'lobar' is not one of cortex_gwj, subcortical_wm, frontal")
    for value in V.LOCATIONS:
        assert value in text


def test_missing_unknown_duplicate_and_artefact_errors():
    doc = good_document()
    del doc["findings"][1]["cause"]
    doc["findings"][0]["certanity"] = "certain"
    doc["findings"][2]["label"] = 1
    doc["study"]["artefacts"] = ["blurry"]
    errors = document_errors(doc)
    assert "findings[1]: missing field cause" in errors
    assert any(e.startswith("findings[0]: unknown field 'certanity'; allowed fields are") for e in errors)
    assert "findings[2].label: 1 is used twice; each must be unique" in errors
    assert any(e.startswith("study.artefacts[0]: 'blurry' is not one of blur, motion, metal") for e in errors)
    with pytest.raises(CMBError, match=r"\(and 3 more problems\)"):
        validate_document(doc)


def test_set_field_checks_value_and_updates_group():
    doc = good_document()
    set_field(doc, 2, "location", "cerebellum")
    assert doc["findings"][1]["location_group"] == "infratentorial"
    with pytest.raises(CMBError, match=r"findings\[1\]\.cause: 'stroke' is not one of caa, hypertension"):
        set_field(doc, 2, "cause", "stroke")
    assert doc["findings"][1]["cause"] == "hypertension"      # unchanged after a refusal
    with pytest.raises(CMBError, match="no finding with label 9"):
        set_field(doc, 9, "cause", "caa")
    assert next_label(doc) == 4


def test_complete_document_fills_unreviewed_defaults():
    doc = complete_document({"findings": [{"label": 4, "certainty": "uncertain", "location": "brainstem"}]},
                            subject="7", sequence="QSM", rater="r2")
    validate_document(doc)
    f = doc["findings"][0]
    assert (f["certainty"], f["size_class"], f["cause"], f["review_status"]) == (
        "uncertain", "unreviewed", "unreviewed", "unreviewed")
    assert f["location_group"] == "infratentorial" and f["multiple"] is False
    assert doc["study"]["subject"] == "7" and doc["study"]["sequence"] == "QSM" and doc["rater"] == "r2"
    with pytest.raises(CMBError, match=r"findings\[0\]: expected an object"):
        complete_document({"findings": [3]})
    with pytest.raises(CMBError, match="study: expected an object"):
        complete_document({"study": ["include"]})
    with pytest.raises(CMBError, match="mimics: expected a list"):
        complete_document({"mimics": {"type": "cavernoma"}})


def test_schema_enums_match_the_vocabulary():
    defs = load_schema()["$defs"]
    f = defs["finding"]["properties"]
    assert f["certainty"]["enum"] == list(V.CERTAINTIES)
    assert f["size_class"]["enum"] == list(V.SIZE_CLASSES)
    assert f["location"]["enum"] == list(V.LOCATIONS)
    assert f["cause"]["enum"] == list(V.CAUSES)
    assert f["review_status"]["enum"] == list(V.REVIEW_STATUSES)
    assert f["side"]["enum"] == list(V.SIDES)
    assert defs["mimic"]["properties"]["type"]["enum"] == list(V.MIMIC_TYPES)
    assert defs["study"]["properties"]["artefacts"]["items"]["enum"] == list(V.ARTEFACTS)
    assert defs["study"]["properties"]["quality"]["enum"] == list(V.QUALITIES)
    assert load_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # every region of the location helper is a location value with the same category
    try:
        from CMBLib.location.regions import CATEGORY
    except ImportError:
        pytest.skip("location helper not installed")
    for region, category in CATEGORY.items():
        if category != "outside":
            assert V.location_group(region) == category, region


def test_taxonomy_map_covers_every_live_option_of_the_platform_taxonomy():
    if not TAXONOMY.is_file():
        pytest.skip(f"{TAXONOMY} not present")
    taxonomy = json.loads(TAXONOMY.read_text(encoding="utf-8"))
    sections = [("study", taxonomy["studyClassify"]), ("series", taxonomy["seriesClassify"])]
    sections += [(o["category"], o["attributes"]) for o in taxonomy["objectTypes"] if not o["archived"]]
    checked = 0
    for section, attributes in sections:
        for attr in attributes:
            if attr["archived"]:
                continue
            key = f"{section}/{attr['name']}"
            assert key in V.TAXONOMY_MAP, key
            target, mapping = V.TAXONOMY_MAP[key]
            if attr["options"]:
                for option in attr["options"]:
                    assert option["name"] in mapping, (key, option["name"])
                    checked += 1
    assert checked >= 25
    # mapped values are legal values of the schema
    for value in V.TAXONOMY_MAP["CMB/Location"][1].values():
        assert value in V.LOCATIONS
    for value in V.TAXONOMY_MAP["CMB/Cause"][1].values():
        assert value in V.CAUSES
    for value in V.TAXONOMY_MAP["Mimics/Type"][1].values():
        assert value in V.MIMIC_TYPES


def test_detector_candidates_become_proposed_findings():
    records = [
        {"label": 1, "centre_ras": [1.5, 2.0, -3.0], "diameter_mm": 3.1, "volume_mm3": 15.6, "voxel_count": 20,
         "size_class": "<5mm", "max_probability": 0.93, "region": "thalamus", "category": "deep",
         "side": "left"},
        {"label": 2, "centre_ras": [0, 0, 0], "diameter_mm": 6.0, "volume_mm3": 113.1, "size_class": "5-10mm",
         "max_probability": 0.41, "region": "outside", "category": "outside", "side": "midline"},
    ]
    found = findings_from_detections(records)
    assert [f["review_status"] for f in found] == ["proposed", "proposed"]
    assert found[0]["location_suggested"] == "thalamus" and found[0]["side_suggested"] == "left"
    assert found[0]["location"] == "unreviewed"            # a suggestion, not the rater's answer
    assert found[1]["location_suggested"] is None and found[1]["size_class_suggested"] == "5-10mm"
    doc = good_document()
    mapping = add_detections(doc, records)
    assert mapping == {1: 4, 2: 5}                          # labels 1-3 are taken
    validate_document(doc)
    assert accepted_labels(doc, ["proposed"]) == [4, 5]
    with pytest.raises(CMBError, match=r"detections\[0\]\.centre_ras"):
        findings_from_detections([{"label": 1, "centre_ras": [1, 2]}])


def test_findings_from_the_detector_module_are_cleaned_and_relabelled():
    records = [{"label": 1, "centre_ras": [1.0, 2.0, 3.0], "max_probability": 0.9, "size_class": "<5mm",
                "location": "outside"},
               {"label": 7, "centre_ras": [4.0, 5.0, 6.0], "max_probability": 0.6, "size_class": "5-10mm",
                "location": "thalamus"}]
    try:
        from CMBLib.detection.outputs import records_to_findings
        incoming = records_to_findings(records, status="confirmed")
    except ImportError:
        incoming = [{"label": r["label"], "review_status": "confirmed", "source": "detector",
                     "centre_ras": r["centre_ras"], "location_suggested": r["location"]} for r in records]
    incoming[0]["unknown_key"] = 1
    doc = good_document()                                      # labels 1, 2, 3 are taken
    mapping = add_findings(doc, incoming)
    assert mapping == {1: 4, 7: 7}
    validate_document(doc)
    new = {f["label"]: f for f in doc["findings"]}
    assert new[4]["location_suggested"] is None and new[7]["location_suggested"] == "thalamus"
    assert new[4]["review_status"] == "confirmed" and new[4]["source"] == "detector"
    assert new[7]["location_group"] == "unreviewed"
    with pytest.raises(CMBError, match=r"findings\[0\]\.certainty: 'sure' is not one of certain"):
        add_findings(doc, [{"label": 9, "certainty": "sure"}])
