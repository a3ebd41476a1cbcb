"""Large regions that turned dark since the baseline (superficial-siderosis-like or
haemorrhage-like), and which new CMBs lie near one.  Flagged for the reader, never graded.

On the 2 mm working images of the registration (`register.prepare`), in the baseline's
frame: both scans smoothed by ``SMOOTH_MM`` and divided by their own large-scale brain
signal (a ``BIAS_MM`` Gaussian inside the brain, so bias fields and scanner gains cancel);
a voxel has turned dark when the follow-up is at least ``DARKER`` (a fraction of the
local brain signal) below the baseline there and itself below ``DARK``.  Connected parts
of at least ``MIN_VOLUME_MM3`` (a CMB is far smaller) are the regions; a region is
*superficial* when it comes within ``SUPERFICIAL_MM`` of the brain's edge.  A new CMB is
flagged when it lies within ``NEAR_MM`` of a region.
"""
import numpy as np

SMOOTH_MM = 2.0
BIAS_MM = 20.0
DARKER = 0.35
DARK = 0.7
MIN_VOLUME_MM3 = 250.0
SUPERFICIAL_MM = 5.0
NEAR_MM = 10.0


def _sitk():
    import SimpleITK as sitk

    return sitk


def _relative(image, brain):
    """Image / its smooth brain signal (numpy [k, j, i]); 0 outside `brain`."""
    sitk = _sitk()
    a = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, SMOOTH_MM)).astype(np.float32)
    return relative_to_level(a, brain, np.asarray(image.GetSpacing(), float)[::-1])


def relative_to_level(a, brain, spacing_kji, bias_mm: float = BIAS_MM):
    """Array `a` [k, j, i] / its ``bias_mm`` Gaussian brain signal (normalised inside the
    bool `brain`; voxel sizes `spacing_kji` mm); 0 outside `brain`."""
    from scipy import ndimage as ndi

    sp = np.asarray(spacing_kji, float)
    w = brain.astype(np.float32)
    a = np.asarray(a, np.float32)
    num = ndi.gaussian_filter(a * w, bias_mm / sp)
    den = ndi.gaussian_filter(w, bias_mm / sp)
    level = np.where(den > 1e-3, num / np.maximum(den, 1e-3), 0.0)
    return np.where(brain & (level > 0), a / np.maximum(level, 1e-6), 0.0)


def dark_regions(images, registration) -> list:
    """Regions that turned dark: [{"centre_ras" (follow-up RAS mm), "baseline_centre_ras",
    "volume_mm3", "superficial"}], and their voxels (baseline RAS mm) under "_points"."""
    from scipy import ndimage as ndi

    sitk = _sitk()
    fixed, fixed_brain, moving, moving_brain = images
    t = registration.sitk_transform
    moved = sitk.Resample(moving, fixed, t, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk.Cast(moving * 0 + 1, sitk.sitkUInt8)            # the follow-up's field of view
    in_view = sitk.Resample(ones, fixed, t, sitk.sitkNearestNeighbor, 0)
    fb = sitk.GetArrayFromImage(fixed_brain) > 0
    brain = fb & (sitk.GetArrayFromImage(in_view) > 0)   # the baseline's brain: a dark band may leave the other
    if brain.sum() < 100:
        return []
    inner = ndi.binary_erosion(brain, iterations=1)
    b = _relative(fixed, brain)
    f = _relative(moved, brain)
    turned = inner & (b - f >= DARKER) & (f <= DARK)
    labels, n = ndi.label(turned, structure=np.ones((3, 3, 3)))
    if not n:
        return []
    sp = np.asarray(fixed.GetSpacing(), float)[::-1]
    voxel_mm3 = float(np.prod(sp))
    edge = ndi.distance_transform_edt(fb, sampling=sp)
    sizes = np.bincount(labels.ravel())
    out = []
    for lab in np.flatnonzero(sizes * voxel_mm3 >= MIN_VOLUME_MM3):
        if lab == 0:
            continue
        kji = np.argwhere(labels == lab)
        pts = np.array([fixed.TransformContinuousIndexToPhysicalPoint(p[::-1].astype(float).tolist())
                        for p in kji]) * np.array([-1.0, -1.0, 1.0])     # LPS -> RAS
        centre_b = pts.mean(axis=0)
        out.append({"centre_ras": registration.to_followup(centre_b)[0].round(2).tolist(),
                    "baseline_centre_ras": centre_b.round(2).tolist(),
                    "volume_mm3": round(len(kji) * voxel_mm3, 1),
                    "superficial": bool(edge[tuple(kji.T)].min() <= SUPERFICIAL_MM),
                    "_points": pts})
    return out


def flag_near(points_baseline_ras, regions) -> list:
    """Per point (baseline RAS mm): the index of a dark region within NEAR_MM, else None."""
    flags = []
    for p in np.asarray(points_baseline_ras, float).reshape(-1, 3):
        hit = None
        for n, region in enumerate(regions):
            if np.min(np.linalg.norm(region["_points"] - p, axis=1)) <= NEAR_MM:
                hit = n
                break
        flags.append(hit)
    return flags
