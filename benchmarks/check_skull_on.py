"""Detection on skull-on heads: the bundled model with the old and the new preprocessing.

Cases (`make_variants`): the real-brain sources of benchmarks/froc_default_path.py
(``training.mine_candidates.make_case``: ``clin`` = pseudo-T2* of the QSM brain, ``fsn`` =
the FreeSurfer subject, each on the two clinical grids 0.86 x 0.86 x 4 / 0.5 x 0.5 x 5 mm,
odd cases with 1-10 CMBs in the split's hemisphere, even ones without), each as

* ``stripped``   -- the case as the maker gives it (0 outside the brain, as in training);
* ``head0``, ``head1``... -- the same image with a synthetic head around it
  (`CMBLib.synthesis.head_shells.add_head`, one seeded draw of shells, air, eyes, neck each);
* ``slab``       -- 7-20 slices of ``head0`` (thick-slice partial coverage);
* ``thin`` / ``thin_stripped`` -- a new acquisition of the same brain on a thin oblique grid
  (0.45-0.7 mm in plane, 1.2-2.5 mm slices, tilted up to 20 degrees), 7-20 slices kept, 2-6 CMBs
  inserted in them, with and without a head.

Each variant runs through `detect` (the model's threshold and minimum size, first stage alone,
location filter off unless --location-filter) with the preprocessing of the model folder
("old") and with ``"preprocess": {"brain_extraction": "head", "outside": "background"}``
("new").  Printed per method and variant: TP / FP / FN (VALDO rule, 5 mm,
`CMBLib.metrics.match_points`), sensitivity, FP per scan, F1, the Dice of the brain mask
`detect` used against the true brain, and the median `detect` time.  Where both methods give
bit-identical network inputs (a skull-stripped image: constant background) the network runs
once and the row says so.

    python benchmarks/check_skull_on.py --split val --n 6 --draws 2 --out /tmp/skull_on_val.json

Cases are cached in --cache (one .npz per variant) so that a rerun only detects.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCES = ("clin", "fsn")
HEAD_SEED = {"train": 20_000_000, "val": 21_000_000, "test": 22_000_000}
THIN_SEED = {"train": 23_000_000, "val": 24_000_000, "test": 25_000_000}
NEW = {"brain_extraction": "head", "outside": "background"}
OLD = {"brain_extraction": "classic", "outside": "keep"}


def fine_masks(chi, msk, fsn) -> dict:
    """The 1 mm brain masks the sources' images are made from (shells and slabs use them)."""
    out = {"clin": chi.with_array(np.asarray(msk, np.uint8))}
    if fsn is not None:
        out["fsn"] = fsn[0].with_array(np.asarray(fsn[1], np.uint8))
    return out


def thin_case(source: str, split: str, i: int, chi, msk, fsn) -> dict:
    """The source's brain on a thin oblique grid, 7-20 slices kept, 2-6 dark CMBs in them."""
    from scipy import ndimage as ndi

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.head_shells import crop_slices, random_slab
    from CMBLib.synthesis.label_synthesis import reacquire
    from training.generate_cache import hemisphere, magnitude_image, pseudo_t2s

    rng = np.random.default_rng(THIN_SEED[split] + 1000 * SOURCES.index(source) + i)
    if source == "clin":
        base, brain = pseudo_t2s(chi, msk, rng), msk
    else:
        base, brain = fsn
    inplane = rng.uniform(0.45, 0.7)
    sp = (inplane, inplane, rng.uniform(1.2, 2.5))
    img, mask = reacquire(base, sp, rng, mask=brain, tilt_deg=20.0)
    k0, k1 = random_slab(mask, rng, (7, 20))
    img, mask = crop_slices(img, k0, k1), mask[k0:k1]
    centre_x = img.kji_to_ras(np.argwhere(mask).mean(axis=0))[0]
    allowed = hemisphere(img, ndi.binary_erosion(mask, iterations=1), centre_x, split, margin_mm=1.0)
    n = int(rng.integers(2, 7))
    centres = sample_centres(allowed, img, n, rng, min_distance_mm=8.0)
    ins = insert_cmbs(img, centres_ras=centres, rng=rng, polarity="dark", radius_mm=(0.6, 2.5),
                      contrast=(0.3, 0.95))
    a = magnitude_image(ins.image.array, mask, sp, rng, noise_sd=(0.01, 0.05))
    return {"image": img.with_array(a), "cmb_mask": ins.mask, "brain": mask,
            "info": {"source": source, "spacing": [float(v) for v in sp], "slices": int(k1 - k0)}}


