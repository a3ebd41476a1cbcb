"""`run_benchmark`: detection on every subject of a public data set's release, then its scores.

REPORT_DIR receives

* ``metrics.json``, ``per_case.csv``, ``per_cmb.csv``, ``summary.md`` -- as `cmb evaluate`
  writes them (`CMBLib.metrics.report.write_report`: pooled ``tp``, ``fp``, ``fn`` at the
  top level), with the benchmark's own keys added: ``dataset``, ``benchmark`` (settings,
  subjects listed / scored / skipped), ``operating_threshold``, ``by_size_mm``,
  ``by_cohort``, ``by_subject_series``, ``by_slice_thickness``, ``skipped_subjects``;
* ``per_subject.csv`` -- every subject listed, scored or skipped (with the reason);
* ``froc.png`` and ``report.html`` (self-contained, the FROC plot embedded);
* ``benchmark.json`` -- what was run (data set, folder, model, threshold), so a second run
  into the same folder resumes and a different run is refused;
* ``detections/`` -- per subject what `cmb detect` writes (``NAME_cmb_mask.nii.gz``,
  ``NAME_cmb.json``, ``NAME_cmb.csv``) and ``NAME_cmb_prob.nii.gz`` (the probability map,
  values below the lowest FROC level set to 0).  A subject whose detections exist is not
  run again (unless ``overwrite``).
"""
import csv
import io
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import CMBError
from ..geometry import geometry_difference
from ..io import read_json, read_volume, strip_image_suffix, write_json_atomic, write_text_atomic, write_volume
from .datasets import (
    COHORTS,
    SEQUENCE,
    cuhk_reference_ijk,
    find_subjects,
    slice_thickness_mm,
    subject_series,
    valdo_cohort,
)
from .scoring import (
    DISTANCE_MM,
    FROC_LEVELS,
    froc_curve,
    froc_levels,
    group_table,
    level_counts,
    mask_elements,
    point_elements,
    points_case,
    size_table,
)

MANIFEST = "benchmark.json"
MANIFEST_FORMAT = "cmb-benchmark"
FORMAT_VERSION = "1.0"
DETECTIONS = "detections"
PER_SUBJECT = "per_subject.csv"
HTML = "report.html"
# settings that must agree for a run to resume into an existing report folder
RESUME_KEYS = ("dataset", "data_dir", "model", "threshold", "second_stage", "location_filter")


def run_benchmark(dataset: str, data_dir, out_dir, model: str = "default", models_dir=None, device: str = "auto",
                  threshold: Optional[float] = None, limit: Optional[int] = None,
                  second_stage: Optional[bool] = None, location_filter: Optional[bool] = None,
                  overwrite: bool = False, log: Optional[Callable[[str], None]] = None) -> dict:
    """Detect and score every subject of `data_dir` (layout `dataset`: 'valdo' or 'cuhk').

    Returns the metrics document (as written to metrics.json) with 'froc' and
    'skipped_subjects'.  CMBError, before anything is written, when the folder is not
    that release's layout, `out_dir` is not a folder, or holds another run's report.
    """
    say = log or (lambda m: None)
    dataset = str(dataset).lower()
    if threshold is not None and not 0.0 < float(threshold) < 1.0:
        raise CMBError(f"--threshold {threshold}: must lie between 0 and 1")
    if limit is not None and int(limit) < 1:
        raise CMBError(f"--limit {limit}: must be 1 or more")
    subjects = find_subjects(dataset, data_dir)
    n_listed = len(subjects)
    if limit is not None:
        subjects = subjects[: int(limit)]
    out = Path(out_dir)
    manifest = {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "dataset": dataset,
                "data_dir": str(Path(data_dir).resolve()), "model": str(model),
                "models_dir": str(models_dir) if models_dir else None,
                "threshold": None if threshold is None else float(threshold),
                "second_stage": second_stage, "location_filter": location_filter,
                "sequence": SEQUENCE[dataset], "distance_mm": DISTANCE_MM, "rule": "valdo"}
    _check_out(out, manifest, overwrite)
    det_dir = out / DETECTIONS
    det_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MANIFEST, manifest)

    detector = _Detector(model, models_dir, device, threshold, SEQUENCE[dataset], second_stage, location_filter)
    rows, scored = [], []
    for n, s in enumerate(subjects, 1):
        tag = f"[{n}/{len(subjects)}] {s.name}"
        row = {"subject": s.name, "status": "skipped", "reason": s.problem, "image": str(s.image or ""),
               "reference": str(s.reference or "")}
        rows.append(row)
        if s.problem:
            say(f"{tag}: skipped ({s.problem})")
            continue
        t0 = time.perf_counter()
        try:
            image, ref = _read_subject(dataset, s)
        except CMBError as exc:
            row["reason"] = str(exc)
            say(f"{tag}: skipped ({exc})")
            continue
        row.update(_grid_fields(dataset, s.name, image))
        name = strip_image_suffix(s.image)
        try:
            det, how = detector.get(image, s.image, det_dir, name, overwrite)
        except CMBError as exc:
            row.update(status="failed", reason=f"detection: {exc}")
            say(f"{tag}: failed ({exc})")
            continue
        except Exception as exc:  # a bug must not stop the benchmark; say what happened in one line
            if os.environ.get("CMB_DEBUG"):
                raise
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            row.update(status="failed", reason=f"detection: internal error ({type(exc).__name__}: {first})")
            say(f"{tag}: failed ({row['reason']})")
            continue
        subject = _score(dataset, s.name, image, ref, det)
        subject.update({k: row[k] for k in ("cohort", "series", "slice_thickness") if k in row})
        scored.append(subject)
        r = subject["result"]
        row.update(status="scored", reason="", detection=how, n_ref=r.n_ref, n_pred=r.n_pred, tp=r.tp, fp=r.fp,
                   fn=r.fn, sensitivity=r.sensitivity, precision=r.precision, f1=r.f1,
                   seconds=round(time.perf_counter() - t0, 2), detection_file=str(det["json"]))
        say(f"{tag}: {r.n_ref} reference, {r.n_pred} predicted; TP {r.tp} FP {r.fp} FN {r.fn}"
            + (" (detections reused)" if how == "reused" else ""))

    write_text_atomic(out / PER_SUBJECT, _csv(rows))
    if not scored:
        raise CMBError(f"no subject could be scored ({len(rows)} listed); reasons in {out / PER_SUBJECT}")
    thresholds = sorted({s["threshold"] for s in scored})
    if len(thresholds) > 1:
        raise CMBError(f"the detections in {det_dir} were made at different thresholds ({thresholds}); "
                       "run again with --overwrite")
    levels = scored[0]["level_values"]
    doc = _write(out, dataset, manifest, scored, rows, levels, thresholds[0], n_listed, limit, det_dir)
    return doc


