"""training/baseline_log: the LoG yardstick finds an isolated dark blob first."""
import numpy as np

from CMBLib.geometry import Volume
from CMBLib.synthesis.cmb_insertion import insert_cmbs
from training.baseline_log import log_candidates, points_to_labels


def test_strongest_log_candidate_is_the_inserted_blob():
    rng = np.random.default_rng(0)
    a = np.zeros((30, 80, 80), np.float32)
    a[3:27, 10:70, 10:70] = 100 + rng.normal(0, 2, (24, 60, 60))   # skull-stripped "brain"
    vol = Volume(a, (0.9, 0.9, 3.0))
    centre = vol.kji_to_ras(np.array([15.0, 40.0, 44.0]))
    img = insert_cmbs(vol, centres_ras=[centre], rng=1, radius_mm=(2.0, 2.0), contrast=(0.8, 0.8)).image
    pts, scores = log_candidates(img, "dark")
    best = pts[np.argmax(scores)]
    assert np.linalg.norm(best - centre) < 3.0                     # within 3 mm of the CMB centre
    lab = points_to_labels(img, pts)
    assert lab.max() == len(pts) and (lab > 0).sum() <= len(pts)
    kji = np.argwhere(lab == np.argmax(scores) + 1)[0]
    assert np.linalg.norm(img.kji_to_ras(kji) - best) < 2.0
