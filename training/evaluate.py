"""Evaluate a bundled-format model through the real detection pipeline (`cmb detect`).

Cases are re-created on their native clinical grids exactly as `generate_cache` made
them (same seeds), so the numbers include preprocessing, resampling back and the
candidate size limits of `CMBLib.detection.pipeline.detect`.

    python -m training.evaluate --model CMBLib/models/cmb-default --split val --froc   # pick the threshold
    python -m training.evaluate --model CMBLib/models/cmb-default --split test           # report
    python -m training.evaluate --model CMBLib/models/cmb-default --qsm-as-is            # FP on the real QSM

Writes a JSON summary (``--out``): per source (domain-randomised ``fs`` / real-background
``qsm``) and overall: TP, FP, FN, sensitivity, precision, F1, FP per scan (VALDO rule, 5 mm).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from .generate_cache import FS_LABELS, QSM, QSM_MASK, native_case
from .validate import best_row, summarise

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def _counts(labels_vol, ref_vol):
    from CMBLib.metrics import evaluate_case

    r = evaluate_case(labels_vol, ref_vol, rule="valdo", distance_mm=5.0)
    return {"tp": r.tp, "fp": r.fp, "fn": r.fn, "n_ref": r.n_ref}


def evaluate_split(model_dir, split, n, thresholds=None, threads=2):
    """Per-case rows for `split` cases 0..n-1; with `thresholds` a FROC sweep from one
    probability map per case, else the model's own threshold through `detect`."""
    import torch

    from CMBLib.detection.candidates import find_candidates
    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.io import read_volume

    torch.set_num_threads(threads)
    network, meta = load_model(model_dir, device="cpu")
    labels = read_volume(FS_LABELS)
    chi = read_volume(QSM) if QSM.is_file() else None
    msk = read_volume(QSM_MASK).array > 0 if chi is not None else None
    per_source = {"fs": [], "qsm": []}
    timings = []
    for i in range(n):
        case = native_case(split, i, labels, chi, msk)
        src = case["info"]["source"]
        seq = "QSM" if case["polarity"] == "bright" else "T2S"
        t = time.time()
        res = detect(case["image"], model=(network, meta), device="cpu", sequence=seq)
        timings.append(time.time() - t)
        if thresholds is None:
            per_source[src].append([dict(_counts(res.labels, case["cmb_mask"]), threshold=meta["threshold"])])
        else:
            rows = []
            for th in thresholds:
                lab, _, _ = find_candidates(res.probability, th, meta.get("min_diameter_mm", 2.0),
                                            meta.get("max_diameter_mm", 10.0))
                rows.append(dict(_counts(case["image"].with_array(lab), case["cmb_mask"]), threshold=th))
            per_source[src].append(rows)
        print(f"{split}_{i:04d} {src} {case['info'].get('spacing')} {per_source[src][-1][-1 if thresholds is None else 0]} "
              f"{timings[-1]:.1f}s", flush=True)
    out = {"split": split, "n_cases": n, "mean_detect_s": float(np.mean(timings)) if timings else None}
    allrows = per_source["fs"] + per_source["qsm"]
    for name, rows in (("all", allrows), ("fs", per_source["fs"]), ("qsm", per_source["qsm"])):
        if rows:
            s = summarise(rows)
            out[name] = {"n_cases": len(rows), "rows": s, "best_at_2fp": best_row(s)}
    return out


def qsm_as_is(model_dir, threads=2):
    """False positives on the real QSM brain without inserted CMBs (whole brain and left half)."""
    import torch

    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.io import read_volume

    torch.set_num_threads(threads)
    network, meta = load_model(model_dir, device="cpu")
    chi = read_volume(QSM)
    msk = read_volume(QSM_MASK).array > 0
    t = time.time()
    res = detect(chi, model=(network, meta), device="cpu", sequence="QSM")
    dt = time.time() - t
    centre_x = chi.kji_to_ras(np.argwhere(msk).mean(axis=0))[0]
    xs = [r["centre_ras"][0] for r in res.records]
    left = sum(1 for x in xs if x < centre_x)
    out = {"fp_whole_brain": len(res.records), "fp_left_hemisphere": left, "detect_s": dt,
           "threshold": meta["threshold"],
           "candidates": [{k: r[k] for k in ("centre_ras", "max_probability", "diameter_mm") if k in r}
                          for r in res.records]}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Evaluate a model folder through the detection pipeline.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--n", type=int, default=None, help="number of cases (default: 12 val, 16 test)")
    ap.add_argument("--froc", action="store_true", help="sweep thresholds (choose the default on val)")
    ap.add_argument("--qsm-as-is", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON file for the summary")
    args = ap.parse_args(argv)
    if args.qsm_as_is:
        res = qsm_as_is(args.model, args.threads)
    else:
        n = args.n if args.n is not None else (12 if args.split == "val" else 16)
        res = evaluate_split(args.model, args.split, n, THRESHOLDS if args.froc else None, args.threads)
    text = json.dumps(res, indent=1, default=float)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    summary = {k: v.get("best_at_2fp") if isinstance(v, dict) and "best_at_2fp" in v else v
               for k, v in res.items() if k != "candidates"}
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
