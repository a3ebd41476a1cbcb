"""Hand-computed cases for the annotation export (CMBLib/annotation/dataset.py) written against the
mutants that survived a complete run of `scripts/mutation_test.py --module annotation_export`
(docs/developer.md, "Mutation testing"): BIDS names, table cells, segment tags, table rows and their
merge, the subjects listed."""
import json

import numpy as np
import pytest

from CMBLib.annotation import dataset as ds
from CMBLib.errors import CMBError


def _study(labels=(1, 2, 3)):
    """The synthetic study of test_annotation_dataset: image, scribbles, cube mask, annotation."""
    from test_annotation_dataset import annotated_doc, cube_mask, synthetic_study

    vol, scr = synthetic_study()
    return vol, scr, cube_mask(vol), annotated_doc(labels=labels)


def test_subject_labels_and_sequence_names():
    assert ds.subject_label("sub-01") == "01" and ds.subject_label(" P12 ") == "P12"
    for bad in ("sub-0_1", "sub-", "", "a b"):
        with pytest.raises(CMBError, match="only letters and digits"):
            ds.subject_label(bad)
    assert [ds.sequence_name(s) for s in ("T2*", " swi ", "chimap", "GRE", "t2s")] == [
        "T2starw", "SWI", "QSM", "T2starw", "T2starw"]
    with pytest.raises(CMBError, match="is not one of"):
        ds.sequence_name("flair")


def test_subject_files(tmp_path):
    f = ds.subject_files(tmp_path, "sub-07", "qsm")
    d = tmp_path / "derivatives" / "cmb_annotation" / "sub-07" / "anat"
    assert f == {"image": tmp_path / "sub-07" / "anat" / "sub-07_Chimap.nii.gz",
                 "mask": d / "sub-07_desc-cmb_dseg.nii.gz", "scribbles": d / "sub-07_desc-scribbles_dseg.nii.gz",
                 "annotation": d / "sub-07_desc-cmb_annotation.json",
                 "segmentation": d / "sub-07_desc-cmb_dseg.seg.nrrd"}
    assert ds.subject_files(tmp_path, "7", "SWI", name="r2")["mask"] == (
        tmp_path / "derivatives" / "r2" / "sub-7" / "anat" / "sub-7_desc-cmb_dseg.nii.gz")


def test_table_cells():
    assert [ds._cell(v) for v in (None, True, False, 3, 2.0, 10.0, 0.5, 1.23456, 1.23454, float("nan"),
                                  float("inf"), "a\tb\nc")] == [
        "n/a", "true", "false", "3", "2", "10", "0.5", "1.2346", "1.2345", "n/a", "n/a", "a b c"]
    assert [ds._int(v) for v in ("3", "x", None, "")] == [3, 0, 0, 0]


def test_tag_text_is_one_ascii_line_without_bars():
    assert ds._tag_text("hémorragie") == "hemorragie"
    assert ds._tag_text("a|b") == "a/b"
    assert ds._tag_text("line 1\nline 2\t end  ") == "line 1 line 2 end"
    assert ds._tag_text("漢") == "?"
    assert ds._tag_text(None) == "n/a" and ds._tag_text(True) == "true" and ds._tag_text(0.25) == "0.25"
    assert ds._tag_text("a\x07b\x1fc") == "a b c"                        # control characters


FINDING = {"label": 2, "review_status": "confirmed", "certainty": "definite", "size_class": "<5mm",
           "location": "Lobar", "side": "left", "comment": "x|y", "centre_ras": [1.5, -2.25, 3.0],
           "mask": {"voxel_count": 12, "volume_mm3": 6.0, "diameter_mm": 2.2545}, "max_probability": 0.91234}


def test_segment_tags_and_segments():
    tags = ds.segment_tags(FINDING)
    assert tags["cmb.label"] == "2" and tags["cmb.review_status"] == "confirmed" and tags["cmb.comment"] == "x/y"
    assert tags["cmb.cause"] == "n/a"                                   # every field, "n/a" when absent
    assert set(tags) == {"cmb.label", *(f"cmb.{k}" for k in ds.TAG_FIELDS), "cmb.mask_volume_mm3",
                         "cmb.mask_diameter_mm", "cmb.mask_voxel_count"}
    assert (tags["cmb.mask_volume_mm3"], tags["cmb.mask_diameter_mm"], tags["cmb.mask_voxel_count"]) == (
        "6", "2.2545", "12")
    assert "cmb.mask_volume_mm3" not in ds.segment_tags({"label": 3, "mask": {"volume_mm3": None}})
    doc = {"findings": [FINDING, dict(FINDING, label=3), dict(FINDING, label=5)]}
    segments = ds.segments_from_document(doc, [0, 2, 5])
    assert [(s["labelValue"], s["id"], s["name"]) for s in segments] == [(2, "CMB_2", "CMB 2"), (5, "CMB_5", "CMB 5")]
    assert segments[0]["tags"] == tags


