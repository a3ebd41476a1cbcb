"""DICOM Comprehensive 3D SR (TID 1500 measurement report) of the CMBs of a SEG (highdicom).

One TID 1411 volumetric ROI group per segment: tracking id / UID of the segment, finding
type SCT 50960005 "Hemorrhage", the referenced segment of the SEG, measurements Volume
(SCT 118565006, mm3) and Diameter (SCT 81827009, mm; the equivalent-sphere diameter),
and, when the location is known, a finding site (SNOMED codes from pydicom's dictionary;
basal ganglia and regions without a code there are reported as Brain) with laterality.
The document is neither complete nor verified: it records a detector's or a rater's
proposal for a reader to check.
"""
from pathlib import Path

from ..errors import CMBError

SR_SUFFIX = "_cmb_sr.dcm"
REGION_CODES = {"frontal": "FrontalLobe", "parietal": "ParietalLobe", "temporal": "TemporalLobe",
                "occipital": "OccipitalLobe", "insula": "Insula", "thalamus": "Thalamus",
                "internal_capsule": "InternalCapsule", "external_capsule": "ExternalCapsule",
                "corpus_callosum": "CorpusCallosum", "deep_periventricular_wm": "CerebralWhiteMatter",
                "brainstem": "BrainStem", "cerebellum": "Cerebellum"}


def sr_dataset(seg, source_headers: list, records: list, algorithm_name: str = "CMBLib",
               algorithm_version: str = ""):
    """A highdicom Comprehensive3DSR for `seg` (the Segmentation dataset written for these
    records; segment n = records[n - 1]) and its source series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if len(seg.SegmentSequence) != len(records):
        raise CMBError(f"the SEG has {len(seg.SegmentSequence)} segments for {len(records)} CMB records")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=str(algorithm_name), model_name=str(algorithm_version or "unknown")))
    series = str(source_headers[0].SeriesInstanceUID)
    groups = []
    for number, (item, rec) in enumerate(zip(seg.SegmentSequence, records), start=1):
        measurements = []
        for key, name, unit in (("volume_mm3", codes.SCT.Volume, codes.UCUM.CubicMillimeter),
                                ("diameter_mm", codes.SCT.Diameter, codes.UCUM.Millimeter)):
            value = rec.get(key, (rec.get("mask") or {}).get(key))
            if value is not None:
                measurements.append(hd.sr.Measurement(name=name, value=float(value), unit=unit))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=str(item.TrackingUID),
                                                         identifier=str(item.TrackingID)),
            referenced_segment=hd.sr.ReferencedSegment(   # from_segmentation fails on one-frame SEGs
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=number, source_series=hd.sr.SourceSeriesForSegmentation(series)),
            finding_type=codes.SCT.Hemorrhage, finding_sites=_finding_sites(rec, codes, hd),
            measurements=measurements))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept(value="24590-2", scheme_designator="LN", meaning="MR Brain"),
        imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[seg] + list(source_headers), content=report[0], series_instance_uid=hd.UID(),
        series_number=9902, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="CMBLib",
        is_complete=False, is_final=False, is_verified=False, series_description="CMB measurements")


def _finding_sites(rec, codes, hd):
    region = rec.get("location") or rec.get("region") or ""
    if not region or region in ("outside", "unreviewed"):
        return None
    code = getattr(codes.SCT, REGION_CODES.get(region, "Brain"), None) or codes.SCT.Brain
    side = rec.get("side")
    laterality = {"left": codes.SCT.Left, "right": codes.SCT.Right}.get(side)
    return [hd.sr.FindingSite(anatomic_location=code, laterality=laterality)]


def write_sr(path, seg, source_headers: list, records: list, overwrite: bool = False, **kwargs) -> Path:
    """Write `sr_dataset(...)` to `path` atomically; CMBError if it exists and not `overwrite`."""
    from .write import write_dataset

    if Path(path).exists() and not overwrite:  # before the work of building the SR
        raise CMBError(f"{path}: exists; not overwritten (use --overwrite)")
    return write_dataset(path, sr_dataset(seg, source_headers, records, **kwargs), overwrite=overwrite)
