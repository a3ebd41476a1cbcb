"""FreeSurfer colour-table label ids -> MARS regions (native route, and the atlas build).

Accepted label maps (values are FreeSurfer ``FreeSurferColorLUT.txt`` ids):

* ``aseg`` / SynthSeg: 2/41 cerebral white matter, 3/42 cortex, 4/43 lateral ventricles,
  10/49 thalamus, 11-13/50-52 caudate, putamen, pallidum, 16 brainstem, 7/8/46/47
  cerebellum, 17/18/53/54 hippocampus and amygdala, 251-255 corpus callosum, ...
* ``aparc+aseg`` (Desikan-Killiany, also DKT and SynthSeg ``--parc``): cortex 1001-1035
  (left) and 2001-2035 (right).
* ``aparc.a2009s+aseg`` (Destrieux): cortex 11101-11175 (left) and 12101-12175 (right).

Mapping (documented in ``_ASEG``, ``_DK_LOBE``, ``_DESTRIEUX_LOBE`` below):

* Cortical parcels -> lobe (frontal, parietal, temporal, occipital, insula), following
  FreeSurfer's ``mri_annotation2label --lobesStrict`` grouping: anterior cingulate ->
  frontal, posterior/isthmus cingulate and paracentral -> parietal/frontal as listed.
  Destrieux sulci shared by two lobes (central sulcus, posterior lateral fissure,
  parieto-occipital sulcus, ...) take the lobe of the nearest unambiguous parcel, so
  each bank goes to its own gyrus.  Hippocampus and amygdala -> temporal.
* Caudate, putamen, pallidum, accumbens ->
  basal_ganglia; thalamus and ventral DC (diencephalon below it) -> thalamus; brainstem (16, 170-175) -> brainstem;
  cerebellar cortex and white matter -> cerebellum; 192 and 251-255 -> corpus_callosum.
* Cerebral white matter (2, 41, 77-79, 5001/5002, wmparc 3000s/4000s) is split
  geometrically, as the MARS definitions describe it (Gregoire et al., Neurology 2009):
  internal capsule = white matter lying between the lentiform nucleus (putamen,
  pallidum) and the caudate/thalamus; external capsule = white matter between putamen
  and insular cortex; corpus callosum = the callosal label (192, 251-255) plus the
  white matter within ``CALLOSAL_MM`` of it that also lies within
  ``CALLOSAL_VENTRICLE_MM`` of a lateral ventricle (the callosal body over the
  ventricles); deep and periventricular white matter = white matter within
  ``PERIVENTRICULAR_MM`` of a lateral ventricle, or more than ``SUBCORTICAL_WM_MM``
  from cortex and within ``DEEP_WM_MAX_MM`` of a ventricle (the lobes' outer white
  matter, e.g. of the occipital and temporal poles, stays lobar); the rest is
  subcortical (juxtacortical, U-fibre) white matter and takes the lobe of the nearest
  cortex.
* Ventricles, CSF, choroid plexus, optic chiasm, background -> outside (0).

Cortex without a parcellation (3/42, e.g. plain aseg or SynthSeg without ``--parc``)
gets ``LOBE_UNKNOWN``: the caller must supply the lobe some other way (the atlas).
"""
import numpy as np
from scipy import ndimage

from ..errors import CMBError
from .regions import REGION_ID, SIDE_LEFT, SIDE_NONE, SIDE_RIGHT

LOBE_UNKNOWN = 255  # region code: lobar (cortex) of unknown lobe

