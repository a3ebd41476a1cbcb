"""Scribble-to-mask engine: adaptive-tolerance region growing, one CMB per scribble label.

Thesis Algorithm 1 (every scribble voxel a seed; 6/26-connectivity; parent-son, seed
average or running average intensity difference; size cap from the 10 mm maximum CMB
diameter; automatic tolerance at the elbow of the size-versus-tolerance curve;
closing + hole filling), computed per CMB inside a small box around its scribble, with
the whole size curve from one pass (`join_map`).  CMB masks never share a voxel.

Units: the size cap is a diameter in mm turned into voxels from the spacing.  With
``relative=True`` (default) intensity differences and tolerances are fractions of the
image's robust intensity range (0.5th to 99.5th percentile of the non-background
voxels), so they do not change when the image intensities are scaled.
"""
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, bombs_size_class, equivalent_diameter_mm, sphere_voxel_count
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..validation import label_ids, validate_image, validate_labelmap
from .join_map import MODES, join_tolerances
from .refine import keep_seed_components, refine_region
from .tolerance import choose_tolerance, curve_to_lists, size_curve

DEFAULT_MODE = "seed_average"
# Automatic tolerance = this fraction of the runaway tolerance, per mode (chosen from the
# mean Dice on synthetic CMBs, benchmarks/eval_grow.py; the thesis's rule is 1.0).
AUTO_FRACTION = {"seed_average": 0.6, "running_average": 0.8, "parent_son": 0.9}
FORMAT_VERSION = "1.0"


@dataclass
class GrowSettings:
    """Options of the engine (see module docstring for units)."""

    mode: str = DEFAULT_MODE
    connectivity: int = 6
    tolerance: Union[str, float] = "auto"   # "auto" or a fixed tolerance
    auto_fraction: Optional[float] = None   # "auto": fraction of the runaway tolerance (None: per mode)
    relative: bool = True
    max_diameter_mm: float = 10.0
    closing_iterations: int = 2
    fill_holes: bool = True
    snap_points_mm: float = 1.5             # grow_from_points: look this far for the lesion's extreme voxel

    def check(self) -> "GrowSettings":
        if self.mode not in MODES:
            raise CMBError(f"intensity mode {self.mode!r} is unknown; choose one of {', '.join(MODES)}")
        if self.connectivity not in (6, 26):
            raise CMBError(f"connectivity {self.connectivity} is not 6 or 26")
        if not (isinstance(self.tolerance, str) and self.tolerance == "auto"):
            try:
                self.tolerance = float(self.tolerance)
            except (TypeError, ValueError):
                raise CMBError(f"tolerance {self.tolerance!r} is not 'auto' or a number") from None
            if not math.isfinite(self.tolerance) or self.tolerance < 0:
                raise CMBError(f"tolerance {self.tolerance} must be 'auto' or a number >= 0")
        if not (self.max_diameter_mm > 0):
            raise CMBError(f"maximum diameter {self.max_diameter_mm} mm must be positive")
        return self


@dataclass
class GrowResult:
    """Instance mask (same label ids as the scribbles) and one metadata dict per CMB."""

    labels: Volume
    cmbs: list[dict]
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": "cmb-grow", "format_version": FORMAT_VERSION,
                "settings": self.settings, "cmbs": self.cmbs}


# --------------------------------------------------------------------------------------
def grow_from_scribbles(image: Volume, scribbles: Volume, *, labels: Optional[Sequence[int]] = None,
                        progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None,
                        **options) -> GrowResult:
    """Grow one mask per scribble label.

    image: the SWI / T2* / QSM volume.  scribbles: label map on the same grid, 0 =
    nothing, each other value = one CMB (or one "multiple" group).  labels: grow only
    these ids (default all).  options: fields of `GrowSettings`.
    """
    settings = GrowSettings(**options).check()
    validate_image(image, "image")
    validate_labelmap(scribbles, image, "scribbles")
    scribble_array = np.asarray(scribbles.array)
    present = label_ids(scribble_array)
    if not present:
        raise CMBError("scribbles: the scribble map is empty (no labelled voxel)")
    wanted = present if labels is None else [int(v) for v in labels]
    for lab in wanted:
        if lab not in present:
            raise CMBError(f"scribble {lab} has no voxels")
    seeds = _seed_lists(scribble_array, wanted)
    return _grow_all(image, seeds, settings, progress, cancel)


