"""Ordinary NIfTI-1 files read and written with numpy alone (no SimpleITK import).

`read_volume` / `write_volume` (CMBLib.io) try these first for `.nii` / `.nii.gz`;
`read_nifti` / `writable_array` return None for anything out of the ordinary, and the
SimpleITK path runs unchanged.  What "ordinary" means, and how the result matches
SimpleITK 2.5 (ITK 5.4, `itkNiftiImageIO.cxx` with nifti1_io):

* Reading: single-file NIfTI-1 (magic ``n+1``), either byte order, 3 dimensions (or
  more with every extra dimension 1, which ITK reads as 3D), a scalar datatype
  (u)int8/16/32/64, float32/64 whose bitpix agrees, positive finite voxel sizes in mm
  (or unset units, which ITK takes as mm), an integral vox_offset >= 352, an intent
  code that does not change the voxels' meaning (none, estimate, label, neuroname,
  dimensionless).  Geometry: ITK 5.4's choice of matrix, emulated in float32 as nifti1_io
  stores it: no qform and no sform -> origin 0, identity direction; an sform
  (sform_code > 0) whose columns are orthonormal within 1e-6 after normalisation and
  whose column lengths match pixdim (relative 1e-5) is used when qform_code is 0 or
  sform_code is 1 (SCANNER_ANAT); a qform alone is used through nifti1_io's
  quaternion-to-matrix formula.  When both are set they must agree (direction 2e-3: a
  float32 quaternion of a rotation near 180 degrees holds it only to ~5e-4, and ITK 5.4
  then reads the sform; origin 1e-3 mm) and sform_code must be 1, otherwise ITK compares them by an SVD
  that is not reproduced here: SimpleITK reads the file.  Spacing is pixdim; origin and
  direction come from the matrix exactly as ITK derives them (LPS, then RAS for
  `Volume`).  scl_slope / scl_inter are applied as ITK does (integer voxels become
  float32; value * slope + inter in double, stored in the voxel type), and a slope of
  0 or a non-finite one means "no scaling", as in nifti1_io.
* The data are decompressed once, into the array that is returned; truncation,
  a corrupt gzip stream and NaN / infinite voxels give `check_nifti_complete`'s messages.
* Writing: 3D arrays of the ten scalar types above (bool as uint8, float16 as
  float32, as `volume_to_sitk` does), orthonormal direction, positive spacing, at most
  32767 voxels per axis: a header laid out as ITK writes it (qform and sform both
  SCANNER_ANAT, sform = direction x spacing in float32, quaternion from the rotation,
  pixdim[0] = qfac, xyzt_units mm + s, vox_offset 352, scl_slope 1), then the voxels,
  for `.nii.gz` one gzip member at level `GZIP_LEVEL` in which runs of zeros are shared
  precomputed fragments (see `_deflate`).  SimpleITK reads the result back with the array
  and geometry it reads from its own files.
* nifti1_io, asked for `x.nii.gz`, reads `x.nii` when both exist; `read_nifti` reads the
  file it is given.
"""
import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import CMBError
from .geometry import LPS_TO_RAS, Volume

# NIfTI datatype code -> numpy type (little-endian form; the byte order is the header's)
DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
CODES = {np.dtype(v).newbyteorder("<").str[1:]: k for k, v in DTYPES.items()}
PLAIN_INTENTS = (0, 1001, 1002, 1003, 1011)  # none, estimate, label, neuroname, dimensionless
HEADER_SIZE, DATA_OFFSET = 348, 352
GZIP_LEVEL = 1  # see docs/mask_engine.md "Reading and writing NIfTI without SimpleITK"
_EPS = float(np.finfo(np.float64).eps)
_CHUNK = 1 << 18  # 256 KiB: decompressed pieces stay in the CPU cache (4 MiB pieces: 3x slower)


def corrupt_error(path) -> CMBError:
    """The one-line error for a compressed stream that cannot be decompressed."""
    return CMBError(f"{path}: cannot be read as an image (corrupt or truncated compressed file)")


def check_voxel_data(path, total: int, expected: int, bad: int) -> None:
    """CMBError when fewer than `expected` bytes were found (`total`) or `bad` voxels are
    NaN / infinite: the messages of this reader and of `CMBLib.io.check_nifti_complete`."""
    if total < expected:
        raise CMBError(f"{path}: cannot be read as an image (truncated: {total} of {expected} bytes)")
    if bad:
        raise CMBError(f"{path}: {bad} voxels are NaN or infinite; fix or mask them first")