# Geometric rules (mm), fitted against the MARS reference parcellation (see
# scripts/build_location_atlas.py --compare).
SUBCORTICAL_WM_MM = 2.0  # white matter farther than this from cortex ...
DEEP_WM_MAX_MM = 30.0  # ... and within this of a lateral ventricle is deep
PERIVENTRICULAR_MM = 10.0  # white matter this close to a lateral ventricle is deep
CALLOSAL_MM = 15.0  # corpus callosum: white matter this close to the callosal label ...
CALLOSAL_VENTRICLE_MM = 8.0  # ... and this close to a lateral ventricle
CAPSULE_MAX_WIDTH_MM = 10.0  # internal capsule: d(lentiform) + d(caudate/thalamus) <= this
EXTERNAL_CAPSULE_WIDTH_MM = 9.0  # external capsule: d(putamen) + d(insula) <= this

R = REGION_ID
_WM, _CTX, _VENT, _AMBIG = -1, -2, -3, -4  # internal classes resolved geometrically

# aseg id -> (region code or internal class, side code)
_ASEG = {}


def _pair(left, right, code):
    _ASEG[left] = (code, SIDE_LEFT)
    _ASEG[right] = (code, SIDE_RIGHT)


_pair(2, 41, _WM)
_pair(78, 79, _WM)
_pair(5001, 5002, _WM)
_pair(3, 42, _CTX)
_pair(4, 43, _VENT)
_pair(5, 44, _VENT)
_pair(31, 63, 0)  # choroid plexus
_pair(7, 46, R["cerebellum"])
_pair(8, 47, R["cerebellum"])
_pair(9, 48, R["thalamus"])
_pair(10, 49, R["thalamus"])
_pair(11, 50, R["basal_ganglia"])
_pair(12, 51, R["basal_ganglia"])
_pair(13, 52, R["basal_ganglia"])
_pair(26, 58, R["basal_ganglia"])
_pair(28, 60, R["thalamus"])  # ventral diencephalon (hypothalamus, subthalamus)
_pair(30, 62, R["basal_ganglia"])  # vessel (lenticulostriate region)
_pair(17, 53, R["temporal"])  # hippocampus
_pair(18, 54, R["temporal"])  # amygdala
_pair(80, 81, _AMBIG)  # non-WM hypointensities: take the nearest label
_ASEG.update(
    {
        14: (0, SIDE_NONE), 15: (0, SIDE_NONE), 72: (0, SIDE_NONE), 24: (0, SIDE_NONE),
        85: (0, SIDE_NONE), 16: (R["brainstem"], SIDE_NONE), 77: (_WM, SIDE_NONE),
        82: (_AMBIG, SIDE_NONE), 192: (R["corpus_callosum"], SIDE_NONE),
    }
)
for _i in range(170, 176):
    _ASEG[_i] = (R["brainstem"], SIDE_NONE)
for _i in range(251, 256):
    _ASEG[_i] = (R["corpus_callosum"], SIDE_NONE)

F, P, T, O, INS, AMB = (R["frontal"], R["parietal"], R["temporal"], R["occipital"], R["insula"], _AMBIG)  # noqa: E741

# Desikan-Killiany aparc index (1000 + n left, 2000 + n right) -> lobe.
_DK_LOBE = {
    1: T, 2: F, 3: F, 5: O, 6: T, 7: T, 8: P, 9: T, 10: P, 11: O, 12: F, 13: O, 14: F,
    15: T, 16: T, 17: F, 18: F, 19: F, 20: F, 21: O, 22: P, 23: P, 24: F, 25: P, 26: F,
    27: F, 28: F, 29: P, 30: T, 31: P, 32: F, 33: T, 34: T, 35: INS,
}

