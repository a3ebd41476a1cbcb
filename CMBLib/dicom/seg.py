"""DICOM Segmentation (SEG) of CMBs, referencing the source series (highdicom).

One segment per CMB: label "CMB <n>" (n = the label in the mask / record), category
SCT 49755003 "Morphologically abnormal structure", type SCT 50960005 "Hemorrhage",
anatomic region SCT 12738006 "Brain", a tracking id "CMB <n>" and a tracking UID.  Detections
are AUTOMATIC with an algorithm identification (family DCM 123110 "Artificial Intelligence",
model name and version); exported annotations are SEMIAUTOMATIC (scribbles grown by the
region-growing engine, reviewed by a rater) with the engine named.  Binary segmentation,
empty frames omitted; every frame references its source instance.  Patient and study
attributes are copied from the source series (a SEG is for the PACS, where they belong).
"""
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import LPS_TO_RAS, Volume

SEG_SUFFIX = "_cmb_seg.dcm"


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise CMBError("writing DICOM SEG needs highdicom: pip install 'cmb-slicer[dicom]'") from None
    return highdicom


def seg_dataset(mask: Volume, source_headers: list, labels: Optional[list] = None, algorithm_name: str = "CMBLib",
                algorithm_version: str = "", manual: bool = False, series_number: int = 9901,
                series_description: str = "CMB segmentation"):
    """A highdicom Segmentation of the instance mask `mask` (labels 1..N on the grid of the
    source series; `source_headers` = the series' datasets in the mask's slice order, as
    `read_series` returns them).

    labels: the mask labels to include (default: every non-zero label), one segment each,
    in that order.  manual: the findings come from a rater (annotation) rather than a
    detector.  CMBError when there is nothing to segment or the grids differ."""
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    array = np.asarray(mask.array)
    if array.shape != (len(source_headers), int(source_headers[0].Rows), int(source_headers[0].Columns)):
        raise CMBError(f"mask shape {array.shape} differs from the DICOM series "
                       f"({len(source_headers)} x {source_headers[0].Rows} x {source_headers[0].Columns})")
    if labels is None:
        labels = [int(v) for v in np.unique(array) if v != 0]
    labels = [int(v) for v in labels]
    if not labels:
        raise CMBError("no CMB to write into a DICOM SEG (a SEG needs at least one segment)")
    seg_pixels = np.zeros(array.shape, dtype=np.uint16)
    for number, lab in enumerate(labels, start=1):
        seg_pixels[array == lab] = number
    empty = [lab for number, lab in enumerate(labels, start=1) if not np.any(seg_pixels == number)]
    if empty:
        raise CMBError(f"CMB {empty[0]} has no voxels in the mask; cannot write its segment")
    version = str(algorithm_version or "unknown")
    if manual:
        algo_type, algo = hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, hd.AlgorithmIdentificationSequence(
            name="CMBLib region growing (rater-reviewed annotation)", version=version,
            family=codes.cid7162.ArtificialIntelligence)
    else:
        algo_type, algo = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, hd.AlgorithmIdentificationSequence(
            name=str(algorithm_name), version=version, family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, lab in enumerate(labels, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"CMB {lab}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Hemorrhage, algorithm_type=algo_type,
            algorithm_identification=algo, tracking_uid=hd.UID(), tracking_id=f"CMB {lab}",
            anatomic_regions=[codes.SCT.Brain]))
    from .. import __version__

    return hd.seg.Segmentation(
        source_images=harmonised_headers(source_headers), pixel_array=seg_pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=int(series_number), sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="CMBLib", manufacturer_model_name=str(algorithm_name),
        software_versions=f"CMBLib {__version__}", device_serial_number="0",
        series_description=series_description)


