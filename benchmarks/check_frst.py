"""Candidate recall of the fast radial symmetry transform (Xia's first stage, CMBLib.detection.frst)
by CMB size class, and candidates per scan, on the validation cases of the detector benchmarks.

Cases: `training.mine_candidates.make_case` (as benchmarks/froc_default_path.py), split ``val``,
sources ``clin`` (the real QSM brain as pseudo-T2*) and ``fsn`` (the FreeSurfer subject's T2*-like
image), on the clinical grids 0.86 x 0.86 x 4 and 0.5 x 0.5 x 5 mm, even cases without CMBs, odd
cases with 1-10 inserted CMBs of core radius 0.6-2.5 mm (the small ones the 3D U-Net misses).
Brain mask: the non-zero voxels, eroded by `--erode-mm` in-plane (Xia et al. erode the brain
edge, where vessels mimic CMBs).  A CMB is found when a candidate centre lies within
`--distance` mm of its centre (one candidate per CMB); size classes from the equivalent
diameter of the inserted CMB's half-maximum mask (< 3, 3-4, 4-5, >= 5 mm).

    python benchmarks/check_frst.py --split val --n 8
    python benchmarks/check_frst.py --split val --n 8 --top-k 25,50,100,200 --distance 2.5
    python benchmarks/check_frst.py --split val --n 8 --generator dark --top-k 300,1000,3000
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE_NAMES = ("< 3", "3-4", "4-5", ">= 5")


def brain_mask(image, erode_mm):
    from scipy import ndimage as ndi

    a = np.asarray(image.array)
    brain = ndi.binary_fill_holes(a > 0)
    px = float(np.mean(image.spacing[:2]))
    it = int(round(erode_mm / px))
    if it > 0:
        brain = ndi.binary_erosion(brain, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool),
                                   iterations=it)
    return brain


def case_rows(case, top_ks, distance_mm, erode_mm, generator="frst"):
    """({top_k: [found per size class]}, [inserted per size class], {top_k: candidates}, seconds).
    generator: "frst" (this module's subject) or "dark" (the native stage's dark-spot candidates,
    `CMBLib.detection.dark_spots`, with their defaults)."""
    from froc_default_path import size_bin

    from CMBLib.detection.frst import frst, frst_candidates
    from CMBLib.metrics import match_points
    from training.mine_candidates import reference_centres, reference_diameters

    image = case["image"]
    brain = brain_mask(image, erode_mm)
    t = time.perf_counter()
    if generator == "dark":
        from CMBLib.detection.dark_spots import dark_spot_candidates

        cands = dark_spot_candidates(image, brain, top_k=max(top_ks))
    else:
        s = frst(image, brain)
        cands = frst_candidates(image, brain, top_k=max(top_ks), transform=s)
    seconds = time.perf_counter() - t
    ref = reference_centres(case["cmb_mask"])
    bins = [size_bin(d) for d in reference_diameters(case["cmb_mask"])]
    inserted = [bins.count(b) for b in range(len(SIZE_NAMES))]
    found, count = {}, {}
    for k in top_ks:
        pts = np.array([c["centre_ras"] for c in cands[:k]], float).reshape(-1, 3)
        count[k] = len(pts)
        m = match_points(pts, ref, rule="one-to-one", distance_mm=distance_mm) if len(ref) else None
        hit = {r for _, r in m.pairs} if m is not None else set()
        found[k] = [sum(1 for j in hit if bins[j] == b) for b in range(len(SIZE_NAMES))]
    return found, inserted, count, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=8, help="cases per source")
    ap.add_argument("--sources", default="clin,fsn")
    ap.add_argument("--top-k", default="25,50,100,200")
    ap.add_argument("--distance", type=float, default=2.5, help="mm between a candidate and a CMB centre")
    ap.add_argument("--erode-mm", type=float, default=2.0)
    ap.add_argument("--generator", default="frst", choices=("frst", "dark"),
                    help="frst, or dark: the native stage's dark-spot candidates (docs/native_stage.md)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from training.mine_candidates import load_backgrounds, make_case

    top_ks = [int(v) for v in args.top_k.split(",")]
    labels, chi, msk, fsn = load_backgrounds(args.sources.split(","))
    found = {k: np.zeros(len(SIZE_NAMES), int) for k in top_ks}
    inserted = np.zeros(len(SIZE_NAMES), int)
    per_scan = {k: [] for k in top_ks}
    seconds = []
    for i in range(args.n):
        for source in args.sources.split(","):
            case = make_case(source, args.split, i, labels, chi, msk, fsn)
            if case is None or case["polarity"] != "dark":
                continue
            f, ins, count, sec = case_rows(case, top_ks, args.distance, args.erode_mm, args.generator)
            inserted += ins
            for k in top_ks:
                found[k] += f[k]
                per_scan[k].append(count[k])
            seconds.append(sec)
            shape = tuple(np.asarray(case["image"].array).shape)
            print(f"{source} {i} {shape} inserted {ins} found at top {top_ks[-1]} {f[top_ks[-1]]} "
                  f"{sec:.2f}s", flush=True)
    print(f"\n{len(seconds)} scans ({args.split}: {args.sources}), {int(inserted.sum())} CMBs, "
          f"match within {args.distance:g} mm, brain eroded {args.erode_mm:g} mm")
    print("| top-K | candidates / scan | " + " | ".join(f"{n} mm" for n in SIZE_NAMES) + " | all |")
    print("|---|---|" + "---|" * (len(SIZE_NAMES) + 1))
    for k in top_ks:
        cells = [f"{a}/{b} ({a / b:.2f})" if b else "-" for a, b in zip(found[k], inserted)]
        tot = f"{found[k].sum()}/{inserted.sum()} ({found[k].sum() / max(inserted.sum(), 1):.2f})"
        print(f"| {k} | {np.mean(per_scan[k]):.0f} | " + " | ".join(cells) + f" | {tot} |")
    print(f"seconds per scan (frst + candidates, this machine): median {np.median(seconds):.2f}")


if __name__ == "__main__":
    main()
