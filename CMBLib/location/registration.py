"""Affine registration of the MNI template to a subject image (SimpleITK).

The template (fixed image, brain only, ~2 mm) is registered to the subject image
(moving image) so that the transform maps template (MNI) points to subject points,
both in SimpleITK's LPS mm.  Design choices:

* Mattes mutual information: works whatever the contrast (T1, T2*, SWI, inverted QSM).
* The metric is sampled only inside the template brain mask, dilated by
  ``MASK_MARGIN_MM``.  A subject image with skull and scalp is first reduced to its
  brain by a rough morphological extraction (``rough_brain_mask``): otherwise the
  template brain tends to swell onto the scalp.  If that fit fails the checks below,
  the whole image is registered instead.
* The subject image is smoothed and resampled to ~``WORK_SPACING_MM`` isotropic first:
  thick slices (e.g. 0.9 x 0.9 x 3 mm) and large matrices cost the same.
* Initialisation from the centroids of the template brain and of the subject's
  foreground (voxels unlike the image border, so an inverted background also works),
  refined by an exhaustive coarse search over pitch and superior/anterior shifts; then
  rigid (Euler, two pyramid levels) and affine (two levels); optionally a coarse
  B-spline (control points every ``BSPLINE_SPACING_MM``, moves bounded), kept only
  when it improves the mutual information (points are mapped back by fixed-point
  inversion).  Measured on the real FreeSurfer subject (1000 brain voxels, category
  agreement with its own labels): affine 87.1%, + B-spline 89.4%, at ~3x the time.
* Failure detection: an implausible transform (scale outside ``SCALE_RANGE``, a
  reflection, strong shear), a final mutual information below
  ``MIN_MUTUAL_INFORMATION`` (noise, non-brain images), a template brain that falls
  largely outside the subject's foreground, or a field of view showing less than
  ``MIN_BRAIN_COVERAGE`` of the brain (small crops) raises CMBError instead of returning a wrong
  labelling.  (A brain-shaped blob without anatomy can still pass: the check guards
  against gross failures, not subtle misalignment.)
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..io import volume_to_sitk
from ..progress import check_cancel, report

WORK_SPACING_MM = 2.5
MASK_MARGIN_MM = 6.0
SCALE_RANGE = (0.6, 1.6)  # subject brain size / template brain size, per axis
MAX_ANISOTROPY = 1.6  # largest / smallest singular value of the affine matrix
MIN_INSIDE_FRACTION = 0.60  # template brain voxels that must land on subject foreground (QSM masks
# often leave out the cerebellum or inferior frontal lobe: the QSM 2016 brain gives 0.67)
MIN_BRAIN_COVERAGE = 0.3  # fraction of the (registered) brain inside the field of view
MIN_FIELD_OF_VIEW_MM = 60.0  # the image must extend at least this far along two axes
MIN_MUTUAL_INFORMATION = 0.05  # below this the image shares no structure with a brain
SAMPLING_FRACTION = 0.15
ITERATIONS = (200, 30)  # rigid, affine (per pyramid level): most stop earlier, at MIN_STEP (affine 200
# until issue 26: on one 0.86 x 0.86 x 4 mm scan the 2 mm level drifted for 52 iterations, docs/location.md)
MIN_STEP = 0.05  # 0.01 until issue 26: 1.5-2x the time, transforms within 0.1 mm on the FreeSurfer brain
RIGID_LEVELS = ([4, 2], [4.0, 2.0])  # shrink factors, smoothing sigmas (mm) per pyramid level
AFFINE_LEVELS = ([2, 1], [2.0, 0.0])
TISSUE_FRACTION = 0.25  # rough brain extraction: tissue brighter than this x 98th percentile
SKULL_GAP_MM = 5.0  # erosion that separates brain from scalp across the skull
BRAIN_OF_HEAD_RANGE = (0.3, 0.85)  # brain / head foreground volume for the split to be used
BSPLINE_SPACING_MM = 35.0  # control-point spacing of the optional deformable stage
MAX_BSPLINE_DISPLACEMENT_MM = 8.0  # bound on each control-point move (mm)
COARSE_SHIFT_MM = 30.0  # coarse initial search range along S and A (mm)
COARSE_STEP_MM = 10.0
COARSE_SAMPLING = 0.5  # fraction of the (8 mm) template mask the coarse search samples (0.15 failed, docs/location.md)
LEGACY = {"ITERATIONS": (200, 200)}  # the setting changed by issue 26 (docs/location.md)
SEED = 1
TEMPLATE_CACHE_SIZE = 2  # templates whose masks (dilated, eroded), centroid and volume are kept
_TEMPLATE_CACHE: dict = {}


@dataclass
class RegistrationResult:
    """Template (MNI, LPS mm) -> subject (LPS mm) transform and quality figures."""

    transform: object  # SimpleITK.Transform
    metric: float  # final Mattes MI (negative; lower is better)
    inside_fraction: float  # template brain voxels on subject foreground
    scales: tuple  # singular values of the affine matrix
    warnings: list = field(default_factory=list)
    deformation: object = None  # optional BSplineTransform in template space, applied before `transform`
    coverage: float = 1.0  # fraction of the template brain inside the subject's field of view
    interior_mi: Optional[float] = None  # MI inside the template brain's interior (`filter_problems`)
    rigid_mi: Optional[float] = None  # MI (nats) of the rigid stage's fit (`points_mutual_information`)
    affine_mi: Optional[float] = None  # the same for `transform` (same samples, so the two compare)
    rigid_transform: object = None  # the rigid stage's fit (AffineTransform, template -> subject LPS mm)

    def subject_to_template_ras(self, points_ras) -> np.ndarray:
        """(N, 3) subject RAS mm -> template (MNI) RAS mm."""
        inverse = self.transform.GetInverse()
        pts = np.atleast_2d(np.asarray(points_ras, dtype=float))
        out = []
        for p in pts:
            q = np.array(inverse.TransformPoint((-p[0], -p[1], float(p[2]))))
            if self.deformation is not None:
                q = _invert_point(self.deformation, q)
            out.append((-q[0], -q[1], q[2]))
        return np.array(out, dtype=float).reshape(-1, 3)


def _invert_point(transform, target, iterations=30, tol_mm=0.01):
    """x with transform(x) = target (LPS mm), by fixed-point iteration (small, smooth
    displacements such as a coarse B-spline)."""
    x = np.array(target, dtype=float)
    for _ in range(iterations):
        moved = np.array(transform.TransformPoint(x.tolist()))
        step = target - moved
        x = x + step
        if np.linalg.norm(step) < tol_mm:
            break
    return x


def _sitk():
    import SimpleITK as sitk

    return sitk


def foreground_mask(image):
    """Binary mask (sitk) of the head or brain: voxels unlike the image's background.

    1. Padding / masked background: intensities shared (to 0.1% of the range) by at least
       10% of the image border are background wherever they recur (0 outside a QSM brain
       mask, a bright constant after contrast inversion, or both).
    2. Noisy background: the rest of the border (and the voxels next to any padding)
       is noise when it lies at the dark (or bright) end of the intensities; voxels
       within max(5 robust standard deviations, 2% of the range) of its median, or
       beyond it away from the tissue, are background.  (Next to padding of a
       skull-stripped image lies tissue, not noise: then nothing is removed.)
    The largest connected part of the rest, opened and hole-filled, is the foreground."""
    sitk = _sitk()
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    border = np.concatenate(
        [arr[0].ravel(), arr[-1].ravel(), arr[:, 0].ravel(), arr[:, -1].ravel(),
         arr[:, :, 0].ravel(), arr[:, :, -1].ravel()]
    )
    lo, hi = float(arr.min()), float(arr.max())
    tol = 1e-3 * (hi - lo if hi > lo else 1.0)
    background = np.zeros(arr.shape, dtype=bool)
    border_bg = np.zeros(border.shape, dtype=bool)
    values, counts = np.unique(np.round((border - lo) / tol), return_counts=True)
    for v in values[counts >= 0.1 * border.size]:
        centre = lo + v * tol
        background |= np.abs(arr - centre) <= 1.5 * tol
        border_bg |= np.abs(border - centre) <= 1.5 * tol
    noise = border[~border_bg]
    if background.any():  # padded image: its real edge lies next to the padding
        from scipy import ndimage

        edge = ndimage.binary_dilation(background, iterations=2) & ~background
        noise = np.concatenate([noise, arr[edge]])
    rest = arr[~background]
    if noise.size >= 0.05 * border.size and rest.size:
        centre = float(np.median(noise))
        spread = 1.4826 * float(np.median(np.abs(noise - centre)))
        margin = max(5.0 * spread, 0.02 * (hi - lo))
        r_lo, r_hi = np.percentile(rest, [0.5, 98])
        level = (centre - r_lo) / max(r_hi - r_lo, 1e-12)  # where the sample sits in the tissue range
        if level < 0.15:
            background |= arr < centre + margin  # dark (noise) background
        elif level > 0.85:
            background |= arr > centre - margin  # bright background (inverted contrast)
    fg = sitk.GetImageFromArray((~background).astype(np.uint8))
    fg.CopyInformation(image)
    fg = sitk.BinaryMorphologicalOpening(fg, [1, 1, 1])
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True)
    return sitk.BinaryFillhole(sitk.Cast(cc == 1, sitk.sitkUInt8))


def rough_brain_mask(image, foreground):
    """Brain (with its CSF) separated from scalp by the dark skull, or None.

    Tissue = foreground voxels brighter than ``TISSUE_FRACTION`` of the 98th percentile
    (skull and air are dark on T1, T2*, SWI); eroded by ``SKULL_GAP_MM`` it splits into
    brain and scalp; the largest part, grown back and hole-filled, is the brain.  None when
    nothing splits off (already skull-stripped, QSM) or the split looks wrong."""
    sitk = _sitk()
    arr = sitk.GetArrayViewFromImage(image)
    fg = sitk.GetArrayViewFromImage(foreground) > 0
    if not fg.any():
        return None
    tissue = sitk.GetImageFromArray((fg & (arr > TISSUE_FRACTION * np.percentile(arr[fg], 98))).astype(np.uint8))
    tissue.CopyInformation(image)
    radius = [max(int(round(SKULL_GAP_MM / sp)), 1) for sp in image.GetSpacing()]
    core = sitk.BinaryErode(tissue, radius)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(core), sortByObjectSize=True)
    brain = sitk.BinaryDilate(sitk.Cast(cc == 1, sitk.sitkUInt8), [r + 1 for r in radius])
    brain = sitk.BinaryFillhole(sitk.And(brain, foreground))
    n_brain = int(np.sum(sitk.GetArrayViewFromImage(brain)))
    ratio = n_brain / float(np.sum(fg))
    if not BRAIN_OF_HEAD_RANGE[0] <= ratio <= BRAIN_OF_HEAD_RANGE[1]:
        return None
    return brain


def prepare_subject(volume: Volume, spacing_mm: float = WORK_SPACING_MM):
    """Subject image as a float32 sitk image smoothed/resampled to ~`spacing_mm` (axes with
    coarser voxels keep theirs)."""
    sitk = _sitk()
    img = sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if not hi > lo:
        raise CMBError("the image is (nearly) constant; cannot register the atlas to it")
    img = sitk.Clamp(img, sitk.sitkFloat32, float(lo), float(hi))
    spacing = np.array(img.GetSpacing())
    target = np.maximum(spacing, spacing_mm)
    sigma = np.sqrt(np.maximum(target ** 2 - spacing ** 2, 0.0)) / 2.355
    if np.any(sigma > 0):
        img = sitk.SmoothingRecursiveGaussian(img, [float(max(s, 1e-3)) for s in sigma])
    size = [max(int(round(n * s / t)), 1) for n, s, t in zip(img.GetSize(), spacing, target)]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), [float(t) for t in target],
                         img.GetDirection(), float(lo), sitk.sitkFloat32)


def _template_key(image) -> tuple:
    """Grid and voxel digest of a template (mask): equal for equal images, whatever the object."""
    import hashlib

    sitk = _sitk()
    digest = hashlib.blake2b(sitk.GetArrayViewFromImage(image).tobytes(), digest_size=16).hexdigest()
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
            image.GetPixelIDValue(), digest)


def _cached(template_mask, what, make):
    """`make()` computed once per template mask (content, not object) and kept: the dilated
    and eroded masks, the centroid and the voxel count cost 0.2 s or more per registration."""
    key = (_template_key(template_mask), what)
    if key not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE[key] = make()
        masks = list(dict.fromkeys(k[0] for k in _TEMPLATE_CACHE))
        for old in masks[:-TEMPLATE_CACHE_SIZE]:
            for k in [k for k in _TEMPLATE_CACHE if k[0] == old]:
                del _TEMPLATE_CACHE[k]
    return _TEMPLATE_CACHE[key]


def _metric_mask(template_mask, margin_mm):
    """Template brain mask grown (margin > 0) or shrunk (margin < 0) by |margin| mm (cached)."""
    return _cached(template_mask, ("margin", float(margin_mm)), lambda: _metric_mask_uncached(template_mask, margin_mm))


def _metric_mask_uncached(template_mask, margin_mm):
    sitk = _sitk()
    radius = int(round(abs(margin_mm) / min(template_mask.GetSpacing())))
    if radius == 0:
        return template_mask
    if margin_mm > 0:
        return sitk.BinaryDilate(template_mask, [radius] * 3)
    return sitk.BinaryErode(template_mask, [radius] * 3)


def _centroid(mask) -> np.ndarray:
    sitk = _sitk()
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        raise CMBError("no foreground found in the image; cannot register the atlas to it")
    return np.array(stats.GetCentroid(1))


def _mi_method(fixed_mask, bins=32, sampling=None):
    """Registration method with Mattes MI sampled at random inside `fixed_mask`."""
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING_FRACTION if sampling is None else sampling, SEED)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _register(fixed, moving, fixed_mask, initial, shrink, sigmas, iterations):
    reg = _mi_method(fixed_mask)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=MIN_STEP, numberOfIterations=iterations, relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    out = reg.Execute(fixed, moving)
    return out, reg.GetMetricValue()


def _coarse_search(fixed, moving, fixed_mask, c_fixed, c_moving, shrink=4, sigma=4.0):
    """Best rigid start on a coarse grid (8 mm images): pitch (nodding) -0.3..0.3 rad and
    shifts of up to +-COARSE_SHIFT_MM along the superior and anterior axes around the
    centroid alignment.  Guards against a foreground centroid pulled away by the neck,
    a partial field of view or a tilted head."""
    sitk = _sitk()
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(c_fixed.tolist())
    rigid.SetTranslation((c_moving - c_fixed).tolist())
    reg = _mi_method(fixed_mask, bins=24, sampling=COARSE_SAMPLING)
    n = int(COARSE_SHIFT_MM // COARSE_STEP_MM)
    # Euler3D parameters: rx, ry, rz (rad), tx, ty, tz (mm, LPS).  Steps: 0.15 rad, 10 mm.
    reg.SetOptimizerAsExhaustive(numberOfSteps=[2, 0, 0, 0, n, n], stepLength=1.0)
    reg.SetOptimizerScales([0.15, 1.0, 1.0, 1.0, COARSE_STEP_MM, COARSE_STEP_MM])
    reg.SetShrinkFactorsPerLevel([shrink])
    reg.SetSmoothingSigmasPerLevel([sigma])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(rigid, inPlace=True)
    reg.Execute(fixed, moving)
    return rigid


def _as_affine(transform):
    """Flatten a (composite) transform that holds one linear transform to AffineTransform."""
    sitk = _sitk()
    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetNthTransform(transform.GetNumberOfTransforms() - 1)
    # Every linear transform exposes matrix / centre / translation.
    t = sitk.AffineTransform(3)
    base = sitk.Transform(transform)
    try:
        base = transform.Downcast()
    except AttributeError:
        pass
    t.SetCenter(base.GetCenter())
    t.SetMatrix(base.GetMatrix())
    t.SetTranslation(base.GetTranslation())
    return t


def register_template(template, template_mask, subject: Volume, deformable: bool = False,
                      progress=None, cancel=None) -> RegistrationResult:
    """Affine (optionally + B-spline) registration of the template (sitk, LPS) to the
    subject Volume.

    Returns a RegistrationResult; raises CMBError when the registration fails."""
    sitk = _sitk()
    report(progress, 0.0, "preparing the image for atlas registration")
    extent = sorted(n * sp for n, sp in zip(subject.shape_ijk, subject.spacing))
    if extent[1] < MIN_FIELD_OF_VIEW_MM:
        raise CMBError("the image covers only " + " x ".join(f"{e:.0f}" for e in extent) + " mm; the atlas "
                       "needs most of the brain in view (give a label map with --labels instead)")
    image = prepare_subject(subject)
    head = foreground_mask(image)
    brain = rough_brain_mask(image, head)
    attempts = [(image, head)]
    if brain is not None:  # a head: first try the brain alone (the template is brain only)
        floor = float(np.min(sitk.GetArrayViewFromImage(image)))
        attempts.insert(0, (sitk.Mask(image, brain, outsideValue=floor), brain))
    fixed_mask = _metric_mask(template_mask, MASK_MARGIN_MM)
    check_cancel(cancel)
    first = None
    for n, (moving, moving_fg) in enumerate(attempts):
        result = _affine_stages(template, template_mask, fixed_mask, moving, moving_fg, progress, cancel,
                                (n, len(attempts)))
        first = first or result
        if not _problems(result):
            break
    else:
        raise CMBError("atlas registration failed (" + "; ".join(_problems(first)) + "); "
                       "check the image or give a label map with --labels")
    if deformable:
        report(progress, 0.8, "atlas registration: deformable")
        result.deformation, result.metric = _deform(template, moving, fixed_mask, result.transform, result.metric)
        check_cancel(cancel)
    report(progress, 1.0, "atlas registration done")
    return result


def _affine_stages(template, template_mask, fixed_mask, moving, moving_fg, progress, cancel, attempt):
    """Coarse search, rigid and affine stages; the evaluated RegistrationResult."""
    n, total = attempt
    frac = 0.8 / total

    def at(x):
        return 0.05 + frac * (n + x)

    c_fixed = _cached(template_mask, "centroid", lambda: _centroid(template_mask))
    c_moving = _centroid(moving_fg)
    start = _coarse_search(template, moving, fixed_mask, c_fixed, c_moving)
    check_cancel(cancel)
    report(progress, at(0.3), "atlas registration: rigid")
    rigid_out, _ = _register(template, moving, fixed_mask, start, RIGID_LEVELS[0], RIGID_LEVELS[1], ITERATIONS[0])
    check_cancel(cancel)
    report(progress, at(0.6), "atlas registration: affine")
    affine_out, metric = _register(template, moving, fixed_mask, _as_affine(rigid_out), AFFINE_LEVELS[0],
                                   AFFINE_LEVELS[1], ITERATIONS[1])
    check_cancel(cancel)
    result = _evaluate(_as_affine(affine_out), metric, template, template_mask, moving, moving_fg)
    result.rigid_transform = _as_affine(rigid_out)
    points, values = _cached(template_mask, "check points", lambda: _check_points(template, fixed_mask))
    subject = _SampledImage(moving)
    result.rigid_mi = points_mutual_information(points, values, subject, result.rigid_transform)
    result.affine_mi = points_mutual_information(points, values, subject, result.transform)
    return result


def _check_points(template, fixed_mask):
    """(points (N, 3) LPS mm, template values (N,)): the voxels of the metric mask on the template
    at the rigid stage's finest pyramid level (smoothed by CHECK_LEVEL[1] mm, shrunk CHECK_LEVEL[0] x),
    where `affine_consistency_problem`'s two mutual informations are measured."""
    sitk = _sitk()
    shrink, sigma = CHECK_LEVEL
    coarse = sitk.Shrink(sitk.SmoothingRecursiveGaussian(template, sigma), [shrink] * 3)
    mask = sitk.Resample(fixed_mask, coarse, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    return _SampledImage(coarse).points(np.argwhere(inside)), sitk.GetArrayFromImage(coarse)[inside]


class _SampledImage:
    """A SimpleITK image as a numpy array (K, J, I) with its grid: index <-> LPS mm, linear sampling."""

    def __init__(self, image):
        self.array = _sitk().GetArrayFromImage(image).astype(np.float32)
        self.origin = np.array(image.GetOrigin())
        self.axes = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())  # columns: i, j, k

    def points(self, kji) -> np.ndarray:
        """LPS mm of (N, 3) array indices (k, j, i)."""
        return np.asarray(kji, float)[:, ::-1] @ self.axes.T + self.origin

    def sample(self, lps) -> np.ndarray:
        """Linear interpolation at (N, 3) LPS mm points; NaN outside the image."""
        from scipy.ndimage import map_coordinates

        ijk = np.linalg.solve(self.axes, (np.asarray(lps, float) - self.origin).T)
        return map_coordinates(self.array, ijk[::-1], order=1, mode="constant", cval=np.nan)


