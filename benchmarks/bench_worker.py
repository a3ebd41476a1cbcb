"""Cold `cmb detect` process vs the warm `cmb worker` (CMBDetector's second click), same image.

  * cold: wall time of `python -m CMBLib detect IMAGE --out DIR` in a fresh process
    (Python start, torch / MONAI imports, model load, detection, writing);
  * warm worker: wall time from writing a job line to reading its result, for the
    first job (worker just started: imports and model load included) and the second one
    (only reading, detection, writing), with the worker's own timings.

    python benchmarks/bench_worker.py IMAGE [--model default] [--device cpu] [--threads 2] [--sequence QSM]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(proc, job: dict) -> dict:
    """Send one job line to a running `cmb worker` and return its result event (SystemExit on an
    error event); progress events are skipped."""
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    while True:
        event = json.loads(proc.stdout.readline())
        if event.get("id") == job["id"] and event["event"] in ("result", "error"):
            break
    if event["event"] == "error":
        raise SystemExit(event["message"])
    return event


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sequence", default="T2S", help="T2S, SWI or QSM")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    work = Path(tempfile.mkdtemp(prefix="bench_worker_"))

    t = time.perf_counter()
    cold_cmd = [sys.executable, "-m", "CMBLib", "detect", args.image, "--out", str(work / "cold"), "--model",
                args.model, "--device", args.device, "--threads", str(args.threads), "--sequence", args.sequence]
    subprocess.run(cold_cmd, env=env, check=True, capture_output=True)
    cold = time.perf_counter() - t

    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "CMBLib", "worker", "--threads", str(args.threads)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    rows = []
    try:
        for n in (1, 2):
            job = {"id": str(n), "image": args.image, "out": str(work / f"warm{n}"), "model": args.model,
                   "device": args.device, "sequence": args.sequence}
            t = t_start if n == 1 else time.perf_counter()      # the first click also starts the worker
            event = run_job(proc, job)
            rows.append((time.perf_counter() - t, event))
        proc.stdin.write('{"cmd": "quit"}\n')
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"image {args.image}, model {args.model}, device {args.device}, {args.threads} threads")
    print(f"  cold process (cmb detect):        {cold:6.2f} s")
    for n, (wall, event) in enumerate(rows, start=1):
        t = event["timings"]
        print(f"  worker job {n}: {wall:6.2f} s wall; model loads so far {event['model_loads']}, "
              f"load {t['load_model']:.2f} s, read {t['read']:.2f} s, detect {t['detect']:.2f} s, "
              f"write {t['write']:.2f} s, {event['cmb_count']} candidate(s)")
    print(f"  second click vs cold process: {cold / rows[1][0]:.1f}x faster")


if __name__ == "__main__":
    main()
