"""Train, choose and evaluate the second-stage candidate classifier from mined candidates.

    python -m training.mine_candidates --split train ...        # first (see that module)
    python -m training.train_second_stage --mined training/runs/stage2/mined \\
        --out training/runs/stage2/report.json [--export CMBLib/models/cmb-default]

* Fits a gradient-boosted tree ensemble (scikit-learn, training only) on the ``train``
  candidates; the operating threshold is chosen on **out-of-fold** predictions of the
  training cases (5 folds grouped by case: no case is scored by a model that saw it): the
  highest F1 with <= ``--max-fp`` false positives per scan (ties: the lowest threshold);
  then checked on ``val``.
* Reports on ``test`` per source: first stage alone at the model's old settings
  (threshold 0.7, 3 mm; exact VALDO counts from the same probability maps), first stage
  at the mining settings (all candidates) and with the second stage.
* Counting: a kept candidate is a TP when its centre lies within 5 mm of an inserted CMB's
  centre (each CMB counted once), else an FP; FN = CMBs no kept candidate reached.
* ``--export``: writes ``candidate_classifier.json`` into the model folder and sets
  ``second_stage`` (file, sha256, threshold, features, training summary) in its model.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np


def load_mined(folder, split: str) -> list[dict]:
    cases = []
    for f in sorted(Path(folder).glob(f"*_{split}_*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        d = np.load(f)
        info = json.loads(str(d["info"]))
        src = info.get("source_kind", info.get("source"))
        if src == "clin":
            src = "clin_clean" if int(d["n_ref"]) == 0 else "clin_cmbs"
        cases.append({"name": f.stem, "source": src, "grid": info.get("spacing"),
                      "features": d["features"].reshape(len(d["hit"]), -1), "hit": d["hit"],
                      "mimic": d["mimic"], "n_ref": int(d["n_ref"]), "max_probability": d["max_probability"],
                      "baseline": d["baseline"] if "baseline" in d.files else None})
    return cases


def counts(cases, scores=None, threshold=0.0, min_prob=0.0):
    """Pooled TP, FP, FN over cases; candidates kept when score >= threshold."""
    tp = fp = fn = 0
    for n, c in enumerate(cases):
        keep = c["max_probability"] >= min_prob
        if scores is not None:
            keep &= scores[n] >= threshold
        hits = set(int(h) for h in c["hit"][keep] if h >= 0)
        tp += len(hits)
        fp += int((c["hit"][keep] < 0).sum())
        fn += c["n_ref"] - len(hits)
    return tp, fp, fn


def summary(tp, fp, fn, n):
    return {"n_cases": n, "tp": tp, "fp": fp, "fn": fn,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "precision": tp / (tp + fp) if tp + fp else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None, "fp_per_scan": fp / max(n, 1)}


def fit(x, y, seed=0):
    from sklearn.ensemble import GradientBoostingClassifier

    clf = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                     min_samples_leaf=5, random_state=seed)
    return clf.fit(x, y)


def stack(cases):
    x = np.concatenate([c["features"] for c in cases]) if cases else np.zeros((0, 0))
    y = np.concatenate([c["hit"] >= 0 for c in cases]) if cases else np.zeros(0, bool)
    return x, y


def per_case_scores(clf_or_fn, cases):
    return [clf_or_fn(c["features"]) if len(c["hit"]) else np.zeros(0) for c in cases]


def out_of_fold(cases, folds=5, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    scores = [None] * len(cases)
    for f in range(folds):
        test_idx = [i for k, i in enumerate(order) if k % folds == f]
        train = [cases[i] for i in order if i not in test_idx]
        x, y = stack(train)
        clf = fit(x, y, seed)
        for i in test_idx:
            scores[i] = clf.predict_proba(cases[i]["features"])[:, 1] if len(cases[i]["hit"]) else np.zeros(0)
    return scores


def choose_threshold(cases, scores, max_fp=0.5):
    rows = []
    for t in (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        rows.append(dict(summary(*counts(cases, scores, t), len(cases)), threshold=float(t)))
    ok = [r for r in rows if r["fp_per_scan"] <= max_fp and r["f1"] is not None]
    if not ok:
        return min(rows, key=lambda r: r["fp_per_scan"]), rows
    # ties: the lowest threshold (keeps the most CMBs should real scans score lower than ours)
    best = max(ok, key=lambda r: (r["f1"], -r["threshold"]))
    return best, rows


def report(cases, scores, threshold):
    out = {}
    groups = {"all": cases}
    for c in cases:
        groups.setdefault(c["source"], []).append(c)
        g = c.get("grid") or [0, 0, 0]
        if c["source"].startswith("clin"):
            groups.setdefault(f"clin_grid_{g[0]}x{g[1]}x{g[2]}", []).append(c)
    for name, cs in sorted(groups.items()):
        idx = [cases.index(c) for c in cs]
        sc = [scores[i] for i in idx]
        base = [c["baseline"] for c in cs if c["baseline"] is not None]
        row = {"stage1_all_candidates": summary(*counts(cs), len(cs)),
               "two_stage": summary(*counts(cs, sc, threshold), len(cs))}
        if len(base) == len(cs):
            b = np.sum(base, axis=0)
            row["stage1_v0.2.0_settings"] = summary(int(b[0]), int(b[1]), int(b[2]), len(cs))
        out[name] = row
    # mimic types (domain-randomised cases): how many candidates on each survive
    mim = {}
    for c, s in zip(cases, scores):
        for m, h, v in zip(c["mimic"], c["hit"], s):
            if h >= 0:
                continue
            key = str(int(m))
            d = mim.setdefault(key, {"candidates": 0, "kept": 0})
            d["candidates"] += 1
            d["kept"] += int(v >= threshold)
    out["false_positives_by_mimic_type"] = mim
    return out


def markdown(res: dict, split: str = "test") -> str:
    """The per-source table of a report (as in the model card)."""
    lines = ["| cases | n | setting | TP | FP | FN | sensitivity | precision | F1 | FP/scan |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"stage1_v0.2.0_settings": "0.2.0 (U-Net, threshold 0.7, >= 3 mm)",
             "stage1_all_candidates": "U-Net alone, threshold 0.3, >= 1 mm",
             "two_stage": "**0.3.0** (U-Net 0.3, >= 1 mm + classifier)"}

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    for group, row in res[split].items():
        if group.startswith("false"):
            continue
        for key in ("stage1_v0.2.0_settings", "stage1_all_candidates", "two_stage"):
            if key in row:
                r = row[key]
                lines.append(f"| {group} | {r['n_cases']} | {names[key]} | {r['tp']} | {r['fp']} | {r['fn']} | "
                             f"{f(r['sensitivity'])} | {f(r['precision'])} | {f(r['f1'])} | {f(r['fp_per_scan'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mined", default="training/runs/stage2/mined")
    ap.add_argument("--max-fp", type=float, default=0.5, help="FP/scan limit when choosing the threshold")
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--export", help="model folder to receive the classifier")
    ap.add_argument("--version", help="with --export: the model's new version")
    ap.add_argument("--stage1-threshold", type=float, default=0.3, help="as mined (mine_candidates --threshold)")
    ap.add_argument("--stage1-min-diameter-mm", type=float, default=1.0, help="as mined")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    from CMBLib.detection.second_stage import FILE_NAME, TreeEnsemble, export_sklearn_gbc
    from CMBLib.io import write_json_atomic

    if Path(args.out).exists() and not args.force:
        raise SystemExit(f"{args.out} exists; not overwritten (pass --force)")
    train, val, test = (load_mined(args.mined, s) for s in ("train", "val", "test"))
    oof = out_of_fold(train)
    best, rows = choose_threshold(train, oof, args.max_fp)
    thr = best["threshold"]
    x, y = stack(train)
    clf = fit(x, y)
    spec = export_sklearn_gbc(clf, thr)
    ens = TreeEnsemble(spec)
    check = np.abs(ens.probability(x) - clf.predict_proba(x)[:, 1]).max()
    assert check < 1e-6, f"exported trees disagree with scikit-learn by {check}"
    res = {"n_train_cases": len(train), "n_train_candidates": int(len(y)), "n_train_positive": int(y.sum()),
           "threshold": thr, "chosen_on": "out-of-fold predictions of the training cases (5 folds by case)",
           "oof_rows": rows, "oof_best": best,
           "val": report(val, per_case_scores(ens.probability, val), thr) if val else {},
           "test": report(test, per_case_scores(ens.probability, test), thr) if test else {},
           "test_froc": {g: choose_threshold(cs, per_case_scores(ens.probability, cs), args.max_fp)[1]
                         for g, cs in (("all", test), ("clin_clean", [c for c in test if c["source"] == "clin_clean"]))
                         if cs},
           "importances": dict(sorted(zip(spec["features"], (float(v) for v in clf.feature_importances_)),
                                      key=lambda kv: -kv[1])[:10])}
    write_json_atomic(args.out, res, overwrite=True)
    print(json.dumps({k: res[k] for k in ("n_train_cases", "n_train_candidates", "n_train_positive", "threshold",
                                          "oof_best")}, indent=1))
    for split in ("val", "test"):
        for name, r in res[split].items():
            if name.startswith("false"):
                print(split, name, r)
                continue
            print(split, name, {k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()
                                    if kk in ("n_cases", "tp", "fp", "fn", "f1", "fp_per_scan", "sensitivity")}
                                for k, v in r.items()})
    print(markdown(res, "test"))
    if args.export:
        from CMBLib.detection.model_io import METADATA_FILE, sha256_file

        folder = Path(args.export)
        write_json_atomic(folder / FILE_NAME, spec, overwrite=True)
        meta = json.loads((folder / METADATA_FILE).read_text())
        if "without_second_stage" not in meta:  # the first stage's stand-alone cut-offs, kept
            meta["without_second_stage"] = {"threshold": meta["threshold"],
                                            "min_diameter_mm": meta["min_diameter_mm"]}
        meta["threshold"] = args.stage1_threshold
        meta["min_diameter_mm"] = args.stage1_min_diameter_mm
        if args.version:
            meta["version"] = args.version
        meta.setdefault("metrics", {})["second_stage"] = {
            "report": "training/train_second_stage.py (counts: candidate centre within 5 mm of an inserted CMB)",
            "threshold_choice": res["oof_best"],
            "test": {g: {k: r[k] for k in ("two_stage", "stage1_v0.2.0_settings") if k in r}
                     for g, r in res["test"].items() if not g.startswith(("false", "clin_grid"))}}
        meta["second_stage"] = {"file": FILE_NAME, "sha256": sha256_file(folder / FILE_NAME), "threshold": thr,
                                "polarities": ["dark"],  # mined on T2*-like (dark-CMB) inputs only
                                "kind": spec["kind"], "n_trees": len(spec["trees"]),
                                "trained_on": f"{len(train)} mined cases, {int(len(y))} candidates "
                                              f"({int(y.sum())} on inserted CMBs)"}
        write_json_atomic(folder / METADATA_FILE, meta, overwrite=True)
        print(f"wrote {folder / FILE_NAME} and updated {folder / METADATA_FILE}")


if __name__ == "__main__":
    main()
