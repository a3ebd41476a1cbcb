"""The release layouts of the public CMB data sets: subjects, their files and their references.

VALDO 2021, task 2 (cerebral microbleeds), one folder per subject::

    DIR/sub-NNN/sub-NNN_space-T2S_desc-masked_T2S.nii.gz     the image detection runs on
    DIR/sub-NNN/sub-NNN_space-T2S_desc-masked_{T1,T2}.nii.gz  (not used)
    DIR/sub-NNN/sub-NNN_space-T2S_CMB.nii.gz                 CMB label map on the T2S grid

CUHK SWI data of Dou et al. 2016 (IEEE TMI 35(5):1182-1195), one pair per subject::

    DIR/NN.nii or DIR/NN.nii.gz      SWI volume
    DIR/NN.mat                       ``cen`` (N x 3) CMB centres, ``gt_num`` (N)

**Index convention of ``cen``** (written down once, here): MATLAB, like nibabel, holds a
NIfTI volume as an array indexed ``(i, j, k)`` (x first, the NIfTI voxel axes); ``cen`` holds
1-based indices in that order, so column 0 is ``i + 1``, column 1 ``j + 1``, column 2
``k + 1``.  CMBLib arrays are indexed ``[k, j, i]`` (SimpleITK order), and `Volume`'s
voxel functions take ``(i, j, k)``; so a centre is ``voxel (i, j, k) = cen - 1`` and its
RAS position ``volume.voxel_to_ras(cen - 1)``; the image value there is
``volume.array[k, j, i]``.  `Testing/test_benchmark.py` checks this on an asymmetric grid
against nibabel's own reading of the file.

**VALDO cohorts.**  The subject-number ranges of the three cohorts are not written in the
release files, so the cohort is inferred from the T2S voxel grid and the report says so:
in-plane spacing below 0.7 mm with slices of 2 mm or more -> cohort 1 (3T, about
0.45 x 0.45 x 3-4 mm, 512 x 512 x 35); in-plane below 0.7 mm with thinner slices ->
cohort 2 (1.5T 3D, about 0.49 x 0.49 x 0.8 mm, 512 x 512 x 192); in-plane 0.7 mm or more
-> cohort 3 (about 1 x 1 x 3-4 mm, 256 x 256 x 36-49).  The subject number's series
(``sub-1NN``, ``sub-2NN``, ...) is reported beside it.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError

DATASETS = ("valdo", "cuhk")
SEQUENCE = {"valdo": "T2S", "cuhk": "SWI"}
_VALDO_SUBJECT = re.compile(r"^sub-\d+$")
_NUMBER = re.compile(r"^\d+$")
NIFTI = (".nii.gz", ".nii")

COHORTS = {
    "1": "3T, ~0.45 x 0.45 mm in-plane, slices >= 2 mm (512 x 512 x 35 at 0.45 x 0.45 x 4 mm)",
    "2": "1.5T 3D, ~0.5 x 0.5 mm in-plane, slices < 2 mm (512 x 512 x 192 at 0.49 x 0.49 x 0.8 mm)",
    "3": "~1 x 1 mm in-plane (256 x 256 x 36-49 at 1 x 1 x 3-4 mm)",
}


@dataclass
class Subject:
    """One subject of a release: its image, its reference and why it cannot be scored."""

    name: str                          # 'sub-101' (VALDO) or '01' (CUHK)
    image: Optional[Path]
    reference: Optional[Path]          # label map (VALDO) or .mat (CUHK)
    problem: str = ""                  # non-empty: skipped, with this reason
    extra: dict = field(default_factory=dict)


def _nifti(folder: Path, stem: str) -> Optional[Path]:
    for suffix in NIFTI:
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    return None


def _numeric_stem(path: Path) -> Optional[str]:
    name = path.name
    for suffix in NIFTI + (".mat",):
        if name.lower().endswith(suffix):
            stem = name[: len(name) - len(suffix)]
            return stem if _NUMBER.match(stem) else None
    return None


def valdo_subjects(root) -> list[Subject]:
    """Subjects of a VALDO task-2 folder (``sub-NNN`` folders directly inside `root`)."""
    root = Path(root)
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _VALDO_SUBJECT.match(p.name)):
        sub = folder.name
        image = _nifti(folder, f"{sub}_space-T2S_desc-masked_T2S")
        ref = _nifti(folder, f"{sub}_space-T2S_CMB")
        missing = [n for n, p in ((f"{sub}_space-T2S_desc-masked_T2S.nii.gz", image),
                                  (f"{sub}_space-T2S_CMB.nii.gz", ref)) if p is None]
        problem = ("missing " + " and ".join(missing)) if missing else ""
        out.append(Subject(sub, image, ref, problem))
    return sorted(out, key=lambda s: int(s.name[4:]))


def is_valdo(root) -> bool:
    """True when some ``sub-NNN`` folder in `root` holds a ``sub-NNN_space-T2S_*`` NIfTI file."""
    root = Path(root)
    for folder in root.iterdir():
        if folder.is_dir() and _VALDO_SUBJECT.match(folder.name):
            if any(f.name.startswith(f"{folder.name}_space-T2S_") and f.name.lower().endswith(NIFTI)
                   for f in folder.iterdir()):
                return True
    return False


def _cuhk_files(root: Path) -> tuple[dict, dict]:
    mats, images = {}, {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        stem = _numeric_stem(p)
        if stem is None:
            continue
        (mats if p.name.lower().endswith(".mat") else images).setdefault(stem, []).append(p)
    return mats, images


def is_cuhk(root) -> bool:
    """True when `root` (or a folder below it) holds an ``NN.mat`` and an ``NN.nii[.gz]``."""
    mats, images = _cuhk_files(Path(root))
    return any(s in images for s in mats)


def cuhk_subjects(root) -> list[Subject]:
    """Subjects of a CUHK release folder: numeric stems of ``.mat`` files and NIfTI images.

    An image pairs with the ``.mat`` of the same number in its own folder, else with the
    only ``.mat`` of that number in the tree (images and centres in sibling folders).
    """
    root = Path(root)
    mats, images = _cuhk_files(root)
    out = []
    for stem in sorted(set(mats) | set(images), key=lambda s: (int(s), s)):
        ms, ims = mats.get(stem, []), images.get(stem, [])
        problem, image, mat = "", None, None
        if not ms:
            problem = f"missing {stem}.mat (CMB centres)"
        elif not ims:
            problem = f"missing {stem}.nii or {stem}.nii.gz (SWI image)"
        else:
            pairs = [(i, m) for i in ims for m in ms if i.parent == m.parent]
            if not pairs and len(ms) == 1 and len({i.parent for i in ims}) == 1:
                pairs = [(i, ms[0]) for i in ims]
            # one folder holding NN.nii and NN.nii.gz: the compressed one (same data, usually)
            pairs.sort(key=lambda t: (not t[0].name.lower().endswith(".nii.gz"), str(t[0])))
            if not pairs:
                problem = f"{stem}: image and .mat lie in different folders ({ims[0]}, {ms[0]}); put them together"
            elif len({(p[0].parent, p[1]) for p in pairs}) > 1:
                problem = f"{stem}: several images or .mat files ({', '.join(str(p) for p in ims + ms)})"
            else:
                image, mat = pairs[0]
        out.append(Subject(stem, image, mat if mat else (ms[0] if ms else None), problem))
    return out


def find_subjects(dataset: str, root) -> list[Subject]:
    """The subjects of `root` laid out as `dataset` ('valdo' or 'cuhk').

    CMBError (one line, nothing read yet) when `root` is not a folder or is not laid out
    as that release; the message names the other layout when `root` has that one.
    """
    dataset = str(dataset).lower()
    if dataset not in DATASETS:
        raise CMBError(f"unknown data set '{dataset}'; use valdo or cuhk")
    root = Path(root)
    if not root.is_dir():
        raise CMBError(f"{root}: no such folder")
    expected = {"valdo": "sub-NNN/sub-NNN_space-T2S_desc-masked_T2S.nii.gz with sub-NNN_space-T2S_CMB.nii.gz",
                "cuhk": "NN.nii or NN.nii.gz beside NN.mat (cen, gt_num)"}
    ok = is_valdo(root) if dataset == "valdo" else is_cuhk(root)
    if not ok:
        other = "cuhk" if dataset == "valdo" else "valdo"
        hint = ""
        if (is_cuhk(root) if other == "cuhk" else is_valdo(root)):
            hint = f"; it looks like the {other.upper()} layout: use `cmb benchmark {other}`"
        raise CMBError(f"{root}: not the {dataset.upper()} release layout (expected {expected[dataset]}){hint}")
    return valdo_subjects(root) if dataset == "valdo" else cuhk_subjects(root)


# --- CUHK centre files -----------------------------------------------------------------

def read_cuhk_mat(path) -> tuple[np.ndarray, Optional[int]]:
    """(cen as an (N, 3) float array, 1-based (i, j, k) as stored; gt_num or None).

    MATLAB v4-v7.2 files are read with ``scipy.io.loadmat``; a v7.3 (HDF5) file with h5py
    when it is installed (its arrays come transposed: MATLAB's N x 3 is stored 3 x N),
    else CMBError saying how to convert it.
    """
    path = Path(path)
    try:
        head = path.read_bytes()[:128]
    except OSError as exc:
        raise CMBError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        return _read_mat_hdf5(path)
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        return _read_mat_hdf5(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise CMBError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    return _centres(path, data.get("cen"), data.get("gt_num"))


def _read_mat_hdf5(path: Path):
    try:
        import h5py
    except ImportError:
        raise CMBError(f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; install h5py "
                       "(pip install h5py) or re-save it in MATLAB with save(..., '-v7')") from None
    try:
        with h5py.File(str(path), "r") as f:
            cen = np.array(f["cen"]).T if "cen" in f else None        # MATLAB N x 3 is stored 3 x N
            gt = np.array(f["gt_num"]) if "gt_num" in f else None
    except OSError as exc:
        raise CMBError(f"{path}: cannot be read as a MATLAB v7.3 file ({exc})") from None
    return _centres(path, cen, gt)


def _centres(path: Path, cen, gt) -> tuple[np.ndarray, Optional[int]]:
    if cen is None:
        raise CMBError(f"{path}: holds no variable 'cen' (CMB centres)")
    cen = np.asarray(cen, dtype=float)
    if cen.size == 0:
        cen = np.zeros((0, 3))
    if cen.ndim != 2 or cen.shape[1] != 3:
        raise CMBError(f"{path}: 'cen' has shape {cen.shape}; expected N x 3 voxel indices")
    if not np.all(np.isfinite(cen)):
        raise CMBError(f"{path}: 'cen' holds NaN or infinite values")
    gt_num = None
    if gt is not None and np.asarray(gt).size:
        gt_num = int(round(float(np.asarray(gt, dtype=float).ravel()[0])))
    return cen, gt_num


def cuhk_reference_ijk(path, shape_ijk) -> np.ndarray:
    """0-based voxel indices (i, j, k), (N, 3), of the CMB centres in `path` (see the module
    docstring for the convention); CMBError when gt_num disagrees with cen or a centre
    lies outside an image of `shape_ijk` (i, j, k voxels)."""
    cen, gt_num = read_cuhk_mat(path)
    if gt_num is not None and gt_num != len(cen):
        raise CMBError(f"{Path(path).name}: gt_num is {gt_num} but cen lists {len(cen)} centres")
    if len(cen) and cen.min() < 0.5:
        raise CMBError(f"{Path(path).name}: cen holds an index below 1; the release's indices are 1-based")
    ijk = cen - 1.0
    size = np.asarray(shape_ijk, dtype=float)
    outside = np.flatnonzero(np.any(ijk > size - 0.5, axis=1))
    if outside.size:
        n = int(outside[0])
        raise CMBError(f"{Path(path).name}: centre {n + 1} at 1-based (i, j, k) {tuple(cen[n])} lies outside "
                       f"the image of {tuple(int(s) for s in size)} voxels; cen must be in the image's own "
                       "(i, j, k) axis order")
    return ijk


# --- grids -------------------------------------------------------------------------------

def slice_thickness_mm(spacing) -> float:
    """The largest voxel spacing (the slice spacing of an axial 2D or thick-slice scan), 0.1 mm."""
    return round(float(max(spacing)), 1)


def valdo_cohort(spacing) -> str:
    """'1', '2' or '3' from the T2S voxel spacing (mm), as described in the module docstring."""
    sp = sorted(float(s) for s in spacing)
    in_plane, slab = sp[0], sp[2]
    if in_plane >= 0.7:
        return "3"
    return "1" if slab >= 2.0 else "2"


def subject_series(name: str) -> str:
    """'sub-101' -> 'sub-1NN' (the hundreds of the subject number); '' otherwise."""
    m = re.match(r"^sub-(\d+)$", name)
    if not m or len(m.group(1)) < 3:
        return ""
    return f"sub-{m.group(1)[:-2]}NN"