def read_nifti(path) -> Optional[Volume]:
    """The `Volume` SimpleITK would read from an ordinary NIfTI-1 file, or None.

    None means "let SimpleITK read it" (anything unusual, including headers that cannot be
    read at all: the SimpleITK path gives the error message).  CMBError for a file whose
    voxel data are truncated, whose gzip stream is corrupt, or that holds NaN / infinite
    voxels (the messages of `CMBLib.io.check_nifti_complete`).
    """
    path = Path(path)
    gz = str(path).lower().endswith(".gz")
    try:
        fh = gzip.open(path, "rb") if gz else open(path, "rb")
    except OSError:
        return None
    with fh:
        try:
            head = fh.read(DATA_OFFSET)
        except (OSError, EOFError, zlib.error):
            return None  # the SimpleITK path reports it
        plan = plan_read(head)
        if plan is None:
            return None
        try:
            array, total = _read_voxels(fh, plan, len(head))
        except (OSError, EOFError, zlib.error):
            raise corrupt_error(path) from None
    bad = int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind == "f" else 0
    check_voxel_data(path, total, plan["offset"] + plan["nbytes"], bad)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array = _rescale(array, plan["slope"], plan["inter"])
    return Volume(array.reshape(plan["shape_kji"]), plan["spacing"], plan["origin"], plan["direction"])


def _read_voxels(fh, plan, done: int):
    """(flat array of the voxels as stored, bytes seen in the whole stream)."""
    total = done
    skip = plan["offset"] - done
    while skip > 0:
        got = len(fh.read(min(skip, _CHUNK)))
        if not got:
            break
        total += got
        skip -= got
    array = np.empty(plan["nvox"], dtype=plan["dtype"])
    view = memoryview(array).cast("B")
    pos = 0
    if skip <= 0:
        while pos < len(view):
            got = fh.readinto(view[pos:pos + _CHUNK])
            if not got:
                break
            pos += got
    total += pos
    while True:  # the rest of the stream: a gzip member is checked (CRC, length) at its end
        rest = fh.read(_CHUNK)
        if not rest:
            break
        total += len(rest)
    return array, total


def _rescale(array: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """ITK's scl_slope / scl_inter: integers become float32; v * slope + inter in double."""
    if not _must_rescale(slope, inter):
        return array
    out_type = array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)
    values = array.astype(out_type).astype(np.float64)
    values *= slope
    values += inter
    return values.astype(out_type)


def _must_rescale(slope: float, inter: float) -> bool:
    return abs(slope) > _EPS and (abs(slope - 1.0) > _EPS or abs(inter) > _EPS)


def _fields(head: bytes, endian: str) -> dict:
    u = struct.unpack_from
    return {
        "dim": u(endian + "8h", head, 40), "intent_code": u(endian + "h", head, 68)[0],
        "datatype": u(endian + "h", head, 70)[0], "bitpix": u(endian + "h", head, 72)[0],
        "pixdim": u(endian + "8f", head, 76), "vox_offset": u(endian + "f", head, 108)[0],
        "scl": u(endian + "2f", head, 112), "xyzt_units": head[123],
        "qform_code": u(endian + "h", head, 252)[0], "sform_code": u(endian + "h", head, 254)[0],
        "quatern": u(endian + "6f", head, 256), "srow": u(endian + "12f", head, 280), "magic": head[344:348],
    }


def _byte_order(head: bytes) -> Optional[str]:
    """'<' or '>' as nifti1_io decides it (dim[0] in 1..7; sizeof_hdr 348), or None."""
    for endian in ("<", ">"):
        dim0 = struct.unpack_from(endian + "h", head, 40)[0]
        size = struct.unpack_from(endian + "i", head, 0)[0]
        if 1 <= dim0 <= 7 and size == HEADER_SIZE:
            return endian
    return None


def plan_read(head: bytes) -> Optional[dict]:
    """How to read an ordinary NIfTI-1 file with this header, or None (see the module doc).

    Keys: dtype (numpy, file byte order), nvox, nbytes, offset, shape_kji, spacing,
    origin and direction (RAS, as `Volume` holds them), slope, inter.
    """
    plan, _ = explain_plan(head)
    return plan