def make_variants(source: str, split: str, i: int, backgrounds, draws: int = 2, thin: bool = True) -> dict:
    """{variant name: {"image", "cmb_mask", "brain"}} for case `i` of `source` (module docstring)."""
    from CMBLib.synthesis.head_shells import add_head, crop_slices, random_slab
    from training.mine_candidates import make_case

    labels, chi, msk, fsn = backgrounds
    fine = fine_masks(chi, msk, fsn)[source]
    case = make_case(source, split, i, labels, chi, msk, fsn)
    img = case["image"]
    brain = np.asarray(img.array) != 0
    out = {"stripped": {"image": img, "cmb_mask": case["cmb_mask"], "brain": brain}}
    seed = HEAD_SEED[split] + 100_000 * SOURCES.index(source) + 100 * i
    for d in range(draws):
        h = add_head(img, brain, np.random.default_rng(seed + d), fine_mask=fine)
        out[f"head{d}"] = {"image": h.image, "cmb_mask": h.image.with_array(h.padded(case["cmb_mask"].array)),
                           "brain": h.brain_mask}
        if d == 0:
            k0, k1 = random_slab(h.brain_mask, np.random.default_rng(seed + 99), (7, 20))
            cm = out["head0"]["cmb_mask"]
            out["slab"] = {"image": crop_slices(h.image, k0, k1), "cmb_mask": crop_slices(cm, k0, k1),
                           "brain": h.brain_mask[k0:k1]}
    if thin:
        t = thin_case(source, split, i, chi, msk, fsn)
        out["thin_stripped"] = t
        h = add_head(t["image"], t["brain"], np.random.default_rng(seed + 50), fine_mask=fine, keep_slices=True)
        out["thin"] = {"image": h.image, "cmb_mask": h.image.with_array(h.padded(t["cmb_mask"].array)),
                       "brain": h.brain_mask}
    return out


def save_variant(path: Path, v: dict) -> None:
    im, cm = v["image"], v["cmb_mask"]
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, image=im.array, cmb=cm.array, brain=v["brain"], spacing=im.spacing, origin=im.origin,
                        direction=im.direction)
    tmp.replace(path)


def load_variant(path: Path) -> dict:
    from CMBLib.geometry import Volume

    d = np.load(path)
    geo = dict(spacing=tuple(d["spacing"]), origin=tuple(d["origin"]), direction=d["direction"])
    return {"image": Volume(d["image"], **geo), "cmb_mask": Volume(d["cmb"], **geo), "brain": d["brain"]}


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def run_variant(v: dict, models: dict, location_filter: bool) -> dict:
    """{method: {tp, fp, fn, dice, seconds, same_as}} for one variant.  A method whose network
    input (and brain mask) equals an earlier method's is not run again."""
    from CMBLib.detection.pipeline import detect
    from CMBLib.detection.preprocess import preprocess
    from CMBLib.metrics import match_points
    from training.mine_candidates import reference_centres

    ref = reference_centres(v["cmb_mask"])
    out, pres = {}, {}
    for name, model in models.items():
        if pres:
            pre = preprocess(v["image"], model[1]["spacing_mm"], **(model[1].get("preprocess") or {}))
            same = next((m for m, p in pres.items() if p.array.shape == pre.array.shape and
                         np.array_equal(p.array, pre.array) and np.array_equal(p.brain_mask, pre.brain_mask)), None)
            if same is not None:
                out[name] = dict(out[same], same_as=same)
                continue
        t = time.perf_counter()
        res = detect(v["image"], model, device="cpu", sequence="T2S", second_stage=False,
                     location_filter=location_filter, keep_model_grid=True)
        secs = time.perf_counter() - t
        p = pres[name] = res.model_grid["pre"]
        brain = p.to_native(p.brain_mask.astype(np.uint8), order=0) > 0
        pts = np.array([r["centre_ras"] for r in res.records], float).reshape(-1, 3)
        m = match_points(pts, ref, rule="valdo", distance_mm=5.0)
        out[name] = {"tp": m.tp, "fp": m.fp, "fn": m.fn, "dice": dice(brain, v["brain"]), "seconds": secs,
                     "preprocess_s": res.timings.get("preprocess", 0.0)}
    return out


def masks_only(v: dict) -> dict:
    """Brain-mask Dice and seconds of the two brain extractions on the input grid (no network)."""
    from CMBLib.detection.preprocess import brain_mask_from_image, canonical_volume, head_brain_mask, to_canonical

    vol, orient = canonical_volume(v["image"])
    truth = to_canonical(v["brain"], *orient)
    out = {}
    for name, fn in (("old", brain_mask_from_image), ("new", head_brain_mask)):
        t = time.perf_counter()
        m = fn(vol)
        out[name] = {"dice": dice(m, truth), "seconds": time.perf_counter() - t, "ratio": float(m.sum() / truth.sum())}
    return out