def grow_from_points(image: Volume, points_ras, *, progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None, **options) -> GrowResult:
    """Grow one mask per point (RAS mm), labelled 1..N in point order.

    Each point seeds one voxel: the most lesion-like (darkest, or brightest when the
    point is brighter than its surroundings) within `snap_points_mm` of the point.
    """
    settings = GrowSettings(**options).check()
    validate_image(image, "image")
    pts = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    if pts.shape[0] == 0:
        raise CMBError("points: no points given")
    if not np.all(np.isfinite(pts)):
        raise CMBError("points: coordinates contain NaN or infinite values")
    array = np.asarray(image.array)
    shape = np.array(array.shape)
    seeds = {}
    for n, ras in enumerate(pts, start=1):
        kji = np.round(image.ras_to_voxel(ras)[::-1]).astype(int)
        if np.any(kji < 0) or np.any(kji >= shape):
            raise CMBError(f"point {n} ({ras[0]:.1f}, {ras[1]:.1f}, {ras[2]:.1f}) mm lies outside the image")
        seeds[n] = _snap_seed(array, kji, image.spacing, settings.snap_points_mm)[None, :]
    return _grow_all(image, seeds, settings, progress, cancel)


# --------------------------------------------------------------------------------------
def _seed_lists(scribbles: np.ndarray, wanted) -> dict[int, np.ndarray]:
    """label -> (n, 3) array of (k, j, i) seed indices, from one pass over the map."""
    from scipy import ndimage

    ints = scribbles if np.issubdtype(scribbles.dtype, np.integer) else scribbles.astype(np.int64)
    boxes = ndimage.find_objects(ints, max_label=max(wanted))
    out = {}
    for lab in wanted:
        box = boxes[lab - 1]
        lo = np.array([b.start for b in box])
        out[lab] = np.argwhere(ints[box] == lab) + lo
    return out


def _snap_seed(array, kji, spacing, radius_mm):
    """The voxel within radius_mm of kji that deviates most from the local median."""
    if radius_mm <= 0:
        return kji
    r = [int(math.floor(radius_mm / s)) for s in spacing[::-1]]
    lo = np.maximum(kji - r, 0)
    hi = np.minimum(kji + np.array(r) + 1, array.shape)
    box = array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(float)
    kk, jj, ii = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((kk, jj, ii), kji, spacing[::-1]))
    inside = d2 <= radius_mm ** 2 + 1e-9
    ctx_lo = np.maximum(kji - 3 * np.maximum(r, 1), 0)
    ctx_hi = np.minimum(kji + 3 * np.maximum(r, 1) + 1, array.shape)
    context = np.median(array[ctx_lo[0]:ctx_hi[0], ctx_lo[1]:ctx_hi[1], ctx_lo[2]:ctx_hi[2]])
    dark = array[tuple(kji)] <= context
    score = np.where(inside, box if dark else -box, np.inf)
    best = np.unravel_index(int(np.argmin(score)), box.shape)
    return lo + np.array(best)


def intensity_scale(array: np.ndarray, background: Optional[np.ndarray] = None) -> float:
    """Robust intensity range (99.5th - 0.5th percentile) of non-background voxels, from a subsample."""
    step = max(1, int(np.ceil((array.size / 2e5) ** (1 / 3))))
    sub = array[::step, ::step, ::step]
    if background is not None:
        sub = sub[~background[::step, ::step, ::step]]
    sub = np.asarray(sub, dtype=float).ravel()
    if sub.size == 0:
        return 1.0
    lo, hi = np.percentile(sub, [0.5, 99.5])
    scale = float(hi - lo)
    if scale <= 0:
        scale = float(sub.max() - sub.min()) or 1.0
    return scale


def background_mask(array: np.ndarray) -> Optional[np.ndarray]:
    """Masked-out background: voxels at the image minimum, connected to the image border,
    when such voxels cover more than 5% of the image (skull-stripped or zero-padded scans)."""
    from scipy import ndimage

    lo = array.min()
    step = max(1, int(round((array.size / 1e6) ** (1 / 3))))
    if np.mean(array[::step, ::step, ::step] == lo) <= 0.05:
        return None
    labels, n = ndimage.label(array == lo)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    touching = np.unique(np.concatenate([f.ravel() for f in faces]))
    touching = touching[touching > 0]
    if touching.size == 0:
        return None
    return np.isin(labels, touching)


