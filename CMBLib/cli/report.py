"""cmb report: the reader's report and the DICOM SEG from existing results.

    cmb report --dataset DATASET --subject ID [--image DICOM_FOLDER] --out DIR [--dicom-seg]
    cmb report --detections NAME_cmb.json --image IMAGE|DICOM_FOLDER --out DIR [--dicom-seg]
    cmb report --cohort DETECT_OUT_DIR [--out DIR]

An exported annotation (`cmb export` dataset) gives the rater's findings with certainty and
review status (rejected findings are shown, not counted, and left out of the SEG); a
detections JSON gives `cmb detect`'s records with the mask beside it.  `--dicom-seg`
needs --image to be the source DICOM series, on the same grid as the mask.  `--cohort`
writes cmb_report.html over every NAME_cmb.json in a folder.
"""
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser("report", help="HTML report / DICOM SEG from detections or an exported annotation",
                              description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="DATASET", help="exported annotation dataset (with --subject)")
    src.add_argument("--detections", metavar="JSON", help="NAME_cmb.json written by cmb detect")
    src.add_argument("--cohort", metavar="DIR", help="folder of NAME_cmb.json files: write cmb_report.html")
    p.add_argument("--subject", metavar="ID", help="subject of --dataset")
    p.add_argument("--image", metavar="IMAGE|DICOM", help="the image (a DICOM folder for --dicom-seg)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: beside the input)")
    p.add_argument("--series", metavar="UID|NUMBER", default=None, help="series of a DICOM folder")
    p.add_argument("--dicom-seg", action="store_true", help="also write NAME_cmb_seg.dcm (DICOM input only)")
    p.add_argument("--dicom-sr", action="store_true", help="with --dicom-seg: also NAME_cmb_sr.dcm (TID 1500)")
    p.add_argument("--no-report", action="store_true", help="only the DICOM SEG, no HTML")
    p.add_argument("--pseudonymise", action="store_true", help="report without patient identifiers")
    p.add_argument("--name", default=None, help="output name (default: the subject or the detections' name)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def run(args) -> int:
    from ..errors import CMBError

    if args.cohort:
        return _cohort(args)
    if args.dataset and not args.subject:
        raise CMBError("--dataset needs --subject")
    if args.dicom_sr and not args.dicom_seg:
        raise CMBError("--dicom-sr needs --dicom-seg (the SR points at the SEG's segments)")
    if args.dicom_seg and not args.image:
        raise CMBError("--dicom-seg needs --image DICOM_FOLDER (the source series)")
    image, headers, study = _image(args)
    if args.dataset:
        from ..annotation.dataset import import_subject

        s = import_subject(args.dataset, args.subject)
        records, mask, source, name = s.document["findings"], s.mask, "annotation", args.name or f"sub-{s.subject}"
        study.setdefault("rater", s.document.get("rater", ""))
        model, threshold, warnings, suppressed = None, None, [], []
        image = image or s.image
        out = Path(args.out or args.dataset)
    else:
        from ..detection.outputs import read_detections
        from ..io import read_volume

        doc = read_detections(args.detections)
        det = Path(args.detections)
        stem = det.name[: -len("_cmb.json")] if det.name.endswith("_cmb.json") else det.stem
        name = args.name or stem
        mask = read_volume(det.with_name(f"{stem}_cmb_mask.nii.gz"))
        records, source = doc["cmbs"], "detection"
        model = dict(doc.get("model") or {})
        from ..report.html import model_limits

        model["limits"] = model_limits(model.get("name") or "default")
        threshold, warnings = doc.get("threshold"), doc.get("warnings", [])
        suppressed = doc.get("suppressed_candidates") or []
        if image is None:
            raise CMBError("--detections needs --image (the image the CMBs were found in)")
        out = Path(args.out or det.parent)
    from ..geometry import geometry_difference

    diff = geometry_difference(mask, image, tol_mm=1e-2)
    if diff:
        raise CMBError(f"the CMB mask and --image are on different grids ({diff}); give the image the mask "
                       "was made on")
    study["name"] = name
    from ..report.outputs import write_study_extras

    paths = write_study_extras(out, name, image, mask, records, report=not args.no_report,
                               dicom_headers=headers if args.dicom_seg else None, study=study, model=model,
                               threshold=threshold, source=source, warnings=warnings, sr=args.dicom_sr,
                               overwrite=args.overwrite, suppressed=suppressed)
    for key, path in paths.items():
        print(f"{name}: {key} -> {path}")
    if args.dicom_seg and "seg" not in paths:
        print(f"{name}: no CMB, so no DICOM SEG (a SEG needs at least one segment)")
    return 0


def _image(args):
    """(Volume or None, DICOM headers or None, study identifiers) of --image."""
    from ..dicom.inputs import split_dicom_inputs
    from ..errors import CMBError
    from ..io import read_volume

    if not args.image:
        return None, None, {"pseudonym": args.pseudonymise}
    others, dicom, failed = split_dicom_inputs([args.image], args.series, None, args.pseudonymise)
    if failed:
        raise CMBError(failed[0][1])
    if dicom:
        if len(dicom) > 1:
            raise CMBError(f"{args.image}: holds {len(dicom)} studies; give one with --series")
        volume = dicom[0].read()
        return volume, dicom[0].headers, dicom[0].study_fields(args.pseudonymise)
    if args.dicom_seg:
        raise CMBError(f"--dicom-seg needs DICOM input (a folder of DICOM files); {args.image} is not DICOM")
    return read_volume(args.image), None, {"pseudonym": args.pseudonymise}


def _cohort(args) -> int:
    import json

    from ..errors import CMBError
    from ..report.html import COHORT_FILE, write_cohort_report

    folder = Path(args.cohort)
    files = sorted(folder.glob("*_cmb.json"))
    if not files:
        raise CMBError(f"{folder}: no NAME_cmb.json files (outputs of cmb detect)")
    studies = [{"name": f.name[: -len("_cmb.json")], "records": json.loads(f.read_text(encoding="utf-8"))["cmbs"]}
               for f in files]
    path = Path(args.out or folder) / COHORT_FILE
    if path.exists() and not args.overwrite:
        raise CMBError(f"{path}: exists; not overwritten (use --overwrite)")
    write_cohort_report(path, studies)
    print(f"{len(studies)} studies -> {path}")
    return 0
