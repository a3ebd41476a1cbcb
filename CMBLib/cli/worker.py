"""cmb worker: a warm detection process, jobs in as JSON lines on stdin, events out on stdout.

CMBDetector starts it once (through qt.QProcess) and keeps it alive between clicks, so
only the first click pays for the torch import and the model load; a later
click with the same model and device pays only for reading the image, the detection
and writing the outputs.  No Slicer or Qt import; tested with plain subprocess.

Protocol (one JSON object per line, UTF-8):

    in:   {"id": "1", "image": PATH, "out": DIR, "name": NAME, "model": "default",
           "device": "auto", "threshold": null, "sequence": "T2S", "location": false,
           "location_filter": true, "second_stage": null, "tta": null, "skull_on": null,
           "window": null, "first_stage": null, "overwrite": false}
          {"cmd": "quit"}                    (or end of stdin)
    out:  {"event": "ready", "pid": N}       once, when the worker listens
          {"event": "progress", "id": ID, "progress": 0.42, "message": "..."}
          {"event": "result", "id": ID, "status": "ok", "outputs": {"json": ..., "mask": ...,
           "csv": ...}, "cmb_count": N, "warnings": [...], "model_loads": N,
           "model_cached": bool, "jobs_done": N, "timings": {"read": s, "load_model": s,
           "detect": s, "write": s, "total": s}}
          {"event": "error", "id": ID, "message": "one line"}

A job without "kind" (or "kind": "detect") is a detection as above.  Two more kinds (the
"Compare with prior" section of CMBDetector; `cmb compare` in the warm process, same model cache):

    in:   {"kind": "compare", "id": ID, "baseline": PATH, "followup": PATH, "out": DIR,
           "model": "default", "device": "auto", "sequence": "T2S", "tolerance_mm": 5.0,
           "affine": false, "threshold": null, "baseline_findings": null,
           "followup_findings": null, "series": null, "overwrite": false, "difference": null}
           ("difference": true / false adds or leaves out the difference image's new spots;
           null: the default of `CMBLib.compare.pipeline.DIFFERENCE`)
    out:  {"event": "result", "id": ID, "kind": "compare", "status": "ok", "outputs": {"json":
           compare.json, "csv": ..., "mask": new_cmb_mask.nii.gz, "report": ...html}, "counts":
           {"new": N, "persisting": N, "no_longer_seen": N, "outside_common_view": N},
           "aria_h_category": "mild", "warnings": [...], "model_loads", "model_cached", "jobs_done",
           "timings": {...}}
    in:   {"kind": "compare_review", "id": ID, "compare": compare.json, "decisions": {"new 1":
           "accepted", "new 2": "rejected", ...}, "baseline": PATH|null, "followup": PATH|null,
           "reviewer": "", "overwrite": false}
    out:  {"event": "result", "id": ID, "kind": "compare_review", "status": "ok", "outputs":
           {"json": compare_reviewed.json, "csv": ..., "report": compare_reviewed_report.html},
           "review": {"accepted", "rejected", "unreviewed", "new_count", "aria_h_category", ...}}

A compare job's keys are checked (an unknown key, a missing path, a tolerance <= 0 or a comparison
that cannot be trusted is one "error" line; nothing is written half-way).

"location_filter": null (or absent) applies the model's location filter, false switches it
off (candidates in CSF / venous anatomy stay findings), true requires it; "second_stage" alike.
A bad job is answered with an "error" event and the worker waits for the next one;
existing outputs are not replaced unless the job says "overwrite": true.  Cancel =
the caller kills the worker's process tree; the next job starts a new worker.
"""
import json
import os
import sys
import time

from ..errors import CMBError


