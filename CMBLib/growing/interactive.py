"""One engine for batch and live masks: `Grower` does the per-image work once, `GrownCMB`
keeps one CMB's join map so its mask at any tolerance is a threshold away.

    grower = Grower(image)                       # intensity scale, background value: once
    cmb = grower.grow(3, seeds_kji)              # (N, 3) int [k, j, i]; only this CMB is computed
    cmb.mask()                                   # bool, cmb.box's shape, at the automatic tolerance
    cmb.mask(0.12); cmb.curve(); cmb.tolerance_range()
    grower.label_map()                           # uint16 [k, j, i], overlaps resolved
    grower.remove(3)

`grow_from_scribbles` and `grow_from_points` (engine.py) are this object driven over
every scribble label.  Tolerances are in the units of `GrowSettings` (fractions of the
image's robust intensity range with ``relative=True``).
"""
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, sphere_voxel_count
from ..validation import validate_image
from . import boxops
from .engine import AUTO_FRACTION, GrowSettings, _contrast_to_noise, intensity_scale
from .join_map import join_tolerances, minimax_vertex
from .refine import keep_seed_components, refine_region
from .tolerance import choose_tolerance, size_curve


class GrownCMB:
    """One grown CMB: its join map over `box`, the automatic tolerance and the size curve.

    label: the scribble label.  box: (slice_k, slice_j, slice_i) into the full image.
    tolerance: the automatic (or fixed) tolerance; a caller's slider may set it.
    """

    def __init__(self, label, box, seeds, join, tolerance, curve, cap, settings, blocked, spacing_kji,
                 runaway, warnings, dark, info):
        self.label = int(label)
        self.box = box
        self.seeds = seeds
        self.join = join
        self.tolerance = float(tolerance)
        self.auto_tolerance = float(tolerance)
        self._curve = curve
        self.cap = int(cap)
        self.settings = settings
        self.blocked = blocked
        self.spacing_kji = spacing_kji
        self.runaway = runaway
        self.warnings = list(warnings)
        self.dark = bool(dark)
        self.info = dict(info)
        self.seed_count = int(seeds.sum())
        self.cap_hit = False
        self._dist = None
        self._cache = {}

    @property
    def lo(self) -> np.ndarray:
        return np.array([s.start for s in self.box])

    def mask(self, tolerance: Optional[float] = None) -> np.ndarray:
        """Bool mask of `box`'s shape at `tolerance` (default: self.tolerance).

        Re-thresholds the kept join map, caps it at the maximum CMB volume (earliest-joining
        voxels first), refines it (closing, hole filling, the scribble's component) and
        keeps it off masked-out background.  No re-growing.
        """
        tol = self.tolerance if tolerance is None else float(tolerance)
        hit = self._cache.get(tol)
        if hit is not None:
            return hit[0].copy()
        region = self.join <= tol
        cap_hit = int(np.count_nonzero(region)) > self.cap
        if cap_hit:  # like the thesis, stop growing at the cap: the `cap` earliest-joining voxels
            if self._dist is None:
                from scipy import ndimage  # rare (a region cut at the cap): the box may be large

                self._dist = ndimage.distance_transform_edt(~self.seeds, sampling=self.spacing_kji)
            flat = np.flatnonzero(region)
            keep = flat[np.lexsort((self._dist.ravel()[flat], self.join.ravel()[flat]))[: self.cap]]
            region = np.zeros_like(region)
            region.ravel()[keep] = True
        s = self.settings
        refined = refine_region(region, self.seeds, s.connectivity, s.closing_iterations, s.fill_holes,
                                connected=not cap_hit and s.mode != "running_average")
        # closing can add a rim; never let it push the mask past the cap
        region = refined if refined.sum() <= self.cap else keep_seed_components(region, self.seeds, s.connectivity)
        if self.blocked is not None:
            region &= ~self.blocked | self.seeds
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[tol] = (region, cap_hit)
        return region.copy()

    def reached_cap(self, tolerance: Optional[float] = None) -> bool:
        """Whether the region at `tolerance` had to be cut at the size cap."""
        self.mask(tolerance)
        return self._cache[self.tolerance if tolerance is None else float(tolerance)][1]

    def curve(self):
        """(tolerances ascending, region sizes in voxels) up to just past the size cap."""
        return self._curve

    def tolerance_range(self):
        """(lo, hi): a slider range from 0 to a little past the runaway (or the largest step)."""
        t = self._curve[0]
        hi = self.runaway if self.runaway is not None else (float(t[-1]) if t.size else 1.0)
        hi = max(hi, 2.0 * self.auto_tolerance, 1e-6)
        return 0.0, float(hi)


