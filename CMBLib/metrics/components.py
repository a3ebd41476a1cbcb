"""CMB elements of a mask: connected components (or label values) with their centres in mm.

An *element* is one CMB as the evaluator sees it.  By default (``elements="components"``)
the mask is binarised and split into connected components, as the official VALDO
challenge scorer does (WhereIsValdo/valdo-eval-2021,
``evaluation_comparison/pairwise_measures.py``: ``ndimage.label`` with
``generate_binary_structure(3, 3)``, i.e. 26-connectivity, on the binarised maps).
Components are numbered in the scorer's order too: it labels nibabel arrays, indexed
[i, j, k], so numbering follows the first voxel in (i, j, k) order; this only decides
ties between equally distant elements.  With ``elements="labels"`` each distinct
non-zero value of an instance map is one element, even when it touches another or is
split in pieces.

Binarisation as in that scorer: a prediction probability map (floating-point values in
[0, 1] that are not all integers) is kept where ``>= threshold`` (0.5); a reference is
rounded (``np.around``) and kept where non-zero; integer label maps where non-zero.

Arrays are indexed [k, j, i]; centres are given as voxel indices (i, j, k) and as
RAS mm through the grid's ``ijk_to_ras`` matrix, so distances are physical
(anisotropic spacing handled).
"""
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from ..errors import CMBError
from ..geometry import bombs_size_class, equivalent_diameter_mm

ELEMENT_MODES = ("components", "labels")


@dataclass
class Element:
    """One CMB (reference or predicted) with its size, centre and optional score."""

    index: int                 # 1-based element number within its mask
    label: int                 # most frequent original label value inside the element
    voxel_count: int
    volume_mm3: float
    diameter_mm: float         # equivalent-sphere diameter
    size_class: str            # BOMBS: '<5mm', '5-10mm', '>10mm'
    centre_ijk: tuple[float, float, float]   # fractional voxel index (i, j, k)
    centre_ras: tuple[float, float, float]   # RAS mm
    score: Optional[float] = None            # e.g. max probability (predictions)
    location: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def structure(connectivity: int) -> np.ndarray:
    """3x3x3 neighbourhood for 6- (faces) or 26- (faces, edges, corners) connectivity."""
    if connectivity == 6:
        return ndimage.generate_binary_structure(3, 1)
    if connectivity == 26:
        return ndimage.generate_binary_structure(3, 3)
    if connectivity == 18:
        return ndimage.generate_binary_structure(3, 2)
    raise CMBError(f"connectivity must be 6, 18 or 26 (got {connectivity})")


