"""Fresh-process start-up of `cmb detect`: wall time of new Python processes, median of N runs.

    python benchmarks/bench_startup.py [--runs 5] [--tree DIR] [--image scan.nii.gz] [--threads 2]

Measured, each in a new process (`--tree`: another checkout, e.g. an older commit made with
`git archive`, to compare before / after on the same machine in the same run):

  torch     python -c "import torch"                      (reference: the floor any detector pays)
  pipeline  python -c "import CMBLib.detection.pipeline"  (+ load_model("default"))
  detect    python -m CMBLib detect IMAGE --out TMP --device cpu   (one scan, bundled model)

and, from one `python -X importtime -m CMBLib detect` run, the cumulative import time of
torch, monai and CMBLib.  Printed: medians in seconds and the ratio detect / torch.
Without --image a 0.86 x 0.86 x 4 mm head of 256 x 256 x 44 voxels is made
(CMBLib.synthesis.demo_study.make_demo_phantom).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd, env, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return out


def import_times(cmd, env) -> dict:
    """Cumulative import time (s) of the top-level packages torch, monai, CMBLib."""
    proc = subprocess.run([cmd[0], "-X", "importtime"] + cmd[1:], env=env, capture_output=True, text=True)
    best = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1]) / 1e6
        except ValueError:
            continue
        name = parts[2].strip()
        if name in ("torch", "monai", "CMBLib", "scipy", "SimpleITK"):
            best[name] = max(best.get(name, 0.0), cumulative)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tree", default=str(REPO), help="checkout to measure (default: this one)")
    ap.add_argument("--image", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(Path(args.tree).resolve()))
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if image is None:
            image = str(Path(tmp) / "clinical.nii.gz")
            subprocess.run([py, "-c", "from CMBLib.synthesis.demo_study import make_demo_phantom as m; "
                            "from CMBLib.io import write_volume as w; "
                            f"w(m(0, (44, 256, 256), (0.86, 0.86, 4.0))[0], {image!r})"], env=env, check=True)
        detect = [py, "-m", "CMBLib", "detect", image, "--device", "cpu", "--threads", str(args.threads),
                  "--overwrite", "--out", str(Path(tmp) / "out")]
        res = {
            "torch": timed([py, "-c", "import torch"], env, args.runs),
            "pipeline": timed([py, "-c", "import CMBLib.detection.pipeline as p, CMBLib.detection.model_io as m; "
                               "m.load_model('default')"], env, args.runs),
            "detect": timed(detect, env, args.runs),
        }
        imports = import_times(detect, env)
    print(f"tree {args.tree}, {args.runs} runs, image {args.image or 'phantom 256 x 256 x 44'}")
    for name, values in res.items():
        print(f"  {name:9s} median {statistics.median(values):6.2f} s  (runs: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    print("  imports (cumulative, one -X importtime run of detect): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(imports.items())))
    ratio = statistics.median(res["detect"]) / statistics.median(res["torch"])
    print(f"  ratio detect / import torch: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
