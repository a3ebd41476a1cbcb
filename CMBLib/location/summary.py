"""MARS summary tables: CMB counts by region, side and certainty (per study, per dataset).

Input records are dicts with at least ``region`` and ``side`` (as ``locate_points``
returns them); ``certainty`` ('definite' | 'possible', or a boolean ``uncertain``) and
``study`` are optional.  The MARS form counts definite and possible microbleeds
separately, per region and per side (brainstem and corpus callosum: one count).
"""
from collections import OrderedDict
from collections.abc import Iterable

from .regions import MIDLINE_REGIONS, OUTSIDE, REGION_NAMES, category_of

COLUMNS = ["study", "category", "region", "side", "definite", "possible", "total"]


def _certainty(rec) -> str:
    c = rec.get("certainty")
    if c in ("definite", "possible"):
        return c
    return "possible" if rec.get("uncertain") else "definite"


def mars_table(records: Iterable[dict], study: str = "") -> list[dict]:
    """One row per (region, side) of the MARS form, in form order, with counts.

    Rows: every region x side (left, right; 'midline' for brainstem and corpus
    callosum), plus an 'outside' row; then category totals (region '') and a grand
    total (category 'all')."""
    records = list(records)
    rows = OrderedDict()
    for name in REGION_NAMES:
        sides = ("midline",) if name in MIDLINE_REGIONS else ("left", "right")
        for side in sides:
            rows[(name, side)] = {"definite": 0, "possible": 0}
    rows[(OUTSIDE, "")] = {"definite": 0, "possible": 0}
    for rec in records:
        name = rec.get("region", OUTSIDE)
        side = rec.get("side", "")
        if name == OUTSIDE:
            side = ""
        elif name in MIDLINE_REGIONS:
            side = "midline"
        key = (name, side) if (name, side) in rows else (OUTSIDE, "")
        rows[key][_certainty(rec)] += 1
    out = []
    for (name, side), c in rows.items():
        out.append(_row(study, category_of(name), name, side, c["definite"], c["possible"]))
    for cat in ("lobar", "deep", "infratentorial", OUTSIDE):
        d = sum(r["definite"] for r in out if r["category"] == cat and r["region"])
        p = sum(r["possible"] for r in out if r["category"] == cat and r["region"])
        out.append(_row(study, cat, "", "", d, p))
    d = sum(r["definite"] for r in out if r["region"])
    p = sum(r["possible"] for r in out if r["region"])
    out.append(_row(study, "all", "", "", d, p))
    return out


def dataset_table(records: Iterable[dict]) -> list[dict]:
    """MARS tables for every study (key ``study`` of each record) followed by the
    dataset total (study 'ALL')."""
    records = list(records)
    studies = list(OrderedDict.fromkeys(str(r.get("study", "")) for r in records))
    out = []
    for s in studies:
        out.extend(mars_table([r for r in records if str(r.get("study", "")) == s], s))
    out.extend(mars_table(records, "ALL"))
    return out


def _row(study, category, region, side, definite, possible):
    return {"study": study, "category": category, "region": region, "side": side,
            "definite": definite, "possible": possible, "total": definite + possible}
