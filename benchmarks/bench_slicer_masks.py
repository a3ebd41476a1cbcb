"""Finding masks into Slicer segments on Slicer's real MRML libraries (slicer-core): time and memory.

The annotator writes one segment per finding whenever a study is restored from its autosave,
imported from a dataset, grown in batch or handed over by the detector
(`CMBScribbleAnnotatorLib.nodes.setSegmentsFromLabelmap`).  Measured on a 512 x 512 x 300
volume with 30 CMBs (balls of radius 2-5 voxels), median of --repeats runs, in one process:

  * new: `setSegmentsFromLabelmap`, each finding's layer cropped to its bounding box;
  * reference (what it did before): `slicer.util.updateSegmentBinaryLabelmapFromArray` per
    finding, which imports a full-volume labelmap for each one;
  * read back: `labelmapFromSegmentation` (merged in memory) against the reference
    `ExportSegmentsToLabelmapNode` through a temporary labelmap node;
  * end to end: `AnnotatorLogic.restore()` of an autosaved study (reading the session files included).

Memory: resident-set growth kept after the call (MB), above the volume and the label array.
Targets: write 30 findings <= 0.5 s and <= 50 MB.  Prints the ratios reference / new.

    python benchmarks/bench_slicer_masks.py [--shape 300 512 512] [--cmbs 30] [--repeats 3] [--no-reference]
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


def rss_mb():
    """Resident set size of this process (MB, Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2 ** 20


def timed(function, repeats, setup=lambda: None):
    """(median seconds, median MB of resident memory kept) over `repeats` runs of setup(); function(...)."""
    seconds, kept = [], []
    for _ in range(repeats):
        argument = setup()
        before = rss_mb()
        t = time.perf_counter()
        function(argument)
        seconds.append(time.perf_counter() - t)
        kept.append(rss_mb() - before)
    return statistics.median(seconds), statistics.median(kept)


def balls(shape, n, rng):
    labels = np.zeros(shape, np.uint16)
    centres = rng.integers([10, 40, 40], [shape[0] - 10, shape[1] - 40, shape[2] - 40], (n, 3))
    for label, c in enumerate(centres, start=1):
        r = int(rng.integers(2, 6))
        kk, jj, ii = np.indices((2 * r + 1,) * 3) - r
        box = tuple(slice(v - r, v + r + 1) for v in c)
        labels[box][kk ** 2 + jj ** 2 + ii ** 2 <= r * r] = label
    return labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument("--cmbs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the full-volume reference (GBs)")
    args = parser.parse_args(argv)

    from real_slicer import RealSlicer, available

    ok, why = available()
    if not ok:
        sys.exit(f"bench_slicer_masks: {why}")
    real = RealSlicer().install()
    slicer, vtk = real.slicer, real.vtk
    from CMBScribbleAnnotatorLib import nodes
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic

    shape = tuple(args.shape)
    labels = balls(shape, args.cmbs, np.random.default_rng(0))
    volume = slicer.util.addVolumeFromArray(np.zeros(shape, np.int16), np.diag([-0.45, -0.45, 0.5, 1.0]), name="bench")
    print(f"volume {shape[2]} x {shape[1]} x {shape[0]}, {args.cmbs} CMBs; "
          f"{slicer.mrmlScene.GetNumberOfNodes()} nodes in the scene")

    def fresh(_=None):
        return nodes.newSegmentation("bench", volume)

    new_s, new_mb = timed(lambda seg: nodes.setSegmentsFromLabelmap(seg, volume, labels), args.repeats, fresh)
    print(f"write {args.cmbs} findings, new (cropped layers):   {new_s:6.3f} s  {new_mb:7.1f} MB kept   "
          f"target <= 0.5 s and <= 50 MB")

    seg = fresh()
    nodes.setSegmentsFromLabelmap(seg, volume, labels)
    before_nodes = slicer.mrmlScene.GetNumberOfNodes()
    read_s, _ = timed(lambda _: nodes.labelmapFromSegmentation(seg, volume), args.repeats)
    assert np.array_equal(nodes.labelmapFromSegmentation(seg, volume), labels)
    assert slicer.mrmlScene.GetNumberOfNodes() == before_nodes, "a temporary node was left in the scene"
    print(f"read back (merged in memory):                 {read_s:6.3f} s")

    if not args.no_reference:
        def reference_write(seg):
            for label in range(1, args.cmbs + 1):
                segment_id = nodes.addFindingSegment(seg, label)
                slicer.util.updateSegmentBinaryLabelmapFromArray((labels == label).astype(np.uint8), seg,
                                                                 segment_id, volume)

        ref_s, ref_mb = timed(reference_write, 1, fresh)
        print(f"write {args.cmbs} findings, reference (full layers): {ref_s:6.3f} s  {ref_mb:7.1f} MB kept   "
              f"ratio {ref_s / new_s:5.1f}x time, {ref_mb / max(new_mb, 0.1):6.1f}x memory")

        def reference_read(_):
            ids = vtk.vtkStringArray()
            for segment_id in seg.GetSegmentation().GetSegmentIDs():
                ids.InsertNextValue(segment_id)
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(seg, ids, node, volume)
            slicer.util.arrayFromVolume(node).copy()
            slicer.mrmlScene.RemoveNode(node)

        ref_read_s, _ = timed(reference_read, args.repeats)
        print(f"read back, reference (ExportSegmentsToLabelmapNode): {ref_read_s:6.3f} s   "
              f"ratio {ref_read_s / read_s:5.1f}x")

    # end to end: an autosaved study restored by a second logic
    root = Path(tempfile.mkdtemp(prefix="bench_slicer_masks_"))
    logic = AnnotatorLogic(sessionRoot=root, rater="bench")
    logic.setVolume(volume)
    nodes.setSegmentsFromLabelmap(logic.masksNode, volume, labels)
    scribbles = np.where(np.isin(labels, []), 0, 0).astype(np.uint16)
    for label in range(1, args.cmbs + 1):
        k, j, i = np.argwhere(labels == label)[0]
        scribbles[k, j, i] = label
    nodes.setSegmentsFromLabelmap(logic.scribblesNode, volume, scribbles)
    logic.autosave()

    def restore(restored):
        restored.restore()

    def new_logic():
        restored = AnnotatorLogic(sessionRoot=root)
        restored.setVolume(volume)
        return restored

    restore_s, restore_mb = timed(restore, args.repeats, new_logic)
    print(f"restore an autosaved study (end to end):      {restore_s:6.3f} s  {restore_mb:7.1f} MB kept")
    real.uninstall()


if __name__ == "__main__":
    main()
