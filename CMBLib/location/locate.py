"""Anatomical location (MARS regions) of points in a subject image.

Two routes:

* **labels** (native): the user's FreeSurfer-style label map, aligned with the image in
  world (RAS) space (any grid), is turned into MARS regions by
  ``freesurfer.mars_from_freesurfer`` and read at each point.  Cortex without a
  parcellation (aseg 3/42, SynthSeg without ``--parc``) gets its lobe from the atlas.
* **atlas** (default): the MNI template is registered to the image
  (``registration.register_template``), each point is carried to MNI space and read in
  the shipped MARS atlas.

Boundary rule (both routes): a point on an unlabelled voxel (CSF in a sulcus or a
ventricle, just outside the brain edge) takes the nearest labelled voxel within
``NEAREST_LABEL_RADIUS_MM`` (3 mm); only points farther from any brain label are
``outside``.  Coordinates are RAS mm throughout.
"""
import hashlib
from collections import OrderedDict
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..progress import check_cancel, report
from ..validation import validate_image
from .atlas import load_atlas, nearest_label
from .freesurfer import LOBE_UNKNOWN, mars_from_freesurfer
from .regions import LOBES, REGION_ID, category_of, region_name, side_name

NEAREST_LABEL_RADIUS_MM = 3.0
UNKNOWN_LOBE_SEARCH_MM = 15.0  # atlas search radius for the lobe of unparcellated cortex
CACHE_SIZE = 4  # images whose affine registration (or its failure) is kept, e.g. in the warm worker
_REGISTRATIONS: "OrderedDict[str, object]" = OrderedDict()