def explain_plan(head: bytes):
    """(plan or None, reason): `plan_read` with the reason it declined, for tests and debugging."""
    if len(head) < DATA_OFFSET:
        return None, "shorter than a NIfTI-1 header"
    endian = _byte_order(head)
    if endian is None:
        return None, "not a NIfTI-1 header (sizeof_hdr / dim[0])"
    h = _fields(head, endian)
    if h["magic"] != b"n+1\x00":
        return None, "not a single-file NIfTI-1 (magic)"
    dim = h["dim"]
    ndim = int(dim[0])
    if any(int(d) < 1 for d in dim[1:ndim + 1]) or ndim < 3 or any(int(d) != 1 for d in dim[4:ndim + 1]):
        return None, f"dimensions {dim[:ndim + 1]} are not one 3D volume"
    if h["datatype"] not in DTYPES:
        return None, f"datatype {h['datatype']}"
    dtype = np.dtype(DTYPES[h["datatype"]]).newbyteorder(endian)
    if h["bitpix"] != 8 * dtype.itemsize:
        return None, f"bitpix {h['bitpix']} disagrees with datatype {h['datatype']}"
    if h["intent_code"] not in PLAIN_INTENTS:
        return None, f"intent code {h['intent_code']}"
    if h["xyzt_units"] & 7 not in (0, 2):
        return None, "spatial units other than mm"
    offset = h["vox_offset"]
    if not (math.isfinite(offset) and offset == int(offset) and offset >= DATA_OFFSET):
        return None, f"vox_offset {offset}"
    spacing = [float(p) for p in h["pixdim"][1:4]]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        return None, f"voxel size {spacing}"
    slope, inter = (float(v) if math.isfinite(v) else 0.0 for v in h["scl"])  # nifti1_io: FIXED_FLOAT
    if abs(slope) < _EPS:
        slope = 1.0
    if max(h["qform_code"], 0) == 0 and max(h["sform_code"], 0) == 0:
        origin_lps, direction_lps = (0.0, 0.0, 0.0), np.eye(3)  # ITK: no orientation in the file
    else:
        matrix, why = _itk_matrix(h, spacing)
        if matrix is None:
            return None, why
        origin_lps, direction_lps = _itk_origin_direction(matrix)
    nx, ny, nz = (int(d) for d in dim[1:4])
    nvox = nx * ny * nz
    return {"dtype": dtype, "nvox": nvox, "nbytes": nvox * dtype.itemsize, "offset": int(offset),
            "shape_kji": (nz, ny, nx), "spacing": tuple(spacing),
            # the same operations as CMBLib.io.volume_from_sitk, so the results are bit-equal
            "origin": LPS_TO_RAS @ np.array(origin_lps, dtype=float),
            "direction": LPS_TO_RAS @ np.array(direction_lps, dtype=float),
            "slope": slope, "inter": inter}, ""


def _itk_matrix(h: dict, spacing):
    """(3x4 float32 voxel -> RAS matrix that ITK 5.4 uses, or None, reason)."""
    qcode, scode = max(int(h["qform_code"]), 0), max(int(h["sform_code"]), 0)
    if qcode > 5 or scode > 5:
        return None, f"qform / sform code {qcode} / {scode}"
    qform = _quatern_to_mat44(h["quatern"], h["pixdim"]) if qcode else None
    if scode == 0:
        return qform, ""
    sform = np.array(h["srow"], dtype=np.float32).reshape(3, 4)
    columns = sform[:, :3].astype(np.float64)
    lengths = np.sqrt((columns ** 2).sum(axis=0))
    if not np.all(lengths > 0) or not np.allclose(lengths, spacing, rtol=1e-5, atol=0):
        return None, "sform column lengths differ from pixdim"
    unit = columns / lengths
    if not np.allclose(unit.T @ unit, np.eye(3), rtol=0, atol=1e-6):
        return None, "sform is not a rotation (shear or non-orthogonal axes)"
    if qcode and scode != 1:
        return None, f"qform and sform both set with sform_code {scode} (ITK compares them by SVD)"
    if qform is not None:
        qunit = qform[:, :3].astype(np.float64)
        qunit = qunit / np.sqrt((qunit ** 2).sum(axis=0))
        if not (np.allclose(qunit, unit, rtol=0, atol=2e-3)   # float32 quaternions near 180 degrees: ~5e-4
                and np.allclose(qform[:, 3], sform[:, 3], rtol=0, atol=1e-3)):
            return None, "qform and sform disagree"
    return sform, ""


