"""Rigid (then optionally affine) registration of a follow-up scan to its baseline (SimpleITK).

Both scans are first brought to a common working resolution (``WORK_SPACING_MM`` isotropic,
smoothed so that thick slices and fine in-plane grids look alike), then the follow-up
(moving) is registered to the baseline (fixed) with Mattes mutual information, sampled
inside the baseline's brain (the rough brain extraction of `CMBLib.location.registration`,
or its foreground when the image is already skull-stripped), on a three-level pyramid.
Two starts are tried, the scanner frame as it is (the head where the scanner put it) and
the brains' centroids aligned; the one with the better metric wins.

The result maps points of the follow-up to the baseline: ``followup_to_baseline`` is a
4x4 matrix on homogeneous RAS mm (follow-up RAS -> baseline RAS).
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..progress import check_cancel, report

WORK_SPACING_MM = 2.0
COARSE = ([4], [4.0])        # each start: 8 mm voxels, smoothed 4 mm
FINE = ([2, 1], [2.0, 0.0])  # the better start refined at 4 and 2 mm
SAMPLING = 0.15
ITERATIONS = 100
MIN_STEP = 0.005
MASK_MARGIN_MM = 4.0
LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class FollowupRegistration:
    """Follow-up -> baseline mapping and the figures the quality check reads."""

    followup_to_baseline: np.ndarray       # 4x4, follow-up RAS mm -> baseline RAS mm
    metric: float                          # final Mattes MI (negative; lower is better)
    kind: str = "rigid"                    # "rigid" or "affine"
    start: str = "scanner"                 # which start won: "scanner" or "centroids"
    seconds: float = 0.0
    warnings: list = field(default_factory=list)
    sitk_transform: object = None          # baseline LPS -> follow-up LPS (SimpleITK's direction)

    def to_baseline(self, points_ras) -> np.ndarray:
        """(N, 3) follow-up RAS mm -> baseline RAS mm."""
        p = np.atleast_2d(np.asarray(points_ras, float)).reshape(-1, 3)
        m = self.followup_to_baseline
        return p @ m[:3, :3].T + m[:3, 3]

    def to_followup(self, points_ras) -> np.ndarray:
        """(N, 3) baseline RAS mm -> follow-up RAS mm."""
        p = np.atleast_2d(np.asarray(points_ras, float)).reshape(-1, 3)
        m = np.linalg.inv(self.followup_to_baseline)
        return p @ m[:3, :3].T + m[:3, 3]

    def sitk_followup_to_baseline(self):
        """SimpleITK transform, follow-up LPS mm -> baseline LPS mm (resamples the baseline onto a
        grid of the follow-up; the inverse direction of `sitk_transform`), from the matrix."""
        t = _sitk().AffineTransform(3)
        m = self.followup_to_baseline
        t.SetMatrix((LPS @ m[:3, :3] @ LPS).ravel().tolist())
        t.SetTranslation((LPS @ m[:3, 3]).tolist())
        return t

    def as_dict(self) -> dict:
        return {"kind": self.kind, "start": self.start, "mattes_mi": round(-self.metric, 4),
                "followup_to_baseline_ras": np.round(self.followup_to_baseline, 6).tolist(),
                "seconds": round(self.seconds, 2)}


def _sitk():
    import SimpleITK as sitk

    return sitk


def working_image(volume: Volume, spacing_mm: float = WORK_SPACING_MM):
    """`volume` as float32 sitk (LPS), clamped to its 0.5-99.5 percentiles, smoothed to and
    resampled on `spacing_mm` voxels (thicker slices kept) along its own axes."""
    from ..location.registration import prepare_subject

    return prepare_subject(volume, spacing_mm)


def brain_mask(image):
    """Binary sitk mask of the brain of a working image: the head (above 10% of the bright
    tissue's 99th percentile, largest
    part, closed and hole-filled), cut down to its brain by the atlas registration's rough
    extraction across the dark skull when the image is a whole head."""
    from ..location.registration import rough_brain_mask

    sitk = _sitk()
    arr = sitk.GetArrayViewFromImage(image)
    level = 0.1 * float(np.percentile(arr[arr > arr.min()], 99))
    head = sitk.BinaryThreshold(image, lowerThreshold=level, upperThreshold=1e30)
    head = sitk.RelabelComponent(sitk.ConnectedComponent(head), sortByObjectSize=True) == 1
    head = sitk.BinaryFillhole(sitk.BinaryMorphologicalClosing(sitk.Cast(head, sitk.sitkUInt8), [2, 2, 2]))
    brain = rough_brain_mask(image, head)
    return brain if brain is not None else head


def _centroid(mask) -> np.ndarray:
    from ..location.registration import _centroid as centroid

    try:
        return centroid(mask)
    except CMBError:
        raise CMBError("no brain found in the image; cannot register it") from None


def _method(fixed_mask, shrink, sigmas):
    from ..location.registration import _mi_method

    reg = _mi_method(fixed_mask, bins=32, sampling=SAMPLING)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=MIN_STEP, numberOfIterations=ITERATIONS,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def _run(fixed, moving, fixed_mask, initial, shrink, sigmas):
    reg = _method(fixed_mask, shrink, sigmas)
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    return out, float(reg.GetMetricValue())


def _flatten(transform):
    """The linear part of a (composite) SimpleITK transform as (3x3 matrix, centre, translation)."""
    sitk = _sitk()
    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(transform.GetNumberOfTransforms() - 1)
    try:
        transform = transform.Downcast()
    except AttributeError:
        pass
    return (np.array(transform.GetMatrix()).reshape(3, 3), np.array(transform.GetCenter()),
            np.array(transform.GetTranslation()))


def _ras_matrix(transform) -> np.ndarray:
    """4x4 follow-up RAS -> baseline RAS from SimpleITK's baseline LPS -> follow-up LPS."""
    a, c, t = _flatten(transform)
    m = np.eye(4)        # LPS: y = A (x - c) + c + t
    m[:3, :3] = a
    m[:3, 3] = -a @ c + c + t
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return np.linalg.inv(flip @ m @ flip)


