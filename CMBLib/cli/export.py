"""`cmb export`: write an annotated study into a BIDS-derivatives CMB dataset.

    cmb export --image IMG --scribbles SCR [--annotation ANN.json] [--masks MASK]
               --out DATASET --subject ID [--sequence T2starw] [--overwrite] [--rater ID]

Without --masks, masks are grown from the scribbles (one CMB per scribble label, same
label ids).  Metadata missing from the annotation is filled with 'unreviewed'; the size
class is pre-filled from the grown mask and a location suggested when the location
helper is installed.  An existing subject is never replaced without --overwrite.
"""
import sys
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="export an annotated study (image, scribbles, metadata) as a BIDS dataset",
        description="Grow CMB masks from scribbles (unless --masks is given), complete the annotation "
                    "with 'unreviewed' defaults, validate it against the annotation schema and write the "
                    "subject into DATASET (BIDS raw + derivatives/<name>/). Atomic; never overwrites a "
                    "subject without --overwrite.")
    p.add_argument("--image", required=True, metavar="IMG", help="SWI / T2*-GRE / QSM image (.nii.gz, .nrrd)")
    p.add_argument("--scribbles", required=True, metavar="SCR",
                   help="scribble label map on the image grid (each label = one CMB); .nii.gz, .nrrd or .seg.nrrd")
    p.add_argument("--annotation", metavar="ANN.json", help="annotation document (may be partial)")
    p.add_argument("--masks", metavar="MASK", help="existing CMB instance mask (labels = scribble labels)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder (created if needed)")
    p.add_argument("--subject", required=True, metavar="ID", help="subject id (letters and digits)")
    p.add_argument("--sequence", metavar="SEQ",
                   help="T2starw, SWI or QSM (default: from the annotation, else guessed from the file name)")
    p.add_argument("--rater", default="", metavar="ID", help="rater id recorded in the document")
    p.add_argument("--name", default="cmb_annotation", help="derivative folder name (default cmb_annotation)")
    p.add_argument("--mode", default=None, help="region-growing intensity mode (default: the engine's)")
    p.add_argument("--max-diameter", type=float, default=10.0, metavar="MM",
                   help="largest CMB diameter in mm for region growing (default 10)")
    p.add_argument("--no-location", action="store_true",
                   help="skip the location suggestion (atlas registration, a few seconds)")
    p.add_argument("--overwrite", action="store_true", help="replace the subject if it exists")
    return p


def run(args) -> int:
    import numpy as np

    from ..annotation.dataset import export_subject, sequence_name, subject_label
    from ..annotation.document import complete_document, load_document, validate_document
    from ..annotation.masks import (
        ensure_findings,
        generate_masks,
        labels_on_image_grid,
        measure_masks,
        suggest_locations,
    )
    from ..errors import CMBError
    from ..io import read_volume
    from ..validation import label_ids, validate_image, validate_labelmap

    label = subject_label(args.subject)
    out = Path(args.out)
    sub_dirs = [out / f"sub-{label}", out / "derivatives" / args.name / f"sub-{label}"]
    if any(d.exists() for d in sub_dirs) and not args.overwrite:
        raise CMBError(f"sub-{label} already exists in {out}; not overwritten (use --overwrite to replace it)")

    image = validate_image(read_volume(args.image), "image")
    scribbles = labels_on_image_grid(read_volume(args.scribbles), image, "scribbles")
    validate_labelmap(scribbles, image, "scribbles")
    scribbles = scribbles.with_array(np.rint(np.asarray(scribbles.array)).astype(np.uint16))
    raw = load_document(args.annotation, complete=True) if args.annotation else None
    given = _given_sequence(args.annotation) if args.annotation else None
    seq = sequence_name(args.sequence or given or _guess_sequence(args.image))
    doc = complete_document(raw, subject=label, sequence=seq, rater=args.rater)
    if args.rater:
        doc["rater"] = args.rater
    labels = label_ids(scribbles.array)
    ensure_findings(doc, labels)

    if args.masks:
        mask = labels_on_image_grid(read_volume(args.masks), image, "masks")
        validate_labelmap(mask, image, "masks")
        mask = mask.with_array(np.rint(np.asarray(mask.array)).astype(np.uint16))
        measure_masks(mask, doc)
    elif labels:
        grow = {"max_diameter_mm": args.max_diameter}
        if args.mode:
            grow["mode"] = args.mode
        mask, doc = generate_masks(image, scribbles, doc, **grow)
    else:
        mask = scribbles.with_array(np.zeros(scribbles.array.shape, np.uint16))
    doc, note = (doc, "") if args.no_location else suggest_locations(image, doc)
    if note and doc["findings"]:
        print(f"cmb export: note: {note}", file=sys.stderr)
    for f in doc["findings"]:
        if f.get("mask") is None and f["review_status"] != "rejected":
            print(f"cmb export: warning: finding {f['label']} has no mask (its scribble has no voxels)",
                  file=sys.stderr)
    validate_document(doc)
    files = export_subject(out, label, image, scribbles, mask, doc, sequence=seq, name=args.name,
                           overwrite=args.overwrite)
    n = sum(1 for f in doc["findings"] if f.get("mask"))
    print(f"sub-{label}: {len(doc['findings'])} findings, {n} masks -> {files['mask']}")
    return 0


def _given_sequence(path):
    """study.sequence as written in the annotation file (None when absent)."""
    from ..io import read_json

    doc = read_json(path, "an annotation")
    study = (doc.get("study") if isinstance(doc, dict) else None) or {}
    return study.get("sequence") if isinstance(study, dict) else None


def _guess_sequence(path) -> str:
    name = Path(path).name.lower()
    if "qsm" in name or "chimap" in name:
        return "QSM"
    if "swi" in name:
        return "SWI"
    return "T2starw"
