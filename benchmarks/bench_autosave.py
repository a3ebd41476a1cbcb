"""GUI-thread time of one autosave of CMBScribbleAnnotator, new (incremental) vs old (full).

Drives the module's logic layer (CMBScribbleAnnotatorLib.logic.AnnotatorLogic) on Slicer's
real MRML libraries (slicer-core; `--backend fake`: Testing/fake_slicer.py) on a
512 x 512 x 300 volume with 30 CMBs (scribble of a few voxels and a grown mask each, every
segment in its own labelmap layer as the module makes them).  Measured, median of --repeats runs:

  * new, after one stroke: `logic.autosave()` when one finding's scribble changed
    (reads that segment's small internal labelmap, writes one uint16 voxel file, the
    document and session.json);
  * new, metadata only: `logic.autosave()` when no segment changed;
  * old: what the previous autosave did on the GUI thread after Slicer's export, i.e.
    WITHOUT the cost of Slicer's two full-volume ExportSegmentsToLabelmapNode calls:
    the int64 lookup of the exported int16 label maps (scribbles and masks), np.unique,
    np.any and the sparse save of both full volumes (SessionStore.save).

Target: new <= 50 ms.  Prints the ratio old / new.

    python benchmarks/bench_autosave.py [--shape 300 512 512] [--cmbs 30] [--repeats 7] [--backend real|fake]
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


def median_ms(function, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument("--cmbs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--backend", choices=("real", "fake"), default="real")
    args = parser.parse_args(argv)

    slicer, vtk, finish = standalone(args.backend)
    from CMBScribbleAnnotatorLib import nodes
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic

    from CMBLib.annotation.session import SessionStore

    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.int16)
    ijk_to_ras = np.diag([-0.45, -0.45, 0.5, 1.0])
    volume_node = slicer.util.addVolumeFromArray(image, ijk_to_ras, name="bench")
    root = Path(tempfile.mkdtemp(prefix="bench_autosave_"))
    logic = AnnotatorLogic(sessionRoot=root / "new", rater="bench")
    logic.setVolume(volume_node)
    centres = rng.integers([20, 60, 60], [shape[0] - 20, shape[1] - 60, shape[2] - 60], (args.cmbs, 3))
    for n, c in enumerate(centres, start=1):
        assert logic.addFinding() == n
        r = int(rng.integers(2, 6))
        kk, jj, ii = np.indices((2 * r + 1,) * 3) - r
        ball = (kk ** 2 + jj ** 2 + ii ** 2 <= r * r).astype(np.uint8)
        stroke = np.zeros((1, 1, 3), np.uint8) + 1
        for node, array, origin in ((logic.scribblesNode, stroke, c - [0, 0, 1]), (logic.masksNode, ball, c - r)):
            box = tuple(slice(int(o), int(o) + n) for o, n in zip(origin, array.shape))
            nodes.setSegmentFromBox(node, volume_node, n, array, box)

    t = time.perf_counter()
    logic.autosave()
    first_ms = 1000 * (time.perf_counter() - t)
    target = nodes.segmentIdForLabel(logic.scribblesNode, 7)
    k, j, i = nodes.segmentVoxels(logic.scribblesNode, target).min(axis=0)
    width = [3]

    def stroke_then_save():
        width[0] += 1                                                    # the rater paints a bit more
        box = (slice(k, k + 1), slice(j, j + 2), slice(i, i + width[0]))
        nodes.setSegmentFromBox(logic.scribblesNode, volume_node, 7, np.ones((1, 2, width[0]), np.uint8), box)
        logic.autosave()

    new_stroke_ms = median_ms(stroke_then_save, args.repeats)
    new_meta_ms = median_ms(logic.autosave, args.repeats)

    # the old path, after Slicer's export: exported int16 label maps (1..N in segment order)
    exported = {}
    for layer, node in (("scribbles", logic.scribblesNode), ("masks", logic.masksNode)):
        out = np.zeros(shape, np.int16)
        for value, (_label, segment_id, _) in enumerate(nodes.segmentStates(node), start=1):
            kji = nodes.segmentVoxels(node, segment_id)
            out[kji[:, 0], kji[:, 1], kji[:, 2]] = value
        exported[layer] = out
    labels = np.array([label for label, _, _ in nodes.segmentStates(logic.scribblesNode)], np.uint16)
    old_store = SessionStore(root / "old")

    def old_autosave():
        lookup = np.zeros(len(labels) + 1, np.uint16)
        lookup[1:] = labels
        scribbles = lookup[np.asarray(exported["scribbles"], dtype=np.int64)]
        present = [int(v) for v in np.unique(scribbles) if v]
        masks = lookup[np.asarray(exported["masks"], dtype=np.int64)]
        assert len(present) == len(labels)
        old_store.save(logic.key, logic.document, logic.volume.with_array(scribbles),
                       logic.volume.with_array(masks) if np.any(masks) else None)

    old_ms = median_ms(old_autosave, max(3, args.repeats // 2))
    print(f"{args.backend} Slicer backend; volume {shape[0]}x{shape[1]}x{shape[2]}, {args.cmbs} CMBs, "
          f"median of {args.repeats} runs")
    print(f"  new autosave, first (all {args.cmbs} findings written): {first_ms:8.1f} ms")
    print(f"  new autosave after one stroke:                   {new_stroke_ms:8.1f} ms  (target <= 50 ms)")
    print(f"  new autosave, metadata change only:              {new_meta_ms:8.1f} ms")
    print(f"  old autosave (numpy part only, export excluded): {old_ms:8.1f} ms")
    print(f"  ratio old / new (one stroke): {old_ms / new_stroke_ms:.0f}x")
    again = AnnotatorLogic(sessionRoot=root / "new")
    again.setVolume(volume_node)
    _, scribbles, masks = again.store.load(again.key)
    assert int((scribbles.array == 7).sum()) == len(nodes.segmentVoxels(logic.scribblesNode, target)) == \
        2 * width[0], "saved state differs"
    assert int((masks.array > 0).sum()) == int((exported["masks"] > 0).sum())
    print("  restored state checked: the stroke and all masks are in the session")
    finish()


if __name__ == "__main__":
    main()
