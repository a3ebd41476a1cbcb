"""Dataset export/import (BIDS derivatives), masks for findings, autosave sessions, and the CLI."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import CMBLib.io as cmbio
from CMBLib.annotation import dataset as ds
from CMBLib.annotation.document import complete_document, load_schema, new_document, new_finding, validate_document
from CMBLib.annotation.masks import (
    ensure_findings,
    generate_masks,
    labels_on_image_grid,
    measure_masks,
    suggest_locations,
)
from CMBLib.annotation.session import SessionStore, volume_key
from CMBLib.cli import main as cmb_main
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume, geometry_difference
from CMBLib.io import read_segmentation, read_volume, write_volume

SPACING = (0.8, 0.8, 2.0)
# CMB centres (k, j, i) and radii (mm); 2 and 3 touch each other.
CMBS = [((6, 10, 10), 2.4), ((6, 22, 20), 2.4), ((6, 22, 25), 2.4)]


def rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def synthetic_study(scribble_labels=(1, 2, 3)):
    """Noisy image with dark spheres; scribbles: a short line in each sphere of `scribble_labels`."""
    shape = (12, 32, 36)
    rng = np.random.default_rng(1)
    image = rng.normal(200.0, 5.0, shape).astype(np.float32)
    scribbles = np.zeros(shape, np.uint16)
    kk, jj, ii = np.indices(shape)
    for label, ((k, j, i), r) in enumerate(CMBS, start=1):
        d = np.sqrt(((ii - i) * SPACING[0]) ** 2 + ((jj - j) * SPACING[1]) ** 2 + ((kk - k) * SPACING[2]) ** 2)
        image[d <= r] = 60.0 + rng.normal(0.0, 5.0, int((d <= r).sum()))
        if label in scribble_labels:
            scribbles[k, j, i - 1:i + 2] = label
    vol = Volume(image, SPACING, (-12.5, 30.0, 4.0), rotation(20))
    return vol, vol.with_array(scribbles)


def cube_mask(vol):
    """Instance mask with hand-made cubes for labels 1..3 (no growing)."""
    m = np.zeros(vol.array.shape, np.uint16)
    for label, ((k, j, i), _) in enumerate(CMBS, start=1):
        m[k - 1:k + 1, j - 1:j + 1, i - 1:i + 1] = label
    return vol.with_array(m)


def annotated_doc(subject="01", labels=(1, 2, 3)):
    doc = new_document(subject, "T2starw", rater="r1")
    doc["findings"] = [new_finding(v, certainty="certain", location="frontal", side="left", cause="caa")
                       for v in labels]
    doc["findings"][0]["comment"] = "rim | next to a vein\nsecond line, hémorragie 微"
    return doc


def tree_hashes(root: Path):
    """{relative path: sha256} of every file and folder (hidden ones included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str(Path(dirpath, name).relative_to(root)) + "/"] = "dir"
        for name in filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def exported(tmp_path):
    vol, scr = synthetic_study()
    mask = cube_mask(vol)
    doc = annotated_doc()
    measure_masks(mask, doc)
    root = tmp_path / "dataset"
    ds.export_subject(root, "01", vol, scr, mask, doc)
    return root, vol, scr, mask, doc


# --- dataset -------------------------------------------------------------------------------
def test_layout_and_round_trip(exported):
    root, vol, scr, mask, doc = exported
    files = ds.subject_files(root, "01", "T2starw")
    for path in files.values():
        assert path.is_file(), path
    assert files["image"] == root / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    assert "cmb" in files["mask"].name and "dseg" in files["mask"].name
    assert json.loads((root / "dataset_description.json").read_text(encoding="utf-8"))["BIDSVersion"]
    description = root / "derivatives" / "cmb_annotation" / "dataset_description.json"
    deriv = json.loads(description.read_text(encoding="utf-8"))
    assert deriv["DatasetType"] == "derivative"

    study = ds.import_subject(root, "sub-01")
    np.testing.assert_array_equal(study.image.array, vol.array)
    np.testing.assert_array_equal(study.mask.array, mask.array)
    np.testing.assert_array_equal(study.scribbles.array, scr.array)
    for v in (study.image, study.mask, study.scribbles):
        assert geometry_difference(v, vol, tol_mm=1e-4) == ""
        np.testing.assert_allclose(v.direction, vol.direction, atol=1e-6)
    expected = dict(doc, study=dict(doc["study"], image="sub-01_T2starw.nii.gz"))
    assert study.document == expected
    # measurements by hand: 8 voxels of 0.8 x 0.8 x 2 mm
    f = study.document["findings"][0]
    assert f["mask"]["voxel_count"] == 8 and f["mask"]["volume_mm3"] == pytest.approx(8 * 1.28)
    assert f["size_class"] == "<5mm"
    np.testing.assert_allclose(f["centre_ras"], vol.kji_to_ras([5.5, 9.5, 9.5]), atol=1e-3)


