"""Scribble-to-mask engine: one CMB mask per scribble label.

Default mode ``half_dip`` (docs/mask_engine.md): the CMB is the dip below its local
background; its mask is the voxels darker than half the dip (local background from a
shell around the region, noise-corrected minimum next to the scribble), connected to
the scribble, inside the dip's round zone (leak guard against veins, sulci and dark grey
matter).  The thesis's Algorithm 1 modes (every scribble voxel a seed; 6/26-connectivity;
parent-son, seed average or running average intensity difference; size cap from the
10 mm maximum CMB diameter; automatic tolerance at the elbow of the size-versus-tolerance
curve; closing + hole filling) remain available.  Every mode is computed per CMB inside a
small box around its scribble, with the whole size curve from one join map (`join_map`),
by `interactive.Grower`, which the batch functions here drive.  CMB masks never share a voxel.

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
from ..geometry import Volume, bombs_size_class, equivalent_diameter_mm
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..validation import validate_image, validate_labelmap
from .join_map import MODES
from .tolerance import curve_to_lists

DEFAULT_MODE = "half_dip"
# Automatic tolerance = this fraction of the runaway tolerance, per thesis mode (chosen from
# the mean Dice on synthetic CMBs, benchmarks/eval_grow.py; the thesis's rule is 1.0); for
# half_dip, the fraction of the dip (local background - CMB minimum).
AUTO_FRACTION = {"half_dip": 0.5, "seed_average": 0.6, "running_average": 0.8, "parent_son": 0.9}
# Closing iterations per mode when GrowSettings.closing_iterations is None (thesis: 2).
CLOSING = {"half_dip": 0, "seed_average": 2, "running_average": 2, "parent_son": 2}
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
    closing_iterations: Optional[int] = None  # None: per mode (CLOSING)
    fill_holes: bool = True
    # half_dip: local background = this percentile of a shell shell_inner_mm to
    # shell_inner_mm + shell_width_mm outside the region; minimum raised by min_noise sigmas
    shell_inner_mm: float = 2.0
    shell_width_mm: float = 2.0
    shell_percentile: float = 50.0
    min_noise: float = 1.0
    smooth_mm: float = 0.5       # half_dip: Gaussian sigma (mm) of the denoising before thresholding
    zone_margin_mm: float = 0.5   # half_dip: leak guard margin beyond the dip's radius (< 0: no guard)
    ray_quantile: float = 30.0    # half_dip: percentile over 16 rays of the distance where the dip ends
    box_mm: Optional[float] = None  # box margin (mm) around a scribble; None: 5 (half_dip), 0.75 x max diameter
    iterations: int = 3           # half_dip: re-estimations of background, threshold and zone
    background_slope: bool = True   # half_dip: the background level varies linearly (slope fitted to the shell)
    # half_dip: size-aware level: undo the smoothing's widening of dips near the voxel scale
    # (interactive.unsmoothed_fraction; tiny CMBs grew 1.5-4x without it), for dips whose
    # smoothed half-level radius is at most smooth_correction_px in-plane voxels
    smooth_correction: bool = True
    smooth_correction_px: float = 3.0
    basin_h: float = 0.0          # half_dip: keep the seeds' watershed basin (minima deeper than h sigmas); 0 off
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
        if self.closing_iterations is None:
            self.closing_iterations = CLOSING[self.mode]
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
    all_seeds = _seed_lists(np.asarray(scribbles.array))
    if not all_seeds:
        raise CMBError("scribbles: the scribble map is empty (no labelled voxel)")
    wanted = sorted(all_seeds) if labels is None else [int(v) for v in labels]
    for lab in wanted:
        if lab not in all_seeds:
            raise CMBError(f"scribble {lab} has no voxels")
    return _grow_all(image, {lab: all_seeds[lab] for lab in wanted}, settings, progress, cancel)


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
def _seed_lists(scribbles: np.ndarray) -> dict[int, np.ndarray]:
    """label -> (n, 3) array of (k, j, i) seed indices, from one pass over the map."""
    flat = np.flatnonzero(scribbles)
    values = scribbles.ravel()[flat]
    if values.size and not np.issubdtype(values.dtype, np.integer):
        values = values.astype(np.int64)
    order = np.argsort(values, kind="stable")
    flat, values = flat[order], values[order]
    kji = np.stack(np.unravel_index(flat, scribbles.shape), axis=1)
    labels, starts = np.unique(values, return_index=True)
    ends = list(starts[1:]) + [values.size]
    return {int(lab): kji[a:b] for lab, a, b in zip(labels, starts, ends)}


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


def intensity_scale(array: np.ndarray, background_value=None) -> float:
    """Robust intensity range (99.5th - 0.5th percentile) of non-background voxels, from a subsample.

    background_value: voxels of this value are masked-out background and left out.
    """
    step = max(1, int(np.ceil((array.size / 2e5) ** (1 / 3))))
    sub = array[::step, ::step, ::step]
    if background_value is not None:
        sub = sub[sub != background_value]
    sub = np.asarray(sub, dtype=float).ravel()
    if sub.size == 0:
        return 1.0
    lo, hi = np.percentile(sub, [0.5, 99.5])
    scale = float(hi - lo)
    if scale <= 0:
        scale = float(sub.max() - sub.min()) or 1.0
    return scale


def _grow_all(image: Volume, seeds: dict[int, np.ndarray], settings: GrowSettings,
              progress, cancel) -> GrowResult:
    from .interactive import Grower

    grower = Grower(image, settings, validate=False)
    n = len(seeds)
    for count, (lab, seed_kji) in enumerate(seeds.items()):
        check_cancel(cancel)
        report(progress, count / n, f"growing CMB {lab} ({count + 1}/{n})")
        grower.grow(lab, seed_kji)
    report(progress, 1.0, "resolving contacts between CMBs")
    out = grower.label_map()
    cmbs = [_metadata(grower[lab], out, image, settings, grower.cap) for lab in seeds]
    report(progress, 1.0, f"grew {len(cmbs)} CMB mask(s)")
    info = asdict(settings)
    info.update(intensity_scale=grower.scale, cap_voxels=grower.cap, spacing_mm=list(image.spacing))
    return GrowResult(image.with_array(out), cmbs, info)


def _contrast_to_noise(intensity: np.ndarray, seed_mean: float):
    """(|median of the box - seed mean|, noise sigma from in-plane neighbour differences)."""
    step = max(1, intensity.size // 8192)  # a subsample is plenty for two medians
    contrast = abs(float(np.median(intensity.ravel()[::step])) - seed_mean)
    diffs = np.abs(np.diff(intensity, axis=2)).ravel()[::step]
    noise = float(np.median(diffs)) / (0.6745 * np.sqrt(2.0)) if diffs.size else 0.0
    return contrast, noise


def _metadata(g, out, image: Volume, settings: GrowSettings, cap: int) -> dict:
    box = g.box
    mask = out[box] == g.label
    voxels = int(mask.sum())
    volume_mm3 = voxels * image.voxel_volume_mm3
    diameter = equivalent_diameter_mm(volume_mm3)
    kji = np.argwhere(mask).mean(axis=0) + g.lo if voxels else g.lo.astype(float)
    ijk = kji[::-1]
    tolerances, sizes = g.curve()
    units = "fraction of intensity range" if settings.relative else "intensity"
    out = {
        "label": int(g.label),
        "tolerance": float(g.tolerance),
        "tolerance_units": units,
        "tolerance_auto": settings.tolerance == "auto",
        "runaway_tolerance": None if g.runaway is None else round(float(g.runaway), 6),
        "voxel_count": voxels,
        "volume_mm3": round(volume_mm3, 3),
        "diameter_mm": round(diameter, 3),
        "size_class": bombs_size_class(diameter),
        "centre_ras": [round(float(v), 3) for v in image.voxel_to_ras(ijk)],
        "centre_ijk": [round(float(v), 3) for v in ijk],
        "seed_count": g.seed_count,
        "polarity": "dark" if g.dark else "bright",
        "cap_voxels": int(cap),
        "cap_hit": bool(g.cap_hit),
        "warnings": list(g.warnings),
        "curve": curve_to_lists(tolerances, sizes),
        "mode": settings.mode,
        "connectivity": settings.connectivity,
    }
    if g.info:  # half_dip: the local background and minimum it measured (tolerance units x scale)
        out["dip"] = {k: round(float(v), 6) for k, v in g.info.items()}
    return out
