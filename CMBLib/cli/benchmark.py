"""`cmb benchmark valdo|cuhk DIR --out REPORT_DIR`: detection and scores on a public CMB data set.

    cmb benchmark valdo VALDO/Task2 --out bench_valdo/ [--model NAME|PATH] [--limit 5]
    cmb benchmark cuhk CUHK_CMB/ --out bench_cuhk/
"""
import sys
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser(
        "benchmark", help="detect and score on a public data set (VALDO 2021 task 2, CUHK SWI)",
        description="Run detection on every subject of a public CMB data set in its release layout and score it "
                    "with the VALDO rule (centre of mass closer than 5 mm): metrics.json (pooled tp / fp / fn at the "
                    "top level, as cmb evaluate), per_subject.csv, per_case.csv, per_cmb.csv, froc.png, report.html. "
                    "VALDO: DIR/sub-NNN/sub-NNN_space-T2S_desc-masked_T2S.nii.gz with sub-NNN_space-T2S_CMB.nii.gz; "
                    "CUHK: DIR/NN.nii[.gz] beside NN.mat (cen: 1-based (i, j, k) centres, gt_num).  Detections are "
                    "kept in REPORT_DIR/detections; a second run into the same folder reuses them.")
    p.add_argument("dataset", choices=["valdo", "cuhk"], type=str.lower, help="which release layout DIR has")
    p.add_argument("dir", metavar="DIR", help="the data set's folder")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="bundled or fine-tuned model name, or model folder (default: the bundled default model)")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="user models folder for --model NAME (default: $CMB_MODELS_DIR, else ~/.cmb/models)")
    p.add_argument("--device", default="auto", help="auto (GPU when one works), cuda, mps or cpu")
    p.add_argument("--threshold", type=float, default=None,
                   help="operating probability threshold (default: the model's); the FROC covers 0.05 ... 0.95")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N subjects (a quick look)")
    stage2 = p.add_mutually_exclusive_group()
    stage2.add_argument("--second-stage", action="store_true",
                        help="run the model's candidate classifier even where the model leaves it off by default")
    stage2.add_argument("--no-second-stage", action="store_true",
                        help="keep every first-stage candidate (skip the model's candidate classifier)")
    p.add_argument("--no-location-filter", action="store_true",
                   help="keep candidates in the model's mimic zones (e.g. the deep midline veins) as findings")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--overwrite", action="store_true",
                   help="run detection again on every subject; replace a report made with other settings")
    p.add_argument("--quiet", action="store_true", help="print only skipped subjects and the final line")
    return p


def run(args) -> int:
    from ..benchmark.run import PER_SUBJECT, run_benchmark
    from .detect import stage2_choice

    if args.threads:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
    out = Path(args.out)

    def log(message):
        if not args.quiet or "skipped" in message or "failed" in message:
            print(message, file=sys.stderr)

    doc = run_benchmark(args.dataset, args.dir, out, model=args.model, models_dir=args.models_dir,
                        device=args.device, threshold=args.threshold, limit=args.limit,
                        second_stage=stage2_choice(args),
                        location_filter=False if args.no_location_filter else None,
                        overwrite=args.overwrite, log=log)
    b = doc["benchmark"]
    fr = doc.get("froc") or {}
    cpm = fr.get("cpm")
    print(f"{b['n_scored']} subjects scored ({b['n_skipped']} skipped, see {out / PER_SUBJECT}): "
          f"TP {doc['tp']}  FP {doc['fp']}  FN {doc['fn']}  sensitivity {_f(doc['sensitivity'])}  "
          f"precision {_f(doc['precision'])}  F1 {_f(doc['f1'])}  FP/scan {_f(doc['fp_per_subject'])}  "
          f"CPM {_f(cpm)}  -> {out}")
    failed = sum(s["status"] == "failed" for s in doc.get("skipped_subjects", []))
    return 2 if failed else 0


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"
