"""The CMBScribbleAnnotator glue (CMBScribbleAnnotatorLib) on both test backends: Slicer's real
MRML libraries (slicer-core) and the fake kept for Python 3.9 (`slicer_backend` fixture,
Testing/slicer_backends.py).  Tests use Slicer's public API only.  The module's own Slicer
self-test runs in Testing/test_slicer_selftests.py.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

from CMBLib.annotation.document import validate_document
from CMBLib.errors import CMBError

MODULE_DIR = Path(__file__).resolve().parents[1] / "CMBScribbleAnnotator"


@pytest.fixture
def glue(slicer_backend, monkeypatch, tmp_path):
    """(backend, AnnotatorLogic, volume node, tmp_path): a 10 x 30 x 30 volume, one dark CMB."""
    slicer = slicer_backend.slicer
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic

    rng = np.random.default_rng(2)
    image = rng.normal(300.0, 8.0, (10, 30, 30)).astype(np.float32)
    kk, jj, ii = np.indices(image.shape)
    image[((ii - 15) * 0.9) ** 2 + ((jj - 12) * 0.9) ** 2 + ((kk - 5) * 1.5) ** 2 <= 2.2 ** 2] = 90.0
    ijk_to_ras = np.diag([-0.9, -0.9, 1.5, 1.0])
    ijk_to_ras[:3, 3] = [40.0, 50.0, -7.0]
    volume_node = slicer.util.addVolumeFromArray(image, ijk_to_ras, name="T2S")
    return slicer_backend, AnnotatorLogic, volume_node, tmp_path


def test_annotate_grow_autosave_export_import_through_the_glue(glue):
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    slicer = backend.slicer
    logic = AnnotatorLogic(sessionRoot=tmp_path / "sessions", rater="r1")
    logic.setVolume(volume_node)
    assert logic.addFinding() == 1 and logic.addFinding() == 2
    from CMBScribbleAnnotatorLib import nodes

    scribble = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, np.uint8)
    scribble[5, 12, 14:17] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        scribble, logic.scribblesNode, nodes.segmentIdForLabel(logic.scribblesNode, 1), volume_node)
    labels = logic.scribbleLabelmap().array
    assert int((labels == 1).sum()) == 3 and int((labels == 2).sum()) == 0

    logic.generateMasks()
    mask = logic.maskLabelmap().array
    assert np.all(mask[scribble > 0] == 1) and not np.any(mask == 2)
    f1, f2 = logic.findings()
    assert f1["mask"]["voxel_count"] == int((mask == 1).sum()) > 10 and f1["size_class"] == "<5mm"
    assert f2["mask"] is None                                      # finding 2 has no scribble yet
    masks_segment = logic.masksNode.GetSegmentation().GetSegment(nodes.segmentIdForLabel(logic.masksNode, 1))
    assert backend.tag(masks_segment, "cmb.size_class") == "<5mm"

    logic.setField(1, "certainty", "uncertain")
    assert backend.tag(masks_segment, "cmb.certainty") == "uncertain"    # tags follow the metadata
    with pytest.raises(CMBError, match=r"findings\[0\]\.cause: 'x' is not one of caa"):
        logic.setField(1, "cause", "x")
    logic.deleteFinding(2)
    logic.mimicsNode.AddControlPoint((1.0, 2.0, 3.0), "cavernoma")
    centre = logic.findingCentre(1)               # the mask's centre (RAS mm) once masks are grown
    np.testing.assert_allclose(centre, logic.volume.kji_to_ras(np.argwhere(mask == 1).mean(axis=0)), atol=1e-6)
    nodes.jumpTo(centre)
    np.testing.assert_allclose(backend.slice_centre(), centre, atol=1e-6)

    logic.autosave()
    again = AnnotatorLogic(sessionRoot=tmp_path / "sessions")
    again.setVolume(volume_node)
    assert again.hasSavedSession()
    again.restore()
    validate_document(again.document)
    assert again.findings()[0]["certainty"] == "uncertain"
    assert again.document["mimics"][0]["type"] == "cavernoma"
    np.testing.assert_array_equal(again.maskLabelmap().array, mask)

    files = again.exportStudy(tmp_path / "ds", "01", sequence="SWI")
    assert files["image"].name == "sub-01_swi.nii.gz"
    with pytest.raises(CMBError, match="already exists"):
        again.exportStudy(tmp_path / "ds", "01")
    reader = AnnotatorLogic(sessionRoot=tmp_path / "s2")
    reader.importStudy(tmp_path / "ds", "01")
    np.testing.assert_array_equal(reader.maskLabelmap().array, mask)
    np.testing.assert_array_equal(reader.scribbleLabelmap().array, labels * (labels == 1))
    assert reader.findings()[0]["certainty"] == "uncertain"


def test_detector_hand_over_proposes_findings_with_a_seed(glue):
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    slicer = backend.slicer
    logic = AnnotatorLogic(sessionRoot=tmp_path)
    logic.setVolume(volume_node)
    logic.addFinding()
    centre = logic.volume.kji_to_ras([5, 12, 15])
    detector_mask = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, np.uint16)
    detector_mask[4:7, 11:14, 14:17] = 1
    mapping = logic.addDetections([{"label": 1, "centre_ras": list(centre), "size_class": "<5mm",
                                    "max_probability": 0.8}], detector_mask)
    assert mapping == {1: 2}
    proposed = logic.findings()[1]
    assert proposed["review_status"] == "proposed" and proposed["source"] == "detector"
    assert logic.scribbleLabelmap().array[5, 12, 15] == 2
    assert int((logic.maskLabelmap().array == 2).sum()) == 27
    logic.generateMasks(labels=[2])
    assert logic.findings()[1]["mask"]["voxel_count"] > 10


def test_cmb_detector_hand_over_through_its_segmentation(glue):
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    slicer = backend.slicer
    logic = AnnotatorLogic(sessionRoot=tmp_path)
    logic.setVolume(volume_node)
    logic.addFinding()
    detector = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CMB candidates")
    for det_label in (1, 5):
        segment_id = detector.GetSegmentation().AddEmptySegment(f"cand_{det_label}", f"cand {det_label}")
        segment = detector.GetSegmentation().GetSegment(segment_id)
        segment.SetTag("CMBDetector.Label", str(det_label))
        block = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, bool)
        block[4:7, 11:14, 14:17] = det_label == 1
        block[2:4, 20:22, 5:7] = det_label == 5
        slicer.util.updateSegmentBinaryLabelmapFromArray(block.astype(np.uint8), detector, segment_id, volume_node)
    centre = list(logic.volume.kji_to_ras([5, 12, 15]))
    findings = [{"label": 1, "review_status": "confirmed", "source": "detector", "centre_ras": centre,
                 "location_suggested": "outside"},
                {"label": 5, "review_status": "proposed", "source": "detector",
                 "centre_ras": list(logic.volume.kji_to_ras([2.5, 20.5, 5.5]))}]
    mapping = logic.importDetectorFindings(detector, volume_node, findings)
    assert mapping == {1: 2, 5: 5}
    mask = logic.maskLabelmap().array
    assert int((mask == 2).sum()) == 27 and int((mask == 5).sum()) == 8
    by_label = {f["label"]: f for f in logic.findings()}
    assert by_label[2]["review_status"] == "confirmed" and by_label[5]["review_status"] == "proposed"
    assert by_label[2]["mask"]["voxel_count"] == 27 and by_label[2]["location_suggested"] is None
    assert logic.scribbleLabelmap().array[5, 12, 15] == 2
    validate_document(logic.document)


def test_module_files_are_listed_in_cmake_and_parse_on_python39():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = {line.strip().replace("${MODULE_NAME}", "CMBScribbleAnnotator")
              for line in cmake.splitlines() if line.strip().endswith((".py", ".png", ".ui"))}
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*")
               if p.suffix in (".py", ".png", ".ui") and "__pycache__" not in p.parts}
    assert on_disk == listed
    for path in MODULE_DIR.rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    lib_cmake = (MODULE_DIR.parent / "CMBLib" / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in (MODULE_DIR.parent / "CMBLib" / "annotation").glob("*.*"):
        if path.suffix in (".py", ".json"):
            assert re.search(rf"^\s*annotation/{re.escape(path.name)}\s*$", lib_cmake, re.M), path.name
    assert "class CMBScribbleAnnotatorTest(ScriptedLoadableModuleTest)" in (
        MODULE_DIR / "CMBScribbleAnnotatorLib" / "selftest.py").read_text(encoding="utf-8")
    main = (MODULE_DIR / "CMBScribbleAnnotator.py").read_text(encoding="utf-8")
    assert "from CMBScribbleAnnotatorLib.selftest import CMBScribbleAnnotatorTest" in main
    assert len(main.splitlines()) <= 400
    assert 'slicer.util.loadUI(self.resourcePath("UI/CMBScribbleAnnotator.ui"))' in main
    for path in MODULE_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import threading" not in text and "from threading" not in text, path
        assert "pip_install(" not in text or "dependencies.ensure(" in text, path   # one consent flow
    assert "StartCloseEvent" in main and "EndCloseEvent" in main and "def onReload" in main
    # every widget the code names exists in the .ui
    ui = (MODULE_DIR / "Resources" / "UI" / "CMBScribbleAnnotator.ui").read_text(encoding="utf-8")
    lib = MODULE_DIR / "CMBScribbleAnnotatorLib"
    code = main + "".join((lib / f).read_text(encoding="utf-8") for f in ("form.py", "report.py"))
    assert {"saveReportButton", "exportSegButton"} <= set(re.findall(r"\bui\.([A-Za-z_]\w*)", code))
    names = set(re.findall(r"\bui\.([A-Za-z_]\w*)", code)) - {"layout"}
    names |= {f"{prefix}_{field}" for prefix, fields in (
        ("combo", ["review_status", "certainty", "size_class", "location", "side", "cause"]),
        ("check", ["multiple", "problematic"]), ("text", ["cause_other", "problem_reason", "comment"]),
        ("study", ["inclusion", "exclusion_reason", "quality"])) for field in fields}
    for name in sorted(names):
        assert f'name="{name}"' in ui, f"{name} is not in the .ui"


def _paint(slicer, logic, label, voxels):
    from CMBScribbleAnnotatorLib import nodes

    array = np.zeros(logic.volume.array.shape, np.uint8)
    for kji in voxels:
        array[tuple(kji)] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        array, logic.scribblesNode, nodes.segmentIdForLabel(logic.scribblesNode, label), logic.volumeNode)


def test_autosave_writes_only_the_findings_that_changed(glue, monkeypatch):
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    slicer = backend.slicer
    logic = AnnotatorLogic(sessionRoot=tmp_path / "s", rater="r1")
    logic.setVolume(volume_node)
    for label, kji in ((1, [(5, 12, 14), (5, 12, 15)]), (2, [(3, 20, 5)]), (3, [(7, 4, 4)])):
        assert logic.addFinding() == label
        _paint(slicer, logic, label, kji)
    written = []
    import CMBLib.io as io  # CMBLib.annotation.session takes atomic_path from here at call time

    original = io.atomic_path

    def spy(path):
        written.append(path.relative_to(logic.store.folder(logic.key)).as_posix())
        return original(path)

    monkeypatch.setattr(io, "atomic_path", spy)
    logic.autosave()
    first = sorted(p for p in written if p.endswith(".npy"))
    assert first == ["scribbles/1.npy", "scribbles/2.npy", "scribbles/3.npy"]
    written.clear()
    _paint(slicer, logic, 2, [(3, 20, 5), (3, 20, 6)])         # one stroke on finding 2
    logic.autosave()
    assert [p for p in written if p.endswith(".npy")] == ["scribbles/2.npy"]
    saved = np.load(logic.store.folder(logic.key) / "scribbles" / "2.npy")
    assert saved.dtype == np.uint16 and sorted(map(tuple, saved)) == [(3, 20, 5), (3, 20, 6)]
    written.clear()
    logic.deleteFinding(3)
    logic.autosave()
    assert not [p for p in written if p.endswith(".npy")]
    assert not (logic.store.folder(logic.key) / "scribbles" / "3.npy").exists()
    again = AnnotatorLogic(sessionRoot=tmp_path / "s")
    again.setVolume(volume_node)
    again.restore()
    labels = again.scribbleLabelmap().array
    assert labels[5, 12, 14] == labels[5, 12, 15] == 1 and labels[3, 20, 6] == 2 and not np.any(labels == 3)


class FakeGrown:
    """Same interface as CMBLib.growing.GrownCMB: a cube around the seeds' centre whose
    half-width is the tolerance (so masks at two tolerances differ predictably)."""

    def __init__(self, label, seeds, shape):
        self.label, self.tolerance = label, 1.0
        c = np.round(np.asarray(seeds).mean(axis=0)).astype(int)
        self.centre = c
        self.box = tuple(slice(max(0, v - 3), min(n, v + 4)) for v, n in zip(c, shape))

    def mask(self, tolerance=None):
        t = int(round(self.tolerance if tolerance is None else tolerance))
        shape = tuple(b.stop - b.start for b in self.box)
        kk, jj, ii = np.indices(shape)
        local = [v - b.start for v, b in zip(self.centre, self.box)]
        return (abs(kk - local[0]) <= t) & (abs(jj - local[1]) <= t) & (abs(ii - local[2]) <= t)

    def tolerance_range(self):
        return 0.0, 3.0

    def curve(self):
        return np.arange(4.0), np.array([(2 * t + 1) ** 3 for t in range(4)])


class FakeGrower:
    def __init__(self, image, settings=None):
        self.image, self.calls, self.removed = image, [], []

    def grow(self, label, seeds_kji):
        self.calls.append((label, np.asarray(seeds_kji).copy()))
        return FakeGrown(label, seeds_kji, self.image.array.shape)

    def remove(self, label):
        self.removed.append(label)


def test_live_mask_grows_the_changed_scribble_and_rethresholds(glue):
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    slicer = backend.slicer
    logic = AnnotatorLogic(sessionRoot=tmp_path, growerFactory=FakeGrower)
    logic.setVolume(volume_node)
    logic.addFinding()
    logic.addFinding()
    _paint(slicer, logic, 1, [(5, 12, 14), (5, 12, 16)])
    grown = logic.liveGrow()
    assert list(grown) == [1]                           # finding 2 has no scribble: nothing grown, no error
    (label, seeds), = logic.grower().calls
    assert label == 1 and sorted(map(tuple, seeds)) == [(5, 12, 14), (5, 12, 16)]
    assert int((logic.maskLabelmap().array == 1).sum()) == 27          # tolerance 1 -> 3x3x3
    assert logic.liveGrow() == {}                        # nothing changed since: no re-grow
    logic.showMask(1, 2.0)                              # slider: re-threshold, no grow
    assert len(logic.grower().calls) == 1 and int((logic.maskLabelmap().array == 1).sum()) == 125
    _paint(slicer, logic, 1, [])                        # scribble erased -> mask removed
    logic.liveGrow()
    assert logic.grower().removed == [1] and not np.any(logic.maskLabelmap().array)
    _paint(slicer, logic, 2, [(5, 12, 15)])
    logic.generateMasks()                               # batch masks (and restored ones) are kept:
    assert logic.liveGrow() == {}                       # only a later stroke re-grows live
    _paint(slicer, logic, 2, [(5, 12, 15), (5, 12, 16)])
    assert list(logic.liveGrow()) == [2]


def test_findings_written_in_bulk_keep_only_their_box_and_leave_no_node_behind(glue):
    """Restore, import, batch masks and hand-over write each finding's layer cropped to its
    bounding box (real MRML keeps the full volume per layer otherwise), and reading the
    label maps back leaves no temporary node in the scene."""
    backend, AnnotatorLogic, volume_node, tmp_path = glue
    from CMBScribbleAnnotatorLib import nodes

    logic = AnnotatorLogic(sessionRoot=tmp_path)
    logic.setVolume(volume_node)
    labels = np.zeros(logic.volume.array.shape, np.uint16)
    labels[2:4, 5:8, 9:10] = 3
    labels[7, 20, 21:25] = 9
    before = backend.slicer.mrmlScene.GetNumberOfNodes()
    assert nodes.setSegmentsFromLabelmap(logic.masksNode, volume_node, labels) == [3, 9]
    assert nodes.setSegmentsFromLabelmap(logic.masksNode, volume_node, labels, labels=[4]) == [4]  # absent: empty
    extents = {}
    for label in (3, 4, 9):
        segment_id = nodes.segmentIdForLabel(logic.masksNode, label)
        extents[label] = tuple(logic.masksNode.GetBinaryLabelmapInternalRepresentation(segment_id).GetExtent())
    assert extents[3] == (9, 9, 5, 7, 2, 3) and extents[9] == (21, 24, 20, 20, 7, 7)   # (i0, i1, j0, j1, k0, k1)
    assert extents[4][1] - extents[4][0] <= 0 and not len(nodes.segmentVoxels(logic.masksNode, "CMB_4"))
    np.testing.assert_array_equal(nodes.labelmapFromSegmentation(logic.masksNode, volume_node), labels)
    np.testing.assert_array_equal(logic.maskLabelmap().array, labels)
    assert backend.slicer.mrmlScene.GetNumberOfNodes() == before           # nothing left in the scene
