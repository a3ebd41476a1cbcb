"""Hand-computed cases for CMBLib/metrics (matching.py, pairing.py, components.py) written against the
mutants that survived a complete run of `scripts/mutation_test.py --module metrics` (docs/developer.md,
"Mutation testing"): default distances and text distances, explicit pairing, the file a probability map
is looked up by, ambiguous pairings, image lists, sidecar names, and the elements of a mask (structures,
binarisation, numbering dtype, sizes, majority labels)."""
import json
from pathlib import Path

import numpy as np
import pytest

from CMBLib.errors import CMBError
from CMBLib.geometry import equivalent_diameter_mm
from CMBLib.metrics.components import (
    _majority_labels,
    _renumber_ijk_order,
    describe_elements,
    foreground,
    is_probability_map,
    label_elements,
    structure,
)
from CMBLib.metrics.matching import match, match_valdo
from CMBLib.metrics.pairing import case_key, list_images, pair_files, read_sidecar

P = Path("/p")
R = Path("/r")


# --- matching --------------------------------------------------------------------------------------
def test_the_distance_defaults_to_5_mm():
    d = [[5.5, 20.0], [20.0, 4.9]]                              # 5.5 mm: a miss at 5 mm, a hit at 6
    assert match("valdo", d).pred_status == ["FP", "TP"]
    assert match_valdo(np.array(d)).pred_status == ["FP", "TP"]
    assert match("valdo", d, distance_mm=6.0).pred_status == ["TP", "TP"]


def test_match_reads_distances_given_as_text_as_numbers():
    # as text "10" < "9"; as numbers the prediction's nearest reference is the second (9 mm)
    m = match("valdo", [["10", "9"]], distance_mm=12)
    assert m.pairs == [(0, 1)] and m.ref_status == ["FN", "TP"]
    assert match("one_to_one", [["4.5", "7"]]).pairs == [(0, 0)]


def test_pair_files_pairs_unrelated_names_only_when_told_they_are_explicit():
    pred, ref = P / "scan_a_cmb_mask.nii.gz", R / "other_b.nii.gz"
    cases, unpaired = pair_files([pred], [ref])                   # not explicit by default: nothing in common
    assert cases == [{"case": "other_b", "ref": ref, "pred": None, "scores": None}] and unpaired == [pred]
    cases, unpaired = pair_files([pred], [ref], explicit=True)
    assert cases == [{"case": "other_b", "ref": ref, "pred": pred, "scores": None}] and unpaired == []
    # an explicitly named probability map is the prediction and scores it
    prob = P / "scan_a_cmb_prob.nii.gz"
    cases, _ = pair_files([prob], [ref], explicit=True)
    assert cases[0]["pred"] == prob and cases[0]["scores"] == prob


def test_pair_files_looks_up_the_probability_map_by_the_prediction_found():
    # the prediction is found by subject and session; of two maps of the subject, only the one with
    # the prediction's case key (T2S) is its map; looked up by the reference, both would share sub-01
    ref = R / "sub-01_ses-1_CMB.nii.gz"
    pred = P / "sub-01_ses-1_T2S_cmb_mask.nii.gz"
    maps = [P / "sub-01_ses-1_T1_cmb_prob.nii.gz", P / "sub-01_ses-1_T2S_cmb_prob.nii.gz"]
    cases, unpaired = pair_files([pred, *maps], [ref])
    assert cases[0]["pred"] == pred and cases[0]["scores"] == maps[1]
    assert unpaired == [maps[0]]


def test_pair_files_names_what_is_ambiguous():
    ref = R / "case1.nii.gz"
    with pytest.raises(CMBError, match=r"case1.nii.gz: several predictions match it \(case1_seg"):
        pair_files([P / "case1_seg.nii.gz", P / "case1_pred.nii.gz"], [ref])
    with pytest.raises(CMBError, match=r"several probability maps match it \(case1_prob"):
        pair_files([P / "case1_prob.nii.gz", P / "case1_probseg.nii.gz"], [ref])


def test_read_sidecar_tries_the_mask_name_with_json(tmp_path):
    mask = tmp_path / "x_seg.nii.gz"                           # case key x: no x_cmb.json beside it
    (tmp_path / "x_seg.json").write_text(json.dumps([{"label": 2, "score": 0.75, "location": "Deep"}]))
    assert read_sidecar(mask) == ({2: 0.75}, {2: "Deep"})
    assert read_sidecar(tmp_path / "y_seg.nii.gz") == ({}, {})
    assert read_sidecar(None) == ({}, {})
    # the detection output's NAME_cmb.json comes first, then the annotation's
    (tmp_path / "x_desc-cmb_annotation.json").write_text(json.dumps([{"label": 3, "score": 0.5}]))
    assert read_sidecar(mask) == ({3: 0.5}, {})
    (tmp_path / "x_cmb.json").write_text(json.dumps({"cmbs": [{"label": 4, "score": 0.25}]}))
    assert read_sidecar(mask) == ({4: 0.25}, {})


