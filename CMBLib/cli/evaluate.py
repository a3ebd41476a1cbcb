"""`cmb evaluate`: score predicted CMB masks against reference masks and write a report.

    cmb evaluate --pred PRED_DIR --ref REF_DIR --rule valdo --distance-mm 5 --out REPORT_DIR
"""
import sys
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser(
        "evaluate", help="score predicted CMB masks against reference masks",
        description="Match predicted CMBs to reference CMBs (valdo, touch or one-to-one rule) and write "
                    "metrics.json, per_case.csv, per_cmb.csv, summary.md and froc.png (when scores exist). "
                    "Files pair by name, case name (NAME_cmb_mask with NAME) or BIDS subject; one --pred file "
                    "and one --ref file pair with each other whatever their names.  A reference without a "
                    "prediction counts all its CMBs as false negatives; unpaired files are always listed, and "
                    "a run in which nothing pairs stops with exit code 2.")
    p.add_argument("--pred", nargs="+", required=True, metavar="PATH",
                   help="prediction folder(s) or file(s): label masks, binary masks or probability maps")
    p.add_argument("--ref", nargs="+", required=True, metavar="PATH", help="reference folder(s) or file(s)")
    p.add_argument("--rule", default="valdo", choices=["valdo", "touch", "one-to-one"],
                   type=lambda s: s.replace("_", "-"), help="matching rule (default: valdo)")
    p.add_argument("--distance-mm", type=float, default=5.0,
                   help="centre-of-mass distance threshold in mm; a match must be closer (valdo, one-to-one; "
                        "default 5)")
    p.add_argument("--distance-units", default="mm", choices=["mm", "voxels"],
                   help="measure centre distances in mm (default, as the VALDO challenge scored: its "
                        "compare_segmentations.py passes the voxel size) or in voxel index units (VALDO's "
                        "PairwiseMeasures with its default pixdim; then --distance-mm counts voxels)")
    p.add_argument("--connectivity", type=int, default=26, choices=[6, 18, 26],
                   help="connected-component connectivity (default 26)")
    p.add_argument("--elements", default="components", choices=["components", "labels"],
                   help="a CMB is a connected component of the non-zero voxels (default, as VALDO) "
                        "or one label value of an instance map")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="probability maps are binarised at >= this value (default 0.5)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in REPORT_DIR")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    return p


def run(args) -> int:
    from ..metrics.evaluate_folder import evaluate_folders

    out = Path(args.out)
    summary = evaluate_folders(
        args.pred, args.ref, out, rule=args.rule, distance_mm=args.distance_mm,
        connectivity=args.connectivity, elements=args.elements, threshold=args.threshold,
        distance_units=args.distance_units,
        overwrite=args.overwrite, log=None if args.quiet else (lambda m: print(m, file=sys.stderr)))
    # unpaired files are always reported, --quiet or not: a silently unscored file looks like a result
    for ref in summary["unpaired_references"]:
        print(f"cmb evaluate: reference {Path(ref).name} has no prediction; its CMBs count as false negatives",
              file=sys.stderr)
    for pred in summary["unpaired_predictions"]:
        print(f"cmb evaluate: prediction {Path(pred).name} has no reference; not scored", file=sys.stderr)
    print(f"{summary['n_cases']} cases: TP {summary['tp']}  FP {summary['fp']}  FN {summary['fn']}  "
          f"sensitivity {_f(summary['sensitivity'])}  precision {_f(summary['precision'])}  F1 {_f(summary['f1'])}"
          f"  -> {out}")
    return 0


def _f(v):
    if v is None:
        return "n/a"
    return f"{v:.3f}"

