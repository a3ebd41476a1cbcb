"""`cmb demo --out DIR`: detect CMBs in a synthetic study and show the result.

Makes a synthetic T2*-like study with known CMBs (default ``--study head``: a skull-on head
built from the shipped atlas with CMBs of every size and the iron, veins and calcifications of
real T2*, `CMBLib.synthesis.atlas_head`; ``--study phantom``: the older analytic phantom,
`CMBLib.synthesis.demo_study`), runs
the detection pipeline with the bundled model, prints the table, says how many of the
inserted CMBs were found, and writes into DIR: the image (demo_T2S.nii.gz), the true
CMB mask (demo_T2S_truth_mask.nii.gz), the standard detection outputs, an overview PNG
(demo_T2S_overview.png) and cmb_demo.json, the list of files the demo wrote.  A second
run into the same DIR replaces the files of the first; files the demo did not write
are never replaced without --overwrite.
"""
import time
from pathlib import Path

from ..errors import CMBError

NAME = "demo_T2S"
MANIFEST = "cmb_demo.json"
INTRO = ("The bundled model was trained on synthetic data only and has never seen a real scan; "
         "this demo shows the pipeline and its outputs, not clinical accuracy.  ")
KNOWN = {
    "head": "On the default study (seed 0: a skull-on T2*-like head with 8 CMBs, deep iron, veins and "
            "calcifications) it finds 5 of the 8 CMBs (it misses the three smallest), sets aside the mirror-image "
            "pairs of red nuclei and calcified choroid plexus, and marks no other spot: that is its known level, "
            "not a fault of your set-up.",
    "phantom": "On the phantom (seed 0) it finds 3 of the 6 inserted CMBs and marks no other spot: that is its "
               "known level, not a fault of your set-up.",
}
STUDIES = {"head": 8, "phantom": 6}         # study -> default number of CMBs
EXPECT = INTRO + KNOWN["head"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo", help="run detection on a synthetic study (start here)",
        description="Detect CMBs in a synthetic T2*-like study with known CMBs, using the bundled model: "
                    "prints the candidates and how many inserted CMBs were found, and writes the image, "
                    "the true mask, the detection outputs and an overview picture into --out.  " + EXPECT)
    p.add_argument("--study", choices=sorted(STUDIES), default="head",
                   help="head: a skull-on T2*-like head from the shipped atlas (default); phantom: the older, "
                        "faster analytic phantom")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a second demo run replaces "
                   "its own earlier files there)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic study (default 0)")
    p.add_argument("--n-cmbs", type=int, default=None, help="number of CMBs to insert (default: 8 in the head, "
                   "6 in the phantom)")
    p.add_argument("--model", default="default", metavar="NAME|PATH", help="model (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default auto)")
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model's)")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace same-named files in DIR that an earlier demo did not write")
    return p


def output_files(out: Path) -> dict:
    """Every file the demo writes into `out`, by role."""
    from ..detection.outputs import output_paths

    files = {"image": out / f"{NAME}.nii.gz", "truth": out / f"{NAME}_truth_mask.nii.gz"}
    files.update(output_paths(out, NAME))
    files.update(png=out / f"{NAME}_overview.png", manifest=out / MANIFEST)
    return files


def check_outputs(files: dict, overwrite: bool) -> bool:
    """True when earlier demo outputs will be replaced; CMBError for a foreign file in the way."""
    import json

    existing = [p for p in files.values() if p.exists()]
    if not existing or overwrite:
        return bool(existing)
    try:
        ours = set(json.loads(files["manifest"].read_text(encoding="utf-8")).get("files", []))
    except (OSError, ValueError, AttributeError):
        ours = set()
    foreign = [p for p in existing if p.name not in ours and p != files["manifest"]]
    if foreign or not files["manifest"].exists():
        p = (foreign or existing)[0]
        raise CMBError(f"{p}: exists and was not written by cmb demo; not overwritten "
                       "(use --overwrite, or another --out folder)")
    return True


