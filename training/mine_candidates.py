"""Mine first-stage candidates (with their second-stage features) for the candidate classifier.

Every case goes through `CMBLib.detection.pipeline.detect` (the one inference path) with a
low threshold and a small minimum size, without a second stage; each candidate is stored
with its features (`CMBLib.detection.second_stage.FEATURE_NAMES`), whether it hits an
inserted CMB (centre within 5 mm of a reference CMB's centre, the VALDO distance) and,
on the domain-randomised cases, the synthetic mimic under it.

Sources (``--sources``), each with disjoint seeds per split:

* ``t2s``   -- pseudo-T2* of the real QSM brain on random clinical grids, 0-8 dark CMBs
  (right hemisphere for train, left for val/test) = `generate_cache` splits ``*_t2s``;
* ``clin``  -- the same real brain as pseudo-T2* on the two clinical grids of the brief
  (0.86 x 0.86 x 4 and 0.5 x 0.5 x 5 mm), half the cases **without** CMBs (every candidate
  is a false positive on real anatomy), half with 1-10 CMBs anywhere in one hemisphere
  (right for train, left for val/test), radius 0.6-2.5 mm (small ones included);
* ``fs``    -- domain-randomised label-map cases with synthetic mimics (and every 4th a real
  QSM case with bright CMBs) = `generate_cache` splits train/val/test.

    python -m training.mine_candidates --split train --n 40 --out training/runs/stage2/train.npz
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from .generate_cache import (
    FS_LABELS,
    QSM,
    QSM_MASK,
    SPLIT_SEED,
    hemisphere,
    magnitude_image,
    native_case,
    pseudo_t2s,
)

CLIN_SEED = {"train": 6_000_000, "val": 7_000_000, "test": 8_000_000}
CLIN_GRIDS = ((0.86, 0.86, 4.0), (0.5, 0.5, 5.0))
MIMIC_NAMES = {0: "none", 1: "vein", 2: "flow_void", 3: "calcification", 4: "cavernoma", 5: "air_bone"}


def clinical_case(chi, msk, split: str, i: int) -> dict:
    """Pseudo-T2* of the real QSM brain on a fixed clinical grid; even i: no CMBs."""
    from scipy import ndimage as ndi

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.label_synthesis import reacquire

    rng = np.random.default_rng(CLIN_SEED[split] + i)
    base = pseudo_t2s(chi, msk, rng)
    sp = CLIN_GRIDS[(i // 2) % len(CLIN_GRIDS)]
    img, mask = reacquire(base, sp, rng, mask=msk)
    n = 0 if i % 2 == 0 else int(rng.integers(1, 11))
    centre_x = img.kji_to_ras(np.argwhere(mask).mean(axis=0))[0]
    allowed = hemisphere(img, ndi.binary_erosion(mask, iterations=1), centre_x, split, margin_mm=1.0)
    centres = sample_centres(allowed, img, n, rng, min_distance_mm=8.0) if n else np.zeros((0, 3))
    ins = insert_cmbs(img, centres_ras=centres, rng=rng, polarity="dark", radius_mm=(0.6, 2.5),
                      contrast=(0.3, 0.95))
    a = magnitude_image(ins.image.array, mask, sp, rng, noise_sd=(0.01, 0.05))
    info = {"source": "clin", "spacing": list(sp), "n_cmbs": len(ins.specs), "polarity": "dark"}
    return {"image": img.with_array(a), "cmb_mask": ins.mask, "polarity": "dark", "info": info,
            "mimic": None, "radii": [float(s.radius_mm) for s in ins.specs]}


def make_case(source: str, split: str, i: int, labels, chi, msk) -> dict:
    if source == "clin":
        return clinical_case(chi, msk, split, i)
    if source == "t2s":
        case = native_case(f"{split}_t2s", i, labels, chi, msk)
        case["mimic"] = None
        return case
    case = native_case(split, i, labels, chi, msk)
    case["mimic"] = None
    if case["info"]["source"] == "fs":  # the same draw again, for its mimic labels
        from CMBLib.synthesis.label_synthesis import synthesize_case

        case["mimic"] = synthesize_case(labels, np.random.default_rng(SPLIT_SEED[split] + i)).mimic_labels
    return case


def reference_centres(cmb_mask) -> np.ndarray:
    from scipy import ndimage as ndi

    a = np.asarray(cmb_mask.array)
    ids = [v for v in np.unique(a) if v]
    if not ids:
        return np.zeros((0, 3))
    com = ndi.center_of_mass(a > 0, a, ids)
    return cmb_mask.kji_to_ras(np.asarray(com))


def mine_case(network, meta, case, threshold=0.3, min_diameter_mm=1.0):
    from CMBLib.detection.pipeline import detect

    seq = "QSM" if case["polarity"] == "bright" else "T2S"
    res = detect(case["image"], model=(network, meta), device="cpu", sequence=seq, threshold=threshold,
                 min_diameter_mm=min_diameter_mm, second_stage=False, keep_model_grid=True)
    recs = res.model_grid.get("records", [])
    feats = res.model_grid.get("features")
    ref = reference_centres(case["cmb_mask"])
    hit = np.full(len(recs), -1, int)
    mimic = np.zeros(len(recs), int)
    for n, r in enumerate(recs):
        if len(ref):
            d = np.linalg.norm(ref - np.asarray(r["centre_ras"]), axis=1)
            if d.min() <= 5.0:
                hit[n] = int(np.argmin(d))
        if case.get("mimic") is not None:
            k, j, i = (int(round(v)) for v in r["centre_ijk"][::-1])
            m = np.asarray(case["mimic"].array)
            box = m[max(0, k - 1):k + 2, max(0, j - 2):j + 3, max(0, i - 2):i + 3]
            mimic[n] = int(box.max()) if box.size else 0
    feats = np.zeros((0, 0), np.float32) if feats is None else feats
    return feats, hit, mimic, recs, len(ref), baseline_counts(res.probability, case["cmb_mask"], meta)


def baseline_counts(probability, cmb_mask, meta) -> list:
    """[tp, fp, fn] of the first stage alone at the model's own threshold and minimum size
    (VALDO rule, 5 mm; `CMBLib.metrics.evaluate_case`), from the same probability map."""
    from CMBLib.detection.candidates import find_candidates
    from CMBLib.metrics import evaluate_case

    lab, _, _ = find_candidates(probability, float(meta["threshold"]), float(meta["min_diameter_mm"]),
                                float(meta.get("max_diameter_mm", 10.0)))
    r = evaluate_case(probability.with_array(lab), cmb_mask, rule="valdo", distance_mm=5.0)
    return [int(r.tp), int(r.fp), int(r.fn)]


def main(argv=None):
    import torch

    from CMBLib.detection.model_io import load_model
    from CMBLib.io import read_volume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="CMBLib/models/cmb-default")
    ap.add_argument("--split", choices=["train", "val", "test"], required=True)
    ap.add_argument("--sources", default="clin,t2s,fs")
    ap.add_argument("--n", type=int, default=20, help="cases per source")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--min-diameter-mm", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="folder: one .npz per case (resumable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    network, meta = load_model(args.model, device="cpu")
    labels = read_volume(FS_LABELS)
    chi = read_volume(QSM)
    msk = read_volume(QSM_MASK).array > 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.start, args.start + args.n):
        for source in args.sources.split(","):
            name = f"{source}_{args.split}_{i:04d}"
            if (out / (name + ".npz")).exists():
                continue
            t = time.time()
            case = make_case(source, args.split, i, labels, chi, msk)
            feats, hit, mimic, recs, n_ref, base = mine_case(network, meta, case, args.threshold, args.min_diameter_mm)
            tmp = out / (name + ".tmp.npz")
            np.savez_compressed(tmp, features=feats, hit=hit, mimic=mimic, n_ref=n_ref,
                                max_probability=np.array([r["max_probability"] for r in recs]),
                                diameter_mm=np.array([r["diameter_mm"] for r in recs]),
                                centre_ras=np.array([r["centre_ras"] for r in recs]).reshape(-1, 3),
                                baseline=np.array(base), model_version=str(meta.get("version")),
                                info=json.dumps(dict(case["info"], source_kind=source)))
            tmp.replace(out / (name + ".npz"))
            print(f"{name} {case['info'].get('spacing')} refs={n_ref} cands={len(recs)} "
                  f"hits={int((hit >= 0).sum())} {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