def summary(rows: list) -> list:
    """Table lines: per method and variant group, counts and rates."""
    from CMBLib.metrics.case_metrics import detection_scores

    groups = {}
    for r in rows:
        kind = r["variant"].rstrip("0123456789") if r["variant"].startswith("head") else r["variant"]
        groups.setdefault((r["method"], kind), []).append(r)
    lines = ["| method | variant | scans | TP / FP / FN | sensitivity | FP/scan | F1 | brain Dice (median, min) "
             "| detect s (median) |", "|---|---|---|---|---|---|---|---|---|"]
    order = ["stripped", "head", "slab", "thin_stripped", "thin"]
    for (method, kind), rs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][1]) if kv[0][1] in order
                                                                     else 99, kv[0][0])):
        tp, fp, fn = (sum(r[k] for r in rs) for k in ("tp", "fp", "fn"))
        sens, _, f1 = detection_scores(tp, fp, fn)
        d = [r["dice"] for r in rs]
        secs = [r["seconds"] for r in rs]
        same = " (= old)" if all(r.get("same_as") for r in rs) else ""
        lines.append(f"| {method}{same} | {kind} | {len(rs)} | {tp} / {fp} / {fn} | "
                     f"{(sens if sens is not None else float('nan')):.2f} | {fp / len(rs):.2f} | {(f1 or 0.0):.3f} | "
                     f"{np.median(d):.3f}, {min(d):.3f} | {np.median(secs):.1f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=6, help="cases per source")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--sources", default=",".join(SOURCES))
    ap.add_argument("--draws", type=int, default=2, help="head draws per case")
    ap.add_argument("--no-thin", action="store_true", help="skip the thin oblique slabs")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--location-filter", action="store_true")
    ap.add_argument("--cache", default="training/runs/skull_on_cases")
    ap.add_argument("--out", default=None)
    ap.add_argument("--masks-only", action="store_true", help="brain-mask Dice of the two extractions only")
    args = ap.parse_args(argv)
    import torch

    from CMBLib.detection.model_io import load_model
    from training.mine_candidates import load_backgrounds

    torch.set_num_threads(args.threads)
    net, meta = load_model(args.model, device="cpu")
    base = {k: v for k, v in meta.items() if k != "preprocess"}
    models = {"old": (net, dict(base, preprocess=OLD)), "new": (net, dict(base, preprocess=NEW))}
    print(f"model {meta.get('name')} {meta.get('version')} (tta {meta.get('tta')}, flip_average "
          f"{meta.get('flip_average')}), threshold {meta.get('threshold')}, "
          f"min diameter {meta.get('min_diameter_mm')} mm", flush=True)
    sources = args.sources.split(",")
    backgrounds = None
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.start, args.start + args.n):
        for source in sources:
            names = ["stripped"] + [f"head{d}" for d in range(args.draws)] + ["slab"] + \
                ([] if args.no_thin else ["thin_stripped", "thin"])
            paths = {v: cache / f"{args.split}_{source}_{i:03d}_{v}.npz" for v in names}
            t0 = time.time()
            if not all(p.exists() for p in paths.values()):
                if backgrounds is None:
                    backgrounds = load_backgrounds(sources)
                made = make_variants(source, args.split, i, backgrounds, args.draws, thin=not args.no_thin)
                for v, p in paths.items():
                    save_variant(p, made[v])
            t_make = time.time() - t0
            for v, p in paths.items():
                if args.masks_only:
                    r = masks_only(load_variant(p))
                    print(f"{source} {i} {v}: " + "; ".join(f"{m} dice {x['dice']:.3f} ratio {x['ratio']:.2f} "
                                                            f"{x['seconds']:.1f}s" for m, x in r.items()), flush=True)
                    continue
                res = run_variant(load_variant(p), models, args.location_filter)
                for method, r in res.items():
                    rows.append(dict(r, method=method, variant=v, source=source, case=i))
                print(f"{source} {i} {v}: " + "; ".join(
                    f"{m} {r['tp']}/{r['fp']}/{r['fn']} dice {r['dice']:.3f} {r['seconds']:.1f}s"
                    + (" (same input)" if r.get("same_as") else "") for m, r in res.items()), flush=True)
            print(f"  (cases made in {t_make:.0f} s)", flush=True)
    if rows:
        print()
        print("\n".join(summary(rows)))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