def test_seg_nrrd_carries_segments_and_metadata(exported):
    root, vol, scr, mask, doc = exported
    labelmap, segments = read_segmentation(ds.subject_files(root, "01", "T2starw")["segmentation"])
    np.testing.assert_array_equal(labelmap.array, mask.array)
    assert geometry_difference(labelmap, vol, tol_mm=1e-4) == ""
    assert [s["name"] for s in segments] == ["CMB 1", "CMB 2", "CMB 3"]
    assert [s["labelValue"] for s in segments] == [1, 2, 3]
    tags = segments[0]["tags"]
    assert tags["cmb.certainty"] == "certain" and tags["cmb.location"] == "frontal"
    assert tags["cmb.location_group"] == "lobar" and tags["cmb.mask_voxel_count"] == "8"
    assert tags["cmb.comment"] == "rim / next to a vein second line, hemorragie ?"
    study = ds.import_subject(root, "01")
    assert study.segments[2]["tags"]["cmb.cause"] == "caa"


def test_tables_list_every_cmb_and_overwrite_replaces_rows(exported):
    root, vol, scr, mask, doc = exported
    doc2 = annotated_doc("02", labels=(1, 2))
    ds.export_subject(root, "02", vol, scr.with_array(np.where(scr.array == 3, 0, scr.array)),
                      mask.with_array(np.where(mask.array == 3, 0, mask.array)), doc2)
    table = ds.read_tsv(root / "derivatives" / "cmb_annotation" / "cmb_table.tsv")
    assert [(r["participant_id"], r["label"]) for r in table] == [
        ("sub-01", "1"), ("sub-01", "2"), ("sub-01", "3"), ("sub-02", "1"), ("sub-02", "2")]
    assert table[0]["voxel_count"] == "8" and table[3]["voxel_count"] == "n/a"
    doc["findings"][1]["review_status"] = "rejected"
    ds.export_subject(root, "01", vol, scr, mask, doc, overwrite=True)
    table = ds.read_tsv(root / "derivatives" / "cmb_annotation" / "cmb_table.tsv")
    assert len(table) == 5 and table[1]["review_status"] == "rejected"
    participants = ds.read_tsv(root / "participants.tsv")
    assert [(p["participant_id"], p["n_cmb"]) for p in participants] == [("sub-01", "2"), ("sub-02", "2")]
    # a rejected finding stays in the document but leaves the CMB mask
    study = ds.import_subject(root, "01")
    assert ds.list_subjects(root) == ["01", "02"]
    assert sorted(np.unique(study.mask.array)) == [0, 1, 3]
    assert study.document["findings"][1]["review_status"] == "rejected"


def test_existing_subject_is_never_overwritten_silently(exported):
    root, vol, scr, mask, doc = exported
    before = tree_hashes(root)
    doc["findings"][0]["certainty"] = "uncertain"
    with pytest.raises(CMBError, match=r"sub-01 already exists .*\(use --overwrite"):
        ds.export_subject(root, "01", vol, scr, mask, doc)
    assert tree_hashes(root) == before


@pytest.mark.parametrize("fail_at", ["write_segmentation", "commit_tables"])
def test_interrupted_export_leaves_dataset_byte_identical(exported, monkeypatch, fail_at):
    root, vol, scr, mask, doc = exported
    ds.export_subject(root, "02", vol, scr, mask, annotated_doc("02"))
    before = tree_hashes(root)
    if fail_at == "write_segmentation":
        def broken(*args, **kwargs):
            raise OSError("disk full")
        monkeypatch.setattr(cmbio, "write_segmentation", broken)
    else:
        real_replace = os.replace

        def broken(src, dst):          # the subject folders are already swapped when the tables fail
            if Path(dst).name == "cmb_table.tsv" and Path(src).parent.name == "tables":
                raise KeyboardInterrupt
            return real_replace(src, dst)
        monkeypatch.setattr(os, "replace", broken)
    doc["findings"][0]["certainty"] = "uncertain"
    with pytest.raises((OSError, KeyboardInterrupt)):
        ds.export_subject(root, "01", vol, scr, mask, doc, overwrite=True)
    with pytest.raises((OSError, KeyboardInterrupt)):
        ds.export_subject(root, "03", vol, scr, mask, annotated_doc("03"))
    assert tree_hashes(root) == before
    assert ds.import_subject(root, "01").document["findings"][0]["certainty"] == "certain"


