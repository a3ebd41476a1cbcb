"""Read and write volumes (NIfTI .nii/.nii.gz, NRRD .nrrd, Slicer .seg.nrrd labelmaps).

Geometry is kept exactly: spacing, origin and direction round-trip through
SimpleITK (which stores LPS; `Volume` stores RAS); ordinary NIfTI-1 files are read and
written by `CMBLib.nifti` without importing SimpleITK, with the same result.  Every
write is atomic: the file is written under a temporary name in the same folder and
renamed into place.
"""
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import CMBError
from .geometry import LPS_TO_RAS, Volume

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")


def image_suffix(path: PathLike) -> str:
    """The recognised image suffix of `path` ('.nii.gz', '.seg.nrrd', ...) or ''."""
    name = str(path).lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def strip_image_suffix(path: PathLike) -> str:
    """File name of `path` without folder and image suffix: 'a/sub-1_T2S.nii.gz' -> 'sub-1_T2S'."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def is_image_file(path: PathLike) -> bool:
    return Path(path).is_file() and bool(image_suffix(path))


def read_volume(path: PathLike) -> Volume:
    """Read a 3D image as a `Volume` (array [k, j, i], RAS geometry).

    A folder of DICOM files is read as its one series (`CMBLib.dicom`).
    A `.seg.nrrd` is read as its labelmap (see `read_segmentation` for segment names).
    Raises CMBError for a missing, unreadable, truncated or non-3D file.
    Ordinary NIfTI-1 files are read without SimpleITK (`CMBLib.nifti`, same array and
    geometry); anything unusual goes through SimpleITK.
    """
    path = Path(path)
    if not path.exists():
        raise CMBError(f"{path}: file not found")
    if path.is_dir():
        from .dicom.series import is_dicom_folder, read_dicom_volume

        if is_dicom_folder(path):  # a folder holding one DICOM series (or one T2*/SWI/QSM among others)
            return read_dicom_volume(path)
        raise CMBError(f"{path}: is a folder, expected an image file (.nii.gz, .nii, .nrrd)")
    suffix = image_suffix(path)
    if suffix == ".seg.nrrd":
        return read_segmentation(path)[0]
    if suffix in (".nii.gz", ".nii"):
        from .nifti import read_nifti

        volume = read_nifti(path)
        if volume is not None:
            return volume
    import SimpleITK as sitk

    check_nifti_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((ln for ln in reason if "rror" in ln or "nable" in ln), reason[-1] if reason else "")
        raise CMBError(f"{path}: cannot be read as an image (corrupt, truncated or unsupported): "
                       f"{detail.strip()[:160]}") from None
    return volume_from_sitk(image, str(path))


def check_nifti_complete(path) -> None:
    """CMBError when a .nii / .nii.gz file is truncated or holds NaN / infinite voxels.

    ITK's NIfTI reader (SimpleITK 2.5) silently accepts truncated files and turns NaN
    into 0, so this reads the NIfTI-1/2 header, streams the (decompressed) voxel data,
    compares its length with vox_offset + dims * bitpix and counts non-finite floats.
    """
    import gzip
    import zlib

    from .nifti import check_voxel_data, corrupt_error

    name = str(path).lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
            header = _nifti_header(head)
            if header is None:
                if len(head) < 348:
                    raise CMBError(f"{path}: cannot be read as an image (file too short for a NIfTI header)")
                return  # not a NIfTI header: leave it to the image reader
            offset, n_bytes, float_type = header
            total, bad = len(head), 0
            data = head[offset:] if offset < len(head) else b""
            if offset > len(head):
                skip = fh.read(offset - len(head))
                total += len(skip)
            carry = b""
            itemsize = np.dtype(float_type).itemsize if float_type else 1
            while True:
                if float_type and data:
                    buf = carry + data
                    usable = len(buf) - len(buf) % itemsize
                    values = np.frombuffer(buf[:usable], dtype=float_type)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = buf[usable:]
                chunk = fh.read(1 << 22)
                if not chunk:
                    break
                total += len(chunk)
                data = chunk
    except (OSError, EOFError, zlib.error):
        raise corrupt_error(path) from None
    check_voxel_data(path, total, offset + n_bytes, bad)


def _nifti_header(head: bytes):
    """(vox_offset, data bytes, numpy float dtype or None) of a NIfTI-1/2 header, or None."""
    import struct

    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        return None
    if size == 348:
        dims = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "hh", head[70:74])
        offset = struct.unpack(endian + "f", head[108:112])[0]
    else:
        if len(head) < 540:
            return None
        datatype, bitpix = struct.unpack(endian + "hh", head[12:16])
        dims = struct.unpack(endian + "8q", head[16:80])
        offset = struct.unpack(endian + "q", head[168:176])[0]
    n = 1
    for d in dims[1:1 + max(0, min(int(dims[0]), 7))]:
        n *= max(int(d), 1)
    floats = {16: endian + "f4", 64: endian + "f8"}
    return int(offset), n * max(int(bitpix), 8) // 8, floats.get(int(datatype))


def volume_from_sitk(image, name: str = "image") -> Volume:
    """Convert a SimpleITK image (LPS) to a `Volume` (RAS)."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CMBError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                       "expected a single-channel (grey-level) image")
    dim = image.GetDimension()
    if dim == 4:
        raise CMBError(f"{name}: volume has 4 dimensions (size {image.GetSize()}); pick one echo or time point")
    if dim != 3:
        raise CMBError(f"{name}: image has {dim} dimensions (size {image.GetSize()}); a 3D volume is needed")
    array = sitk.GetArrayFromImage(image)
    direction = LPS_TO_RAS @ np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)
    return Volume(array, image.GetSpacing(), origin, direction)


