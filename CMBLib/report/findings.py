"""What a report says about CMBs: one normalised item per CMB, the MARS-style table and
the distribution pattern.

`report_items` accepts detection records (``NAME_cmb.json`` "cmbs") and annotation
findings (``*_desc-cmb_annotation.json`` "findings") and returns dicts with

``label``, ``centre_ras`` (RAS mm), ``diameter_mm``, ``volume_mm3``, ``region`` (MARS
region or annotation location value, '' when unknown), ``category`` (lobar / deep /
infratentorial / '' unknown), ``side``, ``certainty`` ('definite' / 'possible' / None),
``review_status`` (annotations only), ``probability``, ``vessel_like``, ``low_confidence``.

Rejected annotation findings are left out of counts (kept in the list with
``counted=False`` so the report can show them).
"""
from collections import OrderedDict
from collections.abc import Iterable
from typing import Optional

from ..location.regions import CATEGORY, LOBES, REGION_NAMES
from ..location.summary import mars_table

LOW_CONFIDENCE_MARGIN = 0.1   # detections within this of the threshold are marked "low confidence"
ANNOTATION_GROUPS = {"cortex_gwj": "lobar", "subcortical_wm": "lobar", "internal_external_capsule": "deep"}
PATTERNS = {
    "none": "No CMB was found.",
    "strictly_lobar": "All CMBs with a known location are lobar (cortical or cortico-subcortical).",
    "deep_infratentorial": "All CMBs with a known location are deep and/or infratentorial; none is lobar.",
    "mixed": "CMBs are found both in lobar and in deep and/or infratentorial regions (mixed distribution).",
    "unknown": "The location of the CMBs was not determined.",
}


def report_items(records: Iterable[dict], threshold: Optional[float] = None) -> list[dict]:
    """Normalise detection records or annotation findings (see the module docstring)."""
    items = []
    for n, r in enumerate(records):
        mask = r.get("mask") if isinstance(r.get("mask"), dict) else {}
        region = r.get("location") or r.get("region") or ""
        region = "" if region in ("unreviewed", "outside") else str(region)
        category = (r.get("location_category") or r.get("category") or r.get("location_group") or "")
        if category in ("", "unreviewed", "outside"):
            category = CATEGORY.get(region) or ANNOTATION_GROUPS.get(region, "")
        category = "" if category == "outside" else category
        side = r.get("side") or ""
        side = "" if side == "unreviewed" else str(side)
        certainty = {"certain": "definite", "definite": "definite", "uncertain": "possible",
                     "possible": "possible"}.get(str(r.get("certainty", "")))
        prob = r.get("max_probability", r.get("probability"))
        prob = None if prob is None else float(prob)
        status = r.get("review_status")
        low = prob is not None and threshold is not None and prob < threshold + LOW_CONFIDENCE_MARGIN
        items.append({
            "label": int(r.get("label", n + 1)),
            "centre_ras": [float(v) for v in r["centre_ras"]] if r.get("centre_ras") is not None else None,
            "diameter_mm": _num(r.get("diameter_mm", mask.get("diameter_mm"))),
            "volume_mm3": _num(r.get("volume_mm3", mask.get("volume_mm3"))),
            "region": region, "category": category, "side": side, "certainty": certainty,
            "review_status": status, "probability": prob, "vessel_like": bool(r.get("vessel_like")),
            "low_confidence": bool(low or certainty == "possible"),
            "counted": status != "rejected",
        })
    return items


def _num(v):
    return None if v is None else float(v)


def has_certainty(items: list[dict]) -> bool:
    return any(i["certainty"] for i in items)


def region_table(items: list[dict]) -> list[dict]:
    """MARS-style rows: {'category', 'region', 'side', 'definite', 'possible', 'total'}.

    MARS regions by side (brainstem and corpus callosum: midline) in MARS form order,
    then annotation locations without a lobe ('cortex_gwj', 'subcortical_wm', ...),
    'not determined', one total per category (region '') and the grand total
    (category 'all').  Only counted items (not rejected)."""
    counted = [i for i in items if i["counted"]]
    mars = [i for i in counted if i["region"] in REGION_NAMES]
    rows = [dict(r) for r in mars_table([{"region": i["region"], "side": i["side"],
                                          "certainty": i["certainty"] or "definite"} for i in mars])
            if r["region"] and r["category"] != "outside"]
    extra: dict = OrderedDict()
    for i in counted:
        if i["region"] not in REGION_NAMES:
            key = (i["category"] or "not determined", i["region"] or "not determined", i["side"])
            extra.setdefault(key, []).append(i)
    for (cat, region, side), members in extra.items():
        rows.append(_row(cat, region, side, members))
    for cat in ("lobar", "deep", "infratentorial", "not determined"):
        members = [i for i in counted if (i["category"] or "not determined") == cat]
        rows.append(_row(cat, "", "", members))
    rows.append(_row("all", "", "", counted))
    return rows


def _row(category, region, side, members):
    d = sum(1 for m in members if m["certainty"] != "possible")
    p = sum(1 for m in members if m["certainty"] == "possible")
    return {"category": category, "region": region, "side": side, "definite": d, "possible": p, "total": d + p}


def category_counts(items: list[dict]) -> dict:
    """{'lobar', 'deep', 'infratentorial', 'not determined', 'all'} -> count of counted items."""
    counted = [i for i in items if i["counted"]]
    out = {c: sum(1 for i in counted if (i["category"] or "not determined") == c)
           for c in ("lobar", "deep", "infratentorial", "not determined")}
    out["all"] = len(counted)
    return out


def distribution_pattern(items: list[dict]) -> str:
    """'none' | 'strictly_lobar' | 'deep_infratentorial' | 'mixed' | 'unknown' (counted items)."""
    c = category_counts(items)
    if c["all"] == 0:
        return "none"
    lobar, other = c["lobar"], c["deep"] + c["infratentorial"]
    if lobar and other:
        return "mixed"
    if lobar:
        return "strictly_lobar"
    if other:
        return "deep_infratentorial"
    return "unknown"


def lobe_counts(items: list[dict]) -> dict:
    """{lobe: {'left': n, 'right': n}} for counted lobar items with a MARS lobe."""
    out = {lobe: {"left": 0, "right": 0} for lobe in LOBES}
    for i in items:
        if i["counted"] and i["region"] in out and i["side"] in ("left", "right"):
            out[i["region"]][i["side"]] += 1
    return out