def test_interrupted_first_export_leaves_nothing(tmp_path, monkeypatch):
    vol, scr = synthetic_study()
    mask = cube_mask(vol)

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(cmbio, "write_json_atomic", broken)
    with pytest.raises(OSError):
        ds.export_subject(tmp_path / "new", "01", vol, scr, mask, annotated_doc())
    assert tree_hashes(tmp_path) in ({}, {"new/": "dir"})


def test_export_refuses_bad_input(tmp_path):
    vol, scr = synthetic_study()
    mask = cube_mask(vol)
    with pytest.raises(CMBError, match="letters and digits"):
        ds.export_subject(tmp_path, "01_a", vol, scr, mask, annotated_doc())
    with pytest.raises(CMBError, match="mask label 3 has no finding"):
        ds.export_subject(tmp_path, "01", vol, scr, mask, annotated_doc(labels=(1, 2)))
    bad = annotated_doc()
    bad["findings"][1]["cause"] = "stroke"
    with pytest.raises(CMBError, match=r"findings\[1\]\.cause: 'stroke' is not one of caa"):
        ds.export_subject(tmp_path, "01", vol, scr, mask, bad)
    moved = Volume(mask.array, SPACING, (0, 0, 0), mask.direction)
    with pytest.raises(CMBError, match="mask: geometry differs from the image: origin"):
        ds.export_subject(tmp_path, "01", vol, scr, moved, annotated_doc())
    with pytest.raises(CMBError, match="sequence 'T1w' is not one of"):
        ds.export_subject(tmp_path, "01", vol, scr, mask, annotated_doc(), sequence="T1w")
    assert tree_hashes(tmp_path) == {}


# --- masks for findings ---------------------------------------------------------------------
def test_empty_scribble_label_keeps_its_finding_without_mask(tmp_path):
    vol, scr = synthetic_study(scribble_labels=(1, 2))
    doc = annotated_doc()                      # findings 1, 2, 3; scribble 3 has no voxels
    mask, doc = generate_masks(vol, scr, doc)
    assert sorted(np.unique(mask.array)) == [0, 1, 2]
    f3 = doc["findings"][2]
    assert f3["mask"] is None and f3["size_class"] == "unreviewed" and f3["size_class_suggested"] is None
    validate_document(doc)
    ds.export_subject(tmp_path, "01", vol, scr, mask, doc)
    rows = ds.read_tsv(tmp_path / "derivatives" / "cmb_annotation" / "cmb_table.tsv")
    assert [r["voxel_count"] for r in rows][2] == "n/a"


def test_touching_masks_stay_separate_and_keep_their_labels():
    vol, scr = synthetic_study()
    doc = new_document("01")
    mask, doc = generate_masks(vol, scr, doc)
    m = mask.array
    assert [f["label"] for f in doc["findings"]] == [1, 2, 3]
    for label in (1, 2, 3):
        assert np.all(m[scr.array == label] == label)           # each mask holds its scribble
        assert doc["findings"][label - 1]["mask"]["voxel_count"] == int((m == label).sum()) > 3
    two = m == 2
    near_two = np.zeros_like(two)
    near_two[:, :, 1:] |= two[:, :, :-1]
    near_two[:, :, :-1] |= two[:, :, 1:]
    assert np.any(near_two & (m == 3)), "spheres 2 and 3 touch: their masks should be face neighbours"
    # true sphere: 4.8 mm diameter; each grown mask must be close to it and centred within 1 mm
    for label, ((k, j, i), _r) in enumerate(CMBS, start=1):
        f = doc["findings"][label - 1]
        assert f["size_class"] == "<5mm"
        assert np.linalg.norm(np.subtract(f["centre_ras"], vol.kji_to_ras([k, j, i]))) < 1.0