def test_pair_files_refuses_one_prediction_for_two_references():
    refs = [R / "case1_CMB.nii.gz", Path("/r2/case1_CMB.nii.gz")]
    with pytest.raises(CMBError, match="case1_cmb_mask.nii.gz pairs with two references: case1_CMB.nii.gz and"):
        pair_files([P / "case1_cmb_mask.nii.gz"], refs)


def test_pair_files_names_cases_that_share_a_key_by_their_file_names():
    refs = [R / "case1.nii.gz", R / "case1_CMB.nii.gz", R / "case2.nii.gz"]
    cases, _ = pair_files([], refs)
    assert [c["case"] for c in cases] == ["case1", "case1_CMB", "case2"]
    three = [R / "a.nii.gz", R / "a_CMB.nii.gz", R / "a_seg.nii.gz"]
    assert [c["case"] for c in pair_files([], three)[0]] == ["a", "a_CMB", "a_seg"]


# --- case keys and image lists -------------------------------------------------------------------
def test_case_key_keeps_a_name_that_is_only_a_tag():
    assert case_key("_mask.nii.gz") == "_mask"
    assert case_key("_cmb_mask.nii.gz") == "_cmb"                # _mask removed, _cmb alone is kept
    assert case_key("a/sub-1_T2S_cmb_mask.nii.gz") == "sub-1_T2S"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_list_images_reads_nested_folders_only_when_nothing_is_directly_inside(tmp_path):
    top = _touch(tmp_path / "a" / "x.nii.gz")
    _touch(tmp_path / "a" / "deeper" / "y.nii.gz")
    assert list_images([tmp_path / "a"]) == [top]
    nested = _touch(tmp_path / "b" / "sub-1" / "anat" / "z.nii.gz")
    _touch(tmp_path / "b" / ".cache" / "hidden.nii.gz")          # a hidden folder is not searched
    _touch(tmp_path / "b" / "sub-1" / "z_desc-scribbles.nii.gz")
    assert list_images([tmp_path / "b"]) == [nested]


def test_list_images_names_each_file_once(tmp_path):
    f = _touch(tmp_path / "d" / "x.nii.gz")
    assert list_images([f, f]) == [f]
    assert list_images([tmp_path / "d", f]) == [f]
    # the same file reached through a link to its folder: the first path named is kept
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "d", target_is_directory=True)
    assert list_images([f, link / "x.nii.gz"]) == [f]
    assert list_images([link / "x.nii.gz", f]) == [link / "x.nii.gz"]


# --- elements of a mask (components.py) ------------------------------------------------------------
def test_structures_of_6_18_and_26_connectivity():
    assert [int(structure(c).sum()) for c in (6, 18, 26)] == [7, 19, 27]
    assert all(structure(c).shape == (3, 3, 3) for c in (6, 18, 26))
    with pytest.raises(CMBError):
        structure(19)


def test_probability_maps_and_their_default_threshold():
    assert not is_probability_map(np.array([0.0, 1.0, 2.0]))           # a label map stored as floats
    assert is_probability_map(np.array([0.0, 0.5]))
    assert not is_probability_map(np.array([0, 1, 2]))
    a = np.zeros((1, 1, 3))
    a[0, 0] = [0.2, 0.5, 0.75]
    assert foreground(a).tolist() == [[[False, True, True]]]             # >= 0.5 unless told otherwise
    assert foreground(a, threshold=0.6).tolist() == [[[False, False, True]]]


def test_one_component_filling_the_array_is_numbered_in_int32():
    labelled, n = label_elements(np.ones((2, 2, 2), np.uint8))
    assert n == 1 and labelled.dtype == np.int32 and labelled.tolist() == np.ones((2, 2, 2), int).tolist()


def test_renumbering_leaves_its_input_alone():
    a = np.zeros((1, 1, 4), np.int32)
    a[0, 0] = [2, 0, 1, 0]                                            # element 2 comes first in (i, j, k) order
    out = _renumber_ijk_order(a, 2)
    assert out[0, 0].tolist() == [1, 0, 2, 0] and a[0, 0].tolist() == [2, 0, 1, 0]


