"""Command lines, output parsing and state of the modules' background jobs (no Slicer, no Qt).

* "Improve the model from my annotations": ``python -m CMBLib.detection.finetune DATASET...
  --out MODEL_DIR --minutes N --progress-json`` (issue 15; the module ships in CMBLib, so
  the installed extension can run it; ``training/`` is not installed).  Its stdout is one
  JSON object per line (docs/finetuning.md): progress, start, warning, resume, train
  (step, loss), val (model, step, f1, ...), interrupted, done (model_dir), error.
* "Save report" / "Export DICOM SEG": ``python -m CMBLib report ...`` (issue 16), which
  prints ``NAME: report -> PATH`` / ``NAME: seg -> PATH`` lines.
* `CommandJob` runs one such command through a process factory (`QtProcess` in Slicer,
  a subprocess stand-in in pytest) and turns its lines into events.
"""
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from .process import QtProcess, error_message, parse_line

FINETUNE_MODULE = "CMBLib.detection.finetune"
SPARK = "▁▂▃▄▅▆▇█"


# --- command lines -----------------------------------------------------------------------
def finetune_command(python: str, datasets, out: str, minutes: float, init: str = "bundled",
                     models_dir: Optional[str] = None, threads: Optional[int] = None) -> list:
    """Argument list of a fine-tuning run with JSON progress on stdout."""
    folders = [os.path.abspath(str(d).strip()) for d in datasets if str(d).strip()]
    if not folders:
        raise ValueError("choose at least one exported dataset folder")
    if float(minutes) <= 0:
        raise ValueError("the time budget must be more than 0 minutes")
    cmd = [python, "-m", FINETUNE_MODULE, *folders, "--out", os.path.abspath(str(out)),
           "--minutes", f"{float(minutes):g}", "--init", str(init or "bundled"), "--progress-json"]
    if models_dir:
        cmd += ["--models-dir", str(models_dir)]
    if threads:
        cmd += ["--threads", str(int(threads))]
    return cmd


def report_command(python: str, detections: Optional[str] = None, dataset: Optional[str] = None,
                   subject: Optional[str] = None, image: Optional[str] = None, out: Optional[str] = None,
                   dicom_seg: bool = False, report: bool = True, overwrite: bool = False) -> list:
    """Argument list of ``cmb report`` for detections (NAME_cmb.json) or an exported subject."""
    if bool(detections) == bool(dataset):
        raise ValueError("a report needs either detections or an exported dataset")
    if dataset and not subject:
        raise ValueError("a report of a dataset needs the subject")
    absolute = os.path.abspath           # the printed output paths are then absolute too
    cmd = [python, "-m", "CMBLib", "report"]
    cmd += ["--detections", absolute(detections)] if detections else ["--dataset", absolute(dataset),
                                                                      "--subject", str(subject)]
    if image:
        cmd += ["--image", absolute(image)]
    if out:
        cmd += ["--out", absolute(out)]
    if dicom_seg:
        cmd.append("--dicom-seg")
    if not report:
        cmd.append("--no-report")
    if overwrite:
        cmd.append("--overwrite")
    return cmd


def report_outputs(lines) -> dict:
    """{'report': path, 'seg': path, ...} from ``cmb report``'s ``NAME: key -> PATH`` lines."""
    out = {}
    for line in lines:
        head, sep, path = str(line).partition(" -> ")
        if sep and ": " in head:
            out[head.rsplit(": ", 1)[1].strip()] = path.strip()
    return out


def split_folders(text: str) -> list:
    """Dataset folders typed or picked into one field, separated by ';' (order kept, no repeats)."""
    out = []
    for part in str(text or "").split(";"):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def new_model_folder(models_dir: Path, now: Optional[float] = None) -> Path:
    """A fresh folder name for a fine-tuned model in the user models folder (never an existing one)."""
    stamp = time.strftime("cmb-finetuned-%Y%m%d-%H%M", time.localtime(now))
    folder, n = Path(models_dir) / stamp, 1
    while folder.exists():
        n += 1
        folder = Path(models_dir) / f"{stamp}-{n}"
    return folder


