"""Findings of the bundled model on one scan stored in five voxel orders (same world geometry).

    PYTHONPATH=TREE python benchmarks/check_orientation.py [--threads 2]

Cases: "demo" (CMBLib.synthesis.demo_study.make_demo_study(0)) and "clin" (pseudo-T2* of the
real QSM brain, ../shared/data/real/qsm2016, re-acquired on a 0.86 x 0.86 x 4 mm grid with 5
CMBs inserted; skipped without the data).  Orders: as stored, slices (k) reversed, rows (j)
reversed, i and j swapped, LPS (i and j reversed).  Printed per order: number of findings,
the largest distance (mm) between a finding and the nearest one found as stored, the
findings' maximum probabilities.  Self-contained (no test imports), so PYTHONPATH may point
at an older checkout to compare.
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
    return vol.with_array((np.where(mk, ins.image.array, 0.0) * 1000).astype(np.float32))


def main(argv=None) -> int:
    import torch

    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.synthesis.demo_study import make_demo_study

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("default", device="cpu")
    cases = {"demo": make_demo_study(0)[0]}
    if (QSM / "chi_cosmos.nii.gz").is_file():
        cases["clin"] = clinical_case()
    for name, img in cases.items():
        ref = None
        for order, axes, flips in ORDERS:
            res = detect(stored_as(img, axes, flips), model, device="cpu")
            c = np.array([r["centre_ras"] for r in res.records], float).reshape(-1, 3)
            ref = c if ref is None else ref
            shift = max([float(np.linalg.norm(ref - x, axis=1).min()) for x in c]
                        + [float(np.linalg.norm(c - x, axis=1).min()) for x in ref]) if len(c) and len(ref) else 0.0
            print(f"{name:5s} {order:11s} n={len(res.records)} shift {shift:.3f} mm  "
                  f"p={[r['max_probability'] for r in res.records]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