def run(args) -> int:
    import numpy as np

    from ..detection.inference import select_device
    from ..detection.model_io import load_model
    from ..detection.outputs import write_outputs
    from ..detection.pipeline import detect
    from ..io import write_json_atomic, write_volume
    from .detect import format_table

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CMBError(f"--out {out}: exists and is not a folder")
    files = output_files(out)
    replacing = check_outputs(files, args.overwrite)
    study = getattr(args, "study", "head")
    n_cmbs = STUDIES[study] if args.n_cmbs is None else args.n_cmbs
    print(INTRO + KNOWN[study])
    device = select_device(args.device)
    model = load_model(args.model, device=device)  # fails early, in one line, without a model
    print(f"making the synthetic {study} study ...", flush=True)
    image, truth, centres = make_study(args.seed, n_cmbs, study)
    if replacing:
        print(f"replacing the outputs of an earlier demo run in {out}")
    write_volume(image, files["image"])
    write_volume(truth.with_array(truth.array.astype(np.int16)), files["truth"])
    t = time.perf_counter()
    result = detect(image, model, device=device, threshold=args.threshold, sequence="T2S")
    seconds = time.perf_counter() - t
    write_outputs(result, out, NAME, image=str(files["image"]), overwrite=True)
    found, false_pos = match_to_truth(result.mask.array, truth.array)
    print(f"synthetic {study} study: {image.shape_ijk[0]} x {image.shape_ijk[1]} x {image.shape_ijk[2]} voxels, "
          f"{' x '.join(f'{s:g}' for s in image.spacing)} mm, {len(centres)} CMBs inserted (seed {args.seed})")
    print(f"model {result.settings['model']} {result.settings['model_version']} on {result.settings['device']}: "
          f"{len(result.records)} candidate(s) in {seconds:.1f} s")
    if result.records:
        print(format_table(result.records, indent="  "))
    aside = list(getattr(result, "suppressed", []) or [])
    if aside:
        why = sorted({str(r.get("suppressed_by")) for r in aside})
        print(f"{len(aside)} candidate(s) set aside by the location filter ({', '.join(why)}; in the JSON and "
              "the picture, not findings)")
    print(f"found {found} of {len(centres)} inserted CMBs; {false_pos} candidate(s) match no inserted CMB")
    write_overview(image, result, truth.array, files["png"])
    names = [files[k].name for k in ("image", "truth", "mask", "json", "csv", "png", "manifest")]
    write_json_atomic(files["manifest"], {"format": "cmb-demo", "study": study, "seed": args.seed,
                                          "n_cmbs": n_cmbs,
                                          "files": names})
    print(f"outputs in {out}:")
    for role, text in (("image", "the synthetic study"), ("truth", "the inserted CMBs (labels 1..N)"),
                       ("mask", "detected CMBs (labels 1..N, as in the table)"), ("json", "detections, one record "
                       "per CMB, model and settings"), ("csv", "the same records as a table"),
                       ("png", "overview: axial slices, radiological view"), ("manifest", "files this demo wrote")):
        print(f"  {files[role].name:<28} {text}")
    return 0


def make_study(seed: int, n_cmbs: int, study: str = "head"):
    """(image Volume, truth instance mask Volume, centres RAS (N, 3)) of a synthetic study."""
    if n_cmbs < 0 or n_cmbs > 40:
        raise CMBError(f"--n-cmbs {n_cmbs}: choose between 0 and 40")
    if study == "head":
        from ..synthesis.atlas_head import make_head_study

        h = make_head_study(seed=seed, n_cmbs=n_cmbs)
        return h.image, h.cmb_mask, h.centres_ras
    from ..synthesis.demo_study import make_demo_study

    return make_demo_study(seed=seed, n_cmbs=n_cmbs)


def match_to_truth(detected, truth):
    """(true CMBs overlapped by a detection, detections overlapping no true CMB)."""
    import numpy as np

    det_ids = [int(v) for v in np.unique(detected) if v]
    true_ids = [int(v) for v in np.unique(truth) if v]
    overlap = (detected > 0) & (truth > 0)
    found = len(set(np.unique(truth[overlap]).tolist()) & set(true_ids))
    hit = set(np.unique(detected[overlap]).tolist())
    return found, sum(d not in hit for d in det_ids)


def radiological_view(direction):
    """How to show an axial slice a[k] (rows j, columns i) as radiologists read it.

    Returns (transpose, flip_rows, flip_cols): transpose the [j, i] slice first when
    the j axis runs left-right; then flip so that the patient's right is on the
    viewer's left (RAS x falls to the right of the screen) and anterior is at the top
    (RAS y falls downwards).  `direction` is the volume's RAS direction matrix.
    """
    import numpy as np

    d = np.asarray(direction, dtype=float)
    transpose = abs(d[0, 1]) > abs(d[0, 0])  # column j: x component of the j axis dominates
    col_axis, row_axis = (1, 0) if transpose else (0, 1)
    flip_cols = d[0, col_axis] > 0  # columns run towards patient right: flip so right is on the left
    flip_rows = d[1, row_axis] > 0  # rows run towards anterior: flip so anterior is at the top
    return transpose, flip_rows, flip_cols


