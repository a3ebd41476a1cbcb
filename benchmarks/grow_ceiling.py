"""How close can any half-depth threshold come to the truth?  The engine against oracles.

The truth of benchmarks/eval_grow.py is the CMB's own attenuation a(x) >= half its peak,
while the image is background(x) x (1 - a(x)) + noise.  A grower sees only the image, so
it must estimate the background under the CMB.  Per CMB this prints the Dice of:

  engine        `grow_from_scribbles` with its defaults (what `cmb grow` runs);
  exact_bg      the oracle that knows the background exactly: 1 - image / background,
                thresholded at half its deepest value next to the scribble, the part
                connected to that voxel (only the noise is left to err);
  bg_1mm / 2mm  the same with the background known only at scales >= 1 or 2 mm (the exact
                background under a Gaussian of that sigma): the texture under the CMB that
                no estimate from its surroundings can see.

    python benchmarks/grow_ceiling.py --set tuning
    python benchmarks/grow_ceiling.py --set heldout --seed 8100
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import eval_grow  # noqa: E402


def oracle_mask(image, background, dark, scribble):
    """The half-depth region of 1 - image / background (dark) that holds the deepest voxel at
    or next to the scribble."""
    from scipy import ndimage

    safe = np.where(np.abs(background) > 0, background, 1.0)
    depth = (1.0 - image / safe) if dark else (image / safe - 1.0)
    depth = np.where(np.abs(background) > 0, depth, 0.0)
    near = ndimage.binary_dilation(scribble, structure=np.ones((1, 3, 3), bool))
    peak = np.unravel_index(int(np.argmax(np.where(near, depth, -np.inf))), depth.shape)
    labels, _ = ndimage.label(depth >= 0.5 * depth[peak])
    return labels == labels[peak]


def main():
    from scipy import ndimage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(eval_grow.SETS), default="tuning")
    ap.add_argument("--seed", type=int, default=None, help="draw the set's backgrounds with this seed instead")
    args = ap.parse_args()
    sets = eval_grow.SETS[args.set]
    if args.seed is not None:
        sets = [(name, args.seed) for name, _ in sets]
    rows = []
    for name, seed in sets:
        for g in range(len(eval_grow.GRIDS)):
            for group, vol, truth, scr, ref, polarity in eval_grow.make_cases(name, seed, g, 1, keep_background=True):
                found = np.asarray(eval_grow.grow_from_scribbles(vol, scr).labels.array)
                image, t, s = np.asarray(vol.array, np.float64), np.asarray(truth.array), np.asarray(scr.array)
                sigma = [1.0 / np.asarray(vol.spacing[::-1]), 2.0 / np.asarray(vol.spacing[::-1])]
                smooth = [ndimage.gaussian_filter(ref, sg, mode="nearest") for sg in sigma]
                for lab in [int(v) for v in np.unique(s) if v]:
                    q = t == lab
                    dark = polarity == "dark"
                    rows.append((group, eval_grow.dice(found == lab, q),
                                 eval_grow.dice(oracle_mask(image, ref, dark, s == lab), q),
                                 *[eval_grow.dice(oracle_mask(image, b, dark, s == lab), q) for b in smooth]))
    names = ["engine", "exact_bg", "bg_1mm", "bg_2mm"]
    print(f"{args.set}{'' if args.seed is None else f' seed {args.seed}'}: {len(rows)} CMBs; "
          "Dice mean / median / p10 / number below 0.5")
    groups = sorted({r[0].split('/')[0] for r in rows})
    print(f"  {'background':<10} {'n':>4} " + " ".join(f"{n:>25}" for n in names))
    for grp in groups + ["ALL"]:
        sel = np.array([r[1:] for r in rows if grp == "ALL" or r[0].startswith(grp + "/")])
        cells = [f"{c.mean():.3f} / {np.median(c):.3f} / {np.percentile(c, 10):.3f} / {int((c < 0.5).sum()):>2}"
                 for c in sel.T]
        print(f"  {grp:<10} {len(sel):>4} " + " ".join(f"{c:>25}" for c in cells))


if __name__ == "__main__":
    main()
