"""`cmb grow`: scribbles (or CMB centres) -> instance mask + per-CMB metadata JSON."""
import sys
from pathlib import Path

from ..errors import CMBError

# Literal copies of CMBLib.growing's names (importing it costs scipy at `cmb --help`);
# Testing/test_cli_basics.py checks they agree.
MODES = ("half_dip", "running_average", "seed_average", "parent_son")
DEFAULT_MODE = "half_dip"


def add_parser(sub):
    p = sub.add_parser(
        "grow", help="grow 3D CMB masks from scribbles or centre points",
        description="Grow one 3D mask per scribble label (same label ids) with adaptive-tolerance "
                    "region growing; or one per point of a CSV of RAS mm centres (--points). "
                    "Writes MASK and MASK.json (per-CMB tolerance, size, size class, curve, warnings).")
    p.add_argument("image", help="SWI / T2* / QSM volume (.nii.gz, .nii, .nrrd)")
    p.add_argument("scribbles", nargs="?", help="scribble label map on the image grid (.nii.gz, .nrrd, .seg.nrrd)")
    p.add_argument("--points", metavar="CSV",
                   help="CSV of CMB centres with columns x,y,z (RAS mm) instead of scribbles")
    p.add_argument("-o", "--output", required=True, metavar="MASK", help="output instance mask (.nii.gz, .nrrd)")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help=f"intensity difference (default {DEFAULT_MODE})")
    p.add_argument("--connectivity", type=int, choices=(6, 26), default=6,
                   help="voxel neighbourhood for growing: 6 (faces) or 26 (faces, edges, corners); default 6")
    p.add_argument("--tolerance", default="auto",
                   help="'auto' (per CMB: half of its dip below the local background with the default "
                        "half_dip mode; the elbow of the size-vs-tolerance curve with the thesis modes) "
                        "or a fixed tolerance "
                        "(fraction of the image intensity range with --relative, intensity units with --absolute)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--relative", dest="relative", action="store_true", default=True,
                   help="differences as fractions of the image's robust intensity range (default)")
    g.add_argument("--absolute", dest="relative", action="store_false", help="differences in raw intensity units")
    p.add_argument("--max-diameter", type=float, default=10.0, metavar="MM",
                   help="largest CMB diameter, mm (default 10)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress, no table")
    return p


def run(args) -> int:
    from ..growing import grow_from_points, grow_from_scribbles
    from ..io import read_points_csv, read_volume, write_json_atomic, write_volume
    from ..progress import terminal_progress

    out = Path(args.output)
    meta_path = metadata_path(out)
    if not args.overwrite:
        for path in (out, meta_path):
            if path.exists():
                raise CMBError(f"{path} exists; use --overwrite to replace it")
    if bool(args.scribbles) == bool(args.points):
        raise CMBError("give either a SCRIBBLES label map or --points CSV (one of them)")
    options = dict(mode=args.mode, connectivity=args.connectivity, tolerance=args.tolerance,
                   relative=args.relative, max_diameter_mm=args.max_diameter)
    points = read_points_csv(args.points) if args.points else None  # a bad CSV fails first
    progress = None if args.quiet else terminal_progress()
    image = read_volume(args.image)
    if points is not None:
        result = grow_from_points(image, points, progress=progress, **options)
    else:
        result = grow_from_scribbles(image, read_volume(args.scribbles), progress=progress, **options)
    write_volume(result.labels, out)
    doc = result.to_json()
    doc["image"] = str(args.image)
    doc["scribbles"] = str(args.scribbles or args.points)
    write_json_atomic(meta_path, doc)
    if not args.quiet:
        print_table(result.cmbs)
        print(f"wrote {out} and {meta_path}")
    return 0


def metadata_path(mask_path: Path) -> Path:
    """MASK.nii.gz -> MASK.json beside it."""
    from ..io import strip_image_suffix

    return mask_path.with_name(strip_image_suffix(mask_path) + ".json")


def print_table(cmbs, stream=None):
    stream = stream or sys.stdout
    stream.write(f"{'label':>5} {'voxels':>6} {'vol_mm3':>8} {'diam_mm':>7} {'size':>6} {'tol':>7}  warnings\n")
    for c in cmbs:
        stream.write(f"{c['label']:>5} {c['voxel_count']:>6} {c['volume_mm3']:>8.1f} {c['diameter_mm']:>7.2f} "
                     f"{c['size_class']:>6} {c['tolerance']:>7.3f}  {'; '.join(c['warnings'])}\n")

