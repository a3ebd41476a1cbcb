"""New CMB candidates from the registered difference image, independent of the detector.

Static mimics (veins, iron, calcification) are in both scans and cancel in a difference; a
new CMB is a new focal darkening.  On a working grid in the follow-up's frame (its own axes,
in-plane voxels of at least ``GRID_MM``, its slice thickness kept): both scans are smoothed
in their own frames to one common resolution (per follow-up axis the coarser of the two
scans' voxels, as box widths, plus ``FLOOR_MM``; the baseline's voxels are turned into the
follow-up's axes by the registration), the baseline is resampled onto the grid through the
registration, and each is divided by its own smooth brain signal
(`siderosis.relative_to_level`, so gains and bias fields cancel).  The darkening
``d = baseline - follow-up`` (a fraction of the local brain signal; the baseline's darkest
value within ``NEIGHBOUR_MM``, so that a dark structure of both scans slightly shifted by the
registration or blurred differently cancels) is searched for local
maxima of at least ``MIN_PEAK`` where the follow-up itself lies within ``DARK``, inside the
common brain eroded by ``EDGE_MM``; each spot is the part around its maximum at half its peak,
kept when its equivalent diameter lies within ``DIAMETER_MM`` (larger parts are the dark
regions of `siderosis`).  Which spots count as new CMBs (peak at least a threshold, away
from every detection) is `unexplained`'s job.
"""
import numpy as np

from ..geometry import Volume

GRID_MM = 1.0                 # finest in-plane voxel of the working grid (mm)
FLOOR_MM = 1.0                # common extra smoothing (Gaussian sigma, mm) against noise
MIN_PEAK = 0.08               # smallest peak darkening kept as a candidate
DARK = (0.3, 0.9)             # the follow-up at the peak, as a fraction of its brain signal: a
#                               small CMB, smoothed, is not black; black is a vessel or the brain's edge
EDGE_MM = 3.0                 # spots closer to the common brain's edge are left out
DIAMETER_MM = (2.0, 10.0)     # equivalent diameter of the half-peak part (mm)
PEAK_WINDOW_MM = 5.0          # a local maximum is the largest value within this box (mm)
NEIGHBOUR_MM = 1.5            # the baseline's darkest value within this distance is compared (mm)
BOX_MM = 8.0                  # half side of the box searched for a spot's half-peak part (mm)
MAX_CANDIDATES = 500
SAME_SPOT_MM = 3.0            # a spot this close to a detection is that detection, whatever the tolerance
DARKENING = 0.25              # default threshold on the peak darkening (chosen on the tuning seeds 0-9 of
#                               benchmarks/bench_compare.py by the rule of docs/compare.md)
MAX_NEW_DIAMETER_MM = 10.0    # largest half-peak diameter of a spot counted as a new CMB (mm)


def _sitk():
    import SimpleITK as sitk

    return sitk


def _box_variance(spacing) -> np.ndarray:
    return np.asarray(spacing, float) ** 2 / 12.0


def _smoothed(volume: Volume, variance_own_axes) -> Volume:
    """`volume` smoothed by a Gaussian of the given variance (mm^2) along its i, j, k axes."""
    from scipy import ndimage as ndi

    sigma = np.sqrt(np.maximum(variance_own_axes, 0.0)) / np.asarray(volume.spacing, float)
    arr = np.asarray(volume.array, np.float32)
    return volume.with_array(ndi.gaussian_filter(arr, sigma[::-1], truncate=3.0).astype(np.float32))


