"""Match predicted CMBs to reference CMBs: the valdo, touch and one-to-one rules.

All rules take the (n_pred, n_ref) matrix of centre-of-mass distances in mm and, for
``touch``, the voxel overlap between elements.  Each returns a `Matching` with the
status of every predicted and reference element and the TP / FP / FN counts.

valdo (VAscular Lesions DetectiOn challenge, MICCAI 2021, task 2)
    As the official scorer (WhereIsValdo/valdo-eval-2021,
    ``evaluation_comparison/pairwise_measures.py``, ``assign_tp_fp_distance``): each
    predicted element goes to its *nearest* reference element (centre-of-mass
    distance); it is a candidate hit when that distance is strictly below
    ``distance_mm`` (``paired_dist < thresh_assign``).  Of several candidates on one
    reference the closest is the TP and the others are FPs (duplicates); a prediction
    whose nearest reference is too far is an FP (it does not fall back to a farther
    reference).  References without a candidate are FNs, so TP + FP = predictions and
    TP + FN = references.  Ties go to the lower element number (``np.argmin``).  One
    deliberate difference: when two predictions are *exactly* equally close to one
    reference, the official code marks both TP (and FN may go negative); here only
    the first is the TP, the other a duplicate FP.

touch
    A reference is detected (TP) when at least one voxel of any prediction overlaps
    it, otherwise it is an FN.  A prediction overlapping no reference is an FP;
    further predictions on an already detected reference are neither TP nor FP
    (counted as ``duplicates``), and one prediction touching two references detects
    both.  This is the thesis's one-voxel-overlap criterion.

one_to_one
    Optimal one-to-one assignment (scipy ``linear_sum_assignment``) among the pairs
    whose centre distance is below ``distance_mm`` (strictly, as valdo): the largest
    number of pairs, and among those the smallest total distance.  Unassigned
    predictions are FPs, unassigned references FNs.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import CMBError

RULES = ("valdo", "touch", "one_to_one")


@dataclass
class Matching:
    """Outcome of one rule on one case; element numbers are 0-based positions here."""

    pred_status: list[str]                  # 'TP', 'FP' or 'duplicate' per prediction
    ref_status: list[str]                   # 'TP' or 'FN' per reference
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (pred, ref) matched pairs
    duplicates: int = 0
    # (pred, ref) for every prediction credited to a reference, duplicates included
    assigned: list[tuple[int, int]] = field(default_factory=list)

    @property
    def tp(self) -> int:
        return sum(s == "TP" for s in self.ref_status)

    @property
    def fp(self) -> int:
        return sum(s == "FP" for s in self.pred_status)

    @property
    def fn(self) -> int:
        return sum(s == "FN" for s in self.ref_status)


def normalise_rule(rule: str) -> str:
    r = str(rule).strip().lower().replace("-", "_")
    if r not in RULES:
        raise CMBError(f"unknown matching rule {rule!r}; use valdo, touch or one-to-one")
    return r


def match(rule: str, distances: np.ndarray, distance_mm: float = 5.0,
          overlaps: Optional[dict[tuple[int, int], int]] = None,
          keep: Optional[np.ndarray] = None) -> Matching:
    """Apply `rule`; `keep` (bool per prediction) drops predictions first (FROC thresholds)."""
    rule = normalise_rule(rule)
    d = np.asarray(distances, dtype=float)
    if d.ndim != 2:
        raise CMBError("distances must be an (n_pred, n_ref) matrix")
    n_pred, n_ref = d.shape
    kept = np.ones(n_pred, bool) if keep is None else np.asarray(keep, bool)
    if rule == "valdo":
        m = match_valdo(d[kept], distance_mm)
    elif rule == "one_to_one":
        m = match_one_to_one(d[kept], distance_mm)
    else:
        idx = {int(p): i for i, p in enumerate(np.flatnonzero(kept))}
        sub = {(idx[p], r): v for (p, r), v in (overlaps or {}).items() if p in idx}
        m = match_touch(int(kept.sum()), n_ref, sub)
    if keep is None:
        return m
    # Map back to the full list of predictions; dropped ones get status 'dropped'.
    positions = np.flatnonzero(kept)
    status = ["dropped"] * n_pred
    for i, s in zip(positions, m.pred_status):
        status[int(i)] = s
    pairs = [(int(positions[p]), r) for p, r in m.pairs]
    assigned = [(int(positions[p]), r) for p, r in m.assigned]
    return Matching(status, m.ref_status, pairs, m.duplicates, assigned)


def match_valdo(distances: np.ndarray, distance_mm: float = 5.0) -> Matching:
    """Nearest-reference rule of the VALDO challenge (see module docstring)."""
    n_pred, n_ref = distances.shape
    pred_status, ref_status = ["FP"] * n_pred, ["FN"] * n_ref
    if n_ref == 0 or n_pred == 0:
        return Matching(pred_status, ref_status)
    nearest = np.argmin(distances, axis=1)          # first minimum: lower reference number
    candidates: dict[int, list[tuple[float, int]]] = {}
    for p in range(n_pred):
        r = int(nearest[p])
        dist = float(distances[p, r])
        if dist < distance_mm:
            candidates.setdefault(r, []).append((dist, p))
    pairs, assigned = [], []
    duplicates = 0
    for r, cands in sorted(candidates.items()):
        cands.sort()                                 # closest first; ties by prediction number
        best = cands[0][1]
        pred_status[best] = "TP"
        ref_status[r] = "TP"
        pairs.append((best, r))
        assigned.extend((p, r) for _, p in cands)
        duplicates += len(cands) - 1                 # these stay FP
    return Matching(pred_status, ref_status, sorted(pairs), duplicates, sorted(assigned))


def match_one_to_one(distances: np.ndarray, distance_mm: float = 5.0) -> Matching:
    """Maximum-cardinality, minimum-total-distance assignment within `distance_mm`."""
    from scipy.optimize import linear_sum_assignment

    n_pred, n_ref = distances.shape
    pred_status, ref_status = ["FP"] * n_pred, ["FN"] * n_ref
    allowed = distances < distance_mm
    if not allowed.any():                            # also when there is no prediction or reference
        return Matching(pred_status, ref_status)
    # A forbidden pair costs more than any sum of allowed pairs, so the optimum first
    # maximises the number of allowed pairs, then minimises their total distance.
    big = (float(distance_mm) + 1.0) * (min(n_pred, n_ref) + 1)
    cost = np.where(allowed, distances, big)
    rows, cols = linear_sum_assignment(cost)
    pairs = []
    for p, r in zip(rows.tolist(), cols.tolist()):
        if allowed[p, r]:
            pred_status[p] = "TP"
            ref_status[r] = "TP"
            pairs.append((p, r))
    return Matching(pred_status, ref_status, sorted(pairs), 0, sorted(pairs))


def match_touch(n_pred: int, n_ref: int, overlaps: dict[tuple[int, int], int]) -> Matching:
    """One-voxel-overlap rule; `overlaps` maps (pred, ref) 0-based pairs to voxel counts."""
    pred_status = ["FP"] * n_pred
    ref_status = ["FN"] * n_ref
    pairs = sorted((int(p), int(r)) for (p, r), v in overlaps.items() if v >= 1)
    for _, r in pairs:
        ref_status[r] = "TP"
    claimed = set()
    duplicates = 0
    for p in range(n_pred):
        refs = [r for q, r in pairs if q == p]
        if not refs:
            continue
        if all(r in claimed for r in refs):
            pred_status[p] = "duplicate"
            duplicates += 1
        else:
            pred_status[p] = "TP"
        claimed.update(refs)
    return Matching(pred_status, ref_status, pairs, duplicates, list(pairs))


def match_points(pred_ras, ref_ras, rule: str = "valdo", distance_mm: float = 5.0) -> Matching:
    """`match` on points: findings' and reference CMBs' centres (n x 3, RAS mm), for
    findings that have no mask (e.g. candidates set aside by the location filter).
    The ``touch`` rule needs masks and is refused."""
    if normalise_rule(rule) == "touch":
        raise CMBError("the touch rule needs masks; match points with valdo or one-to-one")
    p = np.asarray(pred_ras, float).reshape(-1, 3)
    r = np.asarray(ref_ras, float).reshape(-1, 3)
    return match(rule, np.linalg.norm(p[:, None, :] - r[None, :, :], axis=2), distance_mm)
