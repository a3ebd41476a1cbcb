"""Metrics tables for a model card from `training.evaluate` JSON outputs.

    python -m training.model_card --val val.json --test test.json --qsm qsm_as_is.json \
        --data "synthetic CMBs in the QSM brain and the FreeSurfer subject (the brains that trained it)" \
        --measured "python -m training.evaluate ...; 2026-12-07; 2 CPU cores" --metrics-out metrics.json > tables.md

Also returns the compact `metrics` dict stored in model.json: every group of figures names the
cases and brains it was measured on ("data", required by Testing/test_figures_manifest.py and
printed by `cmb models`), how ("measured") and at which cut-offs ("settings").
"""
import argparse
import json
from pathlib import Path

GROUPS = (("all", "all test cases"), ("fs", "domain-randomised (label-map) cases"),
          ("real_background", "real-brain backgrounds (QSM + pseudo-T2*)"), ("qsm", "real QSM, bright CMBs"),
          ("qsm_t2s", "pseudo-T2* of the real QSM brain, dark CMBs"))


def _f(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}"


def row_at(doc, group, threshold, min_diameter_mm=None):
    g = doc.get(group)
    if not g:
        return None
    rows = [r for r in g["rows"] if abs(r["threshold"] - threshold) < 1e-9
            and (min_diameter_mm is None or "min_diameter_mm" not in r or r["min_diameter_mm"] == min_diameter_mm)]
    return dict(rows[0], n_cases=g["n_cases"]) if rows else None


def tables(val, test, qsm, threshold, min_diameter_mm=None, data="", measured=""):
    """(markdown tables, metrics dict for model.json).  `data`: the cases and brains the figures
    are on (each group's "data" starts with its own cases, then this); `measured`: command,
    date and machine."""
    lines = ["| cases | n | TP | FP | FN | sensitivity | precision | F1 | FP/scan |",
             "|---|---|---|---|---|---|---|---|---|"]
    settings = f"threshold {threshold:g}" + ("" if min_diameter_mm is None else f", >= {min_diameter_mm:g} mm")

    def group(cases: str, figures: dict) -> dict:
        return dict({"data": f"{cases}: {data}" if data else cases, "settings": settings, "measured": measured},
                    **figures)

    metrics = {"rule": "valdo, 5 mm", "test": {}}
    for key, name in GROUPS:
        r = row_at(test, key, threshold)
        if r is None:
            continue
        lines.append(f"| {name} | {r['n_cases']} | {r['tp']} | {r['fp']} | {r['fn']} | {_f(r['sensitivity'])} | "
                     f"{_f(r['precision'])} | {_f(r['f1'])} | {_f(r['fp_per_scan'])} |")
        metrics["test"][key] = group(name, {k: r[k] for k in ("n_cases", "tp", "fp", "fn", "sensitivity",
                                                               "precision", "f1", "fp_per_scan")})
    out = "\n".join(lines) + "\n"
    if val:
        v = row_at(val, "all", threshold, min_diameter_mm)
        if v:
            metrics["validation"] = group("all validation cases", {k: v[k] for k in (
                "n_cases", "tp", "fp", "fn", "sensitivity", "precision", "f1", "fp_per_scan")})
        out += "\nValidation FROC (all validation cases; the threshold was chosen here):\n\n"
        out += "| threshold | min. diameter mm | sensitivity | precision | F1 | FP/scan |\n|---|---|---|---|---|---|\n"
        for r in val["all"]["rows"]:
            if min_diameter_mm is not None and r.get("min_diameter_mm", min_diameter_mm) != min_diameter_mm:
                continue
            out += (f"| {r['threshold']} | {r.get('min_diameter_mm', '')} | {_f(r['sensitivity'])} | "
                    f"{_f(r['precision'])} | {_f(r['f1'])} | {_f(r['fp_per_scan'])} |\n")
    if qsm:
        metrics["qsm_as_is"] = group("the real QSM brain as it is, no inserted CMBs (160 x 160 x 160 at 1.06 mm)",
                                     {k: qsm[k] for k in ("fp_whole_brain", "fp_left_hemisphere")})
        out += (f"\nReal QSM brain as it is (no inserted CMBs, 160 x 160 x 160 at 1.06 mm, sequence QSM): "
                f"{qsm['fp_whole_brain']} false positives in the whole brain, {qsm['fp_left_hemisphere']} in the "
                f"left (held-out) hemisphere.\n")
    if test.get("mean_detect_s") is not None:
        metrics["test"]["mean_detect_s"] = group("detect() wall time per test case",
                                                 {"seconds": round(test["mean_detect_s"], 2)})
    return out, metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val")
    ap.add_argument("--test", required=True)
    ap.add_argument("--qsm")
    ap.add_argument("--threshold", type=float, required=True)
    ap.add_argument("--min-diameter-mm", type=float)
    ap.add_argument("--metrics-out", help="write the metrics dict (for model.json) here")
    ap.add_argument("--data", default="", help="the cases and brains the figures are on (needed with --metrics-out)")
    ap.add_argument("--measured", default="", help="command, date and machine of the evaluation runs")
    args = ap.parse_args(argv)
    if args.metrics_out and "brain" not in args.data:
        ap.error("--metrics-out needs --data naming the brains the figures were measured on")
    load = lambda p: json.loads(Path(p).read_text()) if p else None  # noqa: E731
    text, metrics = tables(load(args.val), load(args.test), load(args.qsm), args.threshold,
                           args.min_diameter_mm, args.data, args.measured)
    if args.metrics_out:
        Path(args.metrics_out).write_text(json.dumps(metrics, indent=1))
    print(text)


if __name__ == "__main__":
    main()
