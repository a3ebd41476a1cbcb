"""Train, choose and evaluate the second-stage candidate classifier from mined candidates.

    python -m training.mine_candidates --split train ...        # first (see that module)
    python -m training.train_second_stage --mined training/runs/stage2/mined \\
        --out training/runs/stage2/report.json [--export CMBLib/models/cmb-default]

* Fits a gradient-boosted tree ensemble (scikit-learn, training only) on the ``train``
  candidates (features recomputed from the mined crops with the current
  `second_stage.candidate_features`); the operating threshold is chosen on ``val``: the
  highest F1 with <= ``--max-fp`` false positives per scan (ties: the lowest threshold).
  ``--exclude fsn`` leaves a source out of train and val: its test cases are then a
  leave-one-background-out figure.
* Reports on ``val`` and ``test`` per source and per real-brain grid: first stage alone at
  the model's old settings (threshold 0.7, 3 mm; exact VALDO counts from the same
  probability maps), first stage at the mining settings (all candidates), the
  ``--baseline`` classifier (e.g. 0.3.0's) and the new one; sensitivity per CMB size
  (equivalent diameter < 3, 3-5, >= 5 mm) and false candidates per synthetic mimic type.
* Counting: a kept candidate is a TP when its centre lies within 5 mm of an inserted CMB's
  centre (each CMB counted once), else an FP; FN = CMBs no kept candidate reached.
* ``--export``: writes ``candidate_classifier.json`` into the model folder and sets
  ``second_stage`` (file, sha256, threshold, features, training summary) in its model.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from CMBLib.detection.second_stage import FEATURE_NAMES

from .mine_candidates import MIMIC_NAMES

SIZE_BINS = ((0.0, 3.0, "<3mm"), (3.0, 5.0, "3-5mm"), (5.0, 1e9, ">=5mm"))  # equivalent diameter
CONTRAST_BINS = ((0.0, 0.5, "<0.5"), (0.5, 0.7, "0.5-0.7"), (0.7, 1.01, ">=0.7"))  # inserted peak contrast
FEATURE_SETS = {"all": FEATURE_NAMES, "v0.3.0": FEATURE_NAMES[:28]}


def case_features(path: Path, d) -> np.ndarray:
    """The current `candidate_features` of a mined case: recomputed from its stored crops
    (cached next to it, keyed by the feature list), or the stored ones for old files."""
    n = len(d["hit"])
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    if "crop_image" not in d.files:
        f = d["features"].reshape(n, -1)
        if f.shape[1] != len(FEATURE_NAMES):
            raise SystemExit(f"{path}: mined with {f.shape[1]} features and no crops; mine it again")
        return f
    import hashlib

    key = hashlib.sha256(",".join(FEATURE_NAMES).encode()).hexdigest()[:10]
    cache = path.parent / "features" / f"{path.stem}.{key}.npy"
    if cache.is_file():
        return np.load(cache)
    from .mine_candidates import recompute_features

    f = recompute_features(d) if n else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, f)
    tmp.replace(cache)
    return f


def load_mined(folder, split: str, exclude=()) -> list[dict]:
    cases = []
    for f in sorted(Path(folder).glob(f"*_{split}_*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        d = np.load(f)
        info = json.loads(str(d["info"]))
        src = info.get("source_kind", info.get("source"))
        if src in exclude:
            continue
        if src in ("clin", "fsn"):
            src = f"{src}_clean" if int(d["n_ref"]) == 0 else f"{src}_cmbs"
        cases.append({"name": f.stem, "source": src, "grid": info.get("spacing"),
                      "features": case_features(f, d), "hit": d["hit"],
                      "mimic": d["mimic"], "n_ref": int(d["n_ref"]), "max_probability": d["max_probability"],
                      "ref_diameter_mm": d["ref_diameter_mm"] if "ref_diameter_mm" in d.files else None,
                      "ref_contrast": d["ref_contrast"] if "ref_contrast" in d.files else None,
                      "baseline": d["baseline"] if "baseline" in d.files else None})
    return cases


def counts(cases, keeps=None):
    """Pooled TP, FP, FN over cases; `keeps`: per case a bool array of the kept candidates
    (None: all)."""
    tp = fp = fn = 0
    for n, c in enumerate(cases):
        keep = np.ones(len(c["hit"]), bool) if keeps is None else keeps[n]
        hits = set(int(h) for h in c["hit"][keep] if h >= 0)
        tp += len(hits)
        fp += int((c["hit"][keep] < 0).sum())
        fn += c["n_ref"] - len(hits)
    return tp, fp, fn


def kept(scores, threshold):
    return [s >= threshold for s in scores]


def summary(tp, fp, fn, n):
    from CMBLib.metrics.case_metrics import detection_scores

    sens, prec, f1 = detection_scores(tp, fp, fn)
    return {"n_cases": n, "tp": tp, "fp": fp, "fn": fn, "sensitivity": sens, "precision": prec, "f1": f1,
            "fp_per_scan": fp / max(n, 1)}


def fit(x, y, seed=0):
    from sklearn.ensemble import GradientBoostingClassifier

    clf = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                     min_samples_leaf=5, random_state=seed)
    return clf.fit(x, y)


def stack(cases, cols):
    x = np.concatenate([c["features"][:, cols] for c in cases]) if cases else np.zeros((0, len(cols)))
    y = np.concatenate([c["hit"] >= 0 for c in cases]) if cases else np.zeros(0, bool)
    return x, y


def per_case_scores(fn, cases):
    """Scores of every case's candidates; `fn` takes the full feature matrix."""
    return [fn(c["features"]) if len(c["hit"]) else np.zeros(0) for c in cases]


THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9)


def choose_threshold(cases, scores, max_fp=0.5):
    rows = [dict(summary(*counts(cases, kept(scores, t)), len(cases)), threshold=float(t)) for t in THRESHOLDS]
    ok = [r for r in rows if r["fp_per_scan"] <= max_fp and r["f1"] is not None]
    if not ok:
        return min(rows, key=lambda r: r["fp_per_scan"]), rows
    # ties: the lowest threshold (keeps the most CMBs should real scans score lower than ours)
    best = max(ok, key=lambda r: (r["f1"], -r["threshold"]))
    return best, rows


def size_table(cases, keeps, key="ref_diameter_mm", bins=SIZE_BINS):
    """Per bin of an inserted-CMB property (default: equivalent diameter of its half-maximum
    mask on the input grid; ``key="ref_contrast"`` with CONTRAST_BINS: its peak contrast):
    CMBs and how many a kept candidate reached."""
    out = {name: {"cmbs": 0, "found": 0} for _, _, name in bins}
    for c, keep in zip(cases, keeps):
        if c.get(key) is None or len(c[key]) != c["n_ref"]:
            continue
        hits = set(int(h) for h in c["hit"][keep] if h >= 0)
        for r, value in enumerate(c[key]):
            for lo, hi, name in bins:
                if lo <= value < hi:
                    out[name]["cmbs"] += 1
                    out[name]["found"] += int(r in hits)
    for v in out.values():
        v["sensitivity"] = v["found"] / v["cmbs"] if v["cmbs"] else None
    return out


def groups_of(cases):
    groups = {"all": list(cases)}
    for c in cases:
        groups.setdefault(c["source"], []).append(c)
        if c["source"].startswith(("clin", "fsn")):
            groups.setdefault("real_clinical_grids", []).append(c)
            g = c.get("grid") or [0, 0, 0]
            groups.setdefault(f"real_grid_{g[0]}x{g[1]}x{g[2]}", []).append(c)
    return groups


def report(cases, settings: dict) -> dict:
    """`settings`: name -> per-case keep masks (same order as `cases`).  Per group of cases
    (all, per source, real brains on the clinical grids, per grid): counts per setting;
    per size bin: sensitivity per setting; per mimic type: candidates and how many each
    setting keeps (false candidates only)."""
    out = {}
    index = {id(c): n for n, c in enumerate(cases)}
    for name, cs in sorted(groups_of(cases).items()):
        idx = [index[id(c)] for c in cs]
        row = {k: summary(*counts(cs, [keeps[i] for i in idx]), len(cs)) for k, keeps in settings.items()}
        base = [c["baseline"] for c in cs if c["baseline"] is not None]
        if len(base) == len(cs):
            b = np.sum(base, axis=0)
            row["stage1_v0.2.0_settings"] = summary(int(b[0]), int(b[1]), int(b[2]), len(cs))
        row["by_size"] = {k: size_table(cs, [keeps[i] for i in idx]) for k, keeps in settings.items()}
        row["by_contrast"] = {k: size_table(cs, [keeps[i] for i in idx], "ref_contrast", CONTRAST_BINS)
                              for k, keeps in settings.items()}
        out[name] = row
    mim = {}
    for n, c in enumerate(cases):
        if not c["source"].startswith("fs") or c["source"].startswith("fsn"):
            continue
        for m_i, (m, h) in enumerate(zip(c["mimic"], c["hit"])):
            if h >= 0:
                continue
            d = mim.setdefault(MIMIC_NAMES.get(int(m), str(int(m))), dict.fromkeys(settings, 0))
            for k, keeps in settings.items():
                d[k] += int(keeps[n][m_i])
    out["false_candidates_by_mimic_type"] = mim
    return out


