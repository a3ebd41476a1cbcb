"""The one preprocessing shared by training and inference.

`preprocess(volume, target_spacing_mm, polarity)` returns the network input on the
*model grid*:

0. **Canonical voxel order**: the array is transposed / mirrored (no resampling, exact) so
   that its axes i, j, k point as close as possible to R, A, S, the order of the training
   data, except that a thick-slice scan keeps its slice axis as k whatever its plane
   (`canonical_orientation`).  The same scan stored in any slice or axis order therefore
   gives the same network input and the same findings; `to_native` undoes it.
1. **Brain mask** on the input grid (`brain_mask_from_image`, or the one given): images
   whose background is one constant value (skull-stripped, QSM) use "not background";
   others use Otsu, erosion to cut the scalp off, largest component, dilation back,
   hole filling and closing.  With ``brain_extraction="head"`` (model.json "preprocess",
   `preprocess_options`) a skull-on image gets `head_brain_mask` instead (the tissue its
   skull encloses, slice by slice; whole heads and slabs of 7-20 slices).
2. **Resample** (SimpleITK, linear) to `target_spacing_mm` (i, j, k) along the image's own
   axes (direction kept), cropped to the brain's bounding box plus a margin.
3. **Polarity**: CMBs are always **dark** for the network.  ``polarity="bright"`` (QSM,
   where CMBs are paramagnetic, bright) negates the image first.
4. **Intensity**: robust normalisation inside the brain: ``(x - p50) / (p95 - p5)``,
   clipped to [-4, 4] (dimensionless).  Outside the brain the values are kept (clipped);
   with ``outside="background"`` a skull-on image is set to 0 outside the brain before
   resampling, as skull-stripped training images are, so that the brain's edge and the
   percentiles are as theirs (p5 included the dark partial-volume rim at the edge; p5 / p95
   over the brain 1 mm in from its edge gave (p95 - p5) 0.81-1.02 x the skull-stripped
   original's on the training split of benchmarks/check_skull_on.py, over the whole found
   brain 0.88-1.03 x).  An image with a constant background gives the same network input
   with either option.

`Preprocessed.to_native(array)` maps anything computed on the model grid (a probability
map, a label map with ``order=0``) back onto the input grid.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..validation import validate_image

CLIP = 4.0
MARGIN_MM = 8.0


@dataclass
class Preprocessed:
    """Network input on the model grid; `grid` carries its geometry (RAS)."""

    array: np.ndarray          # float32 [k, j, i] on the model grid
    brain_mask: np.ndarray     # bool [k, j, i] on the model grid
    grid: Volume               # model grid geometry (its array is `array`)
    source: Volume             # input grid geometry in canonical voxel order (array dropped to a 1-voxel stub)
    source_shape: tuple        # that grid's array shape [k, j, i]
    polarity: str
    orientation: tuple = ((0, 1, 2), (False, False, False))   # `canonical_orientation` of the input

    def to_native(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Resample `array` ([k, j, i] on the model grid) onto the input grid, in the
        input's own voxel order (array shape = the input's).

        order=1: linear (probabilities); order=0: nearest neighbour (labels).
        Voxels outside the model grid get 0.
        """
        return from_canonical(self._to_canonical_native(array, order), *self.orientation)

    def _to_canonical_native(self, array: np.ndarray, order: int) -> np.ndarray:
        import SimpleITK as sitk

        from ..io import sitk_reference, volume_to_sitk

        a = np.asarray(array)
        if a.shape != self.array.shape:
            raise CMBError(f"array shape {a.shape} differs from the model grid {self.array.shape}")
        moving = volume_to_sitk(self.grid.with_array(a.astype(np.float32) if order else a))
        ref = sitk_reference(self.source, self.source_shape)
        interp = sitk.sitkLinear if order else sitk.sitkNearestNeighbor
        out = sitk.Resample(moving, ref, _tie_break(moving, order), interp, 0.0, moving.GetPixelID())
        return sitk.GetArrayFromImage(out)


