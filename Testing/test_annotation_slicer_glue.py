"""The CMBScribbleAnnotator glue (CMBScribbleAnnotatorLib) against a small fake of the Slicer API.

Slicer cannot be installed here, so `slicer` and `vtk` are replaced by fakes that keep
the semantics the glue relies on (checked against Slicer's source): arrays [k, j, i],
IJK-to-RAS matrices, segment tags read through `vtk.mutable`, and
`ExportSegmentsToLabelmapNode` numbering the exported segments 1..N in the order of the
given IDs.  The real module is exercised by its Slicer self-test
(`CMBScribbleAnnotatorTest`).
"""
import ast
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from CMBLib.annotation.document import validate_document
from CMBLib.errors import CMBError

MODULE_DIR = Path(__file__).resolve().parents[1] / "CMBScribbleAnnotator"


# --- the fake ------------------------------------------------------------------------------
class Mutable:
    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


class Segment:
    def __init__(self, name):
        self.name, self.tags, self.array = name, {}, None

    def SetTag(self, key, value):
        self.tags[key] = str(value)

    def GetTag(self, key, out):
        if key not in self.tags:
            return False
        out.value = self.tags[key]
        return True


class Segmentation:
    def __init__(self):
        self.segments = {}

    def AddEmptySegment(self, segment_id, name, color=None):
        while segment_id in self.segments:
            segment_id += "_"
        self.segments[segment_id] = Segment(name)
        return segment_id

    def GetSegment(self, segment_id):
        return self.segments.get(segment_id)

    def GetSegmentIDs(self):
        return list(self.segments)

    def RemoveSegment(self, segment_id):
        del self.segments[segment_id]


class Node:
    def __init__(self, class_name, name):
        self.class_name, self.name = class_name, name
        self.segmentation = Segmentation()
        self.points = []
        self.array, self.ijk_to_ras = None, np.eye(4)

    def IsA(self, class_name):
        return class_name == self.class_name

    def GetName(self):
        return self.name

    def CreateDefaultDisplayNodes(self):
        pass

    def GetDisplayNode(self):
        return None

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume_node):
        self.reference = volume_node

    def GetSegmentation(self):
        return self.segmentation

    def GetIJKToRASMatrix(self, matrix):
        matrix.m = self.ijk_to_ras.copy()

    def GetSpacing(self):
        return tuple(np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0))

    # markups
    def RemoveAllControlPoints(self):
        self.points = []

    def AddControlPoint(self, position, label=""):
        self.points.append([list(position), label, ""])
        return len(self.points) - 1

    def SetNthControlPointDescription(self, n, text):
        self.points[n][2] = text

    def GetNthControlPointDescription(self, n):
        return self.points[n][2]

    def GetNthControlPointLabel(self, n):
        return self.points[n][1]

    def GetNumberOfControlPoints(self):
        return len(self.points)

    def GetNthControlPointPositionWorld(self, n, out):
        out[:] = self.points[n][0]


class Scene:
    def __init__(self):
        self.nodes = []

    def AddNewNodeByClass(self, class_name, name=""):
        node = Node(class_name, name)
        self.nodes.append(node)
        return node

    def GetFirstNodeByName(self, name):
        return next((n for n in self.nodes if n.name == name), None)

    def RemoveNode(self, node):
        self.nodes.remove(node)


def make_fake_slicer():
    scene = Scene()
    util = types.SimpleNamespace()
    util.arrayFromVolume = lambda node: node.array
    util.arrayFromVTKMatrix = lambda m: m.m.copy()

    def update_segment(array, seg_node, segment_id, volume_node):
        seg_node.GetSegmentation().GetSegment(segment_id).array = (np.asarray(array) > 0).copy()

    def array_from_segment(seg_node, segment_id, volume_node):
        a = seg_node.GetSegmentation().GetSegment(segment_id).array
        return np.zeros(volume_node.array.shape, np.uint8) if a is None else a.astype(np.uint8)

    def add_volume(array, ijk_to_ras=None, name=None, nodeClassName=None):
        node = scene.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
        node.array = np.array(array, copy=True)
        node.ijk_to_ras = np.asarray(ijk_to_ras, dtype=float)
        return node

    util.updateSegmentBinaryLabelmapFromArray = update_segment
    util.arrayFromSegmentBinaryLabelmap = array_from_segment
    util.addVolumeFromArray = add_volume

    class SegmentationsLogic:
        @staticmethod
        def ExportSegmentsToLabelmapNode(seg_node, ids, labelmap_node, reference):
            out = np.zeros(reference.array.shape, np.int16)
            for value, segment_id in enumerate(ids.values, start=1):   # 1..N in the order of ids
                a = seg_node.GetSegmentation().GetSegment(segment_id).array
                if a is not None:
                    out[a] = value
            labelmap_node.array = out
            return True

    jumps = []

    class MarkupsLogic:
        @staticmethod
        def JumpSlicesToLocation(x, y, z, centered):
            jumps.append((x, y, z, centered))

    modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=SegmentationsLogic),
                                    markups=types.SimpleNamespace(logic=MarkupsLogic))
    slicer = types.ModuleType("slicer")
    slicer.mrmlScene, slicer.util, slicer.modules, slicer.jumps = scene, util, modules, jumps

    vtk = types.ModuleType("vtk")

    class Matrix:
        m = np.eye(4)

    class StringArray:
        def __init__(self):
            self.values = []

        def InsertNextValue(self, value):
            self.values.append(value)

    vtk.vtkMatrix4x4, vtk.vtkStringArray, vtk.mutable = Matrix, StringArray, Mutable
    vtk.vtkVector3d = lambda x, y, z: (x, y, z)
    return slicer, vtk


