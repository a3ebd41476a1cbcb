"""Batch throughput of `cmb detect` on clinical-like scans, in scans per hour (issue 26 item 5:
>= 3,000 an hour on 2 CPU cores with `--shard`).

N noise variants of the clinical-like 256 x 256 x 44 scan of `bench_click.py` (the QSM brain as
pseudo-T2* on a 0.86 x 0.86 x 4 mm grid, 5 CMBs; real data from ../shared/data) are written to a
folder; then, for each setting, `--shards S` processes `cmb detect FOLDER --shard k/S --threads T`
run side by side (T = cores / S) and the wall time from the first start to the last exit gives
scans per hour (start-up of each process included: that is what a job array pays).  Each setting
runs in the same session, one after the other, so the ratios between them mean more than the
absolute figures on a shared machine.

    python benchmarks/bench_batch.py [--scans 12] [--cores 2] [--shards 1,2] [--windows tiles,brain]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGET_PER_HOUR = 3000.0


def run_batch(folder: Path, out: Path, shards: int, threads: int, window, env) -> float:
    """Wall seconds for `shards` side-by-side `cmb detect` processes over `folder`."""
    procs = []
    t = time.perf_counter()
    for k in range(1, shards + 1):
        cmd = [sys.executable, "-m", "CMBLib", "detect", str(folder), "--out", str(out), "--device", "cpu",
               "--threads", str(threads), "--shard", f"{k}/{shards}", "--overwrite"]
        procs.append(subprocess.Popen(cmd + (["--window", window] if window else []), env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"cmb detect failed: {err[-800:]}")
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=12)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shards", default="1,2", help="comma-separated numbers of side-by-side processes")
    ap.add_argument("--windows", default="", help="comma-separated: tiles, brain (default: the model's)")
    args = ap.parse_args(argv)
    from benchmarks.bench_click import scans

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    folder = work / "in"
    folder.mkdir()
    files = scans(folder, args.scans, kinds=("clin",))["clin"]
    windows = [w.strip() for w in args.windows.split(",") if w.strip()] or [None]
    print(f"{len(files)} scans of 256 x 256 x 44 at 0.86 x 0.86 x 4 mm, {args.cores} cores")
    for window in windows:
        for shards in (int(s) for s in args.shards.split(",")):
            threads = max(args.cores // shards, 1)
            env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
            wall = run_batch(folder, work / f"out_{window}_{shards}", shards, threads, window, env)
            per_hour = 3600.0 * len(files) / wall
            print(f"window {window or 'of the model'}, {shards} shard(s) x {threads} thread(s): {wall:.1f} s, "
                  f"{per_hour:.0f} scans an hour = {per_hour / TARGET_PER_HOUR:.2f} x the target of "
                  f"{TARGET_PER_HOUR:.0f}")


if __name__ == "__main__":
    main()
