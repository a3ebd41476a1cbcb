"""Does the `symmetric_pairs` location zone set aside only mimics?  (docs/detector.md, "Symmetric pairs")

Per case, `detect` runs once with the model's defaults (its test-time flips, first stage, the
model's cut-offs) and the location filter off; the candidates are then carried to MNI space by
one atlas registration and set aside by the model's zones without ``symmetric_pairs``
("model") and with it ("+pairs"), through the registration gate as `detect` applies it
(`registration.filter_problems`).  Counted per case (VALDO rule, 5 mm): TP / FP / FN of what
stays, and the true CMBs the pair zone set aside.

Cases: the validation cases of `benchmarks/froc_default_path.py` (`training.mine_candidates`
sources clin, t2s, fsn, fs; dark polarity) and the demo heads (`make_head_study(seed)`, skull on;
their drawn iron, veins and calcifications listed with what became of each: marked by the
network within 5 mm, set aside, or left as a finding).

    python benchmarks/check_symmetric_pairs.py --split val --n 12 --heads 0,1,2 --out /tmp/pairs_val.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = "symmetric_pairs"


def set_aside(image, centres, zones, polarity="dark") -> tuple:
    """(bool per centre: set aside by `zones`, MNI (N, 3) or None, gate problem or None), as detect
    would set them aside (one registration, the filter's gate)."""
    from CMBLib.detection.location_filter import zone_of, zones_box
    from CMBLib.errors import CMBError
    from CMBLib.location import registration_for
    from CMBLib.location.registration import filter_problems

    if not len(centres):
        return np.zeros(0, bool), None, None
    try:
        reg = registration_for(image)
    except CMBError as exc:
        return np.zeros(len(centres), bool), None, str(exc)
    problems = filter_problems(reg, image, zones_box(zones), polarity)
    mni = reg.subject_to_template_ras(np.asarray(centres, float))
    if problems:
        return np.zeros(len(centres), bool), mni, problems[0]
    return np.array([z is not None for z in zone_of(mni, zones)], bool), mni, None


def score_case(image, cmb_mask, model, zones) -> dict:
    """Counts for one case with the model's zones and with the pair zone added."""
    from CMBLib.detection.pipeline import detect
    from CMBLib.metrics import match_points
    from training.mine_candidates import reference_centres

    t = time.time()
    res = detect(image, model, device="cpu", location_filter=False)
    secs = time.time() - t
    ref = reference_centres(cmb_mask)
    pts = np.array([r["centre_ras"] for r in res.records], float).reshape(-1, 3)
    out = {"seconds": secs, "candidates": len(pts)}
    without = tuple(z for z in zones if z != PAIRS)
    for name, zs in (("model", without), ("+pairs", without + (PAIRS,))):
        aside, mni, problem = set_aside(image, pts, zs)
        m = match_points(pts[~aside], ref, rule="valdo", distance_mm=5.0)
        full = match_points(pts, ref, rule="valdo", distance_mm=5.0)
        true_pts = {int(p) for p, _ in full.pairs}
        out[name] = {"tp": m.tp, "fp": m.fp, "fn": m.fn, "set_aside": int(aside.sum()),
                     "true_set_aside": int(sum(1 for i in np.flatnonzero(aside) if int(i) in true_pts)),
                     "gate": problem}
        if name == "+pairs":
            out["mni"] = None if mni is None else np.round(mni, 1).tolist()
            out["aside"] = aside.tolist()
            out["true"] = sorted(true_pts)
            out["points"] = pts.tolist()
    return out


def mimic_survival(heads: list, within_mm: float = 5.0) -> dict:
    """{structure: [drawn, marked by the network, set aside, left as findings]} over the demo
    heads: a drawn structure (its centre, RAS mm) counts as marked when a candidate lies within
    `within_mm`; left and right of a pair count as two."""
    table: dict = {}
    for h in heads:
        pts = np.asarray(h["points"], float).reshape(-1, 3)
        aside = np.asarray(h["aside"], bool)
        for name, centre in h["drawn"].items():
            kind = name.rsplit("_", 1)[0] if name.endswith(("_left", "_right")) else name
            row = table.setdefault(kind, [0, 0, 0, 0])
            row[0] += 1
            near = np.linalg.norm(pts - np.asarray(centre, float), axis=1) <= within_mm if len(pts) else []
            if np.any(near):
                row[1] += 1
                row[2 if np.all(aside[near]) else 3] += 1
    return table


def totals(rows: list, key: str) -> dict:
    tp, fp, fn = (sum(r[key][k] for r in rows) for k in ("tp", "fp", "fn"))
    n = max(len(rows), 1)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return {"scans": len(rows), "tp": tp, "fp": fp, "fn": fn, "fp_per_scan": fp / n, "f1": f1,
            "sensitivity": tp / max(tp + fn, 1), "set_aside": sum(r[key]["set_aside"] for r in rows),
            "true_set_aside": sum(r[key]["true_set_aside"] for r in rows),
            "gate_refused": sum(1 for r in rows if r[key]["gate"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=12, help="cases per source")
    ap.add_argument("--sources", default="clin,t2s,fsn,fs")
    ap.add_argument("--heads", default="0,1,2", help="demo-head seeds ('' for none)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from CMBLib.detection.location_filter import model_zones
    from CMBLib.detection.model_io import load_model
    from CMBLib.synthesis.atlas_head import make_head_study

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    zones = model_zones(model[1])
    print(f"model {model[1].get('name')} {model[1].get('version')}, zones {[z for z in zones if z != PAIRS]} "
          f"without and with {PAIRS}", flush=True)
    rows, heads = [], []
    for seed in [int(s) for s in args.heads.split(",") if s.strip()]:
        study = make_head_study(seed)
        r = score_case(study.image, study.cmb_mask, model, zones)
        drawn = {k: v for k, v in study.mimics.items() if isinstance(v, tuple)}
        r.update(seed=seed, drawn=drawn)
        heads.append(r)
        print(f"head {seed}: model {r['model']['tp']}/{r['model']['fp']}/{r['model']['fn']}, +pairs "
              f"{r['+pairs']['tp']}/{r['+pairs']['fp']}/{r['+pairs']['fn']} (set aside {r['+pairs']['set_aside']}, "
              f"true {r['+pairs']['true_set_aside']}) {r['seconds']:.0f}s", flush=True)
    if args.n:
        from training.mine_candidates import load_backgrounds, make_case

        labels, chi, msk, fsn = load_backgrounds(args.sources.split(","))
        for i in range(args.n):
            for source in args.sources.split(","):
                case = make_case(source, args.split, i, labels, chi, msk, fsn)
                if case is None or case["polarity"] != "dark":
                    continue
                r = score_case(case["image"], case["cmb_mask"], model, zones)
                r.update(source=source, case=i)
                rows.append(r)
                print(f"{source} {i}: model {r['model']['tp']}/{r['model']['fp']}/{r['model']['fn']}, +pairs "
                      f"{r['+pairs']['tp']}/{r['+pairs']['fp']}/{r['+pairs']['fn']} (set aside "
                      f"{r['+pairs']['set_aside']}, true {r['+pairs']['true_set_aside']}, gate "
                      f"{r['+pairs']['gate'] or 'ok'}) {r['seconds']:.0f}s", flush=True)
    print("\n| cases | zones | scans | TP / FP / FN | sensitivity | FP/scan | F1 | set aside | true CMBs set aside "
          "| gate refused |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for label, rs in (("validation", rows), ("demo heads", heads)):
        if not rs:
            continue
        for key in ("model", "+pairs"):
            t = totals(rs, key)
            summary[f"{label} {key}"] = t
            print(f"| {label} | {key} | {t['scans']} | {t['tp']} / {t['fp']} / {t['fn']} | {t['sensitivity']:.3f} | "
                  f"{t['fp_per_scan']:.2f} | {t['f1']:.3f} | {t['set_aside']} | {t['true_set_aside']} | "
                  f"{t['gate_refused']} |")
    if heads:
        print("\n| drawn structure (demo heads) | drawn | marked by the network | set aside | left as findings |")
        print("|---|---|---|---|---|")
        survival = mimic_survival(heads)
        for kind, (n, marked, set_aside, kept) in survival.items():
            print(f"| {kind.replace('_', ' ')} | {n} | {marked} | {set_aside} | {kept} |")
        summary["mimic_survival"] = survival
    if args.out:
        Path(args.out).write_text(json.dumps({"split": args.split, "model": args.model, "summary": summary,
                                              "cases": rows, "heads": heads}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