def test_regrowing_selected_findings_keeps_the_others_and_rater_size_class():
    vol, scr = synthetic_study()
    doc = new_document("01")
    mask, doc = generate_masks(vol, scr, doc)
    doc["findings"][1]["size_class"] = "5-10mm"                # the rater overrides the suggestion
    edited = scr.array.copy()
    edited[scr.array == 1] = 0
    edited[6, 10, 9] = 1                                         # a shorter scribble for finding 1
    mask2, doc = generate_masks(vol, scr.with_array(edited), doc, labels=[1, 2], mask=mask)
    np.testing.assert_array_equal(mask2.array == 3, mask.array == 3)
    assert doc["findings"][1]["size_class"] == "5-10mm" and doc["findings"][1]["size_class_suggested"] == "<5mm"


def test_location_suggestions_from_a_locator():
    vol, scr = synthetic_study()
    mask, doc = generate_masks(vol, scr, new_document("01"))

    class FakeLocator:
        def locate(self, points):
            assert np.asarray(points).shape == (3, 3)
            return [{"region": "thalamus", "category": "deep", "side": "left"},
                    {"region": "outside", "category": "outside", "side": "right"},
                    {"region": "frontal", "category": "lobar", "side": "midline"}]
    doc, note = suggest_locations(vol, doc, locator=FakeLocator())
    assert note == ""
    assert [f["location_suggested"] for f in doc["findings"]] == ["thalamus", None, "frontal"]
    assert [f["side_suggested"] for f in doc["findings"]] == ["left", "right", "midline"]
    assert [f["location"] for f in doc["findings"]] == ["unreviewed"] * 3
    validate_document(doc)


def test_scribble_the_engine_refuses_still_gives_one_cmb():
    vol, scr = synthetic_study()
    image = vol.array.copy()
    image[:, :, :4] = 0.0                                      # background slab (outside the head)
    labels = scr.array.copy()
    labels[6, 16, 1:3] = 4                                     # scribble 4 drawn on the background
    mask, doc = generate_masks(vol.with_array(image), scr.with_array(labels), new_document("01"))
    assert sorted(np.unique(mask.array)) == [0, 1, 2, 3, 4]
    assert int((mask.array == 4).sum()) == 2                   # the scribble itself
    assert "the scribble is the mask" in doc["findings"][3]["mask"]["warnings"][0]
    assert doc["findings"][0]["mask"]["voxel_count"] > 20      # the others still grown
    validate_document(doc)


def test_labels_on_image_grid_places_a_cropped_block_exactly():
    vol, scr = synthetic_study()
    lo = np.array([4, 8, 6])                                   # (k, j, i) of the block corner
    block = scr.array[4:9, 8:26, 6:30]
    cropped = Volume(block, vol.spacing, vol.kji_to_ras(lo), vol.direction)
    placed = labels_on_image_grid(cropped, vol)
    np.testing.assert_array_equal(placed.array, scr.array)
    assert geometry_difference(placed, vol) == ""
    half = Volume(block, vol.spacing, vol.kji_to_ras(lo + 0.5), vol.direction)
    with pytest.raises(CMBError, match="scribbles: grid is shifted from the image's by a fraction"):
        labels_on_image_grid(half, vol)
    coarse = Volume(block, (1.0, 1.0, 2.0), vol.kji_to_ras(lo), vol.direction)
    with pytest.raises(CMBError, match="scribbles: spacing differs from the image's"):
        labels_on_image_grid(coarse, vol)
    outside = Volume(block, vol.spacing, vol.kji_to_ras([4, 8, 20]), vol.direction)
    with pytest.raises(CMBError, match="labelled voxels lie outside the image"):
        labels_on_image_grid(outside, vol)


def test_measure_masks_by_hand():
    vol = Volume(np.zeros((4, 4, 4), np.uint16), (0.5, 0.5, 2.0), (0, 0, 0), np.eye(3))
    m = np.zeros((4, 4, 4), np.uint16)
    m[1:3, 1:3, 1:3] = 5
    doc = measure_masks(vol.with_array(m), new_document())
    f = doc["findings"][0]
    assert f["label"] == 5 and f["mask"]["volume_mm3"] == pytest.approx(4.0)
    assert f["mask"]["diameter_mm"] == pytest.approx((6 * 4.0 / np.pi) ** (1 / 3), abs=1e-4)
    assert f["centre_ras"] == pytest.approx([0.75, 0.75, 3.0])
    assert ensure_findings(doc, [2, 5])["findings"][0]["label"] == 2