# --- models ------------------------------------------------------------------------------
def list_models(models_dir=None) -> list:
    """Bundled then user (fine-tuned) models; each dict has 'name', 'path', 'source'.

    Uses CMBLib.detection.registry (issue 15) when it exists, else the bundled models only.
    """
    try:
        from CMBLib.detection.registry import list_all_models
    except ImportError:
        from CMBLib.detection.model_io import list_models as bundled

        return [dict(m, source="bundled") for m in bundled()]
    return list_all_models(models_dir)


def user_models_dir(models_dir=None) -> Path:
    """The user models folder ($CMB_MODELS_DIR or ~/.cmb/models) as the registry defines it."""
    try:
        from CMBLib.detection.registry import user_models_dir as registry_dir
    except ImportError:
        text = str(models_dir or os.environ.get("CMB_MODELS_DIR", "")).strip()
        return Path(text).expanduser() if text else Path("~/.cmb/models").expanduser()
    return registry_dir(models_dir)


def model_index(models, folder) -> int:
    """Position of the model in `folder` in `models` (paths compared after resolving links), or -1."""
    if not folder:
        return -1
    want = os.path.realpath(str(folder))
    for i, m in enumerate(models):
        if os.path.realpath(str(m.get("path", ""))) == want:
            return i
    return -1


def model_label(meta: dict) -> str:
    """Text of a model in the selector: name, version, and '(fine-tuned)' for user models."""
    text = f"{meta['name']} {meta.get('version', '')}".strip()
    return text + (" (fine-tuned)" if meta.get("source") == "user" else "")


def classifier_available(meta) -> bool:
    """Whether the model `meta` (a `list_models` entry) has a second-stage candidate
    classifier to switch on; True for an unknown folder (None: the worker says if not)."""
    return meta is None or bool(meta.get("second_stage"))


def second_stage_request(checked: bool, meta) -> Optional[bool]:
    """The job's "second_stage": True when the box is checked and the model has a classifier,
    else None (the model's default)."""
    return True if checked and classifier_available(meta) else None


def native_available(meta) -> bool:
    """Whether the model `meta` (a `list_models` entry) has a native patch stage (model.json
    "native_stage"); True for an unknown folder (None: the worker says if not)."""
    return meta is None or bool(meta.get("native_stage"))


def first_stage_request(checked: bool, meta) -> Optional[str]:
    """The job's "first_stage": "unet+native" when the box is checked and the model has a patch
    network, else None (the model's default)."""
    return "unet+native" if checked and native_available(meta) else None


# --- DICOM ---------------------------------------------------------------------------------
def dicom_files(instance_uids: Optional[str], file_for_instance: Callable) -> list:
    """Files of the slices a volume was loaded from (its "DICOM.instanceUIDs" attribute:
    space-separated SOP instance UIDs, as Slicer's DICOMScalarVolumePlugin writes it).
    Raises ValueError with the one-line reason when there is no usable DICOM source."""
    uids = str(instance_uids or "").split()
    if not uids:
        raise ValueError("this volume was not loaded from Slicer's DICOM database, so there is no source series "
                         "to reference; a DICOM SEG needs one (load the series through the DICOM module)")
    if "Unknown" in uids:
        raise ValueError("some slices of this volume have no SOP instance UID in the DICOM database")
    files = [file_for_instance(uid) for uid in uids]
    missing = [uid for uid, f in zip(uids, files) if not f or not os.path.isfile(f)]
    if missing:
        raise ValueError(f"{len(missing)} of {len(uids)} DICOM files of this volume are no longer on disk "
                         f"(e.g. instance {missing[0]})")
    return files


