"""A classical Laplacian-of-Gaussian (LoG) blob detector, as a yardstick for the models.

Same cases and scoring as `training.evaluate` (native clinical grids, VALDO rule, 5 mm):
the image is preprocessed exactly as for the network (`CMBLib.detection.preprocess`:
1 x 1 x 2 mm, CMBs dark, robust normalisation), the blob response is the maximum over
scales sigma = 1-3 mm of the scale-normalised LoG ``sigma^2 * LoG`` (positive on dark
blobs), and every local maximum (within about 5 mm) inside the brain is a candidate,
scored by its response.  Outside the brain the image is set to the brain median and
candidates within 2 voxels of the mask border are ignored (the border itself is a strong edge).
The threshold that gives the best F1 is chosen on the
validation split and then applied to the test split.

    python -m training.baseline_log --split val            # sweep, prints the best threshold
    python -m training.baseline_log --split test --threshold T
"""
import argparse
import json
from pathlib import Path

import numpy as np

SIGMAS_MM = (1.0, 1.5, 2.0, 2.5, 3.0)
THRESHOLDS = tuple(np.round(np.geomspace(0.1, 30.0, 60), 4))


def log_candidates(image, polarity: str, spacing_mm=(1.0, 1.0, 2.0)):
    """(RAS centres (N, 3) mm, scores (N,)) of LoG blob candidates in `image` (a Volume)."""
    from scipy import ndimage as ndi

    from CMBLib.detection.preprocess import preprocess

    pre = preprocess(image, spacing_mm, polarity)
    a = np.where(pre.brain_mask, pre.array, 0.0).astype(np.float32)   # no edge at the brain border
    inner = ndi.binary_erosion(pre.brain_mask, iterations=2)
    sp_kji = np.asarray(pre.grid.spacing, float)[::-1]
    resp = np.full(a.shape, -np.inf, np.float32)
    for s in SIGMAS_MM:
        resp = np.maximum(resp, (s ** 2) * ndi.gaussian_laplace(a, s / sp_kji))
    size = np.maximum(3, np.round(5.0 / sp_kji).astype(int) | 1)
    peaks = (resp == ndi.maximum_filter(resp, size=tuple(size))) & inner & (resp > THRESHOLDS[0])
    kji = np.argwhere(peaks)
    return pre.grid.kji_to_ras(kji) if len(kji) else np.zeros((0, 3)), resp[peaks]


def points_to_labels(volume, centres_ras) -> np.ndarray:
    """Label image on `volume`'s grid with one voxel per point (labels 1..N)."""
    lab = np.zeros(volume.array.shape, np.uint16)
    for n, p in enumerate(centres_ras, 1):
        kji = np.round(volume.ras_to_voxel(p)[::-1]).astype(int)
        if np.all(kji >= 0) and np.all(kji < lab.shape):
            lab[tuple(kji)] = n
    return lab


def run(split: str, thresholds):
    from CMBLib.io import read_volume
    from CMBLib.metrics import evaluate_case

    from .evaluate import split_items, summarise_groups
    from .generate_cache import FS_LABELS, QSM, QSM_MASK, native_case

    labels = read_volume(FS_LABELS)
    chi = read_volume(QSM) if QSM.is_file() else None
    msk = read_volume(QSM_MASK).array > 0 if chi is not None else None
    per_source = {"fs": [], "qsm": [], "qsm_t2s": []}
    for sp, i in split_items(split):
        case = native_case(sp, i, labels, chi, msk)
        pts, scores = log_candidates(case["image"], case["polarity"])
        lab = points_to_labels(case["image"], pts)
        r = evaluate_case(case["image"].with_array(lab), case["cmb_mask"], rule="valdo", distance_mm=5.0,
                          elements="labels", pred_scores={n: float(v) for n, v in enumerate(scores, 1)})
        rows = []
        for t in thresholds:  # same matching, candidates below the threshold dropped
            m = r.rematch(np.array([e.score >= t for e in r.pred], bool))
            rows.append({"threshold": float(t), "tp": m.tp, "fp": m.fp, "fn": r.n_ref - m.tp, "n_ref": r.n_ref})
        per_source[case["info"]["source"]].append(rows)
        print(sp, i, case["info"]["source"], len(pts), flush=True)
    out = summarise_groups(per_source)
    for g in out.values():   # the LoG runs at many FP per scan: also its best F1 at any FP rate
        g["best_f1"] = max(g["rows"], key=lambda r: r["f1"] or 0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--threshold", type=float, help="report this threshold only (chosen on val)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    res = run(args.split, [args.threshold] if args.threshold is not None else THRESHOLDS)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: {"best_f1": v["best_f1"], "best_at_2fp": v["best_at_2fp"]} for k, v in res.items()},
                     indent=1, default=float))


if __name__ == "__main__":
    main()