# --- sessions -------------------------------------------------------------------------------
def test_session_save_load_and_key(tmp_path):
    vol, scr = synthetic_study()
    key = volume_key(vol)
    assert key == volume_key(Volume(vol.array.copy(), vol.spacing, vol.origin, vol.direction))
    assert key != volume_key(Volume(vol.array, (0.8, 0.8, 2.5), vol.origin, vol.direction))
    changed = vol.array.copy()
    changed[::7, ::7, ::7] += 1
    assert key != volume_key(vol.with_array(changed))
    store = SessionStore(tmp_path / "sessions")
    assert not store.has(key)
    doc = annotated_doc()
    store.save(key, doc, scr, None, volume_name="T2S")
    loaded, scribbles, masks = store.load(key)
    assert loaded == doc and masks is None
    np.testing.assert_array_equal(scribbles.array, scr.array)
    assert store.info(key)["volume"] == "T2S" and store.keys() == [key]


def test_session_save_is_atomic_and_recovers_after_a_crash(tmp_path, monkeypatch):
    vol, scr = synthetic_study()
    store = SessionStore(tmp_path)
    key = volume_key(vol)
    store.save(key, annotated_doc(), scr, cube_mask(vol))
    good = tree_hashes(tmp_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(cmbio, "write_json_atomic", broken)
    doc = annotated_doc()
    doc["findings"][0]["certainty"] = "uncertain"
    with pytest.raises(OSError):
        store.save(key, doc, scr)
    assert tree_hashes(tmp_path) == good
    # a crash between the two renames of a swap: only the '.old' copy exists
    os.replace(tmp_path / key, tmp_path / f".{key}.old.x1")
    assert store.has(key)
    assert store.load(key)[0]["findings"][0]["certainty"] == "certain"
    store.discard(key)
    assert not store.has(key)


# --- the commands ---------------------------------------------------------------------------
def write_inputs(tmp_path, scribble_labels=(1, 2, 3)):
    vol, scr = synthetic_study(scribble_labels)
    write_volume(vol, tmp_path / "T2S.nii.gz")
    write_volume(scr, tmp_path / "scribbles.nii.gz")
    return vol, scr


def test_cmb_export_end_to_end(tmp_path, capsys):
    vol, scr = write_inputs(tmp_path)
    (tmp_path / "ann.json").write_text(json.dumps({"findings": [{"label": 2, "certainty": "uncertain"}],
                                                   "mimics": [{"id": 1, "position_ras": [0, 0, 0],
                                                               "type": "cavernoma"}]}), encoding="utf-8")
    out = tmp_path / "DS"
    rc = cmb_main(["export", "--image", str(tmp_path / "T2S.nii.gz"), "--scribbles",
                   str(tmp_path / "scribbles.nii.gz"), "--annotation", str(tmp_path / "ann.json"),
                   "--out", str(out), "--subject", "P7", "--rater", "r9"])
    assert rc == 0, capsys.readouterr().err
    [mask_path] = sorted(out.rglob("*cmb*dseg*.nii.gz"))
    mask = read_volume(mask_path)
    assert geometry_difference(mask, read_volume(tmp_path / "T2S.nii.gz")) == ""
    assert sorted(np.unique(mask.array)) == [0, 1, 2, 3]
    for label, ((k, j, i), _) in enumerate(CMBS, start=1):
        centre = mask.kji_to_ras(np.argwhere(mask.array == label).mean(axis=0))
        assert np.linalg.norm(centre - vol.kji_to_ras([k, j, i])) < 1.0
    [ann_path] = sorted(out.rglob("*_annotation.json"))
    doc = json.loads(ann_path.read_text(encoding="utf-8"))
    import jsonschema
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert doc["rater"] == "r9" and doc["study"]["subject"] == "P7"
    assert [f["certainty"] for f in doc["findings"]] == ["unreviewed", "uncertain", "unreviewed"]
    assert doc["mimics"][0]["type"] == "cavernoma"

    before = tree_hashes(out)
    rc = cmb_main(["export", "--image", str(tmp_path / "T2S.nii.gz"), "--scribbles",
                   str(tmp_path / "scribbles.nii.gz"), "--out", str(out), "--subject", "P7"])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert tree_hashes(out) == before

    rc = cmb_main(["import-study", str(out), "--subject", "P7", "--out", str(tmp_path / "back")])
    assert rc == 0
    back = tmp_path / "back"
    assert (back / "sub-P7_T2starw.nii.gz").read_bytes() == (out / "sub-P7/anat/sub-P7_T2starw.nii.gz").read_bytes()
    assert json.loads((back / "sub-P7_annotation.json").read_text(encoding="utf-8")) == doc
    np.testing.assert_array_equal(read_volume(back / "sub-P7_cmb_mask.nii.gz").array, mask.array)
    assert cmb_main(["import-study", str(out), "--subject", "P7", "--out", str(back)]) == 2


def test_cmb_export_reports_bad_metadata_and_uses_given_masks(tmp_path, capsys):
    vol, scr = write_inputs(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"findings": [{"label": 1, "size_class": "big"}]}), encoding="utf-8")
    args = ["export", "--image", str(tmp_path / "T2S.nii.gz"), "--scribbles", str(tmp_path / "scribbles.nii.gz"),
            "--out", str(tmp_path / "DS"), "--subject", "01"]
    assert cmb_main(args + ["--annotation", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "findings[0].size_class: 'big' is not one of <5mm, 5-10mm, unreviewed" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "DS").exists()
    write_volume(cube_mask(vol), tmp_path / "mask.nii.gz")
    assert cmb_main(args + ["--masks", str(tmp_path / "mask.nii.gz"), "--sequence", "swi"]) == 0
    study = ds.import_subject(tmp_path / "DS", "01")
    np.testing.assert_array_equal(study.mask.array, cube_mask(vol).array)
    assert study.document["study"]["sequence"] == "SWI"
    assert (tmp_path / "DS" / "sub-01" / "anat" / "sub-01_swi.nii.gz").is_file()
    assert [f["mask"]["voxel_count"] for f in study.document["findings"]] == [8, 8, 8]


def test_cmb_export_accepts_a_cropped_slicer_segmentation(tmp_path):
    vol, scr = write_inputs(tmp_path)
    lo = np.array([3, 5, 4])
    block = Volume(scr.array[3:10, 5:30, 4:32], vol.spacing, vol.kji_to_ras(lo), vol.direction)  # as Slicer crops
    cmbio.write_segmentation(block, [{"labelValue": v, "name": f"CMB {v}"} for v in (1, 2, 3)],
                             tmp_path / "scribbles.seg.nrrd")
    rc = cmb_main(["export", "--image", str(tmp_path / "T2S.nii.gz"), "--scribbles",
                   str(tmp_path / "scribbles.seg.nrrd"), "--out", str(tmp_path / "DS"), "--subject", "01"])
    assert rc == 0
    study = ds.import_subject(tmp_path / "DS", "01")
    np.testing.assert_array_equal(study.scribbles.array, scr.array)
    assert sorted(np.unique(study.mask.array)) == [0, 1, 2, 3]


def test_complete_document_then_export_validates(tmp_path):
    vol, scr = synthetic_study()
    doc = complete_document({}, subject="01")
    mask, doc = generate_masks(vol, scr, doc)
    files = ds.export_subject(tmp_path, "01", vol, scr, mask, doc)
    validate_document(json.loads(files["annotation"].read_text(encoding="utf-8")))


# --- property: any grid, labels and metadata come back identical ------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from CMBLib.annotation import vocabulary as V  # noqa: E402


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), angle=st.floats(-90, 90), spacing=st.tuples(
    st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.floats(0.5, 6.0)), n=st.integers(0, 4),
       certainty=st.sampled_from(V.CERTAINTIES), location=st.sampled_from(V.LOCATIONS),
       comment=st.text(max_size=30))
