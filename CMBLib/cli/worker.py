"""cmb worker: a warm detection process, jobs in as JSON lines on stdin, events out on stdout.

CMBDetector starts it once (through qt.QProcess) and keeps it alive between clicks, so
only the first click pays for the torch import and the model load; a later
click with the same model and device pays only for reading the image, the detection
and writing the outputs.  No Slicer or Qt import; tested with plain subprocess.

Protocol (one JSON object per line, UTF-8):

    in:   {"id": "1", "image": PATH, "out": DIR, "name": NAME, "model": "default",
           "device": "auto", "threshold": null, "sequence": "T2S", "location": false,
           "location_filter": true, "second_stage": null, "tta": null, "overwrite": false}
          {"cmd": "quit"}                    (or end of stdin)
    out:  {"event": "ready", "pid": N}       once, when the worker listens
          {"event": "progress", "id": ID, "progress": 0.42, "message": "..."}
          {"event": "result", "id": ID, "status": "ok", "outputs": {"json": ..., "mask": ...,
           "csv": ...}, "cmb_count": N, "warnings": [...], "model_loads": N,
           "model_cached": bool, "jobs_done": N, "timings": {"read": s, "load_model": s,
           "detect": s, "write": s, "total": s}}
          {"event": "error", "id": ID, "message": "one line"}

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

        def progress(fraction, message):
            self.emit({"event": "progress", "id": job_id, "progress": round(float(fraction), 4),
                       "message": str(message)})

        t = time.perf_counter()
        (network, meta, device), cached = self._model(job.get("model") or "default", job.get("device") or "auto")
        timings["load_model"] = time.perf_counter() - t
        t = time.perf_counter()
        result = detect(volume, (network, meta), device=device,
                        threshold=None if threshold is None else float(threshold),
                        sequence=sequence, location=bool(job.get("location", False)), progress=progress,
                        location_filter=_location_filter(job.get("location_filter")),
                        second_stage=_stage2(job.get("second_stage")), tta=_tta(job.get("tta")))
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


def _location_filter(value):
    """A job's "location_filter": null or absent (the model's default: its zones, when it names
    any), true (the model's zones, an error for a model without) or false (nothing set aside)."""
    if value is None:
        return None
    if not isinstance(value, bool):
        raise CMBError(f"location_filter must be true, false or null, not {value!r}")
    return value


def _stage2(value):
    """A job's "second_stage": null (the model's default), true (run the classifier) or false."""
    if value is None:
        return None
    if not isinstance(value, bool):
        raise CMBError(f"second_stage must be true, false or null, not {value!r}")
    return value


def _tta(value):
    """A job's "tta": null (the model's default), a preset name or a list of transform names
    (`CMBLib.detection.inference.tta_transforms`)."""
    if value is None:
        return None
    from ..detection.inference import tta_transforms

    return tta_transforms(value)


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
