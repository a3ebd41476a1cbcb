"""Second stage (candidate classifier): features on hand-made shapes, the JSON tree ensemble,
checksums, and the pipeline dropping what the classifier rejects."""
import json
from pathlib import Path

import numpy as np
import pytest

from CMBLib.detection.second_stage import FEATURE_NAMES, TreeEnsemble, candidate_features, load_second_stage
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume


def _grid_with(shape_fn):
    """Model grid 1 x 1 x 2 mm, brain value 0, one dark structure of value -2 where shape_fn."""
    k, j, i = np.meshgrid(np.arange(30), np.arange(60), np.arange(60), indexing="ij")
    z, y, x = (k - 15) * 2.0, (j - 30) * 1.0, (i - 30) * 1.0
    a = np.where(shape_fn(x, y, z), -2.0, 0.0).astype(np.float32)
    a += np.random.default_rng(0).normal(0, 0.02, a.shape).astype(np.float32)
    return Volume(a, (1.0, 1.0, 2.0)), np.ones(a.shape, bool)


def _features(shape_fn):
    vol, brain = _grid_with(shape_fn)
    rec = {"centre_ras": vol.voxel_to_ras([30, 30, 15]).tolist(), "max_probability": 0.9,
           "mean_probability": 0.8, "volume_mm3": 30.0, "elongation": 1.2}
    prob = np.zeros(vol.array.shape, np.float32)
    f = candidate_features(vol.array, prob, brain, vol, [rec])[0]
    return dict(zip(FEATURE_NAMES, f))


def test_ball_and_vessels_differ_in_the_features_that_should_tell_them_apart():
    ball = _features(lambda x, y, z: x ** 2 + y ** 2 + z ** 2 <= 2.5 ** 2)
    tube_z = _features(lambda x, y, z: x ** 2 + y ** 2 <= 1.5 ** 2)           # crosses every slice
    tube_x = _features(lambda x, y, z: (y ** 2 + z ** 2 <= 1.5 ** 2))         # runs in-plane
    assert ball["contrast"] == pytest.approx(2.0, abs=0.1)
    # a ball of radius 2.5 mm: its dark region is compact; the tubes reach the 24 mm box
    assert ball["dark_extent1_mm"] < 2.0 and ball["dark_touches_box"] == 0.0
    assert tube_z["dark_extent1_mm"] > 5.0 and tube_z["dark_touches_box"] > 0.0
    assert tube_x["dark_extent1_mm"] > 5.0 and tube_x["dark_elongation"] > 3.0
    # continuation across slices: 4 mm above and below the ball is background, the z tube stays dark
    assert ball["cont_4mm"] < 0.2 and tube_z["cont_4mm"] > 0.8
    # Hessian at 2 mm: three positive curvatures for the ball, one about zero for a tube
    # (at 1 mm the 2 mm slices make the through-plane derivative mostly noise)
    assert ball["hess2_ratio_min"] > 0.3 and abs(tube_z["hess2_ratio_min"]) < 0.05


def test_in_plane_line_features_tell_a_dot_from_an_in_plane_vessel_and_a_dark_area():
    """The internal cerebral veins run within an axial slice: on their slice they are a line
    (one in-plane curvature, dark 6 mm away on both sides along the line), a CMB is a dot
    (two equal curvatures, background 6 mm away in every direction), a diffuse dark area is
    dark in every direction."""
    ball = _features(lambda x, y, z: x ** 2 + y ** 2 + z ** 2 <= 2.5 ** 2)
    tube_x = _features(lambda x, y, z: (y ** 2 + z ** 2 <= 1.5 ** 2))            # in-plane, along x
    tube_d = _features(lambda x, y, z: ((x - y) ** 2 / 2 + z ** 2 <= 1.5 ** 2))  # in-plane, diagonal
    area = _features(lambda x, y, z: (x ** 2 + y ** 2 <= 12.0 ** 2) & (np.abs(z) <= 1.0))
    for tube in (tube_x, tube_d):
        assert tube["hess2d2_ratio"] < 0.1 < 0.8 < ball["hess2d2_ratio"]
        assert tube["line6_max"] > 0.9 and tube["line6_min"] < 0.1
    assert ball["line6_max"] < 0.1 and ball["line3_max"] < 0.5
    assert area["line6_min"] > 0.9


def _tiny_ensemble(threshold=0.5, split=1.0):
    """One stump on contrast (> split -> +2 log-odds, else -2) after a zero prior."""
    f = FEATURE_NAMES.index("contrast")
    tree = {"left": [1, -1, -1], "right": [2, -1, -1], "feature": [f, -2, -2], "threshold": [split, -2, -2],
            "value": [0.0, -2.0, 2.0]}
    return {"kind": "gradient_boosted_trees", "features": list(FEATURE_NAMES), "init": 0.0, "learning_rate": 1.0,
            "threshold": threshold, "trees": [tree]}