def test_round_trip_property(tmp_path_factory, seed, angle, spacing, n, certainty, location, comment):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 12, 3))
    image = Volume(rng.normal(0, 1, shape).astype(np.float32), spacing, rng.normal(0, 50, 3), rotation(angle))
    labels = np.zeros(shape, np.uint16)
    for label in range(1, n + 1):
        labels[tuple(rng.integers(0, s) for s in shape)] = label
    present = sorted(int(v) for v in np.unique(labels) if v)
    doc = new_document(rater="h")
    doc["findings"] = [new_finding(v, certainty=certainty, location=location, comment=comment) for v in present]
    measure_masks(image.with_array(labels), doc)
    root = tmp_path_factory.mktemp("prop")
    files = ds.export_subject(root, "1", image, image.with_array(labels), image.with_array(labels), doc)
    study = ds.import_subject(root, "1")
    np.testing.assert_array_equal(study.image.array, image.array)
    np.testing.assert_array_equal(study.mask.array, labels)
    assert geometry_difference(study.mask, image, tol_mm=1e-3) == ""
    assert study.document["findings"] == doc["findings"]
    labelmap, segments = read_segmentation(files["segmentation"])
    np.testing.assert_array_equal(labelmap.array, labels)
    assert [s["tags"]["cmb.certainty"] for s in segments] == [certainty] * len(present)
