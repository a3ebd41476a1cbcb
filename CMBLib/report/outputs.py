"""The optional outputs of `cmb detect` (and `cmb report`): `--report`, `--dicom-seg`,
the cohort summary, and the command-line options that ask for them.

``write_study_extras(...)`` is the library call for one study (arrays + records):
NAME_cmb_report.html and/or NAME_cmb_seg.dcm.
"""
import json
from pathlib import Path
from typing import Optional

from ..errors import CMBError

DEFAULT_TEMPLATE = "{PatientID}_{SeriesNumber}_{SeriesDescription}"


def add_arguments(p) -> None:
    """--report, --dicom-seg, --series, --dicom-names, --pseudonymise (for `cmb detect`)."""
    g = p.add_argument_group("reports and DICOM")
    g.add_argument("--report", action="store_true",
                   help="write NAME_cmb_report.html per study (and cmb_report.html over several studies)")
    g.add_argument("--dicom-seg", action="store_true",
                   help="write NAME_cmb_seg.dcm, a DICOM SEG referencing the source series (DICOM input only)")
    g.add_argument("--dicom-sr", action="store_true",
                   help="with --dicom-seg: also NAME_cmb_sr.dcm, a TID 1500 measurement report (volume, diameter, "
                        "location per CMB)")
    g.add_argument("--series", metavar="UID|NUMBER", default=None,
                   help="DICOM folders: the series to read (SeriesInstanceUID or SeriesNumber); default: the "
                        "T2*/SWI/QSM series found by its metadata")
    g.add_argument("--dicom-names", metavar="TEMPLATE", default=DEFAULT_TEMPLATE,
                   help="output names of DICOM series from their attributes (default %(default)s)")
    g.add_argument("--pseudonymise", action="store_true",
                   help="DICOM series: output names 'dicom-<hash of the series UID>' and reports without "
                        "patient identifiers (the SEG still carries them, as PACS needs)")


def check_arguments(args, inputs) -> None:
    """--dicom-seg needs every input to be DICOM (one-line CMBError otherwise)."""
    from ..dicom.inputs import is_dicom_input

    if getattr(args, "dicom_sr", False) and not getattr(args, "dicom_seg", False):
        raise CMBError("--dicom-sr needs --dicom-seg (the SR points at the SEG's segments)")
    if getattr(args, "dicom_seg", False):
        plain = [str(i) for i in inputs if not is_dicom_input(i)]
        if plain:
            raise CMBError(f"--dicom-seg needs DICOM input (a folder of DICOM files); {plain[0]} is not DICOM")


def write_study_extras(out_dir, name: str, image, mask, records: list, *, report: bool = False,
                       dicom_headers: Optional[list] = None, study: Optional[dict] = None,
                       model: Optional[dict] = None, threshold: Optional[float] = None,
                       source: str = "detection", warnings: Optional[list] = None,
                       labels: Optional[list] = None, sr: bool = False, overwrite: bool = False,
                       suppressed: Optional[list] = None) -> dict:
    """Write the report (when `report`) and the DICOM SEG (when `dicom_headers` are given)
    for one study (and with `sr` a TID 1500 SR beside the SEG); returns {'report': path,
    'seg': path, 'sr': path} for what was written.

    image, mask: Volumes on one grid (mask: instance labels = record labels).  records:
    detection records or annotation findings; suppressed: candidates the location filter set
    aside (shown in the report, never in the SEG).  A SEG is skipped (no file, no error) when
    there is no CMB: a DICOM SEG needs at least one segment."""
    from .html import REPORT_SUFFIX, write_study_report

    out_dir = Path(out_dir)
    written = {}
    if dicom_headers is not None:
        from ..dicom.seg import SEG_SUFFIX, write_seg

        if labels is None:
            labels = [int(r["label"]) for r in records if r.get("review_status") != "rejected"]
        if labels:
            model = model or {}
            written["seg"] = write_seg(out_dir / f"{name}{SEG_SUFFIX}", mask, dicom_headers, labels,
                                       overwrite=overwrite, algorithm_name=model.get("name") or "CMBLib",
                                       algorithm_version=model.get("version") or "",
                                       manual=source == "annotation")
            if sr:
                import pydicom

                from ..dicom.sr import SR_SUFFIX, write_sr

                by_label = {int(r["label"]): r for r in records}
                written["sr"] = write_sr(out_dir / f"{name}{SR_SUFFIX}", pydicom.dcmread(str(written["seg"])),
                                         dicom_headers, [by_label[lab] for lab in labels], overwrite=overwrite,
                                         algorithm_name=model.get("name") or "CMBLib",
                                         algorithm_version=model.get("version") or "")
    if report:
        written["report"] = write_study_report(out_dir / f"{name}{REPORT_SUFFIX}", image, records, study=study,
                                               model=model, threshold=threshold, source=source,
                                               warnings=warnings, overwrite=overwrite, suppressed=suppressed)
    return written


def detect_extras(args, item, volume, result, out_dir, name: str) -> dict:
    """`cmb detect` glue: the report / SEG of one detection result."""
    from ..dicom.inputs import is_dicom_input
    from .html import model_limits

    want_seg = bool(getattr(args, "dicom_seg", False))
    if not (getattr(args, "report", False) or want_seg):
        return {}
    s = result.settings
    model = {"name": s.get("model"), "version": s.get("model_version"),
             "limits": model_limits(getattr(args, "model", "default") or "default")}
    pseudo = bool(getattr(args, "pseudonymise", False))
    study = item.study_fields(pseudo) if is_dicom_input(item) else {"name": name}
    headers = item.headers if (want_seg and is_dicom_input(item)) else None
    return write_study_extras(out_dir, name, volume, result.mask, result.records, report=args.report,
                              dicom_headers=headers, study=study, model=model, threshold=s.get("threshold"),
                              warnings=result.warnings, sr=bool(getattr(args, "dicom_sr", False)),
                              overwrite=args.overwrite, suppressed=list(getattr(result, "suppressed", []) or []))


def write_cohort(args, rows: list, out_dir) -> Optional[Path]:
    """cmb_report.html over the studies of a run (when --report and more than one study):
    counts from each study's NAME_cmb.json."""
    from ..detection.outputs import output_paths
    from .html import COHORT_FILE, write_cohort_report

    if not getattr(args, "report", False) or len(rows) < 2:
        return None
    studies = []
    for r in rows:
        path = output_paths(out_dir, r["study"])["json"]
        if r["status"] in ("ok", "skipped") and path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            studies.append({"name": r["study"], "records": doc.get("cmbs", []), "status": "ok"})
        else:
            studies.append({"name": r["study"], "status": r["status"], "message": r.get("message", "")})
    return write_cohort_report(Path(out_dir) / COHORT_FILE, studies)
