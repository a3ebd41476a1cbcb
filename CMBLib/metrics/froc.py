"""FROC: sensitivity against false positives per subject as the score cut-off varies.

From per-candidate scores (each predicted element's ``score``, e.g. its maximum
probability): for every distinct score t, the predictions with score >= t are kept and
matched again with the case's rule, so the valdo and one-to-one duplicates are handled
exactly.  `froc_from_maps` instead thresholds probability maps at a list of levels and
recomputes the components at each (slower, but sees candidates merge and split).
"""
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .case_metrics import CaseResult, evaluate_case

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)   # FP per subject for the CPM (LUNA16 style)


def has_scores(results: list[CaseResult]) -> bool:
    """True when every prediction of every case has a score (and there is at least one)."""
    preds = [e for r in results for e in r.pred]
    return bool(preds) and all(e.score is not None for e in preds)


def froc(results: list[CaseResult], thresholds: Optional[Sequence[float]] = None,
         fp_rates: Sequence[float] = FP_RATES) -> Optional[dict]:
    """FROC points from per-candidate scores; None when some prediction has no score.

    Returns {'thresholds', 'sensitivity', 'fp_per_subject', 'sensitivity_at' {rate: s},
    'cpm' (mean sensitivity at `fp_rates`)}, points ordered from the highest threshold.
    """
    if not results or not has_scores(results):
        return None
    if thresholds is None:
        scores = sorted({float(e.score) for r in results for e in r.pred}, reverse=True)
        thresholds = scores
    thresholds = sorted((float(t) for t in thresholds), reverse=True)
    n_ref = sum(r.n_ref for r in results)
    n = len(results)
    sens, fps = [], []
    for t in thresholds:
        tp = fp = 0
        for r in results:
            keep = np.array([e.score >= t for e in r.pred], bool)
            m = r.rematch(keep)
            tp += m.tp
            fp += m.fp
        sens.append(tp / n_ref if n_ref else None)
        fps.append(fp / n)
    return _summarise(thresholds, sens, fps, fp_rates)


def froc_from_maps(pairs, thresholds: Sequence[float] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2)),
                   fp_rates: Sequence[float] = FP_RATES, **evaluate_kwargs) -> dict:
    """FROC by thresholding probability maps: `pairs` = [(prob, ref), ...] (arrays or Volumes)."""
    thresholds = sorted((float(t) for t in thresholds), reverse=True)
    sens, fps = [], []
    for t in thresholds:
        tp = fp = n_ref = 0
        for prob, ref in pairs:
            p = prob.with_array(prob.array >= t) if hasattr(prob, "with_array") else np.asarray(prob) >= t
            r = evaluate_case(p, ref, **evaluate_kwargs)
            tp, fp, n_ref = tp + r.tp, fp + r.fp, n_ref + r.n_ref
        sens.append(tp / n_ref if n_ref else None)
        fps.append(fp / max(len(pairs), 1))
    return _summarise(thresholds, sens, fps, fp_rates)


def _summarise(thresholds, sens, fps, fp_rates) -> dict:
    at = {}
    for rate in fp_rates:
        ok = [s for s, f in zip(sens, fps) if f <= rate and s is not None]
        at[str(rate)] = max(ok) if ok else 0.0
    defined = all(s is not None for s in sens)
    return {"thresholds": list(thresholds), "sensitivity": sens, "fp_per_subject": fps,
            "sensitivity_at": at, "cpm": float(np.mean(list(at.values()))) if defined and at else None}
