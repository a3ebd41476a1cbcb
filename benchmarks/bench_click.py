"""One click: the warm `cmb worker` (CMBDetector's click) and a fresh `cmb detect`, against a bare
`import torch`, on a clinical-like 256 x 256 x 44 scan.  Targets (issue 26 item 5): a warm click
<= 2 s from job to findings, a fresh `cmb detect` <= 2 x a bare `import torch`, same run.

Scans (made here; real data from ../shared/data, skipped without it): the QSM brain as pseudo-T2*
on a 0.86 x 0.86 x 4 mm grid with 5 CMBs (`benchmarks/check_orientation.clinical_case`) padded to
256 x 256 x 44, as `clin`; and `clin+pineal`, the same with a calcified pineal (a dark focus on the
deep midline, where the location filter needs the atlas registration).  Each warm click gets a new
file of new voxels (a different noise seed), as a new patient would: the registration cache does
not help; a re-click of the same file (cached registration) is timed too.

Printed per scan: medians (wall s) of N runs of a bare `python -c "import torch"`, a fresh
`python -m CMBLib detect` (with its own step timings from NAME_cmb.json), warm clicks; the ratios
fresh / torch and warm click / 2 s.

    python benchmarks/bench_click.py [--runs 3] [--threads 2] [--out DIR] [--windows tiles,brain]

`--windows`: the inference windows to time one after the other in the same run (detect's
`window`; `cmb detect --window`, the worker's "window" key); default: the model's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def scans(out: Path, n: int, kinds=("clin", "clin+pineal")):
    """Write n noise variants of each of `kinds`; returns {kind: [paths]}."""
    from benchmarks.check_orientation import clinical_case
    from CMBLib.geometry import Volume
    from CMBLib.io import write_volume
    from CMBLib.synthesis.deep_veins import draw_pineal

    base = clinical_case()
    base = base[0] if isinstance(base, tuple) else base      # (image, CMB centres) since the TTA work
    a = np.zeros((44, 256, 256), np.float32)
    k, j, i = base.array.shape
    pj, pi = (256 - j) // 2, (256 - i) // 2
    a[:min(k, 44), pj:pj + j, pi:pi + i] = base.array[:44]
    origin = base.kji_to_ras(np.array([[0.0, -pj, -pi]]))[0]
    clin = Volume(a, base.spacing, tuple(origin), base.direction)
    volumes = {"clin": clin}
    if "clin+pineal" in kinds:
        from CMBLib.location import registration_for

        reg = registration_for(clin)
        pineal = reg.transform.TransformPoint((0.0, 33.0, 2.0))          # MNI (0, -33, 2): the pineal
        volumes["clin+pineal"] = draw_pineal(clin, (-pineal[0], -pineal[1], pineal[2]), 2.5, 0.85, 0)
    paths = {}
    for kind in kinds:
        vol = volumes[kind]
        paths[kind] = []
        for s in range(n):
            rng = np.random.default_rng(s)
            noisy = np.where(vol.array > 0, vol.array * (1 + 0.01 * rng.standard_normal(vol.array.shape)), 0)
            p = out / f"{kind.replace('+', '_')}_{s}.nii.gz"
            write_volume(vol.with_array(noisy.astype(np.float32)), p)
            paths[kind].append(p)
    return paths


def timed(cmd, env):
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {proc.stderr[-800:]}")
    return time.perf_counter() - t


def main(argv=None):
    from benchmarks.bench_worker import run_job

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--windows", default="", help="comma-separated: tiles, brain (default: the model's)")
    args = ap.parse_args(argv)
    windows = [w.strip() for w in args.windows.split(",") if w.strip()] or [None]
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_click_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    paths = scans(work, args.runs + 1)
    torch_s = [timed([sys.executable, "-c", "import torch"], env) for _ in range(args.runs)]
    print(f"bare import torch: median {statistics.median(torch_s):.2f} s ({', '.join(f'{t:.2f}' for t in torch_s)})")
    for kind, files in paths.items():
        for window in windows:
            fresh, steps = [], []
            for n in range(args.runs):
                out = work / f"fresh_{kind}_{window}_{n}"
                fresh.append(timed([sys.executable, "-m", "CMBLib", "detect", str(files[n]), "--out", str(out),
                                    "--device", "cpu", "--threads", str(args.threads)]
                                    + (["--window", window] if window else []), env))
                doc = json.loads(next(out.glob("*_cmb.json")).read_text(encoding="utf-8"))
                steps.append(doc.get("timings_s", {}))
                aside = len(doc.get("suppressed_candidates") or [])
            proc = subprocess.Popen([sys.executable, "-m", "CMBLib", "worker", "--threads", str(args.threads)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            clicks, again = [], None
            try:
                json.loads(proc.stdout.readline())
                order = [files[-1]] + list(files[:args.runs]) + [files[0]]     # warm-up, new images, the same again
                for n, f in enumerate(order):
                    job = {"id": str(n), "image": str(f), "out": str(work / f"warm_{kind}_{window}_{n}"),
                           "device": "cpu", "window": window}
                    t = time.perf_counter()
                    event = run_job(proc, job)
                    wall = time.perf_counter() - t
                    if 1 <= n <= args.runs:
                        clicks.append((wall, event["timings"]))
                    elif n == args.runs + 1:
                        again = wall
                proc.stdin.write('{"cmd": "quit"}\n')
                proc.stdin.flush()
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
            med = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in steps[0]}
            click = statistics.median(w for w, _ in clicks)
            print(f"\n{kind}, window {window or 'of the model'} ({aside} set aside): fresh cmb detect median "
                  f"{statistics.median(fresh):.2f} s "
                  f"= {statistics.median(fresh) / statistics.median(torch_s):.2f} x import torch (target <= 2)")
            print("  its steps (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
            print(f"  warm click (new image) median {click:.2f} s = {click / 2.0:.2f} x the 2 s target; worker steps: "
                  + ", ".join(f"{k} {statistics.median(t[k] for _, t in clicks):.2f}" for k in clicks[0][1]))
            print(f"  warm re-click of the same image (cached registration): {again:.2f} s")


if __name__ == "__main__":
    main()
