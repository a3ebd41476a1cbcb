"""`cmb locate`: anatomical MARS region of each point (atlas registration or user labels).

    cmb locate IMAGE POINTS.csv [--labels SEG.nii.gz] [--out OUT.csv] [--summary MARS.csv]
"""
import csv
import io
import sys

COLUMNS = ["x", "y", "z", "region", "category", "side", "route", "distance_mm", "mni_x", "mni_y", "mni_z"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "locate", help="MARS/BOMBS anatomical region of each CMB point",
        description="Read RAS mm points (CSV columns x,y,z) and write their MARS region (brainstem, cerebellum, "
                    "basal_ganglia, thalamus, internal_capsule, external_capsule, corpus_callosum, "
                    "deep_periventricular_wm, frontal, parietal, temporal, occipital, insula or outside), "
                    "category (lobar, deep, infratentorial, outside) and side.  By default the shipped MNI "
                    "atlas is registered to IMAGE (affine, mutual information: T1, T2*, SWI, QSM); with "
                    "--labels a FreeSurfer-style label map (aseg, aparc+aseg, aparc.a2009s+aseg, SynthSeg) "
                    "aligned with IMAGE is used instead.  Points in CSF within 3 mm of brain take the "
                    "nearest region.")
    p.add_argument("image", help="the image the points belong to (.nii, .nii.gz, .nrrd)")
    p.add_argument("points", help="CSV with columns x,y,z in RAS mm (Slicer markups CSV also accepted)")
    p.add_argument("--labels", metavar="SEG", help="FreeSurfer colour-table label map aligned with IMAGE")
    p.add_argument("--deformable", action="store_true",
                   help="add a coarse B-spline stage to the atlas registration (slower, slightly closer fit)")
    p.add_argument("--out", metavar="OUT.csv", help="output CSV (default: standard output)")
    p.add_argument("--summary", metavar="MARS.csv", help="also write the MARS count table (region x side)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def run(args) -> int:
    from ..io import read_csv_rows, read_points_csv, read_volume, write_text_atomic
    from ..location import Locator
    from ..location.summary import COLUMNS as SUMMARY_COLUMNS
    from ..location.summary import mars_table
    from ..progress import terminal_progress

    points = read_points_csv(args.points)  # first: a bad CSV fails before minutes of registration
    extra, rows = _extra_columns(read_csv_rows(args.points, "points file"), len(points))
    image = read_volume(args.image)
    labels = read_volume(args.labels) if args.labels else None
    progress = None if args.quiet else terminal_progress(sys.stderr)
    locator = Locator(image, labels, progress, None, args.deformable)
    records = locator.locate(points) if len(points) else []
    for w in locator.warnings:
        print(f"cmb locate: warning: {w}", file=sys.stderr)
    for rec, row in zip(records, rows):
        rec.update(row)
    text = to_csv(records, extra + COLUMNS)
    if args.out:
        write_text_atomic(args.out, text, overwrite=args.overwrite)
    else:
        sys.stdout.write(text)
    if args.summary:
        write_text_atomic(args.summary, to_csv(mars_table(records), SUMMARY_COLUMNS), overwrite=args.overwrite)
    return 0


def _extra_columns(rows, n):
    """Other columns of the input CSV rows (e.g. an id or label), kept in front of the output."""
    header = [h.strip() for h in rows[0]]
    skip = {"x", "y", "z", "r", "a", "s"} | set(COLUMNS)
    keep = [k for k, h in enumerate(header) if h and h.lower() not in skip]
    if len(rows) - 1 != n:
        return [], [{} for _ in range(n)]
    return [header[k] for k in keep], [{header[k]: (r[k] if k < len(r) else "") for k in keep} for r in rows[1:]]


def to_csv(records, columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()
