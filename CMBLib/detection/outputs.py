"""Files written by `cmb detect` (format "cmb-detections" 1.0) and the hand-over to annotation.

For an input ``NAME.nii.gz`` the outputs in the output folder are

* ``NAME_cmb_mask.nii.gz`` -- int16 instance labels 1..N on the input's grid;
* ``NAME_cmb.json`` -- ``{"format": "cmb-detections", "format_version": "1.0", "image":
  ..., "model": {...}, "settings": {...}, "timings_s": {...}, "warnings": [...],
  "cmb_count": N, "cmbs": [record, ...]}``; record i has label i + 1 in the mask and
  the keys of `CSV_COLUMNS` (centre in RAS mm and voxel index (i, j, k), sizes in mm);
* ``NAME_cmb.csv`` -- the records as a flat table (`CSV_COLUMNS`).

A run over several studies also writes ``cmb_summary.csv`` (one row per study: status,
CMB count, count per BOMBS size class and per location when known).
"""
import csv
import datetime
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from ..errors import CMBError
from ..io import read_json, write_json_atomic, write_text_atomic, write_volume

FORMAT = "cmb-detections"
FORMAT_VERSION = "1.0"
CSV_COLUMNS = ["label", "x_ras", "y_ras", "z_ras", "i", "j", "k", "voxel_count", "volume_mm3",
               "diameter_mm", "size_class", "max_probability", "mean_probability", "elongation",
               "sphericity", "vessel_like", "location", "side", "stage"]
SIZE_CLASSES = ("<5mm", "5-10mm", ">10mm")
SUMMARY_FILE = "cmb_summary.csv"


def output_paths(out_dir, name: str) -> dict[str, Path]:
    """{'mask', 'json', 'csv'} paths for study `name` in `out_dir`."""
    out_dir = Path(out_dir)
    return {"mask": out_dir / f"{name}_cmb_mask.nii.gz", "json": out_dir / f"{name}_cmb.json",
            "csv": out_dir / f"{name}_cmb.csv"}


def detection_document(result, image: str = "") -> dict:
    """The JSON document (format cmb-detections 1.0) of a `DetectionResult`."""
    s = result.settings
    geom = result.mask
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": str(image),
        "image_geometry": {"size_ijk": list(geom.shape_ijk), "spacing_mm": list(geom.spacing),
                           "origin_ras": list(geom.origin), "direction_ras": geom.direction.tolist()},
        "model": {"name": s.get("model"), "version": s.get("model_version"), "sha256": s.get("model_sha256")},
        "settings": {k: v for k, v in s.items() if k not in ("model", "model_version", "model_sha256")},
        "threshold": s.get("threshold"),
        "device": s.get("device"),
        "timings_s": dict(result.timings),
        "warnings": list(result.warnings),
        "dropped_candidates": dict(result.dropped),
        "cmb_count": len(result.records),
        "cmbs": [dict(r) for r in result.records],
        "suppressed_candidates": [dict(r) for r in getattr(result, "suppressed", [])],
    }


def records_csv(records: Iterable[dict]) -> str:
    """The records as CSV text with `CSV_COLUMNS`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in records:
        x, y, z = r["centre_ras"]
        i, j, k = r["centre_ijk"]
        w.writerow([r["label"], x, y, z, i, j, k, r["voxel_count"], r["volume_mm3"], r["diameter_mm"],
                    r["size_class"], r["max_probability"], r["mean_probability"], r["elongation"],
                    r["sphericity"], int(bool(r["vessel_like"])), r.get("location", ""), r.get("side", ""),
                    r.get("stage", "unet")])
    return buf.getvalue()


def write_outputs(result, out_dir, name: str, image: str = "", overwrite: bool = False) -> dict[str, Path]:
    """Write mask, JSON and CSV of `result` for study `name`; returns their paths.

    Refuses (CMBError) to replace existing files unless `overwrite`.  Each file is
    written atomically; the JSON is written last, so its presence marks a complete study.
    """
    paths = output_paths(out_dir, name)
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise CMBError(f"{existing[0]}: exists; not overwritten (use --overwrite)")
    write_volume(result.mask, paths["mask"])
    write_text_atomic(paths["csv"], records_csv(result.records))
    write_json_atomic(paths["json"], detection_document(result, image))
    return paths


def read_detections(path) -> dict:
    """Read a NAME_cmb.json (format cmb-detections 1.x); CMBError if it is not one."""
    path = Path(path)
    doc = read_json(path, "detections JSON")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CMBError(f"{path}: not a cmb-detections file")
    if str(doc.get("format_version", "")).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise CMBError(f"{path}: format version {doc.get('format_version')} is not supported "
                       f"(this version reads {FORMAT_VERSION.split('.')[0]}.x)")
    return doc


def summary_row(study: str, status: str, records: Optional[list[dict]] = None, message: str = "") -> dict:
    """One row of the run summary: study, status (ok/skipped/failed), counts, message."""
    records = records or []
    row = {"study": study, "status": status, "cmb_count": len(records) if status == "ok" else "",
           "message": message}
    for c in SIZE_CLASSES:
        row[f"n_{c}"] = sum(r.get("size_class") == c for r in records) if status == "ok" else ""
    for r in records:
        loc = r.get("location")
        if loc:
            row[f"n_location_{loc}"] = row.get(f"n_location_{loc}", 0) + 1
    return row


def write_summary(rows: list[dict], path) -> Path:
    """Write the run summary CSV (columns: fixed ones, then one per location seen)."""
    fixed = ["study", "status", "cmb_count"] + [f"n_{c}" for c in SIZE_CLASSES]
    extra = sorted({k for r in rows for k in r if k.startswith("n_location_")})
    cols = fixed + extra + ["message"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: (0 if k in extra and r.get("status") == "ok" and k not in r else r.get(k, ""))
                    for k in cols})
    return write_text_atomic(path, buf.getvalue())


def records_to_findings(records: Iterable[dict], status: str = "proposed") -> list[dict]:
    """Hand-over to annotation: detection records -> annotation findings.

    The conversion is `CMBLib.annotation.detections.findings_from_detections` (labels,
    centre, probability, suggested size class and location, detector mask metadata);
    here each finding's ``review_status`` becomes `status`: "proposed" for unreviewed
    candidates, "confirmed" for ones a reader accepted.
    """
    from ..annotation.detections import findings_from_detections

    if status not in ("proposed", "confirmed", "rejected"):
        raise CMBError(f"finding status must be proposed, confirmed or rejected, not '{status}'")
    findings = findings_from_detections(records)
    for finding in findings:
        finding["review_status"] = status
    return findings
