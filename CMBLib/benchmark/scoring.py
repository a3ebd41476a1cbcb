"""Scoring for `cmb benchmark`: per-subject results, FROC from probability maps, breakdowns.

* A subject with a reference **label map** (VALDO) is scored by `CMBLib.metrics.evaluate_case`
  on the detection mask, exactly as `cmb evaluate` scores it (valdo rule, centre of mass
  strictly closer than 5 mm, 26-connected components).
* A subject with reference **points** (CUHK centre lists) is scored by `points_case`: the
  detection mask's components (centres of mass, as `cmb evaluate` computes them) against
  the points, with the same valdo rule (`CMBLib.metrics.matching.match`), distances in mm.
* **FROC**: the probability map that detection wrote is thresholded again at each level of
  `FROC_LEVELS` (and the operating threshold); candidates are its connected components
  within the model's diameter limits (`CMBLib.detection.candidates.find_candidates`), each
  matched by its centre to the reference centres with the valdo rule.  The network runs once
  per subject; the second-stage classifier and the location filter, when the model uses
  them, act on the operating point only (the FROC points are first-stage candidates).
"""
from collections import OrderedDict
from typing import Optional

import numpy as np

from ..geometry import Volume
from ..metrics.case_metrics import CaseResult, detection_scores, ratio
from ..metrics.components import Element, describe_elements, label_elements
from ..metrics.froc import FP_RATES
from ..metrics.matching import match, match_points

FROC_LEVELS = tuple(round(0.05 * n, 2) for n in range(1, 20))   # 0.05 ... 0.95
SIZE_BINS = (("<3mm", 0.0, 3.0), ("3-4mm", 3.0, 4.0), ("4-5mm", 4.0, 5.0), (">=5mm", 5.0, float("inf")))
DISTANCE_MM = 5.0


def size_bin(diameter_mm: Optional[float]) -> Optional[str]:
    """'<3mm', '3-4mm', '4-5mm' or '>=5mm' for an equivalent diameter in mm (None: unknown)."""
    if diameter_mm is None:
        return None
    for name, lo, hi in SIZE_BINS:
        if lo <= diameter_mm < hi:
            return name
    return None


def mask_elements(mask: Volume, scores: Optional[dict] = None) -> list[Element]:
    """The detection mask's CMBs as `cmb evaluate` sees them: 26-connected components,
    centres of mass in voxels and RAS mm, each scored from `scores` {label value: score}."""
    lab, n = label_elements(np.asarray(mask.array), 26, "components", name="prediction")
    return describe_elements(lab, n, mask.ijk_to_ras, np.asarray(mask.array), scores=scores or None)


def point_elements(volume: Volume, ijk: np.ndarray) -> list[Element]:
    """Reference CMBs given as centres (0-based voxel (i, j, k), (N, 3)); no size known."""
    ijk = np.asarray(ijk, dtype=float).reshape(-1, 3)
    ras = volume.voxel_to_ras(ijk) if len(ijk) else np.zeros((0, 3))
    return [Element(index=n + 1, label=n + 1, voxel_count=0, volume_mm3=None, diameter_mm=None,
                    size_class=None, centre_ijk=tuple(float(v) for v in ijk[n]),
                    centre_ras=tuple(float(v) for v in ras[n])) for n in range(len(ijk))]


def points_case(pred: list[Element], ref: list[Element], case: str = "",
                distance_mm: float = DISTANCE_MM) -> CaseResult:
    """A `CaseResult` of predicted elements against reference points, valdo rule in mm."""
    a = np.array([e.centre_ras for e in pred], dtype=float).reshape(-1, 3)
    b = np.array([e.centre_ras for e in ref], dtype=float).reshape(-1, 3)
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2) if len(a) and len(b) else np.zeros((len(a), len(b)))
    m = match("valdo", d, distance_mm)
    sens, prec, f1 = detection_scores(m.tp, m.fp, m.fn)
    matches = [{"pred": p + 1, "ref": r + 1, "distance_mm": float(d[p, r]), "overlap_voxels": 0}
               for p, r in m.pairs]
    return CaseResult(
        case=case, rule="valdo", distance_mm=float(distance_mm), n_ref=len(ref), n_pred=len(pred),
        tp=m.tp, fp=m.fp, fn=m.fn, duplicates=m.duplicates, sensitivity=sens, precision=prec, f1=f1,
        count_difference=abs(len(pred) - len(ref)), dice=None, dice_detected=None, pred=pred, ref=ref,
        pred_status=m.pred_status, ref_status=m.ref_status, matches=matches, distances=d)


def froc_levels(threshold: Optional[float]) -> list[float]:
    """`FROC_LEVELS` with the operating threshold added, ascending."""
    levels = set(FROC_LEVELS)
    if threshold is not None:
        levels.add(round(float(threshold), 4))
    return sorted(levels)


