"""Fine-tuning on a domain the bundled model handles badly: F1 and FP/scan before and after.

    python benchmarks/bench_finetune.py [--train 6] [--test 6] [--minutes 8] [--work DIR]

Domain ("vein-rich phantom, small faint CMBs"): the analytic T2*-like phantom of
`CMBLib.synthesis.demo_study` (0.9 x 0.9 x 3 mm) with many veins and flow voids drawn by
`CMBLib.synthesis.mimics.add_mimics` (20 veins, 12 flow voids, calcification) and six
small, faint CMBs per scan (half-maximum radius 0.9-1.5 mm, contrast 0.4-0.7, kept 3
voxels away from mimics).  The bundled model was trained on neither this phantom nor
CMBs this faint: it misses many and takes flow voids for CMBs.

Training studies are annotated as a rater would after reviewing the bundled model's
detections: true CMBs confirmed, the bundled model's other detections rejected, three
flow voids marked as mimic landmarks; they are written with the real export path
(`CMBLib.annotation.dataset.export_subject`).  `python -m training.finetune` (in this
process, same code) fine-tunes for `--minutes`; both models then run through
`CMBLib.detection.pipeline.detect` at their own thresholds on held-out studies (other
seeds, never seen), scored with the VALDO rule (5 mm).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def domain_study(seed: int):
    """(image Volume, CMB instance mask Volume, mimic label Volume) of the benchmark domain."""
    from scipy import ndimage as ndi

    from CMBLib.synthesis.cmb_insertion import insert_cmbs, sample_centres
    from CMBLib.synthesis.demo_study import make_demo_phantom
    from CMBLib.synthesis.mimics import add_mimics

    rng = np.random.default_rng(seed + 500)
    vol, brain, lab = make_demo_phantom(seed)
    m = add_mimics(vol, brain, rng=rng, n_veins=20, n_flow_voids=12, calcification=True, air_bone=False,
                   contrast=(0.4, 0.8))
    allowed = (ndi.binary_erosion(brain, iterations=2) & np.isin(lab, (4, 5, 6))
               & ~ndi.binary_dilation(m.labels.array > 0, iterations=3))
    centres = sample_centres(allowed, m.image, 6, rng, min_distance_mm=12.0)
    res = insert_cmbs(m.image, centres_ras=centres, rng=rng, polarity="dark", radius_mm=(0.9, 1.5),
                      contrast=(0.4, 0.7), dipole_prob=0.0)
    return res.image, res.mask, m.labels


def score(model, studies) -> dict:
    from CMBLib.detection.pipeline import detect
    from CMBLib.metrics import evaluate_case

    tp = fp = fn = 0
    for img, mask, _ in studies:
        r = evaluate_case(detect(img, model=model, device="cpu").mask, mask, rule="valdo", distance_mm=5.0)
        tp, fp, fn = tp + r.tp, fp + r.fp, fn + r.fn
    n = len(studies)
    return {"n_cases": n, "tp": tp, "fp": fp, "fn": fn, "sensitivity": round(tp / max(1, tp + fn), 3),
            "precision": round(tp / max(1, tp + fp), 3), "f1": round(2 * tp / max(1, 2 * tp + fp + fn), 3),
            "fp_per_scan": round(fp / n, 2)}


def export_reviewed(dataset, subject: str, study, bundled) -> dict:
    """Export one training study as reviewed by a rater: bundled detections that are not
    CMBs rejected, CMBs confirmed, three flow voids marked as mimics."""
    from scipy import ndimage as ndi

    from CMBLib.detection.pipeline import detect
    from CMBLib.metrics import evaluate_case
    from CMBLib.synthesis.annotated_study import export_annotated_study

    img, mask, mimics = study
    det = detect(img, model=bundled, device="cpu")
    r = evaluate_case(det.mask, mask, rule="valdo", distance_mm=5.0)
    rejected = [list(e.centre_ras) for e, s in zip(r.pred, r.pred_status) if s == "FP"]
    flow, n = ndi.label(np.asarray(mimics.array) == 2)
    points = [img.kji_to_ras(c).tolist() for c in ndi.center_of_mass(flow > 0, flow, range(1, n + 1))[:3]]
    export_annotated_study(dataset, subject, img, mask, rejected_ras=rejected,
                           mimics_ras=[(p, "vessel_flow_void") for p in points])
    return {"rejected": len(rejected), "mimics": len(points), "cmbs": int(len(np.unique(mask.array)) - 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=6, help="annotated studies to fine-tune on (default 6)")
    ap.add_argument("--test", type=int, default=6, help="held-out studies (default 6)")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--work", default=None, help="folder for the dataset and the model (default: temporary)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="fine-tuning seed (split, patches)")
    args = ap.parse_args(argv)
    import torch

    from CMBLib.detection.finetune import main as finetune_main
    from CMBLib.detection.model_io import load_model

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-finetune-"))
    dataset, model_dir = work / "dataset", work / f"model-{args.minutes:g}min"
    bundled = load_model("default")
    t = time.time()
    if dataset.is_dir():  # a dataset exported by an earlier run with the same --work
        review = "reused " + str(dataset)
    else:
        review = [export_reviewed(dataset, f"{s:02d}", domain_study(s), bundled) for s in range(args.train)]
    t_export = time.time() - t
    test = [domain_study(1000 + s) for s in range(args.test)]
    before = score(bundled, test)
    t = time.time()
    rc = finetune_main([str(dataset), "--out", str(model_dir), "--minutes", str(args.minutes),
                        "--threads", str(args.threads), "--device", "cpu", "--quiet", "--seed", str(args.seed)])
    t_ft = time.time() - t
    if rc:
        raise SystemExit(f"fine-tuning failed (exit {rc})")
    tuned = load_model(model_dir)
    after = score(tuned, test)
    ft = tuned[1]["finetune"]
    out = {"domain": "vein-rich phantom, small faint CMBs", "train_studies": args.train, "test_studies": args.test,
           "review": review, "export_s": round(t_export, 1), "finetune_wall_s": round(t_ft, 1),
           "minutes": args.minutes, "threads": args.threads, "steps": ft["steps"], "accepted": ft["accepted"],
           "threshold": tuned[1]["threshold"], "validation": ft["validation"], "test_bundled": before,
           "test_finetuned": after, "model_dir": str(model_dir)}
    print(json.dumps(out, indent=1))
    print("\n| model | TP | FP | FN | sensitivity | precision | F1 | FP/scan |\n|---|---|---|---|---|---|---|---|")
    for name, r in (("bundled", before), ("fine-tuned", after)):
        print(f"| {name} | {r['tp']} | {r['fp']} | {r['fn']} | {r['sensitivity']} | {r['precision']} | {r['f1']} | "
              f"{r['fp_per_scan']} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average at the end: {load:.1f} on {os.cpu_count()} cores")
    print(f"fine-tuning: {t_ft:.0f} s wall ({args.threads} threads), {ft['steps']} steps, "
          f"{'fine-tuned weights kept' if ft['accepted'] else 'parent kept'}")


if __name__ == "__main__":
    main()
