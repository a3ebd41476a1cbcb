"""Dice of the region-growing engine against ground truth on synthetic CMBs, per mode.

Two kinds of synthetic CMB, two definitions of their ground truth:
  * phantom: hard spheres (radius 1-5 mm, contrast 0.3-0.7, noise 2-6 %) rendered with
    partial volume on clinical grids, alone, next to a dark vessel, or at a skull-stripped
    brain edge; truth = the sphere's volume in voxels, those most inside it (Testing/phantoms.py).
  * inserted: CMBs from CMBLib.synthesis (Gaussian core + blooming halo, optional dipole,
    ellipsoidal) inserted into a real brain (the QSM brain of ../shared/data, contrast
    inverted so veins are dark as on SWI) resampled to clinical grids; truth = the
    generator's mask (voxels with at least half the CMB's peak attenuation).
Scribbles are rater-like strokes along i through the centre.  Cases whose truth is
empty (a CMB too small to leave a voxel half inside it) or wider than 10 mm (not a CMB
by definition) are left out.

    python benchmarks/eval_grow.py [--fractions 0.5,0.6,0.7] [--quick]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]

from phantoms import dice, random_case, scribble_from_mask  # noqa: E402

from CMBLib.growing import MODES, grow_from_scribbles  # noqa: E402
from CMBLib.growing.engine import AUTO_FRACTION  # noqa: E402

SPACINGS = [(0.86, 0.86, 4.0), (0.47, 0.47, 3.0), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5)]
SHARED = ROOT.parent / "shared" / "data"


def phantom_cases(rng, per_kind):
    for sp in SPACINGS:
        shape = tuple(max(8, min(64, int(round(30 / s)))) for s in sp)
        for kind in ("plain", "vessel", "edge"):
            for _ in range(per_kind):
                vol, truth, scr, radius = random_case(rng, sp, shape, kind)
                if truth.array.any():
                    yield f"phantom/{kind}/{sp[2]}mm", vol, truth, scr


def inserted_cases(rng, per_grid):
    path = SHARED / "real" / "qsm2016" / "chi_cosmos.nii.gz"
    if not path.is_file():
        print(f"(skipping inserted cases: {path} not present)")
        return
    import SimpleITK as sitk

    from CMBLib.io import read_volume, volume_from_sitk, volume_to_sitk
    from CMBLib.synthesis.cmb_insertion import insert_cmbs

    qsm = read_volume(path)
    brain = read_volume(SHARED / "real" / "qsm2016" / "msk.nii.gz").array > 0
    arr = np.where(brain, 1.0 - 4.0 * qsm.array, 0.0).astype(np.float32)  # SWI-like: veins dark
    base = qsm.with_array(arr)
    for sp in SPACINGS[:3]:
        img = volume_to_sitk(base)
        size = [int(round(n * s / t)) for n, s, t in zip(img.GetSize(), img.GetSpacing(), sp)]
        res = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), sp,
                            img.GetDirection(), 0.0, sitk.sitkFloat32)
        grid = volume_from_sitk(res)
        mask = volume_from_sitk(sitk.Resample(volume_to_sitk(base.with_array(brain.astype(np.uint8))), res,
                                              sitk.Transform(), sitk.sitkNearestNeighbor)).array > 0
        from scipy import ndimage
        inner = ndimage.binary_erosion(mask, iterations=2)
        for _ in range(per_grid):
            ins = insert_cmbs(grid, n=6, rng=rng, brain_mask=inner, radius_mm=(1.0, 5.0), contrast=(0.3, 0.9))
            noisy = ins.image.array + rng.normal(0, 0.03, ins.image.array.shape).astype(np.float32)
            noisy[~mask] = 0
            scr = np.zeros(noisy.shape, dtype=np.int32)
            for lab, c in enumerate(ins.centres_ras, start=1):
                m = ins.mask.array == lab
                if not m.any():
                    continue
                centre = np.round(grid.ras_to_voxel(c)[::-1]).astype(int)
                if not m[tuple(centre)]:
                    centre = np.argwhere(m)[0]
                scr[scribble_from_mask(m, centre) & (scr == 0)] = lab
            truth = ins.mask.array.copy()
            for lab in np.unique(truth)[1:]:  # a "CMB" wider than 10 mm is not one: leave it out
                if (truth == lab).sum() * np.prod(sp) > np.pi / 6 * 10.0 ** 3:
                    scr[scr == lab] = 0
            if not scr.any():
                continue
            yield f"inserted/{sp[2]}mm", grid.with_array(noisy), grid.with_array(truth), grid.with_array(scr)


def evaluate(cases, modes, fractions):
    table = {}
    times = {}
    for name, vol, truth, scr in cases:
        group = name.split("/")[0]
        labels = [int(v) for v in np.unique(scr.array) if v]
        for mode in modes:
            for f in fractions:
                t0 = time.perf_counter()
                res = grow_from_scribbles(vol, scr, mode=mode, auto_fraction=f)
                times.setdefault(mode, []).append((time.perf_counter() - t0) / len(labels))
                for lab in labels:
                    d = dice(res.labels.array == lab, truth.array == lab)
                    table.setdefault((mode, f, group), []).append(d)
                    table.setdefault((mode, f, "all"), []).append(d)
    return table, times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default=None, help="comma-separated auto fractions to compare")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(2026)
    per = 3 if args.quick else 8
    cases = list(phantom_cases(rng, per)) + list(inserted_cases(rng, 1 if args.quick else 3))
    fractions = [float(x) for x in args.fractions.split(",")] if args.fractions else [None]
    table, times = evaluate(cases, MODES, fractions)
    groups = sorted({g for (_, _, g) in table})
    print(f"{len(cases)} cases; mean Dice (n CMBs) per intensity mode and auto fraction")
    print(f"{'mode':<16} {'fraction':>8} " + " ".join(f"{g:>16}" for g in groups))
    for mode in MODES:
        for f in fractions:
            frac = f if f is not None else AUTO_FRACTION[mode]
            cells = [f"{np.mean(table[(mode, f, g)]):.3f} ({len(table[(mode, f, g)])})" for g in groups]
            print(f"{mode:<16} {frac:>8.2f} " + " ".join(f"{c:>16}" for c in cells))
    for mode in MODES:
        print(f"{mode}: {1000 * np.mean(times[mode]):.1f} ms per CMB (mean)")


if __name__ == "__main__":
    main()
