"""ARIA-H microhaemorrhage category from the number of new CMBs since the baseline.

The categories of the anti-amyloid drug labels (lecanemab, donanemab) and the ARIA MRI
guidance: none 0, mild 1-4, moderate 5-9, severe 10 or more new microhaemorrhages.
Superficial siderosis is graded separately there; this project only flags it
(`siderosis.py`).
"""
from ..errors import CMBError

CATEGORIES = ("none", "mild", "moderate", "severe")
BOUNDS = ((0, "none"), (1, "mild"), (5, "moderate"), (10, "severe"))  # (lowest count, category)


def aria_h_category(n_new: int) -> str:
    """'none', 'mild', 'moderate' or 'severe' for `n_new` new CMBs (a count >= 0)."""
    if isinstance(n_new, bool) or int(n_new) != n_new or n_new < 0:
        raise CMBError(f"the number of new CMBs must be a whole number >= 0, not {n_new!r}")
    category = "none"
    for lowest, name in BOUNDS:
        if n_new >= lowest:
            category = name
    return category
