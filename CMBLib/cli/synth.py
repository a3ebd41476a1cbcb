"""`cmb synth`: write a synthetic CMB dataset (images, CMB masks, mimic maps, centres).

    cmb synth OUT_DIR --labels aparc+aseg.nii.gz --n 20 --seed 0 [--spacing 0.5 0.5 5] [--preset swi]
    cmb synth OUT_DIR --demo --n 3          # the small analytic demo study, no input needed

Layout (VALDO-like, readable by ``training/`` and ``cmb evaluate``):
``sub-synNNN/sub-synNNN_space-T2S_desc-masked_T2S.nii.gz`` (image),
``..._CMB.nii.gz`` (CMB instance labels), ``..._mimics.nii.gz`` (mimic type ids, see
CMBLib.synthesis.mimics.MIMIC_TYPES), ``..._cmbs.csv`` (centres, x,y,z RAS mm) and
``..._synth.json`` (generation settings).
"""
import json
from pathlib import Path

from ..errors import CMBError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "synth", help="generate a synthetic CMB dataset",
        description="Domain-randomised T2*/SWI-like images from an anatomical label map (FreeSurfer ids), "
                    "with inserted CMBs and mimics (veins, flow voids, calcification, cavernomas, air/bone), "
                    "on clinical grids; or the small analytic demo study (--demo).")
    p.add_argument("out", metavar="OUT_DIR", help="output folder")
    p.add_argument("--labels", metavar="LABELMAP", help="label map (FreeSurfer aseg/aparc ids)")
    p.add_argument("--demo", action="store_true", help="use the analytic demo phantom instead of a label map")
    p.add_argument("--n", type=int, default=5, help="number of cases (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the first case (default 0)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SI", "SJ", "SK"),
                   help="clinical voxel size in mm (default: random clinical geometries)")
    p.add_argument("--preset", default="random", choices=["random", "t2star", "swi"],
                   help="intensity preset (default: random mix)")
    p.add_argument("--cmbs", type=int, nargs=2, default=(1, 10), metavar=("MIN", "MAX"),
                   help="number of CMBs per case (default 1 10)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    return p


def run(args) -> int:
    import numpy as np

    from ..io import read_volume, write_json_atomic, write_text_atomic, write_volume
    from ..synthesis.demo_study import make_demo_study
    from ..synthesis.label_synthesis import synthesize_case

    if not args.demo and not args.labels:
        raise CMBError("give --labels LABELMAP or --demo")
    if args.n < 1:
        raise CMBError("--n must be at least 1")
    out = Path(args.out)
    labels = read_volume(args.labels) if args.labels else None
    for n in range(args.n):
        seed = args.seed + n
        sub = f"sub-syn{seed:03d}"
        folder = out / sub
        base = folder / f"{sub}_space-T2S"
        if (Path(str(base) + "_desc-masked_T2S.nii.gz")).exists() and not args.overwrite:
            raise CMBError(f"{folder} exists; use --overwrite to replace it")
        folder.mkdir(parents=True, exist_ok=True)
        if args.demo:
            image, cmb, centres = make_demo_study(seed)
            mimics = None
            info = {"source": "demo", "seed": seed}
        else:
            case = synthesize_case(labels, np.random.default_rng(seed), preset=args.preset,
                                   spacing=args.spacing, n_cmbs=tuple(args.cmbs))
            image, cmb, centres, mimics = case.image, case.cmb_mask, case.centres_ras, case.mimic_labels
            info = dict(case.info, seed=seed, labels=str(args.labels))
        write_volume(image, str(base) + "_desc-masked_T2S.nii.gz")
        write_volume(cmb, str(base) + "_CMB.nii.gz")
        if mimics is not None:
            write_volume(mimics, str(base) + "_mimics.nii.gz")
        rows = ["label,x,y,z"] + [f"{i + 1},{c[0]:.3f},{c[1]:.3f},{c[2]:.3f}" for i, c in enumerate(centres)]
        write_text_atomic(str(base) + "_cmbs.csv", "\n".join(rows) + "\n")
        write_json_atomic(str(base) + "_synth.json", info)
        print(f"{sub}: {len(centres)} CMBs, spacing {tuple(round(s, 2) for s in image.spacing)} mm", flush=True)
    print(json.dumps({"cases": args.n, "out": str(out)}))
    return 0
