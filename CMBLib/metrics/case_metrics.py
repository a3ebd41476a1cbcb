"""Per-case detection and segmentation metrics: `evaluate_case`.

Counts follow the chosen matching rule (see `matching`).  Ratios that divide by zero
are ``None`` ("undefined"), never 0 or 1: sensitivity without reference CMBs,
precision without predictions, F1 and Dice when both masks are empty.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, geometry_difference
from .components import Element, describe_elements, is_probability_map, label_elements
from .matching import Matching, match, normalise_rule


@dataclass
class CaseResult:
    """Metrics of one case.  `pred` / `ref` list the elements; `matches` the matched pairs."""

    case: str
    rule: str
    distance_mm: float
    n_ref: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    duplicates: int
    sensitivity: Optional[float]
    precision: Optional[float]
    f1: Optional[float]
    count_difference: int                  # |n_pred - n_ref|
    dice: Optional[float]                  # whole mask
    dice_detected: Optional[float]         # mean Dice of detected CMBs with the predictions assigned to them
    pred: list[Element] = field(default_factory=list)
    ref: list[Element] = field(default_factory=list)
    pred_status: list[str] = field(default_factory=list)
    ref_status: list[str] = field(default_factory=list)
    matches: list[dict] = field(default_factory=list)      # {'pred', 'ref', 'distance_mm', 'overlap_voxels'} (1-based)
    missing_prediction: bool = False
    distances: np.ndarray = field(default=None, repr=False)   # (n_pred, n_ref) mm
    overlaps: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)  # 0-based (pred, ref) -> voxels

    def summary(self) -> dict:
        """Scalar fields only (for per_case.csv and metrics.json)."""
        keys = ("case", "rule", "distance_mm", "n_ref", "n_pred", "tp", "fp", "fn", "duplicates",
                "sensitivity", "precision", "f1", "count_difference", "dice", "dice_detected",
                "missing_prediction")
        return {k: getattr(self, k) for k in keys}

    def rematch(self, keep: Optional[np.ndarray] = None) -> Matching:
        """The matching again, keeping only the predictions where `keep` is True (FROC)."""
        return match(self.rule, self.distances, self.distance_mm, self.overlaps, keep)


def ratio(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


def detection_scores(tp: int, fp: int, fn: int):
    """(sensitivity, precision, F1), each None when undefined."""
    return ratio(tp, tp + fn), ratio(tp, tp + fp), ratio(2 * tp, 2 * tp + fp + fn)


def evaluate_case(pred, ref, spacing=(1.0, 1.0, 1.0), rule: str = "valdo", distance_mm: float = 5.0,
                  connectivity: int = 26, pred_scores=None, *, elements: str = "components",
                  threshold: float = 0.5, case: str = "", ref_locations: Optional[dict[int, str]] = None,
                  pred_locations: Optional[dict[int, str]] = None, distance_units: str = "mm") -> CaseResult:
    """Compare a predicted mask with a reference mask.

    pred, ref: numpy arrays indexed [k, j, i] (binary, instance labels, or for `pred` a
        probability map binarised at `threshold`), or `Volume`s on the same grid (then
        `spacing` is ignored and distances use the reference's geometry, or the
        prediction's when only it is a Volume).  `pred` may be
        None: a missing prediction, every reference CMB is a false negative.
    spacing: (si, sj, sk) mm for plain arrays.
    rule: 'valdo', 'touch' or 'one_to_one' ('one-to-one'); distance_mm: centre distance
        threshold (valdo, one_to_one); a match must be strictly closer, as in VALDO.
    connectivity: 6 or 26 (18 allowed) for connected components.
    pred_scores: optional per-prediction confidence, either a map on the same grid
        (each element takes its maximum) or a dict {label value: score}.  A probability
        map as `pred` scores its elements by their maximum probability.
    elements: 'components' (default, VALDO) or 'labels' (each label value is one CMB).
    ref_locations / pred_locations: {label value: location name} for stratification.
    distance_units: 'mm' (default, as the VALDO challenge scored) or 'voxels': centre
        distances in voxel index units, as VALDO's PairwiseMeasures gives them with its
        default pixdim [1, 1, 1] (then `distance_mm` is read as a number of voxels).
    """
    rule = normalise_rule(rule)
    if distance_mm is None or not np.isfinite(distance_mm) or distance_mm < 0:
        raise CMBError(f"distance threshold must be a non-negative number of mm (got {distance_mm})")
    if distance_units not in ("mm", "voxels"):
        raise CMBError(f"distance units must be 'mm' or 'voxels' (got {distance_units!r})")
    ref_arr, ijk_to_ras = _grid(ref, spacing, "reference")
    if isinstance(pred, Volume) and not isinstance(ref, Volume):
        ijk_to_ras = pred.ijk_to_ras                 # the one grid that is known
    missing = pred is None
    if missing:
        pred_arr = np.zeros(ref_arr.shape, np.uint8)
    else:
        pred_arr, _ = _grid(pred, spacing, "prediction")
        if isinstance(pred, Volume) and isinstance(ref, Volume):
            diff = geometry_difference(ref, pred, tol_mm=0.01)
            if diff:
                raise CMBError(f"{case or 'case'}: prediction grid differs from the reference ({diff}); "
                               "resample the prediction onto the reference first")
        elif pred_arr.shape != ref_arr.shape:
            raise CMBError(f"{case or 'case'}: prediction size {pred_arr.shape[::-1]} differs from the "
                           f"reference size {ref_arr.shape[::-1]} (i, j, k voxels)")

    ref_lab, n_ref = label_elements(ref_arr, connectivity, elements, threshold, "reference", reference=True)
    pred_lab, n_pred = label_elements(pred_arr, connectivity, elements, threshold, "prediction")

    score_map = None
    score_dict = None
    if pred_scores is not None:
        if isinstance(pred_scores, dict):
            score_dict = {int(k): v for k, v in pred_scores.items()}
        else:
            score_map, _ = _grid(pred_scores, spacing, "prediction scores")
            if score_map.shape != pred_arr.shape:
                raise CMBError(f"{case or 'case'}: score map size differs from the prediction")
    elif is_probability_map(pred_arr):
        score_map = pred_arr

    ref_el = describe_elements(ref_lab, n_ref, ijk_to_ras, ref_arr, locations=ref_locations)
    pred_el = describe_elements(pred_lab, n_pred, ijk_to_ras, pred_arr, score_map, score_dict, pred_locations)

    to_mm = np.eye(3) if distance_units == "voxels" else ijk_to_ras[:3, :3]
    distances = _centre_distances(pred_el, ref_el, to_mm)
    overlaps = _overlaps(pred_lab, ref_lab, n_ref)
    m = match(rule, distances, distance_mm, overlaps)

    tp, fp, fn = m.tp, m.fp, m.fn
    sens, prec, f1 = detection_scores(tp, fp, fn)
    p_fg = pred_lab > 0
    r_fg = ref_lab > 0
    dice = ratio(2 * np.count_nonzero(p_fg & r_fg), np.count_nonzero(p_fg) + np.count_nonzero(r_fg))
    dice_det = _dice_detected(pred_lab, ref_lab, m) if n_ref else None

    matches = []
    for p, r in m.pairs:
        matches.append({"pred": p + 1, "ref": r + 1, "distance_mm": float(distances[p, r]),
                        "overlap_voxels": int(overlaps.get((p, r), 0))})
    return CaseResult(
        case=case, rule=rule, distance_mm=float(distance_mm), n_ref=n_ref, n_pred=n_pred,
        tp=tp, fp=fp, fn=fn, duplicates=m.duplicates, sensitivity=sens, precision=prec, f1=f1,
        count_difference=abs(n_pred - n_ref), dice=dice, dice_detected=dice_det,
        pred=pred_el, ref=ref_el, pred_status=m.pred_status, ref_status=m.ref_status,
        matches=matches, missing_prediction=missing, distances=distances, overlaps=overlaps)


def _grid(obj, spacing, name):
    """(array [k, j, i], 4x4 ijk->RAS) of a Volume or of an array with `spacing` (mm)."""
    if isinstance(obj, Volume):
        arr = np.asarray(obj.array)
        m = obj.ijk_to_ras
    else:
        arr = np.asarray(obj)
        sp = np.asarray(spacing, dtype=float).ravel()
        if sp.size != 3 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise CMBError(f"{name}: spacing {tuple(sp)} mm must be three positive numbers")
        m = np.eye(4)
        m[:3, :3] = np.diag(sp)
    if arr.ndim != 3:
        raise CMBError(f"{name}: has {arr.ndim} dimensions; a 3D mask is needed")
    return arr, m


def _centre_distances(pred: list[Element], ref: list[Element], to_mm: np.ndarray) -> np.ndarray:
    """(n_pred, n_ref) Euclidean distances between centres of mass.

    Differences of voxel centres (i, j, k) mapped by the 3x3 part of the grid matrix
    (spacing and direction), so the origin adds no round-off.
    """
    if not pred or not ref:
        return np.zeros((len(pred), len(ref)))
    a = np.array([e.centre_ijk for e in pred])
    b = np.array([e.centre_ijk for e in ref])
    diff = (a[:, None, :] - b[None, :, :]) @ np.asarray(to_mm, dtype=float).T
    return np.sqrt((diff ** 2).sum(-1))


def _overlaps(pred_lab: np.ndarray, ref_lab: np.ndarray, n_ref: int) -> dict[tuple[int, int], int]:
    """{(pred, ref) 0-based: overlapping voxels} for every overlapping pair."""
    both = (pred_lab > 0) & (ref_lab > 0)
    if not both.any():
        return {}
    key = (pred_lab[both].astype(np.int64) - 1) * max(n_ref, 1) + (ref_lab[both].astype(np.int64) - 1)
    keys, counts = np.unique(key, return_counts=True)
    return {(int(k // max(n_ref, 1)), int(k % max(n_ref, 1))): int(c) for k, c in zip(keys, counts)}


def _dice_detected(pred_lab: np.ndarray, ref_lab: np.ndarray, m: Matching) -> float:
    """Mean over detected references of the Dice with all predictions assigned to each.

    As VALDO's ``mean_diceover``: duplicates assigned to a detected reference count too;
    0.0 when no reference is detected.
    """
    from scipy import ndimage

    detected = [r for r, s in enumerate(m.ref_status) if s == "TP"]
    if not detected:
        return 0.0
    ref_boxes = ndimage.find_objects(ref_lab)
    pred_boxes = ndimage.find_objects(pred_lab)
    scores = []
    for r in detected:
        preds = sorted({p for p, q in m.assigned if q == r})
        boxes = [ref_boxes[r]] + [pred_boxes[p] for p in preds]
        box = tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(3))
        ref_mask = ref_lab[box] == r + 1
        pred_mask = np.isin(pred_lab[box], [p + 1 for p in preds])
        scores.append(2.0 * np.count_nonzero(ref_mask & pred_mask)
                      / (np.count_nonzero(ref_mask) + np.count_nonzero(pred_mask)))
    return float(np.mean(scores))
