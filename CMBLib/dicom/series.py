"""Read classic (single-frame) DICOM MR series into a `Volume`.

A folder (searched recursively) is split into series by SeriesInstanceUID.  A series
is read by sorting its slices by their position along the slice normal
(ImageOrientationPatient row x column).  Geometry:

* column direction of the array (i) = IOP row cosines, spacing PixelSpacing[1];
* row direction (j) = IOP column cosines, spacing PixelSpacing[0];
* slice direction (k) = the normal, spacing from the ImagePositionPatient steps (never
  SliceThickness); the origin is the position of the first slice.

DICOM is LPS; the `Volume` is RAS (x and y negated).  When the InstanceNumbers run
against the normal (or, without usable numbers, the file names do) the slice order is
reversed (k = -normal), so a series written from a NIfTI/NRRD volume reads back with that
volume's own axes.  Rescale slope/intercept
are applied per slice (result float32).

Refused with one CMBError line naming the series: multi-frame (enhanced) images,
pixel data that cannot be decoded, mixed orientations / sizes / pixel spacings
(localisers mixed in), slices at the same position (echoes, time points), missing
slices and uneven slice spacing, slices not stacked along the normal (gantry tilt).
"""
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import LPS_TO_RAS, Volume

ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
}
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# series whose description / sequence names mark them as CMB-sensitive (T2*-GRE, SWI, QSM)
CMB_SEQUENCE_PATTERN = re.compile(
    r"t2\s*\*|t2s(?:tar)?\b|t2_?star|swi|swan|susc|venobold|\bqsm\b|chi_?map|\bgre\b|ffe|hemo|haemo|\bmerge\b",
    re.IGNORECASE)