def volume_to_sitk(volume: Volume):
    """Convert a `Volume` (RAS) to a SimpleITK image (LPS)."""
    import SimpleITK as sitk

    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    return _with_geometry(sitk.GetImageFromArray(array), volume)


def sitk_reference(geometry: Volume, shape_kji):
    """An empty SimpleITK image (uint8) of size `shape_kji` with `geometry`'s spacing,
    origin and direction: the target grid for `sitk.Resample`."""
    import SimpleITK as sitk

    return _with_geometry(sitk.Image([int(n) for n in shape_kji[::-1]], sitk.sitkUInt8), geometry)


def _with_geometry(image, volume: Volume):
    """`image` with the spacing, origin and direction of `volume` (RAS -> SimpleITK's LPS)."""
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(v) for v in LPS_TO_RAS @ np.asarray(volume.origin)))
    image.SetDirection(tuple(float(v) for v in (LPS_TO_RAS @ volume.direction).ravel()))
    return image


def write_volume(volume: Volume, path: PathLike, compress: bool = True, overwrite: bool = True) -> Path:
    """Write `volume` to `path` (.nii.gz, .nii, .nrrd, .mha) atomically; returns the path.

    NIfTI files of ordinary volumes are written without SimpleITK (`CMBLib.nifti`: the
    header SimpleITK writes, gzip level 1); `compress` applies to the other formats
    (NIfTI compression follows the suffix, as in SimpleITK).
    """
    path = Path(path)
    suffix = image_suffix(path)
    if not suffix:
        raise CMBError(f"{path}: unknown image type; use .nii.gz, .nii or .nrrd")
    if suffix == ".seg.nrrd":
        raise CMBError(f"{path}: use write_segmentation() for .seg.nrrd files")
    if path.exists() and not overwrite:
        raise CMBError(f"{path}: exists; not overwritten")
    if suffix in (".nii.gz", ".nii"):
        from .nifti import writable_array, write_nifti

        array = writable_array(volume)
        if array is not None:
            with atomic_path(path) as tmp:
                write_nifti(volume, tmp, array)
            return path
    import SimpleITK as sitk

    image = volume_to_sitk(volume)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def read_segmentation(path: PathLike):
    """Read a Slicer `.seg.nrrd` as (labelmap Volume, list of segment dicts).

    Each segment dict has at least 'id', 'name', 'labelValue' and 'tags' (as slicerio
    returns them).  Overlapping segments in several layers are refused.
    """
    import slicerio

    path = Path(path)
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio raises plain exceptions for corrupt headers
        raise CMBError(f"{path}: cannot be read as a Slicer segmentation: {str(exc)[:160]}") from None
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim == 4:
        if voxels.shape[0] != 1 and voxels.shape[-1] != 1:
            raise CMBError(f"{path}: segments overlap (several layers); merge them in Slicer first")
        voxels = voxels.reshape([n for n in voxels.shape if n != 1] if voxels.size else voxels.shape[:3])
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    ijk_to_ras = lps_to_ras @ ijk_to_lps
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    direction = ijk_to_ras[:3, :3] / spacing
    # slicerio arrays are indexed [i, j, k]; Volume arrays are [k, j, i].
    volume = Volume(np.ascontiguousarray(voxels.transpose(2, 1, 0)), spacing, ijk_to_ras[:3, 3], direction)
    return volume, list(seg.get("segments", []))


def write_segmentation(labelmap: Volume, segments, path: PathLike, overwrite: bool = True) -> Path:
    """Write an instance labelmap as a Slicer `.seg.nrrd` (one layer).

    `segments`: list of dicts with 'labelValue', 'name' and optional 'id', 'color'
    (RGB 0-1) and 'tags' (dict of str -> str), e.g. the CMB metadata.
    """
    import slicerio

    path = Path(path)
    if path.exists() and not overwrite:
        raise CMBError(f"{path}: exists; not overwritten")
    m = labelmap.ijk_to_ras
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m
    segs = []
    for n, s in enumerate(segments):
        entry = {
            "id": s.get("id", f"Segment_{int(s['labelValue'])}"),
            "name": s.get("name", f"CMB {int(s['labelValue'])}"),
            "labelValue": int(s["labelValue"]),
            "layer": 0,
            "color": list(s.get("color", _label_color(n))),
            "tags": {str(k): str(v) for k, v in (s.get("tags") or {}).items()},
        }
        if "terminology" in s:
            entry["terminology"] = s["terminology"]
        segs.append(entry)
    data = {
        "voxels": np.ascontiguousarray(np.asarray(labelmap.array).transpose(2, 1, 0)).astype(np.int16),
        "ijkToLPS": ijk_to_lps,
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": segs,
    }
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), data)
    return path


