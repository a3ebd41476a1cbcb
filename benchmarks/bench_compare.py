"""`cmb compare` on baseline / follow-up pairs made from the real brains in ../shared/data.

Each pair: one real brain (the QSM challenge brain as pseudo-T2*, or the FreeSurfer subject's
T2*-like image, alternately) re-acquired twice (`label_synthesis.reacquire`): the baseline on
one clinical grid, the follow-up after a random rigid head motion (up to 8 degrees about each
axis, 10 mm along each) on a grid with another slice thickness.  CMBs (`cmb_insertion`, radius
1-2.5 mm, contrast 0.5-0.95): some in both scans, 0-2 only in the baseline (gone), and the new
ones only in the follow-up, their number cycling through the ARIA-H categories (0, 1-4, 5-9,
10-12).  Rician noise and a bias field on each scan (`training.generate_cache.magnitude_image`).

Per pair `compare_studies` runs as `cmb compare` does (registration, quality gate, the bundled
model on both scans, matching); its own timings give the ratio of the whole comparison to the two
detections inside it.  Scores: new-CMB sensitivity (a truth new CMB found as "new" within 5 mm,
one to one), false new CMBs per pair, ARIA-H category agreement, registration error (mm, over
the baseline brain, against the known motion).  The matching's `support` (probability under the
threshold in the other scan that makes an unpaired CMB persisting) is scored at several values
without re-running detection: choose on the tuning seeds, report on the others.  The same for
the difference image's new spots (`CMBLib.compare.new_spots`, found once per pair): every
threshold of ``DARKENINGS`` on their peak darkening is scored with the detector's new CMBs
(support 0.3) plus the spots away from every detection.

    nice -n 10 python benchmarks/bench_compare.py --seeds 0-7 --threads 1            # tuning set
    nice -n 10 python benchmarks/bench_compare.py --seeds 100-107 --threads 1        # report set
    nice -n 10 python benchmarks/bench_compare.py --gate                             # unrelated pairs
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUPPORTS = (0.2, 0.3, 0.4, 0.5, 1.01)       # 1.01: no support check
DARKENINGS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
SPOT_CAPS = ((0.2, 6.0), (0.25, 6.0), (0.15, 6.0))   # (darkening, largest spot diameter mm) also scored
GRIDS = ((0.86, 0.86, 4.0), (0.5, 0.5, 5.0), (0.9, 0.9, 3.0))
NEW_COUNTS = ((0, 0), (1, 4), (5, 9), (10, 12))


def backgrounds():
    """[(T2*-like Volume, brain mask)] of the two real brains."""
    from CMBLib.io import read_volume
    from training.generate_cache import FS_LABELS, QSM, QSM_MASK, pseudo_t2s
    from training.mine_candidates import FS_NORM, fs_norm_t2s

    for p in (QSM, QSM_MASK, FS_LABELS, FS_NORM):
        if not Path(p).exists():
            sys.exit(f"bench_compare: {p} not found (../shared/data); nothing to do")
    chi, msk = read_volume(QSM), read_volume(QSM_MASK).array > 0
    qsm = pseudo_t2s(chi, msk, np.random.default_rng(0))
    return [(qsm, msk), fs_norm_t2s(read_volume(FS_NORM), read_volume(FS_LABELS))]


def make_pair(seed: int, bgs) -> dict:
    """Baseline, follow-up, the motion and the truth of one pair (module docstring)."""
    from scipy import ndimage as ndi

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.followup_pair import apply, move_volume, rigid_motion
    from CMBLib.synthesis.label_synthesis import reacquire
    from training.generate_cache import magnitude_image

    rng = np.random.default_rng(50_000 + seed)
    base, brain = bgs[seed % len(bgs)]
    centre = base.kji_to_ras(np.argwhere(brain).mean(axis=0))
    motion = rigid_motion(rng.uniform(-8, 8, 3), rng.uniform(-10, 10, 3), centre)
    grids = rng.permutation(len(GRIDS))[:2]
    lo, hi = NEW_COUNTS[seed % len(NEW_COUNTS)]
    n_new, n_both, n_gone = int(rng.integers(lo, hi + 1)), int(rng.integers(0, 7)), int(rng.integers(0, 3))
    inner = ndi.binary_erosion(brain, iterations=3)
    pts = sample_centres(inner, base, n_new + n_both + n_gone, rng, min_distance_mm=10.0)
    new, both, gone = pts[:n_new], pts[n_new:n_new + n_both], pts[n_new + n_both:]
    scans = []
    for grid, moved, shown in ((GRIDS[grids[0]], None, np.vstack([both, gone])),
                               (GRIDS[grids[1]], motion, np.vstack([both, new]))):
        img, mask = reacquire(base if moved is None else move_volume(base, moved), grid, rng, mask=brain)
        where = shown if moved is None else apply(moved, shown)
        ins = insert_cmbs(img, centres_ras=where.reshape(-1, 3), rng=rng, radius_mm=(1.0, 2.5),
                          contrast=(0.5, 0.95))
        scans.append(img.with_array(magnitude_image(ins.image.array, mask, grid, rng, noise_sd=(0.01, 0.04))))
    return {"baseline": scans[0], "followup": scans[1], "motion": motion, "new_followup": apply(motion, new),
            "old_followup": apply(motion, both),
            "n_new": n_new, "brain_points": base.kji_to_ras(np.argwhere(brain)[::997]), "grids": grids.tolist()}


def score(result, pair, support: float, darkening=None, max_diameter_mm=None) -> dict:
    """TP / FN / false new and the category for one support value (matching re-run, no detection);
    with `darkening`, the difference spots of at least that peak darkening away from every
    detection are new CMBs too (with `max_diameter_mm`, only spots at most that wide)."""
    from CMBLib.compare.aria import aria_h_category
    from CMBLib.compare.matching import field_of_view, match_findings, probability_support
    from CMBLib.metrics.matching import match_points

    reg = result.registration
    classes = match_findings(result.baseline.records, result.followup.records, reg.to_baseline, reg.to_followup,
                             result.settings["tolerance_mm"],
                             baseline_support=probability_support(result.baseline.probability),
                             followup_support=probability_support(result.followup.probability),
                             in_baseline_view=field_of_view(pair["baseline"]),
                             in_followup_view=field_of_view(pair["followup"]), support=support)
    new = list(classes["new"])
    if darkening is not None:
        from CMBLib.compare.new_spots import unexplained

        cap = {} if max_diameter_mm is None else {"max_diameter_mm": max_diameter_mm}
        new += unexplained(result.difference_spots, result.baseline.records, result.followup.records, reg,
                           result.settings["tolerance_mm"], darkening, **cap)
    found = np.array([e["centre_ras"] for e in new], float).reshape(-1, 3)
    m = match_points(found, pair["new_followup"], rule="one_to_one", distance_mm=5.0)
    return {"tp": m.tp, "fn": m.fn, "false_new": m.fp, "category": aria_h_category(len(found)),
            "truth_category": aria_h_category(pair["n_new"])}


def run_pairs(seeds, threads, rows_file=None):
    import torch

    from CMBLib.compare.new_spots import DARKENING
    from CMBLib.compare.outputs import write_compare_outputs
    from CMBLib.compare.pipeline import compare_studies
    from CMBLib.detection.model_io import load_model
    from CMBLib.synthesis.followup_pair import apply

    if threads:
        import SimpleITK as sitk

        torch.set_num_threads(threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    model = load_model("default", device="cpu")
    bgs = backgrounds()
    rows = []
    import tempfile

    for seed in seeds:
        pair = make_pair(seed, bgs)
        t = time.perf_counter()
        result = compare_studies(pair["baseline"], pair["followup"], model=model, device="cpu", difference=True)
        with tempfile.TemporaryDirectory() as d:
            write_compare_outputs(result, Path(d) / "out", pair["baseline"], pair["followup"])
        total = time.perf_counter() - t
        detect_s = result.timings["detect_baseline"] + result.timings["detect_followup"]
        truth = pair["brain_points"]
        err = np.linalg.norm(result.registration.to_baseline(apply(pair["motion"], truth)) - truth, axis=1)
        row = {"seed": seed, "n_new": pair["n_new"], "reg_err_mean_mm": float(err.mean()),
               "reg_err_max_mm": float(err.max()), "correlation": result.quality["correlation"],
               "seconds": total, "detect_seconds": detect_s, "ratio": total / detect_s,
               "by_support": {str(s): score(result, pair, s) for s in SUPPORTS},
               "difference_seconds": result.timings.get("difference", 0.0), "spots": len(result.difference_spots),
               "by_darkening": {str(t): score(result, pair, 0.3, t) for t in DARKENINGS},
               "by_spot_cap": {f"{t}/{c}": score(result, pair, 0.3, t, c) for t, c in SPOT_CAPS}}
        rows.append(row)
        if rows_file:
            with open(rows_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        d = row["by_support"][str(0.3)]
        print(f"seed {seed}: new {pair['n_new']} found {d['tp']} false {d['false_new']} category "
              f"{d['category']}/{d['truth_category']}  reg err {err.mean():.2f} (max {err.max():.2f}) mm  "
              f"{total:.0f} s = {row['ratio']:.2f} x the two detections", flush=True)
        d = row["by_darkening"][str(DARKENING)]
        print(f"  with difference spots >= {DARKENING}: found {d['tp']} false {d['false_new']} category "
              f"{d['category']}/{d['truth_category']}  ({row['spots']} spots, {row['difference_seconds']:.1f} s)",
              flush=True)
    return rows


def summary(rows) -> None:
    n = len(rows)
    print(f"\n{n} pairs; registration error mean {np.mean([r['reg_err_mean_mm'] for r in rows]):.2f} mm, "
          f"worst max {max(r['reg_err_max_mm'] for r in rows):.2f} mm; compare / two detections: median "
          f"{np.median([r['ratio'] for r in rows]):.2f} x (max {max(r['ratio'] for r in rows):.2f} x)")
    print("support  sensitivity  false new/pair  category right")
    for s in SUPPORTS:
        d = [r["by_support"][str(s)] for r in rows]
        tp, fn = sum(x["tp"] for x in d), sum(x["fn"] for x in d)
        print(f"{s:7.2f}  {tp / max(tp + fn, 1):11.3f}  {sum(x['false_new'] for x in d) / n:14.2f}  "
              f"{sum(x['category'] == x['truth_category'] for x in d) / n:14.2f}   ({tp}/{tp + fn} new found)")
    if not all("by_darkening" in r for r in rows):
        return
    print("support 0.30 with difference spots (darkening >= threshold; '-': detection alone)")
    print("darkening  sensitivity  false new/pair  category right")
    for t in (None, *DARKENINGS):
        d = [r["by_support"]["0.3"] if t is None else r["by_darkening"][str(t)] for r in rows]
        tp, fn = sum(x["tp"] for x in d), sum(x["fn"] for x in d)
        print(f"{'-' if t is None else f'{t:.2f}':>9}  {tp / max(tp + fn, 1):11.3f}  "
              f"{sum(x['false_new'] for x in d) / n:14.2f}  "
              f"{sum(x['category'] == x['truth_category'] for x in d) / n:14.2f}   ({tp}/{tp + fn} new found)")
    if not all("by_spot_cap" in r for r in rows):
        return
    print("support 0.30 with difference spots at most D mm across (darkening >= threshold)")
    print("darkening / D  sensitivity  false new/pair  category right")
    for t, c in SPOT_CAPS:
        d = [r["by_spot_cap"][f"{t}/{c}"] for r in rows]
        tp, fn = sum(x["tp"] for x in d), sum(x["fn"] for x in d)
        print(f"{f'{t:.2f} / {c:g}':>13}  {tp / max(tp + fn, 1):11.3f}  {sum(x['false_new'] for x in d) / n:14.2f}  "
              f"{sum(x['category'] == x['truth_category'] for x in d) / n:14.2f}   ({tp}/{tp + fn} new found)")


def gate(threads) -> None:
    """Quality figures of the same brain (should pass) and of the two different brains
    (must be refused), registration only."""
    from CMBLib.compare import quality
    from CMBLib.compare.register import prepare, register_followup

    bgs = backgrounds()
    for seed in range(3):
        pair = make_pair(seed, bgs)
        other = make_pair(seed + 1, bgs)["followup"]
        for name, f in (("same brain", pair["followup"]), ("other brain", other)):
            images = prepare(pair["baseline"], f)
            figures = quality.assess(register_followup(pair["baseline"], f, images=images), images)
            print(f"seed {seed} {name}: correlation {figures['correlation']:.3f}, overlap {figures['overlap']:.2f}"
                  f" -> {'refused' if quality.problems(figures) else 'accepted'}")


def parse_seeds(text: str):
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gate", action="store_true", help="quality figures of same / other brain pairs only")
    ap.add_argument("--json", default=None, help="append the per-pair rows here (JSON lines)")
    ap.add_argument("--summary", default=None, metavar="JSONL", help="only summarise rows written earlier")
    args = ap.parse_args()
    if args.gate:
        gate(args.threads)
        return
    if args.summary:
        summary([json.loads(line) for line in Path(args.summary).read_text().splitlines() if line.strip()])
        return
    summary(run_pairs(parse_seeds(args.seeds), args.threads, args.json))


if __name__ == "__main__":
    main()