class Grower:
    """Grow CMB masks on one image; per-image work (validation aside) is done here once."""

    def __init__(self, image: Volume, settings: Optional[GrowSettings] = None, validate: bool = True):
        self.settings = (settings or GrowSettings()).check()
        if validate:  # grow_from_scribbles / grow_from_points have validated already
            validate_image(image, "image")
        self.image = image
        self.array = np.asarray(image.array)
        self.spacing_kji = np.asarray(image.spacing[::-1], dtype=float)
        self.background_value = _background_value(self.array)
        self.scale = intensity_scale(self.array, self.background_value) if self.settings.relative else 1.0
        self.cap = sphere_voxel_count(self.settings.max_diameter_mm, image.spacing)
        # Box around each scribble: thesis modes 0.75 x the maximum diameter on each side (any
        # CMB the scribble can be in, plus room for the leak that marks the runaway); half_dip
        # 5 mm (a CMB scribbled through its middle and the shell around it; chosen on tuning).
        box_mm = self.settings.box_mm
        if box_mm is None:  # half_dip needs the CMB and its shell; the thesis modes room to run away
            box_mm = 5.0 if self.settings.mode == "half_dip" else 0.75 * self.settings.max_diameter_mm
        self.pad = np.ceil(box_mm / self.spacing_kji).astype(int)
        self._cmbs: dict = {}
        self._background = None   # full-image background mask, made on first need (once)

    # ---- public ----------------------------------------------------------------------
    def grow(self, label: int, seeds_kji: np.ndarray) -> GrownCMB:
        """Grow (or re-grow) CMB `label` from seed voxels (N, 3) [k, j, i]; others untouched."""
        seeds_kji = np.asarray(seeds_kji).reshape(-1, 3)
        if seeds_kji.shape[0] == 0:
            raise CMBError(f"scribble {label} has no voxels")
        seeds_kji = seeds_kji.astype(int)
        if np.any(seeds_kji < 0) or np.any(seeds_kji >= np.array(self.array.shape)):
            raise CMBError(f"scribble {label} lies outside the image")
        cmb = self._grow_one(int(label), seeds_kji)
        self._cmbs[int(label)] = cmb
        return cmb

    def remove(self, label: int) -> None:
        self._cmbs.pop(int(label), None)

    def __getitem__(self, label: int) -> GrownCMB:
        return self._cmbs[int(label)]

    def labels(self):
        return sorted(self._cmbs)

    def label_map(self) -> np.ndarray:
        """uint16 [k, j, i]: every CMB at its current tolerance; a voxel claimed by two CMBs
        goes to the one that reached it at the lower fraction of its own tolerance (ties:
        lower label); a CMB cut by a neighbour keeps the part holding its scribble."""
        out = np.zeros(self.array.shape, dtype=np.uint16)
        costs = {}
        ordered = [self._cmbs[k] for k in sorted(self._cmbs)]
        for g in ordered:
            region = g.mask()
            if self.settings.mode == "half_dip":  # a voxel belongs to the nearest dip centre
                region &= self._territory(g) | g.seeds
            c = g.join / g.tolerance if g.tolerance > 0 else g.join.copy()
            c = np.where(np.isfinite(c), c, 1.0)  # voxels added by closing / hole filling
            c[g.seeds] = -1.0
            costs[g.label] = c
            sub_out = out[g.box]
            take = region & (sub_out == 0)
            contested = region & (sub_out != 0)
            if contested.any():
                idx = np.argwhere(contested)
                for other_label in np.unique(sub_out[contested]):
                    other = self._cmbs[int(other_label)]
                    mine = idx[sub_out[tuple(idx.T)] == other_label]
                    theirs = costs[int(other_label)][tuple((mine + g.lo - other.lo).T)]
                    wins = mine[c[tuple(mine.T)] < theirs]
                    take[tuple(wins.T)] = True
            sub_out[take] = g.label
        for g in ordered:
            sub = out[g.box]
            mine = sub == g.label
            if not mine.any() or len(ordered) == 1:
                continue
            kept = keep_seed_components(mine, g.seeds, self.settings.connectivity)
            sub[mine & ~kept] = 0
        return out

    def _territory(self, g: GrownCMB) -> np.ndarray:
        """Voxels of g's box at least as near (mm) to g's dip centre as to any other CMB's
        whose box overlaps it (two dips side by side split at the middle)."""
        own = np.ones(g.join.shape, bool)
        grids = None
        for other in self._cmbs.values():
            if other is g or not all(a.start < b.stop and b.start < a.stop for a, b in zip(g.box, other.box)):
                continue
            if grids is None:
                grids = [(np.arange(b.start, b.stop) * sp)[sh] for b, sp, sh in
                         zip(g.box, self.spacing_kji, ((slice(None), None, None), (None, slice(None), None),
                                                        (None, None, slice(None))))]
            mine = g.centre_kji * self.spacing_kji
            theirs = other.centre_kji * self.spacing_kji
            d_own = sum((x - c) ** 2 for x, c in zip(grids, mine))
            d_other = sum((x - c) ** 2 for x, c in zip(grids, theirs))
            own &= d_own <= d_other
        return own

    def _background_mask(self) -> np.ndarray:
        """Voxels at the background value connected to the image border (computed once,
        and only when a CMB's box holds such voxels reaching its faces)."""
        if self._background is None:
            self._background = _border_connected(self.array == self.background_value)
        return self._background

    # ---- one CMB ---------------------------------------------------------------------
    def _grow_one(self, lab: int, seed_kji: np.ndarray) -> GrownCMB:
        s = self.settings
        lo = np.maximum(seed_kji.min(axis=0) - self.pad, 0)
        hi = np.minimum(seed_kji.max(axis=0) + self.pad + 1, self.array.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        raw = self.array[box]
        intensity = raw.astype(np.float64) / self.scale
        seeds = np.zeros(intensity.shape, dtype=bool)
        seeds[tuple((seed_kji - lo).T)] = True
        blocked = None
        if self.background_value is not None:
            # masked-out background: voxels at the background value connected to the image's
            # border.  A part enclosed inside this box is not (it is tissue: a CMB's own darkest
            # voxels may be clipped to that value): only parts reaching the box's faces need
            # the whole-image labelling, done once per image when first needed
            bg = raw == self.background_value
            if bg.any():
                bg &= ~boxops.fill_holes(~bg, 6)   # the parts reaching the box's faces
                if bg.any():
                    bg &= self._background_mask()[box]
            if bg[seeds].mean() > 0.5:
                raise CMBError(f"scribble {lab} lies on background voxels (outside the head or brain mask)")
            if bg.any():
                blocked = bg & ~seeds
        seed_mean = float(intensity[seeds].mean())
        # polarity: the scribble against the tissue right around it (within ~5 mm; the box
        # median would see skull, air or ventricles near the brain's edge)
        near = _grow_box(boxops.bounding_box(seeds),
                         np.maximum(np.ceil(5.0 / self.spacing_kji), 1), seeds.shape)
        around = ~seeds[near] if blocked is None else ~(seeds[near] | blocked[near])
        tissue = intensity[near][around] if around.any() else intensity
        dark = seed_mean <= _quantile(tissue, 50)
        warnings, info = [], {}
        centre = seed_kji.mean(axis=0)
        if s.mode == "half_dip":
            join, crop, auto, info, centre = _half_dip(intensity, seeds, blocked, dark, s, self.spacing_kji)
            centre = lo + np.asarray(centre)
            # keep only the part of the box where the CMB can be
            box = tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, crop))
            seeds = seeds[crop]
            blocked = None if blocked is None else blocked[crop]
        elif blocked is not None:  # never grow into a masked-out background
            join = _blocked_join(intensity, seeds, s, dark, blocked)
            auto = None
        else:
            join = join_tolerances(intensity, seeds, s.mode, s.connectivity, dark)
            auto = None
        tolerances, sizes = size_curve(join, self.cap)
        over = np.nonzero(sizes > self.cap)[0]
        runaway = float(tolerances[over[0]]) if over.size else None
        if s.tolerance != "auto":
            tol = float(s.tolerance)
        elif auto is not None:
            tol = auto
        else:
            fraction = s.auto_fraction or AUTO_FRACTION[s.mode]
            choice = choose_tolerance(tolerances, sizes, self.cap, fraction)
            tol = choice.tolerance
            if not choice.has_elbow:
                warnings.append("size-vs-tolerance curve has no elbow (the region never ran away); check the mask")
        cmb = GrownCMB(lab, box, seeds, join, tol, (tolerances, sizes), self.cap, s, blocked, self.spacing_kji,
                       runaway, warnings, dark, info)
        cmb.centre_kji = np.asarray(centre, dtype=float)  # the dip's centre (voxel index, float)
        region = cmb.mask()
        if cmb.reached_cap():
            cmb.cap_hit = True
            warnings.append(f"region reached the size cap ({s.max_diameter_mm:g} mm diameter); "
                            "tolerance too high or not a CMB")
        if region.sum() <= seeds.sum():
            warnings.append("mask did not grow beyond the scribble: focus too faint or scribble off the CMB")
        contrast, noise = _contrast_to_noise(intensity, seed_mean)
        if contrast < 3.0 * noise:
            warnings.append(f"scribble is hardly {'darker' if dark else 'brighter'} than its surroundings "
                            f"(contrast {contrast / max(noise, 1e-12):.1f} x noise): is it a CMB?")
        cmb.warnings = warnings
        return cmb


