"""A small fake of the Slicer API used by the modules' logic (pytest on Python 3.9, benchmarks).

The same tests run on Slicer's real MRML libraries (Testing/real_slicer.py, Python >= 3.10);
this fake keeps the behaviour they showed: arrays [k, j, i], IJK-to-RAS matrices, segment
tags read through `vtk.mutable` (`SetTag` changes the segment's MTime only when the value
changes), `ImportLabelmapToSegmentationNode` putting label value v into the v-th given ID,
`ExportSegmentsToLabelmapNode` numbering the exported segments 1..N in the order of the
given IDs, one internal labelmap per segment (after `SeparateSegmentLabelmap`) whose extent
covers only its voxels (an empty one has extent (0, -1, 0, -1, 0, -1)), a duplicate segment
ID getting the suffix `_1`, a removed node no longer in a scene (`GetScene()` None),
`AddNewNodeByClass` refusing class names Slicer does not have (None), a point list having
a display node at once and new points selected.
"""
import itertools
import types

import numpy as np

_clock = itertools.count(1)


class Mutable:
    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


class Image:
    """vtkOrientedImageData: extent (i0, i1, j0, j1, k0, k1), uint8 scalars, MTime."""

    def __init__(self, array=None, origin_kji=(0, 0, 0), shape=None):
        self.array = np.zeros((0, 0, 0), np.uint8) if array is None else np.asarray(array)
        self.origin_kji, self.shape = tuple(int(v) for v in origin_kji), shape
        self.mtime = next(_clock)

    # construction as in nodes.setSegmentFromBox
    def SetExtent(self, *extent):
        i0, i1, j0, j1, k0, k1 = extent[0] if len(extent) == 1 else extent
        self.origin_kji = (k0, j0, i0)
        self.array = np.zeros((k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1), np.uint8)

    def AllocateScalars(self, scalar_type, components):
        pass

    def SetImageToWorldMatrix(self, matrix):
        self.matrix = matrix

    def GetPointData(self):
        return types.SimpleNamespace(GetScalars=lambda: self)

    def GetExtent(self):
        (k0, j0, i0), (nk, nj, ni) = self.origin_kji, self.array.shape
        if self.array.size == 0:
            return (0, -1, 0, -1, 0, -1)
        return (i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)

    def GetDimensions(self):
        nk, nj, ni = self.array.shape
        return (ni, nj, nk)

    def GetMTime(self):
        return self.mtime

    def full(self, shape):
        out = np.zeros(shape, bool)
        if self.array.size:
            k0, j0, i0 = self.origin_kji
            nk, nj, ni = self.array.shape
            out[k0:k0 + nk, j0:j0 + nj, i0:i0 + ni] = self.array > 0
        return out


def cropped(array):
    """An Image holding the bounding box of the non-zero voxels of a full-grid array."""
    array = np.asarray(array) > 0
    if not array.any():
        return Image(shape=array.shape)
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(array))
    return Image(array[box].astype(np.uint8), [b.start for b in box], array.shape)


class Segment:
    def __init__(self, name, color=None):
        self.name, self.tags, self.image, self.shape = name, {}, Image(), None
        self.color = tuple(color) if color is not None else (0.5, 0.5, 0.5)
        self.mtime = next(_clock)

    def GetName(self):
        return self.name

    def SetColor(self, r, g, b):
        self.color = (r, g, b)

    def GetColor(self):
        return self.color

    def HasTag(self, key):
        return key in self.tags

    @property
    def array(self):
        return None if self.image is None or self.shape is None else self.image.full(self.shape)

    @array.setter
    def array(self, full):
        self.shape = np.shape(full)
        self.image = cropped(full)

    def SetTag(self, key, value):
        if self.tags.get(key) != str(value):
            self.tags[key] = str(value)
            self.mtime = next(_clock)

    def GetTag(self, key, out):
        if key not in self.tags:
            return False
        out.value = self.tags[key]
        return True

    def GetLabelValue(self):
        return 1

    def GetMTime(self):
        return self.mtime


class Segmentation:
    def __init__(self):
        self.segments = {}

    def AddEmptySegment(self, segment_id, name, color=None):
        base, n = segment_id, 0
        while segment_id in self.segments:
            n += 1
            segment_id = f"{base}_{n}"
        self.segments[segment_id] = Segment(name, color)
        return segment_id

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetSegment(self, segment_id):
        return self.segments.get(segment_id)

    def GetSegmentIDs(self):
        return list(self.segments)

    def RemoveSegment(self, segment_id):
        del self.segments[segment_id]

    def SeparateSegmentLabelmap(self, segment_id):
        pass   # every fake segment has its own layer


