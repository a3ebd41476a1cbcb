"""Stroke end -> live mask shown, through CMBScribbleAnnotator's logic layer.

512 x 512 x 300 synthetic T2*-like volume (noise around 300, --cmbs dark spheres of
1-2.5 mm radius at 0.45 x 0.45 x 0.5 mm), Slicer's real MRML libraries (slicer-core;
`--backend fake`: Testing/fake_slicer.py), the
real interactive engine `CMBLib.growing.Grower`.  Measured, median of --repeats runs on
different CMBs:

  * stroke end: `logic.liveGrow()` after a 3-voxel stroke on one CMB (finds the changed
    scribble by its modified time, reads its voxels from its small labelmap, grows it,
    writes the box-sized mask into the masks segment);
  * slider: `logic.showMask(label, tolerance)` (re-threshold of the kept join map);
  * reference (the old way): "Generate mask (selected)" = `logic.generateMasks([label])`
    (full-volume export of scribbles and masks, batch growing, full-volume import).
The Grower's one-off set-up on first use is reported separately.  Target: stroke end
<= 50 ms.  Without `CMBLib.growing.Grower` (the interactive engine) it says so and stops.

    python benchmarks/bench_live_mask.py [--shape 300 512 512] [--cmbs 30] [--repeats 9] [--backend real|fake]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing"), str(ROOT / "CMBScribbleAnnotator")]

from slicer_backends import standalone  # noqa: E402


def synthetic(shape, spacing_kji, n, rng):
    image = rng.normal(300.0, 8.0, shape).astype(np.float32)
    centres, margin = [], np.array([12, 40, 40])
    while len(centres) < n:
        c = rng.integers(margin, np.array(shape) - margin)
        if all(np.abs(c - d).max() > 20 for d in centres):
            centres.append(c)
    for c in centres:
        r_mm = rng.uniform(1.0, 2.5)
        half = np.ceil(r_mm / spacing_kji).astype(int) + 1
        box = tuple(slice(v - h, v + h + 1) for v, h in zip(c, half))
        kk, jj, ii = np.indices([2 * h + 1 for h in half]) - half[:, None, None, None]
        d = np.sqrt((kk * spacing_kji[0]) ** 2 + (jj * spacing_kji[1]) ** 2 + (ii * spacing_kji[2]) ** 2)
        image[box][d <= r_mm] = 90.0
    return image, centres


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument("--cmbs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--backend", choices=("real", "fake"), default="real")
    args = parser.parse_args(argv)
    try:
        from CMBLib.growing import Grower  # noqa: F401
    except ImportError:
        print("Grower not available: CMBLib.growing has no interactive engine (Grower) in this tree; "
              "nothing measured.")
        return 0

    slicer, vtk, finish = standalone(args.backend)
    from CMBScribbleAnnotatorLib import nodes
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic

    rng = np.random.default_rng(1)
    shape, spacing_kji = tuple(args.shape), np.array([0.5, 0.45, 0.45])
    image, centres = synthetic(shape, spacing_kji, args.cmbs, rng)
    ijk_to_ras = np.diag([-0.45, -0.45, 0.5, 1.0])
    volume_node = slicer.util.addVolumeFromArray(image, ijk_to_ras, name="bench")
    del image
    logic = AnnotatorLogic(sessionRoot=Path(tempfile.mkdtemp(prefix="bench_live_")))
    logic.setVolume(volume_node)
    for _ in range(args.cmbs):
        logic.addFinding()

    def stroke(label):
        k, j, i = centres[label - 1]
        box = (slice(k, k + 1), slice(j, j + 1), slice(i - 1, i + 2))        # a 3-voxel stroke
        nodes.setSegmentFromBox(logic.scribblesNode, volume_node, label, np.ones((1, 1, 3), np.uint8), box)

    t = time.perf_counter()
    grower = logic.grower()
    setup_ms = 1000 * (time.perf_counter() - t)
    engine_ms = []
    real_grow = grower.grow

    def timed_grow(label, seeds):          # splits the time into engine and module glue
        t0 = time.perf_counter()
        try:
            return real_grow(label, seeds)
        finally:
            engine_ms.append(1000 * (time.perf_counter() - t0))

    grower.grow = timed_grow
    stroke(1)
    logic.liveGrow()                      # warm-up (first grow)
    grow_ms, slider_ms, sizes = [], [], []
    for label in range(2, min(args.cmbs, args.repeats + 1) + 1):
        stroke(label)
        t = time.perf_counter()
        grown = logic.liveGrow()
        grow_ms.append(1000 * (time.perf_counter() - t))
        assert list(grown) == [label], grown
        lo, hi = grown[label].tolerance_range()
        sizes.append(int(grown[label].mask().sum()))
        t = time.perf_counter()
        logic.showMask(label, lo + 0.5 * (hi - lo))
        slider_ms.append(1000 * (time.perf_counter() - t))
    label = 2
    ref_ms = []
    for _ in range(3):
        t = time.perf_counter()
        logic.generateMasks([label])
        ref_ms.append(1000 * (time.perf_counter() - t))
    stroke_med, ref_med = statistics.median(grow_ms), statistics.median(ref_ms)
    print(f"{args.backend} Slicer backend; volume {shape[0]}x{shape[1]}x{shape[2]}, {args.cmbs} CMBs; "
          f"live masks of {len(grow_ms)} CMBs "
          f"(median size {int(statistics.median(sizes))} voxels)")
    print(f"  Grower set-up on first use (once per volume): {setup_ms:8.1f} ms")
    print(f"  stroke end -> mask shown (median):            {stroke_med:8.1f} ms  (target <= 50 ms; "
          f"max {max(grow_ms):.1f})")
    glue = [total - engine for total, engine in zip(grow_ms, engine_ms[1:])]
    print(f"    of which Grower.grow (engine) (median):     {statistics.median(engine_ms[1:]):8.1f} ms; "
          f"module glue {statistics.median(glue):.1f} ms")
    print(f"  tolerance slider -> mask shown (median):      {statistics.median(slider_ms):8.1f} ms")
    print(f"  old way, Generate mask (selected) (median):   {ref_med:8.1f} ms")
    print(f"  ratio old / live: {ref_med / stroke_med:.0f}x")
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