LOCALISER_PATTERN = re.compile(r"locali[sz]er|scout|survey|\bloc\b|3-?plane", re.IGNORECASE)
SLICE_TOLERANCE = 0.02   # relative tolerance on slice steps
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (headers only; pixels not read)."""

    uid: str
    number: str
    description: str
    modality: str
    study_uid: str
    files: list = field(default_factory=list)
    headers: list = field(default_factory=list)   # pydicom datasets without pixel data

    @property
    def first(self):
        return self.headers[0]

    def label(self) -> str:
        """'series 5 "SWI_Images" (40 images, MR)' for messages."""
        desc = f' "{self.description}"' if self.description else ""
        return f"series {self.number or '?'}{desc} ({len(self.files)} images, {self.modality or '?'})"

    def is_localiser(self) -> bool:
        image_type = " ".join(str(v) for v in (getattr(self.first, "ImageType", None) or []))
        return "LOCALIZER" in image_type.upper() or bool(LOCALISER_PATTERN.search(self.description))

    def looks_cmb_sensitive(self) -> bool:
        text = " ".join(str(getattr(self.first, k, "") or "") for k in
                        ("SeriesDescription", "SequenceName", "ProtocolName", "ScanningSequence"))
        image_type = " ".join(str(v) for v in (getattr(self.first, "ImageType", None) or []))
        return bool(CMB_SEQUENCE_PATTERN.search(text)) or "SWI" in image_type.upper()

    def sequence(self) -> str:
        """'QSM', 'SWI' or 'T2S' guessed from the description (for --sequence defaults)."""
        text = " ".join(str(getattr(self.first, k, "") or "") for k in ("SeriesDescription", "ProtocolName"))
        if re.search(r"\bqsm\b|chi_?map|susceptibility ?map", text, re.IGNORECASE):
            return "QSM"
        if re.search(r"swi|swan|venobold", text, re.IGNORECASE):
            return "SWI"
        return "T2S"


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise CMBError("DICOM support needs pydicom and highdicom: pip install 'cmb-slicer[dicom]'") from None
    return pydicom


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # files without the Part-10 preamble (older writers): only with a DICOM suffix
    return path.suffix.lower() in (".dcm", ".ima") and len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00")


def is_dicom_folder(path) -> bool:
    """True when `path` is a folder holding (at any depth) at least one DICOM Part-10 file."""
    path = Path(path)
    if not path.is_dir():
        return False
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in sorted(files):
            if not f.startswith(".") and _is_dicom_file(Path(root) / f):
                return True
    return False


def scan_folder(folder) -> list:
    """Every image series in `folder` (recursively), sorted by study, series number, UID.

    DICOM SEG / SR and other objects without pixel geometry are left out."""
    pydicom = _pydicom()
    folder = Path(folder)
    series: dict = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            if f.startswith(".") or not _is_dicom_file(p):
                continue
            try:
                ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=True)
            except Exception as exc:  # pydicom raises many types for damaged files
                raise CMBError(f"{p}: damaged DICOM file ({type(exc).__name__}: {str(exc)[:100]})") from None
            sop = str(getattr(ds, "SOPClassUID", ""))
            if sop == SEG_SOP_CLASS or getattr(ds, "Rows", None) is None:   # SEG, SR, presentation states
                continue
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
            if uid not in series:
                series[uid] = SeriesInfo(uid, str(getattr(ds, "SeriesNumber", "") or ""),
                                         str(getattr(ds, "SeriesDescription", "") or ""),
                                         str(getattr(ds, "Modality", "") or ""),
                                         str(getattr(ds, "StudyInstanceUID", "") or ""))
            series[uid].files.append(p)
            series[uid].headers.append(ds)

    def key(s):
        num = int(s.number) if s.number.lstrip("-").isdigit() else 10 ** 9
        return (s.study_uid, num, s.uid)

    return sorted(series.values(), key=key)


def describe_series(series: list) -> str:
    """One line per series: number, UID, description, images (for listings and errors)."""
    return "; ".join(f"{s.number or '?'} = {s.description or '(no description)'} [{len(s.files)} images, "
                     f"UID {s.uid}]" for s in series)


def choose_series(series: list, select: Optional[str] = None, folder: str = "") -> list:
    """The series to process: one per study.

    select: a SeriesInstanceUID or SeriesNumber (--series).  Otherwise a study's only
    image series, or its only non-localiser series that looks like T2*/SWI/QSM by its
    metadata.  Several candidates -> CMBError listing them so the user can pick."""
    where = f"{folder}: " if folder else ""
    if not series:
        raise CMBError(f"{where}no DICOM image series found")
    if select:
        chosen = [s for s in series if select in (s.uid, s.number)]
        if not chosen:
            raise CMBError(f"{where}no series with UID or number '{select}'; series: {describe_series(series)}")
        return chosen
    studies: dict = {}
    for s in series:
        studies.setdefault(s.study_uid, []).append(s)
    out = []
    for members in studies.values():
        images = [s for s in members if not s.is_localiser()] or members
        if len(images) > 1:
            cmb = [s for s in images if s.looks_cmb_sensitive()]
            if len(cmb) == 1:
                images = cmb
        if len(images) != 1:
            raise CMBError(f"{where}{len(images)} candidate series; pick one with --series NUMBER or UID (or give "
                           f"a folder holding only that series): "
                           f"{describe_series(images)}")
        out.append(images[0])
    return out


def read_series(info: SeriesInfo):
    """(Volume RAS float32, list of pydicom datasets in array slice order) for one series."""
    pydicom = _pydicom()
    name = info.label()
    headers = list(info.headers)
    files = list(info.files)
    first = headers[0]
    sop = str(getattr(first, "SOPClassUID", ""))
    frames = int(getattr(first, "NumberOfFrames", 1) or 1)
    if sop in ENHANCED_SOP_CLASSES or frames > 1:
        kind = ENHANCED_SOP_CLASSES.get(sop, f"multi-frame ({frames} frames)")
        raise CMBError(f"{name}: {kind} objects are not supported; export the series as classic "
                       "single-frame MR images")
    localisers = [str(f) for f, h in zip(files, headers)
                  if "LOCALIZER" in " ".join(str(v) for v in (getattr(h, "ImageType", None) or [])).upper()]
    if localisers and len(localisers) < len(files):
        raise CMBError(f"{name}: {len(localisers)} localiser image(s) mixed into the series "
                       f"(e.g. {Path(localisers[0]).name}); remove them")
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = [f for f, h in zip(files, headers) if getattr(h, key, None) is None]
        if missing:
            raise CMBError(f"{name}: {Path(missing[0]).name} has no {key}; the image geometry is unknown")
    iop = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(iop - iop[0]).max() > ORIENTATION_TOLERANCE:
        raise CMBError(f"{name}: images have different orientations (localisers or several stacks mixed in); "
                       "one series must be one stack of parallel slices")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    spacings = {tuple(round(float(v), 5) for v in h.PixelSpacing) for h in headers}
    if len(sizes) > 1 or len(spacings) > 1:
        raise CMBError(f"{name}: images differ in size or pixel spacing ({len(sizes)} sizes, "
                       f"{len(spacings)} spacings); localisers or reformats mixed in")
    row = iop[0, :3] / np.linalg.norm(iop[0, :3])
    col = iop[0, 3:] / np.linalg.norm(iop[0, 3:])
    if abs(float(row @ col)) > 1e-3:
        raise CMBError(f"{name}: ImageOrientationPatient row and column directions are not perpendicular")
    col = col - (row @ col) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along, pos = along[order], pos[order]
    headers = [headers[i] for i in order]
    files = [files[i] for i in order]
    n = len(headers)
    if n < 2:
        raise CMBError(f"{name}: a single image; a 3D volume needs several slices")
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        raise CMBError(f"{name}: {int(np.sum(steps < 1e-3)) + 1} images share a slice position "
                       "(several echoes, phases or time points?); split the series first")
    step = float(np.median(steps))
    if np.any(np.abs(steps - step) > SLICE_TOLERANCE * step + 1e-3):
        ratio = steps / step
        gaps = int(np.sum(np.rint(ratio[ratio > 1.5]) - 1))
        if gaps and np.allclose(ratio, np.rint(ratio), atol=SLICE_TOLERANCE * 2):
            raise CMBError(f"{name}: {gaps} slice(s) missing (gaps in the slice positions)")
        raise CMBError(f"{name}: uneven slice spacing ({steps.min():.3f} to {steps.max():.3f} mm)")
    offsets = pos - pos[0] - np.outer(along - along[0], normal)
    if np.abs(offsets).max() > max(0.01, 0.05 * step):
        raise CMBError(f"{name}: slices are not stacked along their normal (gantry tilt or sheared stack); "
                       "resample the series first")
    if _runs_against_normal(headers, files):
        headers, files, pos, normal = headers[::-1], files[::-1], pos[::-1], -normal
    spacing_row, spacing_col = (float(v) for v in headers[0].PixelSpacing)
    slices = []
    for f, h in zip(files, headers):
        try:
            ds = pydicom.dcmread(str(f), force=True)
            _default_transfer_syntax(ds)
            pixels = ds.pixel_array
        except Exception as exc:
            ts = str(getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", "") or "")
            ts_name = getattr(getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", None), "name", ts)
            raise CMBError(f"{name}: pixel data of {Path(f).name} cannot be decoded (transfer syntax {ts_name}; "
                           f"{type(exc).__name__}); install a decoder (pylibjpeg, gdcm) or convert the "
                           "series to uncompressed DICOM") from None
        if pixels.ndim != 2:
            raise CMBError(f"{name}: {Path(f).name} is not a single grey-level image (shape {pixels.shape})")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        slices.append(pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept))
    array = np.stack(slices)
    direction_lps = np.stack([row, col, normal], axis=1)
    volume = Volume(array, (spacing_col, spacing_row, abs(step)), LPS_TO_RAS @ pos[0], LPS_TO_RAS @ direction_lps)
    return volume, headers


def _default_transfer_syntax(ds) -> None:
    """A file without the Part-10 header has no transfer syntax: little endian, implicit
    or explicit VR as the file was read."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit = getattr(ds, "original_encoding", (getattr(ds, "is_implicit_VR", True),))[0]
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian


