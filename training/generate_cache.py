"""Pre-generate a cache of training / validation / test volumes on the model grid.

Each case is one ``.npz`` (float16 image, uint8 CMB instance labels, bool brain mask,
uint8 mimic types) already preprocessed exactly as at inference
(`CMBLib.detection.preprocess.preprocess`), plus a ``.json`` with its provenance.

Sources (``--sources``):

* ``fs``  -- domain-randomised images from a FreeSurfer label map (random deformation,
  T2*/SWI/random contrasts, clinical grids, mimics, CMBs);
* ``qsm`` -- the real QSM brain (`chi_cosmos.nii.gz` + `msk.nii.gz`), re-acquired on a
  random clinical grid, CMBs inserted (bright), preprocessed with polarity "bright".
  CMBs go in the right hemisphere for ``train`` and the left one for ``val``/``test``,
  so evaluation never sees a CMB position used for training (the veins are shared).

Usage::

    python -m training.generate_cache --out training/runs/cache --n-train 300 --n-val 12 --n-test 16
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from CMBLib.detection.preprocess import preprocess, resample_to
from CMBLib.geometry import Volume
from CMBLib.io import read_volume
from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
from CMBLib.synthesis.label_synthesis import random_clinical_spacing, reacquire, synthesize_case
from CMBLib.synthesis.mimics import add_mimics

# ../shared/data next to the repository, or $CMB_SHARED_DATA (as the tests and README use it)
DATA = Path(os.environ.get("CMB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "real"
FS_LABELS = DATA / "freesurfer_subject" / "aparc.a2009s+aseg.nii.gz"
QSM = DATA / "qsm2016" / "chi_cosmos.nii.gz"
QSM_MASK = DATA / "qsm2016" / "msk.nii.gz"
SPLIT_SEED = {"train": 0, "val": 1_000_000, "test": 2_000_000,
              "train_t2s": 3_000_000, "val_t2s": 4_000_000, "test_t2s": 5_000_000}


def to_model_grid(image: Volume, polarity: str, specs, mimic_labels, spacing, brain_mask=None, options=None):
    """Preprocess (`options`: `preprocess`'s brain_extraction / outside) and render the CMB
    labels on the model grid; returns a dict of arrays."""
    pre = preprocess(image, spacing, polarity, brain_mask=brain_mask, **(options or {}))
    zero = pre.grid.with_array(np.zeros(pre.array.shape, np.float32))
    cmb = insert_cmbs(zero, specs=specs, polarity="dark").mask.array if specs else np.zeros(pre.array.shape, np.uint16)
    mim = np.zeros(pre.array.shape, np.uint8)
    if mimic_labels is not None:
        mim = resample_to(mimic_labels, pre.grid, pre.grid.shape_ijk, order=0).astype(np.uint8)
    return pre, {"image": pre.array.astype(np.float16), "cmb": cmb.astype(np.uint8),
                 "brain": pre.brain_mask, "mimic": mim}


def qsm_native(chi: Volume, msk: np.ndarray, rng, split: str, with_cmbs=True):
    """Real QSM brain on a random clinical grid with bright CMBs in one hemisphere.

    Returns (image, cmb instance mask, brain mask array, CMB specs, mimic labels or None, info)
    on the clinical grid.
    """
    from scipy import ndimage as ndi

    sp = random_clinical_spacing(rng)
    img, mask = reacquire(chi, sp, rng, mask=msk)
    centre_x = img.kji_to_ras(np.argwhere(mask).mean(axis=0))[0]
    allowed = hemisphere(img, ndi.binary_erosion(mask, iterations=2), centre_x, split, margin_mm=3.0)
    specs = []
    res_img = img
    cmb_mask = img.with_array(np.zeros(img.array.shape, np.uint16))
    if with_cmbs:
        n = int(rng.integers(1, 9))
        centres = sample_centres(allowed, img, n, rng, min_distance_mm=8.0)
        ins = insert_cmbs(img, centres_ras=centres, rng=rng, brain_mask=mask, polarity="bright",
                          radius_mm=(1.0, 2.5), contrast=(0.8, 3.0))
        res_img, specs, cmb_mask = ins.image, ins.specs, ins.mask
    mim = None
    if split == "train" and rng.random() < 0.5:  # synthetic calcification / flow voids on top
        m = add_mimics(res_img, hemisphere(img, mask, centre_x, split), rng, polarity="bright",
                       n_veins=2, n_flow_voids=3, calcification=True, air_bone=False, contrast=(0.8, 2.5))
        res_img, mim = m.image, m.labels
    a = res_img.array
    noise = rng.uniform(0, 0.01)
    a = a + rng.normal(0, noise, a.shape).astype(np.float32) * mask
    res_img = res_img.with_array(a.astype(np.float32))
    info = {"source": "qsm", "spacing": list(sp), "n_cmbs": len(specs), "polarity": "bright",
            "hemisphere": "right" if split == "train" else "left"}
    return res_img, cmb_mask, mask, specs, mim, info


def qsm_case(chi: Volume, msk: np.ndarray, rng, split: str, spacing_model, with_cmbs=True):
    """`qsm_native` preprocessed onto the model grid: (pre, arrays, info, specs)."""
    res_img, _, mask, specs, mim, info = qsm_native(chi, msk, rng, split, with_cmbs)
    pre, arrays = to_model_grid(res_img, "bright", specs, mim, spacing_model, brain_mask=mask)
    return pre, arrays, info, specs


def magnitude_image(array, mask, spacing_ijk, rng, noise_sd=(0.01, 0.06)):
    """A magnitude image as a scanner gives it: `array` times a smooth bias field, Rician noise
    of a random level in `noise_sd` (fraction of the signal), 0 outside `mask`, scaled x1000."""
    from CMBLib.synthesis.label_synthesis import smooth_field

    a = array * smooth_field(array.shape, np.asarray(spacing_ijk)[::-1], rng, rng.uniform(60, 140),
                             rng.uniform(0, 0.3))
    sd = rng.uniform(*noise_sd)
    n1, n2 = rng.normal(0, sd, (2,) + a.shape).astype(np.float32)
    return np.where(mask, np.sqrt((a + n1) ** 2 + n2 ** 2), 0.0).astype(np.float32) * 1000


def pseudo_t2s(chi: Volume, msk: np.ndarray, rng) -> Volume:
    """A T2*-magnitude-like image of the real QSM brain: signal ``exp(-c |chi|)``.

    Paramagnetic veins and iron-rich deep grey matter and diamagnetic calcium all shorten
    T2*, so they turn dark as on a GRE magnitude image; white matter (slightly
    diamagnetic) ends up darker than grey matter.  Outside the mask: 0 (skull-stripped).
    """
    from scipy import ndimage as ndi

    c = rng.uniform(3.0, 7.0)                            # 1/ppm
    chi_s = ndi.gaussian_filter(np.asarray(chi.array, np.float32), rng.uniform(0.3, 0.8))  # blooming
    img = np.exp(-c * np.abs(chi_s)) * (1 - 0.25 * np.clip(-chi_s, 0, None) / 0.05)
    img = np.where(msk, np.clip(img, 0.02, None), 0.0).astype(np.float32)
    return chi.with_array(img)


def qsm_t2s_native(chi: Volume, msk: np.ndarray, rng, split: str):
    """Pseudo-T2* of the real QSM brain on a clinical grid with dark CMBs in one hemisphere
    (right for training, left otherwise).  Returns (image, cmb mask, brain mask, specs, info)."""
    from scipy import ndimage as ndi

    base = pseudo_t2s(chi, msk, rng)
    sp = random_clinical_spacing(rng)
    img, mask = reacquire(base, sp, rng, mask=msk)
    centre_x = img.kji_to_ras(np.argwhere(mask).mean(axis=0))[0]
    allowed = hemisphere(img, ndi.binary_erosion(mask, iterations=2), centre_x, split, margin_mm=3.0)
    n = int(rng.integers(0, 9))
    centres = sample_centres(allowed, img, n, rng, min_distance_mm=8.0)
    ins = insert_cmbs(img, centres_ras=centres, rng=rng, polarity="dark", radius_mm=(1.0, 2.5),
                      contrast=(0.4, 0.95))
    a = magnitude_image(ins.image.array, mask, sp, rng, noise_sd=(0.01, 0.06))
    info = {"source": "qsm_t2s", "spacing": list(sp), "n_cmbs": len(ins.specs), "polarity": "dark",
            "hemisphere": "right" if split.startswith("train") else "left"}
    return img.with_array(a), ins.mask, mask, ins.specs, info


SKULL_ON_SEED = 30_000_000
SKULL_ON_PREPROCESS = {"brain_extraction": "head", "outside": "background"}


def skull_on_case(img: Volume, mask: np.ndarray, specs, rng, spacing, fine_mask=None, slab_prob: float = 0.3,
                  options=None):
    """A skull-stripped native case with a synthetic head around it
    (`CMBLib.synthesis.head_shells.add_head`), in `slab_prob` of the cases cut to a slab of
    7-20 slices, preprocessed as a skull-on scan at inference: the brain mask found in the
    image (`options`, default `SKULL_ON_PREPROCESS`), not the true one.  Returns (pre, arrays,
    head info)."""
    from CMBLib.synthesis.head_shells import add_head, crop_slices, random_slab

    h = add_head(img, mask, rng, fine_mask=fine_mask)
    image = h.image
    info = {"thickness": h.info["thickness"], "air": [a["kind"] for a in h.info["air"]], "slab": None}
    if rng.random() < slab_prob:
        k0, k1 = random_slab(h.brain_mask, rng, (7, 20))
        image = crop_slices(image, k0, k1)
        info["slab"] = [int(k0), int(k1)]
    pre, arrays = to_model_grid(image, "dark", specs, None, spacing, options=options or SKULL_ON_PREPROCESS)
    return pre, arrays, info


def native_case(split: str, i: int, labels=None, chi=None, msk=None, qsm_every: int = 4):
    """Case `i` of `split` on its clinical grid, exactly as the cache generated it.

    Returns dict(image, cmb_mask, polarity, brain_mask (array or None), info).
    """
    rng = np.random.default_rng(SPLIT_SEED[split] + i)
    if split.endswith("_t2s"):
        img, cmb, mask, specs, info = qsm_t2s_native(chi, msk, rng, split)
        return {"image": img, "cmb_mask": cmb, "polarity": "dark", "brain_mask": mask, "info": info,
                "radii": [float(s.radius_mm) for s in specs], "contrasts": [float(s.contrast) for s in specs]}
    if chi is not None and i % qsm_every == 1:
        img, cmb, mask, _, _, info = qsm_native(chi, msk, rng, split)
        return {"image": img, "cmb_mask": cmb, "polarity": "bright", "brain_mask": mask, "info": info}
    case = synthesize_case(labels, rng)
    return {"image": case.image, "cmb_mask": case.cmb_mask, "polarity": case.polarity, "brain_mask": None,
            "info": dict(case.info, source="fs")}


def hemisphere(img: Volume, region: np.ndarray, centre_x: float, split: str, margin_mm: float = 0.0) -> np.ndarray:
    """Voxels of `region` (bool [k, j, i]) in the hemisphere of `split`: right (RAS x above
    `centre_x` + margin) for training splits, left (below `centre_x` - margin) otherwise."""
    kji = np.argwhere(region)
    x = img.kji_to_ras(kji)[:, 0]
    keep = (x > centre_x + margin_mm) if split.startswith("train") else (x < centre_x - margin_mm)
    out = np.zeros_like(region)
    out[tuple(kji[keep].T)] = True
    return out


def fs_case(labels: Volume, rng, spacing_model):
    case = synthesize_case(labels, rng)
    pre, arrays = to_model_grid(case.image, case.polarity, case.cmb_specs, case.mimic_labels, spacing_model)
    info = dict(case.info, source="fs")
    return pre, arrays, info, case.cmb_specs


def save_case(folder: Path, name: str, pre, arrays, info, specs):
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(folder / (name + ".npz"))
    g = pre.grid
    meta = dict(info, name=name, shape_kji=list(pre.array.shape), grid={
        "spacing": list(g.spacing), "origin": list(g.origin), "direction": g.direction.tolist()},
        centres_ras=[s.centre_ras.tolist() for s in specs],
        radii_mm=[float(s.radius_mm) for s in specs])
    (folder / (name + ".json")).write_text(json.dumps(meta, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="training/runs/cache")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-val", type=int, default=12)
    ap.add_argument("--n-test", type=int, default=16)
    ap.add_argument("--qsm-fraction", type=float, default=0.25)
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 2.0))
    ap.add_argument("--sources", default="fs,qsm")
    ap.add_argument("--shard", default="0/1", metavar="K/N",
                    help="make only cases whose index i has i %% N == K (run N processes in parallel)")
    ap.add_argument("--t2s", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                    help="instead: generate only pseudo-T2* cases of the real QSM brain (splits *_t2s)")
    ap.add_argument("--skull-on", type=float, default=0.0, metavar="P",
                    help="with --t2s: this fraction of the cases gets a synthetic head (skull, scalp, sinuses; "
                         "30 %% of them cut to 7-20 slices) and is preprocessed as a skull-on scan "
                         "(brain_extraction head, outside background); default 0 (off)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < n_shards:
        raise SystemExit(f"--shard {args.shard}: need K/N with 0 <= K < N")
    sources = args.sources.split(",")
    labels = read_volume(FS_LABELS) if "fs" in sources else None
    chi = msk = None
    if "qsm" in sources and QSM.is_file():
        chi = read_volume(QSM)
        msk = read_volume(QSM_MASK).array > 0
    if args.t2s:
        counts = {"val": args.t2s[1], "test": args.t2s[2], "train": args.t2s[0]}
        plan = [(f"{sp}_t2s", i) for sp, n in counts.items() for i in range(n)]
        for split, i in plan:
            name = f"{split}_{i:04d}"
            folder = out / split.replace("_t2s", "")
            if i % n_shards != shard or (folder / (name + ".npz")).exists():
                continue
            t = time.time()
            rng = np.random.default_rng(SPLIT_SEED[split] + i)
            img, _, mask, specs, info = qsm_t2s_native(chi, msk, rng, split)
            head_rng = np.random.default_rng(SKULL_ON_SEED + SPLIT_SEED[split] + i)
            if args.skull_on > 0 and head_rng.random() < args.skull_on:
                pre, arrays, info["skull_on"] = skull_on_case(img, mask, specs, head_rng, args.spacing,
                                                              fine_mask=chi.with_array(msk.astype(np.uint8)))
                info["preprocess"] = SKULL_ON_PREPROCESS
            else:
                pre, arrays = to_model_grid(img, "dark", specs, None, args.spacing, brain_mask=mask)
            save_case(folder, name, pre, arrays, info, specs)
            print(f"{name} {info['source']} {info['spacing']} cmbs={info['n_cmbs']} {time.time() - t:.1f}s", flush=True)
        return
    # validation first (needed while training), some training cases, the test set, the rest
    train = [("train", i) for i in range(args.n_train)]
    plan = [("val", i) for i in range(args.n_val)] + train[:40]
    plan += [("test", i) for i in range(args.n_test)] + train[40:]
    for split, i in plan:
        name = f"{split}_{i:04d}"
        if i % n_shards != shard or (out / split / (name + ".npz")).exists():
            continue
        rng = np.random.default_rng(SPLIT_SEED[split] + i)
        use_qsm = chi is not None and (i % max(1, int(round(1 / max(args.qsm_fraction, 1e-3)))) == 1)
        t = time.time()
        if use_qsm:
            pre, arrays, info, specs = qsm_case(chi, msk, rng, split, args.spacing)
        else:
            pre, arrays, info, specs = fs_case(labels, rng, args.spacing)
        save_case(out / split, name, pre, arrays, info, specs)
        print(f"{name} {info['source']} {info.get('spacing')} cmbs={info['n_cmbs']} "
              f"shape={arrays['image'].shape} {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
