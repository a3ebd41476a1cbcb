"""Which second-stage rule holds on a brain the classifier never saw?  Leave one brain out.

The judged data are real T2* scans of brains the project has never seen, but every
real-background figure of the shipped classifier is a same-brain figure (it was trained
on the QSM brain).  This script measures rules across brains, from mined candidates
(`training.mine_candidates`):

* brains: ``qsm`` (sources clin, t2s: the 2016 QSM-challenge brain) and ``fs`` (sources
  fsn, fs: the FreeSurfer subject, as a T2*-like image and as domain-randomised label-map
  images with synthetic mimics);
* per direction, a classifier is fitted on the **train** split of one brain and scored on
  the other brain's **val** split (to choose a rule) and **test** split (to report);
* rules on a candidate with first-stage maximum probability ``p`` and classifier score ``s``:
  ``single t``: keep when s >= t; ``gated t_lo/t_hi``: keep when (p >= 0.7 and s >= t_lo) or
  s >= t_hi -- a confident U-Net candidate (0.7 = 0.2.0's own threshold, not tuned) needs
  only a lenient classifier, a weak one a strict classifier;
* the rule is chosen on val as the highest worst-direction F1 with <= ``--max-fp`` FP/scan
  in both directions (ties: the rule with fewer parameters, then lower thresholds);
* reported on test: both directions, and a classifier trained on both brains (its own
  test = same-brain).  Counts: a kept candidate within 5 mm of an inserted CMB is a TP
  (each CMB once), VALDO distance.

* ``--veto``: also the classifier as a veto on the first stage's stand-alone findings (0.7,
  >= 3 mm; cmb-default 0.3.2's default): keep such a finding when s >= t.  Which mined
  candidates those findings are is approximated from the stored model-grid crops
  (`stand_alone_findings`: a component of probability >= 0.7 of >= 3 mm equivalent diameter
  within 6 mm of the candidate's centre); printed next to the exact counts of the first stage
  alone, so the approximation's error is visible.

    python -m training.cross_brain --mined training/runs/stage2/mined --out training/runs/stage2/cross_brain.json
"""
import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from CMBLib.detection.second_stage import FEATURE_NAMES

from .train_second_stage import FEATURE_SETS, counts, fit, load_mined, stack, summary

BRAINS = {"qsm": ("clin_clean", "clin_cmbs", "t2s"), "fs": ("fsn_clean", "fsn_cmbs", "fs")}
GATE = 0.7           # 0.2.0's stand-alone U-Net threshold
SINGLE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LOW = (0.05, 0.1, 0.2, 0.3)
HIGH = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def rules() -> list[tuple]:
    out = [("single", t) for t in SINGLE]
    out += [("gated", lo, hi) for lo, hi in itertools.product(LOW, HIGH) if hi > lo]
    return out


def rule_name(rule) -> str:
    return f"single {rule[1]:g}" if rule[0] == "single" else f"gated {rule[1]:g}/{rule[2]:g}"


def keep(rule, scores, pmax) -> np.ndarray:
    if rule[0] == "single":
        return scores >= rule[1]
    return ((pmax >= GATE) & (scores >= rule[1])) | (scores >= rule[2])


