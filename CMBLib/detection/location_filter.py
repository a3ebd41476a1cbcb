"""Location-based post-processing: candidates that lie in CSF / venous anatomy, where a dark
focus is a known mimic, are set aside.

The seed poster (003, a clinically robust CMB detector) removes candidates by anatomical
location.  Here a *zone* is a region of MNI152 space (RAS mm) reached through the atlas route
of `CMBLib.location` (the shipped template is registered to the scan, each candidate centre is
carried to MNI space) **and** a set of the atlas's CSF compartments: a candidate is set aside
only when its centre lies in the zone's box and at most ``tolerance_mm`` (1 mm) from one of
those compartments.  Parenchyma farther from them is never set aside, whatever the box holds.
A candidate set aside is not a CMB finding; it is kept as *suppressed* (with the zone's name)
so a rater can still look at it.

* ``deep_midline_veins``: the box |x| <= 4 mm, y -60..5, z -4..22 between the thalami (from
  the foramen of Monro back past the splenium to where the vein of Galen meets the straight
  sinus), restricted to the atlas's **third ventricle** and **cisterns** (the velum
  interpositum above the third ventricle, where the internal cerebral veins run, and the
  quadrigeminal cistern with the vein of Galen and the pineal gland): all dark on
  T2*-GRE / SWI.  The lateral ventricles and their choroid plexus are not part of it (the
  fornix and the corpus callosum border them).  Compartments: `scripts/build_location_atlas.py`
  (``compartment`` of ``mni_mars_atlas.npz``, from the same FreeSurfer cvs_avg35 labels as
  the MARS regions).  Until 0.3.2's docs the zone was the whole box, which holds parenchyma
  (8.6 % of the thalamus and corpus callosum of the atlas); synthetic CMBs 1.5-4 mm from the
  third ventricle were set aside (issue 26).  Measured: `benchmarks/check_location_compartments.py`.

* ``symmetric_pairs``: two candidates that are mirror images of each other about the
  mid-sagittal plane (MNI x = 0; ``|x_a + x_b|``, ``|y_a - y_b|`` and ``|z_a - z_b|`` each at
  most ``tolerance_mm``, 4 mm) inside the boxes of the deep structures where bilateral,
  symmetric dark foci are physiological on T2*-GRE / SWI (`PAIR_BOXES`): iron in the red
  nucleus and substantia nigra, the globus pallidus (and basal ganglia mineralisation), the
  dentate nucleus, calcified choroid plexus in the atria.  Both are set aside together; a
  candidate without its mirror partner stays a finding, and the thalami (a common site of
  bilateral hypertensive CMBs) hold no pair box.  Measured on cmb-default: the issue-26
  midbrain pair, docs/detector.md ("Symmetric pairs").

The registration behind the filter must pass `registration.filter_problems` (a brain inside,
not only a brain-shaped outline; enough of the brain in view; the zone in the field of view; an
affine fit that did not drift from the rigid one at the zone, `affine_consistency_problem`):
otherwise nothing is set aside and the outputs carry one warning.

Which zones apply is the model's choice (``model.json``: ``"location_filter": {"zones":
[...]}``), so its card documents it; ``detect(location_filter=False)`` (``cmb detect
--no-location-filter``, worker job key ``"location_filter": false``) turns it off.
"""
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

from ..errors import CMBError

TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Zone:
    """A box in MNI152 RAS mm ((x0, x1), (y0, y1), (z0, z1)), bounds included, and the atlas CSF
    compartments (names of ``COMPARTMENTS``) a candidate in it must lie in or within
    `tolerance_mm` of; no compartments: the whole box."""

    box_mni_mm: tuple
    what: str
    compartments: tuple = ()
    tolerance_mm: float = TOLERANCE_MM

    def in_box(self, mni_ras) -> np.ndarray:
        p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
        lo = np.array([b[0] for b in self.box_mni_mm])
        hi = np.array([b[1] for b in self.box_mni_mm])
        return np.all((p >= lo) & (p <= hi), axis=1)

    def contains(self, mni_ras) -> np.ndarray:
        inside = self.in_box(mni_ras)
        if self.compartments and inside.any():
            d = compartment_distance(np.atleast_2d(np.asarray(mni_ras, dtype=float))[inside], self.compartments,
                                     self.box_mni_mm)
            inside[np.flatnonzero(inside)] = d <= self.tolerance_mm
        return inside


