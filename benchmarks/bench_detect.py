"""Time and peak memory of `detect` per clinical scan, on 2 CPU threads.

    python benchmarks/bench_detect.py [--model NAME|PATH] [--threads 2] [--device cpu]

Cases (synthetic T2*-like heads from CMBLib.synthesis.demo_study.make_demo_phantom):
  clinical  256 x 256 x 44 at 0.86 x 0.86 x 4 mm
  iso1mm    192 x 224 x 176 at 1 mm isotropic (whole brain)

Each case runs in a fresh subprocess, so the peak resident memory (ru_maxrss) is that
case's alone.  In the same process the reference is a plain torch forward of the same
network over the whole preprocessed volume (one pass, no windows, no blending): the
ratio "detect / plain" shows the cost of sliding windows + pre/post-processing.

With no bundled model (and no --model) the network is an untrained one of the bundled
architecture (training/configs/default.yaml: MONAI UNet 16-32-64-128 with batch norm,
1 x 1 x 2 mm grid, windows of at most 160 x 160 x 64): timing depends on the architecture,
not on the weights.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {"clinical": ((44, 256, 256), (0.86, 0.86, 4.0)), "iso1mm": ((176, 224, 192), (1.0, 1.0, 1.0))}
FALLBACK_META = {"name": "untrained-default-architecture", "version": "bench", "sha256": "",
                 "spacing_mm": [1.0, 1.0, 2.0], "patch_size": [160, 160, 64], "threshold": 0.5,
                 "min_diameter_mm": 2.0, "max_diameter_mm": 10.0,
                 "network": {"architecture": "UNet", "channels": [16, 32, 64, 128], "strides": [2, 2, 2],
                             "num_res_units": 1, "norm": "batch", "out_channels": 2}}


def load(model_arg, device):
    from CMBLib.detection.model_io import list_models, load_model

    if model_arg or list_models():
        return load_model(model_arg or "default", device=device)
    import torch

    from CMBLib.detection.network import build_network

    torch.manual_seed(0)
    return build_network(FALLBACK_META["network"]).eval().to(device), dict(FALLBACK_META)


def run_one(case, model_arg, threads, device):
    """Runs in the child process: prints one JSON line of measurements."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO))
    from CMBLib.detection.pipeline import detect
    from CMBLib.detection.preprocess import preprocess
    from CMBLib.synthesis.demo_study import make_demo_phantom

    shape, spacing = CASES[case]
    image, _, _ = make_demo_phantom(0, shape_kji=shape, spacing=spacing)
    network, meta = load(model_arg, device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = detect(image, (network, meta), device=device)
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # reference: one plain forward over the whole preprocessed volume (padded to the divisor)
    pre = preprocess(image, meta["spacing_mm"], polarity="dark")
    pad = [(0, (-n) % 16) for n in pre.array.shape]
    x = torch.from_numpy(np.pad(pre.array, pad))[None, None].to(device)
    t = time.perf_counter()
    with torch.inference_mode():
        network(x)
    plain = time.perf_counter() - t
    print(json.dumps({"case": case, "shape_ijk": list(image.shape_ijk), "spacing": list(spacing),
                      "model": meta["name"], "seconds": round(seconds, 2), "timings": result.timings,
                      "peak_rss_mb": round(peak_mb, 1), "rss_before_mb": round(rss_before / 1024.0, 1),
                      "plain_forward_s": round(plain, 2), "model_grid_kji": list(pre.array.shape),
                      "candidates": len(result.records), "device": result.settings["device"]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, args.model, args.threads, args.device)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    print(f"detect per scan, {args.threads} thread(s), device {args.device}")
    for case in args.cases:
        cmd = [sys.executable, __file__, "--one", case, "--threads", str(args.threads), "--device", args.device]
        if args.model:
            cmd += ["--model", args.model]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{case}: failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        t = r["timings"]
        print(f"{case:9s} {'x'.join(map(str, r['shape_ijk']))} @ {'x'.join(f'{s:g}' for s in r['spacing'])} mm "
              f"[{r['model']}]: {r['seconds']:.1f} s (preprocess {t['preprocess']:.1f}, inference "
              f"{t['inference']:.1f}, candidates {t['candidates']:.1f}), peak RSS {r['peak_rss_mb']:.0f} MB; "
              f"plain forward of the whole model grid {r['model_grid_kji']} (k,j,i): {r['plain_forward_s']:.1f} s, "
              f"ratio detect/plain {r['seconds'] / max(r['plain_forward_s'], 1e-6):.2f}")


if __name__ == "__main__":
    main()
