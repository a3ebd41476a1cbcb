"""Self-contained HTML reports for the reader: one study (`NAME_cmb_report.html`) and a
cohort summary over a batch (`cmb_report.html`).

Pictures are PNGs embedded as base64 data URIs; the page loads nothing from the network
(no scripts, fonts or style sheets from elsewhere).  Library entry points (Slicer modules
call these with arrays + records):

* ``study_report_html(image, records, ...) -> str`` and ``write_study_report(path, ...)``;
* ``cohort_report_html(studies) -> str`` and ``write_cohort_report(path, studies)``.
"""
import datetime
import html
from pathlib import Path
from typing import Optional

from ..geometry import Volume
from .findings import (
    PATTERNS,
    category_counts,
    distribution_pattern,
    has_certainty,
    region_table,
    report_items,
)
from .pictures import data_uri, histogram_png, thumbnail_png

REPORT_SUFFIX = "_cmb_report.html"
COHORT_FILE = "cmb_report.html"
REFERENCES = [
    "Charidimou A, Boulouis G, Frosch MP, et al. The Boston criteria version 2.0 for cerebral amyloid "
    "angiopathy: a multicentre, retrospective, MRI-neuropathology diagnostic accuracy study. "
    "Lancet Neurol. 2022;21(8):714-725.",
    "Gregoire SM, Chaudhary UJ, Brown MM, et al. The Microbleed Anatomical Rating Scale (MARS): reliability "
    "of a tool to map brain microbleeds. Neurology. 2009;73(21):1759-1766.",
    "Cordonnier C, Potter GM, Jackson CA, et al. Improving interrater agreement about brain microbleeds: "
    "development of the Brain Observer MicroBleed Scale (BOMBS). Stroke. 2009;40(1):94-99.",
]
GENERIC_LIMITS = "An automatic detector: every finding needs a reader's review, and CMBs can be missed."
STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:22px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}
tr.total td{font-weight:bold;background:#f6f6f6}.note{color:#555;font-size:12px}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0;border:1px solid #ccc;padding:2px}
.thumbs figcaption{font-size:11px;max-width:220px}.warn{color:#a15c00}
"""


def model_limits(model: str = "default") -> str:
    """One sentence on the model's known limits: model.json "limits", else the first
    point under "Limits" in the model card (README.md of the model folder)."""
    try:
        from ..detection.model_io import read_metadata, resolve_model_folder

        folder = resolve_model_folder(model)
        meta = read_metadata(folder)
        if meta.get("limits"):
            return str(meta["limits"])
        lines = (folder / "README.md").read_text(encoding="utf-8").splitlines()
    except Exception:  # no model card: say the generic thing
        return GENERIC_LIMITS
    for n, line in enumerate(lines):
        if line.lstrip("*# ").lower().startswith("limits"):
            for item in lines[n + 1:]:
                if item.strip().startswith("* "):
                    text = item.strip()[2:].replace("**", "")
                    return text.split(". ")[0].rstrip(".") + "."
    return GENERIC_LIMITS


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _words(region: str) -> str:
    return region.replace("_", " ") if region else "not determined"


def item_caption(item: dict) -> str:
    """'4.2 mm, lobar: frontal left' (+ 'vessel-like', 'low confidence', certainty, review)."""
    parts = []
    if item["diameter_mm"] is not None:
        parts.append(f"{item['diameter_mm']:.1f} mm")
    loc = _words(item["region"]) + (f" {item['side']}" if item["side"] else "")
    parts.append(f"{item['category']}: {loc}" if item["category"] else f"location {loc}")
    if item["probability"] is not None:
        parts.append(f"p={item['probability']:.2f}")
    if item["certainty"]:
        parts.append(item["certainty"])
    if item["review_status"]:
        parts.append(str(item["review_status"]))
    if item["vessel_like"]:
        parts.append("VESSEL-LIKE")
    if item["low_confidence"] and item["certainty"] != "possible":
        parts.append("LOW CONFIDENCE")
    return ", ".join(parts)


def _table(rows: list[dict], certainty: bool) -> str:
    head = "<tr><th>category</th><th>region</th><th>side</th>" + (
        "<th>definite</th><th>possible</th>" if certainty else "") + "<th>total</th></tr>"
    body = []
    for r in rows:
        if r["region"] and r["total"] == 0:
            continue   # the table lists regions with CMBs; the totals show every category
        total = not r["region"]
        cells = [r["category"], _words(r["region"]) if r["region"] else "all regions", r["side"]]
        if certainty:
            cells += [r["definite"], r["possible"]]
        cells.append(r["total"])
        body.append(f"<tr{' class=total' if total else ''}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return "<table>" + head + "".join(body) + "</table>"


def _suppressed_section(image: Volume, suppressed: list) -> list:
    """The candidates the location filter set aside: a table and one thumbnail each."""
    out = [f"<h2>Set aside by the location filter ({len(suppressed)}, not counted)</h2>",
           "<p class=note>Candidates whose centre lies in CSF or the deep veins between the thalami (third "
           "ventricle, velum interpositum, quadrigeminal cistern: internal cerebral veins, vein of Galen, "
           "pineal), at most 1 mm from them: likely veins or calcification, not findings and not in the mask. "
           "Check each; a CMB there would be among them.</p>",
           "<table><tr><th>#</th><th>zone</th><th>diam. mm</th><th>prob.</th><th>RAS mm</th></tr>"]
    for n, r in enumerate(suppressed, start=1):
        c = r.get("centre_ras")
        d, p = r.get("diameter_mm"), r.get("max_probability")
        cells = [f"aside {n}", str(r.get("suppressed_by") or "location").replace("_", " "),
                 "" if d is None else f"{float(d):.1f}", "" if p is None else f"{float(p):.2f}",
                 "" if c is None else "({:.1f}, {:.1f}, {:.1f})".format(*[float(v) for v in c])]
        out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in cells) + "</tr>")
    out.append("</table><div class=thumbs>")
    for n, r in enumerate(suppressed, start=1):
        if r.get("centre_ras") is None:
            continue
        d = r.get("diameter_mm")
        png = thumbnail_png(image, [float(v) for v in r["centre_ras"]], None if d is None else float(d), caption="",
                            marked=True, title=f"aside {n}")
        out.append(f"<figure><img src='{data_uri(png)}' alt='set aside {n}'><figcaption class=warn>set aside "
                   f"{n}: {_e(str(r.get('suppressed_by') or 'location').replace('_', ' '))}</figcaption></figure>")
    out.append("</div>")
    return out


def study_report_html(image: Volume, records: list, study: Optional[dict] = None, model: Optional[dict] = None,
                      threshold: Optional[float] = None, source: str = "detection",
                      warnings: Optional[list] = None, suppressed: Optional[list] = None) -> str:
    """The HTML of one study's report.

    image: the Volume the CMBs were found in (for thumbnails).  records: detection records
    or annotation findings (see `report_items`).  study: identifiers to show, e.g.
    {"name", "patient_id", "patient_name", "study_date", "study_description",
    "series_description", "series_number"}; with {"pseudonym": True} only "name" is shown.
    model: {"name", "version", "limits"} (detections).  source: "detection" or "annotation".
    suppressed: candidates the location filter set aside (``suppressed_candidates`` of
    NAME_cmb.json): their own table and thumbnails, not counted.
    """
    study = dict(study or {})
    items = report_items(records, threshold)
    counted = [i for i in items if i["counted"]]
    certainty = has_certainty(items)
    pattern = distribution_pattern(items)
    counts = category_counts(items)
    title = f"Cerebral microbleeds: {study.get('name', 'study')}"
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>",
           f"<style>{STYLE}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    ident = [("Study", study.get("name"))]
    if not study.get("pseudonym"):
        for key, text in (("patient_name", "Patient"), ("patient_id", "Patient ID"), ("study_date", "Study date"),
                          ("study_description", "Study"), ("series_number", "Series"),
                          ("series_description", "Series description")):
            if study.get(key):
                ident.append((text, study[key]))
    else:
        ident.append(("Identifiers", "withheld (pseudonymised report)"))
    if source == "detection":
        model = dict(model or {})
        ident.append(("Method", f"automatic detection, model {model.get('name', '?')} version "
                                f"{model.get('version', '?')}" + (f", threshold {threshold:g}" if threshold else "")))
        ident.append(("Known limits", model.get("limits") or GENERIC_LIMITS))
    else:
        ident.append(("Method", "rater annotation (scribbles grown into masks; BOMBS metadata)"
                      + (f", rater {study['rater']}" if study.get("rater") else "")))
    ident.append(("Created", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    out.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in ident) + "</table>")

    out.append("<h2>Count</h2>")
    n_def = sum(1 for i in counted if i["certainty"] != "possible")
    extra = f" ({n_def} definite, {len(counted) - n_def} possible)" if certainty else ""
    rejected = len(items) - len(counted)
    out.append(f"<p><b>Number of CMBs: {len(counted)}</b>{extra}"
               + (f"; {rejected} rejected finding(s) not counted" if rejected else "")
               + f". Lobar {counts['lobar']}, deep {counts['deep']}, infratentorial {counts['infratentorial']}"
               + (f", location not determined {counts['not determined']}" if counts["not determined"] else "")
               + ".</p>")
    out.append("<h2>Distribution (MARS regions)</h2>")
    out.append(_table(region_table(items), certainty))
    out.append(f"<p><b>Observation:</b> {_e(PATTERNS[pattern])}")
    if any(i["region"] == "cerebellum" for i in counted):
        out.append(" Cerebellar CMBs are present; the Boston criteria v2.0 count cerebellar haemorrhagic "
                   "lesions as neither lobar nor deep.")
    out.append("</p><p class=note>This describes where the findings lie; it is not a diagnosis. A strictly lobar "
               "pattern of haemorrhagic lesions is one element of the Boston criteria v2.0 for cerebral amyloid "
               "angiopathy [1], to be weighed with the clinical picture and the other MRI markers; regions follow "
               "MARS [2], sizes BOMBS [3]. Locations come from an atlas registration and can be wrong near region "
               "borders.</p>")
    if warnings:
        out.append("<p class=warn>" + "<br>".join(_e(w) for w in warnings) + "</p>")

    if items:
        out.append("<h2>Findings</h2><p class=note>Axial crops (40 mm), radiological convention (patient's right "
                   "on the left); orange = vessel-like, low confidence or possible.</p><div class=thumbs>")
        for i in items:
            caption = item_caption(i)
            marked = i["vessel_like"] or i["low_confidence"]
            if i["centre_ras"] is None:
                out.append(f"<figure><figcaption>CMB {i['label']}: no position ({_e(caption)})</figcaption></figure>")
                continue
            png = thumbnail_png(image, i["centre_ras"], i["diameter_mm"], caption="", marked=marked,
                                title=f"CMB {i['label']}" + ("" if i["counted"] else " (rejected)"))
            x, y, z = i["centre_ras"]
            out.append(f"<figure><img src='{data_uri(png)}' alt='CMB {i['label']}'><figcaption"
                       f"{' class=warn' if marked else ''}>{_e(caption)}<br>RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
                       "</figcaption></figure>")
        out.append("</div>")
    if suppressed:
        out += _suppressed_section(image, suppressed)
    out.append("<h2>References</h2><ol class=note>" + "".join(f"<li>{_e(r)}</li>" for r in REFERENCES) + "</ol>")
    out.append("<p class=note>Made with CMBLib; for research use, not a medical device.</p></body></html>")
    return "\n".join(out)


def write_study_report(path, image: Volume, records: list, overwrite: bool = False, **kwargs) -> Path:
    """Write `study_report_html(image, records, **kwargs)` to `path` atomically."""
    from ..io import write_text_atomic

    return write_text_atomic(path, study_report_html(image, records, **kwargs), overwrite=overwrite)


def cohort_report_html(studies: list) -> str:
    """Cohort summary: studies = [{"name", "records" (or "items"), "status", "message"}].

    A table of counts per study and category (lobar / deep / infratentorial / not
    determined), the distribution pattern of each, and a histogram of CMBs per study."""
    rows, counts = [], []
    for s in studies:
        items = s.get("items") or report_items(s.get("records") or [])
        status = s.get("status", "ok")
        if status != "ok":
            rows.append([s.get("name"), status, "", "", "", "", "", s.get("message", "")])
            continue
        c = category_counts(items)
        counts.append(c["all"])
        rows.append([s.get("name"), "ok", c["all"], c["lobar"], c["deep"], c["infratentorial"],
                     c["not determined"], PATTERNS[distribution_pattern(items)]])
    head = ["study", "status", "CMBs", "lobar", "deep", "infratentorial", "not determined", "observation / message"]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>CMB cohort summary</title>",
           f"<style>{STYLE}</style></head><body><h1>Cerebral microbleeds: cohort summary</h1>",
           f"<p>{len(studies)} studies, {len(counts)} processed, {sum(counts)} CMBs in total; "
           f"{sum(1 for c in counts if c)} studies with at least one CMB.</p>",
           "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    if counts:
        out.append(f"<h2>CMBs per study</h2><img src='{data_uri(histogram_png(counts))}' alt='histogram'>")
    out.append("<p class=note>Observations describe where findings lie; they are not diagnoses. Regions follow "
               "MARS; see each study's report for pictures and references.</p></body></html>")
    return "\n".join(out)


def write_cohort_report(path, studies: list, overwrite: bool = True) -> Path:
    from ..io import write_text_atomic

    return write_text_atomic(path, cohort_report_html(studies), overwrite=overwrite)
