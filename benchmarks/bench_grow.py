"""Speed of the mask engine against the thesis's per-voxel algorithm, timed the same way in one run.

1. End to end on clinical cases (3-12 CMBs inserted with CMBLib.synthesis into the real
   pseudo-T2* QSM brain of ../shared/data, or a phantom when it is absent, on a
   0.86 x 0.86 x 4 mm grid; files on disk): read image + scribbles, grow every CMB,
   write the mask.  Engine = `grow_from_scribbles` (what `cmb grow` runs); thesis =
   Testing/reference_region_growing.auto_grow per CMB (a FIFO breadth-first search per
   tolerance step, 0-100 % of the intensity range in 1 % steps, stopping at the size cap)
   on the same normalised intensities.  Both sides: same CMBs, all of them, median of 3.
   Also `cmb grow` as a subprocess, minus the start-up of `python -m CMBLib --version`;
   and the parts: reading, writing, growth alone on images in memory (both sides).
2. In one process on a loaded 512 x 512 x 300 volume: `Grower(image)` once, then the
   cost of each additional CMB (Grower.grow), of `label_map()`, and of `GrownCMB.mask(t)`.

    python benchmarks/bench_grow.py [--repeats 3] [--cases 3] [--only end-to-end|big]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing"), str(ROOT / "benchmarks")]

import reference_region_growing as thesis  # noqa: E402
from phantoms import PhantomCMB, make_phantom  # noqa: E402

from CMBLib.geometry import sphere_voxel_count  # noqa: E402
from CMBLib.growing import Grower, grow_from_scribbles  # noqa: E402
from CMBLib.io import read_volume, write_volume  # noqa: E402


def clinical_cases(n_cases, rng):
    """[(image, scribbles)] with 3-12 CMBs each on a 0.86 x 0.86 x 4 mm grid."""
    from eval_grow import GRIDS, make_cases

    out = []
    for seed in range(n_cases):
        cases = make_cases("qsm_t2s", 9000 + seed, GRIDS.index((0.86, 0.86, 4.0)), 1)
        if not cases:
            break
        _, vol, _, scr = cases[0]
        labels = [int(v) for v in np.unique(scr.array) if v]
        keep = labels[: int(rng.integers(3, 13))]
        out.append((vol, scr.with_array(np.where(np.isin(scr.array, keep), scr.array, 0).astype(np.uint16))))
    if out:
        return out
    for _ in range(n_cases):  # no shared data: phantoms
        n = int(rng.integers(3, 13))
        cmbs = [PhantomCMB(tuple(rng.uniform(20, 200, 3) * (1, 1, 0.7)), float(rng.uniform(1, 3)), 0.6)
                for _ in range(n)]
        vol, _, scr = make_phantom(cmbs, (256, 256, 44), (0.86, 0.86, 4.0), noise=0.03)
        out.append((vol, scr.with_array(scr.array.astype(np.uint16))))
    return out


def median_time(fn, repeats, clock=time.perf_counter):
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(np.median(times))


def thesis_grow(image, scribbles):
    """The thesis algorithm over every scribble label, writing a label map like the engine."""
    from CMBLib.growing.engine import _seed_lists, intensity_scale
    from CMBLib.growing.interactive import _background_value

    arr = np.asarray(image.array)
    norm = arr.astype(np.float64) / intensity_scale(arr, _background_value(arr))
    cap = sphere_voxel_count(10.0, image.spacing)
    steps = np.arange(0.0, 1.0 + 1e-9, 0.01)
    out = np.zeros(arr.shape, np.uint16)
    for lab, kji in _seed_lists(np.asarray(scribbles.array)).items():  # the engine's seed lists: same cost
        seeds = [tuple(v) for v in kji]
        _, region, _ = thesis.auto_grow(norm, seeds, cap, 6, "seed_average", steps)
        idx = np.array(sorted(region))
        out[tuple(idx.T)] = np.where(out[tuple(idx.T)] == 0, lab, out[tuple(idx.T)])
    return image.with_array(out)


def end_to_end(cases, repeats):
    print("1. end to end (read, grow all CMBs, write), median of", repeats)
    ratios, cli_ratios, grow_ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = median_time(lambda: subprocess.run([sys.executable, "-m", "CMBLib", "--version"],
                                                   capture_output=True, check=True), repeats)
        imports = median_time(lambda: subprocess.run(
            [sys.executable, "-c", "import CMBLib.cli.grow, CMBLib.growing, CMBLib.io, CMBLib.nifti"],
            capture_output=True, check=True), repeats)
        print(f"  start-up: `python -m CMBLib --version` {1000 * start:.0f} ms; python + importing what "
              f"`cmb grow` needs (numpy, CMBLib.growing without scipy.ndimage, NIfTI without SimpleITK) "
              f"{1000 * imports:.0f} ms")
        for n, (vol, scr) in enumerate(cases):
            img_path, scr_path = tmp / f"t2s{n}.nii.gz", tmp / f"scr{n}.nii.gz"
            write_volume(vol, img_path)
            write_volume(scr, scr_path)
            n_cmbs = len(np.unique(scr.array)) - 1

            def engine(img_path=img_path, scr_path=scr_path):
                write_volume(grow_from_scribbles(read_volume(img_path), read_volume(scr_path)).labels,
                             tmp / "engine.nii.gz", overwrite=True)

            def reference(img_path=img_path, scr_path=scr_path):
                write_volume(thesis_grow(read_volume(img_path), read_volume(scr_path)), tmp / "thesis.nii.gz",
                             overwrite=True)

            def cli(img_path=img_path, scr_path=scr_path):
                subprocess.run([sys.executable, "-m", "CMBLib", "grow", str(img_path), str(scr_path), "-o",
                                str(tmp / "cli.nii.gz"), "--overwrite", "--quiet"], check=True)

            probe = subprocess.run([sys.executable, "-c", (
                "import sys; from CMBLib.cli import main; "
                f"main(['grow', r'{img_path}', r'{scr_path}', '-o', r'{tmp / 'probe.nii.gz'}', '--overwrite', "
                "'--quiet']); "
                "print(sorted(m for m in ('scipy.ndimage', 'SimpleITK', 'skimage') if m in sys.modules))")],
                capture_output=True, text=True, check=True).stdout.strip()
            t_engine = median_time(engine, repeats)
            t_thesis = median_time(reference, repeats)
            t_cli = median_time(cli, repeats) - start
            t_read = median_time(lambda a=img_path, b=scr_path: (read_volume(a), read_volume(b)), repeats)
            t_write = median_time(lambda s=scr: write_volume(s, tmp / "w.nii.gz", overwrite=True), repeats)
            g_engine = median_time(lambda v=vol, s=scr: grow_from_scribbles(v, s), repeats)
            g_thesis = median_time(lambda v=vol, s=scr: thesis_grow(v, s), repeats)
            ratios.append(t_thesis / t_engine)
            cli_ratios.append(t_thesis / t_cli)
            grow_ratios.append(g_thesis / g_engine)
            print(f"  case {n}: {vol.array.shape[::-1]} voxels, {n_cmbs} CMBs: engine {1000 * t_engine:7.1f} ms, "
                  f"thesis {1000 * t_thesis:8.1f} ms, ratio {t_thesis / t_engine:6.1f}x; `cmb grow` "
                  f"{1000 * t_cli:7.1f} ms after {1000 * start:.0f} ms start-up, ratio {t_thesis / t_cli:6.1f}x")
            print(f"          of which: read image + scribbles {1000 * t_read:.1f} ms, "
                  f"write mask {1000 * t_write:.1f} ms; `cmb grow` imported {probe};"
                  f" growth alone (in memory): engine {1000 * g_engine:.1f} ms, thesis {1000 * g_thesis:.1f} ms, "
                  f"ratio {g_thesis / g_engine:.1f}x")
    print(f"  median ratio: in-process {np.median(ratios):.1f}x, `cmb grow` subprocess {np.median(cli_ratios):.1f}x "
          f"(target >= 20x); growth alone {np.median(grow_ratios):.1f}x")


def big_volume(repeats, rng):
    print("2. one process, loaded 512 x 512 x 300 volume at 0.45 x 0.45 x 0.5 mm, 12 CMBs")
    shape, spacing = (512, 512, 300), (0.45, 0.45, 0.5)
    from CMBLib.geometry import Volume

    big = (1.0 + rng.normal(0, 0.03, shape[::-1])).astype(np.float32)
    scribbles = np.zeros(big.shape, np.uint8)
    patch = 48
    for n in range(12):   # a phantom CMB pasted in at 12 places far apart
        cmb = PhantomCMB((patch * spacing[0] / 2,) * 2 + (patch * spacing[2] / 2,), float(rng.uniform(1.0, 3.0)),
                         float(rng.uniform(0.4, 0.7)))
        small, _, scr = make_phantom([cmb], (patch, patch, patch), spacing, noise=0.03, seed=n)
        k, j, i = 40 + 60 * (n % 4), 60 + 120 * ((n // 4) % 3), 200
        big[k:k + patch, j:j + patch, i:i + patch] = small.array
        scribbles[k:k + patch, j:j + patch, i:i + patch] = np.where(scr.array > 0, n + 1, 0)
    image = Volume(big, spacing)
    seeds = {lab: np.argwhere(scribbles[40 + 60 * ((lab - 1) % 4):][:patch] == lab) + [40 + 60 * ((lab - 1) % 4), 0, 0]
             for lab in range(1, 13)}
    t_init = median_time(lambda: Grower(image), repeats)
    grower = Grower(image)
    per, cpu = [], []
    for lab, s in seeds.items():
        per.append(median_time(lambda lab=lab, s=s: grower.grow(lab, s), repeats))
        cpu.append(median_time(lambda lab=lab, s=s: grower.grow(lab, s), repeats, time.process_time))
    t_map = median_time(grower.label_map, repeats)
    cmb = grower[next(iter(seeds))]
    lo, hi = cmb.tolerance_range()
    tols = np.linspace(lo, hi, 50)
    t_mask = median_time(lambda: [cmb.mask(float(t) + 1e-9 * k) for k, t in enumerate(tols)], 1) / len(tols)
    print(f"  Grower(image) once: {1000 * t_init:.1f} ms; each additional CMB: median "
          f"{1000 * np.median(per):.2f} ms (CPU time {1000 * np.median(cpu):.2f} ms), max {1000 * max(per):.2f} ms "
          "(target <= 5 ms); label_map(): "
          f"{1000 * t_map:.1f} ms; GrownCMB.mask(t) at a new t: {1000 * t_mask:.3f} ms (target <= 1 ms)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--only", choices=("end-to-end", "big"), default=None, help="run one of the two parts")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    grow_from_scribbles(*make_phantom([PhantomCMB((8.0, 8.0, 8.0), 2.0, 0.6)], (16, 16, 8), (1, 1, 2))[::2])
    cases = clinical_cases(args.cases, rng)  # drawn in either case: the big volume's CMBs stay the same
    if args.only != "big":
        end_to_end(cases, args.repeats)
    if args.only != "end-to-end":
        big_volume(args.repeats, rng)


if __name__ == "__main__":
    main()