def register_followup(baseline: Volume, followup: Volume, affine: bool = False, progress=None,
                      cancel=None, images=None) -> FollowupRegistration:
    """Register `followup` to `baseline` (rigid, then affine when `affine`).

    images: optional precomputed (fixed, fixed_brain, moving, moving_brain) working images
    (`working_image`, `brain_mask`).  Raises CMBError when an image cannot be registered at
    all (constant, no brain); whether the result can be trusted is `quality.check`'s job."""
    import time

    sitk = _sitk()
    t0 = time.perf_counter()
    report(progress, 0.0, "registration: preparing the images")
    fixed, fixed_brain, moving, moving_brain = images or prepare(baseline, followup)
    radius = max(int(round(MASK_MARGIN_MM / WORK_SPACING_MM)), 1)
    fixed_mask = sitk.BinaryDilate(fixed_brain, [radius] * 3)
    check_cancel(cancel)
    c_fixed, c_moving = _centroid(fixed_brain), _centroid(moving_brain)
    best = None
    for n, name in enumerate(("scanner", "centroids")):
        report(progress, 0.1 + 0.3 * n, f"registration: coarse rigid (start {n + 1} of 2)")
        start = sitk.Euler3DTransform()
        start.SetCenter(c_fixed.tolist())
        if name == "centroids":
            start.SetTranslation((c_moving - c_fixed).tolist())
        try:
            out, metric = _run(fixed, moving, fixed_mask, start, *COARSE)
        except RuntimeError:   # e.g. too few samples overlap: this start failed
            continue
        if best is None or metric < best[1]:
            best = (out, metric, name)
        check_cancel(cancel)
    if best is None:
        raise CMBError("registration failed: the two scans do not overlap")
    report(progress, 0.7, "registration: rigid")
    rigid = sitk.Euler3DTransform()
    rigid.SetFixedParameters(best[0].GetFixedParameters())
    rigid.SetParameters(best[0].GetParameters())
    transform, metric = _run(fixed, moving, fixed_mask, rigid, *FINE)
    start_name = best[2]
    kind = "rigid"
    if affine:
        report(progress, 0.85, "registration: affine")
        a, c, t = _flatten(transform)
        aff = sitk.AffineTransform(3)
        aff.SetCenter(c.tolist())
        aff.SetMatrix(a.ravel().tolist())
        aff.SetTranslation(t.tolist())
        transform, metric = _run(fixed, moving, fixed_mask, aff, *FINE)
        kind = "affine"
    report(progress, 1.0, "registration done")
    return FollowupRegistration(_ras_matrix(transform), metric, kind, start_name, time.perf_counter() - t0,
                                sitk_transform=transform)


def prepare(baseline: Volume, followup: Volume):
    """(fixed, fixed_brain, moving, moving_brain): working images and brain masks."""
    fixed, moving = working_image(baseline), working_image(followup)
    return fixed, brain_mask(fixed), moving, brain_mask(moving)
