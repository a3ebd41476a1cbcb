"""Write a `Volume` as a plain (classic single-frame) DICOM MR series.

Used by the tests and by anyone who needs a DICOM copy of a NIfTI study.  Values are
stored as int16 with RescaleSlope/RescaleIntercept chosen so the float range survives
(integers that fit int16 are stored exactly).  Slice k gets InstanceNumber k + 1, so
`read_series` gives back the same array and RAS geometry.
"""
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import LPS_TO_RAS, Volume

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom_series(volume: Volume, folder, patient_id: str = "ANON", patient_name: str = "Anonymous^Patient",
                       series_description: str = "T2STAR", series_number: int = 1,
                       study_uid: Optional[str] = None, series_uid: Optional[str] = None,
                       image_type=("ORIGINAL", "PRIMARY", "M", "ND")) -> list:
    """Write one file per slice (IMG0001.dcm ...) into `folder`; returns the paths."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = np.asarray(volume.array, dtype=np.float64)
    if array.ndim != 3:
        raise CMBError("write_dicom_series needs a 3D volume")
    lo, hi = float(array.min()), float(array.max())
    integral = np.all(array == np.rint(array)) and lo >= -32768 and hi <= 32767
    slope, intercept = (1.0, 0.0) if integral else ((hi - lo) / 65000.0 or 1.0, (hi + lo) / 2.0)
    stored = np.rint((array - intercept) / slope).astype(np.int16)
    direction_lps = LPS_TO_RAS @ volume.direction
    origin_lps = LPS_TO_RAS @ np.asarray(volume.origin)
    si, sj, sk = volume.spacing
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName = patient_id, patient_name
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Modality, ds.Manufacturer = "MR", "CMBLib"
        ds.SeriesNumber, ds.InstanceNumber = int(series_number), k + 1
        ds.SeriesDescription = series_description
        ds.ImageType = list(image_type)
        ds.PositionReferenceIndicator = ""
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "NONE", "", "3D"
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin_lps + direction_lps[:, 2] * sk * k]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([direction_lps[:, 0], direction_lps[:, 1]])]
        ds.PixelSpacing = [f"{sj:.6f}", f"{si:.6f}"]
        ds.SliceThickness = f"{sk:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / f"IMG{k + 1:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def _save(ds, path) -> None:
    """Save as a DICOM Part-10 file with pydicom 3 (enforce_file_format) or 2.x."""
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.x (Slicer 5.8, Python 3.9)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)


def write_dataset(path, dataset, overwrite: bool = False) -> Path:
    """Save a finished DICOM object (a highdicom SEG or SR) to `path` atomically; CMBError if
    `path` exists and not `overwrite`."""
    from ..io import atomic_path

    path = Path(path)
    if path.exists() and not overwrite:
        raise CMBError(f"{path}: exists; not overwritten (use --overwrite)")
    with atomic_path(path) as tmp:
        dataset.save_as(str(tmp))
    return path