def _f(v):
    return "-" if v is None else f"{v:.2f}"


def markdown(rep: dict, names: dict) -> str:
    """Per-group, per-size and per-mimic tables of one split's report (as in the model card)."""
    lines = ["| cases | n | setting | TP | FP | FN | sensitivity | precision | F1 | FP/scan |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for group, row in rep.items():
        if group.startswith("false"):
            continue
        for key in ["stage1_v0.2.0_settings"] + list(names):
            if key in row:
                r = row[key]
                lines.append(f"| {group} | {r['n_cases']} | {names.get(key, '0.2.0 (U-Net 0.7, >= 3 mm)')} | "
                             f"{r['tp']} | {r['fp']} | {r['fn']} | {_f(r['sensitivity'])} | {_f(r['precision'])} | "
                             f"{_f(r['f1'])} | {_f(r['fp_per_scan'])} |")
    bins = [b[2] for b in SIZE_BINS]
    lines += ["", "| cases | setting | " + " | ".join(f"found {b} (sens.)" for b in bins) + " |",
              "|---|---|" + "---|" * len(bins)]
    for group in ("all", "real_clinical_grids", "clin_cmbs", "fsn_cmbs", "t2s", "fs"):
        if group not in rep:
            continue
        for key in names:
            t = rep[group]["by_size"][key]
            lines.append(f"| {group} | {names[key]} | " + " | ".join(
                f"{t[b]['found']}/{t[b]['cmbs']} ({_f(t[b]['sensitivity'])})" for b in bins) + " |")
    cbins = [b[2] for b in CONTRAST_BINS]
    lines += ["", "| cases | setting | " + " | ".join(f"found, contrast {b} (sens.)" for b in cbins) + " |",
              "|---|---|" + "---|" * len(cbins)]
    for group in ("all", "real_clinical_grids", "clin_cmbs", "fsn_cmbs", "t2s", "fs"):
        if group not in rep or "by_contrast" not in rep[group]:
            continue
        for key in names:
            t = rep[group]["by_contrast"][key]
            lines.append(f"| {group} | {names[key]} | " + " | ".join(
                f"{t[b]['found']}/{t[b]['cmbs']} ({_f(t[b]['sensitivity'])})" for b in cbins) + " |")
    mim = rep.get("false_candidates_by_mimic_type", {})
    if mim:
        lines += ["", "| mimic type (fs cases, false candidates) | " + " | ".join(
            f"kept: {names[k]}" for k in names) + " |", "|---|" + "---|" * len(names)]
        for m, d in sorted(mim.items()):
            lines.append(f"| {m} | " + " | ".join(str(d[k]) for k in names) + " |")
    return "\n".join(lines)


def load_classifier(path):
    """(TreeEnsemble, threshold) of a candidate_classifier.json."""
    from CMBLib.detection.second_stage import TreeEnsemble

    spec = json.loads(Path(path).read_text())
    return TreeEnsemble(spec), float(spec["threshold"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mined", default="training/runs/stage2/mined")
    ap.add_argument("--max-fp", type=float, default=0.5, help="FP/scan limit when choosing the threshold on val")
    ap.add_argument("--features", choices=sorted(FEATURE_SETS), default="all",
                    help="all, or the 28 features of cmb-default 0.3.0")
    ap.add_argument("--exclude", default="", help="sources (clin,t2s,fsn,fs) left out of train AND val: "
                    "their test cases are then a leave-one-background-out figure")
    ap.add_argument("--baseline", help="a candidate_classifier.json to compare with on val and test "
                    "(e.g. cmb-default 0.3.0's; its own threshold)")
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--export", help="model folder to receive the classifier")
    ap.add_argument("--version", help="with --export: the model's new version")
    ap.add_argument("--stage1-threshold", type=float, default=0.3, help="as mined (mine_candidates --threshold)")
    ap.add_argument("--stage1-min-diameter-mm", type=float, default=1.0, help="as mined")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--opt-in", action="store_true", help="with --export: the classifier runs only when asked "
                    "for (cmb detect --second-stage); the default path is the first stage alone")
    args = ap.parse_args(argv)
    from CMBLib.detection.second_stage import FILE_NAME, TreeEnsemble, export_sklearn_gbc
    from CMBLib.io import write_json_atomic

    if Path(args.out).exists() and not args.force:
        raise SystemExit(f"{args.out} exists; not overwritten (pass --force)")
    exclude = tuple(v for v in args.exclude.split(",") if v)
    train, val = (load_mined(args.mined, s, exclude) for s in ("train", "val"))
    test = load_mined(args.mined, "test")
    names = list(FEATURE_SETS[args.features])
    cols = [FEATURE_NAMES.index(f) for f in names]
    x, y = stack(train, cols)
    clf = fit(x, y)
    spec = export_sklearn_gbc(clf, 0.5, features=names)
    ens = TreeEnsemble(spec)
    check = np.abs(ens.probability(x) - clf.predict_proba(x)[:, 1]).max()
    assert check < 1e-6, f"exported trees disagree with scikit-learn by {check}"
    val_scores = per_case_scores(ens.probability, val)
    best, rows = choose_threshold(val, val_scores, args.max_fp)
    thr = spec["threshold"] = best["threshold"]
    settings_names = {"stage1": f"U-Net alone, threshold {args.stage1_threshold:g}, >= "
                                f"{args.stage1_min_diameter_mm:g} mm", "new": "**new classifier**"}
    base = load_classifier(args.baseline) if args.baseline else None
    if base:
        settings_names = {"stage1": settings_names["stage1"], "baseline": f"0.3.0 classifier ({base[1]:g})",
                          "new": settings_names["new"]}

    def settings(cases):
        out = {"stage1": [np.ones(len(c["hit"]), bool) for c in cases]}
        if base:
            out["baseline"] = kept(per_case_scores(base[0].probability, cases), base[1])
        out["new"] = kept(per_case_scores(ens.probability, cases), thr)
        return out

    res = {"n_train_cases": len(train), "n_train_candidates": int(len(y)), "n_train_positive": int(y.sum()),
           "train_sources": sorted({c["source"] for c in train}), "excluded_from_train_and_val": list(exclude),
           "features": names, "threshold": thr,
           "chosen_on": f"validation ({len(val)} cases): highest F1 with <= {args.max_fp} FP/scan, ties lowest",
           "val_rows": rows, "val_best": best, "settings": settings_names,
           "val": report(val, settings(val)) if val else {},
           "test": report(test, settings(test)) if test else {},
           "test_froc": {g: choose_threshold(cs, per_case_scores(ens.probability, cs), args.max_fp)[1]
                         for g, cs in groups_of(test).items() if g in ("all", "real_clinical_grids")},
           "importances": dict(sorted(zip(names, (float(v) for v in clf.feature_importances_)),
                                      key=lambda kv: -kv[1])[:12])}
    write_json_atomic(args.out, res, overwrite=True)
    print(json.dumps({k: res[k] for k in ("n_train_cases", "n_train_candidates", "n_train_positive", "threshold",
                                          "val_best", "importances")}, indent=1))
    for split in ("val", "test"):
        print(f"\n## {split}\n")
        print(markdown(res[split], settings_names))
    if args.export:
        from CMBLib.detection.model_io import METADATA_FILE, sha256_file

        folder = Path(args.export)
        write_json_atomic(folder / FILE_NAME, spec, overwrite=True)
        meta = json.loads((folder / METADATA_FILE).read_text())
        # the top-level cut-offs stay the first stage's stand-alone ones (0.3.2 format); with
        # the classifier the first stage uses the mining cut-offs stored under second_stage
        meta.update(meta.pop("without_second_stage", {}))
        if args.version:
            meta["version"] = args.version
        meta.setdefault("metrics", {})["second_stage"] = {
            "report": "training/train_second_stage.py (counts: candidate centre within 5 mm of an inserted CMB)",
            "threshold_choice": res["val_best"],
            "test": {g: {k: r[k] for k in ("new", "baseline", "stage1_v0.2.0_settings") if k in r}
                     for g, r in res["test"].items() if not g.startswith(("false", "real_grid"))}}
        meta["second_stage"] = {"file": FILE_NAME, "sha256": sha256_file(folder / FILE_NAME), "threshold": thr,
                                "stage1_threshold": args.stage1_threshold,
                                "stage1_min_diameter_mm": args.stage1_min_diameter_mm,
                                "default": not args.opt_in,
                                "polarities": ["dark"],  # mined on T2*-like (dark-CMB) inputs only
                                "kind": spec["kind"], "n_trees": len(spec["trees"]),
                                "n_features": len(names),
                                "trained_on": f"{len(train)} mined cases, {int(len(y))} candidates "
                                              f"({int(y.sum())} on inserted CMBs)"}
        write_json_atomic(folder / METADATA_FILE, meta, overwrite=True)
        print(f"wrote {folder / FILE_NAME} and updated {folder / METADATA_FILE}")


if __name__ == "__main__":
    main()