@dataclass(frozen=True)
class PairZone:
    """Boxes of the right hemisphere in MNI152 RAS mm (name, ((x0, x1), (y0, y1), (z0, z1)),
    x0 > 0), mirrored for the left: a candidate in a box is set aside when another candidate
    lies within `tolerance_mm` (per axis) of its mirror image about x = 0, in the same box."""

    boxes: tuple
    what: str
    tolerance_mm: float = 4.0

    @property
    def box_mni_mm(self) -> tuple:
        """One box holding every pair box and its mirror."""
        b = np.array([box for _, box in self.boxes], float)                    # (n, 3, 2)
        x = float(b[:, 0, 1].max())
        return ((-x, x), (float(b[:, 1, 0].min()), float(b[:, 1, 1].max())),
                (float(b[:, 2, 0].min()), float(b[:, 2, 1].max())))

    def contains(self, mni_ras) -> np.ndarray:
        p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
        mirror = p * [-1.0, 1.0, 1.0]
        out = np.zeros(len(p), bool)
        for _, box in self.boxes:
            lo, hi = np.array([b[0] for b in box]), np.array([b[1] for b in box])
            right = np.flatnonzero(np.all((p >= lo) & (p <= hi), axis=1))
            left = np.flatnonzero(np.all((mirror >= lo) & (mirror <= hi), axis=1))
            for a in right:
                near = np.all(np.abs(mirror[left] - p[a]) <= self.tolerance_mm, axis=1)
                if near.any():
                    out[a] = True
                    out[left[near]] = True
        return out


# bilateral deep structures, right side, MNI152 RAS mm (centres: red nucleus (5, -19, -8),
# substantia nigra (11, -16, -11), globus pallidus (19, -4, -1), dentate (15, -57, -35),
# atrium / glomus of the choroid plexus (28, -42, 14))
PAIR_BOXES = (
    ("midbrain_nuclei", ((2.0, 16.0), (-30.0, -8.0), (-22.0, -2.0))),
    ("globus_pallidus", ((10.0, 28.0), (-16.0, 10.0), (-10.0, 10.0))),
    ("dentate_nucleus", ((6.0, 26.0), (-70.0, -42.0), (-46.0, -22.0))),
    ("choroid_plexus_atrium", ((16.0, 38.0), (-54.0, -26.0), (2.0, 28.0))),
)

# Atlas compartment codes (`scripts/build_location_atlas.py`, meta "compartment_codes").
COMPARTMENTS = {"third_ventricle": 1, "cistern": 2, "lateral_ventricle": 3, "choroid_plexus": 4,
                "fourth_ventricle": 5, "above_corpus_callosum": 6}

ZONES = {
    "deep_midline_veins": Zone(
        ((-4.0, 4.0), (-60.0, 5.0), (-4.0, 22.0)),
        "CSF between the thalami: third ventricle, velum interpositum (internal cerebral veins), "
        "quadrigeminal cistern (vein of Galen, pineal)",
        compartments=("third_ventricle", "cistern")),
    "symmetric_pairs": PairZone(
        PAIR_BOXES,
        "bilateral mirror-image pairs in the red nucleus / substantia nigra, globus pallidus, dentate "
        "nucleus and choroid plexus of the atria (iron, mineralisation, calcification)"),
}


