"""Which CMBs are new, persisting or no longer seen: matching across time points.

Follow-up findings are carried into the baseline's RAS mm by the registration and paired
one to one with the baseline findings (`CMBLib.metrics.matching.match_one_to_one`: the most
pairs closer than `tolerance_mm`, then the smallest total distance).  What is left over is
checked against the other scan's probability map when one is given: a follow-up finding
whose place in the baseline reaches `support` probability within `SUPPORT_RADIUS_MM` was
there before, only under the detection threshold (persisting, ``how``
"baseline below threshold"), and the same the other way round.  A finding the other scan
does not show at all (outside its field of view) is neither new nor gone:
``outside_common_view``.

Every entry has ``centre_ras`` in the follow-up's RAS mm and ``baseline_centre_ras`` in the
baseline's where it has one (None otherwise).
"""
from typing import Callable, Optional

import numpy as np

from ..metrics.matching import match_one_to_one

TOLERANCE_MM = 5.0
SUPPORT_RADIUS_MM = 3.0
SUPPORT = 0.3
RECORD_KEYS = ("label", "diameter_mm", "volume_mm3", "size_class", "max_probability", "location", "side",
               "vessel_like", "review_status")


def _centres(records) -> np.ndarray:
    return np.array([r["centre_ras"] for r in records], float).reshape(-1, 3)


def _brief(record: Optional[dict], prefix: str = "") -> dict:
    if record is None:
        return {}
    return {prefix + k: record[k] for k in RECORD_KEYS if k in record and record[k] is not None}


def match_findings(baseline: list, followup: list, to_baseline: Callable, to_followup: Callable,
                   tolerance_mm: float = TOLERANCE_MM, baseline_support: Optional[Callable] = None,
                   followup_support: Optional[Callable] = None, in_baseline_view: Optional[Callable] = None,
                   in_followup_view: Optional[Callable] = None, support: float = SUPPORT) -> dict:
    """Class every finding (module docstring).

    baseline, followup: detection records or findings with ``centre_ras`` (each scan's own
    RAS mm).  to_baseline / to_followup: (N, 3) RAS mm -> (N, 3) RAS mm of the other scan.
    *_support: (3,) RAS mm of that scan -> (probability, (3,) RAS mm of its peak) or None.
    in_*_view: (N, 3) RAS mm of that scan -> bool per point.
    Returns {"new", "persisting", "no_longer_seen", "outside_common_view"}: lists of dicts.
    """
    fb = _centres(followup)
    bb = _centres(baseline)
    f_in_b = to_baseline(fb) if len(fb) else np.zeros((0, 3))
    b_in_f = to_followup(bb) if len(bb) else np.zeros((0, 3))
    out = {"new": [], "persisting": [], "no_longer_seen": [], "outside_common_view": []}
    f_seen = in_baseline_view(f_in_b) if (in_baseline_view and len(fb)) else np.ones(len(fb), bool)
    b_seen = in_followup_view(b_in_f) if (in_followup_view and len(bb)) else np.ones(len(bb), bool)
    d = np.linalg.norm(f_in_b[:, None, :] - bb[None, :, :], axis=2) if len(fb) and len(bb) \
        else np.zeros((len(fb), len(bb)))
    m = match_one_to_one(d, tolerance_mm)
    for p, r in m.pairs:
        out["persisting"].append(dict(_brief(followup[p]), **_brief(baseline[r], "baseline_"),
                                      centre_ras=fb[p].tolist(), baseline_centre_ras=bb[r].tolist(),
                                      distance_mm=round(float(d[p, r]), 2), how="matched"))
    for p in (p for p, status in enumerate(m.pred_status) if status != "TP"):
        entry = dict(_brief(followup[p]), centre_ras=fb[p].tolist(), baseline_centre_ras=None)
        _leftover(out, entry, f_in_b[p], f_seen[p], baseline_support, support, "baseline", "new")
    for r in (r for r, status in enumerate(m.ref_status) if status != "TP"):
        entry = dict(_brief(baseline[r], "baseline_"), centre_ras=b_in_f[r].tolist(),
                     baseline_centre_ras=bb[r].tolist())
        _leftover(out, entry, b_in_f[r], b_seen[r], followup_support, support, "follow-up", "no_longer_seen")
    return out


def _leftover(out: dict, entry: dict, point, seen: bool, other_support, support: float, other: str,
              otherwise: str) -> None:
    """Class one unpaired finding: outside the other scan's view, persisting under the other
    scan's threshold (`other_support` at `point`, the other scan's RAS mm), else `otherwise`."""
    if not seen:
        out["outside_common_view"].append(dict(entry, seen_in="followup" if other == "baseline" else "baseline",
                                               how=f"outside the {other}'s field of view"))
        return
    hit = other_support(point) if other_support else None
    if hit is not None and hit[0] >= support:
        place = np.asarray(hit[1], float).tolist()
        key = "baseline_" if other == "baseline" else ""
        entry.update({("baseline_centre_ras" if key else "centre_ras"): place,
                      f"{key}max_probability": round(float(hit[0]), 3),
                      "distance_mm": round(float(np.linalg.norm(np.asarray(point) - hit[1])), 2),
                      "how": f"{other} below threshold"})
        out["persisting"].append(entry)
        return
    if otherwise == "new":
        entry["baseline_max_probability"] = None if hit is None else round(float(hit[0]), 3)
    out[otherwise].append(entry)


def probability_support(probability, radius_mm: float = SUPPORT_RADIUS_MM) -> Callable:
    """A *_support function for `match_findings` on a probability Volume: the largest
    probability within `radius_mm` of a point (RAS mm) and where it lies; None outside."""
    arr = np.asarray(probability.array)
    spacing = np.asarray(probability.spacing, float)
    half = np.ceil(radius_mm / spacing).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half[::-1]], indexing="ij"), -1)  # (k, j, i)

    def support(point_ras):
        ijk = np.rint(probability.ras_to_voxel(point_ras)).astype(int)
        kji = ijk[::-1] + grid.reshape(-1, 3)
        ras = probability.kji_to_ras(kji)
        near = np.linalg.norm(ras - np.asarray(point_ras, float), axis=1) <= radius_mm
        ok = near & np.all((kji >= 0) & (kji < np.array(arr.shape)), axis=1)
        if not ok.any():
            return None
        kji, ras = kji[ok], ras[ok]
        values = arr[tuple(kji.T)]
        best = int(np.argmax(values))
        return float(values[best]), ras[best]

    return support


def field_of_view(volume, margin_mm: float = 2.0, brain=None) -> Callable:
    """An in_*_view function: True for points (RAS mm) inside `volume`'s grid by at least
    `margin_mm` (and inside `brain`, a bool [k, j, i] array on it, when given)."""
    shape = np.array(volume.shape_ijk)
    margin = margin_mm / np.asarray(volume.spacing, float)

    def inside(points_ras):
        ijk = volume.ras_to_voxel(np.asarray(points_ras, float).reshape(-1, 3))
        ok = np.all((ijk >= -0.5 + margin) & (ijk <= shape - 0.5 - margin), axis=1)
        if brain is not None:
            idx = np.clip(np.rint(ijk).astype(int), 0, shape - 1)
            ok &= np.asarray(brain)[idx[:, 2], idx[:, 1], idx[:, 0]]
        return ok

    return inside
