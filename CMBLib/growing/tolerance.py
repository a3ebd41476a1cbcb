"""Automatic tolerance: pick the tolerance just before the region runs away.

The size-versus-tolerance curve of a CMB rises slowly while the region fills the dark
focus and its partial-volume rim, then jumps when the tolerance reaches the
surrounding tissue and the region leaks into it (thesis Fig. 5, the "elbow").

`size_curve` turns join tolerances into that curve; `choose_tolerance` places the
tolerance before that runaway point.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class ToleranceChoice:
    tolerance: float            # chosen tolerance (region = voxels with join tolerance <= it)
    size: int                   # region size at that tolerance, voxels
    runaway_tolerance: Optional[float]  # tolerance at which the region first exceeds the cap
    has_elbow: bool             # False: no clear jump found (warned)


def size_curve(join: np.ndarray, limit: int):
    """(tolerances, sizes): region size for each distinct join tolerance, ascending.

    Stops after the first size above `limit` (later steps cannot matter).
    """
    values = np.sort(join[np.isfinite(join)].ravel())
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=int)
    values = values[: limit + 1]
    t = np.unique(values)
    sizes = np.searchsorted(values, t, side="right")  # size at t = number of joins <= t
    return t, sizes.astype(int)


def choose_tolerance(tolerances: np.ndarray, sizes: np.ndarray, cap: int,
                     fraction: float = 0.6) -> ToleranceChoice:
    """Tolerance = `fraction` x the runaway tolerance (the first at which size exceeds `cap`).

    The runaway tolerance is where the region leaks into the surrounding tissue, so it
    measures the CMB's contrast against its surroundings; the mask boundary lies part
    of the way there (partial-volume voxels half inside the focus).  The thesis keeps
    the last step before the runaway (fraction 1); the per-mode fractions in
    `engine.AUTO_FRACTION` come from the Dice evaluation in `benchmarks/eval_grow.py`.
    `has_elbow` is False when the region never exceeds the cap (no runaway inside the
    search box): then the largest tolerance tried is scaled instead.
    """
    tolerances = np.asarray(tolerances, dtype=float)
    sizes = np.asarray(sizes, dtype=int)
    over = np.nonzero(sizes > cap)[0]
    if over.size:
        r, runaway = int(over[0]), float(tolerances[over[0]])
    else:
        r, runaway = len(tolerances) - 1, float(tolerances[-1])
    target = fraction * runaway
    j = int(np.searchsorted(tolerances, target, side="right")) - 1
    j = min(max(j, 0), max(r - 1, 0))
    return ToleranceChoice(float(tolerances[j]), int(sizes[j]), runaway if over.size else None, bool(over.size))


def region_at(join: np.ndarray, tolerance: float) -> np.ndarray:
    """Boolean region grown with `tolerance`: voxels whose join tolerance is <= it."""
    return join <= tolerance


def curve_to_lists(tolerances: np.ndarray, sizes: np.ndarray, max_points: int = 200) -> dict:
    """The curve as JSON-friendly lists, thinned to at most `max_points` points."""
    if tolerances.size > max_points:
        keep = np.unique(np.linspace(0, tolerances.size - 1, max_points).round().astype(int))
        tolerances, sizes = tolerances[keep], sizes[keep]
    t: list[float] = [round(float(x), 6) for x in tolerances]
    return {"tolerance": t, "size": [int(s) for s in sizes]}