class DisplayNode:
    """vtkMRMLDisplayNode: colour (unselected) and selected colour; no colour table."""

    def __init__(self):
        self.color, self.selected_color = (0.5, 0.5, 0.5), (1.0, 0.5, 0.5)   # Slicer's defaults

    def SetColor(self, r, g, b):
        self.color = (r, g, b)

    def SetSelectedColor(self, r, g, b):
        self.selected_color = (r, g, b)

    def GetColor(self):
        return self.color

    def GetSelectedColor(self):
        return self.selected_color

    def GetColorNode(self):
        return None


class Node:
    def __init__(self, class_name, name):
        self.class_name, self.name, self.scene = class_name, name, None
        self.segmentation = Segmentation()
        self.points = []
        self.array, self.ijk_to_ras = None, np.eye(4)
        self.attributes = {}
        self.display = None
        self.columns, self.rows = [], []

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def GetID(self):
        return f"{self.class_name}{id(self)}"

    def SetAndObserveTransformNodeID(self, node_id):
        self.transform_id = node_id

    def GetTransformNodeID(self):
        return getattr(self, "transform_id", None)

    def GetAttribute(self, key):
        """vtkMRMLNode::GetAttribute: None when the attribute is not set."""
        return self.attributes.get(key)

    def IsA(self, class_name):
        return class_name == self.class_name

    def GetClassName(self):
        return self.class_name

    def GetScene(self):
        return self.scene

    def GetImageData(self):
        return Image(self.array)

    def GetName(self):
        return self.name

    def SetHideFromEditors(self, hide):
        self.hidden = bool(hide)

    def CreateDefaultDisplayNodes(self):
        if self.display is None:
            self.display = DisplayNode()

    def GetDisplayNode(self):
        """None until CreateDefaultDisplayNodes (a point list has one at once, as in Slicer)."""
        return self.display

    def GetNumberOfDisplayNodes(self):
        return int(self.display is not None)

    def GetNthDisplayNode(self, n):
        return self.display

    def GenerateMergedLabelmapForAllSegments(self, merged, extent_mode, reference, ids, values):
        """The segments `ids` on `reference`'s grid, segment n with value values[n] (later wins)."""
        shape = reference.array.shape
        out = np.zeros(shape, np.int16)
        for segment_id, value in zip(ids.values, values.values):
            segment = self.segmentation.GetSegment(segment_id)
            if segment is not None and segment.image is not None:
                out[segment.image.full(shape)] = value
        merged.array, merged.origin_kji = out, (0, 0, 0)
        return True

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume_node):
        self.reference = volume_node

    def GetSegmentation(self):
        return self.segmentation

    def GetBinaryLabelmapInternalRepresentation(self, segment_id):
        return self.segmentation.GetSegment(segment_id).image

    def GetIJKToRASMatrix(self, matrix):
        matrix.m = self.ijk_to_ras.copy()

    def GetSpacing(self):
        return tuple(np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0))

    def SetSpacing(self, *spacing):
        directions = self.ijk_to_ras[:3, :3] / np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)
        self.ijk_to_ras[:3, :3] = directions * np.asarray(spacing, dtype=float)

    def SetOrigin(self, *origin):
        self.ijk_to_ras[:3, 3] = origin

    # markups
    def RemoveAllControlPoints(self):
        self.points = []

    def AddControlPoint(self, position, label=""):
        self.points.append([list(position), label, "", False, True])   # position, label, description, locked, selected
        return len(self.points) - 1

    def GetNthControlPointSelected(self, n):
        return self.points[n][4]

    def SetNthControlPointLocked(self, n, locked):
        self.points[n][3] = bool(locked)

    def GetNthControlPointLocked(self, n):
        return self.points[n][3]

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

    GetNthControlPointPosition = GetNthControlPointPositionWorld   # no transforms in the fake

    # tables (vtkMRMLTableNode)
    def AddColumn(self):
        column = types.SimpleNamespace(name="")
        column.SetName = lambda name: setattr(column, "name", name)
        self.columns.append(column)
        return column

    def AddEmptyRow(self):
        self.rows.append([""] * len(self.columns))
        return len(self.rows) - 1

    def SetCellText(self, row, column, text):
        self.rows[row][column] = str(text)
        return True

    def GetCellText(self, row, column):
        return self.rows[row][column]

    def GetNumberOfRows(self):
        return len(self.rows)


