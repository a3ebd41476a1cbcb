"""Which inserted CMBs does the first stage miss on the real brains?  Per size, contrast,
distance to the brain's edge and slice thickness, from mined candidates.

Reads the ``clin`` and ``fsn`` cases (the QSM brain and the FreeSurfer subject as T2*-like
images on 0.86 x 0.86 x 4 and 0.5 x 0.5 x 5 mm grids) of the given splits in the
`training.mine_candidates` folder; a CMB counts as found when a first-stage candidate at the
mining cut-offs (0.3, >= 1 mm) has its centre within 5 mm.  The edge distance is measured
in the brain mask of the 1 mm source image.

    python -m training.missed_cmbs --mined training/runs/stage2/mined --splits val,test
"""
import argparse
import glob
import json

import numpy as np

BINS = {"equivalent diameter (mm)": (1, (0, 3, 4, 5, 6, 20)), "peak contrast": (2, (0, 0.5, 0.7, 1.01)),
        "distance to the brain edge (mm)": (3, (-2, 5, 10, 20, 100)), "slice thickness (mm)": (0, (0, 4.5, 6))}


def cmb_rows(mined: str, splits) -> np.ndarray:
    """(slice mm, diameter mm, contrast, edge mm, found) per inserted CMB of the clin / fsn cases."""
    from scipy import ndimage as ndi

    from CMBLib.io import read_volume

    from .generate_cache import FS_LABELS, QSM_MASK
    from .mine_candidates import FS_NORM, fs_norm_t2s

    msk = read_volume(QSM_MASK)
    base, brain = fs_norm_t2s(read_volume(FS_NORM), read_volume(FS_LABELS))
    edges = {"clin": (msk, ndi.distance_transform_edt(msk.array > 0, sampling=msk.spacing[::-1])),
             "fsn": (base, ndi.distance_transform_edt(brain, sampling=base.spacing[::-1]))}
    rows = []
    for split in splits:
        for f in sorted(glob.glob(f"{mined}/*_{split}_*.npz")):
            d = np.load(f)
            info = json.loads(str(d["info"]))
            if info.get("source_kind") not in edges or int(d["n_ref"]) == 0 or "ref_contrast" not in d.files:
                continue
            vol, edt = edges[info["source_kind"]]
            hits = {int(h) for h in d["hit"] if h >= 0}
            for r, (c, dia, con) in enumerate(zip(d["ref_centre_ras"], d["ref_diameter_mm"], d["ref_contrast"])):
                kji = np.round(vol.ras_to_voxel(c)[::-1]).astype(int)
                inside = all(0 <= a < s for a, s in zip(kji, edt.shape))
                rows.append((info["spacing"][2], dia, con, float(edt[tuple(kji)]) if inside else -1.0, r in hits))
    return np.array(rows, float).reshape(-1, 5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mined", default="training/runs/stage2/mined")
    ap.add_argument("--splits", default="val,test")
    args = ap.parse_args(argv)
    rows = cmb_rows(args.mined, args.splits.split(","))
    print(f"{len(rows)} inserted CMBs on the real brains; found {int(rows[:, 4].sum())}")
    for name, (col, edges) in BINS.items():
        print(f"\n| {name} | found / CMBs |\n|---|---|")
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (rows[:, col] >= lo) & (rows[:, col] < hi)
            if m.any():
                print(f"| {lo:g}-{hi:g} | {int(rows[m, 4].sum())} / {int(m.sum())} |")
    clear = (rows[:, 1] >= 5) & (rows[:, 2] >= 0.5)
    print(f"\n>= 5 mm and contrast >= 0.5: {int(rows[clear, 4].sum())} / {int(clear.sum())}")


if __name__ == "__main__":
    main()