def model_zones(meta: dict, enabled: Optional[bool] = None) -> tuple:
    """Names of the zones that apply: the model's ``location_filter.zones`` unless `enabled`
    is False; `enabled` True with a model that names none raises CMBError."""
    spec = meta.get("location_filter") or {}
    names = tuple(spec.get("zones", ())) if enabled is not False else ()
    unknown = [n for n in names if n not in ZONES]
    if unknown:
        raise CMBError(f"model names an unknown location-filter zone '{unknown[0]}' "
                       f"(this CMBLib knows {', '.join(sorted(ZONES))}); update CMBLib")
    if enabled and not names:
        raise CMBError(f"model '{meta.get('name', 'unnamed')}' has no location filter")
    return names


def zone_of(mni_ras, zones) -> list:
    """For each (N, 3) MNI RAS mm point: the name of the first zone holding it (its box and,
    when the zone names compartments, at most its tolerance from them), or None."""
    p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
    out = [None] * len(p)
    finite = np.all(np.isfinite(p), axis=1)
    for name in zones:
        inside = np.zeros(len(p), bool)
        if finite.any():
            inside[finite] = ZONES[name].contains(p[finite])
        for n in np.flatnonzero(inside):
            out[n] = out[n] or name
    return out


def zones_box(zones) -> Optional[tuple]:
    """The box ((x0, x1), (y0, y1), (z0, z1)) holding every box zone of `zones`, the part of MNI
    space the field of view must hold for the filter to apply (None: no such zone).  Pair zones
    need no view: a pair cut by the field of view has no partner and nothing is set aside."""
    zones = [z for z in zones if isinstance(ZONES[z], Zone)]
    if not zones:
        return None
    boxes = np.array([ZONES[z].box_mni_mm for z in zones], dtype=float)       # (n, 3, 2)
    return tuple((float(boxes[:, a, 0].min()), float(boxes[:, a, 1].max())) for a in range(3))


def compartment_distance(mni_ras, compartments, box_mni_mm, margin_mm: float = 6.0) -> np.ndarray:
    """Distance (mm) from each (N, 3) MNI RAS point inside `box_mni_mm` to the nearest atlas voxel
    of `compartments` (names of COMPARTMENTS): the Euclidean distance map of the atlas's 1 mm
    label grid within the box grown by `margin_mm` (a compartment just outside the box counts),
    interpolated linearly at the point."""
    from scipy.ndimage import map_coordinates

    dist, to_ijk = _distance_map(tuple(compartments), tuple(tuple(b) for b in box_mni_mm), float(margin_mm))
    p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
    ijk = p @ to_ijk[:3, :3].T + to_ijk[:3, 3]
    return map_coordinates(dist, ijk.T, order=1, mode="nearest")   # between voxel centres: linear


@lru_cache(maxsize=8)
def _distance_map(compartments: tuple, box: tuple, margin_mm: float):
    """(distance map mm over the box's crop of the atlas grid, RAS -> crop index matrix)."""
    from scipy import ndimage

    from ..location.atlas import load_atlas

    atlas = load_atlas()
    comp = atlas.compartment
    if comp is None:
        raise CMBError("the location atlas has no CSF compartments; rebuild it (scripts/build_location_atlas.py)")
    unknown = [c for c in compartments if c not in COMPARTMENTS]
    if unknown:
        raise CMBError(f"unknown atlas compartment '{unknown[0]}'")
    ras_to_ijk = np.linalg.inv(atlas.label_affine)
    corners = np.array([[x, y, z] for x in box[0] for y in box[1] for z in box[2]], float)
    ijk = corners @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    spacing = np.linalg.norm(atlas.label_affine[:3, :3], axis=0)
    pad = np.ceil(margin_mm / spacing).astype(int)
    lo = np.maximum(np.floor(ijk.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(ijk.max(0)).astype(int) + pad + 1, comp.shape)
    crop = comp[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    target = np.isin(crop, [COMPARTMENTS[c] for c in compartments])
    if target.any():
        dist = ndimage.distance_transform_edt(~target, sampling=spacing)
    else:
        dist = np.full(crop.shape, np.inf)
    to_crop = ras_to_ijk.copy()
    to_crop[:3, 3] -= lo
    return dist, to_crop