def _grow_all(image: Volume, seeds: dict[int, np.ndarray], settings: GrowSettings,
              progress, cancel) -> GrowResult:
    array = np.asarray(image.array)
    spacing_kji = np.asarray(image.spacing[::-1], dtype=float)
    background = background_mask(array)
    scale = intensity_scale(array, background) if settings.relative else 1.0
    cap = sphere_voxel_count(settings.max_diameter_mm, image.spacing)
    # Box around each scribble: 0.75 x the maximum diameter on each side holds any CMB
    # the scribble can be in, plus room for the leak that marks the runaway.
    pad = np.ceil(0.75 * settings.max_diameter_mm / spacing_kji).astype(int)

    grown = []
    n = len(seeds)
    for count, (lab, seed_kji) in enumerate(seeds.items()):
        check_cancel(cancel)
        report(progress, count / n, f"growing CMB {lab} ({count + 1}/{n})")
        if background is not None and background[tuple(seed_kji.T)].mean() > 0.5:
            raise CMBError(f"scribble {lab} lies on background voxels (outside the head or brain mask)")
        grown.append(_grow_one(lab, array, seed_kji, pad, scale, cap, background, settings, spacing_kji))
    report(progress, 1.0, "resolving contacts between CMBs")
    out = _assemble(array.shape, grown, settings.connectivity)
    cmbs = [_metadata(g, out, image, settings, scale, cap) for g in grown]
    report(progress, 1.0, f"grew {len(cmbs)} CMB mask(s)")
    info = asdict(settings)
    info.update(intensity_scale=scale, cap_voxels=cap, spacing_mm=list(image.spacing))
    return GrowResult(image.with_array(out), cmbs, info)


