"""Training data: cached synthetic cases, the annotator's BIDS export, VALDO-style BIDS.

Every source yields *cases*: dicts of arrays on the model grid ([k, j, i]) with keys
``image`` (float32, preprocessed by `CMBLib.detection.preprocess.preprocess`), ``cmb``
(instance labels), ``brain`` (bool), ``mimic`` (mimic type ids, zeros for real data) and
``name``.  Folders of real data are preprocessed once and cached as ``.npz`` next to the
cache of synthetic cases, so training runs on the same format whatever the source.

Layouts read without conversion:

* annotator export (issue 6): ``<root>/sub-<id>[/ses-<s>]/anat/<image>.nii.gz`` and
  ``<root>/derivatives/<name>/sub-<id>/.../anat/*desc-cmb_dseg.nii.gz``;
* VALDO: ``<root>/sub-XXX/sub-XXX_space-T2S_desc-masked_T2S.nii.gz`` with
  ``sub-XXX_space-T2S_CMB.nii.gz`` (searched recursively).
"""
import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from CMBLib.errors import CMBError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


def _strip(name: str) -> str:
    for s in IMAGE_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


def annotator_pairs(root) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of the annotator's BIDS-derivatives export under `root`."""
    root = Path(root)
    pairs = []
    for mask in sorted(root.glob("derivatives/*/sub-*/**/anat/*desc-cmb_dseg.nii.gz")):
        rel = mask.relative_to(root / "derivatives" / mask.relative_to(root / "derivatives").parts[0])
        anat = root / rel.parent
        key = mask.name.split("_desc-cmb_dseg")[0]
        # image: same entities up to the suffix (e.g. sub-01_T2starw.nii.gz), in the raw anat folder
        candidates = [p for p in sorted(anat.glob(key.split("_space-")[0] + "*")) if _strip(p.name) != _strip(mask.name)
                      and p.name.endswith(IMAGE_SUFFIXES)]
        if not candidates:
            candidates = [p for p in sorted(anat.glob("*")) if p.name.endswith(IMAGE_SUFFIXES)]
        if candidates:
            pairs.append((candidates[0], mask))
    return pairs


def valdo_pairs(root) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a VALDO-style folder (``*_space-T2S_desc-masked_T2S`` + ``*_space-T2S_CMB``)."""
    pairs = []
    for img in sorted(Path(root).rglob("*_space-T2S_desc-masked_T2S.nii*")):
        sub = img.name.split("_space-T2S")[0]
        masks = sorted(img.parent.glob(sub + "_space-T2S_CMB.nii*"))
        if masks:
            pairs.append((img, masks[0]))
    return pairs


def find_pairs(root, layout: str = "auto") -> list[tuple[Path, Path]]:
    """Pairs from `root` for layout 'annotator', 'valdo' or 'auto' (whichever finds some)."""
    if layout in ("annotator", "auto"):
        p = annotator_pairs(root)
        if p or layout == "annotator":
            return p
    return valdo_pairs(root)


def preprocess_pair(image_path, mask_path, spacing, polarity="dark") -> dict[str, np.ndarray]:
    """Read and preprocess one real (image, mask) pair onto the model grid."""
    from CMBLib.detection.preprocess import preprocess, resample_to
    from CMBLib.geometry import geometry_difference
    from CMBLib.io import read_volume

    img = read_volume(image_path)
    mask = read_volume(mask_path)
    if geometry_difference(img, mask, tol_mm=0.01):
        raise CMBError(f"{mask_path}: mask grid differs from the image {image_path}")
    pre = preprocess(img, spacing, polarity)
    # labels: any overlap with a model voxel counts (linear interpolation of the binary mask)
    frac = resample_to(mask.with_array((np.asarray(mask.array) > 0).astype(np.float32)), pre.grid,
                       pre.grid.shape_ijk, order=1)
    from scipy import ndimage as ndi

    cmb, _ = ndi.label(frac >= 0.25)
    return {"image": pre.array, "cmb": cmb.astype(np.uint8), "brain": pre.brain_mask,
            "mimic": np.zeros(pre.array.shape, np.uint8)}


def cache_real_folder(root, cache_dir, spacing, layout="auto", polarity="dark") -> list[Path]:
    """Preprocess every pair under `root` into `cache_dir` (skips those already there)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    pairs = find_pairs(root, layout)
    if not pairs:
        raise CMBError(f"{root}: no image/mask pairs found (layout {layout!r})")
    for img, mask in pairs:
        tag = hashlib.sha1(f"{img}|{mask}|{list(spacing)}|{polarity}".encode()).hexdigest()[:10]
        path = cache_dir / f"{_strip(img.name)}_{tag}.npz"
        if not path.exists():
            arrays = preprocess_pair(img, mask, spacing, polarity)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, image=arrays["image"].astype(np.float16), cmb=arrays["cmb"],
                                brain=arrays["brain"], mimic=arrays["mimic"])
            tmp.replace(path)
        out.append(path)
    return out


