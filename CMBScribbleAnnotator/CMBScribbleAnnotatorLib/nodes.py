"""Conversions between Slicer nodes and CMBLib objects (numpy arrays + geometry).

Volumes: `arrayFromVolume` gives the voxels indexed [k, j, i] and the IJK-to-RAS matrix
gives spacing, origin and direction in RAS, exactly as `CMBLib.geometry.Volume` keeps
them.  Parent transforms are not applied (the annotator works on untransformed volumes).
Segmentations: one segment per finding; the segment tag ``cmb.label`` holds the label.
"""
import json

import numpy as np
import slicer
import vtk

from CMBLib.geometry import Volume

LABEL_TAG = "cmb.label"


def volumeFromNode(volumeNode) -> Volume:
    """CMBLib Volume (array [k, j, i], RAS geometry) of a scalar volume node."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
    spacing = np.linalg.norm(ijkToRas[:3, :3], axis=0)
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    return Volume(array, spacing, ijkToRas[:3, 3], ijkToRas[:3, :3] / spacing)


def newSegmentation(name, volumeNode):
    """A segmentation node on the grid of `volumeNode`, with display nodes."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    return node


def segmentLabel(segment):
    """Finding label stored in a segment's tag (None when absent)."""
    value = vtk.mutable("")
    if not segment.GetTag(LABEL_TAG, value):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def segmentIdForLabel(segmentationNode, label):
    """Segment ID of finding `label` in a segmentation (None when absent)."""
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentation.GetSegmentIDs():
        if segmentLabel(segmentation.GetSegment(segmentId)) == int(label):
            return segmentId
    return None


def addFindingSegment(segmentationNode, label, color=None):
    """Add an empty segment 'CMB <label>' tagged with the label; returns its ID."""
    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentIdForLabel(segmentationNode, label)
    if segmentId:
        return segmentId
    segmentId = segmentation.AddEmptySegment(f"CMB_{int(label)}", f"CMB {int(label)}", color or _color(label))
    segmentation.GetSegment(segmentId).SetTag(LABEL_TAG, str(int(label)))
    # Its own labelmap layer: the layer's extent then covers this finding only, so reading
    # one finding's voxels (autosave, live mask) touches a small array, not the brain.
    segmentation.SeparateSegmentLabelmap(segmentId)
    return segmentId


def segmentStates(segmentationNode):
    """[(label, segmentId, modified time)] of the tagged segments; the time is the larger of
    the segment's and its binary labelmap's VTK MTime (it changes with every edit)."""
    out = []
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segmentId)
        label = segmentLabel(segment)
        if label is None:
            continue
        image = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId)
        out.append((label, segmentId, max(segment.GetMTime(), image.GetMTime() if image is not None else 0)))
    return out


def segmentVoxels(segmentationNode, segmentId):
    """Voxels [k, j, i] (N x 3 int) of one segment on the segmentation's reference grid
    (the volume's), read from its internal labelmap: no full-volume array is made."""
    image = segmentationNode.GetBinaryLabelmapInternalRepresentation(segmentId)
    if image is None:
        return np.zeros((0, 3), np.int32)
    array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentationNode, segmentId)
    if array is None or array.size == 0:
        return np.zeros((0, 3), np.int32)
    value = segmentationNode.GetSegmentation().GetSegment(segmentId).GetLabelValue()
    extent = image.GetExtent()
    kji = np.argwhere(array == value).astype(np.int32)
    kji += np.array([extent[4], extent[2], extent[0]], np.int32)
    return kji


