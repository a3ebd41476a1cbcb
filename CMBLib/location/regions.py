"""The MARS / BOMBS region vocabulary used for every CMB location.

Region names are snake_case and fixed (the annotator and detection use them too).
Each region has a category (``lobar``, ``deep``, ``infratentorial``; ``outside`` for
points not in brain tissue) and an integer id used in label maps (ids 1..13 follow
the MARS rating form order: infratentorial, deep, then lobar).

Side is ``left``, ``right`` or ``midline``.  The MARS form scores the brainstem and
the corpus callosum once (no side); every other region per hemisphere.
"""
from collections import OrderedDict

OUTSIDE = "outside"

# id -> (region, category); id 0 is outside.
REGIONS = OrderedDict(
    [
        (1, ("brainstem", "infratentorial")),
        (2, ("cerebellum", "infratentorial")),
        (3, ("basal_ganglia", "deep")),
        (4, ("thalamus", "deep")),
        (5, ("internal_capsule", "deep")),
        (6, ("external_capsule", "deep")),
        (7, ("corpus_callosum", "deep")),
        (8, ("deep_periventricular_wm", "deep")),
        (9, ("frontal", "lobar")),
        (10, ("parietal", "lobar")),
        (11, ("temporal", "lobar")),
        (12, ("occipital", "lobar")),
        (13, ("insula", "lobar")),
    ]
)

REGION_NAMES = [name for name, _ in REGIONS.values()]
REGION_ID = {name: rid for rid, (name, _) in REGIONS.items()}
REGION_ID[OUTSIDE] = 0
CATEGORY = {name: cat for name, cat in REGIONS.values()}
CATEGORY[OUTSIDE] = OUTSIDE
CATEGORIES = ("lobar", "deep", "infratentorial", OUTSIDE)
LOBES = ("frontal", "parietal", "temporal", "occipital", "insula")
MIDLINE_REGIONS = ("brainstem", "corpus_callosum")

# Side codes used in side label maps.
SIDE_NONE, SIDE_LEFT, SIDE_RIGHT = 0, 1, 2
SIDE_NAME = {SIDE_NONE: "midline", SIDE_LEFT: "left", SIDE_RIGHT: "right"}


def region_name(region_id: int) -> str:
    """Region name for a label-map id (0 or unknown -> 'outside')."""
    entry = REGIONS.get(int(region_id))
    return entry[0] if entry else OUTSIDE


def category_of(region: str) -> str:
    """'lobar' | 'deep' | 'infratentorial' | 'outside' for a region name."""
    return CATEGORY.get(region, OUTSIDE)


def side_name(region: str, side_code: int, x_ras_mm: float = 0.0) -> str:
    """Side of a finding: 'midline' for brainstem / corpus callosum, otherwise the
    hemisphere code of the label, or the sign of x (RAS, MNI x on the atlas route:
    x > 0 is right) when unknown or outside the brain."""
    if region in MIDLINE_REGIONS:
        return "midline"
    if side_code in (SIDE_LEFT, SIDE_RIGHT) and region != OUTSIDE:
        return SIDE_NAME[int(side_code)]
    return "right" if x_ras_mm > 0 else "left"