def _quatern_to_mat44(quatern, pixdim) -> np.ndarray:
    """nifti1_io's nifti_quatern_to_mat44 (double arithmetic, float32 result), 3x4."""
    qb, qc, qd, qx, qy, qz = (float(np.float32(v)) if math.isfinite(v) else 0.0 for v in quatern)
    b, c, d = qb, qc, qd
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        a = 1.0 / math.sqrt(b * b + c * c + d * d)
        b, c, d = b * a, c * a, d * a
        a = 0.0
    else:
        a = math.sqrt(a)
    xd, yd, zd = (float(p) if p > 0 else 1.0 for p in pixdim[1:4])
    if pixdim[0] < 0:
        zd = -zd
    r = [[(a * a + b * b - c * c - d * d) * xd, 2.0 * (b * c - a * d) * yd, 2.0 * (b * d + a * c) * zd, qx],
         [2.0 * (b * c + a * d) * xd, (a * a + c * c - b * b - d * d) * yd, 2.0 * (c * d - a * b) * zd, qy],
         [2.0 * (b * d - a * c) * xd, 2.0 * (c * d + a * b) * yd, (a * a + d * d - c * c - b * b) * zd, qz]]
    return np.array(r, dtype=np.float64).astype(np.float32)


def _itk_origin_direction(m: np.ndarray):
    """ITK's SetImageIOOrientationFromNIfTI: origin and direction (LPS) from the float matrix."""
    e = [[float(m[i, j]) for j in range(4)] for i in range(3)]
    origin = (-e[0][3], -e[1][3], e[2][3])
    columns = []
    for j in range(3):
        v = [-e[0][j], -e[1][j], e[2][j]]
        total = v[0] * v[0] + v[1] * v[1] + v[2] * v[2]
        if total != 0.0:
            norm = math.sqrt(total)
            v = [x / norm for x in v]
        columns.append(v)
    direction = [[columns[j][i] for j in range(3)] for i in range(3)]  # direction vectors as columns
    return origin, direction