# --------------------------------------------------------------------------------------
def _background_value(array: np.ndarray):
    """The image minimum when it covers more than 5% of the image (skull-stripped or
    zero-padded scans): voxels at that value connected to the border are masked-out
    background, never grown into."""
    lo = array.min()
    step = max(1, int(round((array.size / 1e6) ** (1 / 3))))
    if np.mean(array[::step, ::step, ::step] == lo) <= 0.05:
        return None
    return lo


def _border_connected(bg: np.ndarray) -> np.ndarray:
    """The voxels of `bg` 6-connected to the array's border.

    Only the bounding box of the other voxels, one voxel wider, is labelled: a `bg` voxel
    outside it reaches the border in a straight line, and a component inside it reaches
    the border exactly when it touches that box's faces (the widened faces are all `bg`
    and outside the bounding box)."""
    other = ~bg
    crop = []
    for axis in range(3):
        hit = np.flatnonzero(other.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return bg.copy()  # all background
        crop.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, bg.shape[axis])))
    crop = tuple(crop)
    from scipy import ndimage  # once per image, and only when some CMB's box needs it

    labels, _ = ndimage.label(bg[crop])
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    touching = np.unique(np.concatenate([f.ravel() for f in faces]))
    lut = np.zeros(int(labels.max()) + 1, bool)
    lut[touching[touching > 0]] = True
    out = bg.copy()
    out[crop] = lut[labels]
    return out


