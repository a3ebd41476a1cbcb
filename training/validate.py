"""Validation on the model grid, scored with CMBLib.metrics (VALDO rule).

The probability map comes from `CMBLib.detection.inference.predict_probability`, the
function `cmb detect` uses: the same windows (`inference_patch_size`), overlap
(`inference_overlap`, 0.125), Gaussian blending, skipping of windows without brain and
optional flip averaging; it is zeroed outside the brain mask.  For each threshold the
candidates are the connected components (`CMBLib.detection.candidates.find_candidates`,
same size limits as inference) and `CMBLib.metrics.evaluate_case(rule="valdo",
distance_mm=5)` counts TP / FP / FN.  The result is a small FROC table.
"""
from collections.abc import Sequence

import numpy as np

DEFAULT_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
INFERENCE_OVERLAP = 0.125   # as training/export_model.py writes into model.json


def predict_case(network, image: np.ndarray, patch_kji: Sequence[int], mask=None, overlap: float = INFERENCE_OVERLAP,
                 flip_average: bool = False, sw_batch_size: int = 2, tta=None) -> np.ndarray:
    """CMB probability map (float32, same shape as `image` [k, j, i]) through CMBLib's inference
    (one or two output channels are both understood there).  tta: test-time transforms
    (`CMBLib.detection.inference.model_tta` gives a model's flip_average and tta as detect runs it)."""
    from CMBLib.detection.inference import predict_probability

    was_training = network.training
    network.eval()
    prob, _ = predict_probability(network, np.ascontiguousarray(image, dtype=np.float32),
                                  [int(p) for p in patch_kji][::-1], device="cpu", sw_batch_size=sw_batch_size,
                                  overlap=overlap, mask=mask, flip_average=flip_average, tta=tta)
    network.train(was_training)
    return prob


def score_case(prob: np.ndarray, case: dict, spacing, thresholds=DEFAULT_THRESHOLDS, min_diameter_mm=1.5,
               max_diameter_mm=10.0, distance_mm=5.0) -> list[dict]:
    """TP / FP / FN per threshold for one case (model grid, spacing (i, j, k) mm)."""
    from scipy import ndimage as ndi

    from CMBLib.detection.candidates import find_candidates
    from CMBLib.geometry import Volume
    from CMBLib.metrics import evaluate_case

    prob = np.where(case["brain"], prob, 0.0).astype(np.float32)
    vol = Volume(prob, tuple(spacing))
    n_ref = int(ndi.label(case["cmb"] > 0, np.ones((3, 3, 3)))[1])
    rows = []
    for t in thresholds:
        n_comp = int(ndi.label(prob >= t, np.ones((3, 3, 3)))[1])
        if n_comp > 300:  # an untrained network: do not spend minutes describing noise
            rows.append({"threshold": float(t), "tp": 0, "fp": n_comp, "fn": n_ref, "n_ref": n_ref})
            continue
        labels, records, _ = find_candidates(vol, t, min_diameter_mm, max_diameter_mm)
        r = evaluate_case(labels, case["cmb"], spacing=tuple(spacing), rule="valdo", distance_mm=distance_mm)
        rows.append({"threshold": float(t), "tp": r.tp, "fp": r.fp, "fn": r.fn, "n_ref": r.n_ref})
    return rows


def summarise(per_case: list[list[dict]]) -> list[dict]:
    """Pool per-threshold counts over cases: sensitivity, precision, F1, FP per scan."""
    out = []
    n = max(1, len(per_case))
    for i in range(len(per_case[0]) if per_case else 0):
        tp = sum(c[i]["tp"] for c in per_case)
        fp = sum(c[i]["fp"] for c in per_case)
        fn = sum(c[i]["fn"] for c in per_case)
        sens = tp / (tp + fn) if tp + fn else None
        prec = tp / (tp + fp) if tp + fp else None
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
        extra = {k: per_case[0][i][k] for k in ("min_diameter_mm",) if k in per_case[0][i]}
        out.append({"threshold": per_case[0][i]["threshold"], **extra, "tp": tp, "fp": fp, "fn": fn,
                    "sensitivity": sens, "precision": prec, "f1": f1, "fp_per_scan": fp / n})
    return out


def best_row(rows: list[dict], max_fp_per_scan: float = 2.0) -> dict:
    """The row with the highest F1 among those with FP/scan <= max (else the lowest FP)."""
    ok = [r for r in rows if r["fp_per_scan"] <= max_fp_per_scan and r["f1"] is not None]
    if ok:
        return max(ok, key=lambda r: (r["f1"], -r["threshold"]))
    return min(rows, key=lambda r: r["fp_per_scan"]) if rows else {}


def validate(network, cases: list[dict], patch_kji, spacing, thresholds=DEFAULT_THRESHOLDS,
             min_diameter_mm: float = 1.5, overlap: float = INFERENCE_OVERLAP, flip_average: bool = False) -> dict:
    """FROC rows over `cases` (dicts with image, cmb, brain on the model grid)."""
    per_case = []
    for case in cases:
        prob = predict_case(network, case["image"], patch_kji, mask=case.get("brain"), overlap=overlap,
                            flip_average=flip_average)
        per_case.append(score_case(prob, case, spacing, thresholds, min_diameter_mm))
    rows = summarise(per_case)
    return {"rows": rows, "best": best_row(rows), "n_cases": len(cases)}