def image_key(image: Volume) -> str:
    """A digest of `image` (voxels, dtype, grid): the same scan read twice has the same key."""
    a = np.ascontiguousarray(image.array)
    h = hashlib.blake2b(digest_size=16)
    h.update(str((a.dtype.str, a.shape, image.spacing, image.origin, image.direction.round(9).tolist())).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def registration_for(image: Volume, progress=None, cancel=None):
    """The affine atlas registration of `image` (`registration.register_template`), done once
    per image: kept for the last CACHE_SIZE images, so `cmb detect`'s location filter and
    `--location`, and later clicks on the same image in the warm worker, share it.  A failure
    (CMBError) is kept and raised again."""
    key = image_key(image)
    if key not in _REGISTRATIONS:
        from .registration import register_template

        template, mask = load_atlas().template_sitk()
        try:
            value = register_template(template, mask, image, False, progress, cancel)
        except CMBError as exc:
            value = exc
        _REGISTRATIONS[key] = value
        while len(_REGISTRATIONS) > CACHE_SIZE:
            _REGISTRATIONS.popitem(last=False)
    _REGISTRATIONS.move_to_end(key)
    value = _REGISTRATIONS[key]
    if isinstance(value, CMBError):
        raise CMBError(str(value))
    return value


class Locator:
    """Locates points in one image; the registration / label mapping is done once.

    image: the subject Volume; labels: optional FreeSurfer-id label Volume aligned with
    it in RAS space; deformable: add the B-spline stage to the atlas registration.
    Call ``locate(points_ras)``."""

    def __init__(self, image: Volume, labels: Optional[Volume] = None, progress=None, cancel=None,
                 deformable: bool = False, registration=None):
        validate_image(image, "image")
        self.image = image
        self.labels = labels
        self.registration = registration  # a RegistrationResult of this image to reuse
        self._native = None
        self._progress = progress
        self._cancel = cancel
        self.deformable = deformable
        self.warnings: list[str] = []   # one line each, e.g. an atlas fit that may be several mm off
        if labels is not None:
            _check_overlap(image, labels)
            report(progress, 0.0, "mapping the label map to MARS regions")
            region, side = mars_from_freesurfer(labels.array, labels.spacing[::-1])
            self._native = (region, side)
            check_cancel(cancel)

    # --- routes -----------------------------------------------------------------------
    def _register(self):
        if self.registration is None and not self.deformable:
            self.registration = registration_for(self.image, self._progress, self._cancel)
        elif self.registration is None:
            from .registration import register_template

            template, mask = load_atlas().template_sitk()
            self.registration = register_template(template, mask, self.image, self.deformable,
                                                  self._progress, self._cancel)
        self._warn_misfit()
        return self.registration

    def _warn_misfit(self) -> None:
        """One warning when the atlas fit drifted (`registration.affine_consistency_problem`,
        the detector's gate for its location filter): the regions named may be several mm off."""
        from .registration import affine_consistency_problem

        if not hasattr(self.registration, "rigid_transform"):   # not a register_template result
            return
        problem = affine_consistency_problem(self.registration)
        text = f"atlas locations may be several mm off: {problem}" if problem else None
        if text and text not in self.warnings:
            self.warnings.append(text)

    def _atlas_lookup(self, points_ras, radius_mm):
        mni = self._register().subject_to_template_ras(points_ras)
        reg, side, dist = load_atlas().lookup(mni, radius_mm)
        return reg, side, dist, mni

    def locate(self, points_ras) -> list[dict]:
        """One dict per (N, 3) RAS mm point: x, y, z, region, category, side, route,
        distance_mm (to the label used; 0 when on it, empty when outside) and, on the
        atlas route, mni_x, mni_y, mni_z."""
        pts = np.asarray(points_ras, dtype=float).reshape(-1, 3)
        if not np.all(np.isfinite(pts)):
            raise CMBError("point coordinates must be finite numbers (RAS mm)")
        mni = None
        if self._native is not None:
            region, side = self._native
            kji = self.labels.ras_to_voxel(pts)[:, ::-1]
            reg, sid, dist = nearest_label(region, side, kji, self.labels.spacing[::-1], NEAREST_LABEL_RADIUS_MM)
            unknown = reg == LOBE_UNKNOWN
            if unknown.any():
                reg[unknown] = self._atlas_lobe(pts[unknown])
            route = "labels"
        else:
            reg, sid, dist, mni = self._atlas_lookup(pts, NEAREST_LABEL_RADIUS_MM)
            route = "atlas"
        report(self._progress, 1.0, "location done")
        out = []
        for n, p in enumerate(pts):
            name = region_name(reg[n])
            ref_x = mni[n, 0] if mni is not None else p[0]
            rec = {
                "x": float(p[0]), "y": float(p[1]), "z": float(p[2]),
                "region": name, "category": category_of(name),
                "side": side_name(name, int(sid[n]), ref_x),
                "route": route,
                "distance_mm": None if np.isnan(dist[n]) else round(float(dist[n]), 2),
            }
            if mni is not None:
                rec.update(mni_x=round(float(mni[n, 0]), 2), mni_y=round(float(mni[n, 1]), 2),
                           mni_z=round(float(mni[n, 2]), 2))
            out.append(rec)
        return out

    def _atlas_lobe(self, pts):
        """Lobe ids for cortex points whose label map gives no lobe (from the atlas)."""
        mni = self._register().subject_to_template_ras(pts)
        atlas = load_atlas()
        lobe_only = np.where(np.isin(atlas.region, [REGION_ID[n] for n in LOBES]), atlas.region, 0)
        ijk = mni @ np.linalg.inv(atlas.label_affine)[:3, :3].T + np.linalg.inv(atlas.label_affine)[:3, 3]
        spacing = np.linalg.norm(atlas.label_affine[:3, :3], axis=0)
        reg, _, _ = nearest_label(lobe_only, atlas.side, ijk, spacing, UNKNOWN_LOBE_SEARCH_MM)
        reg[reg == 0] = REGION_ID["frontal"]  # no lobe within reach: most cortex is frontal
        return reg


def _check_overlap(image: Volume, labels: Volume) -> None:
    """The label map's labelled voxels must lie within the image (world RAS space)."""
    kji = np.argwhere(labels.array[::4, ::4, ::4] != 0) * 4
    if not len(kji):
        raise CMBError("the label map is empty")
    ijk = image.ras_to_voxel(labels.kji_to_ras(kji.astype(float)))
    inside = np.all((ijk > -0.5) & (ijk < np.array(image.shape_ijk) - 0.5), axis=1)
    if inside.mean() < 0.5:
        raise CMBError(f"only {100 * inside.mean():.0f}% of the label map lies inside the image; "
                       "the labels must be aligned with the image (same world coordinates)")


def locate_points(image: Volume, points_ras, labels: Optional[Volume] = None, progress=None, cancel=None,
                  deformable: bool = False) -> list[dict]:
    """MARS location of each (N, 3) RAS mm point in `image` (atlas route unless `labels`).

    Returns one dict per point: x, y, z, region (snake_case, see ``regions``), category
    (lobar | deep | infratentorial | outside), side (left | right | midline), route,
    distance_mm and, on the atlas route, mni_x/mni_y/mni_z.  `deformable` adds a coarse
    B-spline stage to the atlas registration.  Raises CMBError on bad input or when the
    atlas registration fails."""
    pts = np.asarray(points_ras, dtype=float)
    if pts.size == 0:
        return []
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise CMBError(f"points must be an (N, 3) array of RAS mm; got shape {pts.shape}")
    return Locator(image, labels, progress, cancel, deformable).locate(pts)


def locate_volume_points(image: Volume, points_kji, labels: Optional[Volume] = None, progress=None, cancel=None,
                         deformable: bool = False) -> list[dict]:
    """Same as ``locate_points`` for points given as array indices (k, j, i) of `image`
    (e.g. CMB centres from a detection mask)."""
    kji = np.asarray(points_kji, dtype=float).reshape(-1, 3)
    return locate_points(image, image.kji_to_ras(kji), labels, progress, cancel, deformable)