def stage_files(files, folder) -> Path:
    """Links (copies where links fail) of `files` in a new folder: one series for ``--image``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        target = folder / f"{i:05d}_{Path(f).name}"
        try:
            os.symlink(os.path.abspath(f), target)
        except OSError:
            shutil.copy2(f, target)
    return folder


# --- training progress -----------------------------------------------------------------------
def sparkline(values, width: int = 40) -> str:
    """Values as a one-line bar chart (the last `width` values, scaled to their range)."""
    vals = [float(v) for v in values][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    return "".join(SPARK[0 if span == 0 else min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))] for v in vals)


class TrainingMonitor:
    """State of one fine-tuning run from its JSON events: progress, curves, outcome."""

    def __init__(self):
        self.progress, self.message = 0.0, ""
        self.loss = []          # (step, loss)
        self.val = []           # (step, f1) of the fine-tuned model
        self.parent = None      # the parent model's validation row
        self.warnings, self.start, self.done, self.error = [], None, None, None

    def feed(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.progress = float(event.get("progress", self.progress))
            self.message = str(event.get("message", ""))
        elif kind == "start":
            self.start = event
        elif kind == "train" and event.get("loss") is not None:
            self.loss.append((int(event.get("step", 0)), float(event["loss"])))
        elif kind == "val":
            if event.get("model") == "parent":
                self.parent = event
            elif event.get("f1") is not None:
                self.val.append((int(event.get("step", 0)), float(event["f1"])))
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "done":
            self.done, self.progress = event, 1.0
        elif kind == "error":
            self.error = str(event.get("message", ""))

    def text(self) -> str:
        """Plain-text summary with the loss and validation-F1 curves as sparklines."""
        lines = []
        if self.start:
            lines.append(f"{len(self.start.get('train') or [])} fine-tuning studies "
                         f"({self.start.get('n_cmbs_train', '?')} CMBs), {len(self.start.get('val') or [])} "
                         f"validation studies ({self.start.get('n_cmbs_val', '?')} CMBs)")
        if self.parent:
            lines.append(f"current model on validation: F1 {_num(self.parent.get('f1'))}, "
                         f"{_num(self.parent.get('fp_per_scan'))} FP/scan")
        if self.loss:
            lines.append(f"loss  {sparkline(v for _, v in self.loss)}  step {self.loss[-1][0]}: "
                         f"{self.loss[-1][1]:.4f}")
        if self.val:
            best = max(v for _, v in self.val)
            lines.append(f"val F1 {sparkline(v for _, v in self.val)}  last {self.val[-1][1]:.3f}, best {best:.3f}")
        lines += [f"warning: {w}" for w in self.warnings]
        if self.done:
            reason = self.done.get("reason") or "not better than its parent on validation"   # the gate's reason
            kept = ("fine-tuned weights kept" if self.done.get("accepted") else
                    f"{reason}: the parent's weights were kept")
            lines.append(f"done: {self.done.get('model_dir')} ({kept}, threshold {self.done.get('threshold')})")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)


def _num(v) -> str:
    return "n/a" if v is None else f"{float(v):.3f}" if isinstance(v, (int, float)) else str(v)


# --- one background command ------------------------------------------------------------------
class CommandJob:
    """One command in a background process: JSON stdout lines become events, the rest is kept.

    `on_event(event)` receives every stdout line as an event (see `parse_line`) and at the
    end {"event": "exit", "returncode", "cancelled", "stderr", "message", "stdout"}.
    """

    def __init__(self, command: list, on_event: Callable, process_factory=QtProcess, env: Optional[dict] = None):
        self.command, self.on_event, self.env = list(command), on_event, env
        self.stdout, self.stderr = [], []
        self.cancelled = False
        self.returncode = None
        self.process = process_factory(self._onLine, self._onFinished)

    def start(self) -> "CommandJob":
        self.process.start(self.command, self.env)
        return self

    @property
    def running(self) -> bool:
        return self.returncode is None and self.process.running

    def cancel(self) -> None:
        """Kill the process and everything it started."""
        if self.running:
            self.cancelled = True
            self.process.kill()

    def _onLine(self, kind: str, line: str) -> None:
        if kind == "err":
            if line.strip():
                self.stderr = (self.stderr + [line])[-50:]
            return
        self.stdout = (self.stdout + [line])[-200:]
        self.on_event(parse_line(line))

    def _onFinished(self, returncode: int) -> None:
        self.returncode = int(returncode)
        event = {"event": "exit", "returncode": self.returncode, "cancelled": self.cancelled,
                 "stderr": list(self.stderr), "stdout": list(self.stdout)}
        event["message"] = "" if self.returncode == 0 else error_message(event)
        self.on_event(event)


__all__ = ["CommandJob", "TrainingMonitor", "dicom_files", "finetune_command", "list_models", "model_index",
           "model_label", "new_model_folder", "report_command", "report_outputs", "sparkline", "split_folders",
           "stage_files", "user_models_dir"]
