"""Export and import annotated studies as a BIDS-derivatives dataset.

Layout (``<name>`` defaults to ``cmb_annotation``; ``<seq>`` is ``T2starw``, ``swi`` or
``Chimap`` for T2*-GRE, SWI and QSM)::

    DATASET/
      dataset_description.json            BIDS raw dataset
      participants.tsv                    one row per subject
      sub-<id>/anat/sub-<id>_<seq>.nii.gz the image
      derivatives/<name>/
        dataset_description.json          BIDS derivative dataset
        cmb_table.tsv                     every CMB of every subject (RAS mm, BOMBS fields)
        sub-<id>/anat/
          sub-<id>_desc-cmb_dseg.nii.gz        CMB instance mask (label = finding label)
          sub-<id>_desc-scribbles_dseg.nii.gz  the rater's scribbles (same labels)
          sub-<id>_desc-cmb_annotation.json    the annotation document (see the schema)
          sub-<id>_desc-cmb_dseg.seg.nrrd      Slicer segmentation; segment tags = metadata

Rejected findings stay in the document and the table but not in the CMB mask.
Export never replaces an existing subject unless ``overwrite=True``.  It is atomic:
everything is written into a hidden folder inside DATASET, then moved into place by
renames; if anything fails, the renames already done are undone, so the dataset is left
exactly as it was (a killed process can leave only that hidden folder behind).
"""
import csv
import io
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, geometry_difference
from ..progress import report
from ..validation import label_ids
from . import vocabulary as V
from .document import validate_document

DEFAULT_NAME = "cmb_annotation"
SEQUENCE_SUFFIX = {"T2starw": "T2starw", "SWI": "swi", "QSM": "Chimap"}
_SEQUENCE_ALIASES = {"t2starw": "T2starw", "t2star": "T2starw", "t2s": "T2starw", "t2*": "T2starw",
                     "gre": "T2starw", "swi": "SWI", "qsm": "QSM", "chimap": "QSM"}
TABLE_COLUMNS = ["participant_id", "label", "review_status", "certainty", "size_class",
                 "size_class_suggested", "location", "location_group", "side", "cause", "multiple",
                 "problematic", "x_ras", "y_ras", "z_ras", "voxel_count", "volume_mm3", "diameter_mm",
                 "max_probability"]
PARTICIPANT_COLUMNS = ["participant_id", "sequence", "n_cmb", "inclusion", "quality"]
TAG_FIELDS = ["review_status", "certainty", "size_class", "size_class_suggested", "location",
              "location_group", "side", "cause", "cause_other", "multiple", "problematic",
              "problem_reason", "comment"]


@dataclass
class Study:
    """One imported subject: image, CMB mask, scribbles (Volumes on one grid) and document."""

    subject: str
    image: Volume
    mask: Volume
    scribbles: Volume
    document: dict
    segments: list


# --- names -----------------------------------------------------------------------------
def subject_label(subject: str) -> str:
    """BIDS subject label: 'sub-01' or '01' -> '01'; only letters and digits allowed."""
    label = str(subject).strip()
    if label.startswith("sub-"):
        label = label[4:]
    if not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise CMBError(f"subject {subject!r}: a BIDS subject id has only letters and digits (e.g. 001, P12)")
    return label


def sequence_name(sequence: str) -> str:
    """Canonical sequence name (T2starw, SWI, QSM) from common spellings."""
    key = str(sequence).strip().lower()
    if key in _SEQUENCE_ALIASES:
        return _SEQUENCE_ALIASES[key]
    raise CMBError(f"sequence {sequence!r} is not one of {', '.join(V.SEQUENCES)}")


def subject_files(dataset, subject: str, sequence: str, name: str = DEFAULT_NAME) -> dict[str, Path]:
    """Paths of every file of one subject in the dataset (they need not exist)."""
    sub = f"sub-{subject_label(subject)}"
    root = Path(dataset)
    anat = root / sub / "anat"
    deriv = root / "derivatives" / name / sub / "anat"
    return {
        "image": anat / f"{sub}_{SEQUENCE_SUFFIX[sequence_name(sequence)]}.nii.gz",
        "mask": deriv / f"{sub}_desc-cmb_dseg.nii.gz",
        "scribbles": deriv / f"{sub}_desc-scribbles_dseg.nii.gz",
        "annotation": deriv / f"{sub}_desc-cmb_annotation.json",
        "segmentation": deriv / f"{sub}_desc-cmb_dseg.seg.nrrd",
    }


