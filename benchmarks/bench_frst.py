"""Speed of the fast radial symmetry transform (`CMBLib.detection.frst`) on a 512 x 512 x 40
scan at 0.45 x 0.45 x 3 mm (six radii for 1-5 mm CMBs), against scipy's gaussian_filter
(sigma 1 voxel) of the same float32 volume as the reference, timed the same way in the same
run (median of --repeats).  Target (issue 28): <= 1 s on 2 cores.

    python benchmarks/bench_frst.py --repeats 5
    python benchmarks/bench_frst.py --shape 40,512,512 --spacing 0.86,0.86,4
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats):
    """(median wall s, median CPU s) over `repeats` runs (CPU time: steadier on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
    from scipy import ndimage

    from CMBLib.detection.frst import frst, frst_candidates, radii_pixels
    from CMBLib.geometry import Volume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", default="40,512,512", help="k,j,i")
    ap.add_argument("--spacing", default="0.45,0.45,3", help="i,j,k mm")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = tuple(float(v) for v in args.spacing.split(","))
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.normal(1.0, 0.05, shape).astype(np.float32), (0, 2, 2)) + \
        rng.normal(0, 0.02, shape).astype(np.float32)
    kk, jj, ii = np.ogrid[:shape[0], :shape[1], :shape[2]]
    brain = ((jj - shape[1] / 2) / (0.42 * shape[1])) ** 2 + ((ii - shape[2] / 2) / (0.36 * shape[2])) ** 2 < 1
    brain = np.broadcast_to(brain, shape).copy()
    a[~brain] = 0
    vol = Volume(a, spacing=spacing)
    print(f"volume {shape} (k, j, i) at {spacing} mm, radii {radii_pixels(spacing[1::-1]).tolist()} px")
    ref = timed(lambda: ndimage.gaussian_filter(a, 1.0), args.repeats)
    t_frst = timed(lambda: frst(vol, brain), args.repeats)
    t_cand = timed(lambda: frst_candidates(vol, brain, top_k=100), args.repeats)
    print(f"scipy gaussian_filter sigma 1 (reference): {1000 * ref[0]:.0f} ms wall, {1000 * ref[1]:.0f} ms CPU")
    for name, t in (("frst", t_frst), ("frst_candidates top 100 (frst included)", t_cand)):
        print(f"{name}: {1000 * t[0]:.0f} ms wall ({t[0] / ref[0]:.2f} x the reference), "
              f"{1000 * t[1]:.0f} ms CPU ({t[1] / ref[1]:.2f} x)")
    print(f"target <= 1 s: {'met' if t_frst[0] <= 1.0 else 'NOT met'} here (frst alone, wall; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