def level_counts(probability: Volume, levels, ref_ras, min_diameter_mm: float, max_diameter_mm: float,
                 distance_mm: float = DISTANCE_MM) -> list[tuple[int, int]]:
    """(tp, fp) at each level: candidates of ``probability >= level`` within the diameter
    limits (as detection finds them), matched by centre to `ref_ras` (N x 3 mm), valdo rule."""
    from ..detection.candidates import find_candidates

    prob = np.asarray(probability.array, dtype=np.float32)
    ref = np.asarray(ref_ras, dtype=float).reshape(-1, 3)
    low = min(levels)
    from scipy import ndimage

    boxes = ndimage.find_objects((prob >= low).astype(np.uint8))
    if not boxes:
        return [(0, 0) for _ in levels]
    box = boxes[0]
    start_ijk = [box[2].start, box[1].start, box[0].start]
    crop = Volume(prob[box], probability.spacing, tuple(probability.voxel_to_ras(start_ijk)),
                  probability.direction)
    out = []
    for t in levels:
        _, records, _ = find_candidates(crop, t, min_diameter_mm, max_diameter_mm)
        pts = np.array([r["centre_ras"] for r in records], dtype=float).reshape(-1, 3)
        m = match_points(pts, ref, "valdo", distance_mm)
        out.append((m.tp, m.fp))
    return out


def froc_curve(levels, subjects: list[dict]) -> Optional[dict]:
    """Pooled FROC over `subjects` (dicts with 'n_ref' and 'levels' = [(tp, fp), ...] per level).

    Same keys as `CMBLib.metrics.froc`: thresholds (descending), sensitivity, fp_per_subject,
    sensitivity_at {FP rate: best sensitivity at or below it}, cpm (their mean); None without
    subjects.
    """
    if not subjects:
        return None
    n_ref = sum(s["n_ref"] for s in subjects)
    order = sorted(range(len(levels)), key=lambda i: -levels[i])
    sens, fps = [], []
    for i in order:
        tp = sum(s["levels"][i][0] for s in subjects)
        fp = sum(s["levels"][i][1] for s in subjects)
        sens.append(tp / n_ref if n_ref else None)
        fps.append(fp / len(subjects))
    at = {}
    for rate in FP_RATES:
        ok = [s for s, f in zip(sens, fps) if f <= rate and s is not None]
        at[str(rate)] = max(ok) if ok else 0.0
    cpm = float(np.mean(list(at.values()))) if n_ref else None
    return {"thresholds": [float(levels[i]) for i in order], "sensitivity": sens, "fp_per_subject": fps,
            "sensitivity_at": at, "cpm": cpm}


def group_table(subjects: list[dict], key: str, levels) -> "OrderedDict[str, dict]":
    """Pooled operating-point counts and FROC CPM per value of `key` of the scored subjects."""
    groups: dict = {}
    for s in subjects:
        value = s.get(key)
        if value is None or value == "":
            continue
        groups.setdefault(str(value), []).append(s)
    out = OrderedDict()
    for name in sorted(groups, key=_natural):
        members = groups[name]
        tp = sum(m["result"].tp for m in members)
        fp = sum(m["result"].fp for m in members)
        fn = sum(m["result"].fn for m in members)
        sens, prec, f1 = detection_scores(tp, fp, fn)
        curve = froc_curve(levels, members)
        out[name] = {"n_subjects": len(members), "n_ref": sum(m["result"].n_ref for m in members),
                     "n_pred": sum(m["result"].n_pred for m in members), "tp": tp, "fp": fp, "fn": fn,
                     "sensitivity": sens, "precision": prec, "f1": f1,
                     "fp_per_subject": ratio(fp, len(members)), "cpm": curve["cpm"] if curve else None,
                     "subjects": [m["name"] for m in members]}
    return out


def size_table(results: list[CaseResult]) -> "OrderedDict[str, dict]":
    """Reference CMBs found per equivalent-diameter bin (`SIZE_BINS`) and predictions
    (false positives) per bin of their own diameter; references without a mask are left out."""
    out = OrderedDict((name, {"n_ref": 0, "tp": 0, "fn": 0, "n_pred": 0, "fp": 0}) for name, _, _ in SIZE_BINS)
    for r in results:
        for el, status in zip(r.ref, r.ref_status):
            b = size_bin(el.diameter_mm)
            if b is not None:
                out[b]["n_ref"] += 1
                out[b]["tp" if status == "TP" else "fn"] += 1
        for el, status in zip(r.pred, r.pred_status):
            b = size_bin(el.diameter_mm)
            if b is not None:
                out[b]["n_pred"] += 1
                out[b]["fp"] += status == "FP"
    for e in out.values():
        e["sensitivity"] = ratio(e["tp"], e["n_ref"])
    return out


def _natural(text: str):
    try:
        return (0, float(text.split()[0]), text)
    except ValueError:
        return (1, 0.0, text)
