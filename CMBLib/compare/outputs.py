"""Files of `cmb compare` (format "cmb-compare" 1.0), written all or nothing.

In the output folder:

* ``compare.json`` -- counts, ``aria_h_category``, the lists ``new``, ``persisting``,
  ``no_longer_seen`` and ``outside_common_view`` (each entry: ``centre_ras`` in the
  follow-up's RAS mm, ``baseline_centre_ras`` in the baseline's or null, sizes,
  probabilities, ``how`` it was classed: ``"difference"`` for a new CMB found on the
  difference image, `new_spots`), the registration (follow-up RAS -> baseline RAS
  4x4 matrix) and its quality figures, regions that turned dark, settings, timings;
* ``compare.csv`` -- one row per CMB with both coordinates;
* ``new_cmb_mask.nii.gz`` -- labels 1..N of the new CMBs (N = ``new`` entry N) on the
  follow-up grid;
* ``compare_report.html`` -- the reader's report, baseline and follow-up side by side for
  every new CMB;
* with a DICOM follow-up and at least one new CMB: ``new_cmb_seg.dcm`` (DICOM SEG of the new
  CMBs) and ``new_cmb_sr.dcm`` (TID 1500 report of them; the count is its number of findings).

Everything is written into a temporary folder beside the output folder and moved into
place only when all of it succeeded.
"""
import csv
import datetime
import io
import os
import shutil
from pathlib import Path
from typing import Optional

from ..errors import CMBError

FORMAT = "cmb-compare"
FORMAT_VERSION = "1.0"
FILES = {"json": "compare.json", "csv": "compare.csv", "mask": "new_cmb_mask.nii.gz",
         "report": "compare_report.html", "seg": "new_cmb_seg.dcm", "sr": "new_cmb_sr.dcm"}
CLASSES = ("new", "persisting", "no_longer_seen", "outside_common_view")
CSV_COLUMNS = ["class", "number", "x_ras", "y_ras", "z_ras", "baseline_x_ras", "baseline_y_ras", "baseline_z_ras",
               "diameter_mm", "max_probability", "baseline_max_probability", "how", "near_dark_region"]


def compare_document(result, baseline: str = "", followup: str = "") -> dict:
    """The compare.json document of a `pipeline.CompareResult`."""
    c = result.classes
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "baseline": {"image": str(baseline), "findings": result.baseline.source, "cmb_count":
                     len(result.baseline.records), "model": result.baseline.model},
        "followup": {"image": str(followup), "findings": result.followup.source, "cmb_count":
                     len(result.followup.records), "model": result.followup.model},
        "counts": {k: len(c[k]) for k in CLASSES},
        "new_count": len(c["new"]),
        "aria_h_category": result.aria_h_category,
        "aria_h_rule": "new CMBs since the baseline: none 0, mild 1-4, moderate 5-9, severe >= 10",
        "registration": dict(result.registration.as_dict(), quality=result.quality),
        "settings": result.settings, "timings_s": result.timings, "warnings": list(result.warnings),
        "dark_regions": result.dark_regions,
        **{k: c[k] for k in CLASSES},
    }


def compare_csv(result) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for cls in CLASSES:
        for n, e in enumerate(result.classes[cls], start=1):
            b = e.get("baseline_centre_ras") or ["", "", ""]
            w.writerow([cls, n, *e["centre_ras"], *b, e.get("diameter_mm", e.get("baseline_diameter_mm", "")),
                        e.get("max_probability", ""), e.get("baseline_max_probability", ""), e.get("how", "new"),
                        int(bool(e.get("near_dark_region")))])
    return buf.getvalue()


def prepare_out_dir(out_dir, overwrite: bool = False) -> Path:
    """Refuse an output folder that holds compare outputs already (unless `overwrite`) or is
    a file; returns it as a Path.  Nothing is created here."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CMBError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not overwrite:
        there = [name for name in FILES.values() if (out / name).exists()]
        if there:
            raise CMBError(f"{out / there[0]}: exists; not overwritten (use --overwrite)")
    return out


def write_compare_outputs(result, out_dir, baseline_volume, followup_volume, baseline: str = "",
                          followup: str = "", dicom_headers: Optional[list] = None, study: Optional[dict] = None,
                          overwrite: bool = False) -> dict:
    """Write every file of the module docstring; returns {key: final path}.  All files are
    made in a temporary folder first; on any error nothing is left in `out_dir`."""
    from ..io import make_temp_dir, write_json_atomic, write_text_atomic, write_volume
    from .report import write_compare_report

    out = prepare_out_dir(out_dir, overwrite)
    tmp = make_temp_dir(out.resolve().parent, f".{out.name}.compare-")
    try:
        paths = {"mask": write_volume(result.new_mask, tmp / FILES["mask"]),
                 "csv": write_text_atomic(tmp / FILES["csv"], compare_csv(result)),
                 "report": write_compare_report(tmp / FILES["report"], result, baseline_volume, followup_volume,
                                                study=study)}
        if dicom_headers is not None and result.classes["new"]:
            paths.update(_write_dicom(tmp, result, dicom_headers))
        paths["json"] = write_json_atomic(tmp / FILES["json"], compare_document(result, baseline, followup))
        final = {}
        out.mkdir(parents=True, exist_ok=True)
        for key in set(FILES) - set(paths):          # --overwrite: no stale SEG / SR of an earlier run
            (out / FILES[key]).unlink(missing_ok=True)
        for key in ("mask", "csv", "report", "seg", "sr", "json"):   # the JSON last: it marks a complete run
            if key in paths:
                final[key] = out / FILES[key]
                os.replace(paths[key], final[key])
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_dicom(folder: Path, result, headers: list) -> dict:
    """DICOM SEG of the new CMBs on the follow-up series, and the SR listing them."""
    import pydicom

    from ..dicom.seg import write_seg
    from ..dicom.sr import write_sr

    records = []
    for n, e in enumerate(result.classes["new"], start=1):
        records.append({"label": n, "diameter_mm": e.get("diameter_mm"), "volume_mm3": e.get("volume_mm3"),
                        "location": e.get("location"), "side": e.get("side")})
    labels = [r["label"] for r in records]
    model = result.followup.model or {}
    seg = write_seg(folder / FILES["seg"], result.new_mask, headers, labels,
                    algorithm_name=model.get("name") or "CMBLib", algorithm_version=model.get("version") or "")
    sr = write_sr(folder / FILES["sr"], pydicom.dcmread(str(seg)), headers, records,
                  algorithm_name=model.get("name") or "CMBLib", algorithm_version=model.get("version") or "")
    return {"seg": seg, "sr": sr}