def test_describe_elements_sizes_and_labels():
    labelled = np.zeros((4, 4, 4), np.int32)
    labelled[0:2, 0:2, 0:2] = 1                                      # 8 voxels
    labelled[3, 3, 3] = 2                                            # 1 voxel
    affine = np.diag([0.5, 0.5, 2.0, 1.0])                          # voxels of 0.5 mm3
    e1, e2 = describe_elements(labelled, 2, affine)                  # no original map: every label is 1
    assert (e1.label, e2.label) == (1, 1)
    assert (e1.voxel_count, e2.voxel_count) == (8, 1) and isinstance(e1.voxel_count, int)
    assert e1.volume_mm3 == 4.0 and e2.volume_mm3 == 0.5
    assert e1.diameter_mm == pytest.approx(equivalent_diameter_mm(4.0)) and e1.diameter_mm == pytest.approx(
        (6 * 4.0 / np.pi) ** (1 / 3))
    assert e1.centre_ijk == (0.5, 0.5, 0.5) and e1.centre_ras == (0.25, 0.25, 1.0)
    assert e2.to_dict() == {"index": 2, "label": 1, "voxel_count": 1, "volume_mm3": 0.5,
                            "diameter_mm": e2.diameter_mm, "size_class": "<5mm", "centre_ijk": (3.0, 3.0, 3.0),
                            "centre_ras": (1.5, 1.5, 6.0), "score": None, "location": None}


def test_majority_labels_of_each_element():
    lab = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    # element 1: two voxels of 3, two of 5 (a tie: the lower value); element 2: one 7 and three 9s (counts
    # are compared with counts, not with the values)
    assert _majority_labels(lab, 2, np.array([5, 3, 5, 3, 7, 9, 9, 9])) == [3, 9]
    assert _majority_labels(lab, 2, np.array([5.0, 3.0, 5.0, 3.0, 7.0, 9.0, 9.0, 9.0])) == [3, 9]
    # boolean and probability maps, or none: label 1; an element without voxels: 1
    assert _majority_labels(lab, 2, np.ones(8, bool)) == [1, 1]
    assert _majority_labels(lab, 2, np.full(8, 0.4)) == [1, 1]            # 0.4 would round to 0
    assert _majority_labels(lab, 2, None) == [1, 1]
    assert _majority_labels(np.array([1, 1]), 3, np.array([4, 4])) == [4, 1, 1]


def test_an_element_of_a_probability_map_binarised_low_is_label_1():
    prob = np.zeros((3, 3, 3))
    prob[1, 1, 1] = prob[1, 1, 2] = 0.35
    labelled, n = label_elements(prob, threshold=0.3)
    (e,) = describe_elements(labelled, n, np.eye(4), original=prob, score_map=prob)
    assert (n, e.label, e.voxel_count, e.score) == (1, 1, 2, 0.35)


def test_foreground_names_the_map_and_bounds_probabilities_by_1():
    with pytest.raises(CMBError, match="^mask: has 2 dimensions"):
        foreground(np.zeros((2, 2)))
    with pytest.raises(CMBError, match="^mask: has 2 dimensions"):
        label_elements(np.zeros((2, 2)))
    with pytest.raises(CMBError, match="^prediction: has 2 dimensions"):
        label_elements(np.zeros((2, 2)), name="prediction")
    assert foreground(np.array([[[0.3, 1.0]]])).tolist() == [[[False, True]]]       # a probability of 1 is fine
    with pytest.raises(CMBError, match="outside"):
        foreground(np.array([[[0.5, 1.5]]]))


def test_label_elements_defaults_26_connectivity_and_threshold_0_5():
    diagonal = np.zeros((3, 3, 3))
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 0.75                         # corners touch: one element
    diagonal[2, 2, 0] = 0.45                                             # below 0.5: not a CMB voxel
    labelled, n = label_elements(diagonal)
    assert n == 1 and int((labelled > 0).sum()) == 2
    empty, n = label_elements(np.zeros((2, 2, 2), np.uint8))
    assert n == 0 and empty.dtype == np.int32 and not empty.any()


def test_label_elements_of_a_boolean_map_by_label():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[2, 2, 2] = True                                 # two pieces, one label value
    labelled, n = label_elements(mask, elements="labels")
    assert n == 1 and labelled[0, 0, 0] == labelled[2, 2, 2] == 1 and int((labelled > 0).sum()) == 2