def _grow_one(lab, array, seed_kji, pad, scale, cap, background, settings, spacing_kji):
    lo = np.maximum(seed_kji.min(axis=0) - pad, 0)
    hi = np.minimum(seed_kji.max(axis=0) + pad + 1, array.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    intensity = array[box].astype(np.float64) / scale
    seeds = np.zeros(intensity.shape, dtype=bool)
    seeds[tuple((seed_kji - lo).T)] = True
    seed_mean = float(intensity[seeds].mean())
    dark = seed_mean <= float(np.median(intensity))
    outside = background[box] & ~seeds if background is not None else None
    if outside is not None and outside.any():  # never grow into a masked-out background
        join = _blocked_join(intensity, seeds, settings, dark, outside)
    else:
        join = join_tolerances(intensity, seeds, settings.mode, settings.connectivity, dark)
    tolerances, sizes = size_curve(join, cap)
    warnings = []
    if settings.tolerance == "auto":
        fraction = settings.auto_fraction or AUTO_FRACTION[settings.mode]
        choice = choose_tolerance(tolerances, sizes, cap, fraction)
        tol = choice.tolerance
        if not choice.has_elbow:
            warnings.append("size-vs-tolerance curve has no elbow (the region never ran away); check the mask")
        runaway = choice.runaway_tolerance
    else:
        tol = float(settings.tolerance)
        over = np.nonzero(sizes > cap)[0]
        runaway = float(tolerances[over[0]]) if over.size else None
    region = join <= tol
    cap_hit = int(region.sum()) > cap
    if cap_hit:  # like the thesis, stop growing at the cap: keep the `cap` earliest-joining voxels
        from scipy import ndimage

        flat = np.flatnonzero(region)
        dist = ndimage.distance_transform_edt(~seeds, sampling=spacing_kji).ravel()[flat]
        keep = flat[np.lexsort((dist, join.ravel()[flat]))[:cap]]  # ties: nearest the scribble first
        region = np.zeros_like(region)
        region.ravel()[keep] = True
        warnings.append(f"region reached the size cap ({settings.max_diameter_mm:g} mm diameter); "
                        "tolerance too high or not a CMB")
    refined = refine_region(region, seeds, settings.connectivity, settings.closing_iterations,
                            settings.fill_holes)
    # closing can add a rim; never let it push the mask past the cap
    region = refined if refined.sum() <= cap else keep_seed_components(region, seeds, settings.connectivity)
    if background is not None:
        region &= ~background[box] | seeds
    if region.sum() <= seeds.sum():
        warnings.append("mask did not grow beyond the scribble: focus too faint or scribble off the CMB")
    contrast, noise = _contrast_to_noise(intensity, seed_mean)
    if contrast < 3.0 * noise:
        warnings.append(f"scribble is hardly {'darker' if dark else 'brighter'} than its surroundings "
                        f"(contrast {contrast / max(noise, 1e-12):.1f} x noise): is it a CMB?")
    return {"label": lab, "box": box, "lo": lo, "region": region, "seeds": seeds, "join": join,
            "tolerance": tol, "runaway": runaway, "curve": (tolerances, sizes), "cap_hit": cap_hit,
            "warnings": warnings, "dark": dark, "seed_count": int(seeds.sum())}


def _contrast_to_noise(intensity: np.ndarray, seed_mean: float):
    """(|median of the box - seed mean|, noise sigma from in-plane neighbour differences)."""
    contrast = abs(float(np.median(intensity)) - seed_mean)
    diffs = np.abs(np.diff(intensity, axis=2)).ravel()
    noise = float(np.median(diffs)) / (0.6745 * np.sqrt(2.0)) if diffs.size else 0.0
    return contrast, noise


def _blocked_join(intensity, seeds, settings, dark, blocked):
    """Join tolerances with `blocked` voxels made impassable."""
    if settings.mode == "parent_son":
        work = intensity.copy()
        work[blocked] = np.inf  # every step into or out of a blocked voxel costs inf
        with np.errstate(invalid="ignore"):
            join = join_tolerances(work, seeds, settings.mode, settings.connectivity, dark)
        join[~np.isfinite(join)] = np.inf
        join[blocked] = np.inf
        return join
    big = 1e3 * (float(np.abs(intensity).max()) + 1.0)
    work = intensity.copy()
    work[blocked] = big if dark else -big
    join = join_tolerances(work, seeds, settings.mode, settings.connectivity, dark)
    join[blocked] = np.inf
    join[join >= big / 2] = np.inf
    return join


def _assemble(shape, grown, connectivity) -> np.ndarray:
    """Paste the CMB regions into one label map; a voxel claimed by two CMBs goes to the
    one that reached it at the lower fraction of its own tolerance (ties: lower label)."""
    out = np.zeros(shape, dtype=np.int32)
    by_label = {}
    for g in sorted(grown, key=lambda g: g["label"]):
        c = g["join"] / g["tolerance"] if g["tolerance"] > 0 else g["join"].copy()
        c = np.where(np.isfinite(c), c, 1.0)  # voxels added by closing / hole filling
        c[g["seeds"]] = -1.0
        g["cost"] = c
        by_label[g["label"]] = g
        box, region = g["box"], g["region"]
        sub_out = out[box]
        take = region & (sub_out == 0)
        contested = region & (sub_out != 0)
        if contested.any():
            idx = np.argwhere(contested)
            for other_label in np.unique(sub_out[contested]):
                other = by_label[int(other_label)]
                mine = idx[sub_out[tuple(idx.T)] == other_label]
                theirs = other["cost"][tuple((mine + g["lo"] - other["lo"]).T)]
                wins = mine[c[tuple(mine.T)] < theirs]
                take[tuple(wins.T)] = True
        sub_out[take] = g["label"]
    for g in grown:  # a CMB cut by a neighbour keeps only the part holding its scribble
        box = g["box"]
        mine = out[box] == g["label"]
        kept = keep_seed_components(mine, g["seeds"], connectivity)
        out[box][mine & ~kept] = 0
    return out


def _metadata(g, out, image: Volume, settings: GrowSettings, scale: float, cap: int) -> dict:
    box = g["box"]
    mask = out[box] == g["label"]
    voxels = int(mask.sum())
    volume_mm3 = voxels * image.voxel_volume_mm3
    diameter = equivalent_diameter_mm(volume_mm3)
    kji = np.argwhere(mask).mean(axis=0) + g["lo"] if voxels else g["lo"].astype(float)
    ijk = kji[::-1]
    tolerances, sizes = g["curve"]
    units = "fraction of intensity range" if settings.relative else "intensity"
    return {
        "label": int(g["label"]),
        "tolerance": float(g["tolerance"]),
        "tolerance_units": units,
        "tolerance_auto": settings.tolerance == "auto",
        "runaway_tolerance": None if g["runaway"] is None else round(float(g["runaway"]), 6),
        "voxel_count": voxels,
        "volume_mm3": round(volume_mm3, 3),
        "diameter_mm": round(diameter, 3),
        "size_class": bombs_size_class(diameter),
        "centre_ras": [round(float(v), 3) for v in image.voxel_to_ras(ijk)],
        "centre_ijk": [round(float(v), 3) for v in ijk],
        "seed_count": g["seed_count"],
        "polarity": "dark" if g["dark"] else "bright",
        "cap_voxels": int(cap),
        "cap_hit": bool(g["cap_hit"]),
        "warnings": list(g["warnings"]),
        "curve": curve_to_lists(tolerances, sizes),
        "mode": settings.mode,
        "connectivity": settings.connectivity,
    }
