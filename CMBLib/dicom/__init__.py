"""DICOM in and out: classic MR series -> `Volume` (series.py), a Volume -> DICOM series
(write.py, for tests and conversions), CMB masks -> DICOM SEG referencing the source
(seg.py).  Needs the optional extra `dicom` (pydicom, highdicom); imported lazily."""
from .series import (
    SeriesInfo,
    choose_series,
    describe_series,
    is_dicom_folder,
    pseudonym,
    read_dicom_volume,
    read_series,
    scan_folder,
    series_name,
)

__all__ = ["SeriesInfo", "choose_series", "describe_series", "is_dicom_folder", "pseudonym",
           "read_dicom_volume", "read_series", "scan_folder", "series_name"]