def add_parser(subparsers):
    p = subparsers.add_parser("worker", help="warm detection worker: JSON jobs on stdin (for CMBDetector)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    return p


class Worker:
    """Keeps loaded models between jobs; `handle(job)` runs one job and emits its events."""

    def __init__(self, emit):
        self.emit = emit
        self.models = {}         # (model, device) -> (network, metadata, device used)
        self.model_loads = 0
        self.jobs_done = 0

    def _model(self, name, device):
        from ..detection.inference import select_device
        from ..detection.model_io import load_model

        key = (str(name), str(device))
        if key not in self.models:
            dev = select_device(device)
            network, meta = load_model(name, device=dev)
            self.models.clear()          # one model in memory at a time
            self.models[key] = (network, meta, dev)
            self.model_loads += 1
            return self.models[key], False
        return self.models[key], True

    def handle(self, job: dict) -> None:
        job_id = job.get("id")
        try:
            self.emit(self.run(job))
        except CMBError as exc:
            self.emit({"event": "error", "id": job_id, "message": str(exc)})
        except Exception as exc:  # a bug must not kill the warm worker; say it in one line
            if os.environ.get("CMB_DEBUG"):
                raise
            text = str(exc).splitlines()[0][:160] if str(exc) else ""
            self.emit({"event": "error", "id": job_id, "message": f"internal error ({type(exc).__name__}: {text})"})

    def run(self, job: dict) -> dict:
        kind = job.get("kind", "detect")
        if kind == "compare":
            return self.run_compare(job)
        if kind == "compare_review":
            return self.run_compare_review(job)
        if kind != "detect":
            raise CMBError(f"job {job.get('id')}: unknown kind {kind!r} (detect, compare or compare_review)")
        return self.run_detect(job)

    def _progress(self, job_id):
        def progress(fraction, message):
            self.emit({"event": "progress", "id": job_id, "progress": round(float(fraction), 4),
                       "message": str(message)})
        return progress

    def run_compare(self, job: dict) -> dict:
        """`cmb compare` in this process: the follow-up against the baseline (module docstring)."""
        from ..compare.outputs import prepare_out_dir, write_compare_outputs
        from ..compare.pipeline import compare_studies, read_findings
        from ..detection.pipeline import normalise_sequence
        from .compare import _read

        job_id = _check_keys(job, COMPARE_KEYS, ("baseline", "followup", "out"))
        tolerance = _number(job.get("tolerance_mm", 5.0), "tolerance_mm")
        if not tolerance > 0:
            raise CMBError(f"job {job_id}: tolerance_mm {tolerance:g} must be above 0")
        threshold = job.get("threshold")
        if threshold is not None and not 0.0 < _number(threshold, "threshold") < 1.0:
            raise CMBError(f"threshold {threshold}: must lie between 0 and 1")
        affine = _flag(job.get("affine", False), "affine")
        difference = _flag(job.get("difference"), "difference")
        overwrite = _flag(job.get("overwrite", False), "overwrite")
        sequence = normalise_sequence(job.get("sequence") or "T2S")
        out = prepare_out_dir(job["out"], bool(overwrite))
        t0 = time.perf_counter()
        series = job.get("series")
        baseline, _, _ = _read(str(job["baseline"]), "baseline", series)
        followup, headers, study = _read(str(job["followup"]), "follow-up", series)
        given = []
        for key, image, what in (("baseline_findings", baseline, "baseline"),
                                 ("followup_findings", followup, "follow-up")):
            path = job.get(key)
            if path and not os.path.isfile(str(path)):
                raise CMBError(f"{key} {path}: file not found")
            given.append(read_findings(str(path), image, what) if path else None)
        timings = {"read": time.perf_counter() - t0}
        model, device, cached = None, "cpu", False
        if any(g is None for g in given):
            t = time.perf_counter()
            (network, meta, device), cached = self._model(job.get("model") or "default", job.get("device") or "auto")
            model = (network, meta)
            timings["load_model"] = time.perf_counter() - t
        t = time.perf_counter()
        result = compare_studies(baseline, followup, given[0], given[1], model=model, device=device,
                                 sequence=sequence, tolerance_mm=tolerance, affine=bool(affine),
                                 threshold=None if threshold is None else float(threshold),
                                 progress=self._progress(job_id), difference=difference)
        timings["compare"] = time.perf_counter() - t
        t = time.perf_counter()
        paths = write_compare_outputs(result, out, baseline, followup, str(job["baseline"]), str(job["followup"]),
                                      dicom_headers=headers, study=study, overwrite=bool(overwrite))
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        self.jobs_done += 1
        c = result.classes
        return {"event": "result", "id": job_id, "kind": "compare", "status": "ok",
                "outputs": {k: str(v) for k, v in paths.items()}, "counts": {k: len(v) for k, v in c.items()},
                "new_count": len(c["new"]), "aria_h_category": result.aria_h_category,
                "warnings": list(result.warnings), "model_loads": self.model_loads, "model_cached": cached,
                "jobs_done": self.jobs_done, "timings": {k: round(v, 4) for k, v in timings.items()}}

    def run_compare_review(self, job: dict) -> dict:
        """The reviewed comparison files (`CMBLib.compare.review.write_reviewed_outputs`)."""
        from ..compare.review import STATUSES, read_compare, write_reviewed_outputs

        job_id = _check_keys(job, REVIEW_KEYS, ("compare",))
        decisions = job.get("decisions") or {}
        if not isinstance(decisions, dict) or any(v not in STATUSES for v in decisions.values()):
            raise CMBError(f"job {job_id}: decisions must map 'new N' to one of {', '.join(STATUSES)}")
        if not os.path.isfile(str(job["compare"])):
            raise CMBError(f"{job['compare']}: file not found")
        self.emit({"event": "progress", "id": job_id, "progress": 0.1, "message": "writing the reviewed report"})
        paths = write_reviewed_outputs(str(job["compare"]), decisions, baseline=job.get("baseline"),
                                       followup=job.get("followup"), reviewer=str(job.get("reviewer") or ""),
                                       overwrite=bool(_flag(job.get("overwrite", False), "overwrite")))
        self.jobs_done += 1
        return {"event": "result", "id": job_id, "kind": "compare_review", "status": "ok",
                "outputs": {k: str(v) for k, v in paths.items()}, "review": read_compare(paths["json"])["review"],
                "jobs_done": self.jobs_done}

    def run_detect(self, job: dict) -> dict:
        from ..detection.outputs import output_paths, write_outputs
        from ..detection.pipeline import detect, normalise_sequence
        from ..io import read_volume, strip_image_suffix
        from ..validation import validate_image

        job_id = job.get("id")
        for key in ("image", "out"):
            if not job.get(key):
                raise CMBError(f"job {job_id}: '{key}' is missing")
        image = str(job["image"])
        name = str(job.get("name") or strip_image_suffix(image))
        overwrite = bool(job.get("overwrite", False))
        if not overwrite and output_paths(job["out"], name)["json"].exists():
            raise CMBError(f"{output_paths(job['out'], name)['json']}: exists; not overwritten")
        threshold = job.get("threshold")
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise CMBError(f"threshold {threshold}: must lie between 0 and 1")
        sequence = normalise_sequence(job.get("sequence", "T2S"))
        timings = {}
        t0 = time.perf_counter()
        if not os.path.exists(image):
            raise CMBError(f"{image}: file not found")
        volume = validate_image(read_volume(image), image)
        timings["read"] = time.perf_counter() - t0

        progress = self._progress(job_id)
        t = time.perf_counter()
        (network, meta, device), cached = self._model(job.get("model") or "default", job.get("device") or "auto")
        timings["load_model"] = time.perf_counter() - t
        t = time.perf_counter()
        result = detect(volume, (network, meta), device=device,
                        threshold=None if threshold is None else float(threshold),
                        sequence=sequence, location=bool(job.get("location", False)), progress=progress,
                        location_filter=_location_filter(job.get("location_filter")),
                        second_stage=_stage2(job.get("second_stage")), tta=_tta(job.get("tta")),
                        skull_on=_flag(job.get("skull_on"), "skull_on"), window=_window(job.get("window")),
                        first_stage=_first_stage(job.get("first_stage")))
        timings["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        os.makedirs(job["out"], exist_ok=True)
        paths = write_outputs(result, job["out"], name, image=image, overwrite=overwrite)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        self.jobs_done += 1
        return {"event": "result", "id": job_id, "status": "ok", "study": name,
                "outputs": {k: str(v) for k, v in paths.items()}, "cmb_count": len(result.records),
                "warnings": list(result.warnings), "model_loads": self.model_loads, "model_cached": cached,
                "jobs_done": self.jobs_done, "timings": {k: round(v, 4) for k, v in timings.items()}}


COMPARE_KEYS = ("kind", "id", "baseline", "followup", "out", "model", "device", "sequence", "tolerance_mm",
                "affine", "threshold", "baseline_findings", "followup_findings", "series", "overwrite", "difference")
REVIEW_KEYS = ("kind", "id", "compare", "decisions", "baseline", "followup", "reviewer", "overwrite")


def _check_keys(job: dict, allowed, required) -> str:
    """The job's id; CMBError naming the first unknown or missing key."""
    job_id = job.get("id")
    unknown = sorted(set(job) - set(allowed))
    if unknown:
        raise CMBError(f"job {job_id}: unknown key '{unknown[0]}' for a {job.get('kind')} job "
                       f"(known: {', '.join(allowed[2:])})")
    for key in required:
        if not job.get(key):
            raise CMBError(f"job {job_id}: '{key}' is missing")
    return job_id


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CMBError(f"{key} must be a number, not {value!r}")
    return float(value)


def _location_filter(value):
    """A job's "location_filter": null or absent (the model's default: its zones, when it names
    any), true (the model's zones, an error for a model without) or false (nothing set aside)."""
    return _flag(value, "location_filter")


def _stage2(value):
    """A job's "second_stage": null (the model's default), true (run the classifier) or false."""
    return _flag(value, "second_stage")


def _flag(value, key: str):
    """A job's true / false / null key (null or absent: the model's default)."""
    if value is None or isinstance(value, bool):
        return value
    raise CMBError(f"{key} must be true, false or null, not {value!r}")


def _tta(value):
    """A job's "tta": null (the model's default), a preset name or a list of transform names
    (`CMBLib.detection.inference.tta_transforms`)."""
    if value is None:
        return None
    from ..detection.inference import tta_transforms

    return tta_transforms(value)


def _window(value):
    """A job's "window": null (the model's default), "brain" or "tiles"
    (`CMBLib.detection.inference.WINDOWS`)."""
    from ..detection.inference import WINDOWS

    if value is None or value in WINDOWS:
        return value
    raise CMBError(f"window must be {', '.join(WINDOWS)} or null, not {value!r}")


def _first_stage(value):
    """A job's "first_stage": null (the model's default), "unet" or "unet+native"
    (`CMBLib.detection.native_stage.FIRST_STAGES`)."""
    from ..detection.native_stage import FIRST_STAGES

    if value is None or value in FIRST_STAGES:
        return value
    raise CMBError(f"first_stage must be {', '.join(FIRST_STAGES)} or null, not {value!r}")


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(stdin, emit) -> int:
    """Read jobs from `stdin` until 'quit' or end of input."""
    worker = Worker(emit)
    emit({"event": "ready", "pid": os.getpid()})
    for line in iter(stdin.readline, ""):
        text = line.strip()
        if not text:
            continue
        try:
            job = json.loads(text)
        except ValueError:
            emit({"event": "error", "id": None, "message": f"not a JSON job line: {text[:80]}"})
            continue
        if not isinstance(job, dict):
            emit({"event": "error", "id": None, "message": "a job must be a JSON object"})
            continue
        if job.get("cmd") == "quit":
            break
        worker.handle(job)
    return 0


def run(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
    return serve(sys.stdin, _emit)
