"""Can the comparison be trusted?  Figures of a follow-up registration and the gate on them.

Measured on the working images of `register.prepare` (2 mm), inside the baseline's brain:

* ``correlation``: Pearson correlation of the baseline and the registered follow-up, both
  smoothed, over the brain voxels both scans show.  The same brain re-acquired (other slice
  thickness, grid, noise) gives 0.8-0.95; an unrelated image or another head about 0-0.4
  (`benchmarks/bench_compare.py --gate` prints the measured values).
* ``overlap``: fraction of the baseline brain that the follow-up brain covers after
  registration (partial coverage: a follow-up slab), and ``followup_overlap`` the other way.
* ``rotation_deg`` / ``translation_mm``: size of the head motion found; ``scales``: singular
  values of the linear part (1 for a rigid fit).

`problems` lists what fails (empty when the comparison may be used); `check` raises the
one-line CMBError the CLI prints with exit code 2.
"""
import numpy as np

from ..errors import CMBError

MIN_CORRELATION = 0.5
MIN_OVERLAP = 0.25          # of the smaller of the two brains
MAX_ROTATION_DEG = 40.0
SCALE_RANGE = (0.85, 1.15)  # affine fits only
SMOOTH_MM = 2.0


def _sitk():
    import SimpleITK as sitk

    return sitk


def assess(registration, images) -> dict:
    """Quality figures (module docstring) of `registration` (`register.FollowupRegistration`)
    on `images` = (fixed, fixed_brain, moving, moving_brain) working images."""
    sitk = _sitk()
    fixed, fixed_brain, moving, moving_brain = images
    t = registration.sitk_transform
    smooth_moving = sitk.SmoothingRecursiveGaussian(moving, SMOOTH_MM)
    moved = sitk.Resample(smooth_moving, fixed, t, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    in_view = sitk.Resample(sitk.Cast(moving_brain, sitk.sitkFloat32), fixed, t, sitk.sitkLinear, 0.0,
                            sitk.sitkFloat32)
    fb = sitk.GetArrayViewFromImage(fixed_brain) > 0
    mb = sitk.GetArrayViewFromImage(in_view) > 0.5
    a = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(fixed, SMOOTH_MM))
    b = sitk.GetArrayViewFromImage(moved)
    both = fb & mb
    corr = 0.0
    if both.sum() > 100:
        x, y = a[both].astype(float), b[both].astype(float)
        if x.std() > 0 and y.std() > 0:
            corr = float(np.corrcoef(x, y)[0, 1])
    n_fixed = int(fb.sum())
    n_moving = int(np.sum(sitk.GetArrayViewFromImage(moving_brain) > 0))
    common = int((fb & mb).sum())
    m = registration.followup_to_baseline[:3, :3]
    u, s, vt = np.linalg.svd(m)
    r = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
    return {"correlation": round(corr, 4), "overlap": round(common / max(n_fixed, 1), 4),
            "followup_overlap": round(min(1.0, common / max(n_moving, 1)), 4),
            "rotation_deg": round(angle, 2),
            "translation_mm": round(float(np.linalg.norm(registration.followup_to_baseline[:3, 3])), 2),
            "scales": [round(float(v), 4) for v in s], "mattes_mi": round(-registration.metric, 4)}


def problems(figures: dict) -> list:
    """Why the comparison cannot be trusted ([] when it can)."""
    out = []
    if figures["correlation"] < MIN_CORRELATION:
        out.append(f"the registered scans do not look alike (correlation {figures['correlation']:.2f}, "
                   f"needs {MIN_CORRELATION}): another patient, another sequence or a failed registration")
    smaller = max(figures["overlap"], figures["followup_overlap"])
    if smaller < MIN_OVERLAP:
        out.append(f"the two scans share only {100 * smaller:.0f}% of the brain (needs {100 * MIN_OVERLAP:.0f}%)")
    if figures["rotation_deg"] > MAX_ROTATION_DEG:
        out.append(f"the fit turns the head by {figures['rotation_deg']:.0f} degrees")
    lo, hi = SCALE_RANGE
    if min(figures["scales"]) < lo or max(figures["scales"]) > hi:
        out.append("the fit scales the head implausibly (" + ", ".join(f"{v:.2f}" for v in figures["scales"]) + ")")
    return out


def check(figures: dict) -> None:
    """CMBError (one line) when `problems(figures)` is not empty."""
    found = problems(figures)
    if found:
        raise CMBError("the comparison cannot be trusted: " + "; ".join(found))
