"""FROC of the default detection path (U-Net alone + location filter) over its two cut-offs.

cmb-default 0.3.2 runs the U-Net alone at probability >= 0.7 and >= 3 mm (0.2.0's cut-offs,
the ones a reader measured on real clinical T2*), then sets aside candidates in the deep
midline vein zone.  Were those cut-offs still the best once the location filter exists?  Per
case, `detect` runs once (first stage alone, no filter) for the probability map and the
brain mask; the candidates of every (threshold, minimum diameter) pair are then found on it
exactly as `detect` finds them (`find_candidates` on the input grid), and one atlas
registration per case gives every candidate's MNI position for the filter's zones.

Cases: the `training.mine_candidates` sources (clin, t2s, fsn, fs; the seeds of a split;
real brains on clinical grids, pseudo-T2*, domain-randomised) -- choose on ``val``, report on
``test``.  Counts: VALDO rule (`CMBLib.metrics.match_points`, < 5 mm between centres).

    python benchmarks/froc_default_path.py --split val --n 12 --out /tmp/froc_val.json
    python benchmarks/froc_default_path.py --split val --model training/runs/sensitivity/model
    python benchmarks/froc_default_path.py --split val --zooms "1,1,1;2,2,1"
    python benchmarks/froc_default_path.py --split val --tta flips     # test-time flips (detect's tta)
    python benchmarks/froc_default_path.py --split val --window brain  # one window on the brain's box

Sensitivity is also given per inserted CMB size (equivalent diameter of its half-maximum
mask), at 0.7 / 3 mm and at the chosen pair.
"""
import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MIN_DIAMETERS = (2.0, 2.5, 3.0, 3.5, 4.0)
SIZE_BINS_MM = (3.0, 4.0, 5.0)          # < 3, 3-4, 4-5, >= 5 mm equivalent diameter


def size_bin(diameter_mm: float) -> int:
    """Index of `diameter_mm` in the bins < 3, 3-4, 4-5, >= 5 mm."""
    return int(np.searchsorted(SIZE_BINS_MM, diameter_mm, side="right"))


def case_rows(case, model, zones, zooms=None, tta=None, window=None) -> tuple[dict, dict]:
    """({(threshold, min diameter): [tp, fp, fn, set aside]}, {same key: [found, inserted]
    per size bin}) for one case."""
    from CMBLib.detection.candidates import find_candidates
    from CMBLib.detection.location_filter import zone_of
    from CMBLib.detection.pipeline import detect
    from CMBLib.errors import CMBError
    from CMBLib.location import locate_points
    from CMBLib.metrics import match_points
    from training.mine_candidates import reference_centres, reference_diameters

    seq = "QSM" if case["polarity"] == "bright" else "T2S"
    res = detect(case["image"], model, device="cpu", sequence=seq, second_stage=False, location_filter=False,
                 keep_model_grid=True, zooms=zooms, tta=tta, window=window)
    pre = res.model_grid["pre"]
    brain = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0
    ref = reference_centres(case["cmb_mask"])
    bins = [size_bin(d) for d in reference_diameters(case["cmb_mask"])]
    found = {}
    for t, d in itertools.product(THRESHOLDS, MIN_DIAMETERS):
        _, recs, _ = find_candidates(res.probability, t, d, 10.0, brain_mask=brain)
        found[(t, d)] = np.array([r["centre_ras"] for r in recs], float).reshape(-1, 3)
    allpts = np.concatenate(list(found.values())) if found else np.zeros((0, 3))
    try:
        locs = locate_points(case["image"], allpts) if len(allpts) else []
        mni = np.array([[loc["mni_x"], loc["mni_y"], loc["mni_z"]] for loc in locs], float).reshape(-1, 3)
        aside_all = np.array([z is not None for z in zone_of(mni, zones)], bool)
    except CMBError:                      # as detect: a failed registration sets nothing aside
        aside_all = np.zeros(len(allpts), bool)
    out, by_size, start = {}, {}, 0
    for key, pts in found.items():
        aside = aside_all[start:start + len(pts)]
        start += len(pts)
        m = match_points(pts[~aside], ref, rule="valdo", distance_mm=5.0)
        hit = {r for _, r in m.pairs}
        out[key] = [m.tp, m.fp, m.fn, int(aside.sum())]
        by_size[key] = [[sum(1 for j in hit if bins[j] == b), bins.count(b)] for b in range(len(SIZE_BINS_MM) + 1)]
    return out, by_size