# Destrieux aparc.a2009s index (11100 + n left, 12100 + n right) -> lobe; AMB = sulcus
# shared by two lobes, resolved by the nearest unambiguous parcel.
_DESTRIEUX_LOBE = {
    1: F, 2: O, 3: F, 4: AMB, 5: F, 6: F, 7: F, 8: AMB, 9: P, 10: P, 11: O, 12: F, 13: F,
    14: F, 15: F, 16: F, 17: INS, 18: INS, 19: O, 20: O, 21: T, 22: O, 23: T, 24: F,
    25: P, 26: P, 27: P, 28: P, 29: F, 30: P, 31: F, 32: F, 33: T, 34: T, 35: T, 36: T,
    37: T, 38: T, 39: F, 40: F, 41: AMB, 43: O, 44: T, 45: O, 46: AMB, 47: P, 48: INS,
    49: INS, 50: INS, 51: T, 52: AMB, 53: F, 54: F, 55: F, 56: P, 57: P, 58: O, 59: O,
    60: O, 61: T, 62: AMB, 63: F, 64: F, 65: F, 66: AMB, 67: AMB, 68: P, 69: F, 70: F,
    71: F, 72: P, 73: T, 74: T, 75: T,
}


def label_table(ids):
    """(region code or internal class, side code) for each FreeSurfer id in `ids`.

    Unknown ids are returned as ``None`` so the caller can report them."""
    out = {}
    for v in ids:
        v = int(v)
        if v == 0:
            out[v] = (0, SIDE_NONE)
        elif v in _ASEG:
            out[v] = _ASEG[v]
        elif 1000 <= v < 1100 or 2000 <= v < 2100:
            side = SIDE_LEFT if v < 2000 else SIDE_RIGHT
            out[v] = (_DK_LOBE.get(v % 1000, _AMBIG), side)  # unknown/medial wall: nearest parcel
        elif 11100 <= v < 11200 or 12100 <= v < 12200:
            side = SIDE_LEFT if v < 12000 else SIDE_RIGHT
            out[v] = (_DESTRIEUX_LOBE.get(v % 100, _AMBIG), side)
        elif 3000 <= v < 3100 or 4000 <= v < 4100:  # wmparc white matter
            out[v] = (_WM, SIDE_LEFT if v < 4000 else SIDE_RIGHT)
        else:
            out[v] = None
    return out


