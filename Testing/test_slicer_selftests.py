"""Both modules' Slicer self-tests (the ones Slicer's CTest runs) end to end, on the fake and on
Slicer's real MRML libraries: SampleData's MRHead is replaced by a small synthetic head."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_scribble_annotator_self_test_passes(slicer_backend, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "CMBScribbleAnnotator"))
    from CMBScribbleAnnotatorLib.selftest import CMBScribbleAnnotatorTest

    CMBScribbleAnnotatorTest("runTest").runTest()
    scribbles = [n for n in slicer_backend.nodes("vtkMRMLSegmentationNode") if n.GetName() == "CMB scribbles"]
    assert len(scribbles) == 3                       # three logics, one study each: none removed another's


def test_the_detector_self_test_passes(slicer_backend, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "CMBDetector"))
    from CMBDetectorLib.selftest import CMBDetectorTest

    CMBDetectorTest("runTest").runTest()
    assert "CMBDetectorLib.selftest" in sys.modules
