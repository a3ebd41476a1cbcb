"""CMBLib.nifti: NIfTI read and written without SimpleITK must equal what SimpleITK does.

Reading: the same array (dtype and values) and geometry (1e-6) as SimpleITK 2.5 on the
real volumes of ../shared/data, on random volumes SimpleITK wrote (dtypes, shapes,
spacings, origins, oblique and flipped axes), and on hand-made headers (qform only,
sform only, no orientation, big-endian, scl_slope, 4D with one volume).  Anything
unusual goes through SimpleITK (checked by counting its calls).  Broken files give the
same one-line messages as the SimpleITK path.  Writing: SimpleITK reads the files back
with the array and geometry it reads from its own files; header fields as SimpleITK
writes them.  `cmb grow` no longer imports SimpleITK.
"""
import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phantoms import PhantomCMB, make_phantom

from CMBLib import nifti
from CMBLib.errors import CMBError
from CMBLib.geometry import Volume
from CMBLib.io import read_volume, volume_from_sitk, volume_to_sitk, write_volume

sitk = pytest.importorskip("SimpleITK")

SHARED_NIFTI = sorted(p for p in SHARED_DATA.rglob("*.nii*") if p.name.endswith((".nii", ".nii.gz"))) \
    if SHARED_DATA.is_dir() else []
DTYPES = ("uint8", "int16", "uint16", "int32", "float32", "float64")


def sitk_volume(path) -> Volume:
    return volume_from_sitk(sitk.ReadImage(str(path)))


def assert_same(fast: Volume, ref: Volume, tol=1e-6):
    assert fast.array.dtype == ref.array.dtype
    assert fast.array.shape == ref.array.shape
    np.testing.assert_array_equal(fast.array, ref.array)
    np.testing.assert_allclose(fast.spacing, ref.spacing, rtol=0, atol=tol)
    np.testing.assert_allclose(fast.origin, ref.origin, rtol=0, atol=tol)
    np.testing.assert_allclose(fast.direction, ref.direction, rtol=0, atol=tol)