def _label_color(n: int):
    palette = [(0.9, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.4, 0.9), (0.9, 0.7, 0.1),
               (0.7, 0.2, 0.8), (0.1, 0.8, 0.8), (0.9, 0.5, 0.2), (0.5, 0.5, 0.5)]
    return palette[n % len(palette)]


def current_umask() -> int:
    """The process's umask (read without changing it where /proc allows, e.g. on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(mask)
    return mask


def honour_umask(path: PathLike) -> None:
    """Give `path` the mode a plain open()/mkdir() would have: 0666 / 0777 less the umask.

    `tempfile.mkstemp` / `mkdtemp` create 0600 / 0700 entries; a result renamed into
    place from one must be readable by colleagues as the user's umask intends.
    """
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def make_temp_dir(parent: PathLike, prefix: str) -> Path:
    """A new uniquely named folder in `parent` (created if needed) with umask-derived mode."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))
    honour_umask(tmp)
    return tmp


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    The result gets the mode the user's umask gives new files (0644 under umask 022),
    not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(path) or path.suffix
    fd, tmp = tempfile.mkstemp(prefix="." + path.name[:40] + ".", suffix=".tmp" + suffix, dir=str(path.parent))
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: PathLike, text: str, overwrite: bool = True) -> Path:
    """Write text (UTF-8) atomically."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise CMBError(f"{path}: exists; not overwritten")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: PathLike, obj, overwrite: bool = True) -> Path:
    """Write `obj` as indented JSON atomically (numpy scalars/arrays converted)."""
    import json

    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n", overwrite)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: PathLike, what: str = "JSON"):
    """The parsed content of a UTF-8 JSON file.

    CMBError, in one line naming the file and `what` it should be ("model metadata",
    "an annotation"), for a missing file, a folder, binary content or invalid JSON.
    """
    import json

    path = Path(path)
    if not path.is_file():
        reason = "is a folder" if path.is_dir() else "file not found"
        raise CMBError(f"{path}: cannot be read as {what} ({reason})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CMBError(f"{path}: cannot be read as {what} (binary data, not JSON text)") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise CMBError(f"{path}: cannot be read as {what} (not valid JSON: {str(exc)[:100]})") from None
    except OSError as exc:
        raise CMBError(f"{path}: cannot be read as {what} ({exc.strerror or exc})") from None


def read_csv_rows(path: PathLike, what: str = "CSV file") -> list:
    """Rows of a UTF-8 text CSV (blank and '#' comment lines dropped; the header is row 0).

    CMBError, in one line, for a missing file, a folder, binary or undecodable content
    (e.g. an image given where a CSV was expected) and a file without rows.
    """
    import csv
    import io as _io

    path = Path(path)
    if not path.is_file():
        raise CMBError(f"{path}: {what} not found" if not path.exists() else f"{path}: is a folder, not a {what}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CMBError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    binary = f"{path}: is not a text CSV file (binary data; was an image given where the {what} belongs?)"
    if b"\0" in data[:65536]:
        raise CMBError(binary)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CMBError(binary) from None
    try:
        rows = [r for r in csv.reader(_io.StringIO(text, newline=""))
                if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    except csv.Error as exc:
        raise CMBError(f"{path}: cannot be read as CSV ({exc})") from None
    if not rows:
        raise CMBError(f"{path}: empty {what}")
    return rows


def read_points_csv(path: PathLike, columns=("x", "y", "z")) -> np.ndarray:
    """Read RAS mm points from a CSV with a header containing x, y, z (extra columns ignored).

    Also accepts Slicer markups CSV (columns 'r','a','s' or 'x','y','z') -> (N, 3) array.
    Every kind of bad file (binary, empty, no x,y,z columns, a non-numeric or
    non-finite coordinate) raises CMBError with one line naming the file and the line.
    """
    path = Path(path)
    rows = read_csv_rows(path, "points file")
    header = [h.strip().lower() for h in rows[0]]
    for names in (list(columns), ["r", "a", "s"]):
        if all(n in header for n in names):
            idx = [header.index(n) for n in names]
            break
    else:
        found = ",".join(h for h in header if h)[:120] or "no column names"
        raise CMBError(f"{path}: needs a header with columns x,y,z (RAS mm); found {found}")
    points = []
    for n, row in enumerate(rows[1:], start=1):
        try:
            points.append([float(row[i]) for i in idx])
        except (ValueError, IndexError):
            shown = ",".join(row)[:60]
            raise CMBError(f"{path}: point {n} ('{shown}') has no numeric x,y,z") from None
    arr = np.asarray(points, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(arr)):
        raise CMBError(f"{path}: points contain NaN or infinite coordinates")
    return arr


def find_images(folder: PathLike):
    """Sorted image files (by recognised suffix) directly inside `folder`."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and image_suffix(p) and not p.name.startswith("."))


def ensure_parent(path: PathLike) -> Optional[Path]:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