def test_tree_ensemble_hand_computed_and_matches_scikit_learn():
    ens = TreeEnsemble(_tiny_ensemble())
    x = np.zeros((2, len(FEATURE_NAMES)))
    x[1, FEATURE_NAMES.index("contrast")] = 1.5
    assert ens.probability(x) == pytest.approx([1 / (1 + np.exp(2)), 1 / (1 + np.exp(-2))])
    sklearn = pytest.importorskip("sklearn.ensemble")
    from CMBLib.detection.second_stage import export_sklearn_gbc

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(300, len(FEATURE_NAMES)))
    ys = (xs[:, 0] + 0.5 * xs[:, 3] * xs[:, 5] + rng.normal(0, 0.3, 300)) > 0
    clf = sklearn.GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(xs, ys)
    spec = json.loads(json.dumps(export_sklearn_gbc(clf, 0.5)))   # through JSON, as stored
    assert np.abs(TreeEnsemble(spec).probability(xs) - clf.predict_proba(xs)[:, 1]).max() < 1e-9
    with pytest.raises(CMBError, match="does not compute"):
        TreeEnsemble(dict(spec, features=["a"]))


def test_a_classifier_for_fewer_features_reads_its_own_columns():
    """cmb-default 0.3.0's classifier names 28 features; the pipeline hands every classifier
    the full matrix, from which it must take its own columns (by name, not position)."""
    f = FEATURE_NAMES.index("line6_max")
    tree = {"left": [1, -1, -1], "right": [2, -1, -1], "feature": [0, -2, -2], "threshold": [0.5, -2, -2],
            "value": [0.0, -3.0, 3.0]}
    spec = {"kind": "gradient_boosted_trees", "features": ["line6_max"], "init": 0.0, "learning_rate": 1.0,
            "threshold": 0.5, "trees": [tree]}
    ens = TreeEnsemble(spec)
    x = np.zeros((2, len(FEATURE_NAMES)))
    x[1, f] = 0.9          # only the named column decides
    x[0, 0] = 0.9          # column 0 (max_probability) is not this classifier's
    assert ens.probability(x) == pytest.approx([1 / (1 + np.exp(3)), 1 / (1 + np.exp(-3))])
    assert ens.probability(x[:, [f]]) == pytest.approx(ens.probability(x))   # its own columns only
    with pytest.raises(CMBError, match="needs 1 features"):
        ens.probability(np.zeros((1, 3)))
    old = json.loads((Path(__file__).resolve().parents[1] / "CMBLib" / "models" / "cmb-default" /
                      "candidate_classifier.json").read_text())
    TreeEnsemble(old)   # the bundled classifier's features are all still computed


def test_classifier_file_is_checksum_verified(tmp_path):
    from CMBLib.detection.model_io import sha256_file

    path = tmp_path / "candidate_classifier.json"
    path.write_text(json.dumps(_tiny_ensemble(0.3)))
    meta = {"second_stage": {"file": path.name, "sha256": sha256_file(path), "threshold": 0.3}}
    ens, spec = load_second_stage(tmp_path, meta)
    assert spec["threshold"] == 0.3 and len(ens.trees) == 1
    assert load_second_stage(tmp_path, {}) is None
    path.write_text(json.dumps(_tiny_ensemble(0.9)))
    with pytest.raises(CMBError, match="checksum mismatch"):
        load_second_stage(tmp_path, meta)
    path.unlink()
    with pytest.raises(CMBError, match="missing"):
        load_second_stage(tmp_path, meta)