def write_overview(image, result, truth, path, max_panels: int = 8) -> Path:
    """PNG of axial slices holding detections or true CMBs, in radiological convention.

    Patient right on the viewer's left, anterior at the top (R / L / A / P marked), a
    10 mm scale bar; red numbered rings = detections (numbers as in the table), green
    rings = inserted CMBs that were found, orange dashed rings = inserted CMBs missed.
    """
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    from ..io import atomic_path

    recs = result.records
    truth = np.asarray(truth)
    detected = np.asarray(result.mask.array) > 0
    true_cmbs = []  # (label, k, j, i centre, radius in voxels along i, found)
    for lab, sl in enumerate(ndimage.find_objects(truth.astype(np.int32)), start=1):
        if sl is None:
            continue
        region = truth[sl] == lab
        k, j, i = (c + s.start for c, s in zip(ndimage.center_of_mass(region), sl))
        n_vox = int(region.sum())
        r_mm = (3 * n_vox * float(np.prod(image.spacing)) / (4 * np.pi)) ** (1 / 3)
        true_cmbs.append((lab, k, j, i, r_mm, bool(detected[sl][region].any())))
    aside = list(getattr(result, "suppressed", []) or [])   # set aside by the location filter
    slices = sorted({int(round(r["centre_ijk"][2])) for r in recs + aside} | {int(round(c[1])) for c in true_cmbs})
    if not slices:
        slices = [image.array.shape[0] // 2]
    if len(slices) > max_panels:
        slices = [slices[int(i)] for i in np.linspace(0, len(slices) - 1, max_panels)]
    transpose, flip_rows, flip_cols = radiological_view(image.direction)
    a = np.asarray(image.array, dtype=float)
    lo, hi = np.percentile(a, [1, 99.5])
    sp = image.spacing
    col_mm, row_mm = (sp[1], sp[0]) if transpose else (sp[0], sp[1])
    n_rows, n_cols = (a.shape[2], a.shape[1]) if transpose else (a.shape[1], a.shape[2])

    def to_screen(i, j):
        x, y = (j, i) if transpose else (i, j)
        return (n_cols - 1 - x if flip_cols else x), (n_rows - 1 - y if flip_rows else y)

    def show(sl2d):
        sl2d = sl2d.T if transpose else sl2d
        sl2d = sl2d[::-1] if flip_rows else sl2d
        return sl2d[:, ::-1] if flip_cols else sl2d

    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.5 * rows + 0.6), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel():
        ax.axis("off")
    ring_mm = 4.0  # rings this far outside the CMB, so the CMB itself stays visible
    for ax, k in zip(axes.ravel(), slices):
        ax.imshow(show(a[k]), cmap="gray", vmin=lo, vmax=hi, origin="upper", aspect=row_mm / col_mm,
                  interpolation="nearest")
        for _lab, kc, j, i, r_mm, found in true_cmbs:
            if int(round(kc)) != k:
                continue
            x, y = to_screen(i, j)
            rad = (r_mm + ring_mm + 1.5) / col_mm
            if found:
                ax.add_patch(plt.Circle((x, y), rad, fill=False, color="lime", linewidth=1.5))
            else:
                ax.add_patch(plt.Circle((x, y), rad, fill=False, color="orange", linewidth=2.0, linestyle="--"))
                ax.text(x, y + rad + 2, "missed", color="orange", fontsize=9, ha="center", va="top",
                        fontweight="bold", bbox=dict(facecolor="black", edgecolor="none", pad=1.0))
        for r in recs:
            i, j, kk = r["centre_ijk"]
            if int(round(kk)) != k:
                continue
            x, y = to_screen(i, j)
            rad = (r["diameter_mm"] / 2 + ring_mm) / col_mm
            ax.add_patch(plt.Circle((x, y), rad, fill=False, color="red", linewidth=2.0))
            ax.text(x + rad * 0.75, y - rad * 0.75, str(r["label"]), color="red", fontsize=11, fontweight="bold")
        for r in aside:
            i, j, kk = r["centre_ijk"]
            if int(round(kk)) != k:
                continue
            x, y = to_screen(i, j)
            rad = (r.get("diameter_mm", 3.0) / 2 + ring_mm) / col_mm
            ax.add_patch(plt.Circle((x, y), rad, fill=False, color="deepskyblue", linewidth=1.5, linestyle=":"))
            ax.text(x, y - rad - 1, "set aside", color="deepskyblue", fontsize=8, ha="center", va="bottom")
        z_mm = float(image.voxel_to_ras([a.shape[2] / 2, a.shape[1] / 2, k])[2])  # slice centre
        ax.set_title(f"axial slice {k + 1} of {a.shape[0]} (S {z_mm:.0f} mm)", fontsize=10)
        _orientation_marks(ax, n_cols, n_rows)
        bar = 10.0 / col_mm  # 10 mm scale bar, bottom right
        x0, y0 = n_cols - 6 - bar, n_rows - 8
        ax.plot([x0, x0 + bar], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
        ax.text(x0 + bar / 2, y0 - 3, "10 mm", color="white", fontsize=9, ha="center", va="bottom")
    n_missed = sum(not c[5] for c in true_cmbs)
    fig.suptitle(f"{len(recs)} detection(s): red rings, numbered as in the table.  Inserted CMBs: "
                 f"green = found, orange dashed = missed ({n_missed})."
                 + (f"  Blue dotted: {len(aside)} set aside by the location filter." if aside else "")
                 + "  Radiological view: patient's right on the left.", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
    return path


def _orientation_marks(ax, n_cols, n_rows):
    style = dict(color="yellow", fontsize=12, fontweight="bold", ha="center", va="center",
                 bbox=dict(facecolor="black", edgecolor="none", pad=1.0))
    ax.text(5, n_rows / 2, "R", **style)
    ax.text(n_cols - 6, n_rows / 2, "L", **style)
    ax.text(n_cols / 2, 5, "A", **style)
    ax.text(n_cols / 2, n_rows - 6, "P", **style)