def is_probability_map(array: np.ndarray) -> bool:
    """True for a floating-point map with non-integer values (a probability map)."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        return False
    return bool(np.any(a != np.round(a)))


def foreground(array: np.ndarray, threshold: float = 0.5, name: str = "mask",
               reference: bool = False) -> np.ndarray:
    """Boolean CMB voxels: probability >= threshold for probability maps, else value != 0.

    A `reference` float map is rounded to one decimal first, as the VALDO scorer does
    (``np.around(ref, decimals=1)``): 0.5 (raters disagreeing) is a CMB voxel, a
    compression error below 0.05 is not.
    """
    a = np.asarray(array)
    if a.ndim != 3:
        raise CMBError(f"{name}: has {a.ndim} dimensions; a 3D mask is needed")
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise CMBError(f"{name}: contains NaN or infinite values")
        if reference:
            rounded = np.around(a, decimals=1)
            if rounded.min() < 0:
                raise CMBError(f"{name}: has negative labels")
            return rounded != 0
        if is_probability_map(a):
            if a.min() < 0 or a.max() > 1:
                raise CMBError(f"{name}: non-integer values outside [0, 1]; "
                               "expected a label map or a probability map")
            return a >= threshold
    if a.min() < 0:
        raise CMBError(f"{name}: has negative labels")
    return a != 0


def label_elements(array: np.ndarray, connectivity: int = 26, elements: str = "components",
                   threshold: float = 0.5, name: str = "mask", reference: bool = False) -> tuple[np.ndarray, int]:
    """Number the elements 1..n: returns (int32 array [k, j, i], n)."""
    mask = foreground(array, threshold, name, reference)
    if elements == "components":
        struct = structure(connectivity)
        box = _bounding_box(mask)
        if box is None:
            return np.zeros(mask.shape, np.int32), 0
        labelled = np.zeros(mask.shape, np.int32)
        crop, n = ndimage.label(mask[box], structure=struct)
        crop = _renumber_ijk_order(crop, int(n))
        if crop.shape == mask.shape:
            return crop, int(n)
        labelled[box] = crop
        return labelled, int(n)
    if elements == "labels":
        a = np.asarray(array)
        values = np.ones(int(mask.sum()), np.int64) if a.dtype == np.bool_ else np.round(a[mask]).astype(np.int64)
        ids, inverse = np.unique(values, return_inverse=True)
        labelled = np.zeros(mask.shape, np.int32)
        labelled[mask] = inverse.ravel() + 1
        return labelled, int(ids.size)
    raise CMBError(f"elements must be one of {', '.join(ELEMENT_MODES)} (got {elements!r})")


def describe_elements(labelled: np.ndarray, n: int, ijk_to_ras: np.ndarray,
                      original: Optional[np.ndarray] = None,
                      score_map: Optional[np.ndarray] = None,
                      scores: Optional[dict[int, float]] = None,
                      locations: Optional[dict[int, str]] = None) -> list[Element]:
    """Size, centre of mass (unweighted, voxel centres) and score of elements 1..n.

    `ijk_to_ras`: 4x4 voxel (i, j, k) -> RAS mm matrix.  `score_map` (same grid, e.g. a
    probability map) gives each element its maximum value; `scores` / `locations` map
    an original label value to a score / location name.
    """
    if n == 0:
        return []
    where = np.nonzero(labelled)
    lab = labelled[where]
    counts = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    centres_kji = np.stack([np.bincount(lab, weights=w, minlength=n + 1)[1:] for w in where], axis=1)
    centres_ijk = (centres_kji / counts[:, None])[:, ::-1]
    centres_ras = centres_ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
    voxel_mm3 = float(abs(np.linalg.det(ijk_to_ras[:3, :3])))
    labels = _majority_labels(lab, n, None if original is None else np.asarray(original)[where])
    maxima = None
    if score_map is not None:
        maxima = np.full(n + 1, -np.inf)
        np.maximum.at(maxima, lab, np.asarray(score_map, dtype=float)[where])
        maxima = maxima[1:]
    result = []
    for e in range(n):
        volume = float(counts[e]) * voxel_mm3
        diameter = equivalent_diameter_mm(volume)
        score = None
        if maxima is not None:
            score = float(maxima[e])
        elif scores is not None and scores.get(labels[e]) is not None:
            score = float(scores[labels[e]])
        location = locations.get(labels[e]) if locations else None
        result.append(Element(
            index=e + 1, label=labels[e], voxel_count=int(counts[e]), volume_mm3=volume,
            diameter_mm=diameter, size_class=bombs_size_class(diameter),
            centre_ijk=tuple(float(v) for v in centres_ijk[e]),
            centre_ras=tuple(float(v) for v in centres_ras[e]),
            score=score, location=location))
    return result


def _bounding_box(mask: np.ndarray):
    """Slices of the smallest box holding every True voxel, or None when there is none."""
    boxes = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
    return boxes[0] if boxes else None


def _renumber_ijk_order(labelled: np.ndarray, n: int) -> np.ndarray:
    """Renumber labels 1..n by each element's first voxel in (i, j, k) order.

    This is the numbering ``ndimage.label`` gives on the [i, j, k] (nibabel) array, as
    the VALDO scorer labels it.
    """
    if n <= 1:
        return labelled.astype(np.int32, copy=False)
    k, j, i = np.nonzero(labelled)
    lab = labelled[k, j, i]
    nk, nj, _ = labelled.shape
    key = (i.astype(np.int64) * nj + j) * nk + k
    first = np.full(n + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, lab, key)
    mapping = np.zeros(n + 1, np.int32)
    mapping[1 + np.argsort(first[1:], kind="stable")] = np.arange(1, n + 1, dtype=np.int32)
    out = labelled.astype(np.int32, copy=True)
    out[k, j, i] = mapping[lab]
    return out


def _majority_labels(lab: np.ndarray, n: int, values: Optional[np.ndarray]) -> list[int]:
    """Most frequent original (integer) value of each element's voxels; 1 for boolean or
    probability maps.  `lab`: element number of each foreground voxel, `values`: the
    original map's value there."""
    if values is None or values.dtype == np.bool_ or is_probability_map(values):
        return [1] * n
    vals = np.round(values).astype(np.int64)
    uniq_vals, val_idx = np.unique(vals, return_inverse=True)
    pairs, counts = np.unique(lab.astype(np.int64) * uniq_vals.size + val_idx.ravel(), return_counts=True)
    best = {}
    for p, c in zip(pairs.tolist(), counts.tolist()):
        e, v = divmod(p, uniq_vals.size)
        if e not in best or c > best[e][0]:
            best[e] = (c, int(uniq_vals[v]))
    return [best.get(e, (0, 1))[1] for e in range(1, n + 1)]
