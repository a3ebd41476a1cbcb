"""Which inserted CMBs does the first stage miss on the real brains?  Per size, contrast,
distance to the brain's edge and slice thickness, from mined candidates.

Reads the ``clin`` and ``fsn`` cases (the QSM brain and the FreeSurfer subject as T2*-like
images on 0.86 x 0.86 x 4 and 0.5 x 0.5 x 5 mm grids) of the given splits in the
`training.mine_candidates` folder; a CMB counts as found when a first-stage candidate at the
mining cut-offs (0.3, >= 1 mm) has its centre within 5 mm.  The edge distance is measured
in the brain mask of the 1 mm source image.

    python -m training.missed_cmbs --mined training/runs/stage2/mined --splits val,test
    python -m training.missed_cmbs --visible --splits val [--model FOLDER]

``--visible`` regenerates the cases and measures, per inserted CMB, the dip a reader sees on
the native grid (1 - darkest voxel of its mask / median of the brain 3-6 mm around it) and the
highest U-Net probability on its mask (the model's own flip-averaged map, as `cmb detect`).
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


def visible_rows(split: str, n: int, sources, model, backgrounds) -> np.ndarray:
    """(diameter mm, visible dip, max probability, slice mm) per inserted CMB of `sources`;
    backgrounds: `mine_candidates.load_backgrounds(sources)`."""
    from scipy import ndimage as ndi

    from CMBLib.detection.pipeline import detect

    from .mine_candidates import make_case, reference_diameters

    labels, chi, msk, fsn = backgrounds
    rows = []
    for i in range(n):
        for source in sources:
            case = make_case(source, split, i, labels, chi, msk, fsn)
            if case is None or case["polarity"] != "dark" or not np.asarray(case["cmb_mask"].array).any():
                continue
            res = detect(case["image"], model, device="cpu", sequence="T2S", second_stage=False,
                         location_filter=False)
            img, prob = np.asarray(case["image"].array, float), np.asarray(res.probability.array)
            lab = np.asarray(case["cmb_mask"].array)
            sp = np.asarray(case["image"].spacing, float)[::-1]
            any_cmb = ndi.binary_dilation(lab > 0, iterations=1)
            for v, dia in zip([v for v in np.unique(lab) if v], reference_diameters(case["cmb_mask"])):
                m = lab == v
                dist = ndi.distance_transform_edt(~m, sampling=sp)
                shell = (dist >= 3) & (dist <= 6) & ~any_cmb & (img > 0)
                bg = float(np.median(img[shell])) if shell.any() else np.nan
                dip = 1 - float(img[m].min()) / bg if bg > 0 else np.nan
                rows.append((dia, dip, float(prob[ndi.binary_dilation(m)].max()), sp[0]))
        print(f"case {i}: {len(rows)} CMBs so far", flush=True)
    return np.array(rows, float).reshape(-1, 4)


def print_visible(rows: np.ndarray, threshold: float = 0.7):
    print(f"{len(rows)} CMBs; max probability >= {threshold} on {int((rows[:, 2] >= threshold).sum())}")
    print(f"\n| diameter mm | visible dip | CMBs | max prob >= {threshold} | median max prob |\n|---|---|---|---|---|")
    for dlo, dhi in ((0, 3), (3, 4), (4, 5), (5, 20)):
        for clo, chi in ((0, 0.15), (0.15, 0.3), (0.3, 2)):
            m = (rows[:, 0] >= dlo) & (rows[:, 0] < dhi) & (rows[:, 1] >= clo) & (rows[:, 1] < chi)
            if m.any():
                print(f"| {dlo:g}-{dhi:g} | {clo:g}-{chi:g} | {int(m.sum())} | {int((rows[m, 2] >= threshold).sum())} "
                      f"| {np.median(rows[m, 2]):.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mined", default="training/runs/stage2/mined")
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--visible", action="store_true", help="measure visible dips on regenerated cases")
    ap.add_argument("--n", type=int, default=12, help="--visible: cases per source")
    ap.add_argument("--sources", default="clin,fsn,t2s", help="--visible: mine_candidates sources")
    ap.add_argument("--model", default="default", help="--visible: a model folder")
    ap.add_argument("--out", help="--visible: save the rows (.npy)")
    args = ap.parse_args(argv)
    if args.visible:
        from CMBLib.detection.model_io import load_model

        from .mine_candidates import load_backgrounds

        sources = args.sources.split(",")
        model, backgrounds = load_model(args.model, device="cpu"), load_backgrounds(sources)
        rows = np.concatenate([visible_rows(s, args.n, sources, model, backgrounds) for s in args.splits.split(",")])
        if args.out:
            np.save(args.out, rows)
        print_visible(rows)
        return
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