class CaseStore:
    """Cases from ``.npz`` files in folders, loaded lazily and kept in a small LRU cache.

    `refresh()` re-scans the folders (a cache still being generated grows while training).
    spacing: the model grid (i, j, k mm) the training runs on; a case whose ``.json`` (written
    by `training.generate_cache`) gives another grid spacing is refused when loaded (a cache
    made for another model grid would silently train on the wrong scale).
    """

    def __init__(self, folders: Sequence, max_in_memory: int = 48, pattern: str = "*.npz",
                 spacing: Optional[Sequence[float]] = None):
        self.folders = [Path(f) for f in folders]
        self.spacing = None if spacing is None else [float(v) for v in spacing]
        self.pattern = pattern
        self.max_in_memory = int(max_in_memory)
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self.paths: list[Path] = []
        self.refresh()

    def refresh(self) -> int:
        paths = []
        for f in self.folders:
            paths += [p for p in sorted(f.glob(self.pattern)) if not p.name.endswith(".tmp.npz")]
        self.paths = paths
        return len(paths)

    def __len__(self):
        return len(self.paths)

    def load(self, i: int) -> dict:
        from .sampling import case_indices

        p = self.paths[i]
        key = str(p)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        self._check_spacing(p)
        with np.load(p, allow_pickle=False) as d:
            case = {k: d[k] for k in d.files}
        case["image"] = case["image"].astype(np.float32)
        case.setdefault("mimic", np.zeros(case["cmb"].shape, np.uint8))
        case.setdefault("brain", np.ones(case["cmb"].shape, bool))
        case["name"] = p.stem
        case["indices"] = case_indices(case, rng=i)
        self._cache[key] = case
        while len(self._cache) > self.max_in_memory:
            self._cache.popitem(last=False)
        return case

    def _check_spacing(self, path: Path) -> None:
        """CMBError when `path`'s sidecar .json gives a grid spacing other than `self.spacing`."""
        side = path.with_suffix(".json")
        if self.spacing is None or not side.is_file():
            return
        import json

        grid = json.loads(side.read_text(encoding="utf-8")).get("grid") or {}
        sp = grid.get("spacing")
        if sp is not None and not np.allclose(sp, self.spacing, atol=1e-3):
            raise CMBError(f"cached case {path.name} is on a {' x '.join(f'{v:g}' for v in sp)} mm grid, but the "
                           f"model grid (spacing_mm) is {' x '.join(f'{v:g}' for v in self.spacing)} mm; "
                           "use a cache made with training.generate_cache --spacing for this grid")

    def random_case(self, rng: random.Random) -> dict:
        if not self.paths:
            raise CMBError(f"no training cases in {', '.join(str(f) for f in self.folders)}")
        # prefer cases already in memory half of the time (cheap), otherwise any case
        if self._cache and rng.random() < 0.5:
            key = rng.choice(list(self._cache))
            return self._cache[key]
        return self.load(rng.randrange(len(self.paths)))


def case_groups(config: dict, spacing) -> tuple[list[Path], list[Path]]:
    """(training folders, validation folders) from the `data` section of a config."""
    data = config.get("data", {})
    train = [Path(p) for p in data.get("train_dirs", [])]
    val = [Path(p) for p in data.get("val_dirs", [])]
    for src in data.get("real", []) or []:
        root = Path(src["root"])
        cache = Path(src.get("cache", Path(config.get("out", "training/runs/run")) / "real_cache" / root.name))
        cache_real_folder(root, cache, spacing, src.get("layout", "auto"), src.get("polarity", "dark"))
        (val if src.get("split") == "val" else train).append(cache)
    return train, val


def load_val_cases(folders: Sequence, limit: Optional[int] = None) -> list[dict]:
    store = CaseStore(folders, max_in_memory=10 ** 6)
    n = len(store) if limit is None else min(limit, len(store))
    return [store.load(i) for i in range(n)]
