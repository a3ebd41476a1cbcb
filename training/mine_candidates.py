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
* ``fs``    -- domain-randomised label-map cases with synthetic mimics = `generate_cache`
  splits train/val/test (its every 4th case, a real QSM case with bright CMBs, is skipped:
  the second stage is for dark CMBs);
* ``fsn``   -- a second real brain: a T2*-like image of the FreeSurfer subject's intensity-
  normalised T1 (``1.6 - norm / 110`` inside the brain, as in benchmarks/eval_grow.py), on the
  two clinical grids, even cases without CMBs, odd ones with 1-10 (right hemisphere for
  train, left for val/test), bias and Rician noise as ``clin``.

Every case file also keeps, per candidate, the model-grid image / probability / brain /
edge-distance crops around it (``crop_*``), so `second_stage.candidate_features` can be
recomputed (`recompute_features`) after a feature change without running the U-Net again,
and per inserted CMB its equivalent diameter on the input grid (``ref_diameter_mm``, the
half-maximum mask) and core radius, for per-size sensitivity.

    python -m training.mine_candidates --split train --n 40 --out training/runs/stage2/train.npz
"""
import argparse
import json
import time
from pathlib import Path
from typing import Optional

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
FSN_SEED = {"train": 9_000_000, "val": 10_000_000, "test": 11_000_000}
FS_NORM = FS_LABELS.parent / "norm.nii.gz"
CROP_MM = 16.0   # half-size of the stored crops (second_stage.BOX_MM plus the 2 mm seed search)
CLIN_GRIDS = ((0.86, 0.86, 4.0), (0.5, 0.5, 5.0))
MIMIC_NAMES = {0: "none", 1: "vein", 2: "flow_void", 3: "calcification", 4: "cavernoma", 5: "air_bone"}


def clinical_case(chi, msk, split: str, i: int) -> dict:
    """Pseudo-T2* of the real QSM brain on a fixed clinical grid; even i: no CMBs."""
    rng = np.random.default_rng(CLIN_SEED[split] + i)
    return _clinical_grid_case("clin", pseudo_t2s(chi, msk, rng), msk, split, i, rng)


def _clinical_grid_case(source: str, base, brain, split: str, i: int, rng, grid=None, n_cmbs=None,
                        radius_mm=(0.6, 2.5)) -> dict:
    """`base` (a real brain as T2*-like image, mask `brain`) on clinical grid (i // 2) of
    CLIN_GRIDS (or `grid`, spacing mm), with 1-10 dark CMBs of core radius `radius_mm` in the
    split's hemisphere for odd i, none for even i (or `n_cmbs` = (low, high) drawn for every i)."""
    from scipy import ndimage as ndi

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.label_synthesis import reacquire

    sp = CLIN_GRIDS[(i // 2) % len(CLIN_GRIDS)] if grid is None else grid
    img, mask = reacquire(base, sp, rng, mask=brain)
    if n_cmbs is None:
        n = 0 if i % 2 == 0 else int(rng.integers(1, 11))
    else:
        n = int(rng.integers(*n_cmbs))
    centre_x = img.kji_to_ras(np.argwhere(mask).mean(axis=0))[0]
    allowed = hemisphere(img, ndi.binary_erosion(mask, iterations=1), centre_x, split, margin_mm=1.0)
    centres = sample_centres(allowed, img, n, rng, min_distance_mm=8.0) if n else np.zeros((0, 3))
    ins = insert_cmbs(img, centres_ras=centres, rng=rng, polarity="dark", radius_mm=radius_mm,
                      contrast=(0.3, 0.95))
    a = magnitude_image(ins.image.array, mask, sp, rng, noise_sd=(0.01, 0.05))
    info = {"source": source, "spacing": list(sp), "n_cmbs": len(ins.specs), "polarity": "dark"}
    return {"image": img.with_array(a), "cmb_mask": ins.mask, "polarity": "dark", "info": info,
            "mimic": None, "radii": [float(s.radius_mm) for s in ins.specs],
            "contrasts": [float(s.contrast) for s in ins.specs]}


def fs_norm_t2s(norm, labels) -> tuple:
    """(T2*-like Volume, brain mask) of the FreeSurfer subject: ``1.6 - norm / 110`` inside
    the brain (CSF bright, grey above white matter), at least 0.05; 0 outside.  The brain is
    the labelled voxels closed by 3 mm and filled, so sulcal CSF (unlabelled in aseg) stays
    bright CSF rather than becoming black holes that no T2* scan has."""
    from scipy import ndimage as ndi

    lab = np.asarray(labels.array) > 0
    brain = ndi.binary_fill_holes(ndi.binary_closing(lab, np.ones((3, 3, 3)), iterations=3) | lab)
    brain &= np.asarray(norm.array) > 0
    arr = np.clip(1.6 - np.asarray(norm.array, np.float32) / 110.0, 0.05, None) * brain
    return norm.with_array(arr.astype(np.float32)), brain


def fs_norm_case(base, brain, split: str, i: int) -> dict:
    """The FreeSurfer subject's T2*-like image on a clinical grid; even i: no CMBs."""
    return _clinical_grid_case("fsn", base, brain, split, i, np.random.default_rng(FSN_SEED[split] + i))


def load_backgrounds(sources) -> tuple:
    """(labels, chi, msk, fsn): the real volumes `make_case` draws on (FreeSurfer label map,
    QSM brain and its mask, the FreeSurfer T2*-like image; fsn only when 'fsn' is a source)."""
    from CMBLib.io import read_volume

    labels = read_volume(FS_LABELS)
    chi = read_volume(QSM)
    msk = read_volume(QSM_MASK).array > 0
    fsn = fs_norm_t2s(read_volume(FS_NORM), labels) if "fsn" in sources else None
    return labels, chi, msk, fsn


def make_case(source: str, split: str, i: int, labels, chi, msk, fsn=None) -> Optional[dict]:
    """Case `i` of `source` in `split` (None: a case this source skips)."""
    if source == "clin":
        return clinical_case(chi, msk, split, i)
    if source == "fsn":
        return fs_norm_case(*fsn, split, i)
    if source == "t2s":
        case = native_case(f"{split}_t2s", i, labels, chi, msk)
        case["mimic"] = None
        return case
    if i % 4 == 1:  # native_case's real QSM case (bright CMBs): no second stage there
        return None
    from CMBLib.synthesis.label_synthesis import synthesize_case

    case = synthesize_case(labels, np.random.default_rng(SPLIT_SEED[split] + i))  # = native_case's draw
    return {"image": case.image, "cmb_mask": case.cmb_mask, "polarity": case.polarity, "info":
            dict(case.info, source="fs"), "mimic": case.mimic_labels,
            "radii": [float(s.radius_mm) for s in case.cmb_specs],
            "contrasts": [float(s.contrast) for s in case.cmb_specs]}


def reference_centres(cmb_mask) -> np.ndarray:
    from scipy import ndimage as ndi

    a = np.asarray(cmb_mask.array)
    ids = [v for v in np.unique(a) if v]
    if not ids:
        return np.zeros((0, 3))
    com = ndi.center_of_mass(a > 0, a, ids)
    return cmb_mask.kji_to_ras(np.asarray(com))


def reference_diameters(cmb_mask) -> np.ndarray:
    """Equivalent diameter (mm) of each inserted CMB's half-maximum mask, in label order."""
    from CMBLib.geometry import equivalent_diameter_mm

    a = np.asarray(cmb_mask.array)
    ids = [v for v in np.unique(a) if v]
    n = np.bincount(a.ravel().astype(np.int64))
    return np.array([equivalent_diameter_mm(n[v] * cmb_mask.voxel_volume_mm3) for v in ids], float)


def candidate_crops(model_grid: dict, recs: list[dict], half_mm: float = CROP_MM) -> dict:
    """Per candidate: the model-grid image / probability / brain / edge distance in a box of
    +-`half_mm` around its centre, padded to one shape, and the box's first voxel (k, j, i).
    `recompute_features` turns them back into `candidate_features` exactly."""
    from scipy import ndimage as ndi

    pre, prob = model_grid["pre"], model_grid["probability"]
    sp = np.asarray(pre.grid.spacing, float)[::-1]
    half = [int(np.ceil(half_mm / s)) for s in sp]
    shape = tuple(2 * h + 1 for h in half)
    edge = ndi.distance_transform_edt(pre.brain_mask, sampling=sp)
    arrays = {"crop_image": np.zeros((len(recs),) + shape, np.float32),
              "crop_prob": np.zeros((len(recs),) + shape, np.float32),
              "crop_brain": np.zeros((len(recs),) + shape, bool),
              "crop_edge": np.zeros((len(recs),) + shape, np.float32),
              "crop_start": np.zeros((len(recs), 3), int), "crop_size": np.zeros((len(recs), 3), int)}
    for n, r in enumerate(recs):
        ijk = pre.grid.ras_to_voxel(r["centre_ras"])
        c = [int(np.clip(round(float(v)), 0, s - 1)) for v, s in zip(ijk[::-1], pre.array.shape)]
        sl = tuple(slice(max(0, q - h), min(s, q + h + 1)) for q, h, s in zip(c, half, pre.array.shape))
        size = tuple(x.stop - x.start for x in sl)
        dst = tuple(slice(0, z) for z in size)
        for key, src in (("crop_image", pre.array), ("crop_prob", prob), ("crop_brain", pre.brain_mask),
                         ("crop_edge", edge)):
            arrays[key][n][dst] = src[sl]
        arrays["crop_start"][n] = [x.start for x in sl]
        arrays["crop_size"][n] = size
    arrays["grid_spacing"] = np.asarray(pre.grid.spacing, float)
    arrays["grid_origin"] = np.asarray(pre.grid.origin, float)
    arrays["grid_direction"] = np.asarray(pre.grid.direction, float)
    return arrays


def recompute_features(d, records: Optional[list] = None) -> np.ndarray:
    """`candidate_features` of a mined case's candidates from its stored crops (`d`: the
    loaded .npz), with the current feature code."""
    from CMBLib.detection.second_stage import FEATURE_NAMES, candidate_features
    from CMBLib.geometry import Volume

    n = len(d["hit"])
    out = np.zeros((n, len(FEATURE_NAMES)), np.float32)
    for m in range(n):
        size = tuple(int(v) for v in d["crop_size"][m])
        sl = tuple(slice(0, z) for z in size)
        start = d["crop_start"][m]
        base = Volume(np.zeros(1), tuple(d["grid_spacing"]), tuple(d["grid_origin"]), d["grid_direction"])
        origin = base.kji_to_ras(start)
        grid = Volume(np.zeros(size, np.float32), base.spacing, tuple(origin), base.direction)
        rec = {k: float(d[f"rec_{k}"][m]) for k in REC_KEYS}
        rec["centre_ras"] = d["centre_ras"][m]
        out[m] = candidate_features(d["crop_image"][m][sl], d["crop_prob"][m][sl], d["crop_brain"][m][sl], grid,
                                    [rec], edge_mm=d["crop_edge"][m][sl])[0]
    return out


REC_KEYS = ("max_probability", "mean_probability", "volume_mm3", "elongation")


def mine_case(network, meta, case, threshold=0.3, min_diameter_mm=1.0):
    from CMBLib.detection.pipeline import detect
    from CMBLib.metrics import match_points

    seq = "QSM" if case["polarity"] == "bright" else "T2S"
    res = detect(case["image"], model=(network, meta), device="cpu", sequence=seq, threshold=threshold,
                 min_diameter_mm=min_diameter_mm, second_stage=False, keep_model_grid=True)
    recs = res.model_grid.get("records", [])
    feats = res.model_grid.get("features")
    ref = reference_centres(case["cmb_mask"])
    hit = np.full(len(recs), -1, int)       # the CMB a candidate lies on (duplicates too), else -1
    for n, r in match_points([r["centre_ras"] for r in recs], ref, rule="valdo", distance_mm=5.0).assigned:
        hit[n] = r
    mimic = np.zeros(len(recs), int)
    for n, r in enumerate(recs):
        if case.get("mimic") is not None:
            k, j, i = (int(round(v)) for v in r["centre_ijk"][::-1])
            m = np.asarray(case["mimic"].array)
            box = m[max(0, k - 1):k + 2, max(0, j - 2):j + 3, max(0, i - 2):i + 3]
            mimic[n] = int(box.max()) if box.size else 0
    feats = np.zeros((0, 0), np.float32) if feats is None else feats
    extra = candidate_crops(res.model_grid, recs) if recs else {}
    extra.update({f"rec_{k}": np.array([float(r.get(k, 0.0)) for r in recs]) for k in REC_KEYS})
    extra["ref_diameter_mm"] = reference_diameters(case["cmb_mask"])
    extra["ref_radius_mm"] = np.asarray(case.get("radii") or [], float)
    extra["ref_contrast"] = np.asarray(case.get("contrasts") or [], float)
    extra["ref_centre_ras"] = ref.reshape(-1, 3)
    return feats, hit, mimic, recs, len(ref), baseline_counts(res.probability, case["cmb_mask"], meta), extra


def baseline_counts(probability, cmb_mask, meta) -> list:
    """[tp, fp, fn] of the first stage alone at its stand-alone cut-offs (`without_second_stage`
    in model.json, else its own threshold and minimum size; VALDO rule, 5 mm;
    `CMBLib.metrics.evaluate_case`), from the same probability map."""
    from CMBLib.detection.candidates import find_candidates
    from CMBLib.metrics import evaluate_case

    meta = dict(meta, **meta.get("without_second_stage", {}))
    lab, _, _ = find_candidates(probability, float(meta["threshold"]), float(meta["min_diameter_mm"]),
                                float(meta.get("max_diameter_mm", 10.0)))
    r = evaluate_case(probability.with_array(lab), cmb_mask, rule="valdo", distance_mm=5.0)
    return [int(r.tp), int(r.fp), int(r.fn)]


def main(argv=None):
    import torch

    from CMBLib.detection.model_io import load_model

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
    labels, chi, msk, fsn = load_backgrounds(args.sources.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.start, args.start + args.n):
        for source in args.sources.split(","):
            name = f"{source}_{args.split}_{i:04d}"
            if (out / (name + ".npz")).exists():
                continue
            t = time.time()
            case = make_case(source, args.split, i, labels, chi, msk, fsn)
            if case is None:
                continue
            feats, hit, mimic, recs, n_ref, base, extra = mine_case(network, meta, case, args.threshold,
                                                                    args.min_diameter_mm)
            tmp = out / (name + ".tmp.npz")
            np.savez_compressed(tmp, features=feats, hit=hit, mimic=mimic, n_ref=n_ref,
                                max_probability=np.array([r["max_probability"] for r in recs]),
                                diameter_mm=np.array([r["diameter_mm"] for r in recs]),
                                centre_ras=np.array([r["centre_ras"] for r in recs]).reshape(-1, 3),
                                baseline=np.array(base), model_version=str(meta.get("version")),
                                baseline_settings=np.array([meta.get("without_second_stage", meta)[k] for k in
                                                            ("threshold", "min_diameter_mm")], float),
                                info=json.dumps(dict(case["info"], source_kind=source)), **extra)
            tmp.replace(out / (name + ".npz"))
            print(f"{name} {case['info'].get('spacing')} refs={n_ref} cands={len(recs)} "
                  f"hits={int((hit >= 0).sum())} {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