class _Detector:
    """Runs `detect` (model loaded on first use) or reads back the detections of a subject."""

    def __init__(self, model, models_dir, device, threshold, sequence, second_stage, location_filter):
        self.model, self.models_dir, self.device = model, models_dir, device
        self.threshold, self.sequence = threshold, sequence
        self.second_stage, self.location_filter = second_stage, location_filter
        self.loaded = None

    def get(self, image, image_path, det_dir: Path, name: str, overwrite: bool):
        from ..detection.outputs import output_paths, read_detections

        paths = output_paths(det_dir, name)
        paths["prob"] = det_dir / f"{name}_cmb_prob.nii.gz"
        if not overwrite and all(p.exists() for p in paths.values()):
            doc = read_detections(paths["json"])
            mask, prob = read_volume(paths["mask"]), read_volume(paths["prob"])
            if not geometry_difference(image, mask, tol_mm=0.01) and not geometry_difference(image, prob, 0.01):
                return self._pack(doc["cmbs"], doc.get("settings", {}), mask, prob, paths), "reused"
        return self._run(image, image_path, paths, name), "run"

    def _run(self, image, image_path, paths, name):
        from ..detection.outputs import write_outputs
        from ..detection.pipeline import detect
        from ..progress import Cancelled

        if self.loaded is None:
            from ..detection.inference import select_device
            from ..detection.model_io import load_model

            device = select_device(self.device)
            target = self.model
            if self.models_dir:
                from ..detection.registry import resolve

                target = resolve(self.model, self.models_dir)
            self.loaded = (device, load_model(target, device=device))
        device, model = self.loaded
        try:
            result = detect(image, model, device=device, threshold=self.threshold, sequence=self.sequence,
                            second_stage=self.second_stage, location_filter=self.location_filter)
        except Cancelled:
            raise KeyboardInterrupt from None
        floor = min(FROC_LEVELS[0], float(result.settings["threshold"]))
        prob = np.array(result.probability.array, dtype=np.float32)
        prob[prob < floor] = 0.0
        prob_vol = result.probability.with_array(prob)
        write_volume(prob_vol, paths["prob"])
        write_outputs(result, paths["json"].parent, name, image=str(image_path), overwrite=True)  # JSON last
        return self._pack(result.records, result.settings, result.mask, prob_vol, paths)

    @staticmethod
    def _pack(records, settings, mask, prob, paths):
        return {"records": records, "settings": settings, "mask": mask, "probability": prob,
                "json": paths["json"], "threshold": float(settings.get("threshold")),
                "min_diameter_mm": float(settings.get("min_diameter_mm", 2.0)),
                "max_diameter_mm": float(settings.get("max_diameter_mm", 10.0))}


