"""Findings of the bundled model on one scan stored in five voxel orders (same world geometry),
and on the same head turned or mirrored in-plane (world geometry changed), with and without
test-time augmentation (TTA).

    PYTHONPATH=TREE python benchmarks/check_orientation.py [--threads 2] [--tta flips,d4] [--time-runs 3]

Cases: "demo" (CMBLib.synthesis.demo_study.make_demo_study(0)) and "clin" (pseudo-T2* of the
real QSM brain, ../shared/data/real/qsm2016, re-acquired on a 0.86 x 0.86 x 4 mm grid with 5
CMBs inserted; skipped without the data).  Orders: as stored, slices (k) reversed, rows (j)
reversed, i and j swapped, LPS (i and j reversed).  Printed per order: number of findings,
the largest distance (mm) between a finding and the nearest one found as stored, the
findings' maximum probabilities.

Turns (the head moved inside the same scanner grid: the array turned in-plane, origin and
direction kept, so the anatomy lies elsewhere in the world, as a head turned in the scanner):
turned 180 degrees, mirrored left-right, mirrored front-back, turned 90 degrees.  For each,
with the model's default (0.3.2: each window averaged with its left-right mirror) and each
`--tta` set: number of findings, how many lie within 5 mm of an inserted CMB (TP) and how many
not (FP), the largest distance (mm) between a finding mapped back and the nearest one of the
head as stored with the same setting, and the probabilities.  `--time-runs N`: median
`detect` time of the clinical head as stored per setting (runs interleaved) and its ratio to
the model's default.  Self-contained (no test imports), so PYTHONPATH may point at an older
checkout to compare (the TTA rows then say n/a).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QSM = REPO.parent / "shared" / "data" / "real" / "qsm2016"
ORDERS = [("as stored", (0, 1, 2), (False, False, False)), ("k reversed", (0, 1, 2), (False, False, True)),
          ("j reversed", (0, 1, 2), (False, True, False)), ("i<->j", (1, 0, 2), (False, False, False)),
          ("LPS", (0, 1, 2), (True, True, False))]
TURNS = [("turned 180", "rot180"), ("mirrored L-R", "mirror_i"), ("mirrored A-P", "mirror_j"),
         ("turned 90", "rot90")]
SWAPS = ("rot90", "rot270", "transpose", "antitranspose")


def turn_array(a, name):
    """Array [k, j, i] turned in-plane (as CMBLib.detection.inference.tta_apply)."""
    return {"identity": lambda: a, "rot180": lambda: a[:, ::-1, ::-1], "mirror_i": lambda: a[:, :, ::-1],
            "mirror_j": lambda: a[:, ::-1, :], "rot90": lambda: np.rot90(a, 1, axes=(1, 2)),
            "transpose": lambda: np.swapaxes(a, 1, 2)}[name]()


def turned(volume, name):
    """The head turned in-plane inside the same scanner grid (origin and direction kept)."""
    from CMBLib.geometry import Volume

    sp = volume.spacing
    sp = (sp[1], sp[0], sp[2]) if name in SWAPS else sp
    return Volume(np.ascontiguousarray(turn_array(volume.array, name)), sp, volume.origin, volume.direction)


def mapped_back(volume, name, points):
    """Points (RAS mm) of `turned(volume, name)` -> the same anatomical points in `volume`."""
    tv = turned(volume, name)
    ni, nj = volume.shape_ijk[:2]
    ti, tj = (turn_array(g[None], name)[0] for g in np.meshgrid(np.arange(ni), np.arange(nj)))
    o = np.array([ti[0, 0], tj[0, 0]], float)
    ex, ey = np.array([ti[0, 1], tj[0, 1]], float) - o, np.array([ti[1, 0], tj[1, 0]], float) - o
    out = []
    for p in np.asarray(points, float).reshape(-1, 3):
        ijk = tv.ras_to_voxel(p)
        ij = o + ex * ijk[0] + ey * ijk[1]
        out.append(volume.voxel_to_ras([ij[0], ij[1], ijk[2]]))
    return np.array(out).reshape(-1, 3)


def max_shift(c, ref):
    """Largest distance from a point of one set to the nearest of the other (0 if either is empty)."""
    if not len(c) or not len(ref):
        return 0.0
    return max([float(np.linalg.norm(ref - x, axis=1).min()) for x in c]
               + [float(np.linalg.norm(c - x, axis=1).min()) for x in ref])


def stored_as(volume, axes, flips):
    """The same scan with voxel axis c = old axis axes[c], reversed when flips[c]."""
    from CMBLib.geometry import Volume

    a = np.transpose(volume.array, [2 - axes[2], 2 - axes[1], 2 - axes[0]])
    for c in range(3):
        if flips[c]:
            a = np.flip(a, 2 - c)
    corner = np.zeros(3)
    for c in range(3):
        corner[axes[c]] = volume.shape_ijk[axes[c]] - 1 if flips[c] else 0
    d = np.stack([volume.direction[:, axes[c]] * (-1 if flips[c] else 1) for c in range(3)], axis=1)
    return Volume(np.ascontiguousarray(a), tuple(volume.spacing[x] for x in axes),
                  tuple(volume.voxel_to_ras(corner)), d)


def clinical_case():
    from scipy import ndimage as ndi

    from CMBLib.io import read_volume
    from CMBLib.synthesis.cmb_insertion import insert_cmbs
    from CMBLib.synthesis.label_synthesis import reacquire

    chi = read_volume(QSM / "chi_cosmos.nii.gz")
    m = read_volume(QSM / "msk.nii.gz").array > 0
    img = np.where(m, np.clip(np.exp(-5.0 * np.abs(ndi.gaussian_filter(chi.array, 0.5))), 0.02, None), 0.0)
    vol, mk = reacquire(chi.with_array(img.astype(np.float32)), (0.86, 0.86, 4.0), rng=0, mask=m, tilt_deg=0.0)
    c = vol.kji_to_ras(np.argwhere(mk).mean(axis=0))
    centres = c + np.array([[-25, 10, 0], [22, -15, 4], [-12, -30, -8], [30, 20, 12], [-35, -5, -12]])
    ins = insert_cmbs(vol, centres_ras=centres, rng=1, polarity="dark", radius_mm=(1.6, 1.6), contrast=(0.7, 0.7))
    return vol.with_array((np.where(mk, ins.image.array, 0.0) * 1000).astype(np.float32)), centres


def main(argv=None) -> int:
    import torch

    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.synthesis.demo_study import make_demo_study

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tta", default="flips,d4", help="TTA presets to compare with the model's default, "
                                                      "comma-separated ('' for none)")
    ap.add_argument("--no-orders", action="store_true", help="skip the storage orders (turns only)")
    ap.add_argument("--cases", default="demo,clin", help="demo and/or clin")
    ap.add_argument("--time-runs", type=int, default=0, help="time detect on the clinical head N times per setting")
    ap.add_argument("--time-only", action="store_true", help="only the timing (with --time-runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("default", device="cpu")
    img, _, truth = make_demo_study(0)
    cases = {"demo": (img, truth)}
    if (QSM / "chi_cosmos.nii.gz").is_file() and "clin" in args.cases:
        cases["clin"] = clinical_case()
    cases = {k: v for k, v in cases.items() if k in args.cases.split(",")}
    settings = [None] + [t for t in args.tta.split(",") if t]
    for name, (img, truth) in cases.items():
        ref = None
        for order, axes, flips in [] if args.no_orders or args.time_only else ORDERS:
            res = detect(stored_as(img, axes, flips), model, device="cpu")
            c = np.array([r["centre_ras"] for r in res.records], float).reshape(-1, 3)
            ref = c if ref is None else ref
            print(f"{name:5s} {order:11s} n={len(res.records)} shift {max_shift(c, ref):.3f} mm  "
                  f"p={[r['max_probability'] for r in res.records]}", flush=True)
        for tta in [] if args.time_only else settings:
            ref = None
            for turn, how in [("as stored", "identity")] + TURNS:
                try:
                    res = detect(turned(img, how), model, device="cpu", **({} if tta is None else {"tta": tta}))
                except TypeError:          # an older tree without tta
                    print(f"{name:5s} {tta}: n/a")
                    break
                c = mapped_back(img, how, [r["centre_ras"] for r in res.records])
                ref = c if ref is None else ref
                tp = sum(float(np.linalg.norm(truth - x, axis=1).min()) < 5.0 for x in c)
                print(f"{name:5s} {tta or 'default':8s} {turn:13s} n={len(c)} TP {tp} FP {len(c) - tp} "
                      f"shift {max_shift(c, ref):.2f} mm  p={[r['max_probability'] for r in res.records]}", flush=True)
    if args.time_runs and "clin" in cases:
        import time

        img = cases["clin"][0]
        times = {tta: [] for tta in ["none"] + settings}
        for _ in range(args.time_runs):
            for tta in times:
                t = time.perf_counter()
                detect(img, model, device="cpu", **({} if tta is None else {"tta": tta}))
                times[tta].append(time.perf_counter() - t)
        base = float(np.median(times[None]))
        for tta, ts in times.items():
            print(f"time clin {tta or 'default':8s} median {np.median(ts):.2f} s over {len(ts)} runs "
                  f"({np.median(ts) / base:.2f} x the model's default)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