def mars_from_freesurfer(labels: np.ndarray, spacing_kji=(1.0, 1.0, 1.0)):
    """MARS region and side maps from a FreeSurfer label array.

    labels: integer array (any axis order, but `spacing_kji` must give the voxel size in
    mm along each array axis).  Returns ``(region, side)`` uint8 arrays of the same
    shape: region ids from ``regions.REGIONS`` (0 outside, ``LOBE_UNKNOWN`` for cortex
    without a parcellation) and side codes (0 midline/none, 1 left, 2 right).
    Raises CMBError when no known FreeSurfer id is present.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise CMBError(f"label map has {labels.ndim} dimensions; expected 3")
    # Work inside the bounding box of the labels (plus a margin): much faster.
    box = _bbox(labels != 0, margin=2)
    if box is not None and any(b.stop - b.start < n for b, n in zip(box, labels.shape)):
        region = np.zeros(labels.shape, np.uint8)
        side = np.zeros(labels.shape, np.uint8)
        region[box], side[box] = mars_from_freesurfer(labels[box], spacing_kji)
        return region, side
    ids, inverse = np.unique(labels, return_inverse=True)
    table = label_table(ids)
    known = [v for v in ids if v != 0 and table[int(v)] is not None]
    if not known:
        raise CMBError("label map has no FreeSurfer colour-table ids (aseg/aparc/SynthSeg) that are known")
    codes = np.array([(table[int(v)] or (_AMBIG, SIDE_NONE))[0] for v in ids], dtype=np.int16)
    sides = np.array([(table[int(v)] or (0, SIDE_NONE))[1] for v in ids], dtype=np.uint8)
    code = codes[inverse.reshape(labels.shape)]
    side = sides[inverse.reshape(labels.shape)]
    sp = tuple(float(s) for s in spacing_kji)

    ventricle = code == _VENT
    code[ventricle] = 0
    # Ambiguous cortex / unknown ids: nearest label that is cortex of a known lobe.
    ambig = code == _AMBIG
    if ambig.any():
        donor = (code >= R["frontal"]) & (code <= R["insula"])
        if donor.any():
            _, idx = ndimage.distance_transform_edt(~donor, sampling=sp, return_indices=True)
            code[ambig] = code[tuple(i[ambig] for i in idx)]
        else:
            code[ambig] = _CTX
    cortex = ((code >= R["frontal"]) & (code <= R["insula"]) & ~np.isin(labels, (17, 18, 53, 54))) | (code == _CTX)
    wm = code == _WM
    if wm.any():
        _split_white_matter(code, side, wm, cortex, ventricle, labels, sp)
    code[code == _CTX] = LOBE_UNKNOWN
    # Side of midline-coded white matter (77) from the nearest sided voxel.
    unsided = (side == SIDE_NONE) & (code > 0)
    sided = side != SIDE_NONE
    if unsided.any() and sided.any():
        _, idx = ndimage.distance_transform_edt(~sided, sampling=sp, return_indices=True)
        side[unsided] = side[tuple(i[unsided] for i in idx)]
    return code.astype(np.uint8), side


def _bbox(mask, margin):
    """Slices of the bounding box of `mask` grown by `margin` voxels (None if empty)."""
    boxes = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
    if not boxes:
        return None
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(boxes[0], mask.shape))


def _dist(mask, sp):
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=sp).astype(np.float32)


def _split_white_matter(code, side, wm, cortex, ventricle, labels, sp):
    """Assign cerebral white matter to capsules, deep WM or the lobe of the nearest cortex."""
    d_ctx = _dist(cortex, sp)
    d_ven = _dist(ventricle & np.isin(labels, (4, 5, 43, 44)), sp)
    out = np.zeros(code.shape, dtype=np.int16)
    for hemi, (caud, thal, put, pal) in ((SIDE_LEFT, (11, 10, 12, 13)), (SIDE_RIGHT, (50, 49, 51, 52))):
        # Capsules lie next to the deep nuclei: work in their bounding box (+ margin).
        margin = int(np.ceil(CAPSULE_MAX_WIDTH_MM / min(sp))) + 1
        box = _bbox(np.isin(labels, (caud, thal, put, pal)), margin)
        if box is None:
            continue
        lab, cx, sd = labels[box], code[box], side[box]
        d_lent = _dist(np.isin(lab, (put, pal)), sp)
        d_med = _dist(np.isin(lab, (caud, thal, 9 if hemi == SIDE_LEFT else 48)), sp)
        d_put = _dist(lab == put, sp)
        d_ins = _dist(cortex[box] & (cx == R["insula"]) & (sd == hemi), sp)
        hw = wm[box] & (sd == hemi)
        ic = hw & (d_lent + d_med <= CAPSULE_MAX_WIDTH_MM)
        ec = hw & ~ic & (d_put + d_ins <= EXTERNAL_CAPSULE_WIDTH_MM) & (d_put < d_ins + 3.0)
        ob = out[box]
        ob[ic] = R["internal_capsule"]
        ob[ec] = R["external_capsule"]
    d_cc = _dist(np.isin(labels, (192, 251, 252, 253, 254, 255)), sp)
    cc = wm & (out == 0) & (d_cc <= CALLOSAL_MM) & (d_ven <= CALLOSAL_VENTRICLE_MM)
    out[cc] = R["corpus_callosum"]
    rest = wm & (out == 0)
    deep = rest & (((d_ctx > SUBCORTICAL_WM_MM) & (d_ven <= DEEP_WM_MAX_MM)) | (d_ven <= PERIVENTRICULAR_MM))
    out[deep] = R["deep_periventricular_wm"]
    sub = rest & ~deep
    if sub.any():
        if cortex.any():
            _, idx = ndimage.distance_transform_edt(~cortex, sampling=sp, return_indices=True)
            out[sub] = code[tuple(i[sub] for i in idx)]
        else:
            out[sub] = R["deep_periventricular_wm"]
    code[wm] = out[wm]