def test_cmb_table_rows_and_participant_row():
    (row,) = ds.cmb_table_rows({"findings": [FINDING]}, "sub-04")
    assert list(row) == ds.TABLE_COLUMNS
    assert row == {"participant_id": "sub-04", "label": "2", "review_status": "confirmed", "certainty": "definite",
                   "size_class": "<5mm", "size_class_suggested": "n/a", "location": "Lobar", "location_group": "n/a",
                   "side": "left", "cause": "n/a", "multiple": "n/a", "problematic": "n/a", "x_ras": "1.5",
                   "y_ras": "-2.25", "z_ras": "3", "voxel_count": "12", "volume_mm3": "6", "diameter_mm": "2.2545",
                   "max_probability": "0.9123"}
    (bare,) = ds.cmb_table_rows({"findings": [{"label": 1}]}, "9")
    assert (bare["x_ras"], bare["voxel_count"], bare["participant_id"]) == ("n/a", "n/a", "sub-9")
    doc = {"study": {"sequence": "SWI", "inclusion": "included", "quality": "good"},
           "findings": [FINDING, dict(FINDING, review_status="rejected"), dict(FINDING, review_status="unreviewed")]}
    assert ds._participant_row(doc, "04") == {"participant_id": "sub-04", "sequence": "SWI", "n_cmb": "2",
                                              "inclusion": "included", "quality": "good"}


def test_merge_rows_replaces_the_subject_keeps_the_others_and_extra_columns(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tsequence\tage\nsub-02\tSWI\t70\nsub-01\tQSM\t65\n", encoding="utf-8")
    new = [{"participant_id": "sub-01", "sequence": "T2starw", "n_cmb": "3", "inclusion": "included",
            "quality": "good"}]
    text = ds._merge_rows(path, ds.PARTICIPANT_COLUMNS, new, "sub-01", sort_key=lambda r: r["participant_id"])
    assert text == ("participant_id\tsequence\tn_cmb\tinclusion\tquality\tage\n"
                    "sub-01\tT2starw\t3\tincluded\tgood\tn/a\n"
                    "sub-02\tSWI\tn/a\tn/a\tn/a\t70\n")
    fresh = ds._merge_rows(tmp_path / "none.tsv", ["participant_id", "x"], [{"participant_id": "sub-1", "x": "1"}],
                           "sub-1", sort_key=lambda r: r["participant_id"])
    assert fresh == "participant_id\tx\nsub-1\t1\n"
    assert ds.read_tsv(tmp_path / "none.tsv") == []
    assert ds.read_tsv(path)[1] == {"participant_id": "sub-01", "sequence": "QSM", "age": "65"}


def test_list_subjects(tmp_path):
    assert ds.list_subjects(tmp_path) == []
    root = tmp_path / "derivatives" / "cmb_annotation"
    for name in ("sub-02", "sub-01", ".sub-03", "other"):
        (root / name).mkdir(parents=True)
    (root / "sub-04").write_text("a file, not a subject")
    assert ds.list_subjects(tmp_path) == ["01", "02"]
    assert ds.list_subjects(tmp_path, name="other") == []


def test_dataset_descriptions():
    from CMBLib.annotation import vocabulary as V

    raw = ds._raw_description()
    assert raw.startswith('{\n  "Name": "CMB annotation dataset",') and raw.endswith("}\n")
    assert json.loads(raw) == {"Name": "CMB annotation dataset", "BIDSVersion": "1.9.0", "DatasetType": "raw",
                               "GeneratedBy": [{"Name": V.TOOL_NAME}]}
    from CMBLib.annotation.document import tool_version

    text = ds._derivative_description("r2")
    assert text.startswith('{\n  "Name": "CMB annotations (r2)",') and text.endswith("}\n")
    assert json.loads(text) == {
        "Name": "CMB annotations (r2)", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": V.TOOL_NAME, "Version": tool_version(),
                         "Description": "Scribbles, grown CMB instance masks and BOMBS metadata; annotation schema "
                                        f"version {V.SCHEMA_VERSION}"}],
        "SourceDatasets": [{"URL": "../../"}]}


def test_stage_text_creates_its_folders(tmp_path):
    path = ds._stage_text(tmp_path / "new" / "tmp", "cmb_table.tsv", "label\tcomment\n1\thémorragie\n")
    assert path == tmp_path / "new" / "tmp" / "tables" / "cmb_table.tsv"
    assert path.read_bytes() == "label\tcomment\n1\thémorragie\n".encode()


