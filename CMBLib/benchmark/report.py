"""The benchmark's self-contained HTML page (``report.html``) and its FROC plot.

The page loads nothing from the network: the FROC plot is a PNG embedded as a data URI
(`CMBLib.report.pictures.data_uri`), the style is the reader's report's
(`CMBLib.report.html.STYLE`).
"""
import datetime
import html
import io
from typing import Optional

from ..report.html import STYLE
from ..report.pictures import data_uri

TITLES = {"valdo": "VALDO 2021 task 2 (cerebral microbleeds, T2*)", "cuhk": "CUHK SWI (Dou et al. 2016)"}


def froc_png(curve: Optional[dict], groups: Optional[dict] = None, operating=None,
             threshold: Optional[float] = None) -> bytes:
    """FROC (sensitivity vs false positives per subject) as PNG bytes: the pooled curve,
    one thinner curve per group, and the operating point marked."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=100)
    ax = fig.add_subplot(111)

    def points(c):
        pts = sorted((f, s) for f, s in zip(c["fp_per_subject"], c["sensitivity"]) if s is not None)
        return [p[0] for p in pts], [p[1] for p in pts]

    if curve:
        x, y = points(curve)
        cpm = curve.get("cpm")
        ax.plot(x, y, "o-", markersize=3, color="C0", label="all" + (f" (CPM {cpm:.3f})" if cpm is not None else ""))
    for n, (name, c) in enumerate((groups or {}).items(), 1):
        if c:
            x, y = points(c)
            ax.plot(x, y, "s--", markersize=3, linewidth=1, color=f"C{n}", label=name)
    if operating and operating[1] is not None:
        lab = "operating point" + (f" (threshold {threshold:g})" if threshold is not None else "")
        ax.plot([operating[0]], [operating[1]], "*", markersize=12, color="crimson", label=lab)
    ax.set_xlabel("false positives per subject")
    ax.set_ylabel("sensitivity (per CMB)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("FROC")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _e(v)


def _table(header: list, rows: list) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _groups(title: str, groups: Optional[dict], note: str = "") -> str:
    if not groups:
        return ""
    rows = [[_e(k), g["n_subjects"], g["n_ref"], g["tp"], g["fp"], g["fn"], _f(g["sensitivity"]),
             _f(g["precision"]), _f(g["f1"]), _f(g["fp_per_subject"], 2), _f(g["cpm"])] for k, g in groups.items()]
    out = f"<h2>By {_e(title)}</h2>" + _table(
        ["group", "subjects", "reference CMBs", "TP", "FP", "FN", "sensitivity", "precision", "F1", "FP/scan",
         "FROC CPM"], rows)
    return out + (f"<p class='note'>{_e(note)}</p>" if note else "")


def report_html(doc: dict, rows: list, png: Optional[bytes]) -> str:
    """The page: settings, pooled result, FROC, breakdowns, every subject (scored or skipped)."""
    b = doc.get("benchmark", {})
    ds = doc.get("dataset", "")
    fr = doc.get("froc") or {}
    ps = doc.get("per_subject", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CMB benchmark: {_e(ds)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>CMB detection benchmark: {_e(TITLES.get(ds, ds))}</h1>",
             f"<p>Data: {_e(b.get('data_dir'))}<br>Model: {_e(b.get('model'))}; operating threshold "
             f"{_f(doc.get('operating_threshold'), 3)}; sequence {_e(b.get('sequence'))}<br>"
             f"Subjects: {b.get('n_scored', 0)} scored, {b.get('n_skipped', 0)} skipped of {b.get('n_subjects_run', 0)}"
             + (f" (--limit {b['limit']} of {b.get('n_subjects_listed')} listed)" if b.get("limit") else "")
             + f"<br>Written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
             "<h2>Detection (per CMB)</h2>",
             _table(["TP", "FP", "FN", "sensitivity", "precision", "F1", "FP/scan", "FP per reference CMB",
                     "FROC CPM"],
                    [[doc["tp"], doc["fp"], doc["fn"], _f(doc["sensitivity"]), _f(doc["precision"]), _f(doc["f1"]),
                      _f(doc["fp_per_subject"], 2), _f(doc["fp_per_cmb"], 2), _f(fr.get("cpm"))]]),
             "<p class='note'>VALDO challenge rule (as <code>cmb evaluate --rule valdo</code>): a predicted CMB is "
             "a true positive when its centre of mass is strictly closer than 5 mm to the centre of its nearest "
             "reference CMB; of several on one reference the closest counts, the others are false positives. "
             + ("Reference CMBs are the 26-connected components of the label map." if ds == "valdo" else
                "Reference CMBs are the centres listed in the .mat files (1-based (i, j, k) voxel indices).")
             + "</p>"]
    per = [[k, _f(ps[k]["mean"]), _f(ps[k]["median"]), ps[k]["n"]] for k in ("f1", "count_difference", "dice",
                                                                         "dice_detected") if k in ps]
    parts.append("<h2>Per subject</h2>" + _table(["measure", "mean", "median", "subjects defined"], per))
    if png:
        at = ", ".join(f"{k}: {_f(v)}" for k, v in (fr.get("sensitivity_at") or {}).items())
        parts.append(f"<h2>FROC</h2><img alt='FROC curve' src='{data_uri(png)}'>"
                     f"<p class='note'>Sensitivity at FP per scan {_e(at)}. Points: the probability map re-thresholded "
                     "at 0.05 ... 0.95 and the operating threshold; candidates within the model's size limits "
                     "(first stage only); the star is the operating point as <code>cmb detect</code> reports it."
                     "</p>")
    sizes = doc.get("by_size_mm")
    if sizes:
        rows_s = [[_e(k), e["n_ref"], e["tp"], e["fn"], _f(e["sensitivity"]), e["n_pred"], e["fp"]]
                  for k, e in sizes.items()]
        parts.append("<h2>By CMB size (equivalent-sphere diameter of the mask component)</h2>"
                     + _table(["size", "reference CMBs", "found", "missed", "sensitivity", "predicted", "FP"], rows_s))
    else:
        parts.append("<p class='note'>No size breakdown: the references are centre points without masks.</p>")
    cohorts = doc.get("cohorts") or {}
    note = ""
    if cohorts:
        note = ("Cohort inferred from the T2S voxel grid: "
                + "; ".join(f"{k}: {v}" for k, v in cohorts.get("definitions", {}).items()))
    parts.append(_groups("cohort", doc.get("by_cohort"), note))
    parts.append(_groups("subject number series", doc.get("by_subject_series")))
    parts.append(_groups("slice thickness (largest voxel spacing)", doc.get("by_slice_thickness")))
    subj = []
    for r in rows:
        subj.append([_e(r.get("subject")), _e(r.get("status")), _e(r.get("cohort", "")),
                     _e(r.get("spacing_mm", "")), _e(r.get("n_ref", "")), _e(r.get("n_pred", "")),
                     _e(r.get("tp", "")), _e(r.get("fp", "")), _e(r.get("fn", "")), _e(r.get("reason", ""))])
    parts.append("<h2>Subjects</h2>" + _table(["subject", "status", "cohort", "spacing mm", "reference", "predicted",
                                                 "TP", "FP", "FN", "reason"], subj))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
