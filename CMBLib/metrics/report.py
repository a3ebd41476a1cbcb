"""Write an evaluation report folder: metrics.json, per_case.csv, per_cmb.csv, froc.png, summary.md.

Every file is written atomically.  ``metrics.json`` carries the pooled ``tp``, ``fp``
and ``fn`` at its top level, then everything `aggregate` computes, the FROC curve
when scores exist, the per-case summaries and the pairing (unpaired predictions,
missing predictions).
"""
import csv
import io
from pathlib import Path
from typing import Optional

from ..io import atomic_path, write_json_atomic, write_text_atomic
from .case_metrics import CaseResult

REPORT_FILES = ("metrics.json", "per_case.csv", "per_cmb.csv", "froc.png", "summary.md")
SCHEMA_VERSION = "1.0"


def write_report(out_dir, results: list[CaseResult], summary: dict, froc_curve: Optional[dict] = None,
                 pairing: Optional[dict] = None, settings: Optional[dict] = None) -> Path:
    """Write the report files into `out_dir` (created); returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairing = pairing or {}
    doc = dict(summary)
    doc["schema_version"] = SCHEMA_VERSION
    doc["settings"] = settings or {}
    doc["froc"] = froc_curve
    doc["unpaired_predictions"] = [str(p) for p in pairing.get("unpaired_predictions", [])]
    doc["missing_prediction_cases"] = [r.case for r in results if r.missing_prediction]
    files = pairing.get("files", {})
    doc["cases"] = [dict(r.summary(), **files.get(r.case, {})) for r in results]
    write_json_atomic(out / "metrics.json", doc)
    write_text_atomic(out / "per_case.csv", _csv(doc["cases"]))
    write_text_atomic(out / "per_cmb.csv", _csv(per_cmb_rows(results)))
    stale = out / "froc.png"
    if froc_curve and any(s is not None for s in froc_curve["sensitivity"]):
        plot_froc(froc_curve, stale)
    elif stale.exists():
        stale.unlink()
    write_text_atomic(out / "summary.md", summary_markdown(doc))
    return out


def per_cmb_rows(results: list[CaseResult]) -> list[dict]:
    """One row per reference and per predicted CMB with its status and match."""
    rows = []
    for r in results:
        by_pred = {m["pred"]: m for m in r.matches}
        by_ref = {}
        for m in r.matches:
            by_ref.setdefault(m["ref"], []).append(m)
        for kind, elements, statuses in (("reference", r.ref, r.ref_status), ("prediction", r.pred, r.pred_status)):
            for el, status in zip(elements, statuses):
                if kind == "reference":
                    ms = by_ref.get(el.index, [])
                    other = ";".join(str(m["pred"]) for m in ms)
                else:
                    ms = [by_pred[el.index]] if el.index in by_pred else []
                    other = ";".join(str(m["ref"]) for m in ms)
                    if not ms and r.distances is not None and r.distances.shape[1]:
                        near = int(r.distances[el.index - 1].argmin())
                        ms = [{"distance_mm": float(r.distances[el.index - 1, near]), "overlap_voxels": 0}]
                rows.append({
                    "case": r.case, "kind": kind, "index": el.index, "label": el.label, "status": status,
                    "matched": other,
                    "distance_mm": _num(min((m["distance_mm"] for m in ms), default=None)),
                    "voxel_count": el.voxel_count, "volume_mm3": _num(el.volume_mm3),
                    "diameter_mm": _num(el.diameter_mm), "size_class": el.size_class,
                    "x_ras": _num(el.centre_ras[0]), "y_ras": _num(el.centre_ras[1]), "z_ras": _num(el.centre_ras[2]),
                    "i": _num(el.centre_ijk[0]), "j": _num(el.centre_ijk[1]), "k": _num(el.centre_ijk[2]),
                    "score": _num(el.score), "location": el.location or ""})
    return rows


def plot_froc(curve: dict, path) -> None:
    """FROC curve (sensitivity vs FP per subject) as a PNG, with the matplotlib Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    pts = [(f, s) for f, s in zip(curve["fp_per_subject"], curve["sensitivity"]) if s is not None]
    pts.sort()
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot(111)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", markersize=3)
    ax.set_xlabel("false positives per subject")
    ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    cpm = curve.get("cpm")
    ax.set_title("FROC" + (f" (CPM {cpm:.3f})" if cpm is not None else ""))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")


def summary_markdown(doc: dict) -> str:
    """A short human-readable summary of metrics.json."""
    f = _fmt
    s = doc.get("settings", {})
    rule = f"Rule **{doc['rule']}**"
    if doc["rule"] != "touch":
        rule += f", centre distance < {f(doc['distance_mm'])} {s.get('distance_units', 'mm')}"
    rule += f", {s.get('connectivity', 26)}-connectivity, elements: {s.get('elements', 'components')}."
    counts = (f"| {doc['tp']} | {doc['fp']} | {doc['fn']} | {f(doc['sensitivity'])} | {f(doc['precision'])} | "
              f"{f(doc['f1'])} | {f(doc['fp_per_subject'])} | {f(doc['fp_per_cmb'])} |")
    lines = ["# CMB evaluation", "", rule, "",
             f"{doc['n_cases']} cases, {doc['n_ref']} reference CMBs, {doc['n_pred']} predicted CMBs.", "",
             "| TP | FP | FN | sensitivity | precision | F1 | FP/subject | FP/CMB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|", counts, ""]
    ps = doc["per_subject"]
    lines += ["Per subject (median [IQR], n defined):", ""]
    for k in ("sensitivity", "precision", "f1", "dice", "dice_detected", "count_difference"):
        d = ps[k]
        lines.append(f"- {k}: {f(d['median'])} [{f(d['q1'])} - {f(d['q3'])}], mean {f(d['mean'])}, n={d['n']}")
    sl = doc["subject_level"]
    subjects = (f"Subjects with at least one CMB: TPR {f(sl['tpr'])}, TNR {f(sl['tnr'])}, PPV {f(sl['ppv'])}, "
                f"F1 {f(sl['f1'])}, accuracy {f(sl['accuracy'])} "
                f"(TP {sl['tp']}, FP {sl['fp']}, FN {sl['fn']}, TN {sl['tn']}).")
    lines += ["", subjects, ""]
    for title, key in (("size class", "by_size_class"), ("location", "by_location")):
        strata = doc.get(key)
        if not strata:
            continue
        lines += [f"By {title}:", "", "| stratum | reference | found | sensitivity | predicted | FP |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, e in strata.items():
            lines.append(f"| {name} | {e['n_ref']} | {e['tp']} | {f(e['sensitivity'])} | {e['n_pred']} | {e['fp']} |")
        lines.append("")
    fr = doc.get("froc")
    if fr:
        at = ", ".join(f"{k}: {f(v)}" for k, v in fr["sensitivity_at"].items())
        lines += [f"FROC (see froc.png): CPM {f(fr['cpm'])}; sensitivity at FP/subject {at}.", ""]
    if doc.get("missing_prediction_cases"):
        missing = ", ".join(doc["missing_prediction_cases"])
        lines += [f"**Missing predictions** (all their CMBs counted as FN): {missing}", ""]
    if doc.get("unpaired_predictions"):
        names = ", ".join(Path(p).name for p in doc["unpaired_predictions"])
        lines += [f"Predictions without a reference (not scored): {names}", ""]
    lines += ["Undefined values (no reference CMB, or no prediction) are shown as n/a and left out of means.", ""]
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        fields = list(rows[0].keys())
        for r in rows[1:]:
            fields += [k for k in r if k not in fields]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _num(v):
    return None if v is None else round(float(v), 4)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
