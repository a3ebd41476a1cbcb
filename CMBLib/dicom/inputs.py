"""DICOM folders as inputs of `cmb detect`: one `DicomInput` per chosen series.

`split_dicom_inputs(items, ...)` separates DICOM folders from image files / folders of
images, scans the DICOM ones and picks one series per study (`choose_series`); a folder
that cannot be resolved becomes a (path, message) failure so a batch goes on.
"""
from pathlib import Path
from typing import Optional

from ..errors import CMBError
from .series import SeriesInfo, choose_series, is_dicom_folder, read_series, scan_folder, series_name


class DicomInput:
    """One DICOM series to process: `name` (output name), `read()` -> Volume, and after
    reading, `headers` (pydicom datasets in the Volume's slice order) for the SEG."""

    def __init__(self, folder, info: SeriesInfo, name: str):
        self.folder = Path(folder)
        self.info = info
        self.name = name
        self.headers: Optional[list] = None

    def read(self):
        volume, self.headers = read_series(self.info)
        return volume

    def study_fields(self, pseudonymise: bool = False) -> dict:
        """Identifiers for the report (only the name when pseudonymised)."""
        out = {"name": self.name, "pseudonym": bool(pseudonymise)}
        if not pseudonymise:
            ds = self.info.first
            for key, attr in (("patient_name", "PatientName"), ("patient_id", "PatientID"),
                              ("study_date", "StudyDate"), ("study_description", "StudyDescription"),
                              ("series_number", "SeriesNumber"), ("series_description", "SeriesDescription")):
                value = getattr(ds, attr, None)
                if value not in (None, ""):
                    out[key] = str(value)
        return out

    def __str__(self):  # errors of read() name the series themselves
        return str(self.folder)

    def __fspath__(self):  # messages and JSON "image" fields show the folder
        return str(self.folder)


def is_dicom_input(item) -> bool:
    return isinstance(item, DicomInput)


def split_dicom_inputs(items, series: Optional[str] = None, template: Optional[str] = None,
                       pseudonymise: bool = False):
    """(other items, DicomInput list, failures [(path, message)]) for the command-line items."""
    others, found, failures = [], [], []
    names: dict = {}
    for item in items:
        p = Path(item)
        if not is_dicom_folder(p):
            others.append(item)
            continue
        try:
            chosen = choose_series(scan_folder(p), series, str(p))
        except CMBError as exc:
            failures.append((str(p), str(exc)))
            continue
        for info in chosen:
            name = series_name(info, template, pseudonymise)
            names[name] = names.get(name, 0) + 1
            if names[name] > 1:
                name = f"{name}_{names[name]}"
            found.append(DicomInput(p, info, name))
    return others, found, failures


def input_name(item) -> str:
    """Output name of an input: a DicomInput's name, else the file name without suffix."""
    from ..io import strip_image_suffix

    return item.name if is_dicom_input(item) else strip_image_suffix(item)


def read_input(item):
    """Volume of an input: a DicomInput's series, else `read_volume(path)`."""
    from ..io import read_volume

    return item.read() if is_dicom_input(item) else read_volume(item)