def _blocked_join(intensity, seeds, settings, dark, blocked):
    """Join tolerances of a thesis mode with `blocked` voxels made impassable."""
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


def _half_dip(intensity, seeds, blocked, dark, s: GrowSettings, spacing_kji):
    """Model-based join map and automatic tolerance (mode ``half_dip``).

    A CMB is a dip below its local background B down to a minimum m; its extent is the
    voxels darker than B - fraction * (B - m) (fraction 0.5: the half-maximum extent,
    the definition of the project's synthesis), connected to the scribble.  join[v] is
    the smallest tolerance t at which v is reached through voxels no brighter than m + t
    (one-sided: darker than m costs 0), so the auto tolerance is fraction * (B - m).

    m: the darkest voxel at or next to the scribble, raised by `min_noise` noise sigmas
    (a noisy minimum is biased low).  B: a percentile of a shell around the region.
    Leak guard (`zone`): a dip is round, so the region is kept inside the radius at which
    the median of in-plane rings around the minimum rises above the threshold (a vein or
    sulcus beside the CMB fills only part of a ring), plus `zone_margin_mm`, and on the
    slices where the dip is still a dip (its centre darker than the threshold, its ring
    brighter).  B, the threshold and the zone are re-estimated up to twice more (stopping
    at a fixed point).  With `background_slope` the background level varies linearly
    (gradient fitted to the shell) and each voxel's cost is scaled so that the half-dip
    is taken relative to the background at that voxel.
    """
    dipped = intensity if dark else -intensity
    free = np.ones(dipped.shape, bool) if blocked is None else ~blocked
    v = _smoothed(dipped, blocked, s.smooth_mm, spacing_kji)
    near = boxops.dilate(seeds, np.ones((1, 3, 3), bool)) & free
    sigma = _noise_sigma(v, blocked)
    near_v = np.where(near, v, np.inf)
    centre = np.unravel_index(int(np.argmin(near_v)), v.shape)
    m = min(float(near_v[centre]) + s.min_noise * sigma, float(v[seeds].max()))
    fraction = s.auto_fraction if s.auto_fraction is not None else AUTO_FRACTION["half_dip"]
    b = _quantile(_sample(v if blocked is None else v[free]), 50)
    rings = _ring_index(v.shape, centre, spacing_kji)
    guard = s.zone_margin_mm >= 0
    zone = free | seeds
    reach = np.ceil((s.shell_inner_mm + s.shell_width_mm) / spacing_kji).astype(int) + 1
    seed_box = boxops.bounding_box(seeds)
    previous, memo, last_shell = None, {}, None
    for _ in range(s.iterations):
        tol = fraction * max(b - m, 0.0)
        zbox = tuple(slice(None) for _ in v.shape)
        if guard:
            zone, dip_centre, zbox, _ = _dip_zone(v, free, rings, centre, m + tol, spacing_kji, s.zone_margin_mm,
                                                  s.ray_quantile, slice_rays=False, memo=memo)
            zone |= seeds
            zbox = _union_box(zbox, seed_box)
        # the region at this tolerance: voxels no brighter than m + tol, in the zone, holding a seed
        # (labelled inside the zone's box only: nothing outside it is in the zone)
        region = np.zeros(v.shape, bool)
        region[zbox] = keep_seed_components((v[zbox] <= m + tol) & zone[zbox], seeds[zbox], s.connectivity)
        if previous is not None and np.array_equal(region, previous):
            break   # same region, same shell, same background: a fixed point (later iterations repeat it)
        previous = region
        sub = _grow_box(boxops.bounding_box(region), reach, v.shape)
        d = boxops.distance_to(region[sub], spacing_kji, s.shell_inner_mm + s.shell_width_mm)
        shell = (d > s.shell_inner_mm) & (d <= s.shell_inner_mm + s.shell_width_mm) & free[sub]
        if np.count_nonzero(shell) < 8:
            break
        b = _quantile(_sample(v[sub][shell]), s.shell_percentile)
        last_shell = (sub, shell)
    tol = fraction * max(b - m, 0.0)
    if s.smooth_correction and s.smooth_mm > 0 and b > m:
        # size-aware level: the denoising Gaussian widens a dip near the voxel scale (a CMB of a
        # few voxels) far more than a large one; its half-depth on `v` is then wider than the
        # half-depth of the image itself.  Measure the smoothed dip's radius at the level and
        # take the level on `v` that lies where the unsmoothed dip has it (Gaussian dip model).
        radius = _dip_zone(v, free, rings, centre, m + tol, spacing_kji, s.zone_margin_mm, s.ray_quantile,
                           slice_rays=False, memo=memo)[3]
        if radius <= s.smooth_correction_px * float(np.mean(spacing_kji[1:])):
            fraction = unsmoothed_fraction(fraction, radius, s.smooth_mm)
        tol = fraction * (b - m)
    if guard:
        zone, dip_centre, _, _ = _dip_zone(v, free, rings, centre, m + tol, spacing_kji, s.zone_margin_mm,
                                           s.ray_quantile, memo=memo)
        zone |= seeds
    else:
        dip_centre = tuple(float(c) for c in centre)
    # join map only where the CMB can be (the zone's box, one voxel wider), paths inside the zone
    crop = _grow_box(boxops.bounding_box(zone), np.ones(3, int), v.shape)
    vz, zz, sz = v[crop], zone[crop], seeds[crop]
    cost = np.maximum(vz - m, 0.0)
    if s.background_slope and last_shell is not None and b > m:
        # the background is not flat (grey / white matter, a bias field): its level at each voxel
        # b + slope . (x - centre), slope fitted to the shell; the half-dip is relative to it
        slope = _shell_slope(v, *last_shell, dip_centre, spacing_kji)
        axes = [(np.arange(c.start, c.stop) - x0) * sp * w
                for c, x0, sp, w in zip(crop, dip_centre, spacing_kji, slope)]
        level = b + (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :])
        cost = cost * (b - m) / np.maximum(level - m, 0.25 * (b - m))
    big = 1e3 * (float(cost[zz].max()) + 1.0)
    cost[~zz] = big
    join = minimax_vertex(cost, sz, s.connectivity)
    join[(~zz) | (join >= big / 2)] = np.inf
    return join, crop, tol, {"background": b, "minimum": m, "noise": sigma, "fraction": fraction}, dip_centre


