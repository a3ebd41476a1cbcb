"""Speed of the region-growing engine against the thesis's per-voxel algorithm, same run.

For each grid (a clinical T2* 256 x 256 x 44 at 0.86 x 0.86 x 4 mm, and 0.5 mm
isotropic) a phantom with N synthetic CMBs and rater-like scribbles is made; then
  * engine: `grow_from_scribbles` on the whole image, automatic tolerance, all CMBs
    (validation, intensity scale, growth, refinement, contact resolution included);
  * thesis: Testing/reference_region_growing.auto_grow per CMB - a FIFO breadth-first
    search per tolerance step (0 to 100 % of the intensity range in 1 % steps, as the
    thesis iterates), stopping at the size cap, on the same normalised intensities.
Prints ms per CMB for both and the ratio.  Target: engine <= 5 ms per CMB, >= 20x faster.

    python benchmarks/bench_grow.py [--cmbs 20] [--thesis-cmbs 5]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]

import reference_region_growing as thesis  # noqa: E402
from phantoms import PhantomCMB, make_phantom  # noqa: E402

from CMBLib.geometry import sphere_voxel_count  # noqa: E402
from CMBLib.growing import grow_from_scribbles  # noqa: E402

GRIDS = {
    "clinical T2* 0.86x0.86x4 mm": ((256, 256, 44), (0.86, 0.86, 4.0)),
    "0.5 mm isotropic": ((160, 160, 160), (0.5, 0.5, 0.5)),
}


def phantom(shape, spacing, n, rng):
    extent = np.asarray(shape) * np.asarray(spacing)
    cmbs = []
    while len(cmbs) < n:
        c = rng.uniform(0.15, 0.85, 3) * extent
        if all(np.linalg.norm(c - np.asarray(o.centre_mm)) > 14 for o in cmbs):
            cmbs.append(PhantomCMB(tuple(c), float(rng.uniform(1.0, 4.5)), float(rng.uniform(0.3, 0.7))))
    return make_phantom(cmbs, shape, spacing, noise=0.04, seed=int(rng.integers(1 << 30)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cmbs", type=int, default=20, help="CMBs per phantom (engine)")
    ap.add_argument("--thesis-cmbs", type=int, default=5, help="CMBs timed with the thesis algorithm")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    grow_from_scribbles(*phantom((32, 32, 16), (1.0, 1.0, 2.0), 1, rng)[::2])  # warm-up (imports)
    studies = [(name, spacing) + phantom(shape, spacing, args.cmbs, rng)[::2]
               for name, (shape, spacing) in GRIDS.items()]
    from eval_grow import inserted_cases  # a real brain background, when ../shared/data is there
    for label, vol, _, scr in inserted_cases(rng, 1):
        if label.endswith("/4.0mm"):
            studies.append(("real QSM brain (inverted), inserted CMBs, 0.86x0.86x4 mm", vol.spacing, vol, scr))
    for name, spacing, vol, scr in studies:
        n_cmbs = len(np.unique(scr.array)) - 1
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = grow_from_scribbles(vol, scr)
            best = min(best, time.perf_counter() - t0)
        engine_ms = 1000 * best / n_cmbs
        scale = result.settings["intensity_scale"]
        norm = vol.array.astype(np.float64) / scale
        cap = sphere_voxel_count(10.0, spacing)
        steps = np.arange(0.0, 1.0 + 1e-9, 0.01)
        t0 = time.perf_counter()
        labels = [int(v) for v in np.unique(scr.array) if v][: args.thesis_cmbs]
        for lab in labels:
            seeds = [tuple(v) for v in np.argwhere(scr.array == lab)]
            thesis.auto_grow(norm, seeds, cap, 6, "seed_average", steps)
        thesis_ms = 1000 * (time.perf_counter() - t0) / len(labels)
        print(f"{name}: {vol.array.shape[::-1]} voxels, cap {cap} voxels, {n_cmbs} CMBs")
        print(f"  engine  {engine_ms:8.2f} ms per CMB (whole image, all CMBs, best of {args.repeats})")
        print(f"  thesis  {thesis_ms:8.2f} ms per CMB ({len(labels)} CMBs)")
        print(f"  ratio   {thesis_ms / engine_ms:8.1f}x faster")


if __name__ == "__main__":
    main()
