"""`cmb import-study`: read a subject back out of a CMB dataset written by `cmb export`.

    cmb import-study DATASET --subject ID --out DIR [--overwrite]
    cmb import-study DATASET            (lists the subjects)

Writes DIR/sub-<id>_<seq>.nii.gz (image), sub-<id>_scribbles.nii.gz,
sub-<id>_cmb_mask.nii.gz, sub-<id>_cmb.seg.nrrd and sub-<id>_annotation.json: the
same arrays, geometry and document as in the dataset.
"""
import shutil
from pathlib import Path


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import-study", help="read an annotated subject back out of a CMB dataset",
        description="Check one subject of a dataset written by cmb export (annotation validated, images "
                    "readable) and copy its image, scribbles, CMB mask, segmentation and annotation to DIR. "
                    "Without --subject, list the subjects.")
    p.add_argument("dataset", metavar="DATASET", help="dataset folder")
    p.add_argument("--subject", metavar="ID", help="subject id")
    p.add_argument("--out", metavar="DIR", help="output folder (required with --subject)")
    p.add_argument("--name", default="cmb_annotation", help="derivative folder name (default cmb_annotation)")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist in DIR")
    return p


def run(args) -> int:
    from ..annotation.dataset import import_subject, list_subjects, subject_files
    from ..errors import CMBError
    from ..io import atomic_path

    if not Path(args.dataset).is_dir():
        raise CMBError(f"{args.dataset}: dataset folder not found")
    if not args.subject:
        for label in list_subjects(args.dataset, args.name):
            print(f"sub-{label}")
        return 0
    if not args.out:
        raise CMBError("--out DIR is needed with --subject")
    study = import_subject(args.dataset, args.subject, args.name)
    src = subject_files(args.dataset, study.subject, study.document["study"]["sequence"], args.name)
    sub = f"sub-{study.subject}"
    out = Path(args.out)
    names = {"image": src["image"].name, "scribbles": f"{sub}_scribbles.nii.gz",
             "mask": f"{sub}_cmb_mask.nii.gz", "segmentation": f"{sub}_cmb.seg.nrrd",
             "annotation": f"{sub}_annotation.json"}
    targets = {k: out / v for k, v in names.items() if src[k].is_file()}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not args.overwrite:
        raise CMBError(f"{clash[0]} exists; not overwritten (use --overwrite)")
    for key, target in targets.items():
        with atomic_path(target) as tmp:
            shutil.copyfile(src[key], tmp)
    print(f"{sub}: {len(study.document['findings'])} findings, {len(study.document['mimics'])} mimics -> {out}")
    return 0