# --- export ----------------------------------------------------------------------------
def export_subject(dataset, subject: str, image: Volume, scribbles: Volume, mask: Volume, document: dict,
                   *, sequence: Optional[str] = None, name: str = DEFAULT_NAME, overwrite: bool = False,
                   progress=None) -> dict[str, Path]:
    """Write one annotated study into `dataset` (created if needed); returns its file paths.

    `scribbles` and `mask` are instance label maps on the image grid whose labels are the
    findings' labels; `document` must validate against the schema.  Raises CMBError,
    leaving the dataset untouched, when the subject exists and `overwrite` is False.
    """
    label = subject_label(subject)
    sub = f"sub-{label}"
    seq = sequence_name(sequence or document.get("study", {}).get("sequence") or "T2starw")
    root = Path(dataset)
    if root.exists() and not root.is_dir():
        raise CMBError(f"{root}: exists and is not a folder")
    _check_grids(image, scribbles, mask)
    doc = _export_document(document, label, seq, mask)
    mask_out = _without_rejected(mask, doc)

    raw_dir = root / sub
    deriv_root = root / "derivatives" / name
    deriv_dir = deriv_root / sub
    if (raw_dir.exists() or deriv_dir.exists()) and not overwrite:
        raise CMBError(f"{sub} already exists in {root}; not overwritten (use --overwrite to replace it)")

    files = subject_files(root, label, seq, name)
    created = _make_parents(root)
    from ..io import make_temp_dir

    tmp = make_temp_dir(root, f".cmb-export-{sub}-")
    try:
        staged = _stage(tmp, files, root, image, scribbles, mask_out, doc, label, name, progress)
        report(progress, 0.9, "moving the subject into place")
        _commit(staged, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    report(progress, 1.0, f"exported {sub}")
    return files


def _check_grids(image: Volume, scribbles: Volume, mask: Volume) -> None:
    for what, labels in (("scribbles", scribbles), ("mask", mask)):
        diff = geometry_difference(image, labels)
        if diff:
            raise CMBError(f"{what}: geometry differs from the image: {diff}")
        a = np.asarray(labels.array)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise CMBError(f"{what}: labels must lie in 0..65535")


def _export_document(document: dict, label: str, seq: str, mask: Volume) -> dict:
    import copy

    doc = copy.deepcopy(document)
    doc.setdefault("study", {})
    doc["study"]["subject"] = label
    doc["study"]["sequence"] = seq
    doc["study"]["image"] = f"sub-{label}_{SEQUENCE_SUFFIX[seq]}.nii.gz"
    validate_document(doc)
    known = {int(f["label"]) for f in doc["findings"]}
    missing = [v for v in np.unique(np.asarray(mask.array)) if v and int(v) not in known]
    if missing:
        raise CMBError(f"mask label{'s' if len(missing) > 1 else ''} {', '.join(str(int(v)) for v in missing)} "
                       "ha{} no finding in the annotation".format("ve" if len(missing) > 1 else "s"))
    return doc


def _without_rejected(mask: Volume, doc: dict) -> Volume:
    rejected = [int(f["label"]) for f in doc["findings"] if f["review_status"] == "rejected"]
    array = np.asarray(mask.array).astype(np.uint16)
    if rejected:
        array = np.where(np.isin(array, rejected), 0, array).astype(np.uint16)
    return mask.with_array(array)


def _stage(tmp: Path, files, root: Path, image, scribbles, mask, doc, label, name, progress):
    """Write everything under `tmp`; return [(staged path, final path, replace?)]."""
    from ..io import write_json_atomic, write_segmentation, write_volume

    sub = f"sub-{label}"
    raw_tmp = tmp / "raw" / sub
    deriv_tmp = tmp / "deriv" / sub
    here = {k: (raw_tmp if k == "image" else deriv_tmp) / "anat" / p.name for k, p in files.items()}
    report(progress, 0.1, "writing the image")
    write_volume(image, here["image"])
    report(progress, 0.4, "writing the masks")
    write_volume(mask.with_array(np.asarray(mask.array).astype(np.uint16)), here["mask"])
    write_volume(scribbles.with_array(np.asarray(scribbles.array).astype(np.uint16)), here["scribbles"])
    write_segmentation(mask, segments_from_document(doc, label_ids(mask.array)), here["segmentation"])
    write_json_atomic(here["annotation"], doc)
    report(progress, 0.7, "updating the tables")
    deriv_root = root / "derivatives" / name
    staged = [(raw_tmp, root / sub, True), (deriv_tmp, deriv_root / sub, True)]
    for path, text in ((root / "dataset_description.json", _raw_description()),
                       (deriv_root / "dataset_description.json", _derivative_description(name))):
        if not path.exists():
            staged.append((_stage_text(tmp, path.name + "." + str(len(staged)), text), path, False))
    participants = _merge_rows(root / "participants.tsv", PARTICIPANT_COLUMNS, [_participant_row(doc, label)],
                               sub, sort_key=lambda r: r["participant_id"])
    table = _merge_rows(deriv_root / "cmb_table.tsv", TABLE_COLUMNS, cmb_table_rows(doc, label), sub,
                        sort_key=lambda r: (r["participant_id"], _int(r.get("label"))))
    staged.append((_stage_text(tmp, "participants.tsv", participants), root / "participants.tsv", True))
    staged.append((_stage_text(tmp, "cmb_table.tsv", table), deriv_root / "cmb_table.tsv", True))
    return staged


def _stage_text(tmp: Path, name: str, text: str) -> Path:
    path = tmp / "tables" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _commit(staged, tmp: Path) -> None:
    """Rename staged paths into place; on any failure undo the renames done so far."""
    done = []  # (final path, backup path or None, folders created)
    try:
        for n, (src, dst, replace) in enumerate(staged):
            if dst.exists() and not replace:
                continue
            created = _make_parents(dst.parent)
            backup = None
            if dst.exists():
                backup = tmp / "old" / str(n)
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.replace(dst, backup)
            done.append((dst, backup, created))
            os.replace(src, dst)
    except BaseException:
        for dst, backup, created in reversed(done):
            try:
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                elif dst.exists():
                    dst.unlink()
                if backup is not None and backup.exists():
                    os.replace(backup, dst)
            except OSError:
                continue  # keep undoing the rest; the backup stays in the hidden folder
            _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (outermost first) again where they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (outermost first)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir()
    return list(reversed(missing))


def _raw_description() -> str:
    import json

    return json.dumps({"Name": "CMB annotation dataset", "BIDSVersion": "1.9.0", "DatasetType": "raw",
                       "GeneratedBy": [{"Name": V.TOOL_NAME}]}, indent=2) + "\n"


def _derivative_description(name: str) -> str:
    import json

    from .document import tool_version

    return json.dumps({
        "Name": f"CMB annotations ({name})", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": V.TOOL_NAME, "Version": tool_version(),
                         "Description": "Scribbles, grown CMB instance masks and BOMBS metadata; "
                                        f"annotation schema version {V.SCHEMA_VERSION}"}],
        "SourceDatasets": [{"URL": "../../"}],
    }, indent=2) + "\n"


