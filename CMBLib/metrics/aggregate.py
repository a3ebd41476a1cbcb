"""Pool per-case results: totals, per-subject statistics, subject-level classification, strata.

Definitions (thesis of del Pozo Lérida, Table V):
* pooled (micro) sensitivity / precision / F1 from the summed TP, FP, FN;
* FPavg = FP per subject (``fp_per_subject``), FPcmb = FP per reference CMB (``fp_per_cmb``);
* per-subject mean / median / IQR of each case metric, skipping undefined (None) values;
* subject level ("at least one CMB"): a subject is positive when its reference has a
  CMB and predicted positive when the prediction has one; TPR, TNR, PPV, F1, accuracy;
* by size class: reference CMBs by their BOMBS size class (sensitivity) and
  predictions by theirs (FP); by location the same, where locations are known.
"""
from collections import OrderedDict
from typing import Optional

import numpy as np

from .case_metrics import CaseResult, detection_scores, ratio

PER_SUBJECT_KEYS = ("sensitivity", "precision", "f1", "dice", "dice_detected", "count_difference",
                    "tp", "fp", "fn", "n_ref", "n_pred")


def describe(values) -> dict[str, Optional[float]]:
    """mean, median, q1, q3, iqr, n of the defined (non-None) values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(med),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def subject_level(results: list[CaseResult]) -> dict:
    """Classification of subjects as having at least one CMB."""
    tp = sum(r.n_ref > 0 and r.n_pred > 0 for r in results)
    fp = sum(r.n_ref == 0 and r.n_pred > 0 for r in results)
    fn = sum(r.n_ref > 0 and r.n_pred == 0 for r in results)
    tn = sum(r.n_ref == 0 and r.n_pred == 0 for r in results)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "tpr": ratio(tp, tp + fn), "tnr": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "accuracy": ratio(tp + tn, len(results))}


def stratify(results: list[CaseResult], attribute: str) -> dict[str, dict]:
    """Per value of an element attribute ('size_class' or 'location'): references found, FPs."""
    strata: dict[str, dict] = {}

    def entry(key):
        return strata.setdefault(str(key), {"n_ref": 0, "tp": 0, "fn": 0, "n_pred": 0, "fp": 0})

    for r in results:
        for is_ref, elements, statuses in ((True, r.ref, r.ref_status), (False, r.pred, r.pred_status)):
            for el, status in zip(elements, statuses):
                key = getattr(el, attribute)
                if key is None:
                    continue
                e = entry(key)
                if is_ref:
                    e["n_ref"] += 1
                    e["tp" if status == "TP" else "fn"] += 1
                else:
                    e["n_pred"] += 1
                    e["fp"] += status == "FP"
    for e in strata.values():
        e["sensitivity"] = ratio(e["tp"], e["n_ref"])
    return OrderedDict(sorted(strata.items()))


def aggregate(results: list[CaseResult]) -> dict:
    """Pooled tp / fp / fn (top level) plus the statistics described in the module docstring."""
    n = len(results)
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    n_ref = sum(r.n_ref for r in results)
    n_pred = sum(r.n_pred for r in results)
    sens, prec, f1 = detection_scores(tp, fp, fn)
    rules = sorted({r.rule for r in results})
    dists = sorted({r.distance_mm for r in results})
    out = OrderedDict()
    out["rule"] = rules[0] if len(rules) == 1 else rules
    out["distance_mm"] = dists[0] if len(dists) == 1 else dists
    out["n_cases"] = n
    out["n_ref"] = n_ref
    out["n_pred"] = n_pred
    out["tp"] = tp
    out["fp"] = fp
    out["fn"] = fn
    out["duplicates"] = sum(r.duplicates for r in results)
    out["sensitivity"] = sens
    out["precision"] = prec
    out["f1"] = f1
    out["fp_per_subject"] = ratio(fp, n)          # FPavg
    out["fp_per_cmb"] = ratio(fp, n_ref)          # FPcmb
    out["tp_per_subject"] = ratio(tp, n)
    out["fn_per_subject"] = ratio(fn, n)
    out["missing_predictions"] = sum(r.missing_prediction for r in results)
    out["per_subject"] = OrderedDict((k, describe(getattr(r, k) for r in results)) for k in PER_SUBJECT_KEYS)
    out["subject_level"] = subject_level(results)
    out["by_size_class"] = stratify(results, "size_class")
    by_location = stratify(results, "location")
    if by_location:
        out["by_location"] = by_location
    return out