def stand_alone_findings(path, threshold: float = GATE, min_diameter_mm: float = 3.0) -> np.ndarray:
    """Per mined candidate: would the first stage alone (threshold, min size) report it?
    Approximated on the stored model-grid probability crop (the exact test runs on the input
    grid): a component of probability >= threshold, 26-connected, of at least
    `min_diameter_mm` equivalent diameter, within 6 mm of the crop's centre."""
    from scipy import ndimage as ndi

    d = np.load(path)
    out = np.zeros(len(d["hit"]), bool)
    if not len(out):
        return out
    sp = np.asarray(d["grid_spacing"], float)[::-1]
    for m in range(len(out)):
        size = tuple(int(v) for v in d["crop_size"][m])
        lab, n = ndi.label(d["crop_prob"][m][tuple(slice(0, z) for z in size)] >= threshold,
                           structure=np.ones((3, 3, 3)))
        if not n:
            continue
        idx = np.argwhere(lab > 0)
        dist = np.linalg.norm((idx - np.array(size) // 2) * sp, axis=1)
        if dist.min() > 6.0:
            continue
        volume = np.count_nonzero(lab == lab[tuple(idx[dist.argmin()])]) * float(np.prod(sp))
        out[m] = (6.0 * volume / np.pi) ** (1.0 / 3.0) >= min_diameter_mm
    return out


def veto_table(split, cols, clfs, mined, thresholds=(None, 0.05, 0.1, 0.2, 0.3, 0.5)) -> dict:
    """{direction: {threshold: summary}} of the classifier as a veto on the stand-alone findings."""
    for cases in split.values():
        for c in cases:
            if "stand_alone" not in c:
                c["stand_alone"] = stand_alone_findings(Path(mined) / f"{c['name']}.npz")
    out = {}
    for name in ("val", "test"):
        for a, b in (("qsm", "fs"), ("fs", "qsm"), ("both", "qsm"), ("both", "fs")):
            cases = brain_cases(split[name], b)
            row = {"exact first stage alone": stage1_020(cases)}
            for t in thresholds:
                keeps = []
                for c in cases:
                    s = clfs[a].predict_proba(c["features"][:, cols])[:, 1] if len(c["hit"]) else np.zeros(0)
                    keeps.append(c["stand_alone"] & (s >= (0.0 if t is None else t)))
                row["approx., no veto" if t is None else f"veto {t:g}"] = summary(*counts(cases, keeps), len(cases))
            out[f"{name} {a}->{b}"] = row
    return out


def brain_cases(cases, brain):
    return [c for c in cases if c["source"] in BRAINS[brain]]


def evaluate(clf, cols, cases, rule) -> dict:
    keeps = []
    for c in cases:
        if len(c["hit"]) == 0:
            keeps.append(np.zeros(0, bool))
            continue
        s = clf.predict_proba(c["features"][:, cols])[:, 1]
        keeps.append(keep(rule, s, np.asarray(c["max_probability"], float)))
    return summary(*counts(cases, keeps), len(cases))


def stage1_020(cases) -> dict:
    """The first stage alone at 0.2.0's cut-offs (exact VALDO counts stored at mining)."""
    b = np.sum([c["baseline"] for c in cases], axis=0) if cases else np.zeros(3, int)
    return summary(int(b[0]), int(b[1]), int(b[2]), len(cases))


def choose(rows: dict, max_fp: float):
    """rows: rule -> {direction: summary}.  Highest worst-direction F1 with every direction's
    FP/scan <= max_fp; else the lowest worst-direction FP/scan."""
    def worst(r, key):
        vals = [v[key] for v in rows[r].values()]
        return min(v if v is not None else 0.0 for v in vals) if key == "f1" else max(vals)

    ok = [r for r in rows if worst(r, "fp_per_scan") <= max_fp]
    if not ok:
        return min(rows, key=lambda r: worst(r, "fp_per_scan"))
    return max(ok, key=lambda r: (round(worst(r, "f1"), 6), -len(r), tuple(-v for v in r[1:])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mined", default="training/runs/stage2/mined")
    ap.add_argument("--features", choices=sorted(FEATURE_SETS), default="all")
    ap.add_argument("--max-fp", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--veto", action="store_true", help="also the classifier as a veto on the stand-alone findings")
    args = ap.parse_args(argv)
    names = list(FEATURE_SETS[args.features])
    cols = [FEATURE_NAMES.index(f) for f in names]
    split = {s: load_mined(args.mined, s) for s in ("train", "val", "test")}
    clfs = {b: fit(*stack(brain_cases(split["train"], b), cols)) for b in BRAINS}
    clfs["both"] = fit(*stack(split["train"], cols))
    directions = {"qsm->fs": ("qsm", "fs"), "fs->qsm": ("fs", "qsm")}

    val_rows = {r: {d: evaluate(clfs[a], cols, brain_cases(split["val"], b), r) for d, (a, b) in directions.items()}
                for r in rules()}
    best = choose(val_rows, args.max_fp)
    best_single = choose({r: v for r, v in val_rows.items() if r[0] == "single"}, args.max_fp)
    report = {"features": args.features, "max_fp": args.max_fp, "gate": GATE,
              "chosen": rule_name(best), "chosen_single": rule_name(best_single),
              "val": {rule_name(r): v for r, v in val_rows.items()}, "test": {}}
    for r in (best, best_single, ("single", 0.3)):
        t = {d: evaluate(clfs[a], cols, brain_cases(split["test"], b), r) for d, (a, b) in directions.items()}
        t["both->both"] = evaluate(clfs["both"], cols, split["test"], r)
        for b in BRAINS:
            t[f"both->{b}"] = evaluate(clfs["both"], cols, brain_cases(split["test"], b), r)
        report["test"][rule_name(r)] = t
    report["test"]["stage1 0.2.0 settings"] = {f"->{b}": stage1_020(brain_cases(split["test"], b)) for b in BRAINS}
    if args.veto:
        report["veto"] = veto_table(split, cols, clfs, args.mined)
    Path(args.out).write_text(json.dumps(report, indent=1))

    def line(name, d, s):
        return (f"| {name} | {d} | {s['tp']} | {s['fp']} | {s['fn']} | {s['sensitivity'] or 0:.2f} | "
                f"{s['f1'] or 0:.2f} | {s['fp_per_scan']:.2f} |")

    print(f"features {args.features}; chosen on val: {report['chosen']} (best single threshold: "
          f"{report['chosen_single']})\n")
    print("| rule | train -> val | TP | FP | FN | sens. | F1 | FP/scan |\n|---|---|---|---|---|---|---|---|")
    for r in (best, best_single, ("single", 0.3)):
        for d, s in val_rows[r].items():
            print(line(rule_name(r), d, s))
    print("\n| rule | train -> test | TP | FP | FN | sens. | F1 | FP/scan |\n|---|---|---|---|---|---|---|---|")
    for r, t in report["test"].items():
        for d, s in t.items():
            print(line(r, d, s))
    if args.veto:
        print("\n| veto on the stand-alone findings | split, train -> scored | TP | FP | FN | sens. | F1 | FP/scan |\n"
              "|---|---|---|---|---|---|---|---|")
        for d, row in report["veto"].items():
            for r, s in row.items():
                print(line(r, d, s))


if __name__ == "__main__":
    main()