# --- tables ----------------------------------------------------------------------------
def cmb_table_rows(doc: dict, subject: str) -> list[dict]:
    """One row per finding (RAS mm centre, mask measurements, BOMBS fields)."""
    rows = []
    for f in doc["findings"]:
        mask = f.get("mask") or {}
        centre = f.get("centre_ras") or [None, None, None]
        row = {"participant_id": f"sub-{subject_label(subject)}"}
        for key in TABLE_COLUMNS[1:12]:
            row[key] = f.get(key)
        row.update(x_ras=centre[0], y_ras=centre[1], z_ras=centre[2], voxel_count=mask.get("voxel_count"),
                   volume_mm3=mask.get("volume_mm3"), diameter_mm=mask.get("diameter_mm"),
                   max_probability=f.get("max_probability"))
        rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def _participant_row(doc: dict, label: str) -> dict:
    study = doc["study"]
    n_cmb = sum(1 for f in doc["findings"] if f["review_status"] != "rejected")
    return {"participant_id": f"sub-{label}", "sequence": study["sequence"], "n_cmb": str(n_cmb),
            "inclusion": study["inclusion"], "quality": study["quality"]}


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if np.isfinite(value) else "n/a"
    return str(value).replace("\t", " ").replace("\n", " ")


def _int(text) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def read_tsv(path) -> list[dict]:
    """Rows of a TSV file as dicts (empty list when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _merge_rows(path: Path, columns, new_rows, sub: str, sort_key) -> str:
    """TSV text: the rows of `path` minus those of `sub`, plus `new_rows`; extra columns kept."""
    rows = [r for r in read_tsv(path) if r.get("participant_id") != sub] + list(new_rows)
    header = list(columns)
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as fh:
            first = next(csv.reader(fh, delimiter="\t"), [])
        header += [c for c in first if c not in header]
    out = io.StringIO()
    writer = csv.DictWriter(out, header, delimiter="\t", lineterminator="\n", restval="n/a",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=sort_key))
    return out.getvalue()


# --- Slicer segmentation -----------------------------------------------------------------
def segments_from_document(doc: dict, labels: Iterable[int]) -> list[dict]:
    """Segment dicts for `CMBLib.io.write_segmentation`: one per finding whose label is in `labels`.

    `labels`: the label values present in the mask.  Segment name 'CMB <label>'; tags
    'cmb.<field>' hold the metadata (text made safe for the .seg.nrrd header: no '|',
    no line breaks).
    """
    present = {int(v) for v in labels}
    segments = []
    for f in doc["findings"]:
        if int(f["label"]) not in present:
            continue
        segments.append({"labelValue": int(f["label"]), "id": f"CMB_{int(f['label'])}",
                         "name": f"CMB {int(f['label'])}", "tags": segment_tags(f)})
    return segments


def segment_tags(finding: dict) -> dict[str, str]:
    """Tags ('cmb.<field>' -> text) carrying a finding's metadata on a Slicer segment."""
    tags = {"cmb.label": str(int(finding["label"]))}
    for key in TAG_FIELDS:
        tags[f"cmb.{key}"] = _tag_text(finding.get(key))
    m = finding.get("mask") or {}
    for key in ("volume_mm3", "diameter_mm", "voxel_count"):
        if m.get(key) is not None:
            tags[f"cmb.mask_{key}"] = _tag_text(m[key])
    return tags


