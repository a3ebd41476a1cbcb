"""training/cross_brain.py rules and choice, and the per-contrast table of train_second_stage:
hand-computed small cases (no mined data, no classifier fit)."""
import numpy as np

from training.cross_brain import choose, keep, rule_name, rules
from training.train_second_stage import CONTRAST_BINS, size_table


def test_single_and_gated_rules_keep_what_they_say():
    scores = np.array([0.05, 0.25, 0.65, 0.95])
    pmax = np.array([0.9, 0.5, 0.8, 0.3])
    assert keep(("single", 0.3), scores, pmax).tolist() == [False, False, True, True]
    # gated 0.1 / 0.9: confident U-Net (p >= 0.7) needs s >= 0.1; others s >= 0.9
    assert keep(("gated", 0.1, 0.9), scores, pmax).tolist() == [False, False, True, True]
    assert keep(("gated", 0.05, 0.7), scores, pmax).tolist() == [True, False, True, True]
    assert keep(("gated", 0.3, 0.5), scores, np.zeros(4)).tolist() == [False, False, True, True]
    assert rule_name(("gated", 0.1, 0.9)) == "gated 0.1/0.9" and rule_name(("single", 0.3)) == "single 0.3"
    assert all(r[1] < r[2] for r in rules() if r[0] == "gated")


def _row(f1, fp):
    return {"f1": f1, "fp_per_scan": fp}


def test_choose_takes_the_best_worst_direction_within_the_fp_limit():
    rows = {("single", 0.3): {"a": _row(0.9, 0.6), "b": _row(0.8, 0.1)},    # over the FP limit in a
            ("single", 0.5): {"a": _row(0.7, 0.4), "b": _row(0.75, 0.2)},   # worst F1 0.70
            ("gated", 0.1, 0.8): {"a": _row(0.72, 0.3), "b": _row(0.9, 0.5)},  # worst F1 0.72: chosen
            ("gated", 0.2, 0.8): {"a": _row(0.72, 0.2), "b": _row(0.9, 0.5)}}  # tie: the lower threshold wins
    assert choose(rows, 0.5) == ("gated", 0.1, 0.8)
    # a single threshold wins a tie against a gated rule
    rows[("single", 0.6)] = {"a": _row(0.72, 0.1), "b": _row(0.72, 0.1)}
    assert choose(rows, 0.5) == ("single", 0.6)
    # nothing within the limit: the lowest worst-direction FP/scan
    assert choose(rows, 0.05) == ("single", 0.6)


def test_contrast_table_counts_found_cmbs_per_bin():
    case = {"n_ref": 3, "hit": np.array([0, -1, 2]), "ref_contrast": np.array([0.4, 0.6, 0.9])}
    t = size_table([case], [np.array([True, True, False])], "ref_contrast", CONTRAST_BINS)
    assert t["<0.5"] == {"cmbs": 1, "found": 1, "sensitivity": 1.0}
    assert t["0.5-0.7"] == {"cmbs": 1, "found": 0, "sensitivity": 0.0}
    assert t[">=0.7"] == {"cmbs": 1, "found": 0, "sensitivity": 0.0}   # its candidate was not kept
    # cases mined before contrasts were stored are left out, not miscounted
    old = dict(case, ref_contrast=None)
    assert size_table([old], [np.ones(3, bool)], "ref_contrast", CONTRAST_BINS)["<0.5"]["cmbs"] == 0


def test_stand_alone_findings_from_the_stored_probability_crops(tmp_path):
    """A candidate counts as a stand-alone finding (0.7, >= 3 mm) when a >= 0.7 component of
    >= 3 mm equivalent diameter lies within 6 mm of its crop's centre."""
    from training.cross_brain import stand_alone_findings

    shape = (11, 21, 21)                        # k, j, i on a 1 x 1 x 2 mm grid (x, y, z spacing)
    prob = np.zeros((3,) + shape, np.float32)
    prob[0, 4:7, 8:13, 8:13] = 0.9              # 3 x 5 x 5 voxels = 150 mm3 -> 6.6 mm, at the centre
    prob[1, 5, 10, 10] = 0.95                   # one voxel, 2 mm3 -> 1.6 mm: too small
    prob[1, 4:7, 8:13, 8:13] = np.where(prob[1, 4:7, 8:13, 8:13] > 0, 0.95, 0.5)  # the rest below 0.7
    prob[2, 4:7, 0:3, 0:5] = 0.9                # large but 10 mm or more from the centre
    np.savez(tmp_path / "c.npz", hit=np.array([0, -1, -1]), crop_prob=prob,
             crop_size=np.array([shape] * 3), grid_spacing=np.array([1.0, 1.0, 2.0]))
    assert stand_alone_findings(tmp_path / "c.npz").tolist() == [True, False, False]
    # the cut-offs are parameters: at 0.4 the second candidate's 0.5 plateau joins its peak
    assert stand_alone_findings(tmp_path / "c.npz", threshold=0.4).tolist() == [True, True, False]
