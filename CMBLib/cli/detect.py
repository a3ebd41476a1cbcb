"""`cmb detect IMAGE [IMAGE ...] --out DIR`: find CMBs with the bundled (or a given) model.

For each input NAME.nii.gz it writes NAME_cmb_mask.nii.gz, NAME_cmb.json and NAME_cmb.csv
(see `CMBLib.detection.outputs`) and, per run, cmb_summary.csv.  Folders are expanded
to the images directly inside them.  A study whose outputs exist is skipped unless
--overwrite; a bad study is reported in one line and the batch goes on; the exit code
is 2 when any study failed.  `--shard K/N` (K = 1..N) processes every N-th study of the
sorted input list, starting with the K-th, for job arrays.
"""
import json
import os
import sys
import time
from pathlib import Path

from ..errors import CMBError

# Outputs of this project lying in an input folder (detections, demo truth, exported masks).
EXCLUDE_SUFFIXES = ("_cmb_mask", "_cmb_prob", "_truth_mask", "_desc-cmb_dseg", "_desc-scribbles_dseg", "_probseg")


def add_parser(subparsers):
    p = subparsers.add_parser("detect", help="detect microbleeds in SWI / T2* / QSM volumes",
                              description=__doc__.split("\n\n")[0].replace("`", ""))
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (.nii.gz, .nii, .nrrd) or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="bundled or fine-tuned model name, or model folder (default: the bundled default model)")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="user models folder for --model NAME (default: $CMB_MODELS_DIR, else ~/.cmb/models)")
    p.add_argument("--device", default="auto", help="auto (GPU when one works), cuda, mps or cpu")
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model's)")
    p.add_argument("--sequence", default="T2S", help="T2S (T2*-GRE), SWI or QSM (default T2S)")
    p.add_argument("--polarity", choices=["dark", "bright"], default=None,
                   help="how CMBs look (default: dark, bright for QSM)")
    p.add_argument("--location", action="store_true", help="add each CMB's anatomical location")
    stage2 = p.add_mutually_exclusive_group()
    stage2.add_argument("--second-stage", action="store_true",
                        help="run the model's candidate classifier even where the model leaves it off by default")
    stage2.add_argument("--no-second-stage", action="store_true",
                        help="keep every first-stage candidate (skip the model's candidate classifier)")
    p.add_argument("--no-location-filter", action="store_true",
                   help="keep candidates in the model's mimic zones (e.g. the deep midline veins) as findings")
    p.add_argument("--tta", default=None, metavar="SET",
                   help="test-time augmentation over in-plane turns and mirrors: none, mirror, flips (4 passes), "
                        "d4 (8 passes) or transform names separated by commas (default: the model's)")
    p.add_argument("--window", default=None, choices=("tiles", "brain"),
                   help="inference window: brain (the brain's box as one window) or tiles (the model's windows "
                        "over the whole grid); default: the model's")
    p.add_argument("--first-stage", default=None, choices=("unet", "unet+native"),
                   help="unet: the 3D U-Net alone; unet+native: plus small dark spots scored by the patch network "
                        "at the scan's own resolution (docs/native_stage.md); default: the model's")
    p.add_argument("--skull-on", action="store_true",
                   help="the scans keep skull and scalp: find the brain inside the skull and set the rest to "
                        "background before detection (opt-in: docs/detector.md, 'Skull-on heads')")
    p.add_argument("--progress-json", action="store_true",
                   help="print progress and results as JSON lines on stdout (for the Slicer module)")
    p.add_argument("--shard", default=None, metavar="K/N", help="process shard K of N (K = 1..N)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    from ..report.outputs import add_arguments as add_report_arguments

    add_report_arguments(p)  # --report, --dicom-seg, --series, --dicom-names, --pseudonymise (DICOM folders)
    return p


def stage2_choice(args):
    """detect()'s `second_stage` from --second-stage / --no-second-stage (None: the model's default)."""
    if getattr(args, "no_second_stage", False):
        return False
    return True if getattr(args, "second_stage", False) else None


def parse_shard(text):
    """'2/4' -> (2, 4); CMBError for anything else."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise CMBError(f"--shard '{text}': expected K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise CMBError(f"--shard '{text}': K must be between 1 and N (shards count from 1)")
    return k, n


def collect_inputs(items):
    """Expand folders -> (sorted unique image paths, list of (path, message) that are missing)."""
    found, missing = [], []
    for item in items:
        p = Path(item)
        if p.is_dir():
            imgs = folder_images(p)
            if not imgs:
                missing.append((str(p), f"{p}: folder holds no images (.nii.gz, .nii, .nrrd)"))
            found.extend(imgs)
        elif p.exists():
            found.append(p)
        else:
            missing.append((str(p), f"{p}: file not found"))
    unique = sorted({q.resolve(): q for q in found}.values(), key=lambda q: str(q))
    return unique, missing


def folder_images(folder: Path) -> list:
    """Images directly inside `folder`, less this project's own outputs (by name).

    What is left out is named in one note on stderr: a folder holding a study often also
    holds the demo's truth mask or earlier detection outputs.  Other label maps (a
    FreeSurfer segmentation, a grown mask) are recognised by their values once read, and
    skipped with a note then (`_run_studies`), so no image is read twice.
    """
    from ..io import find_images, image_suffix, strip_image_suffix

    keep, skipped = [], []
    for q in find_images(folder):
        own = image_suffix(q) == ".seg.nrrd" or strip_image_suffix(q).lower().endswith(EXCLUDE_SUFFIXES)
        (skipped if own else keep).append(q.name if own else q)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"cmb detect: {folder}: skipping {len(skipped)} CMB mask(s) or output(s), not images: {shown}",
              file=sys.stderr)
    return keep


def run(args) -> int:
    from ..progress import json_progress, terminal_progress

    k, n = parse_shard(args.shard)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CMBError(f"--out {out_dir}: exists and is not a folder")
    from ..dicom.inputs import split_dicom_inputs

    others, dicom_inputs, dicom_failed = split_dicom_inputs(args.images, args.series, args.dicom_names,
                                                            args.pseudonymise)
    inputs, missing = collect_inputs(others) if others else ([], [])
    inputs, missing = inputs + dicom_inputs, missing + dicom_failed
    from ..report.outputs import check_arguments

    check_arguments(args, inputs)
    inputs = inputs[k - 1::n]
    if not inputs and not missing:
        raise CMBError("no input images" + (f" in shard {k}/{n}" if n > 1 else ""))
    emit = _Emitter(args.progress_json)
    if args.progress_json:
        bar = json_progress()
    elif sys.stderr.isatty():
        bar = terminal_progress()
    else:  # batch logs: no progress lines, only results and errors
        def bar(fraction, message):
            return None

    from ..detection.outputs import SUMMARY_FILE, summary_row, write_summary

    rows = [summary_row(path, "failed", message=msg) for path, msg in missing]
    for _, msg in missing:
        emit.error(msg)
    if inputs:
        rows += _run_studies(args, inputs, out_dir, emit, bar)
    summary = out_dir / (SUMMARY_FILE if n == 1 else SUMMARY_FILE.replace(".csv", f"_shard{k}of{n}.csv"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_summary(rows, summary)
    from ..report.outputs import write_cohort

    write_cohort(args, rows, out_dir)
    failed = sum(r["status"] == "failed" for r in rows)
    emit.done(len(rows), failed, str(summary))
    return 2 if failed else 0


def _run_studies(args, inputs, out_dir, emit, bar):
    from ..detection.inference import select_device
    from ..detection.model_io import load_model
    from ..detection.outputs import output_paths, summary_row, write_outputs
    from ..detection.pipeline import detect, normalise_sequence
    from ..dicom.inputs import input_name, read_input
    from ..progress import Cancelled
    from ..report.outputs import detect_extras
    from ..validation import looks_like_label_map, validate_image

    if args.threads:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
    sequence = normalise_sequence(args.sequence)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise CMBError(f"--threshold {args.threshold}: must lie between 0 and 1")
    if getattr(args, "tta", None) is not None:
        from ..detection.inference import tta_transforms

        try:
            tta_transforms(args.tta)
        except CMBError as exc:
            raise CMBError(f"--tta: {exc}") from None
    todo = []
    rows = []
    for path in inputs:
        name = input_name(path)
        if not args.overwrite and output_paths(out_dir, name)["json"].exists():
            rows.append(summary_row(name, "skipped", message="outputs exist (use --overwrite)"))
            emit.study(name, "skipped", message="outputs exist")
        else:
            todo.append((path, name))
    if not todo:
        return rows
    device = model = None  # loaded on the first readable study, so bad inputs fail fast
    for idx, (path, name) in enumerate(todo):
        def prog(f, msg, idx=idx, name=name):
            bar((idx + f) / len(todo), f"[{idx + 1}/{len(todo)}] {name}: {msg}")

        t = time.perf_counter()
        try:
            volume = validate_image(read_input(path), str(path))
        except CMBError as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            rows.append(summary_row(name, "failed", message=msg))
            emit.error(msg)
            continue
        if looks_like_label_map(volume.array):  # a segmentation or mask lying among the images
            rows.append(summary_row(name, "skipped", message="a label map (mask), not an image"))
            emit.study(name, "skipped", message="a label map (mask), not an image")
            continue
        if model is None:
            device = select_device(args.device)
            from ..detection.registry import resolve  # bundled, then the user's fine-tuned models

            models_dir = getattr(args, "models_dir", None)
            model = load_model(resolve(args.model, models_dir) if models_dir else args.model, device=device)
        try:
            result = detect(volume, model, device=device, threshold=args.threshold, polarity=args.polarity,
                            sequence=sequence, location=args.location, progress=prog,
                            second_stage=stage2_choice(args), tta=getattr(args, "tta", None),
                            location_filter=False if getattr(args, "no_location_filter", False) else None,
                            skull_on=True if getattr(args, "skull_on", False) else None,
                            window=getattr(args, "window", None), first_stage=getattr(args, "first_stage", None))
            paths = write_outputs(result, out_dir, name, image=str(path), overwrite=args.overwrite)
            paths.update(detect_extras(args, path, volume, result, out_dir, name))
        except Cancelled:
            raise KeyboardInterrupt from None
        except CMBError as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            rows.append(summary_row(name, "failed", message=msg))
            emit.error(msg)
            continue
        except Exception as exc:  # a bug must not stop a batch; say what happened in one line
            if os.environ.get("CMB_DEBUG"):
                raise
            msg = f"{path}: internal error ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
            rows.append(summary_row(name, "failed", message=msg))
            emit.error(msg)
            continue
        rows.append(summary_row(name, "ok", result.records))
        emit.study(name, "ok", result=result, paths=paths, seconds=time.perf_counter() - t)
    return rows


class _Emitter:
    """Result lines: a readable table on a terminal, or JSON lines with --progress-json."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def _json(self, obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def error(self, message: str):
        print(f"cmb detect: error: {message}", file=sys.stderr)
        if self.as_json:
            self._json({"event": "error", "message": message})

    def study(self, name, status, result=None, paths=None, seconds=0.0, message=""):
        if self.as_json:
            obj = {"event": "study", "study": name, "status": status, "message": message}
            if result is not None:
                obj.update(cmb_count=len(result.records), outputs={k: str(v) for k, v in paths.items()},
                           warnings=result.warnings, seconds=round(seconds, 2))
            self._json(obj)
            return
        if result is None:
            print(f"{name}: {status} ({message})")
            return
        print(f"{name}: {len(result.records)} CMB candidate(s) in {seconds:.1f} s on {result.settings['device']}"
              f" -> {paths['json']}")
        for w in result.warnings:
            print(f"  warning: {w}")
        if result.records:
            print(format_table(result.records, indent="  "))
        for r in getattr(result, "suppressed", []):
            x, y, z = r["centre_ras"]
            print(f"  set aside ({r['suppressed_by']}, likely a vein): candidate at {x:.1f}, {y:.1f}, {z:.1f} "
                  "RAS mm; listed in the JSON (--no-location-filter keeps it)")

    def done(self, total, failed, summary):
        if self.as_json:
            self._json({"event": "done", "studies": total, "failed": failed, "summary": summary})
        elif total > 1 or failed:
            print(f"{total - failed}/{total} studies done, {failed} failed; summary: {summary}")


def format_table(records, indent: str = "") -> str:
    """A plain-text table of detection records (label, RAS centre, size, probability, shape)."""
    head = f"{indent}{'#':>3} {'x':>7} {'y':>7} {'z':>7}  {'diam mm':>7} {'class':<6} {'prob':>5}  shape"
    lines = [head]
    for r in records:
        x, y, z = r["centre_ras"]
        shape = "vessel-like" if r.get("vessel_like") else ""
        loc = f"  {r['location']}" if r.get("location") else ""
        lines.append(f"{indent}{r['label']:>3} {x:7.1f} {y:7.1f} {z:7.1f}  {r['diameter_mm']:7.1f} "
                     f"{r['size_class']:<6} {r['max_probability']:5.2f}  {shape}{loc}")
    return "\n".join(lines)