def unsmoothed_fraction(fraction: float, radius_mm: float, sigma_mm: float) -> float:
    """The fraction of the smoothed dip's depth (from its minimum) whose contour lies where the
    unsmoothed dip's `fraction` contour lies, for a Gaussian dip after an in-plane Gaussian of
    `sigma_mm`; `radius_mm`: the smoothed dip's in-plane radius at `fraction`.

    A dip exp(-r^2 / 2 s0^2) becomes, after smoothing, (s0^2 / s1^2) exp(-r^2 / 2 s1^2) with
    s1^2 = s0^2 + sigma^2.  The smoothed dip's attenuation at level a = 1 - fraction of its
    peak lies at r1^2 = -2 s1^2 ln a (so s1 is measured); the unsmoothed one's at
    r0^2 = -2 s0^2 ln a, where the smoothed dip is at a ** (s0^2 / s1^2) of its peak, with
    s0^2 / s1^2 = 1 + 2 sigma^2 ln a / r1^2.  Large dips (r1 >> sigma): fraction unchanged;
    fraction 0.5, sigma 0.5 mm: r1 = 3 mm gives 0.48, 1 mm 0.36, 0.7 mm 0.18; a dip no wider
    than the smoothing itself (s0 -> 0) gives 0 (its minimum alone).  Units: mm.
    """
    a = 1.0 - float(fraction)
    if not (0.0 < a < 1.0) or not (radius_mm > 0) or not np.isfinite(radius_mm) or sigma_mm <= 0:
        return float(fraction)
    ratio = min(max(1.0 + 2.0 * sigma_mm ** 2 * np.log(a) / radius_mm ** 2, 0.0), 1.0)
    return float(1.0 - a ** ratio)