@pytest.fixture
def sitk_calls(monkeypatch):
    """Counts SimpleITK.ReadImage / WriteImage calls made through CMBLib.io."""
    calls = {"ReadImage": 0, "WriteImage": 0}
    for name in calls:
        original = getattr(sitk, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(sitk, name, counted)
    return calls


def without_fast_path(monkeypatch):
    """Make CMBLib.io take the SimpleITK path for every NIfTI (the behaviour before CMBLib.nifti)."""
    monkeypatch.setattr(nifti, "read_nifti", lambda path: None)
    monkeypatch.setattr(nifti, "writable_array", lambda volume: None)


def error_of(fn, *args) -> str:
    with pytest.raises(CMBError) as err:
        fn(*args)
    return str(err.value)


def rotation(q, flips, perm) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    q = q / np.linalg.norm(q)
    a, b, c, d = q
    r = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    return r[:, list(perm)] * np.where(flips, -1.0, 1.0)


volumes = st.builds(
    lambda dtype, shape, spacing, origin, q, flips, perm, axis_aligned, seed: _volume(
        dtype, shape, spacing, origin, np.eye(3)[:, list(perm)] * np.where(flips, -1.0, 1.0)
        if axis_aligned else rotation(q, flips, perm), seed),
    st.sampled_from(DTYPES), st.tuples(*[st.integers(1, 9)] * 3),
    st.tuples(*[st.floats(0.05, 8.0)] * 3), st.tuples(*[st.floats(-500.0, 500.0)] * 3),
    st.tuples(*[st.floats(-1.0, 1.0)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1),
    st.tuples(*[st.booleans()] * 3), st.permutations([0, 1, 2]), st.booleans(), st.integers(0, 2 ** 16))


def _volume(dtype, shape, spacing, origin, direction, seed) -> Volume:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        array = (rng.normal(0, 1000, shape)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return Volume(array, spacing, origin, direction)


# --- reading -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", SHARED_NIFTI or [None], ids=lambda p: p.name if p else "absent")
def test_real_volumes_read_as_simpleitk_reads_them(path, sitk_calls):
    if path is None:
        pytest.skip(f"no NIfTI files under {SHARED_DATA}")
    fast = nifti.read_nifti(path)
    if fast is None:  # e.g. the 4D multi-echo series: SimpleITK's path decides (here: refuses)
        with pytest.raises(CMBError, match="4 dimensions"):
            read_volume(path)
        assert sitk_calls["ReadImage"] == 1
        return
    assert_same(fast, sitk_volume(path))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(volume=volumes, gz=st.booleans())
def test_random_volumes_written_by_simpleitk(tmp_path, volume, gz):
    path = tmp_path / ("vz.nii.gz" if gz else "v.nii")  # nifti1_io reads v.nii when asked for v.nii.gz
    sitk.WriteImage(volume_to_sitk(volume), str(path))
    fast = nifti.read_nifti(path)
    assert fast is not None, nifti.explain_plan(_head(path))[1]
    assert_same(fast, sitk_volume(path))
    np.testing.assert_array_equal(read_volume(path).array, volume.array)


def test_rotation_near_180_degrees_written_by_simpleitk(tmp_path):
    """Found by hypothesis: this direction's float32 quaternion (a = 0) gives a qform 5.3e-4
    off the sform; ITK reads the sform, and so must the fast reader (not fall back)."""
    d = np.array([[-0.28397935, 0.9588304, 0.0], [0.9588304, 0.28397935, 0.0], [0.0, 0.0, -1.0]])
    volume = Volume(np.array([[[95]]], np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), d)
    path = tmp_path / "v.nii"
    sitk.WriteImage(volume_to_sitk(volume), str(path))
    fast = nifti.read_nifti(path)
    assert fast is not None, nifti.explain_plan(_head(path))[1]
    assert_same(fast, sitk_volume(path))
    np.testing.assert_allclose(fast.direction, d, atol=1e-6)


def _head(path) -> bytes:
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as fh:
        return fh.read(352)


def craft(path, array, endian="<", dim=None, datatype=None, pixdim=(1.0, 0.9, 1.1, 3.0), slope=1.0, inter=0.0,
          units=2, qcode=1, scode=1, quatern=(0.1, -0.2, 0.3, 12.5, -40.0, 7.25), srow=None, intent=0,
          magic=b"n+1\x00", vox_offset=352, extension=b"\x00\x00\x00\x00"):
    """A NIfTI-1 file with the given header fields; `array` is [k, j, i] (stored x fastest)."""
    dtype = array.dtype.newbyteorder(endian)
    code = datatype if datatype is not None else nifti.CODES[array.dtype.newbyteorder("<").str[1:]]
    nz, ny, nx = array.shape
    dim = dim or (3, nx, ny, nz, 1, 1, 1, 1)
    if srow is None:  # the qform's matrix: sform and qform agree
        srow = nifti._quatern_to_mat44(quatern, pixdim).astype(float).ravel()
    head = bytearray(348)
    p = struct.pack_into
    p(endian + "i", head, 0, 348)
    p(endian + "8h", head, 40, *dim)
    p(endian + "h", head, 68, intent)
    p(endian + "hh", head, 70, code, 8 * array.dtype.itemsize)
    p(endian + "8f", head, 76, *pixdim, *([0.0] * (8 - len(pixdim))))
    p(endian + "3f", head, 108, float(vox_offset), slope, inter)
    head[123] = units
    p(endian + "hh", head, 252, qcode, scode)
    p(endian + "6f", head, 256, *quatern)
    p(endian + "12f", head, 280, *srow)
    head[344:348] = magic
    blob = bytes(head) + extension.ljust(vox_offset - 348, b"\x00") + array.astype(dtype).tobytes()
    if str(path).endswith(".gz"):
        blob = gzip.compress(blob)
    Path(path).write_bytes(blob)
    return path


def _oblique_srow(spacing=(0.9, 1.1, 3.0), origin=(12.5, -40.0, 7.25)):
    r = rotation((0.9, 0.1, -0.2, 0.3), (False, True, False), (0, 1, 2))
    m = np.zeros((3, 4))
    m[:, :3] = r * np.asarray(spacing)
    m[:, 3] = origin
    return m.ravel()


ORDINARY = {
    "qform and sform agree": {},
    "qform only": {"scode": 0},
    "qform only, left-handed": {"scode": 0, "pixdim": (-1.0, 0.9, 1.1, 3.0)},
    "qform only, 180 degree rotation": {"scode": 0, "quatern": (0.0, 1.0, 0.0, 1.0, 2.0, 3.0)},
    "sform only": {"qcode": 0, "srow": _oblique_srow()},
    "sform_code 2 without qform": {"qcode": 0, "scode": 2, "srow": _oblique_srow()},
    "no orientation": {"qcode": 0, "scode": 0},
    "big-endian": {"endian": ">"},
    "big-endian, sform only": {"endian": ">", "qcode": 0, "srow": _oblique_srow()},
    "scl_slope and scl_inter": {"slope": 0.25, "inter": -3.5},
    "scl_slope 0 means none": {"slope": 0.0, "inter": 0.0},
    "scl_slope NaN means none": {"slope": float("nan"), "inter": float("nan")},
    "4D with one volume": {"dim": (4, 9, 8, 7, 1, 1, 1, 1)},
    "units unknown": {"units": 0},
    "label intent": {"intent": 1002},
    "an extension before the voxels": {"vox_offset": 400, "extension": b"\x01\x00\x00\x00"},
}


@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64", "int8", "uint32", "int64", "uint64"])
@pytest.mark.parametrize("case", sorted(ORDINARY))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_hand_made_headers_read_as_simpleitk_reads_them(tmp_path, case, dtype, suffix, sitk_calls):
    rng = np.random.default_rng(3)
    array = (rng.random((7, 8, 9)) * 200 - (0 if np.dtype(dtype).kind == "u" else 100)).astype(dtype)
    path = craft(tmp_path / f"h{suffix}", array, **ORDINARY[case])
    assert nifti.explain_plan(_head(path))[1] == ""
    fast = read_volume(path)
    assert sitk_calls["ReadImage"] == 0
    assert_same(fast, sitk_volume(path))


UNUSUAL = {
    "four echoes": ({"dim": (4, 9, 8, 7, 4, 1, 1, 1)}, "dimensions"),
    "2D": ({"dim": (2, 9, 56, 1, 1, 1, 1, 1)}, "dimensions"),  # 504 voxels: 7 x 8 x 9
    "sform sheared": ({"srow": (0.9, 1.1 * np.sin(0.3), 0, 1, 0, 1.1 * np.cos(0.3), 0, 2, 0, 0, 3.0, 3), "qcode": 0},
                      "rotation"),
    "sform scaled unlike pixdim": ({"srow": (1.8, 0, 0, 1, 0, 1.1, 0, 2, 0, 0, 3.0, 3), "qcode": 0}, "lengths"),
    "qform and sform disagree": ({"srow": _oblique_srow(origin=(50.0, 0.0, 0.0))}, "disagree"),
    "both set, sform_code 4": ({"scode": 4}, "SVD"),
    "units metre": ({"units": 1}, "units"),
    "vector intent": ({"intent": 1007}, "intent"),
    "complex64": ({"datatype": 32}, "datatype"),
    "bitpix disagrees": ({"datatype": 4}, "bitpix"),
    "two-file magic": ({"magic": b"ni1\x00"}, "magic"),
    "Analyze (no magic)": ({"magic": b"\x00\x00\x00\x00"}, "magic"),
    "negative pixdim": ({"pixdim": (1.0, -0.9, 1.1, 3.0), "scode": 0}, "voxel size"),
    "fractional vox_offset": ({"vox_offset": 352.5}, "vox_offset"),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL))
def test_unusual_headers_go_through_simpleitk(tmp_path, monkeypatch, case, sitk_calls):
    fields, reason = UNUSUAL[case]
    fields = dict(fields)
    dim = fields.get("dim", (3, 9, 8, 7))
    nvox = int(np.prod(dim[1:dim[0] + 1]))
    array = np.arange(nvox, dtype=np.float32 if fields.get("datatype") != 4 else np.int32).reshape(-1, 8, 9)
    if fields.get("datatype") == 32:
        array = array.astype(np.complex64)
    vox_offset = fields.pop("vox_offset", 352)
    path = craft(tmp_path / "u.nii", array, vox_offset=int(np.ceil(vox_offset)), **fields)
    if vox_offset != int(vox_offset):
        blob = bytearray(path.read_bytes())
        struct.pack_into("<f", blob, 108, vox_offset)
        path.write_bytes(bytes(blob))
    plan, why = nifti.explain_plan(_head(path))
    assert plan is None and reason in why
    try:
        got = read_volume(path)
    except CMBError as exc:
        got = str(exc)
    assert sitk_calls["ReadImage"] == 1
    without_fast_path(monkeypatch)
    try:
        expected = read_volume(path)
    except CMBError as exc:
        expected = str(exc)
    if isinstance(expected, str):
        assert got == expected
    else:
        assert_same(got, expected, tol=0)


def test_nifti2_goes_through_simpleitk(tmp_path, sitk_calls):
    head = bytearray(544)
    struct.pack_into("<i", head, 0, 540)
    head[4:8] = b"n+2\x00"
    path = tmp_path / "n2.nii"
    path.write_bytes(bytes(head) + bytes(8))
    assert nifti.read_nifti(path) is None
    assert "cannot be read" in error_of(read_volume, path)


# --- broken files: the same one-line messages as before -------------------------------------
def _broken_variants(tmp_path):
    rng = np.random.default_rng(7)
    vol = Volume(rng.normal(0, 1, (6, 7, 8)).astype(np.float32), (0.9, 0.9, 2.0), (1.0, 2.0, 3.0))
    plain = write_volume(vol, tmp_path / "ok.nii").read_bytes()
    packed = write_volume(vol, tmp_path / "ok.nii.gz").read_bytes()
    nan = vol.array.copy()
    nan[1, 2, 3], nan[4, 4, 4], nan[0, 0, 0] = np.nan, np.inf, -np.inf
    variants = {
        "data cut": ("nii", plain[:-100]), "header only": ("nii", plain[:352]), "half a header": ("nii", plain[:200]),
        "cut inside the header": ("nii", plain[:350]), "gzip cut in half": ("nii.gz", packed[: len(packed) // 2]),
        "gzip trailer cut": ("nii.gz", packed[:-3]), "gzip of a cut file": ("nii.gz", gzip.compress(plain[:-100])),
        "gzip CRC wrong": ("nii.gz", packed[:-8] + bytes(4) + packed[-4:]),
        "not gzip": ("nii.gz", plain), "empty": ("nii.gz", b""), "garbage": ("nii", b"not an image at all" * 30),
    }
    out = {name: (tmp_path / f"{name.replace(' ', '_')}.{ext}", blob) for name, (ext, blob) in variants.items()}
    for path, blob in out.values():
        path.write_bytes(blob)
    out["NaN .nii"] = (write_volume(vol.with_array(nan), tmp_path / "nan.nii"), None)
    out["NaN .nii.gz"] = (write_volume(vol.with_array(nan), tmp_path / "nan.nii.gz"), None)
    return out


def test_broken_files_fail_with_the_messages_of_the_simpleitk_path(tmp_path, monkeypatch):
    variants = _broken_variants(tmp_path)
    fast = {name: error_of(read_volume, path) for name, (path, _) in variants.items()}
    without_fast_path(monkeypatch)
    before = {name: error_of(read_volume, path) for name, (path, _) in variants.items()}
    assert fast == before
    assert all("\n" not in message for message in fast.values())
    assert "truncated: " in fast["data cut"] and "3 voxels are NaN or infinite" in fast["NaN .nii.gz"]
    assert "corrupt or truncated compressed file" in fast["gzip trailer cut"]


# --- writing -----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(volume=volumes, gz=st.booleans())
def test_written_files_read_back_by_simpleitk(tmp_path, volume, gz, sitk_calls):
    suffix = ".nii.gz" if gz else ".nii"
    writes = sitk_calls["WriteImage"]  # the fixture lives across hypothesis examples
    ours = write_volume(volume, tmp_path / f"ours{int(gz)}{suffix}")  # distinct names: see above
    assert sitk_calls["WriteImage"] == writes
    theirs = tmp_path / f"theirs{int(gz)}{suffix}"
    sitk.WriteImage(volume_to_sitk(volume), str(theirs))
    back = sitk_volume(ours)
    assert_same(back, sitk_volume(theirs))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.origin, volume.origin, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(back.direction, volume.direction, rtol=0, atol=1e-6)
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-7)
    mine, ref = (nifti._fields(_head(p), "<") for p in (ours, theirs))
    for key in ("dim", "datatype", "bitpix", "vox_offset", "scl", "xyzt_units", "qform_code", "sform_code", "magic"):
        assert mine[key] == ref[key], key
    np.testing.assert_allclose(mine["pixdim"], ref["pixdim"], rtol=1e-7)
    scale = max(1.0, float(np.abs(volume.origin).max()))
    np.testing.assert_allclose(mine["srow"], ref["srow"], rtol=0, atol=1e-6 * scale * max(volume.spacing))
    # the qform (a float quaternion) is coarse near 180 degree rotations: ours is as close
    # to the direction as SimpleITK's
    q_mine, q_ref = (nifti._quatern_to_mat44(h["quatern"], h["pixdim"]) for h in (mine, ref))
    err_mine, err_ref = (np.abs(q[:, :3] / np.float32(volume.spacing) - volume.direction).max()
                         for q in (q_mine, q_ref))
    assert err_mine <= max(2e-6, 2 * err_ref)
    np.testing.assert_array_equal(q_mine[:, 3], q_ref[:, 3])
    assert _head(ours)[348:352] == bytes(4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.lists(st.tuples(st.booleans(), st.integers(1, 40000)), min_size=1, max_size=12),
       dtype=st.sampled_from(["uint8", "uint16", "float32"]), seed=st.integers(0, 2 ** 16))
def test_zero_runs_are_stored_as_shared_deflate_fragments(tmp_path, pattern, dtype, seed):
    """Runs of zeros (masks, skull-stripped backgrounds) take the precomputed-fragment path;
    the stream must inflate to the same bytes with Python's gzip and with SimpleITK."""
    rng = np.random.default_rng(seed)
    flat = np.concatenate([np.zeros(n, dtype) if zero else (rng.random(n) * 200 + 1).astype(dtype)
                           for zero, n in pattern])
    flat = np.concatenate([flat, np.zeros((-flat.size) % 64, dtype)])
    volume = Volume(flat.reshape(-1, 8, 8), (0.5, 0.6, 2.0), (3.0, -4.0, 5.0))
    path = write_volume(volume, tmp_path / "z.nii.gz")
    assert gzip.decompress(path.read_bytes())[352:] == flat.tobytes()
    np.testing.assert_array_equal(sitk_volume(path).array, volume.array)
    if (flat == 0).all() and flat.nbytes >= 2 * nifti._ZERO_RUN:
        assert path.stat().st_size < flat.nbytes / 100


@pytest.mark.parametrize("what, volume", [
    ("sheared direction", Volume(np.zeros((3, 4, 5), np.uint8), direction=[[1, 0.2, 0], [0, 1, 0], [0, 0, 1]])),
    ("complex voxels", Volume(np.zeros((3, 4, 5), np.complex64))),
])
def test_unusual_volumes_are_written_by_simpleitk(tmp_path, what, volume, sitk_calls):
    assert nifti.writable_array(volume) is None
    write_volume(volume, tmp_path / "x.nii.gz")
    assert sitk_calls["WriteImage"] == 1


def test_bool_and_float16_are_stored_as_simpleitk_stores_them(tmp_path):
    mask = Volume(np.eye(4, dtype=bool)[None].repeat(3, 0))
    assert read_volume(write_volume(mask, tmp_path / "m.nii.gz")).array.dtype == np.uint8
    half = Volume(np.full((2, 3, 4), 1.5, np.float16))
    assert sitk_volume(write_volume(half, tmp_path / "h.nii")).array.dtype == np.float32


def test_fast_writes_are_atomic_and_honour_the_umask(tmp_path):
    import os

    vol = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    old = os.umask(0o027)
    try:
        path = write_volume(vol, tmp_path / "a.nii.gz")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(CMBError, match="exists"):
        write_volume(vol, path, overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


# --- `cmb grow` on the fast path does not import SimpleITK ----------------------------------
def test_cmb_grow_does_not_import_simpleitk(tmp_path):
    vol, _, scr = make_phantom([PhantomCMB((14.0, 15.0, 5.0), 2.0, 0.6)], (30, 30, 10), (0.9, 0.9, 2.0),
                               noise=0.03, seed=2)
    write_volume(vol, tmp_path / "t2s.nii.gz")
    write_volume(scr.with_array(scr.array.astype(np.uint16)), tmp_path / "scr.nii.gz")
    code = ("import runpy, sys; sys.argv = ['cmb', 'grow', sys.argv[1], sys.argv[2], '-o', sys.argv[3], '--quiet']\n"
            "try:\n    runpy.run_module('CMBLib', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'SimpleITK'))")
    out = tmp_path / "mask.nii.gz"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t2s.nii.gz"), str(tmp_path / "scr.nii.gz"),
                           str(out)], capture_output=True, text=True, cwd=str(REPO), check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    mask = sitk_volume(out)
    assert mask.same_geometry(vol) and mask.array.max() == 1