def _check_out(out: Path, manifest: dict, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CMBError(f"--out {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / MANIFEST).is_file():
        raise CMBError(f"--out {out}: holds other files and no {MANIFEST}; give a new or empty folder")
    old = read_json(out / MANIFEST, "benchmark manifest")
    changed = [k for k in RESUME_KEYS if not isinstance(old, dict) or old.get(k) != manifest.get(k)]
    if changed and not overwrite:
        k = changed[0]
        raise CMBError(f"--out {out}: holds a benchmark run with another {k.replace('_', ' ')} "
                       f"({old.get(k) if isinstance(old, dict) else '?'} vs {manifest.get(k)}); "
                       "use another folder, or --overwrite to run it again")


def _read_subject(dataset: str, s):
    from ..validation import validate_image

    image = validate_image(read_volume(s.image), str(s.image))
    if dataset == "valdo":
        ref = read_volume(s.reference)
        diff = geometry_difference(image, ref, tol_mm=0.01)
        if diff:
            raise CMBError(f"{s.reference.name}: the CMB label map's grid differs from the T2S image's ({diff})")
        return image, ref
    return image, cuhk_reference_ijk(s.reference, image.shape_ijk)


def _grid_fields(dataset: str, name: str, image) -> dict:
    fields = {"size_ijk": "x".join(str(v) for v in image.shape_ijk),
              "spacing_mm": "x".join(f"{v:.3g}" for v in image.spacing),
              "slice_thickness": f"{slice_thickness_mm(image.spacing):.1f} mm"}
    if dataset == "valdo":
        fields["cohort"] = valdo_cohort(image.spacing)
        fields["series"] = subject_series(name)
    return fields


def _score(dataset: str, name: str, image, ref, det: dict) -> dict:
    from ..metrics.case_metrics import evaluate_case

    scores = {int(r["label"]): float(r["max_probability"]) for r in det["records"]
              if r.get("max_probability") is not None}
    if dataset == "valdo":
        result = evaluate_case(det["mask"], ref, rule="valdo", distance_mm=DISTANCE_MM, connectivity=26,
                               pred_scores=scores or None, case=name)
    else:
        result = points_case(mask_elements(det["mask"], scores), point_elements(image, ref), case=name)
    levels = froc_levels(det["threshold"])
    ref_ras = [e.centre_ras for e in result.ref]
    counts = level_counts(det["probability"], levels, ref_ras, det["min_diameter_mm"], det["max_diameter_mm"])
    return {"name": name, "result": result, "levels": counts, "level_values": levels, "n_ref": result.n_ref,
            "threshold": det["threshold"], "detection_file": str(det["json"])}


def _write(out: Path, dataset: str, manifest: dict, scored: list, rows: list, levels, threshold: float,
           n_listed: int, limit, det_dir: Path) -> dict:
    from ..metrics.aggregate import aggregate
    from ..metrics.report import write_report
    from .report import froc_png, report_html

    results = [s["result"] for s in scored]
    summary = aggregate(results)
    curve = froc_curve(levels, scored)
    skipped = [{"subject": r["subject"], "status": r["status"], "reason": r["reason"]}
               for r in rows if r["status"] != "scored"]
    summary["dataset"] = dataset
    summary["operating_threshold"] = threshold
    summary["benchmark"] = dict(manifest, n_subjects_listed=n_listed, limit=limit, n_subjects_run=len(rows),
                                n_scored=len(scored), n_skipped=len(skipped), froc_levels=list(levels),
                                detections=str(det_dir))
    if dataset == "valdo":
        summary["by_size_mm"] = size_table(results)
        summary["by_cohort"] = group_table(scored, "cohort", levels)
        summary["cohorts"] = {"inferred_from": "the T2S voxel grid", "definitions": COHORTS}
        summary["by_subject_series"] = group_table(scored, "series", levels)
    else:
        summary["by_size_class"] = None      # centre lists carry no size
        summary["by_size_mm"] = None
    summary["by_slice_thickness"] = group_table(scored, "slice_thickness", levels)
    summary["skipped_subjects"] = skipped
    settings = {"rule": "valdo", "distance_mm": DISTANCE_MM, "distance_units": "mm", "connectivity": 26,
                "elements": "components" if dataset == "valdo" else "components vs reference points",
                "threshold": threshold, "pred": [str(det_dir)], "ref": [manifest["data_dir"]]}
    files = {s["name"]: {"pred_file": s["detection_file"]} for s in scored}
    write_report(out, results, summary, curve, {"files": files}, settings)
    groups = {}
    if dataset == "valdo" and len(summary["by_cohort"]) > 1:
        for name in summary["by_cohort"]:
            groups[f"cohort {name}"] = froc_curve(levels, [s for s in scored if s.get("cohort") == name])
    png = None
    if curve and any(s is not None for s in curve["sensitivity"]):   # reference CMBs exist
        from ..io import atomic_path

        png = froc_png(curve, groups, (summary["fp_per_subject"], summary["sensitivity"]), threshold)
        with atomic_path(out / "froc.png") as tmp:
            Path(tmp).write_bytes(png)
    doc = read_json(out / "metrics.json", "metrics")
    write_text_atomic(out / HTML, report_html(doc, rows, png))
    return doc


def _csv(rows: list[dict]) -> str:
    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()