def _smoothed(v, blocked, sigma_mm, spacing_kji):
    """`v` after a Gaussian of `sigma_mm`, normalised so masked-out (`blocked`) voxels do not
    bleed in (they are 0 in the result)."""
    if sigma_mm <= 0:
        return v
    sig = sigma_mm / spacing_kji
    if blocked is None:
        return boxops.gaussian(v, sig)
    free = ~blocked
    weight = boxops.gaussian(free.astype(np.float64), sig)
    out = boxops.gaussian(np.where(free, v, 0.0), sig) / np.maximum(weight, 1e-6)
    return np.where(free, out, 0.0)


def _noise_sigma(v, blocked) -> float:
    """Noise standard deviation of `v`: the median absolute in-plane neighbour difference
    (both in-plane axes, pairs of unmasked voxels) / (0.6745 sqrt 2)."""
    if blocked is None:
        diffs = _sample(np.concatenate([np.abs(np.diff(v, axis=2)).ravel(), np.abs(np.diff(v, axis=1)).ravel()]))
    else:
        free = ~blocked
        diffs = _sample(np.concatenate([np.abs(np.diff(v, axis=2))[free[:, :, 1:] & free[:, :, :-1]],
                                        np.abs(np.diff(v, axis=1))[free[:, 1:] & free[:, :-1]]]))
    return _quantile(diffs, 50) / (0.6745 * np.sqrt(2.0)) if diffs.size else 0.0