def canonical_orientation(direction, spacing=None) -> tuple:
    """(axes, flips) that bring a volume with `direction` (RAS, columns = voxel axes i, j, k)
    to canonical voxel order: canonical axis c (i, j, k) is input axis ``axes[c]``, mirrored
    when ``flips[c]``.

    Thick-slice scans (`spacing` (i, j, k) mm given, the thickest axis more than 1.2 x the
    next): the slice axis stays k, as in the axial training data, whatever the plane
    (a sagittal or coronal T2* keeps its 4 mm axis through-plane); the two in-plane axes
    become i and j in the order of the R, A, S axis each is closest to.  Otherwise `axes`
    maximises the summed |cosines| between the chosen axes and R, A, S.  Each canonical
    axis is mirrored to point along + of the R / A / S axis it is closest to.  Either way
    the result does not depend on the storage order (slice order, mirrored or swapped axes).
    """
    from itertools import permutations

    signed = np.asarray(direction, dtype=float).reshape(3, 3)
    d = np.abs(signed)
    row = [int(np.argmax(d[:, a])) for a in range(3)]          # the R/A/S axis each voxel axis is closest to
    sp = None if spacing is None else np.asarray(spacing, dtype=float)
    ordered = None if sp is None else np.sort(sp)
    if ordered is not None and ordered[2] > 1.2 * ordered[1]:
        thick = int(np.argmax(sp))
        plane = sorted((a for a in range(3) if a != thick), key=lambda a: (row[a], -d[row[a], a]))
        axes = (plane[0], plane[1], thick)
    else:
        axes = max(permutations(range(3)), key=lambda p: (round(float(sum(d[c, p[c]] for c in range(3))), 9)))
    flips = tuple(bool(signed[row[a], a] < 0) for a in axes)
    return tuple(int(a) for a in axes), flips


def to_canonical(array: np.ndarray, axes, flips) -> np.ndarray:
    """Array [k, j, i] in the input's order -> canonical order (see `canonical_orientation`)."""
    out = np.transpose(np.asarray(array), [2 - axes[2], 2 - axes[1], 2 - axes[0]])
    flip_axes = [2 - c for c in range(3) if flips[c]]
    return np.ascontiguousarray(np.flip(out, flip_axes) if flip_axes else out)


def from_canonical(array: np.ndarray, axes, flips) -> np.ndarray:
    """Inverse of `to_canonical`."""
    flip_axes = [2 - c for c in range(3) if flips[c]]
    a = np.flip(np.asarray(array), flip_axes) if flip_axes else np.asarray(array)
    return np.ascontiguousarray(np.transpose(a, np.argsort([2 - axes[2], 2 - axes[1], 2 - axes[0]])))


def canonical_volume(volume: Volume) -> tuple:
    """(volume in canonical voxel order, (axes, flips)): same voxels at the same world positions.

    The origin is rounded to 1e-5 mm so that a scan and its mirrored copy (whose origins
    differ by float rounding) give bit-identical canonical geometry.
    """
    axes, flips = canonical_orientation(volume.direction, volume.spacing)
    sp = np.asarray(volume.spacing, float)
    d = np.asarray(volume.direction, float)
    n = np.asarray(volume.shape_ijk)
    first = np.array([n[a] - 1 if f else 0 for a, f in zip(axes, flips)], float)  # canonical index 0, input ijk
    corner = np.zeros(3)
    corner[list(axes)] = first
    origin = np.round(volume.voxel_to_ras(corner), 5)
    direction = np.stack([d[:, a] * (-1.0 if f else 1.0) for a, f in zip(axes, flips)], axis=1)
    spacing = tuple(float(sp[a]) for a in axes)
    return Volume(to_canonical(volume.array, axes, flips), spacing, tuple(float(o) for o in origin),
                  direction), (axes, flips)


