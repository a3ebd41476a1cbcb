"""NIfTI reading / writing and `cmb grow` start-up: this tree against an older one, alternately.

The clinical cases of bench_grow.py (0.86 x 0.86 x 4 mm pseudo-T2*, 8 CMBs) are written by
SimpleITK; then, alternating between the two trees in the same minutes (the machine's load
moves absolute times, so compare within one run; CPU times are steadier than wall times):
`read_volume` of image + scribbles and `write_volume` of a label map in one process (after
one warm-up read and write, so lazy imports are not counted); `cmb
grow` as a subprocess minus `python -m CMBLib --version`; python + the imports `cmb grow`
needs.  The masks both trees write are compared.

    git archive 8a4fec9 | (mkdir -p /tmp/before && tar -x -C /tmp/before)
    python benchmarks/bench_nifti_io.py --before /tmp/before [--repeats 5]
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing"), str(ROOT / "benchmarks")]

IO_TIMING = """
import sys, time, json
import numpy as np
from CMBLib.io import read_volume, write_volume
image, scribbles, out = sys.argv[1:4]
write_volume(read_volume(image), out), read_volume(scribbles)  # warm: lazy imports, file cache
c0, w0 = time.process_time(), time.perf_counter()
read_volume(image), read_volume(scribbles)
read = (time.perf_counter() - w0, time.process_time() - c0)
labels = read_volume(scribbles)
c0, w0 = time.process_time(), time.perf_counter()
write_volume(labels, out)
print(json.dumps({"read": read, "write": (time.perf_counter() - w0, time.process_time() - c0)}))
"""


def child(tree, args, **kwargs):
    """(wall s, CPU s of the child, stdout) of `python ARGS` with `tree` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([sys.executable] + args, check=True, capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), **kwargs)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), proc.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, type=Path, help="an older tree of this repository")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import json

    import SimpleITK as sitk
    from bench_grow import clinical_cases

    from CMBLib.io import read_volume, volume_to_sitk

    trees = {"before": args.before.resolve(), "after": ROOT}
    imports = {"before": "import CMBLib.cli.grow, CMBLib.growing, CMBLib.io, SimpleITK",
               "after": "import CMBLib.cli.grow, CMBLib.growing, CMBLib.io, CMBLib.nifti"}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for n, (vol, scr) in enumerate(clinical_cases(3, np.random.default_rng(0))):
            files.append((tmp / f"t2s{n}.nii.gz", tmp / f"scr{n}.nii.gz"))
            sitk.WriteImage(volume_to_sitk(vol), str(files[-1][0]))
            sitk.WriteImage(volume_to_sitk(scr), str(files[-1][1]))
        print(f"{len(files)} cases, {args.repeats} rounds; load average {os.getloadavg()[0]:.1f} at the start")
        for _ in range(args.repeats):
            for name, tree in trees.items():
                res.setdefault((name, "start"), []).append(child(tree, ["-m", "CMBLib", "--version"])[:2])
                res.setdefault((name, "imports"), []).append(child(tree, ["-c", imports[name]])[:2])
                for n, (img, scr) in enumerate(files):
                    out = tmp / f"mask_{name}{n}.nii.gz"
                    res.setdefault((name, "grow"), []).append(child(tree, [
                        "-m", "CMBLib", "grow", str(img), str(scr), "-o", str(out), "--overwrite", "--quiet"])[:2])
                    io = json.loads(child(tree, ["-c", IO_TIMING, str(img), str(scr), str(tmp / "w.nii.gz")])[2])
                    res.setdefault((name, "read"), []).append(io["read"])
                    res.setdefault((name, "write"), []).append(io["write"])
        same = all(np.array_equal(read_volume(tmp / f"mask_before{n}.nii.gz").array,
                                  read_volume(tmp / f"mask_after{n}.nii.gz").array) for n in range(len(files)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end; masks of both trees identical: {same}")

    def med(name, what):
        v = np.asarray(res[(name, what)])
        return np.median(v[:, 0]) * 1000, np.median(v[:, 1]) * 1000, len(v)

    for what, label in (("read", "read_volume image + scribbles (in the process)"),
                        ("write", "write_volume of the scribble label map"),
                        ("grow", "`cmb grow` subprocess minus `python -m CMBLib --version`"),
                        ("imports", "python + the imports `cmb grow` needs")):
        cells = []
        for name in trees:
            wall, cpu, n = med(name, what)
            if what == "grow":
                wall, cpu = wall - med(name, "start")[0], cpu - med(name, "start")[1]
            cells.append(f"{name} {wall:.0f} ms wall, {cpu:.1f} ms CPU")
        print(f"{label} (median of {n}): " + "; ".join(cells))


if __name__ == "__main__":
    main()