@pytest.fixture
def glue(monkeypatch, tmp_path):
    slicer, vtk = make_fake_slicer()
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "vtk", vtk)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in [m for m in sys.modules if m.startswith("CMBScribbleAnnotatorLib")]:
        monkeypatch.delitem(sys.modules, name)
    from CMBScribbleAnnotatorLib.logic import AnnotatorLogic

    rng = np.random.default_rng(2)
    image = rng.normal(300.0, 8.0, (10, 30, 30)).astype(np.float32)
    kk, jj, ii = np.indices(image.shape)
    image[((ii - 15) * 0.9) ** 2 + ((jj - 12) * 0.9) ** 2 + ((kk - 5) * 1.5) ** 2 <= 2.2 ** 2] = 90.0
    ijk_to_ras = np.diag([-0.9, -0.9, 1.5, 1.0])
    ijk_to_ras[:3, 3] = [40.0, 50.0, -7.0]
    volume_node = slicer.util.addVolumeFromArray(image, ijk_to_ras, name="T2S")
    return slicer, AnnotatorLogic, volume_node, tmp_path


def test_annotate_grow_autosave_export_import_through_the_glue(glue):
    slicer, AnnotatorLogic, volume_node, tmp_path = glue
    logic = AnnotatorLogic(sessionRoot=tmp_path / "sessions", rater="r1")
    logic.setVolume(volume_node)
    assert logic.addFinding() == 1 and logic.addFinding() == 2
    from CMBScribbleAnnotatorLib import nodes

    scribble = np.zeros(volume_node.array.shape, np.uint8)
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
    assert masks_segment.tags["cmb.size_class"] == "<5mm"

    logic.setField(1, "certainty", "uncertain")
    assert masks_segment.tags["cmb.certainty"] == "uncertain"    # tags follow the metadata
    with pytest.raises(CMBError, match=r"findings\[0\]\.cause: 'x' is not one of caa"):
        logic.setField(1, "cause", "x")
    logic.deleteFinding(2)
    logic.mimicsNode.AddControlPoint((1.0, 2.0, 3.0), "cavernoma")
    logic.findingCentre(1)
    nodes.jumpTo(logic.findingCentre(1))
    assert slicer.jumps and slicer.jumps[-1][3] is True

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
    slicer, AnnotatorLogic, volume_node, tmp_path = glue
    logic = AnnotatorLogic(sessionRoot=tmp_path)
    logic.setVolume(volume_node)
    logic.addFinding()
    centre = logic.volume.kji_to_ras([5, 12, 15])
    detector_mask = np.zeros(volume_node.array.shape, np.uint16)
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
    slicer, AnnotatorLogic, volume_node, tmp_path = glue
    logic = AnnotatorLogic(sessionRoot=tmp_path)
    logic.setVolume(volume_node)
    logic.addFinding()
    detector = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CMB candidates")
    for det_label in (1, 5):
        segment_id = detector.GetSegmentation().AddEmptySegment(f"cand_{det_label}", f"cand {det_label}")
        segment = detector.GetSegmentation().GetSegment(segment_id)
        segment.SetTag("CMBDetector.Label", str(det_label))
        block = np.zeros(volume_node.array.shape, bool)
        block[4:7, 11:14, 14:17] = det_label == 1
        block[2:4, 20:22, 5:7] = det_label == 5
        segment.array = block
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
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = {line.strip().replace("${MODULE_NAME}", "CMBScribbleAnnotator")
              for line in cmake.splitlines() if line.strip().endswith((".py", ".png", ".ui"))}
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*")
               if p.suffix in (".py", ".png", ".ui") and "__pycache__" not in p.parts}
    assert on_disk == listed
    for path in MODULE_DIR.rglob("*.py"):
        ast.parse(path.read_text(), feature_version=(3, 9))
    lib_cmake = (MODULE_DIR.parent / "CMBLib" / "CMakeLists.txt").read_text()
    for path in (MODULE_DIR.parent / "CMBLib" / "annotation").glob("*.*"):
        if path.suffix in (".py", ".json"):
            assert re.search(rf"^\s*annotation/{re.escape(path.name)}\s*$", lib_cmake, re.M), path.name
    assert "class CMBScribbleAnnotatorTest(ScriptedLoadableModuleTest)" in (
        MODULE_DIR / "CMBScribbleAnnotator.py").read_text()
