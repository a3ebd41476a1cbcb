"""Export a training checkpoint as a bundled model folder (weights.npz + model.json).

    python -m training.export_model --checkpoint training/runs/default/best.pt \\
        --out CMBLib/models/cmb-default --name cmb-default --version 0.1.0 --threshold 0.8 \\
        [--metrics metrics.json] [--flip-average] [--location-filter-from CMBLib/models/cmb-default]

Uses `CMBLib.detection.model_io.save_model` (no pickle: numpy arrays named by
state_dict keys, SHA-256 recorded in model.json).
"""
import argparse
import json
from pathlib import Path

TRAINING_DATA = (
    "Synthetic only: domain-randomised T2*/SWI-like images generated from one real FreeSurfer label map "
    "(random deformation, intensities, bias, noise, gamma, slice thickness 0.5-5 mm, in-plane 0.45-1 mm) "
    "with inserted CMBs and mimics (veins, flow voids, calcification, cavernomas, air/bone), plus one real "
    "QSM brain (2016 QSM challenge, COSMOS) re-sampled to clinical grids with inserted bright CMBs, and a "
    "pseudo-T2* magnitude made from it (exp(-c|chi|)) with dark CMBs; training CMBs in the right hemisphere only; "
    "plus fresh synthetic CMBs inserted on the fly into random training patches (training/patch_insertion.py: "
    "Gaussian to flat-topped profiles, half-maximum radius 0.9-3 mm, slab averaging over 2-5 mm). "
    "No real CMB annotations, no real T2*/SWI scans."
)


def export(checkpoint, out, name="cmb-default", version="0.1.0", threshold=0.5, metrics=None,
           min_diameter_mm=1.5, max_diameter_mm=10.0, extra=None):
    import torch

    from CMBLib.detection.model_io import save_model
    from CMBLib.detection.network import build_network, network_params
    from CMBLib.detection.preprocess import OPTIONS, preprocess_options

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = state["config"]
    net = build_network(cfg["network"])
    net.load_state_dict(state["model"])
    net.eval()
    meta = {
        "name": name,
        "version": version,
        "network": network_params(cfg["network"]),
        "spacing_mm": [float(s) for s in cfg["spacing_mm"]],
        "patch_size": [int(p) for p in cfg["patch_size"]],
        "inference_patch_size": [int(p) for p in cfg.get("inference_patch_size", cfg["patch_size"])],
        "inference_overlap": 0.125,
        "polarity": "dark",
        "intensity": "resampled to spacing_mm, brain mask (CMBLib.detection.preprocess), "
                     "(x - p50) / (p95 - p5) inside the brain, clipped to [-4, 4]; QSM negated so CMBs are dark",
        "threshold": float(threshold),
        "min_diameter_mm": float(min_diameter_mm),
        "max_diameter_mm": float(max_diameter_mm),
        "training_data": TRAINING_DATA,
        "training": {"steps": int(state.get("step", 0)), "loss": cfg.get("loss"), "seed": cfg.get("seed"),
                     "batch_size": cfg.get("batch_size"), "lr": cfg.get("lr")},
        "metrics": metrics or {},
        "intended_input": "SWI or T2*-GRE magnitude (dark CMBs) or QSM (bright CMBs, sequence QSM), 1.5T/3T",
    }
    pre = dict(cfg.get("preprocess") or {})
    if any(v != OPTIONS[k][0] for k, v in pre.items()):      # not the classic preprocessing: say which
        meta["preprocess"] = preprocess_options({"preprocess": pre})
    meta.update(extra or {})
    folder = save_model(net, meta, out)
    return folder


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a checkpoint as a bundled model folder.")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="cmb-default")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--min-diameter-mm", type=float, default=1.5)
    ap.add_argument("--metrics", help="JSON file whose content goes in model.json 'metrics'")
    ap.add_argument("--flip-average", action="store_true",
                    help="inference averages each window with its left-right mirror (model.json flip_average)")
    ap.add_argument("--location-filter-from", metavar="MODEL_DIR",
                    help="copy that model's location_filter entry (zones do not depend on the weights)")
    args = ap.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    extra = {"flip_average": True} if args.flip_average else {}
    if args.location_filter_from:
        from CMBLib.detection.model_io import read_metadata

        zones = read_metadata(args.location_filter_from).get("location_filter")
        if not zones:
            raise SystemExit(f"{args.location_filter_from} has no location_filter entry")
        extra["location_filter"] = zones
    folder = export(args.checkpoint, args.out, args.name, args.version, args.threshold, metrics,
                    args.min_diameter_mm, extra=extra)
    size = sum(p.stat().st_size for p in Path(folder).iterdir())
    print(f"exported {folder} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
