"""Does the location filter remove the deep midline vein and keep the CMBs?  Real brains, `cmb detect`.

Each case is a real brain as a T2*-like image on a clinical grid (the `fsn` and `clin`
sources of `training.mine_candidates`, test seeds: CMBs in the left hemisphere on odd cases,
none on even ones) with a pair of **internal cerebral veins** drawn in before re-acquisition:
two dark tubes 3 mm apart on the midline along the roof of the third ventricle, joined
behind into a vein of Galen running up and back.

* FreeSurfer subject (``fsn``): the veins' path comes from its own labels
  (`CMBLib.synthesis.deep_veins.deep_vein_path`: top of the third ventricle over the length
  of the thalami), independent of the atlas
  registration that the filter uses.
* QSM brain (``clin``): no labels; the path is carried from MNI space (x = +-1.5 mm,
  y 0 to -34 mm, z 12 mm) with the registration of the whole 1 mm brain, so for these
  cases the filter's zone and the vein share the atlas (a weaker test).

The whole `detect` pipeline runs once per case with the bundled model; candidates in a zone
come back as `suppressed`, so one run gives both "with" and "without" the filter.  Counts
use the VALDO rule (a finding is a TP when its centre lies within 5 mm of an inserted CMB's
centre); a finding within 5 mm of the vein's centre line is counted as a vein finding.

    python benchmarks/check_location_filter.py --n 8 --out /tmp/locfilter.json
    python benchmarks/check_location_filter.py --n 8 --split val --head   # with a skull and scalp
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VEIN_CONTRAST = (0.75, 0.95)  # fraction of the signal the vein removes at its centre line
VEIN_RADIUS_MM = (1.2, 2.0)   # half-maximum radius of each internal cerebral vein (T2* blooming)


def add_head(image, rng):
    """A skull-stripped T2*-like image (0 outside the brain) with a synthetic head around it,
    as a clinical scan has: a 2 mm CSF rim (bright), 5 mm of bone (dark), 5 mm of scalp
    (bright), Rician-like noise; on the image's own grid."""
    from scipy import ndimage as ndi

    a = np.asarray(image.array, np.float32)
    brain = a > 0
    d = ndi.distance_transform_edt(~brain, sampling=image.spacing[::-1])
    ref = float(np.median(a[brain]))
    layers = np.select([d <= 2.0, d <= 7.0, d <= 12.0], [1.4 * ref, 0.08 * ref, rng.uniform(0.7, 1.1) * ref], 0.0)
    noise = np.abs(rng.normal(0.0, 0.03 * ref, a.shape))
    out = np.where(brain, a, (layers + noise) * (d <= 12.0)).astype(np.float32)
    return image.with_array(out)


def mni_vein_path(registration) -> np.ndarray:
    """The same path for a brain without labels, carried from MNI space (template -> subject)."""
    pts = [(0.0, y, 12.0) for y in np.arange(0.0, -35.0, -2.0)]
    out = []
    for p in pts:
        q = registration.transform.TransformPoint((-p[0], -p[1], p[2]))
        out.append((-q[0], -q[1], q[2]))
    return np.array(out)


def score(records, suppressed, ref, line, tol=5.0) -> dict:
    """VALDO counts with the filter (`records`) and without it (`records` + `suppressed`),
    false findings split into those on the drawn vein and the others."""
    from CMBLib.metrics import match_points

    def counts(found):
        centres = np.array([r["centre_ras"] for r in found], float).reshape(-1, 3)
        m = match_points(centres, ref, rule="valdo", distance_mm=tol)
        false = centres[[s == "FP" for s in m.pred_status]]
        vein = int(sum(np.linalg.norm(line - c, axis=1).min() <= tol for c in false))
        return {"tp": m.tp, "fn": m.fn, "fp_vein": vein, "fp_other": len(false) - vein}

    with_f, without = counts(records), counts(list(records) + list(suppressed))
    return {"n_cmbs": int(len(ref)), **with_f, **{k + "_nofilter": v for k, v in without.items()},
            "suppressed": len(suppressed)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="cases per source (even: no CMB, odd: 1-10 CMBs)")
    ap.add_argument("--sources", default="fsn,clin")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=None, help="JSON file for the per-case rows and totals")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--head", action="store_true", help="add a synthetic CSF rim, skull and scalp around the "
                    "brain (clinical scans are not skull-stripped)")
    ap.add_argument("--second-stage", choices=("default", "on", "off"), default="default",
                    help="the model's default, or force the candidate classifier on / off")
    ap.add_argument("--model", default="default", help="a model folder (default: the bundled cmb-default)")
    args = ap.parse_args(argv)

    import torch

    from CMBLib.detection.model_io import load_model
    from CMBLib.detection.pipeline import detect
    from CMBLib.io import read_volume
    from CMBLib.location.atlas import load_atlas
    from CMBLib.location.registration import register_template
    from CMBLib.metrics.case_metrics import detection_scores
    from CMBLib.synthesis.deep_veins import deep_vein_path, draw_deep_veins
    from training.generate_cache import FS_LABELS, QSM, QSM_MASK, pseudo_t2s
    from training.mine_candidates import (
        CLIN_SEED,
        FS_NORM,
        FSN_SEED,
        _clinical_grid_case,
        fs_norm_t2s,
        reference_centres,
    )

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    rows = []
    for source in args.sources.split(","):
        if source == "fsn":
            labels = read_volume(FS_LABELS)
            base, brain = fs_norm_t2s(read_volume(FS_NORM), labels)
            path, seeds = deep_vein_path(labels), FSN_SEED
        else:
            chi, msk = read_volume(QSM), read_volume(QSM_MASK).array > 0
            base, brain = pseudo_t2s(chi, msk, np.random.default_rng(0)), msk
            template, tmask = load_atlas().template_sitk()
            path, seeds = mni_vein_path(register_template(template, tmask, base)), CLIN_SEED
        for i in range(args.n):
            rng = np.random.default_rng(seeds[args.split] + i)
            vrng = np.random.default_rng(seeds[args.split] + 10_000 + i)
            veined, line = draw_deep_veins(base, path, vrng.uniform(*VEIN_RADIUS_MM), vrng.uniform(*VEIN_CONTRAST))
            case = _clinical_grid_case(source, veined, brain, args.split, i, rng)
            if args.head:
                case["image"] = add_head(case["image"], np.random.default_rng(seeds[args.split] + 20_000 + i))
            t = time.time()
            res = detect(case["image"], model, device="cpu",
                         second_stage={"default": None, "on": True, "off": False}[args.second_stage])
            ref = reference_centres(case["cmb_mask"])
            row = dict(source=source, case=i, spacing=case["info"]["spacing"], seconds=round(time.time() - t, 1),
                       warnings=res.warnings, **score(res.records, res.suppressed, ref, line))
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], int) and k != "case"]
    tot = {k: sum(r[k] for r in rows) for k in keys}
    n = len(rows)
    for name, sfx in (("with filter", ""), ("without filter", "_nofilter")):
        tp, fn = tot["tp" + sfx], tot["fn" + sfx]
        fp = tot["fp_vein" + sfx] + tot["fp_other" + sfx]
        sens, _, f1 = detection_scores(tp, fp, fn)
        print(f"{name:15s} {n} cases: TP {tp} FN {fn} FP {fp} ({fp / n:.2f}/scan; on the vein "
              f"{tot['fp_vein' + sfx]}) sensitivity {sens or 0.0:.3f} F1 {f1 or 0.0:.3f}")
    print("totals", json.dumps(tot))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "totals": tot}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
