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

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
MIN_DIAMETERS_MM = (1.5, 2.0, 2.5, 3.0)


def _counts(labels_vol, ref_vol):
    from CMBLib.metrics import evaluate_case

    r = evaluate_case(labels_vol, ref_vol, rule="valdo", distance_mm=5.0)
    return {"tp": r.tp, "fp": r.fp, "fn": r.fn, "n_ref": r.n_ref}


def split_items(split: str, n=None, n_t2s=None):
    """[(split name, index)]: the domain-randomised / QSM cases and the pseudo-T2* ones."""
    n = n if n is not None else (12 if split == "val" else 16)
    n_t2s = n_t2s if n_t2s is not None else (4 if split == "val" else 8)
    return [(split, i) for i in range(n)] + [(split + "_t2s", i) for i in range(n_t2s)]


def evaluate_split(model_dir, items, thresholds=None, threads=2, min_diameter_mm=None, flip_average=None):
    """Per-case rows for `items` [(split, index)]; with `thresholds` a FROC sweep from one
    probability map per case, else the model's own threshold through `detect`."""
    import torch

    from CMBLib.detection.candidates import find_candidates
    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.io import read_volume

    torch.set_num_threads(threads)
    network, meta = load_model(model_dir, device="cpu")
    if flip_average is not None:
        meta = dict(meta, flip_average=bool(flip_average))
    labels = read_volume(FS_LABELS)
    chi = read_volume(QSM) if QSM.is_file() else None
    msk = read_volume(QSM_MASK).array > 0 if chi is not None else None
    per_source = {"fs": [], "qsm": [], "qsm_t2s": []}
    timings = []
    min_d = float(meta.get("min_diameter_mm", 2.0) if min_diameter_mm is None else min_diameter_mm)
    for split, i in items:
        case = native_case(split, i, labels, chi, msk)
        src = case["info"]["source"]
        seq = "QSM" if case["polarity"] == "bright" else "T2S"
        t = time.time()
        # no brain mask given: the automatic one, as `cmb detect` does
        # the model's own cut-offs unless overridden (detect picks the stand-alone ones when
        # the second stage does not apply, e.g. to QSM with cmb-default 0.3.0)
        res = detect(case["image"], model=(network, meta), device="cpu", sequence=seq,
                     min_diameter_mm=min_diameter_mm if thresholds is None else min(MIN_DIAMETERS_MM))
        timings.append(time.time() - t)
        if thresholds is None:
            per_source[src].append([dict(_counts(res.mask, case["cmb_mask"]), threshold=res.settings["threshold"])])
        else:
            rows = []
            for th in thresholds:
                for md in MIN_DIAMETERS_MM:
                    lab, _, _ = find_candidates(res.probability, th, md, meta.get("max_diameter_mm", 10.0))
                    rows.append(dict(_counts(case["image"].with_array(lab), case["cmb_mask"]), threshold=th,
                                     min_diameter_mm=md))
            per_source[src].append(rows)
        print(f"{split}_{i:04d} {src} {np.round(case['info'].get('spacing'), 2).tolist()} "
              f"{per_source[src][-1][0]} {_suppressed_note(res, case['cmb_mask'])} {timings[-1]:.1f}s", flush=True)
    out = {"items": [f"{s}_{i:04d}" for s, i in items], "min_diameter_mm": min_d,
           "mean_detect_s": float(np.mean(timings)) if timings else None}
    out.update(summarise_groups(per_source))
    return out


def _suppressed_note(res, cmb_mask, tol_mm=5.0) -> str:
    """'suppressed N (on a CMB: M)': candidates the location filter set aside, and how many of
    them lie within `tol_mm` of an inserted CMB's centre (those would have been true positives)."""
    from .mine_candidates import reference_centres

    ref = reference_centres(cmb_mask)
    on_cmb = sum(1 for r in res.suppressed if len(ref) and
                 np.linalg.norm(ref - np.asarray(r["centre_ras"]), axis=1).min() <= tol_mm)
    return f"suppressed {len(res.suppressed)} (on a CMB: {on_cmb})"


def summarise_groups(per_source):
    """{group: {n_cases, rows (pooled per threshold), best_at_2fp}} for the groups reported in
    model cards: all, fs, qsm, qsm_t2s and real_background (qsm + qsm_t2s).

    `per_source`: {"fs" | "qsm" | "qsm_t2s": [per-case list of per-threshold count rows]}.
    """
    real = per_source["qsm"] + per_source["qsm_t2s"]
    groups = (("all", per_source["fs"] + real), ("fs", per_source["fs"]), ("qsm", per_source["qsm"]),
              ("qsm_t2s", per_source["qsm_t2s"]), ("real_background", real))
    out = {}
    for name, rows in groups:
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
    ap.add_argument("--n", type=int, default=None, help="domain-randomised/QSM cases (default: 12 val, 16 test)")
    ap.add_argument("--n-t2s", type=int, default=None, help="pseudo-T2* cases (default: 4 val, 8 test)")
    ap.add_argument("--min-diameter-mm", type=float, default=None, help="override the model's minimum size")
    ap.add_argument("--froc", action="store_true", help="sweep thresholds (choose the default on val)")
    ap.add_argument("--flip-average", type=int, choices=[0, 1], help="override the model's test-time flip averaging")
    ap.add_argument("--qsm-as-is", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON file for the summary")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    if args.qsm_as_is:
        res = qsm_as_is(args.model, args.threads)
    else:
        items = split_items(args.split, args.n, args.n_t2s)
        res = evaluate_split(args.model, items, THRESHOLDS if args.froc else None, args.threads,
                             args.min_diameter_mm, args.flip_average)
    text = json.dumps(res, indent=1, default=float)
    if args.out:
        from CMBLib.io import write_text_atomic

        if Path(args.out).exists() and not args.force:
            raise SystemExit(f"{args.out} exists; not overwritten (pass --force to replace it)")
        write_text_atomic(args.out, text)
    summary = {k: v.get("best_at_2fp") if isinstance(v, dict) and "best_at_2fp" in v else v
               for k, v in res.items() if k != "candidates"}
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