# --- writing ------------------------------------------------------------------------------
def writable_array(volume: Volume) -> Optional[np.ndarray]:
    """The array `write_nifti` would store (little-endian), or None when SimpleITK must write it."""
    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.ndim != 3 or array.dtype.newbyteorder("<").str[1:] not in CODES:
        return None
    if min(array.shape) < 1 or max(array.shape) > 32767:
        return None
    spacing = np.asarray(volume.spacing, dtype=float)
    direction = np.asarray(volume.direction, dtype=float)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0) and np.all(np.isfinite(volume.origin))):
        return None
    if not (np.all(np.isfinite(direction)) and np.allclose(direction.T @ direction, np.eye(3), rtol=0, atol=1e-6)):
        return None
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def nifti_header(volume: Volume, array: np.ndarray) -> bytes:
    """The 352 bytes (header + empty extension flag) that precede the voxels, as ITK writes them."""
    rotation = _nearest_rotation(np.asarray(volume.direction, dtype=float))  # RAS columns
    qb, qc, qd, qfac = _mat33_to_quatern(rotation)
    spacing32 = np.asarray(volume.spacing, dtype=np.float64).astype(np.float32)
    srow = np.zeros((3, 4), np.float32)
    srow[:, :3] = rotation.astype(np.float32) * spacing32[None, :]  # float32 products, as ITK
    srow[:, 3] = np.asarray(volume.origin, dtype=np.float64).astype(np.float32)
    head = bytearray(DATA_OFFSET)
    p = struct.pack_into
    p("<i", head, 0, HEADER_SIZE)
    head[38:39] = b"r"
    nz, ny, nx = array.shape
    p("<8h", head, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    p("<hh", head, 70, CODES[array.dtype.str[1:]], 8 * array.dtype.itemsize)
    p("<8f", head, 76, qfac, *(float(s) for s in spacing32), 0.0, 0.0, 0.0, 0.0)
    p("<fff", head, 108, float(DATA_OFFSET), 1.0, 0.0)
    head[123] = 2 | 8  # NIFTI_UNITS_MM | NIFTI_UNITS_SEC
    p("<hh", head, 252, 1, 1)  # qform_code, sform_code: NIFTI_XFORM_SCANNER_ANAT
    p("<6f", head, 256, qb, qc, qd, *(float(v) for v in srow[:, 3]))
    p("<12f", head, 280, *(float(v) for v in srow.ravel()))
    head[344:348] = b"n+1\x00"
    return bytes(head)


def _nearest_rotation(direction: np.ndarray) -> np.ndarray:
    """The orthonormal matrix closest to `direction` (polar decomposition, as nifti1_io)."""
    u, _, vt = np.linalg.svd(direction)
    return u @ vt


def _mat33_to_quatern(r: np.ndarray):
    """nifti1_io's nifti_mat44_to_quatern for an orthonormal matrix: (qb, qc, qd, qfac)."""
    r = [[float(v) for v in row] for row in r]
    det = (r[0][0] * r[1][1] * r[2][2] - r[0][0] * r[2][1] * r[1][2] - r[1][0] * r[0][1] * r[2][2]
           + r[1][0] * r[2][1] * r[0][2] + r[2][0] * r[0][1] * r[1][2] - r[2][0] * r[1][1] * r[0][2])
    qfac = 1.0
    if det <= 0:  # improper: flip the third column
        qfac = -1.0
        for row in r:
            row[2] = -row[2]
    r11, r12, r13 = r[0]
    r21, r22, r23 = r[1]
    r31, r32, r33 = r[2]
    a = r11 + r22 + r33 + 1.0
    if a > 0.5:
        a = 0.5 * math.sqrt(a)
        b, c, d = 0.25 * (r32 - r23) / a, 0.25 * (r13 - r31) / a, 0.25 * (r21 - r12) / a
    else:
        xd, yd, zd = 1.0 + r11 - (r22 + r33), 1.0 + r22 - (r11 + r33), 1.0 + r33 - (r11 + r22)
        if xd > 1.0:
            b = 0.5 * math.sqrt(xd)
            c, d, a = 0.25 * (r12 + r21) / b, 0.25 * (r13 + r31) / b, 0.25 * (r32 - r23) / b
        elif yd > 1.0:
            c = 0.5 * math.sqrt(yd)
            b, d, a = 0.25 * (r12 + r21) / c, 0.25 * (r23 + r32) / c, 0.25 * (r13 - r31) / c
        else:
            d = 0.5 * math.sqrt(zd)
            b, c, a = 0.25 * (r13 + r31) / d, 0.25 * (r23 + r32) / d, 0.25 * (r21 - r12) / d
        if a < 0.0:
            b, c, d = -b, -c, -d
    return b, c, d, qfac


def write_nifti(volume: Volume, path, array: np.ndarray, level: int = GZIP_LEVEL) -> None:
    """Write `array` (from `writable_array(volume)`) with `volume`'s geometry to `path`
    (gzip-compressed when `path` ends in .gz).  Not atomic by itself: `CMBLib.io.write_volume`
    passes a temporary path and renames it."""
    head = nifti_header(volume, array)
    data = memoryview(array.reshape(-1)).cast("B")
    with open(path, "wb") as fh:
        if not str(path).lower().endswith(".gz"):
            fh.write(head)
            fh.write(data)
            return
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")  # gzip member: deflate, no name, mtime 0, Unix
        crc = zlib.crc32(data, zlib.crc32(head))
        for piece in _deflate(head, data, level):
            fh.write(piece)
        fh.write(struct.pack("<II", crc, (len(head) + len(data)) & 0xFFFFFFFF))


_ZERO_RUN = 1 << 14  # bytes


def _deflate(head: bytes, data: memoryview, level: int):
    """Raw deflate stream of head + data, in pieces.

    Masks and skull-stripped images are mostly zeros, which zlib (~300 MB/s at level 1)
    still has to scan.  Every aligned 16 KiB run of zero bytes is instead emitted as one
    precomputed, self-contained deflate fragment; the compressor is fully flushed before it
    (Z_FULL_FLUSH: no later match reaches back across), as pigz joins independently
    compressed pieces.  Any inflater reads the result as one ordinary stream.
    """
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    yield packer.compress(head)
    n_runs = len(data) // _ZERO_RUN
    words = np.frombuffer(data[:n_runs * _ZERO_RUN], dtype=np.uint64).reshape(n_runs, _ZERO_RUN // 8)
    zero = ~words.any(axis=1)
    if not zero.any():
        yield packer.compress(data)
        yield packer.flush()
        return
    blob = _zero_fragment(level)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], zero, [False])).astype(np.int8)))
    done = 0
    for start, stop in zip(edges[::2], edges[1::2]):  # runs of zero blocks [start, stop)
        if start * _ZERO_RUN > done:
            yield packer.compress(data[done:start * _ZERO_RUN])
        yield packer.flush(zlib.Z_FULL_FLUSH)
        yield blob * int(stop - start)
        done = stop * _ZERO_RUN
    yield packer.compress(data[done:])
    yield packer.flush()


_FRAGMENTS: dict = {}


def _zero_fragment(level: int) -> bytes:
    """Raw deflate of _ZERO_RUN zero bytes from a fresh compressor, ending byte-aligned."""
    if level not in _FRAGMENTS:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        _FRAGMENTS[level] = packer.compress(bytes(_ZERO_RUN)) + packer.flush(zlib.Z_FULL_FLUSH)
    return _FRAGMENTS[level]
