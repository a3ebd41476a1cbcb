"""`cmb compare BASELINE FOLLOWUP --out DIR`: new CMBs since a prior scan and the ARIA-H category.

The follow-up is registered to the baseline (rigid; --affine adds an affine stage), CMBs
are detected on both (or taken from --baseline-findings / --followup-findings, NAME_cmb.json
files of `cmb detect`, reviewed or not), matched within --tolerance-mm and classed new,
persisting or no longer seen.  When the two scans cannot be compared (another patient, a
failed registration, too little shared brain) the command says why in one line, exits 2
and writes nothing.  Outputs: see `CMBLib.compare.outputs`.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import CMBError


def add_parser(subparsers):
    p = subparsers.add_parser("compare", help="new CMBs on a follow-up scan since the baseline (ARIA-H)",
                              description=__doc__.split("\n\n")[0].replace("`", ""))
    p.add_argument("baseline", metavar="BASELINE", help="the prior scan: image file or DICOM folder")
    p.add_argument("followup", metavar="FOLLOWUP", help="the follow-up scan: image file or DICOM folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--baseline-findings", metavar="JSON", default=None,
                   help="the baseline's NAME_cmb.json (from cmb detect, or reviewed) instead of detecting")
    p.add_argument("--followup-findings", metavar="JSON", default=None,
                   help="the follow-up's NAME_cmb.json instead of detecting")
    p.add_argument("--tolerance-mm", type=float, default=5.0,
                   help="largest distance between one CMB's centres at the two time points (default 5 mm)")
    p.add_argument("--affine", action="store_true", help="add an affine stage after the rigid registration")
    p.add_argument("--difference", action=argparse.BooleanOptionalAction, default=None,
                   help="also count focal spots that turned dark on the registered difference image and lie away "
                        "from every detection as new CMBs (default: see docs/compare.md)")
    p.add_argument("--model", default="default", metavar="NAME|PATH", help="detection model (as cmb detect)")
    p.add_argument("--models-dir", default=None, metavar="DIR", help="user models folder (as cmb detect)")
    p.add_argument("--device", default="auto", help="auto (GPU when one works), cuda, mps or cpu")
    p.add_argument("--sequence", default="T2S", help="T2S (T2*-GRE), SWI or QSM (default T2S)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and SimpleITK")
    p.add_argument("--series", metavar="UID|NUMBER", default=None, help="DICOM folders: the series to read")
    p.add_argument("--progress-json", action="store_true", help="progress and the result as JSON lines on stdout")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in DIR")
    return p


def _read(item: str, what: str, series):
    """(Volume, DICOM headers or None, study fields) of one input."""
    from ..dicom.inputs import read_input, split_dicom_inputs
    from ..validation import validate_image

    path = Path(item)
    if not path.exists():
        raise CMBError(f"{what} {item}: not found")
    others, dicom, failed = split_dicom_inputs([item], series)
    if failed:
        raise CMBError(f"{what}: {failed[0][1]}")
    if dicom:
        if len(dicom) > 1:
            raise CMBError(f"{what} {item}: holds {len(dicom)} series; pick one with --series")
        volume = validate_image(dicom[0].read(), f"{what} {item}")
        return volume, dicom[0].headers, dicom[0].study_fields(False)
    if path.is_dir():
        raise CMBError(f"{what} {item}: a folder without DICOM files; give an image file")
    from ..io import strip_image_suffix

    return validate_image(read_input(path), f"{what} {item}"), None, {"name": strip_image_suffix(path)}


def run(args) -> int:
    from ..compare.outputs import prepare_out_dir, write_compare_outputs
    from ..compare.pipeline import compare_studies, read_findings
    from ..detection.pipeline import normalise_sequence
    from ..progress import json_progress, terminal_progress

    sequence = normalise_sequence(args.sequence)
    if not args.tolerance_mm > 0:
        raise CMBError(f"--tolerance-mm {args.tolerance_mm}: must be above 0")
    out = prepare_out_dir(args.out, args.overwrite)
    for opt in ("baseline_findings", "followup_findings"):
        value = getattr(args, opt)
        if value and not Path(value).is_file():
            raise CMBError(f"--{opt.replace('_', '-')} {value}: file not found")
    if args.threads:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(args.threads)))
    t0 = time.perf_counter()
    baseline, _, _ = _read(args.baseline, "baseline", args.series)
    followup, headers, study = _read(args.followup, "follow-up", args.series)
    given = [read_findings(args.baseline_findings, baseline, "baseline") if args.baseline_findings else None,
             read_findings(args.followup_findings, followup, "follow-up") if args.followup_findings else None]
    model, device = args.model, "cpu"
    if any(g is None for g in given):
        if args.threads:
            import torch

            torch.set_num_threads(max(1, int(args.threads)))
        from ..detection.inference import select_device
        from ..detection.model_io import load_model
        from ..detection.registry import resolve

        device = select_device(args.device)
        model = load_model(resolve(args.model, args.models_dir) if args.models_dir else args.model, device=device)
    if args.progress_json:
        bar = json_progress()
    elif sys.stderr.isatty():
        bar = terminal_progress()
    else:
        def bar(fraction, message):
            return None
    from ..progress import Cancelled

    try:
        result = compare_studies(baseline, followup, given[0], given[1], model=model, device=device,
                                 sequence=sequence, tolerance_mm=args.tolerance_mm, affine=args.affine, progress=bar,
                                 difference=args.difference)
    except Cancelled:
        raise KeyboardInterrupt from None
    paths = write_compare_outputs(result, out, baseline, followup, args.baseline, args.followup,
                                  dicom_headers=headers, study=study, overwrite=args.overwrite)
    c = result.classes
    seconds = time.perf_counter() - t0
    if args.progress_json:
        sys.stdout.write(json.dumps({"event": "done", "new": len(c["new"]), "persisting": len(c["persisting"]),
                                     "no_longer_seen": len(c["no_longer_seen"]),
                                     "aria_h_category": result.aria_h_category, "warnings": result.warnings,
                                     "outputs": {k: str(v) for k, v in paths.items()},
                                     "seconds": round(seconds, 2)}) + "\n")
        sys.stdout.flush()
        return 0
    q = result.quality
    print(f"registration: {result.registration.kind}, correlation {q['correlation']:.2f}, "
          f"{100 * q['overlap']:.0f}% of the baseline brain shared, head turned {q['rotation_deg']:.1f} deg, "
          f"shifted {q['translation_mm']:.1f} mm")
    print(f"new CMBs: {len(c['new'])} (ARIA-H {result.aria_h_category}); persisting {len(c['persisting'])}; "
          f"no longer seen {len(c['no_longer_seen'])}" + (f"; outside the common view {len(c['outside_common_view'])}"
                                                         if c["outside_common_view"] else ""))
    for n, e in enumerate(c["new"], start=1):
        x, y, z = e["centre_ras"]
        print(f"  new {n}: {x:.1f}, {y:.1f}, {z:.1f} RAS mm (follow-up), {float(e.get('diameter_mm') or 0):.1f} mm"
              + (f"  [{e['flag']}]" if e.get("flag") else ""))
    for w in result.warnings:
        print(f"  warning: {w}")
    print(f"done in {seconds:.1f} s -> {paths['json']}")
    return 0