def size_line(counts) -> str:
    names = ("< 3", "3-4", "4-5", ">= 5")
    return ", ".join(f"{n} mm {f}/{t}" for n, (f, t) in zip(names, counts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=12, help="cases per source")
    ap.add_argument("--sources", default="clin,t2s,fsn,fs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-fp", type=float, default=0.5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--model", default="default", help="a model folder (default: the bundled cmb-default)")
    ap.add_argument("--zooms", default=None, help="inference zooms, e.g. '1,1,1;2,2,1' (default: the model's)")
    ap.add_argument("--tta", default=None, help="test-time augmentation: none, mirror, flips, d4 or transform "
                                                 "names (default: the model's)")
    ap.add_argument("--window", default=None, choices=("tiles", "brain"),
                    help="inference window (detect's window; default: the model's)")
    args = ap.parse_args(argv)
    import torch

    from CMBLib.detection.location_filter import model_zones
    from CMBLib.detection.model_io import load_model
    from CMBLib.metrics.case_metrics import detection_scores
    from training.mine_candidates import load_backgrounds, make_case

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    zones = model_zones(model[1])
    zooms = [[float(v) for v in z.split(",")] for z in args.zooms.split(";")] if args.zooms else None
    labels, chi, msk, fsn = load_backgrounds(args.sources.split(","))
    per_source: dict = {}
    sizes: dict = {}
    seconds: list = []
    for i in range(args.n):
        for source in args.sources.split(","):
            case = make_case(source, args.split, i, labels, chi, msk, fsn)
            if case is None or case["polarity"] != "dark":
                continue
            t = time.time()
            rows, by_size = case_rows(case, model, zones, zooms, args.tta, args.window)
            for k, v in by_size.items():
                acc_s = sizes.setdefault(k, [[0, 0] for _ in v])
                sizes[k] = [[a[0] + b[0], a[1] + b[1]] for a, b in zip(acc_s, v)]
            acc = per_source.setdefault(source, {k: [0, 0, 0, 0, 0] for k in rows})
            for k, v in rows.items():
                acc[k] = [a + b for a, b in zip(acc[k], v + [1])]
            seconds.append(time.time() - t)
            print(f"{source} {i} {rows[(0.7, 3.0)]} {seconds[-1]:.1f}s", flush=True)
    total = {k: [sum(per_source[s][k][j] for s in per_source) for j in range(5)] for k in next(iter(
        per_source.values()))}

    def f1(v):  # v: [tp, fp, fn, set aside, cases]
        return detection_scores(*v[:3])[2] or 0.0

    print("\n| threshold | min diameter mm | TP | FP | FN | set aside | F1 | FP/scan |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in sorted(total.items()):
        print(f"| {k[0]:g} | {k[1]:g} | {v[0]} | {v[1]} | {v[2]} | {v[3]} | {f1(v):.3f} | {v[1] / v[4]:.2f} |")
    ok = {k: v for k, v in total.items() if v[1] / v[4] <= args.max_fp}
    best = max(ok, key=lambda k: (round(f1(ok[k]), 6), -k[0], -k[1])) if ok else None
    print(f"\nhighest F1 with <= {args.max_fp} FP/scan: {best} (0.7 / 3.0: F1 {f1(total[(0.7, 3.0)]):.3f})")
    print(f"seconds per case (detect + candidates + registration): median {np.median(seconds):.1f}, "
          f"total {np.sum(seconds):.0f}")
    for key in dict.fromkeys([(0.7, 3.0), best]):
        if key is not None:
            print(f"found by size at {key[0]:g} / {key[1]:g} mm: {size_line(sizes[key])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"split": args.split, "model": args.model, "zooms": zooms, "tta": args.tta,
                                              "window": args.window,
                                              "seconds": seconds, "best": best,
                                              "by_size": {f"{k[0]}/{k[1]}": v for k, v in sizes.items()},
                                              "total": {
            f"{k[0]}/{k[1]}": v for k, v in total.items()}, "per_source": {s: {f"{k[0]}/{k[1]}": v for k, v in
                                                                                d.items()} for s, d in
                                                                            per_source.items()}}, indent=1))


if __name__ == "__main__":
    main()