def _runs_against_normal(headers, files) -> bool:
    """True when the writer numbered the slices against the normal: InstanceNumbers that
    decrease along the sorted slices, or (numbers absent, equal or unordered) file names
    whose natural order is exactly the reverse of the slice order.  The detector's result
    depends on the slice order (it resamples along the image's own axes), so the array
    keeps the order the volume was written in."""
    numbers = [getattr(h, "InstanceNumber", None) for h in headers]
    if all(v is not None for v in numbers):
        steps = np.diff([int(v) for v in numbers])
        if np.all(steps < 0):
            return True
        if np.all(steps > 0):
            return False
    names = [_natural_key(str(f)) for f in files]
    return all(a > b for a, b in zip(names, names[1:]))


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def read_dicom_volume(folder, select: Optional[str] = None) -> Volume:
    """The one image series of `folder` (chosen as `choose_series` does) as a Volume."""
    chosen = choose_series(scan_folder(folder), select, str(folder))
    if len(chosen) > 1:
        raise CMBError(f"{folder}: holds {len(chosen)} studies; give one study folder or --series")
    return read_series(chosen[0])[0]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DEFAULT_NAME_TEMPLATE = "{PatientID}_{SeriesNumber}_{SeriesDescription}"


def series_name(info: SeriesInfo, template: Optional[str] = None, pseudonymise: bool = False) -> str:
    """Output name of a series: `template` filled with DICOM keywords ('{PatientID}_{SeriesNumber}'
    by default with the description), unsafe characters replaced by '_'.  pseudonymise:
    'dicom-' + 10 hex digits of a hash of the SeriesInstanceUID (no identifier in the name)."""
    if pseudonymise:
        return pseudonym(info.uid)
    template = template or DEFAULT_NAME_TEMPLATE
    ds = info.first

    def value(match):
        v = getattr(ds, match.group(1), "")
        return str(v if v is not None else "")

    text = re.sub(r"\{([A-Za-z]+)\}", value, template)
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"_+", "_", text)
    return text[:120] or pseudonym(info.uid)


def pseudonym(uid: str) -> str:
    """A stable pseudonym for a UID: 'dicom-' + 10 hex digits of its SHA-256."""
    return "dicom-" + hashlib.sha256(str(uid).encode()).hexdigest()[:10]
