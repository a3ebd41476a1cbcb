"""compare_report.html: the reader's page of a follow-up comparison (self-contained HTML).

New CMBs come first, each as a pair of axial crops (`CMBLib.report.pictures`): the baseline
at the same place (carried over by the registration) and the follow-up; then persisting
and no-longer-seen CMBs as a table, the registration's quality figures and the flags.
"""
import datetime
import html
from pathlib import Path
from typing import Optional

from ..report.html import STYLE
from ..report.pictures import data_uri, thumbnail_png

TITLE = "Follow-up comparison: cerebral microbleeds"


def _e(v) -> str:
    return html.escape(str(v))


def _xyz(p) -> str:
    return "-" if p is None else ", ".join(f"{float(v):.1f}" for v in p)


def compare_report_html(result, baseline_volume, followup_volume, study: Optional[dict] = None,
                        review: Optional[dict] = None) -> str:
    """The HTML of the comparison report of a `pipeline.CompareResult`.  `review`: the
    ``review`` block of a reviewed comparison (`review.reviewed_document`); its count and
    category are shown first, and each new CMB says the reader's decision."""
    study = dict(study or {})
    c = result.classes
    q = result.quality
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(TITLE)}</title>",
           f"<style>{STYLE}</style></head><body><h1>{_e(TITLE)}</h1>"]
    rows = [("Study", study.get("name", "follow-up")), ("Baseline findings", result.baseline.source),
            ("Follow-up findings", result.followup.source),
            ("Created", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]
    out.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>")
    out.append("<h2>ARIA-H microhaemorrhage</h2>")
    if review:
        out.append(f"<p><b>After the reader's review: {int(review['new_count'])} new CMB(s); ARIA-H category: "
                   f"{_e(review['aria_h_category'])}</b> (accepted {int(review['accepted'])}, rejected "
                   f"{int(review['rejected'])}, not reviewed {int(review['unreviewed'])}; rejected findings are "
                   "not counted). The automatic figures follow.</p>")
    out.append(f"<p><b>New CMBs since the baseline: {len(c['new'])}; ARIA-H category: "
               f"{_e(result.aria_h_category)}</b> (none 0, mild 1-4, moderate 5-9, severe 10 or more new "
               f"microhaemorrhages). Persisting {len(c['persisting'])}, no longer seen {len(c['no_longer_seen'])}"
               + (f", outside the common field of view {len(c['outside_common_view'])}"
                  if c["outside_common_view"] else "") + ".</p>")
    out.append(f"<p class=note>Matched when the centres lie within {result.settings['tolerance_mm']:g} mm after "
               "registration. Superficial siderosis is not graded; regions that turned dark are only flagged."
               "</p>")
    if result.warnings:
        out.append("<p class=warn>" + "<br>".join(_e(w) for w in result.warnings) + "</p>")
    if c["new"]:
        out.append("<h2>New CMBs</h2><p class=note>Axial crops (40 mm), radiological convention; left: baseline "
                   "at the same place, right: follow-up.</p><div class=thumbs>")
        for n, e in enumerate(c["new"], start=1):
            at_baseline = result.registration.to_baseline(e["centre_ras"])[0]
            left = thumbnail_png(baseline_volume, at_baseline, e.get("diameter_mm"), title=f"new {n}: baseline")
            right = thumbnail_png(followup_volume, e["centre_ras"], e.get("diameter_mm"), title=f"new {n}: follow-up",
                                  marked=bool(e.get("near_dark_region")))
            size, prob = float(e.get("diameter_mm") or 0), float(e.get("max_probability") or 0)
            caption = f"new {n}: {size:.1f} mm, p {prob:.2f}; follow-up RAS ({_xyz(e['centre_ras'])}) mm"
            if e.get("how") == "difference":
                caption += (f"; found on the difference image (darkening {float(e.get('peak_darkening') or 0):.2f}), "
                            "not by the detector")
            if e.get("flag"):
                caption += f"; {e['flag']}"
            if e.get("review_status"):
                caption += f"; reader: {e['review_status']}"
            out.append(f"<figure><img src='{data_uri(left)}' alt='baseline {n}'><img src='{data_uri(right)}' "
                       f"alt='follow-up {n}'><figcaption{' class=warn' if e.get('flag') else ''}>{_e(caption)}"
                       "</figcaption></figure>")
        out.append("</div>")
    for key, title in (("persisting", "Persisting CMBs"), ("no_longer_seen", "No longer seen"),
                       ("outside_common_view", "Outside the common field of view")):
        if not c[key]:
            continue
        out.append(f"<h2>{title}</h2><table><tr><th>#</th><th>follow-up RAS mm</th><th>baseline RAS mm</th>"
                   "<th>how</th></tr>")
        for n, e in enumerate(c[key], start=1):
            out.append(f"<tr><td>{n}</td><td>{_xyz(e['centre_ras'])}</td><td>{_xyz(e.get('baseline_centre_ras'))}"
                       f"</td><td>{_e(e.get('how', ''))}</td></tr>")
        out.append("</table>")
    out.append("<h2>Registration</h2><table>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in
        (("kind", result.registration.kind), ("correlation (same brain: 0.8-0.95)", q["correlation"]),
         ("baseline brain shared", f"{100 * q['overlap']:.0f}%"), ("head turned by", f"{q['rotation_deg']:.1f} deg"),
         ("head shifted by", f"{q['translation_mm']:.1f} mm"))) + "</table>")
    out.append("<p class=note>Made with CMBLib; an automatic comparison for a reader to check, for research use, "
               "not a medical device.</p></body></html>")
    return "\n".join(out)


def write_compare_report(path, result, baseline_volume, followup_volume, study: Optional[dict] = None,
                         review: Optional[dict] = None) -> Path:
    from ..io import write_text_atomic

    return write_text_atomic(path, compare_report_html(result, baseline_volume, followup_volume, study, review))