def _shell_slope(v, sub, shell, centre, spacing_kji):
    """Background gradient (per mm, [k, j, i]) fitted to the shell voxels by least squares,
    refitted without outliers (a vein or sulcus in the shell: residuals beyond 3 robust sigmas)."""
    idx = np.argwhere(shell) + [c.start for c in sub]
    vals = v[sub][shell]
    a = np.empty((len(vals), 4))
    a[:, 0] = 1.0
    np.multiply(idx - np.asarray(centre), spacing_kji, out=a[:, 1:])
    # an axis along which the shell does not extend (one slice of a thick-slice scan) has no slope
    used = np.concatenate([[True], a[:, 1:].max(axis=0) > a[:, 1:].min(axis=0)])
    a = a[:, used]
    keep = None
    for _ in range(2):
        ak, vk = (a, vals) if keep is None else (a[keep], vals[keep])
        try:   # normal equations: a small system (the shell surrounds the centre: well conditioned)
            coef = np.linalg.solve(ak.T @ ak, ak.T @ vk)
        except np.linalg.LinAlgError:
            coef = np.linalg.lstsq(ak, vk, rcond=None)[0]
        resid = vals - a @ coef
        rk = resid if keep is None else resid[keep]
        mad = _quantile(np.abs(rk - _quantile(rk, 50)), 50)
        if mad <= 0:
            break
        keep = np.abs(resid) <= 3 * 1.4826 * mad
        if np.count_nonzero(keep) < 8:
            break
    slope = np.zeros(3)
    slope[used[1:]] = coef[1:]
    return slope