def _tag_text(value) -> str:
    """Text safe in a .seg.nrrd header: ASCII (accents dropped: 'hémorragie' -> 'hemorragie',
    other letters -> '?'), one line, no '|'.  The annotation JSON keeps the exact text."""
    import unicodedata

    text = unicodedata.normalize("NFKD", _cell(value))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.encode("ascii", "replace").decode("ascii")
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.replace("|", "/").split())


# --- import ----------------------------------------------------------------------------
def list_subjects(dataset, name: str = DEFAULT_NAME) -> list[str]:
    """Subject labels (without 'sub-') that have an annotation in the dataset."""
    root = Path(dataset) / "derivatives" / name
    if not root.is_dir():
        return []
    return sorted(p.name[4:] for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("sub-") and not p.name.startswith("."))


def import_subject(dataset, subject: str, name: str = DEFAULT_NAME) -> Study:
    """Read one subject back: image, CMB mask, scribbles, document and segment list."""
    from ..io import read_segmentation, read_volume
    from .document import load_document

    label = subject_label(subject)
    root = Path(dataset)
    deriv = root / "derivatives" / name / f"sub-{label}" / "anat"
    if not deriv.is_dir():
        known = list_subjects(root, name)
        raise CMBError(f"sub-{label}: not found in {root}"
                       + (f"; subjects: {', '.join(known[:10])}" if known else ""))
    doc = load_document(deriv / f"sub-{label}_desc-cmb_annotation.json")
    files = subject_files(root, label, doc["study"].get("sequence") or "T2starw", name)
    for key in ("image", "mask", "scribbles"):
        if not files[key].is_file():
            raise CMBError(f"{files[key]}: missing; the subject is incomplete")
    image = read_volume(files["image"])
    mask = read_volume(files["mask"])
    scribbles = read_volume(files["scribbles"])
    segments = read_segmentation(files["segmentation"])[1] if files["segmentation"].is_file() else []
    return Study(label, image, mask, scribbles, doc, segments)
