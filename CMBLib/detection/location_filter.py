"""Location-based post-processing: candidates where a dark focus is a known mimic are suppressed.

The seed poster (003, a clinically robust CMB detector) removes candidates by anatomical
location.  Here a *zone* is a box in MNI152 space (RAS mm, the atlas route of
`CMBLib.location`: the shipped template is registered to the scan, each candidate centre
is carried to MNI space).  A candidate whose centre falls in a zone is not a CMB finding;
it is kept aside as *suppressed* (with the zone's name) so a rater can still look at it.

Zones are drawn from anatomy, not fitted to the real scans that showed the problem (one bound
was moved once after a synthetic check, as said below):

* ``deep_midline_veins``: the strip |x| <= 4 mm between the thalami, from the foramen of
  Monro back past the splenium to where the vein of Galen meets the straight sinus, above
  the midbrain and below the corpus callosum body (y -60..5, z -4..22).  It holds the
  internal cerebral veins, the vein of Galen, the pineal gland (often calcified) and the
  third ventricle with its choroid plexus: all dark on T2*-GRE / SWI, none brain parenchyma
  where CMBs occur (the thalami lie more than 4 mm off the midline except at the massa
  intermedia; the splenium and the top of the vermis touch the strip).  On real clinical
  T2* the U-Net's one repeated false positive was the internal cerebral vein (issue 13).
  First version (y -48..5, z -6..22) left the back end of a drawn vein of Galen at
  y -48.5 as a finding in 2 of 16 test cases of `benchmarks/check_location_filter.py`;
  the bound moved back to y -60 (the vein's anatomical end), z min to -4 (further from
  the tectum); figures for this version are on the validation split, not those 16 cases.

Which zones apply is the model's choice (``model.json``: ``"location_filter": {"zones":
[...]}``), so its card documents it; ``detect(location_filter=False)`` (``cmb detect
--no-location-filter``) turns it off.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import CMBError


@dataclass(frozen=True)
class Zone:
    """An axis-aligned box in MNI152 RAS mm: ((x0, x1), (y0, y1), (z0, z1)), bounds included."""

    box_mni_mm: tuple
    what: str

    def contains(self, mni_ras) -> np.ndarray:
        p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
        lo = np.array([b[0] for b in self.box_mni_mm])
        hi = np.array([b[1] for b in self.box_mni_mm])
        return np.all((p >= lo) & (p <= hi), axis=1)


ZONES = {
    "deep_midline_veins": Zone(
        ((-4.0, 4.0), (-60.0, 5.0), (-4.0, 22.0)),
        "midline between the thalami: internal cerebral veins, vein of Galen, pineal, third ventricle"),
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
    """For each (N, 3) MNI RAS mm point: the name of the first zone holding it, or None."""
    p = np.atleast_2d(np.asarray(mni_ras, dtype=float))
    out = [None] * len(p)
    for name in zones:
        inside = ZONES[name].contains(p)
        for n in np.flatnonzero(inside):
            out[n] = out[n] or name
    return out