def brain_mask_from_image(volume: Volume, work_mm: float = 2.0) -> np.ndarray:
    """A robust brain (or head) mask, bool [k, j, i] on the volume's grid.

    Works on skull-stripped or whole-head SWI / T2* magnitude and on QSM maps.  The
    morphology runs on a copy block-averaged to about `work_mm` voxels (fast on 0.5 mm
    or 1 mm whole-brain images); the result is brought back by nearest neighbour.
    """
    from scipy import ndimage as ndi

    full = np.asarray(volume.array, dtype=np.float32)
    sp_full = np.asarray(volume.spacing, dtype=float)[::-1]  # k, j, i
    vals, counts = np.unique(full[:: max(1, full.shape[0] // 16)], return_counts=True)
    mode = vals[np.argmax(counts)]
    frac_mode = counts.max() / max(1, counts.sum())
    f = np.maximum(1, np.floor(work_mm / sp_full)).astype(int)
    sp = sp_full * f
    if frac_mode > 0.05:
        # constant background (skull-stripped or QSM): everything else is brain
        mask = _block_reduce(full != mode, f, np.max)
    else:
        from skimage.filters import threshold_otsu

        a = _block_reduce(full, f, np.mean)
        sm = ndi.gaussian_filter(a, sigma=np.maximum(0.5, 1.0 / sp))
        lo, hi = np.percentile(sm, [0.5, 99.5])
        t = threshold_otsu(np.clip(sm, lo, hi))
        mask = sm > t * 0.7
        # no closing or hole filling yet: they would bridge a thin dark skull to the scalp
        mask = _erode(mask, 4.0, sp)
        mask = _largest_component(mask)
        mask = _dilate(mask, 4.0, sp)
        mask = _fill_holes(mask)
        mask = _erode(_dilate(mask, 2.0, sp), 2.0, sp)
    mask = _largest_component(mask)
    mask = _fill_holes(mask)
    if np.any(f > 1):
        mask = np.repeat(np.repeat(np.repeat(mask, f[0], 0), f[1], 1), f[2], 2)
        pad = [(0, max(0, n - m)) for n, m in zip(full.shape, mask.shape)]
        mask = np.pad(mask, pad, mode="edge")[: full.shape[0], : full.shape[1], : full.shape[2]]
        if frac_mode > 0.05:  # the exact border of a skull-stripped / QSM image
            mask = ndi.binary_fill_holes(mask & (full != mode))
    if mask.sum() < 0.01 * mask.size:  # give up gracefully: use everything
        mask = np.ones_like(mask, dtype=bool)
    return mask


def has_constant_background(volume: Volume) -> tuple:
    """(True, value) when more than 5 % of the voxels share one value (a skull-stripped or
    masked image, QSM), else (False, None)."""
    full = np.asarray(volume.array)
    vals, counts = np.unique(full[:: max(1, full.shape[0] // 16)], return_counts=True)
    frac = counts.max() / max(1, counts.sum())
    return (bool(frac > 0.05), float(vals[np.argmax(counts)]) if frac > 0.05 else None)


def head_brain_mask(volume: Volume, work_mm: float = 1.5, dark: float = 0.45, valley: float = 0.35,
                    gap_mm: float = 1.0, erode_mm: float = 2.5, seed_mm: float = 4.0, trim: bool = True,
                    _steps: Optional[dict] = None) -> np.ndarray:
    """The brain of a whole-head (skull-on) T2* / SWI magnitude image, bool [k, j, i].

    Images with a constant background (skull-stripped, masked, QSM) get
    `brain_mask_from_image`'s mask.  Otherwise, on a copy block-averaged to about `work_mm`
    in plane (slices kept; k taken as S-I, as `canonical_volume` makes it):

    1. the head: above half the Otsu threshold, holes filled per slice, largest component;
       its depth (3D distance to the air on a 3 mm copy, the first and last slices
       continued: a slab of 7 slices is not all "border");
    2. the brain's level: median of the head deeper than 20 mm (the deepest third when
       the head is small);
    3. dark: below `dark` x that level (skull, air; also veins, iron and CMBs) or a thin
       valley `valley` x that level below its surroundings within 2 mm (a 1 mm skull table
       between CSF and a bright diploe), on a block-minimum copy so thin dark lines survive;
    4. per slice (the skull encloses the brain in every axial slice, while in 3D the neck
       and the cord connect it to the outside): not dark = more than `gap_mm` from dark;
       reached from the head's outline without crossing dark = scalp, fat, muscle, eyes,
       neck; the rest, reconstructed from its parts deeper than `seed_mm` (the diploe, a
       thin ring between the two tables, has none) = brain.  A slice whose brain leaves
       most of its deep head uncovered (a gap in the skull let the outside in) is redone
       with gaps of 2 and 3 x `gap_mm` closed, kept when what it adds lies mostly on its
       neighbours' brain; one still open takes what its two neighbours share;
    5. 3D: eroded by `erode_mm`, the largest component plus components of at least a fifth
       of its size (brain pieces a slab cuts apart), grown back within the brain; holes
       filled in 3D and per slice (the dark structures inside the brain), a 2 mm closing
       (a 4 mm closing of the notches not as dark as bone, to keep CMBs at the cortex, added
       false positives on veins at the brain's edge on the training split: not used);
       with `trim`, voxels within 4 mm of its edge brighter than 99 % of its core (3 mm in)
       removed: the CSF between brain and skull, which a skull-stripped image does not have.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    const, _ = has_constant_background(volume)
    if const:
        return brain_mask_from_image(volume)
    full = np.asarray(volume.array, dtype=np.float32)
    sp_full = np.asarray(volume.spacing, dtype=float)[::-1]  # k, j, i
    f = np.maximum(1, np.round(work_mm / sp_full)).astype(int)
    f[0] = 1
    fine = ndi.gaussian_filter(full, sigma=np.r_[0.0, np.maximum(0.0, 0.4 / sp_full[1:])])
    a = _block_reduce(fine, f, np.mean)
    dk = _block_reduce(fine, f, np.min) if np.any(f > 1) else a
    sp = sp_full * f
    lo, hi = np.percentile(a, [0.5, 99.5])
    head = _fill_holes_2d(_largest_component(_fill_holes_2d(a > 0.5 * threshold_otsu(np.clip(a, lo, hi)))))
    if head.sum() < 0.01 * head.size:
        return brain_mask_from_image(volume)
    depth = _depth(head, sp)
    deep = depth > 20.0
    if deep.sum() < 0.02 * head.sum():
        deep = head & (depth >= np.percentile(depth[head], 67))
    level = float(np.median(a[deep]))
    closed = ndi.grey_closing(dk, footprint=_disk(2.0, sp))
    dark_mask = (dk < dark * level) | (closed - dk > valley * level)
    band = head & ~_morph2d(head, 3.0, sp, "erode")              # within 3 mm of the air
    deep15 = head & (depth > 15.0)
    tries = []
    for g in (gap_mm, 2 * gap_mm, 3 * gap_mm):
        open_ = head & ~_morph2d(dark_mask, g, sp, "dilate")
        b = _enclosed_2d(open_, band, seed_mm, sp)
        n_deep = deep15.sum(axis=(1, 2))
        cover = (b & deep15).sum(axis=(1, 2)) / np.maximum(n_deep, 1)
        tries.append((b, open_, (n_deep > 0) & (cover < 0.5)))
    brain, open1, leaked = tries[0][0].copy(), tries[0][1], tries[0][2].copy()
    for b, _, bad in tries[1:]:     # a slice that leaked: the first larger gap that holds, if what
        for k in np.flatnonzero(leaked & ~bad):     # it adds lies mostly on its neighbours' brain
            nb = brain[max(0, k - 1)] | brain[min(len(brain) - 1, k + 1)]
            new = b[k] & ~brain[k]
            if (new & nb).sum() >= 0.5 * new.sum():
                brain[k] = b[k]
                leaked[k] = False
    for k in np.flatnonzero(leaked):       # still open: its neighbours' brain, where not dark
        if 0 < k < len(brain) - 1 and not (leaked[k - 1] or leaked[k + 1]):
            brain[k] |= brain[k - 1] & brain[k + 1] & open1[k]
    lab, n = ndi.label(_morph3d(brain, erode_mm, sp, "erode"))
    if n == 0:
        return brain_mask_from_image(volume)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    chosen = np.isin(lab, np.flatnonzero(sizes >= 0.2 * sizes.max()))
    mask = (_morph3d(chosen, erode_mm + gap_mm, sp, "dilate") & brain) | chosen
    mask = _fill_holes(ndi.binary_fill_holes(mask))
    mask = _fill_holes(_morph3d(_morph3d(mask, 2.0, sp, "dilate"), 2.0, sp, "erode") | mask) & head
    core = _morph3d(mask, 3.0, sp, "erode")
    if core.any() and trim:  # the CSF between brain and skull: brighter than 99 % of the brain
        rim = mask & ~_morph2d(mask, 4.0, sp, "erode")
        mask = _fill_holes(ndi.binary_fill_holes(mask & ~(rim & (a > np.percentile(a[core], 99)))))
    if _steps is not None:
        _steps.update(sm=a, head=head, depth=depth, dark=dark_mask, inner=brain, chosen=chosen, mask=mask,
                      level=level, f=f, leaked=leaked)
    if np.any(f > 1):
        mask = np.repeat(np.repeat(np.repeat(mask, f[0], 0), f[1], 1), f[2], 2)
        pad = [(0, max(0, n - m)) for n, m in zip(full.shape, mask.shape)]
        mask = np.pad(mask, pad, mode="edge")[: full.shape[0], : full.shape[1], : full.shape[2]]
    if mask.sum() < 0.002 * mask.size:
        return brain_mask_from_image(volume)
    return mask


def _depth(head: np.ndarray, sp_kji, work_mm: float = 3.0) -> np.ndarray:
    """3D distance (mm) of each head voxel to the air, on a ~`work_mm` copy, the first and
    last slices continued (a slab's cut faces are not air)."""
    from scipy import ndimage as ndi

    f = np.maximum(1, np.round(work_mm / np.asarray(sp_kji))).astype(int)
    c = _block_reduce(head.astype(np.float32), f, np.mean) > 0.5
    sp = np.asarray(sp_kji) * f
    n = int(np.ceil(40.0 / sp[0]))
    padded = np.pad(np.pad(c, ((n, n), (0, 0), (0, 0)), mode="edge"), ((0, 0), (1, 1), (1, 1)))
    d = ndi.distance_transform_edt(padded, sampling=sp)[n:-n, 1:-1, 1:-1].astype(np.float32)
    d = np.repeat(np.repeat(np.repeat(d, f[0], 0), f[1], 1), f[2], 2)
    pad = [(0, max(0, a - b)) for a, b in zip(head.shape, d.shape)]
    return np.pad(d, pad, mode="edge")[: head.shape[0], : head.shape[1], : head.shape[2]] * head


def _disk(r_mm: float, sp_kji) -> np.ndarray:
    """An in-plane elliptic disk footprint of radius `r_mm`, shape (1, 2rj+1, 2ri+1)."""
    r = np.maximum(1, np.round(r_mm / np.asarray(sp_kji[1:]))).astype(int)
    j, i = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1]
    return ((j / r[0]) ** 2 + (i / r[1]) ** 2 <= 1.0)[None]


_SQUARE_2D = np.zeros((3, 3, 3), bool)
_SQUARE_2D[1] = True
_CROSS_2D = np.zeros((3, 3, 3), bool)
_CROSS_2D[1, 1, :] = _CROSS_2D[1, :, 1] = True
_STRUCT_2D = _SQUARE_2D
_LINE_K = np.zeros((3, 3, 3), bool)
_LINE_K[:, 1, 1] = True


def _morph2d(mask: np.ndarray, r_mm: float, sp_kji, op: str) -> np.ndarray:
    """In-plane erosion / dilation by an octagon of about `r_mm` (alternating 3 x 3 square
    and cross steps); the volume's edges count as outside for erosion."""
    from scipy import ndimage as ndi

    n = int(round(r_mm / float(min(sp_kji[1:]))))
    fn = ndi.binary_erosion if op == "erode" else ndi.binary_dilation
    out = mask
    for step in range(n):
        out = fn(out, structure=_SQUARE_2D if step % 2 == 0 else _CROSS_2D)
    return out


def _morph3d(mask: np.ndarray, r_mm: float, sp_kji, op: str) -> np.ndarray:
    """3D erosion / dilation by an octagonal prism of about `r_mm` (in plane as `_morph2d`,
    along k by whole slices); the first and last slices continued (slabs)."""
    from scipy import ndimage as ndi

    nk = int(round(r_mm / float(sp_kji[0])))
    out = _morph2d(mask, r_mm, sp_kji, op)
    if nk:
        padded = np.pad(out, ((nk, nk), (0, 0), (0, 0)), mode="edge")
        fn = ndi.binary_erosion if op == "erode" else ndi.binary_dilation
        out = fn(padded, structure=_LINE_K, iterations=nk)[nk:-nk]
    return out


def _enclosed_2d(open_, band, seed_mm, sp_kji) -> np.ndarray:
    """Per slice: what the skull encloses.  `open_`: not dark; reached from `band` (the
    head's outline) without crossing dark = outside the skull; the rest, reconstructed
    from its parts deeper than `seed_mm` (so the diploe, a thin ring between the two
    tables, is left out)."""

    inner = open_ & ~_reached_2d(open_, open_ & band)
    return _reached_2d(inner, _morph2d(inner, seed_mm, sp_kji, "erode"))


def _reached_2d(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The in-plane components of `mask` (per slice) that hold a voxel of `seeds`."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask, structure=_SQUARE_2D)
    hit = np.zeros(n + 1, bool)
    hit[np.unique(lab[seeds & mask])] = True
    hit[0] = False
    return hit[lab]


def _fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    out = np.empty_like(mask, dtype=bool)
    for k in range(mask.shape[0]):
        out[k] = ndi.binary_fill_holes(mask[k])
    return out


def _block_reduce(a: np.ndarray, f, func) -> np.ndarray:
    """`func` over f[0] x f[1] x f[2] blocks (skimage.measure.block_reduce); the partial blocks at
    the far edges are dropped rather than padded, so no padding value leaks into a mean."""
    from skimage.measure import block_reduce

    n = [s // k for s, k in zip(a.shape, f)]
    if min(n) < 1:
        return a
    return block_reduce(a[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]], tuple(int(k) for k in f), func)


def _erode(mask: np.ndarray, r_mm: float, spacing_kji) -> np.ndarray:
    """Erosion by a ball of radius r_mm (distance transform; the volume border counts as outside)."""
    from scipy import ndimage as ndi

    padded = np.pad(mask, 1)
    d = ndi.distance_transform_edt(padded, sampling=spacing_kji)[1:-1, 1:-1, 1:-1]
    return d > r_mm


def _dilate(mask: np.ndarray, r_mm: float, spacing_kji) -> np.ndarray:
    from scipy import ndimage as ndi

    if not mask.any():
        return mask
    return ndi.distance_transform_edt(~mask, sampling=spacing_kji) <= r_mm


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    mask = ndi.binary_fill_holes(mask)
    for k in range(mask.shape[0]):  # 2D per slice: closes holes open at the top/bottom
        mask[k] = ndi.binary_fill_holes(mask[k])
    return mask


def normalise(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - p50) / (p95 - p5) inside `mask`, clipped to [-CLIP, CLIP], float32."""
    vals = array[mask] if mask.any() else array.ravel()
    p5, p50, p95 = np.percentile(vals, [5, 50, 95])
    scale = float(p95 - p5)
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.std(vals)) or 1.0
    out = (array.astype(np.float32) - np.float32(p50)) / np.float32(scale)
    return np.clip(out, -CLIP, CLIP).astype(np.float32)


def model_grid(volume: Volume, target_spacing_mm: Sequence[float], mask: Optional[np.ndarray] = None,
               margin_mm: float = MARGIN_MM) -> Volume:
    """Geometry of the model grid: the input's axes at `target_spacing_mm`, covering the
    bounding box of `mask` (or the whole input) plus `margin_mm`.  Array: zeros of the grid's shape."""
    sp_in = np.asarray(volume.spacing, dtype=float)
    sp_out = np.asarray(target_spacing_mm, dtype=float)
    shape_ijk = np.asarray(volume.shape_ijk)
    if mask is not None and mask.any():
        idx = np.argwhere(mask)  # k, j, i
        lo = idx.min(axis=0)[::-1].astype(float)
        hi = idx.max(axis=0)[::-1].astype(float)
        pad = margin_mm / sp_in
        lo = np.maximum(lo - pad, -0.5)
        hi = np.minimum(hi + pad, shape_ijk - 0.5)
    else:
        lo = np.full(3, -0.5)
        hi = shape_ijk - 0.5
    extent = (hi - lo) * sp_in  # mm along i, j, k (voxel edges)
    n = np.maximum(1, np.ceil(extent / sp_out - 1e-6)).astype(int)
    # first output voxel centre: edge + half an output voxel (in input index units)
    start_idx = lo + 0.5 * sp_out / sp_in
    origin = volume.voxel_to_ras(start_idx)
    return Volume(np.zeros(tuple(n[::-1]), np.uint8), tuple(sp_out), tuple(origin), volume.direction.copy())


def resample_to(volume: Volume, grid: Volume, shape_ijk, order: int = 1, default: float = 0.0) -> np.ndarray:
    """Resample `volume` onto `grid` geometry of size `shape_ijk`; array [k, j, i]."""
    import SimpleITK as sitk

    from ..io import sitk_reference, volume_to_sitk

    a = np.asarray(volume.array)
    if order:
        a = a.astype(np.float32)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8)
    img = volume_to_sitk(volume.with_array(a))
    ref = sitk_reference(grid, tuple(int(n) for n in shape_ijk)[::-1])
    interp = sitk.sitkLinear if order else sitk.sitkNearestNeighbor
    out = sitk.Resample(img, ref, _tie_break(img, order), interp, float(default), img.GetPixelID())
    return sitk.GetArrayFromImage(out)


TIE_BREAK_VOXELS = 1e-3


def _tie_break(image, order: int):
    """The transform for sitk.Resample: identity, or for nearest neighbour (order 0) a shift by
    TIE_BREAK_VOXELS of `image`'s voxel along each of its axes.  A cropped model grid often puts
    a sample exactly half-way between two voxels; without the shift float rounding decides
    (differently for the same scan stored with another voxel order or read from NIfTI float32
    geometry), with it the tie always goes to the next voxel up."""
    import SimpleITK as sitk

    if order:
        return sitk.Transform()
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    shift = d @ (np.asarray(image.GetSpacing(), float) * TIE_BREAK_VOXELS)
    return sitk.TranslationTransform(3, [float(v) for v in shift])


OPTIONS = {"brain_extraction": ("classic", "head"), "outside": ("keep", "background")}
# detect(skull_on=...): True / False override the model's options; None keeps them
SKULL_ON = {True: {"brain_extraction": "head", "outside": "background"},
            False: {"brain_extraction": "classic", "outside": "keep"}}


def preprocess_options(meta: Optional[dict] = None, **override) -> dict:
    """The preprocessing options of a model (model.json ``"preprocess"``), checked, with
    `override` (None values ignored) on top; absent keys take the first value of `OPTIONS`
    (the preprocessing every model before cmb-default 0.3.3 was trained and measured with)."""
    given = dict((meta or {}).get("preprocess") or {})
    given.update({k: v for k, v in override.items() if v is not None})
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise CMBError(f"unknown preprocessing option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    out = {}
    for key, allowed in OPTIONS.items():
        value = str(given.get(key, allowed[0]))
        if value not in allowed:
            raise CMBError(f"preprocessing option {key} must be one of {', '.join(allowed)}, not {value!r}")
        out[key] = value
    return out


def preprocess(volume: Volume, target_spacing_mm: Sequence[float] = (1.0, 1.0, 2.0), polarity: str = "dark",
               brain_mask=None, crop: bool = True, brain_extraction: str = "classic",
               outside: str = "keep") -> Preprocessed:
    """Resample, mask, flip and normalise `volume` for the network (see module docstring).

    target_spacing_mm: model spacing (i, j, k) in mm.  polarity: "dark" (SWI, T2*: CMBs
    hypointense) or "bright" (QSM: CMBs hyperintense).  brain_mask: optional Volume or
    array on the input grid (non-zero = brain).  brain_extraction: "classic"
    (`brain_mask_from_image`) or "head" (`head_brain_mask`, for skull-on images; the same
    mask where the background is constant).  outside: "keep" the voxels outside the brain
    mask, or, for an image without a constant background (skull on), set them to the
    "background" 0 first, so that it reaches the network as skull-stripped as the training
    data (a skull-stripped or masked image is left as it is).  Both options are read from
    model.json (`preprocess_options`).
    """
    if polarity not in ("dark", "bright"):
        raise CMBError(f"polarity must be 'dark' or 'bright', not {polarity!r}")
    preprocess_options(brain_extraction=brain_extraction, outside=outside)   # checked
    validate_image(volume, "image")
    if brain_mask is not None:
        m = brain_mask.array if isinstance(brain_mask, Volume) else brain_mask
        m = np.asarray(m)
        if m.shape != volume.array.shape:
            raise CMBError(f"brain mask shape {m.shape} differs from the image {volume.array.shape}")
        if not m.any():
            raise CMBError("brain mask is empty")
    volume, orientation = canonical_volume(volume)
    if brain_mask is None:
        mask_in = head_brain_mask(volume) if brain_extraction == "head" else brain_mask_from_image(volume)
    else:
        mask_in = to_canonical(m != 0, *orientation)
    grid = model_grid(volume, target_spacing_mm, mask_in if crop else None)
    shape_ijk = grid.shape_ijk
    src = volume
    default = float(np.min(volume.array))
    if outside == "background" and not has_constant_background(volume)[0]:
        default = 0.0     # skull-on: 0 outside the brain, as skull-stripped magnitudes have it
        src = volume.with_array(np.where(mask_in, np.asarray(volume.array, dtype=np.float32), np.float32(0.0)))
    elif np.asarray(volume.array).dtype != np.float32:
        src = volume.with_array(np.asarray(volume.array, dtype=np.float32))
    arr = resample_to(src, grid, shape_ijk, order=1, default=default)
    mask = resample_to(volume.with_array(mask_in.astype(np.uint8)), grid, shape_ijk, order=0) > 0
    if polarity == "bright":
        arr = -arr
    arr = normalise(arr, mask)
    grid = Volume(arr, grid.spacing, grid.origin, grid.direction)
    stub = Volume(np.zeros((1, 1, 1), np.uint8), volume.spacing, volume.origin, volume.direction.copy())
    return Preprocessed(arr, mask, grid, stub, tuple(volume.array.shape), polarity, orientation)