def test_pipeline_drops_what_the_second_stage_rejects(tmp_path):
    """A model folder with a stump that keeps only high-contrast candidates: of a faint and a
    strong dark sphere the pipeline keeps the strong one, and says why the other went."""
    pytest.importorskip("torch")
    from detection_fixtures import dark_spot_network, phantom

    from CMBLib.detection.model_io import sha256_file
    from CMBLib.detection.pipeline import detect

    vol, centres = phantom([((30, 48, 12), 3.0), ((66, 48, 12), 3.0)])
    a = vol.array.copy()
    i = np.arange(a.shape[2])
    a[:, :, i > 48] = np.where(a[:, :, i > 48] == 30.0, 55.0, a[:, :, i > 48])  # the second one fainter
    vol = vol.with_array(a)
    folder = tmp_path / "m"
    net = dark_spot_network()
    folder.mkdir()
    # contrast on the model grid (normalised units): strong sphere 2.9, faint one 1.8
    (folder / "candidate_classifier.json").write_text(json.dumps(_tiny_ensemble(0.5, split=2.2)))
    meta = {"name": "stage2-test", "version": "0", "spacing_mm": [1.0, 1.0, 2.0], "patch_size": [32, 32, 16],
            "threshold": 0.45, "min_diameter_mm": 3.0, "path": str(folder),
            "without_second_stage": {"threshold": 0.5, "min_diameter_mm": 3.5},
            "second_stage": {"file": "candidate_classifier.json",
                             "sha256": sha256_file(folder / "candidate_classifier.json"), "threshold": 0.5}}
    plain = detect(vol, (net, dict(meta)), second_stage=False)
    assert len(plain.records) == 2
    # without the second stage the first stage uses its own stand-alone cut-offs
    assert plain.settings["threshold"] == 0.5 and plain.settings["min_diameter_mm"] == 3.5
    assert plain.settings["second_stage"] is None
    res = detect(vol, (net, dict(meta)))
    assert len(res.records) == 1 and res.dropped["second_stage"] == 1
    assert np.linalg.norm(np.array(res.records[0]["centre_ras"]) - centres[0]) < 2.0
    assert res.records[0]["label"] == 1 and res.records[0]["stage2_probability"] > 0.5
    assert set(np.unique(res.mask.array)) == {0, 1}
    assert res.settings["second_stage"]["threshold"] == 0.5 and res.settings["threshold"] == 0.45
    # a classifier trained for dark CMBs only is not applied to bright (QSM) input by default
    only_dark = dict(meta, second_stage=dict(meta["second_stage"], polarities=["bright"]))
    assert detect(vol, (net, only_dark)).settings["second_stage"] is None
    with pytest.raises(CMBError, match="no second stage"):
        detect(vol, (net, {k: v for k, v in meta.items() if k != "second_stage"}), second_stage=True)
    # an opt-in classifier ("default": false, cmb-default 0.3.2): off unless asked for
    opt_in = dict(meta, second_stage=dict(meta["second_stage"], default=False))
    off = detect(vol, (net, dict(opt_in)))
    assert len(off.records) == 2 and off.settings["second_stage"] is None and off.settings["threshold"] == 0.5
    on = detect(vol, (net, dict(opt_in)), second_stage=True)
    assert len(on.records) == 1 and on.settings["second_stage"]["threshold"] == 0.5
    # an opt-in classifier is only read when asked for: a damaged file does not stop the default path
    broken = dict(opt_in, second_stage=dict(opt_in["second_stage"], sha256="0" * 64))
    assert len(detect(vol, (net, dict(broken))).records) == 2
    with pytest.raises(CMBError, match="checksum mismatch"):
        detect(vol, (net, dict(broken)), second_stage=True)
    # 0.3.2 format: top-level cut-offs for the first stage alone, the classifier's own under second_stage
    new_format = {k: v for k, v in opt_in.items() if k != "without_second_stage"}
    new_format.update(threshold=0.5, min_diameter_mm=3.5)
    new_format["second_stage"] = dict(opt_in["second_stage"], stage1_threshold=0.45, stage1_min_diameter_mm=3.0)
    assert detect(vol, (net, dict(new_format))).settings["threshold"] == 0.5
    on = detect(vol, (net, dict(new_format)), second_stage=True)
    assert on.settings["threshold"] == 0.45 and on.settings["min_diameter_mm"] == 3.0 and len(on.records) == 1


def test_mined_crops_give_back_the_features_exactly(tmp_path):
    """training/mine_candidates.py stores per candidate the model-grid crops around it, so a
    feature change can be trained without running the U-Net again; the features from the
    crops must equal those from the whole grid (candidates near the grid's edge included)."""
    from types import SimpleNamespace

    from training.mine_candidates import REC_KEYS, candidate_crops, recompute_features

    vol, brain = _grid_with(lambda x, y, z: (x ** 2 + y ** 2 + z ** 2 <= 2.5 ** 2) | (y ** 2 + z ** 2 <= 1.5 ** 2))
    vol = Volume(vol.array, vol.spacing, (10.0, -20.0, 5.0), np.eye(3)[[1, 0, 2]] * [1, -1, 1])   # not axis-aligned
    brain[:, :, :4] = False
    prob = np.clip(-vol.array / 2, 0, 1).astype(np.float32)
    recs = [{"centre_ras": vol.voxel_to_ras(ijk).tolist(), "max_probability": 0.9, "mean_probability": 0.7,
             "volume_mm3": 20.0, "elongation": 1.5} for ijk in ([30, 30, 15], [50, 30, 15], [3, 57, 1])]
    whole = candidate_features(vol.array, prob, brain, vol, recs)
    mg = {"pre": SimpleNamespace(array=vol.array, brain_mask=brain, grid=vol), "probability": prob}
    arrays = candidate_crops(mg, recs)
    arrays.update({f"rec_{k}": np.array([r[k] for r in recs]) for k in REC_KEYS})
    np.savez(tmp_path / "c.npz", hit=np.full(3, -1), centre_ras=np.array([r["centre_ras"] for r in recs]), **arrays)
    again = recompute_features(np.load(tmp_path / "c.npz"))
    assert np.abs(again - whole).max() < 1e-5
    assert not np.allclose(whole[0], whole[1])   # two different structures, not a trivially equal pair
