"""Side by side (issue 28): the 3D U-Net's default path, the native patch stage (dark-spot
candidates + 2.5D patch network at the scan's own resolution) and their union, by CMB size.

Per case: `detect` as cmb-default runs it (its cut-offs, location filter) gives the U-Net's
findings; the native stage (`CMBLib.detection.native_stage.score`, on the same brain mask) gives
every dark-spot candidate a probability; for each native threshold the native findings alone
and the union (a native finding farther than 5 mm from every U-Net finding is added) are
counted with the VALDO rule (`match_points`, centres < 5 mm), sensitivity per size class of
the inserted CMB (equivalent diameter of its half-maximum mask: < 3, 3-4, 4-5, >= 5 mm).

Leave one brain out: the project's real backgrounds are two brains (``qsm``: the QSM
challenge brain as pseudo-T2*, sources clin / t2s / clin_small; ``fs``: the FreeSurfer
subject, sources fsn / fs / fsn_small).  ``--lobo DIR_NO_QSM,DIR_NO_FS`` scores each case with
the network that never saw its brain (the honest figure for false positives on real anatomy);
``--net DIR`` scores every case with one network.

    python benchmarks/froc_native_stage.py --split val --n 8 --lobo training/runs/patch/no_qsm,training/runs/patch/no_fs
    python benchmarks/froc_native_stage.py --split val --n 8 --net CMBLib/models/cmb-default

The U-Net's findings and brain masks are cached per case (``--cache``), so other networks can
be compared without running the U-Net again.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
SIZE_NAMES = ("< 3", "3-4", "4-5", ">= 5")


def unet_case(case, cache: Path, key: str):
    """(U-Net finding centres (N, 3) RAS mm, brain mask on the input grid), cached."""
    f = cache / f"{key}.npz"
    if f.is_file():
        d = np.load(f)
        return d["pts"], np.unpackbits(d["brain"])[:int(np.prod(d["shape"]))].reshape(d["shape"]).astype(bool), \
            float(d["seconds"])
    from CMBLib.detection.pipeline import detect

    t = time.perf_counter()
    res = detect(case["image"], "default", device="cpu", sequence="T2S", keep_model_grid=True)
    sec = time.perf_counter() - t
    pre = res.model_grid["pre"]
    brain = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0
    pts = np.array([r["centre_ras"] for r in res.records], float).reshape(-1, 3)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, pts=pts, brain=np.packbits(brain), shape=np.array(brain.shape), seconds=sec)
    return pts, brain, sec


def union(unet_pts, native_pts, merge_mm=5.0):
    out = [p for p in unet_pts]
    for p in native_pts:
        if not out or np.min(np.linalg.norm(np.array(out) - p, axis=1)) >= merge_mm:
            out.append(p)
    return np.array(out, float).reshape(-1, 3)


def counts(pts, ref, bins) -> list:
    """[tp, fp, fn, found per size bin...]"""
    from CMBLib.metrics import match_points

    m = match_points(pts, ref, rule="valdo", distance_mm=5.0)
    hit = {r for _, r in m.pairs}
    return [m.tp, m.fp, m.fn] + [sum(1 for j in hit if bins[j] == b) for b in range(len(SIZE_NAMES))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=8, help="cases per source")
    ap.add_argument("--sources", default="clin,fsn,t2s,fs,clin_small,fsn_small")
    ap.add_argument("--net", default=None, help="one patch-network folder for every case")
    ap.add_argument("--lobo", default=None, help="NO_QSM_DIR,NO_FS_DIR: each case scored by the net without its brain")
    ap.add_argument("--cache", default="training/runs/patch/unet_cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON with every case's rows")
    args = ap.parse_args(argv)
    import torch
    from froc_default_path import size_bin

    from CMBLib.detection.native_stage import score
    from CMBLib.detection.patch_net import load_patch_net
    from training.mine_candidates import load_backgrounds, reference_centres, reference_diameters
    from training.train_patch_net import BRAIN_OF, get_case

    torch.set_num_threads(args.threads)
    if args.lobo:
        a, b = args.lobo.split(",")
        nets = {"qsm": load_patch_net(a)[0], "fs": load_patch_net(b)[0]}
    elif args.net:
        one = load_patch_net(args.net)[0]
        nets = {"qsm": one, "fs": one}
    else:                      # no network: only fill the U-Net cache
        nets = None
    sources = args.sources.split(",")
    backgrounds = load_backgrounds([s.replace("_small", "") for s in sources] + ["fsn"])
    cache = Path(args.cache) / args.split
    rows, inserted = [], np.zeros(len(SIZE_NAMES), int)
    for i in range(args.n):
        for source in sources:
            case = get_case(source, args.split, i, backgrounds)
            if case is None or case["polarity"] != "dark":
                continue
            unet_pts, brain, unet_sec = unet_case(case, cache, f"{source}_{i}")
            if nets is None:
                print(f"{source}_{i}: U-Net {len(unet_pts)} findings, {unet_sec:.1f}s", flush=True)
                continue
            t = time.perf_counter()
            cands, p, _ = score(case["image"], brain, nets[BRAIN_OF[source]])
            native_sec = time.perf_counter() - t
            cpts = np.array([c["centre_ras"] for c in cands], float).reshape(-1, 3)
            ref = reference_centres(case["cmb_mask"])
            bins = [size_bin(d) for d in reference_diameters(case["cmb_mask"])]
            ins = [bins.count(b) for b in range(len(SIZE_NAMES))]
            inserted += ins
            row = {"case": f"{source}_{i}", "source": source, "inserted": ins, "unet": counts(unet_pts, ref, bins),
                   "unet_seconds": unet_sec, "native_seconds": native_sec, "candidates": len(cands),
                   "native": {}, "union": {}}
            for thr in THRESHOLDS:
                npts = cpts[p >= thr]
                row["native"][thr] = counts(npts, ref, bins)
                row["union"][thr] = counts(union(unet_pts, npts), ref, bins)
            rows.append(row)
            print(f"{row['case']}: ins {ins} unet {row['unet']} union@0.95 {row['union'][0.95]} "
                  f"native {native_sec:.1f}s ({len(cands)} candidates)", flush=True)
    if rows:
        report(rows, inserted)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


def _line(name, v, n, inserted):
    tp, fp, fn = v[:3]
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    sizes = " | ".join(f"{a}/{b}" for a, b in zip(v[3:], inserted))
    return f"| {name} | {tp} | {fp} | {fn} | {f1:.3f} | {fp / max(n, 1):.2f} | {sizes} |"


def report(rows, inserted):
    n = len(rows)
    print(f"\n{n} cases, {int(inserted.sum())} CMBs")
    print("| detector | TP | FP | FN | F1 | FP/scan | " + " | ".join(f"{s} mm" for s in SIZE_NAMES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(SIZE_NAMES))
    tot = np.sum([r["unet"] for r in rows], axis=0)
    print(_line("U-Net (cmb-default path)", tot, n, inserted))
    for what in ("native", "union"):
        for thr in THRESHOLDS:
            tot = np.sum([r[what][thr] for r in rows], axis=0)
            print(_line(f"{what} >= {thr:g}", tot, n, inserted))
    print(f"seconds per scan, native stage: median {np.median([r['native_seconds'] for r in rows]):.2f}; "
          f"U-Net path (when run, not cached): median {np.median([r['unet_seconds'] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