def working_pair(baseline: Volume, followup: Volume, registration):
    """(follow-up, baseline) float32 arrays [k, j, i] on the working grid, smoothed to one
    resolution, and the grid (sitk image, follow-up LPS)."""
    from ..io import volume_to_sitk

    sitk = _sitk()
    fs, bs = np.asarray(followup.spacing, float), np.asarray(baseline.spacing, float)
    grid_sp = np.maximum(fs, GRID_MM)
    # baseline axes in follow-up index axes: follow-up direction^T . rotation . baseline direction
    rot = np.linalg.inv(registration.followup_to_baseline[:3, :3])          # baseline RAS -> follow-up RAS
    m = np.asarray(followup.direction, float).T @ rot @ np.asarray(baseline.direction, float)
    base_var = (m ** 2) @ _box_variance(bs)                                   # along follow-up axes
    target = np.maximum.reduce([_box_variance(fs), base_var, _box_variance(grid_sp)]) + FLOOR_MM ** 2
    f_s = _smoothed(followup, target - _box_variance(fs))
    b_s = _smoothed(baseline, (m.T ** 2) @ target - _box_variance(bs))        # target seen along baseline axes
    f_img = sitk.Cast(volume_to_sitk(f_s), sitk.sitkFloat32)
    size = [max(int(round(n * s / g)), 1) for n, s, g in zip(f_img.GetSize(), fs, grid_sp)]
    direction = np.array(f_img.GetDirection()).reshape(3, 3)
    origin = np.array(f_img.GetOrigin()) + direction @ ((grid_sp - fs) / 2.0)
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing(grid_sp.tolist())
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(f_img.GetDirection())
    f = sitk.Resample(f_img, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    b = sitk.Resample(sitk.Cast(volume_to_sitk(b_s), sitk.sitkFloat32), grid, registration.sitk_followup_to_baseline(),
                      sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(f), sitk.GetArrayFromImage(b), grid


def common_brain(images, registration, grid, baseline: Volume, followup: Volume):
    """Bool [k, j, i] on `grid`: inside both brain masks of the registration's working
    images (`register.prepare`), inside the baseline's image and where neither scan is 0
    (a skull-stripped scan's own edge)."""
    from ..io import volume_to_sitk

    sitk = _sitk()
    _, fixed_brain, _, moving_brain = images
    t = registration.sitk_followup_to_baseline()
    fb = sitk.Resample(sitk.Cast(fixed_brain, sitk.sitkUInt8), grid, t, sitk.sitkNearestNeighbor, 0)
    mb = sitk.Resample(sitk.Cast(moving_brain, sitk.sitkUInt8), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    b_fg = volume_to_sitk(baseline.with_array((np.asarray(baseline.array) != 0).astype(np.uint8)))
    f_fg = volume_to_sitk(followup.with_array((np.asarray(followup.array) != 0).astype(np.uint8)))
    b_in = sitk.Resample(b_fg, grid, t, sitk.sitkNearestNeighbor, 0)
    f_in = sitk.Resample(f_fg, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    out = sitk.GetArrayFromImage(fb) > 0
    for part in (mb, b_in, f_in):
        out &= sitk.GetArrayFromImage(part) > 0
    return out


def find_spots(baseline: Volume, followup: Volume, images, registration, min_peak: float = MIN_PEAK) -> list:
    """Focal spots darker on the follow-up than on the registered baseline (module
    docstring), strongest first: [{"centre_ras" (follow-up RAS mm), "baseline_centre_ras"
    (baseline RAS mm), "peak_darkening" (fraction of the brain signal), "followup_relative"
    (the follow-up at the peak, same unit), "volume_mm3", "diameter_mm" (equivalent, of the
    half-peak part)}].  images: `register.prepare`'s working images and brain masks."""
    from scipy import ndimage as ndi

    from .siderosis import relative_to_level

    f, b, grid = working_pair(baseline, followup, registration)
    brain = common_brain(images, registration, grid, baseline, followup)
    if brain.sum() < 100:
        return []
    sp = np.asarray(grid.GetSpacing(), float)[::-1]                   # k, j, i
    inner = ndi.distance_transform_edt(brain, sampling=sp) > EDGE_MM
    f_rel = relative_to_level(f, brain, sp)
    b_rel = relative_to_level(b, brain, sp)
    reach = 2 * np.floor(NEIGHBOUR_MM / sp).astype(int) + 1
    if np.any(reach > 1):          # a dark structure of both scans, slightly shifted or blurred, cancels
        b_rel = ndi.minimum_filter(np.where(brain, b_rel, np.inf), size=tuple(reach))
    d = np.where(inner, b_rel - f_rel, 0.0).astype(np.float32)
    window = 2 * np.ceil(PEAK_WINDOW_MM / 2 / sp).astype(int) + 1
    peaks = (d >= min_peak) & (d == ndi.maximum_filter(d, size=tuple(window))) & (f_rel >= DARK[0]) & (f_rel <= DARK[1])
    kji = np.argwhere(peaks)
    order = np.argsort(-d[tuple(kji.T)])[:MAX_CANDIDATES]
    half = np.ceil(BOX_MM / sp).astype(int)
    claimed = np.zeros(d.shape, bool)
    voxel_mm3 = float(np.prod(sp))
    lo_d, hi_d = DIAMETER_MM
    out = []
    for p in kji[order]:
        if claimed[tuple(p)]:
            continue
        lo, hi = np.maximum(p - half, 0), np.minimum(p + half + 1, d.shape)
        box = tuple(slice(a, z) for a, z in zip(lo, hi))
        peak = float(d[tuple(p)])
        labels, _ = ndi.label(d[box] >= 0.5 * peak, structure=np.ones((3, 3, 3)))
        part = labels == labels[tuple(p - lo)]
        claimed[box] |= part
        touches = any((part.take(0, axis=a).any() and lo[a] > 0) or
                      (part.take(-1, axis=a).any() and hi[a] < d.shape[a]) for a in range(3))
        volume = float(part.sum()) * voxel_mm3
        diameter = (6.0 * volume / np.pi) ** (1.0 / 3.0)
        if touches or not lo_d <= diameter <= hi_d:
            continue
        w = d[box][part]
        centre = (np.argwhere(part) * w[:, None]).sum(axis=0) / w.sum() + lo          # k, j, i
        lps = np.array(grid.TransformContinuousIndexToPhysicalPoint(centre[::-1].astype(float).tolist()))
        ras = lps * np.array([-1.0, -1.0, 1.0])
        out.append({"centre_ras": ras.round(2).tolist(),
                    "baseline_centre_ras": registration.to_baseline(ras)[0].round(2).tolist(),
                    "peak_darkening": round(peak, 3), "followup_relative": round(float(f_rel[tuple(p)]), 3),
                    "volume_mm3": round(volume, 1), "diameter_mm": round(float(diameter), 2)})
    return out


def unexplained(spots, baseline_records, followup_records, registration, tolerance_mm: float,
                threshold: float = DARKENING, followup_support=None,
                max_diameter_mm: float = MAX_NEW_DIAMETER_MM) -> list:
    """``new`` entries (``"how": "difference"``) for the spots whose peak darkening reaches
    `threshold`, whose half-peak part is at most `max_diameter_mm` across (equivalent
    diameter, mm) and that lie farther than `tolerance_mm` (at least ``SAME_SPOT_MM``) from
    every follow-up record and from every baseline record carried onto the follow-up
    (``centre_ras``: each scan's RAS mm).  followup_support: `matching.probability_support`
    of the follow-up's probability, for its ``max_probability`` near the spot (or None)."""
    known = [np.asarray([r["centre_ras"] for r in followup_records], float).reshape(-1, 3)]
    if len(baseline_records):
        known.append(registration.to_followup([r["centre_ras"] for r in baseline_records]))
    known = np.vstack(known)
    out = []
    for s in spots:
        if s["peak_darkening"] < threshold or s["diameter_mm"] > max_diameter_mm:
            continue
        c = np.asarray(s["centre_ras"], float)
        if len(known) and np.min(np.linalg.norm(known - c, axis=1)) <= max(tolerance_mm, SAME_SPOT_MM):
            continue
        entry = {"centre_ras": c.tolist(), "baseline_centre_ras": None, "diameter_mm": s["diameter_mm"],
                 "volume_mm3": s["volume_mm3"], "peak_darkening": s["peak_darkening"], "how": "difference"}
        hit = followup_support(c) if followup_support else None
        if hit is not None:
            entry["max_probability"] = round(float(hit[0]), 3)
        out.append(entry)
    return out