def setSegmentFromBox(segmentationNode, volumeNode, label, mask, box):
    """Replace finding `label`'s segment by `mask` (bool array of the box
    (slice_k, slice_j, slice_i) on the volume grid): only the box is copied."""
    from vtk.util import numpy_support

    segmentId = addFindingSegment(segmentationNode, label)
    k, j, i = box
    image = slicer.vtkOrientedImageData()
    image.SetExtent(i.start, i.stop - 1, j.start, j.stop - 1, k.start, k.stop - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    scalars[:] = np.asarray(mask, np.uint8).ravel()
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentationNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return segmentId


def removeFindingSegment(segmentationNode, label):
    segmentId = segmentIdForLabel(segmentationNode, label)
    if segmentId:
        segmentationNode.GetSegmentation().RemoveSegment(segmentId)


def referenceGeometry(volumeNode):
    """Empty vtkOrientedImageData with the extent and IJK-to-RAS matrix of `volumeNode` (no voxels)."""
    image = slicer.vtkOrientedImageData()
    image.SetExtent(volumeNode.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    return image


def labelmapFromSegmentation(segmentationNode, volumeNode):
    """Instance label map (uint16 array [k, j, i] on the volume grid) of the tagged segments.

    Merged in memory by `GenerateMergedLabelmapForAllSegments` with each segment's finding
    label as its value: no temporary node enters the scene."""
    from vtk.util import numpy_support

    segmentation = segmentationNode.GetSegmentation()
    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for segmentId in segmentation.GetSegmentIDs():
        label = segmentLabel(segmentation.GetSegment(segmentId))
        if label is not None:
            ids.InsertNextValue(segmentId)
            values.InsertNextValue(label)
    reference = referenceGeometry(volumeNode)
    shape = tuple(reversed(reference.GetDimensions()))
    if ids.GetNumberOfValues() == 0:
        return np.zeros(shape, np.uint16)
    merged = slicer.vtkOrientedImageData()
    if not segmentationNode.GenerateMergedLabelmapForAllSegments(
            merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, reference, ids, values):
        raise RuntimeError(f"could not read the segments of '{segmentationNode.GetName()}'")
    array = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(shape)
    return array.astype(np.uint16)


def setSegmentsFromLabelmap(segmentationNode, volumeNode, array, labels=None):
    """Write label `v` of `array` ([k, j, i] on the volume grid) into the segment of finding `v`.

    Each finding's layer holds only its bounding box (not the whole volume), so 30 findings
    on a 512 x 512 x 300 scan cost kilobytes, not gigabytes.  `labels`: the labels to write
    (default: every label present); a listed label absent from `array` gets an empty segment."""
    from CMBLib.validation import label_boxes

    array = np.asarray(array)
    boxes = label_boxes(array)
    labels = sorted(boxes) if labels is None else [int(v) for v in labels]
    for label in labels:
        box = boxes.get(label, (slice(0, 1),) * 3)
        setSegmentFromBox(segmentationNode, volumeNode, label, array[box] == label, box)
    return labels


def setSegmentTags(segmentationNode, label, tags):
    """Copy metadata tags (str -> str) onto the segment of finding `label`."""
    segmentId = segmentIdForLabel(segmentationNode, label)
    if segmentId:
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        for key, value in tags.items():
            segment.SetTag(str(key), str(value))


def mimicsToMarkups(markupsNode, mimics):
    """Fill a point list from document mimics: label = type, description = JSON metadata."""
    markupsNode.RemoveAllControlPoints()
    for mimic in mimics:
        index = markupsNode.AddControlPoint(vtk.vtkVector3d(*mimic["position_ras"]), mimic["type"])
        markupsNode.SetNthControlPointDescription(index, json.dumps(_mimicMeta(mimic)))


def mimicsFromMarkups(markupsNode, defaultType="other"):
    """Document mimics (RAS mm) from a point list; the label is the type when it is one."""
    from CMBLib.annotation import vocabulary as V
    from CMBLib.annotation.document import new_mimic

    mimics = []
    for n in range(markupsNode.GetNumberOfControlPoints()):
        position = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(n, position)
        try:
            meta = json.loads(markupsNode.GetNthControlPointDescription(n) or "{}")
        except ValueError:
            meta = {"comment": markupsNode.GetNthControlPointDescription(n)}
        label = markupsNode.GetNthControlPointLabel(n)
        mimicType = label if label in V.MIMIC_TYPES else meta.get("type", defaultType)
        if mimicType not in V.MIMIC_TYPES:
            mimicType = "other"
        mimics.append(new_mimic(n + 1, position, mimicType, **{k: v for k, v in meta.items()
                                                               if k in ("type_other", "side", "comment")}))
    return mimics


def _mimicMeta(mimic):
    return {"type": mimic["type"], "type_other": mimic.get("type_other", ""),
            "side": mimic.get("side", "unreviewed"), "comment": mimic.get("comment", "")}


def jumpTo(rasPoint):
    """Centre the slice views on a RAS point (mm)."""
    x, y, z = (float(v) for v in rasPoint)
    slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)


def _color(label):
    palette = [(0.9, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.4, 0.9), (0.9, 0.7, 0.1),
               (0.7, 0.2, 0.8), (0.1, 0.8, 0.8), (0.9, 0.5, 0.2), (0.5, 0.5, 0.5)]
    return palette[(int(label) - 1) % len(palette)]
