"""`cmb demo --out DIR`: detect CMBs in a synthetic study and show the result.

Makes a synthetic T2*-like study with known CMBs (`CMBLib.synthesis.demo_study`), runs
the detection pipeline with the bundled model, prints the table, says how many of the
inserted CMBs were found, and writes into DIR: the image (demo_T2S.nii.gz), the true
CMB mask (demo_T2S_truth_mask.nii.gz), the standard detection outputs and an overview
PNG (demo_T2S_overview.png: axial slices, detections ringed red, true CMBs marked green).
"""
import time
from pathlib import Path

import numpy as np

from ..errors import CMBError

NAME = "demo_T2S"


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="run detection on a synthetic study (start here)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic study")
    p.add_argument("--n-cmbs", type=int, default=6, help="number of CMBs to insert")
    p.add_argument("--model", default="default", metavar="NAME|PATH", help="model (default: bundled)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the model's)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier demo")
    return p


def run(args) -> int:
    from ..detection.inference import select_device
    from ..detection.model_io import load_model
    from ..detection.outputs import output_paths, write_outputs
    from ..detection.pipeline import detect
    from ..io import write_volume
    from .detect import format_table

    out = Path(args.out)
    paths = output_paths(out, NAME)
    extra = {"image": out / f"{NAME}.nii.gz", "truth": out / f"{NAME}_truth_mask.nii.gz",
             "png": out / f"{NAME}_overview.png"}
    if not args.overwrite:
        for p in list(paths.values()) + list(extra.values()):
            if p.exists():
                raise CMBError(f"{p}: exists; not overwritten (use --overwrite)")
    device = select_device(args.device)
    model = load_model(args.model, device=device)  # fails early, in one line, without a model
    image, truth, centres = make_study(args.seed, args.n_cmbs)
    write_volume(image, extra["image"])
    write_volume(truth.with_array(truth.array.astype(np.int16)), extra["truth"])
    t = time.perf_counter()
    result = detect(image, model, device=device, threshold=args.threshold, sequence="T2S")
    seconds = time.perf_counter() - t
    write_outputs(result, out, NAME, image=str(extra["image"]), overwrite=True)
    found, false_pos = match_to_truth(result.mask.array, truth.array)
    print(f"synthetic study: {image.shape_ijk[0]} x {image.shape_ijk[1]} x {image.shape_ijk[2]} voxels, "
          f"{' x '.join(f'{s:g}' for s in image.spacing)} mm, {len(centres)} CMBs inserted")
    print(f"model {result.settings['model']} {result.settings['model_version']} on {result.settings['device']}: "
          f"{len(result.records)} candidate(s) in {seconds:.1f} s")
    if result.records:
        print(format_table(result.records, indent="  "))
    print(f"found {found} of {len(centres)} inserted CMBs; {false_pos} candidate(s) match no inserted CMB")
    write_overview(image, result, truth.array, extra["png"])
    print(f"outputs in {out}: {paths['json'].name}, {paths['csv'].name}, {paths['mask'].name}, "
          f"{extra['png'].name}")
    return 0


def make_study(seed: int, n_cmbs: int):
    """(image Volume, truth instance mask Volume, centres RAS (N, 3)) of a synthetic study."""
    if n_cmbs < 0 or n_cmbs > 40:
        raise CMBError(f"--n-cmbs {n_cmbs}: choose between 0 and 40")
    from ..synthesis.demo_study import make_demo_study

    return make_demo_study(seed=seed, n_cmbs=n_cmbs)


def match_to_truth(detected: np.ndarray, truth: np.ndarray):
    """(true CMBs overlapped by a detection, detections overlapping no true CMB)."""
    det_ids = [int(v) for v in np.unique(detected) if v]
    true_ids = [int(v) for v in np.unique(truth) if v]
    overlap = (detected > 0) & (truth > 0)
    found = len(set(np.unique(truth[overlap]).tolist()) & set(true_ids))
    hit = set(np.unique(detected[overlap]).tolist())
    return found, sum(d not in hit for d in det_ids)


def write_overview(image, result, truth: np.ndarray, path, max_panels: int = 8) -> Path:
    """PNG of axial slices holding detections or true CMBs; detections ringed (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    recs = result.records
    slices = sorted({int(round(r["centre_ijk"][2])) for r in recs}
                    | {int(k) for k in np.unique(np.nonzero(truth)[0])})
    if not slices:
        slices = [image.array.shape[0] // 2]
    if len(slices) > max_panels:
        slices = [slices[int(i)] for i in np.linspace(0, len(slices) - 1, max_panels)]
    cols = min(4, len(slices))
    rows = int(np.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False, constrained_layout=True)
    a = image.array
    lo, hi = np.percentile(a, [1, 99.5])
    si, sj = image.spacing[0], image.spacing[1]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), slices):
        # array [j, i] shown with i to the right; aspect from the in-plane spacing
        ax.imshow(a[k], cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=sj / si)
        if truth[k].any():
            ax.contour(truth[k] > 0, levels=[0.5], colors=["lime"], linewidths=0.6)
        for r in recs:
            i, j, kk = r["centre_ijk"]
            if abs(kk - k) <= 0.5 + 1e-6 or int(round(kk)) == k:
                rad = (r["diameter_mm"] / 2 + 2.5) / si
                ax.add_patch(plt.Circle((i, j), rad, fill=False, color="red", linewidth=1.2))
                ax.text(i + rad, j + rad, str(r["label"]), color="red", fontsize=7)
        ax.set_title(f"slice k={k}", fontsize=8)
    fig.suptitle(f"{len(recs)} detection(s) (red rings); inserted CMBs outlined green", fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=90, format="png")
    plt.close(fig)
    return path