def harmonised_headers(headers: list) -> list:
    """Copies of the source headers that highdicom accepts as one series: writers such as
    SimpleITK's series example give every slice its own StudyInstanceUID and no
    FrameOfReferenceUID or SliceThickness.  The first slice's study UID is used for all; a
    missing frame of reference gets a UID derived from the SeriesInstanceUID (the same on
    every run); a missing SliceThickness, or a SpacingBetweenSlices that the positions
    contradict, the distance between the first two slices."""
    import copy

    from pydicom.uid import generate_uid

    first = headers[0]
    study = str(getattr(first, "StudyInstanceUID", "") or "") or generate_uid(
        entropy_srcs=["study", str(first.SeriesInstanceUID)])
    frame = str(getattr(first, "FrameOfReferenceUID", "") or "") or generate_uid(
        entropy_srcs=["frame", str(first.SeriesInstanceUID)])
    thickness = None
    if len(headers) > 1:
        pos = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers[:2]])
        thickness = f"{float(np.linalg.norm(pos[1] - pos[0])):.6g}"
    out = []
    for h in headers:
        same = str(getattr(h, "StudyInstanceUID", "")) == study and str(getattr(h, "FrameOfReferenceUID", "")) == frame
        spacing = getattr(h, "SpacingBetweenSlices", None)
        spacing_ok = spacing in (None, "") or thickness is None or abs(float(spacing) - float(thickness)) < 1e-3
        if same and spacing_ok and getattr(h, "SliceThickness", None) not in (None, ""):
            out.append(h)
            continue
        c = copy.deepcopy(h)
        c.StudyInstanceUID = study
        c.FrameOfReferenceUID = frame
        if getattr(c, "SliceThickness", None) in (None, "") and thickness:
            c.SliceThickness = thickness   # missing (type 2): the slice step, as highdicom needs a value
        if not spacing_ok:
            c.SpacingBetweenSlices = thickness   # GDCM writes 1 for 2D slices: the positions decide
        out.append(c)
    return out


def write_seg(path, mask: Volume, source_headers: list, labels: Optional[list] = None, overwrite: bool = False,
              **kwargs) -> Path:
    """Write `seg_dataset(...)` to `path` atomically; CMBError if it exists and not `overwrite`."""
    from .write import write_dataset

    if Path(path).exists() and not overwrite:  # before the work of building the SEG
        raise CMBError(f"{path}: exists; not overwritten (use --overwrite)")
    return write_dataset(path, seg_dataset(mask, source_headers, labels, **kwargs), overwrite=overwrite)


def read_seg_segments(path) -> dict:
    """{segment number: {'label', 'voxel_count', 'centre_ras', 'referenced_series'}} of a
    DICOM SEG (centres in RAS mm from each frame's position), for checks and tests."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if str(ds.SOPClassUID) != "1.2.840.10008.5.1.4.1.1.66.4":
        raise CMBError(f"{path}: not a DICOM Segmentation")
    shared = ds.SharedFunctionalGroupsSequence[0]

    def group(item, name):  # a functional group is per frame or shared (highdicom moves them)
        return getattr(item, name, None) or getattr(shared, name)

    pixels = ds.pixel_array.reshape(int(getattr(ds, "NumberOfFrames", 1)), int(ds.Rows), int(ds.Columns))
    series = [str(s.SeriesInstanceUID) for s in ds.ReferencedSeriesSequence]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    sums = {n: [np.zeros(3), 0] for n in labels}
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(group(item, "SegmentIdentificationSequence")[0].ReferencedSegmentNumber)
        iop = np.array([float(v) for v in group(item, "PlaneOrientationSequence")[0].ImageOrientationPatient])
        sp_row, sp_col = (float(v) for v in group(item, "PixelMeasuresSequence")[0].PixelSpacing)
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        rows, cols = np.nonzero(pixels[f])
        if not len(rows):
            continue
        lps = ipp + np.outer(cols * sp_col, iop[:3]) + np.outer(rows * sp_row, iop[3:])
        sums[number][0] += lps.sum(axis=0)
        sums[number][1] += len(rows)
    out = {}
    for n, (total, count) in sums.items():
        centre = (LPS_TO_RAS @ (total / count)).tolist() if count else None
        out[n] = {"label": labels[n], "voxel_count": int(count), "centre_ras": centre, "referenced_series": series}
    return out
