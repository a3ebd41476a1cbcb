"""Fresh-process start-up of `cmb detect`: wall time of new Python processes, median of N runs.

    python benchmarks/bench_startup.py [--runs 5] [--tree DIR ...] [--image scan.nii.gz] [--threads 2]

Measured, each in a new process (`--tree A --tree B`: other checkouts, e.g. an older commit
unpacked with `git archive`, to compare before / after; their runs alternate):

  torch     python -c "import torch"                      (reference: the floor any detector pays)
  pipeline  python -c "import CMBLib.detection.pipeline"
  load      the same + load_model("default") (torch, the network, the weights)
  detect    python -m CMBLib detect IMAGE --out TMP --device cpu   (one scan, bundled model)

(wall time, and CPU time = user + system of the child, which a busy machine disturbs less)
and, from one `python -X importtime -m CMBLib detect` run, the cumulative import time of
torch, monai and CMBLib.  Printed: medians in seconds and the ratio detect / torch.
Without --image a 0.86 x 0.86 x 4 mm head of 256 x 256 x 44 voxels is made
(CMBLib.synthesis.demo_study.make_demo_phantom).
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(cmd, env):
    """(wall s, CPU s = user + system of the child) of one run of `cmd`."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


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
    ap.add_argument("--tree", action="append", default=None,
                    help="checkout to measure (repeatable; runs alternate between trees; default: this one)")
    ap.add_argument("--image", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in (args.tree or [REPO])]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image
        if image is None:
            image = str(Path(tmp) / "clinical.nii.gz")
            subprocess.run([py, "-c", "from CMBLib.synthesis.demo_study import make_demo_phantom as m; "
                            "from CMBLib.io import write_volume as w; "
                            f"w(m(0, (44, 256, 256), (0.86, 0.86, 4.0))[0], {image!r})"],
                           env=dict(os.environ, PYTHONPATH=trees[0]), check=True)
        cmds = {
            "torch": [py, "-c", "import torch"],
            "pipeline": [py, "-c", "import CMBLib.detection.pipeline"],
            "load": [py, "-c", "import CMBLib.detection.pipeline, CMBLib.detection.model_io as m; "
                     "m.load_model('default')"],
            "detect": [py, "-m", "CMBLib", "detect", image, "--device", "cpu", "--threads", str(args.threads),
                       "--overwrite", "--out", str(Path(tmp) / "out")],
        }
        res = {t: {k: [] for k in cmds} for t in trees}
        for _ in range(args.runs):
            for tree in trees:   # alternate, so a change in the machine's load hits every tree alike
                env = dict(os.environ, PYTHONPATH=tree)
                for name, cmd in cmds.items():
                    res[tree][name].append(run_once(cmd, env))
        imports = {t: import_times(cmds["detect"], dict(os.environ, PYTHONPATH=t)) for t in trees}
    print(f"{args.runs} runs, image {args.image or 'phantom 256 x 256 x 44 at 0.86 x 0.86 x 4 mm'}")
    for tree in trees:
        print(f"tree {tree}")
        for name, values in res[tree].items():
            wall, cpu = [v[0] for v in values], [v[1] for v in values]
            print(f"  {name:9s} wall median {statistics.median(wall):6.2f} s (runs: "
                  f"{', '.join(f'{v:.2f}' for v in wall)}); CPU median {statistics.median(cpu):6.2f} s")
        print("  imports (cumulative, one -X importtime run of detect): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(imports[tree].items())))
        ratio = statistics.median(v[0] for v in res[tree]["detect"]) / statistics.median(
            v[0] for v in res[tree]["torch"])
        print(f"  ratio detect / import torch (wall): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