def points_mutual_information(points, values, subject, transform, bins: Optional[int] = None) -> float:
    """Mutual information (nats, joint histogram of `bins` x `bins`) between template `values` at
    `points` (N, 3, template LPS mm) and `subject` (a _SampledImage) at the points carried by the affine
    `transform` (template -> subject LPS mm); points that land outside the subject are left out.  The
    bins span the values' and the whole subject image's range, so two transforms compare on one scale
    (default CHECK_BINS)."""
    bins = bins or CHECK_BINS
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    moved = (points - centre) @ matrix.T + centre + np.array(transform.GetTranslation())
    sampled = subject.sample(moved)
    keep = np.isfinite(sampled)
    if keep.sum() < bins * bins:
        return 0.0
    lo, hi = float(np.min(subject.array)), float(np.max(subject.array))
    joint, _, _ = np.histogram2d(values[keep], sampled[keep], bins=bins,
                                 range=[[float(values.min()), float(values.max()) + 1e-6], [lo, hi + 1e-6]])
    p = joint / joint.sum()
    outer = p.sum(axis=1, keepdims=True) @ p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / outer[nz])))


def _deform(template, moving, fixed_mask, affine, affine_metric):
    """Coarse B-spline (control points every ~BSPLINE_SPACING_MM) after the affine, in
    template space, each control point bounded to +-MAX_BSPLINE_DISPLACEMENT_MM.
    Returns (BSplineTransform or None, metric); falls back to the affine (None) when it
    does not improve the full-resolution mutual information."""
    sitk = _sitk()
    extent = [n * s for n, s in zip(template.GetSize(), template.GetSpacing())]
    mesh = [max(int(round(e / BSPLINE_SPACING_MM)), 1) for e in extent]
    bspline = sitk.BSplineTransformInitializer(template, mesh, 3)
    reg = _mi_method(fixed_mask)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=40, maximumNumberOfCorrections=5,
                             maximumNumberOfFunctionEvaluations=200, costFunctionConvergenceFactor=1e7,
                             lowerBound=-MAX_BSPLINE_DISPLACEMENT_MM, upperBound=MAX_BSPLINE_DISPLACEMENT_MM)
    reg.SetShrinkFactorsPerLevel([2])
    reg.SetSmoothingSigmasPerLevel([2.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    try:
        reg.Execute(template, moving)
    except RuntimeError:
        return None, affine_metric
    # Compare with and without the B-spline at the same (full) resolution.
    both = sitk.CompositeTransform(affine)
    both.AddTransform(bspline)  # applied first: template -> bspline -> affine -> subject
    before = _metric(template, moving, fixed_mask, affine)
    after = _metric(template, moving, fixed_mask, both)
    if not after < before:
        return None, affine_metric
    return bspline, float(after)


def _metric(fixed, moving, fixed_mask, transform) -> float:
    """Mattes MI (negative) of `transform` on `fixed` (at its own resolution), over every voxel of
    `fixed_mask` (MetricEvaluate gives the same value whatever the sampling percentage)."""
    reg = _mi_method(fixed_mask)
    reg.SetInitialTransform(transform)
    return float(reg.MetricEvaluate(fixed, moving))


def _evaluate(transform, metric, template, template_mask, moving, moving_fg) -> RegistrationResult:
    sitk = _sitk()
    scales = tuple(float(s) for s in np.linalg.svd(np.array(transform.GetMatrix()).reshape(3, 3), compute_uv=False))
    det = float(np.linalg.det(np.array(transform.GetMatrix()).reshape(3, 3)))
    # Template brain carried to the subject grid; fraction landing on foreground, counted
    # only where the subject's field of view covers it (partial coverage is allowed).
    warped = sitk.Resample(template_mask, moving, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)
    w = sitk.GetArrayViewFromImage(warped) > 0
    fg = sitk.GetArrayViewFromImage(moving_fg) > 0
    inside = float(np.sum(w & fg) / max(np.sum(w), 1))
    n_brain = _cached(template_mask, "voxels", lambda: int(np.sum(sitk.GetArrayViewFromImage(template_mask) > 0)))
    brain_mm3 = n_brain * np.prod(template.GetSpacing()) * abs(det)
    coverage = float(np.sum(w) * np.prod(moving.GetSpacing()) / max(brain_mm3, 1e-6))
    res = RegistrationResult(transform, float(metric), inside, scales, coverage=coverage)
    res.interior_mi = interior_mutual_information(template, template_mask, moving, transform)
    if det < 0:
        res.warnings.append("reflection")
    return res


def _problems(res: Optional[RegistrationResult]):
    out = []
    lo, hi = SCALE_RANGE
    if min(res.scales) < lo or max(res.scales) > hi:
        out.append("implausible scale " + ", ".join(f"{s:.2f}" for s in res.scales))
    elif max(res.scales) / min(res.scales) > MAX_ANISOTROPY:
        out.append("implausible shear/anisotropy")
    if "reflection" in res.warnings:
        out.append("the fit mirrors the brain")
    if res.coverage < MIN_BRAIN_COVERAGE:
        out.append(f"the image shows only {100 * res.coverage:.0f}% of the brain")
    if -res.metric < MIN_MUTUAL_INFORMATION:
        out.append(f"mutual information {-res.metric:.3f} is too low: the image does not match a brain")
    if res.inside_fraction < MIN_INSIDE_FRACTION:
        out.append(f"only {100 * res.inside_fraction:.0f}% of the template brain lies on the image foreground")
    return out


# --- the gate of the detector's location filter -------------------------------------------
INTERIOR_EROSION_MM = 12.0      # the brain's interior: the template mask eroded by this
INTERIOR_BINS = 16
# Mattes MI inside it (16 bins), per polarity of the image: anatomy, not only a brain-shaped
# outline.  Measured (benchmarks/check_location_compartments.py --gate): pseudo-T2* of the real
# brains 0.06-0.30, the real QSM brain 0.021; the demo phantom 0.025, uniform noisy ellipsoids
# 0.000-0.004.  QSM's grey / white contrast is weak, hence its lower bound.
MIN_INTERIOR_MI = {"dark": 0.04, "bright": 0.015}
MIN_FILTER_COVERAGE = 0.55      # fraction of the brain the field of view must show for the filter
# An affine fit that moved the deep midline far from where the rigid stage put it, without
# matching the image better than that rigid fit did, is not trusted (`affine_consistency_problem`).
# Measured (benchmarks/check_registration_misfit.py, docs/location.md "Atlas misfit on clinical
# scans"): pseudo-T2* of the real QSM brain on 0.86 x 0.86 x 4 mm slices whose affine stage drifted
# (6.0-10.2 mm from the fit of the 1 mm brain at the deep midline) gained -0.017 to 0.006 in MI
# over their rigid fit, with 5.8-7.4 mm between the two fits; right fits that far from their rigid
# fit gained 0.017 or more.
MIN_AFFINE_GAIN = 0.010         # MI (nats, `points_mutual_information`) of the affine minus the rigid fit (None: off)
CHECK_LEVEL = (2, 2.0)          # template shrink factor, smoothing (mm): the rigid stage's finest level
CHECK_BINS = 32                 # histogram bins per image for that MI
MAX_UNSUPPORTED_SHIFT_MM = 3.0  # mean rigid -> affine displacement over the zone box (template mm)
MISFIT_BOX_MNI_MM = ((-4.0, 4.0), (-60.0, 5.0), (-4.0, 22.0))  # where, when the caller names no box:
# the box of location_filter's deep_midline_veins zone (MNI RAS mm)


def interior_mutual_information(template, template_mask, moving, transform) -> float:
    """Mattes MI (positive) of `transform`, sampled only in the template brain's interior (the
    mask eroded by INTERIOR_EROSION_MM): ventricles, deep grey and white matter against the
    subject.  A uniform ellipsoid or a phantom shares a brain's outline, not its inside."""
    sitk = _sitk()
    inner = _metric_mask(template_mask, -INTERIOR_EROSION_MM)
    if not np.any(sitk.GetArrayViewFromImage(inner)):
        return 0.0
    reg = _mi_method(inner, bins=INTERIOR_BINS, sampling=1.0)
    reg.SetInitialTransform(transform)
    try:
        return float(-reg.MetricEvaluate(template, moving))
    except RuntimeError:          # too few samples landed inside the subject image
        return 0.0


def filter_problems(result: RegistrationResult, subject: Volume, box_mni_mm=None, polarity: str = "dark") -> list:
    """Why the location filter must not use `result` ([] when it may): the checks of
    `register_template` (scale, shear, reflection, mutual information, foreground overlap),
    an interior MI under MIN_INTERIOR_MI[polarity] (not a brain: phantoms, uniform ellipsoids), an affine
    stage that moved the zone away from the rigid fit without support (`affine_consistency_problem`), under
    MIN_FILTER_COVERAGE of the brain in view (slabs), or a zone box (MNI RAS mm, ((x0, x1),
    (y0, y1), (z0, z1))) not wholly inside the field of view."""
    out = _problems(result)
    mi = getattr(result, "interior_mi", None)
    if mi is not None and mi < MIN_INTERIOR_MI.get(polarity, MIN_INTERIOR_MI["dark"]):
        out.append(f"the inside of the image does not look like a brain (interior mutual information {mi:.3f})")
    shaky = affine_consistency_problem(result, box_mni_mm)
    if shaky:
        out.append(shaky)
    if result.coverage < MIN_FILTER_COVERAGE:
        out.append(f"the image shows {100 * result.coverage:.0f}% of the brain (a slab); "
                   f"the filter needs {100 * MIN_FILTER_COVERAGE:.0f}%")
    if box_mni_mm is not None and not out:
        corners = np.array([[x, y, z] for x in box_mni_mm[0] for y in box_mni_mm[1] for z in box_mni_mm[2]], float)
        pts = []
        for p in corners:
            q = result.transform.TransformPoint((-p[0], -p[1], float(p[2])))
            pts.append((-q[0], -q[1], q[2]))
        ijk = subject.ras_to_voxel(np.array(pts))
        if not np.all((ijk > -0.5) & (ijk < np.array(subject.shape_ijk) - 0.5)):
            out.append("the deep midline lies partly outside the field of view")
    return out


def zone_shift_mm(a, b, box_mni_mm=None, step_mm: float = 2.0) -> float:
    """Mean distance (mm) between where two template -> subject transforms (SimpleITK, LPS mm)
    put the points of a `step_mm` grid over `box_mni_mm` (MNI RAS mm, ((x0, x1), (y0, y1),
    (z0, z1)); default MISFIT_BOX_MNI_MM)."""
    box = MISFIT_BOX_MNI_MM if box_mni_mm is None else box_mni_mm
    axes = [np.arange(lo, hi + 1e-6, step_mm) for lo, hi in box]
    ras = np.array(np.meshgrid(*axes, indexing="ij"), float).reshape(3, -1).T
    d = [np.linalg.norm(np.subtract(a.TransformPoint((-p[0], -p[1], p[2])), b.TransformPoint((-p[0], -p[1], p[2]))))
         for p in ras]
    return float(np.mean(d))


def affine_consistency_problem(result: RegistrationResult, box_mni_mm=None) -> Optional[str]:
    """Why the affine fit of `result` is not trusted at the zone, or None.

    Two cheap fits of the same image come out of `register_template`: the rigid stage's and the
    affine's.  When the affine moved the zone (`box_mni_mm`, default MISFIT_BOX_MNI_MM) by more than
    MAX_UNSUPPORTED_SHIFT_MM on average from the rigid fit while its mutual information
    (`points_mutual_information`: the metric mask's voxels on the template at CHECK_LEVEL) beats the
    rigid fit's by less than MIN_AFFINE_GAIN, the affine stage has drifted
    (on thick slices its coarse level can squash the brain) and the zone may be several mm off.
    None also when `result` carries no rigid fit (made elsewhere)."""
    if MIN_AFFINE_GAIN is None or result.rigid_transform is None or result.rigid_mi is None \
            or result.affine_mi is None:
        return None
    gain = result.affine_mi - result.rigid_mi
    if gain >= MIN_AFFINE_GAIN:
        return None
    shift = zone_shift_mm(result.transform, result.rigid_transform, box_mni_mm)
    if shift <= MAX_UNSUPPORTED_SHIFT_MM:
        return None
    return (f"the atlas fit is uncertain at the deep midline (the affine stage moved it {shift:.1f} mm from "
            f"the rigid fit, for a change in mutual information of only {gain:+.3f})")