def test_commit_keeps_what_must_not_be_replaced_and_goes_on(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    keep, new_a, new_b = tmp / "k", tmp / "a", tmp / "b"
    for p, text in ((keep, "staged description"), (new_a, "new a"), (new_b, "new b")):
        p.write_text(text)
    root = tmp_path / "root"
    root.mkdir()
    (root / "dataset_description.json").write_text("the user's own")
    (root / "a.tsv").write_text("old a")
    ds._commit([(keep, root / "dataset_description.json", False), (new_a, root / "a.tsv", True),
                (new_b, root / "sub" / "b.tsv", True)], tmp)
    assert (root / "dataset_description.json").read_text() == "the user's own"
    assert (root / "a.tsv").read_text() == "new a" and (root / "sub" / "b.tsv").read_text() == "new b"


def test_import_names_the_subjects_there_are_and_reads_a_named_derivative(tmp_path):
    vol, scr, mask, doc = _study()
    root = tmp_path / "dataset"
    ds.export_subject(root, "01", vol, scr, mask, doc, name="rater2")
    study = ds.import_subject(root, "01", name="rater2")
    assert [s["labelValue"] for s in study.segments] == [1, 2, 3]
    assert study.document["study"]["sequence"] == "T2starw"
    with pytest.raises(CMBError, match=r"sub-05: not found in .*; subjects: 01$"):
        ds.import_subject(root, "05", name="rater2")
    with pytest.raises(CMBError, match=r"sub-01: not found in [^;]*$"):
        ds.import_subject(root, "01")                                   # the default derivative holds none
    # an annotation edited by hand without its sequence: the T2*-weighted image is looked for
    path = root / "derivatives" / "rater2" / "sub-01" / "anat" / "sub-01_desc-cmb_annotation.json"
    edited = json.loads(path.read_text(encoding="utf-8"))
    del edited["study"]["sequence"]
    path.write_text(json.dumps(edited), encoding="utf-8")
    assert ds.import_subject(root, "01", name="rater2").image.array.shape == vol.array.shape


def test_read_tsv_keeps_line_breaks_inside_quoted_cells(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes(b'participant_id\tcomment\r\nsub-01\t"two\r\nlines"\r\n')
    assert ds.read_tsv(path) == [{"participant_id": "sub-01", "comment": "two\r\nlines"}]


def test_merge_rows_into_an_empty_file_or_one_with_ragged_rows(tmp_path):
    new = [{"participant_id": "sub-01", "x": "1"}]
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert ds._merge_rows(empty, ["participant_id", "x"], new, "sub-01", sort_key=lambda r: r["participant_id"]) == (
        "participant_id\tx\nsub-01\t1\n")
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("participant_id\tx\nsub-02\t2\tstray cell\n")
    assert ds._merge_rows(ragged, ["participant_id", "x"], new, "sub-01", sort_key=lambda r: r["participant_id"]) == (
        "participant_id\tx\nsub-01\t1\nsub-02\t2\n")


def test_rejected_findings_leave_the_exported_mask():
    import numpy as np

    from CMBLib.geometry import Volume

    mask = Volume(np.array([[[0, 1, 2, 3]]], np.int32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    doc = {"findings": [{"label": 1, "review_status": "confirmed"}, {"label": 2, "review_status": "rejected"},
                        {"label": 3, "review_status": "unreviewed"}]}
    out = ds._without_rejected(mask, doc)
    assert out.array.dtype == np.uint16 and out.array.tolist() == [[[0, 1, 0, 3]]]
    kept = ds._without_rejected(mask, {"findings": [{"label": 1, "review_status": "confirmed"}]})
    assert kept.array.dtype == np.uint16 and kept.array.tolist() == [[[0, 1, 2, 3]]]


def test_export_reports_progress_writes_uint16_masks_and_replaces_the_whole_subject(tmp_path):
    import nibabel as nib
    from test_annotation_dataset import annotated_doc, cube_mask, synthetic_study

    from CMBLib.annotation.masks import measure_masks

    vol, scr = synthetic_study()
    mask = cube_mask(vol)
    m = mask.array.copy()
    m[m == 1] = 10                                            # labels 10, 2, 3: the table sorts them as numbers
    mask = mask.with_array(m)
    doc = annotated_doc(labels=(10, 2, 3))
    measure_masks(mask, doc)
    root = tmp_path / "dataset"
    seen = []
    files = ds.export_subject(root, "01", vol, scr, mask, doc, name="rater2",
                              progress=lambda f, msg: seen.append((f, msg)))
    assert seen == [(0.1, "writing the image"), (0.4, "writing the masks"), (0.7, "updating the tables"),
                    (0.9, "moving the subject into place"), (1.0, "exported sub-01")]
    assert nib.load(str(files["mask"])).get_data_dtype() == np.uint16
    assert nib.load(str(files["scribbles"])).get_data_dtype() == np.uint16
    deriv = root / "derivatives" / "rater2"
    assert json.loads((deriv / "dataset_description.json").read_text())["Name"] == "CMB annotations (rater2)"
    assert [r["label"] for r in ds.read_tsv(deriv / "cmb_table.tsv")] == ["2", "3", "10"]
    assert not list(root.glob(".cmb-export-*"))                      # the staging folder is gone
    # overwriting replaces the image too
    brighter = vol.with_array(vol.array + 100.0)
    ds.export_subject(root, "01", brighter, scr, mask, doc, name="rater2", overwrite=True)
    assert np.allclose(ds.import_subject(root, "01", name="rater2").image.array, brighter.array)


def test_export_takes_the_sequence_from_the_document_and_refuses_a_half_existing_subject(tmp_path):
    from test_annotation_dataset import annotated_doc, cube_mask, synthetic_study

    vol, scr = synthetic_study()
    mask = cube_mask(vol)
    doc = annotated_doc()
    doc["study"]["sequence"] = "SWI"
    files = ds.export_subject(tmp_path / "a", "01", vol, scr, mask, doc)
    assert files["image"].name == "sub-01_swi.nii.gz" and files["image"].is_file()
    del doc["study"]["sequence"]
    assert ds.export_subject(tmp_path / "b", "01", vol, scr, mask, doc)["image"].name == "sub-01_T2starw.nii.gz"
    (tmp_path / "c" / "sub-01").mkdir(parents=True)                   # the raw subject only, no derivative
    with pytest.raises(CMBError, match="sub-01 already exists"):
        ds.export_subject(tmp_path / "c", "01", vol, scr, mask, doc)
    (tmp_path / "d" / "derivatives" / "cmb_annotation" / "sub-01").mkdir(parents=True)   # the derivative only
    with pytest.raises(CMBError, match="sub-01 already exists"):
        ds.export_subject(tmp_path / "d", "01", vol, scr, mask, doc)
    # a table edited by hand keeps its rows sorted by subject, then label as a number, at the next export
    table = tmp_path / "a" / "derivatives" / "cmb_annotation" / "cmb_table.tsv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    ds.export_subject(tmp_path / "a", "02", vol, scr, mask, annotated_doc("02"))
    assert [(r["participant_id"], r["label"]) for r in ds.read_tsv(table)] == [
        ("sub-01", "1"), ("sub-01", "2"), ("sub-01", "3"), ("sub-02", "1"), ("sub-02", "2"), ("sub-02", "3")]


def test_export_checks_label_ranges_and_grids_and_leaves_the_document_alone(tmp_path):
    import copy

    from test_annotation_dataset import annotated_doc, cube_mask, synthetic_study

    assert ds.subject_label("p12") == "p12"                                  # lower-case letters too
    vol, scr = synthetic_study()
    mask = cube_mask(vol)
    doc = annotated_doc()
    before = copy.deepcopy(doc)
    ds.export_subject(tmp_path / "a", "01", vol, scr, mask, doc, sequence="SWI")
    assert doc == before
    shifted = scr.with_array(scr.array)
    shifted.origin = (0.0, 0.0, 0.0)
    with pytest.raises(CMBError, match="^scribbles: geometry differs from the image"):
        ds.export_subject(tmp_path / "b", "01", vol, shifted, mask, doc)
    for bad in (-1, 65536):
        labels = mask.array.astype(np.int64)
        labels[0, 0, 0] = bad
        with pytest.raises(CMBError, match=r"^mask: labels must lie in 0\.\.65535"):
            ds.export_subject(tmp_path / "c", "01", vol, scr, mask.with_array(labels), doc)
    top = mask.array.astype(np.int64)
    top[0, 0, 0] = 65535                                                     # the largest label allowed
    with pytest.raises(CMBError, match="mask label 65535 has no finding"):
        ds.export_subject(tmp_path / "d", "01", vol, scr, mask.with_array(top), doc)
    with pytest.raises(CMBError):
        ds.export_subject(tmp_path / "e", "01", vol, scr, mask, {"findings": doc["findings"]})


def test_a_subject_without_its_slicer_segmentation_imports_with_no_segments(tmp_path):
    from test_annotation_dataset import annotated_doc, cube_mask, synthetic_study

    vol, scr = synthetic_study()
    files = ds.export_subject(tmp_path, "01", vol, scr, cube_mask(vol), annotated_doc())
    assert len(ds.import_subject(tmp_path, "01").segments) == 3
    files["segmentation"].unlink()
    assert ds.import_subject(tmp_path, "01").segments == []