def _sample(a, n: int = 8192) -> np.ndarray:
    """An evenly strided subsample of about `n` values of `a` (all of them when fewer)."""
    a = np.asarray(a).ravel()
    return a[:: max(1, a.size // n)]


def _quantile(a, q) -> float:
    """np.percentile(a, q) (linear interpolation) without its overhead, for small arrays."""
    a = np.asarray(a, dtype=np.float64).ravel()
    x = q / 100.0 * (a.size - 1)
    lo = int(np.floor(x))
    hi = min(lo + 1, a.size - 1)
    if a.size <= 64:
        part = np.sort(a)
        return float(part[lo] + (part[hi] - part[lo]) * (x - lo))
    part = np.partition(a, lo)   # one selection; the next order statistic is the smallest above it
    low = part[lo]
    high = part[lo + 1:].min() if hi > lo else low
    return float(low + (high - low) * (x - lo))


def _union_box(a, b):
    """The smallest box (slices with explicit bounds) holding boxes `a` and `b`."""
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _grow_box(box, pad, shape):
    """`box` (slices) widened by `pad` voxels per axis, clipped to `shape`."""
    return tuple(slice(max(b.start - int(p), 0), min(b.stop + int(p), n)) for b, p, n in zip(box, pad, shape))


def _ring_index(shape, centre, spacing_kji):
    """In-plane distance (mm) of every voxel of a slice from the centre column."""
    jj = (np.arange(shape[1]) - centre[1]) * spacing_kji[1]
    ii = (np.arange(shape[2]) - centre[2]) * spacing_kji[2]
    return np.sqrt(jj[:, None] ** 2 + ii[None, :] ** 2)


_ANGLES = np.linspace(0, 2 * np.pi, 16, endpoint=False)
SIZE_QUANTILE = 30.0


def _crossings(sl, centre_ji, threshold, spacing_ji, reach_mm):
    """Distance (mm) along 16 in-plane rays from the centre at which slice `sl` (or each
    slice of a stack [k, j, i]) first rises above `threshold` (1e6 when it never does
    within reach): shape (16,), or (slices, 16) for a stack."""
    step = 0.25 * float(min(spacing_ji))
    t = np.arange(step, reach_mm, step)
    jj = centre_ji[0] + np.outer(np.sin(_ANGLES), t) / spacing_ji[0]
    ii = centre_ji[1] + np.outer(np.cos(_ANGLES), t) / spacing_ji[1]
    vals = boxops.bilinear_in_plane(sl, jj, ii)   # (16, steps), or (slices, 16, steps) for a stack
    above = vals > threshold
    first = np.argmax(above, axis=-1)
    return np.where(above.any(axis=-1), t[first], 1e6)  # never: beyond any radius


def _dip_zone(v, free, r, centre, threshold, spacing_kji, margin_mm, quantile, slice_rays=True, memo=None):
    """Where the CMB can be: a dip is round, so within the radius at which rays from its
    centre rise above `threshold` (the `quantile`-th percentile over 16 in-plane rays: a
    vein, sulcus or dark grey matter beside the CMB spoils only some rays), plus margin;
    on the contiguous slices around the centre whose centre is below the threshold and
    whose rays still rise above it within that radius.  Returns (zone, centre (k, j, i)
    float, the zone's box, the radius in mm without the margin)."""
    k0 = centre[0]
    sp = spacing_kji[1:]
    reach = float(min(v.shape[1] * sp[0], v.shape[2] * sp[1])) / 2
    cj, ci = float(centre[1]), float(centre[2])
    memo = {} if memo is None else memo   # (threshold, centre) -> rays of the centre slice

    def centre_rays(cj, ci):
        key = (threshold, cj, ci)
        if key not in memo:
            memo[key] = _crossings(v[k0], (cj, ci), threshold, sp, reach)
        return memo[key]

    cross = centre_rays(cj, ci)
    # re-centre once on the midpoints of the chords whose both ends were found
    half = len(_ANGLES) // 2
    ok = (cross[:half] < reach) & (cross[half:] < reach)
    if ok.any():
        shift = (cross[:half] - cross[half:])[ok] / 2
        cj += float(np.mean(shift * np.sin(_ANGLES[:half][ok]))) / sp[0]
        ci += float(np.mean(shift * np.cos(_ANGLES[:half][ok]))) / sp[1]
        cj = min(max(cj, 0.0), v.shape[1] - 1.0)
        ci = min(max(ci, 0.0), v.shape[2] - 1.0)
        cross = centre_rays(cj, ci)
        r = _ring_index(v.shape, (k0, cj, ci), spacing_kji)
    j0, i0 = int(round(cj)), int(round(ci))
    radius = _quantile(cross, quantile)
    if radius >= reach:  # most rays never leave the dark (a plateau, skull, a large vein): trust those that do
        found = cross[cross < reach]
        radius = _quantile(found, 50) if found.size >= 2 else reach
    inside = r <= radius + margin_mm
    # candidate slices: contiguous around k0 while the centre column is still below the threshold
    cols = v[:, max(j0 - 1, 0):j0 + 2, max(i0 - 1, 0):i0 + 2].reshape(v.shape[0], -1).min(axis=1) <= threshold
    ks = [k0]
    for step in (-1, 1):
        k = k0 + step
        while 0 <= k < v.shape[0] and cols[k]:
            ks.append(k)
            k += step
    if slice_rays and len(ks) > 1:  # ... and its rays still rise above it within the radius
        others = sorted(ks[1:])
        cross = _crossings(v[others], (cj, ci), threshold, sp, reach)
        good = {k: _quantile(c, quantile) <= radius + margin_mm for k, c in zip(others, cross)}
        ks = [k0]
        for step in (-1, 1):
            k = k0 + step
            while k in good and good[k]:
                ks.append(k)
                k += step
    zone = np.zeros(v.shape, bool)
    k_lo, k_hi = min(ks), max(ks) + 1
    zone[k_lo:k_hi] = inside
    zone &= free | (r <= 0)
    rows, columns = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    if rows.size:
        box = (slice(k_lo, k_hi), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1))
    else:
        box = (slice(k0, k0 + 1), slice(j0, j0 + 1), slice(i0, i0 + 1))
    return zone, (float(k0), cj, ci), box, float(radius)


def _own_basin(v, join, seeds, free, h, connectivity):
    """join with voxels outside the seeds' watershed basin set to inf.

    Markers: the seeds (with the voxels joining at no cost, darker than the minimum) and
    every other regional minimum deeper than `h` (noise minima are shallower).
    """
    from scipy import ndimage
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed

    footprint = ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    core = (join <= 0) | seeds
    minima = h_minima(np.where(free, v, v[free].max()), h, footprint=footprint).astype(bool) & free
    others, n = ndimage.label(minima & ~ndimage.binary_dilation(core, footprint), footprint)
    markers = np.where(others > 0, others + 1, 0)
    markers[core] = 1
    basins = watershed(v, markers, connectivity=1 if connectivity == 6 else 3, mask=free | seeds)
    out = join.copy()
    out[basins != 1] = np.inf
    return out