# Node classes the modules and tests create (AddNewNodeByClass gives None for any other name, as Slicer does)
NODE_CLASSES = {"vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode",
                "vtkMRMLMarkupsFiducialNode", "vtkMRMLTableNode", "vtkMRMLLinearTransformNode"}


class Scene:
    StartCloseEvent, EndCloseEvent = 66000, 66001

    def __init__(self):
        self.nodes = []

    def AddNewNodeByClass(self, class_name, name=""):
        if class_name not in NODE_CLASSES:
            return None
        node = Node(class_name, name)
        node.scene = self
        if class_name == "vtkMRMLMarkupsFiducialNode":
            node.CreateDefaultDisplayNodes()
        self.nodes.append(node)
        return node

    def GetFirstNodeByName(self, name):
        return next((n for n in self.nodes if n.name == name), None)

    def GetNumberOfNodes(self):
        return len(self.nodes)

    def RemoveNode(self, node):
        if node in self.nodes:
            self.nodes.remove(node)
            node.scene = None

    def Clear(self, remove_singletons=0):
        for node in list(self.nodes):
            self.RemoveNode(node)


def make_fake_slicer():
    """(slicer, vtk) fake modules."""
    scene = Scene()
    util = types.SimpleNamespace()

    def scene_of(given):
        return scene if given is None else given
    util.arrayFromVolume = lambda node: node.array
    util.arrayFromVolumeModified = lambda node: None
    util.getNodesByClass = lambda class_name, scene=None: [n for n in scene_of(scene).nodes if n.IsA(class_name)]
    util.getNode = lambda name, scene=None: scene_of(scene).GetFirstNodeByName(name)
    util.arrayFromVTKMatrix = lambda m: m.m.copy()

    def update_segment(array, seg_node, segment_id, volume_node):
        """As Slicer: the segment's layer keeps the whole volume's extent (not cropped)."""
        segment = seg_node.GetSegmentation().GetSegment(segment_id)
        full = (np.asarray(array) > 0).astype(np.uint8)
        segment.shape, segment.image = full.shape, (Image(full, (0, 0, 0), full.shape) if full.any() else Image())
        segment.mtime = next(_clock)

    def array_from_segment(seg_node, segment_id, volume_node):
        a = seg_node.GetSegmentation().GetSegment(segment_id).array
        return np.zeros(volume_node.array.shape, np.uint8) if a is None else a.astype(np.uint8)

    def internal_array(seg_node, segment_id):
        image = seg_node.GetBinaryLabelmapInternalRepresentation(segment_id)
        return image.array

    def add_volume(array, ijk_to_ras=None, name=None, nodeClassName=None):
        node = scene.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
        node.array = np.array(array, copy=True)
        node.ijk_to_ras = np.eye(4) if ijk_to_ras is None else np.asarray(ijk_to_ras, dtype=float)
        return node

    util.updateSegmentBinaryLabelmapFromArray = update_segment
    util.arrayFromSegmentBinaryLabelmap = array_from_segment
    util.arrayFromSegmentInternalBinaryLabelmap = internal_array
    util.addVolumeFromArray = add_volume

    def load_label_volume(path, properties=None):
        from CMBLib.io import read_volume

        volume = read_volume(path)
        return add_volume(volume.array, volume.ijk_to_ras, name="label", nodeClassName="vtkMRMLLabelMapVolumeNode")

    util.loadLabelVolume = load_label_volume

    def export_node(node, path, properties=None, world=False):
        from CMBLib.geometry import Volume
        from CMBLib.io import write_volume

        m = node.ijk_to_ras
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        write_volume(Volume(node.array, spacing, m[:3, 3], m[:3, :3] / spacing), path)
        return True

    def temp_directory(key="__SlicerTemp__", tempDir=None, includeDateTime=True):
        import tempfile

        return tempfile.mkdtemp(prefix=f"{key}-", dir=tempDir)

    util.exportNode, util.tempDirectory = export_node, temp_directory

    def update_transform(node, narray, toWorld=False):
        node.matrix = np.array(narray, float)

    def set_layers(background="keep-current", foreground="keep-current", label="keep-current",
                   foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False):
        util.layers = {"background": background, "foreground": foreground, "foregroundOpacity": foregroundOpacity}

    util.updateTransformMatrixFromArray, util.setSliceViewerLayers = update_transform, set_layers
    util.arrayFromTransformMatrix = lambda node, toWorld=False: node.matrix.copy()
    util.tryWithErrorDisplay = lambda *a, **k: __import__("contextlib").nullcontext()
    util.confirmOkCancelDisplay = util.confirmYesNoDisplay = lambda *a, **k: True

    class SegmentationsLogic:
        MODE_REPLACE = 0

        @staticmethod
        def ExportSegmentsToLabelmapNode(seg_node, ids, labelmap_node, reference):
            out = np.zeros(reference.array.shape, np.int16)
            for value, segment_id in enumerate(ids.values, start=1):   # 1..N in the order of ids
                a = seg_node.GetSegmentation().GetSegment(segment_id).array
                if a is not None:
                    out[a] = value
            labelmap_node.array = out
            return True

        @staticmethod
        def ImportLabelmapToSegmentationNode(labelmap_node, seg_node, ids):
            """Label value v fills the v-th of `ids` (as Slicer does for given IDs); other values are lost."""
            for value, segment_id in enumerate(ids.values, start=1):
                seg_node.GetSegmentation().GetSegment(segment_id).array = labelmap_node.array == value
            return True

        @staticmethod
        def SetBinaryLabelmapToSegment(image, seg_node, segment_id, mode=0):
            segment = seg_node.GetSegmentation().GetSegment(segment_id)
            segment.shape = seg_node.reference.array.shape
            segment.image = Image(image.array.copy(), image.origin_kji, segment.shape)

    jumps = []

    class MarkupsLogic:
        @staticmethod
        def JumpSlicesToLocation(x, y, z, centered):
            jumps.append((x, y, z, centered))

    modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=SegmentationsLogic),
                                    volumes=types.SimpleNamespace(logic=lambda: None),
                                    markups=types.SimpleNamespace(logic=MarkupsLogic))
    slicer = types.ModuleType("slicer")
    slicer.mrmlScene, slicer.util, slicer.modules, slicer.jumps = scene, util, modules, jumps
    slicer.vtkSlicerSegmentationsModuleLogic = SegmentationsLogic
    slicer.vtkOrientedImageData = Image
    slicer.vtkSegmentation = types.SimpleNamespace(EXTENT_REFERENCE_GEOMETRY=0)

    vtk = types.ModuleType("vtk")

    class Matrix:
        m = np.eye(4)

    class StringArray:
        def __init__(self):
            self.values = []

        def InsertNextValue(self, value):
            self.values.append(value)

        def GetNumberOfValues(self):
            return len(self.values)

    vtk.vtkMatrix4x4, vtk.vtkStringArray, vtk.vtkIntArray, vtk.mutable = Matrix, StringArray, StringArray, Mutable
    vtk.vtkVector3d = lambda x, y, z: (x, y, z)
    vtk.VTK_UNSIGNED_CHAR = 3
    numpy_support = types.ModuleType("vtk.util.numpy_support")
    numpy_support.vtk_to_numpy = lambda image: image.array.reshape(-1)
    vtk.util = types.ModuleType("vtk.util")
    vtk.util.numpy_support = numpy_support
    return slicer, vtk


def install(monkeypatch_setitem, slicer, vtk):
    """Register the fakes as the modules `slicer`, `vtk`, `vtk.util`, `vtk.util.numpy_support`."""
    monkeypatch_setitem("slicer", slicer)
    monkeypatch_setitem("vtk", vtk)
    monkeypatch_setitem("vtk.util", vtk.util)
    monkeypatch_setitem("vtk.util.numpy_support", vtk.util.numpy_support)


def run_detector_selftest(monkeypatch, step: str, folder) -> None:
    """Run one step of CMBDetector's Slicer self-test (`CMBDetectorLib.selftest`) on the fakes
    (install them first): `slicer.ScriptedLoadableModule` becomes a stub whose test class is a
    plain unittest.TestCase with a silent delayDisplay."""
    import sys
    import unittest

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,),
                                          {"delayDisplay": lambda self, message: None})
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    from CMBDetectorLib.selftest import CMBDetectorTest

    test = CMBDetectorTest(step)
    test.folder = str(folder)
    getattr(test, step)()
