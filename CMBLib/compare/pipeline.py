"""`compare_studies`: a follow-up against its baseline, from images to classed CMBs.

Order: register the follow-up to the baseline and check that the comparison can be trusted
(`quality.check`; refused before any detection runs), detect CMBs on both scans (or take
findings given), match them (`matching.match_findings`), find regions that turned dark
(`siderosis`), count the new CMBs into an ARIA-H category (`aria`).  With ``difference``
the registered difference image adds new CMBs the detector missed (`new_spots`: focal spots
that turned dark, away from every detection; ``"how": "difference"``).
"""
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume
from ..progress import check_cancel, report
from .aria import aria_h_category
from .matching import SUPPORT, TOLERANCE_MM, field_of_view, match_findings, probability_support

DIFFERENCE = True        # difference-image spots by default: the shipping rule of docs/compare.md held


@dataclass
class Findings:
    """One scan's CMBs: records (detection records or reviewed findings, ``centre_ras`` in
    that scan's RAS mm), the instance mask (labels = record labels) and the probability map
    when detection ran here (None for findings read from a file); `rejected`: findings a
    reader rejected (not CMBs; the difference image does not propose them again)."""

    records: list
    mask: Optional[Volume] = None
    probability: Optional[Volume] = None
    source: str = "detection"            # "detection" (run here) or the findings file's path
    model: dict = field(default_factory=dict)
    threshold: Optional[float] = None
    rejected: list = field(default_factory=list)


@dataclass
class CompareResult:
    classes: dict                        # new / persisting / no_longer_seen / outside_common_view
    aria_h_category: str
    registration: object                 # register.FollowupRegistration
    quality: dict                        # quality.assess figures
    dark_regions: list
    new_mask: Volume                     # labels 1..N of the new CMBs on the follow-up grid
    baseline: Findings
    followup: Findings
    settings: dict
    timings: dict
    warnings: list = field(default_factory=list)
    difference_spots: list = field(default_factory=list)   # every `new_spots.find_spots` candidate


def read_findings(path, image: Volume, what: str) -> Findings:
    """Findings of one scan from a NAME_cmb.json written by `cmb detect` (its mask
    NAME_cmb_mask.nii.gz beside it is used when present and on `image`'s grid).  Findings a
    reader rejected (``review_status`` "rejected") are left out."""
    from ..detection.outputs import read_detections
    from ..geometry import geometry_difference
    from ..io import read_volume

    path = Path(path)
    doc = read_detections(path)
    geom = doc.get("image_geometry") or {}
    if geom.get("size_ijk") and list(geom["size_ijk"]) != list(image.shape_ijk):
        raise CMBError(f"{path}: these {what} findings belong to an image of size {geom['size_ijk']}, "
                       f"not the {what} image ({list(image.shape_ijk)})")
    records = [r for r in doc.get("cmbs", []) if r.get("review_status") != "rejected"]
    rejected = [r for r in doc.get("cmbs", []) if r.get("review_status") == "rejected"
                and len(r.get("centre_ras") or []) == 3]
    for r in records:
        if len(r.get("centre_ras") or []) != 3:
            raise CMBError(f"{path}: finding {r.get('label')} has no centre_ras")
    mask = None
    name = path.name[:-len("_cmb.json")] if path.name.endswith("_cmb.json") else None
    if name and (path.parent / f"{name}_cmb_mask.nii.gz").is_file():
        candidate = read_volume(path.parent / f"{name}_cmb_mask.nii.gz")
        if not geometry_difference(candidate, image, tol_mm=0.01):
            mask = candidate
    return Findings(records, mask, None, str(path), dict(doc.get("model") or {}), doc.get("threshold"), rejected)


def detect_findings(volume: Volume, model, device: str, sequence: str, progress=None, cancel=None,
                    threshold: Optional[float] = None) -> Findings:
    """Run `cmb detect`'s pipeline on one scan."""
    from ..detection.pipeline import detect

    res = detect(volume, model, device=device, sequence=sequence, threshold=threshold, progress=progress,
                 cancel=cancel)
    s = res.settings
    return Findings(list(res.records), res.mask, res.probability, "detection",
                    {"name": s.get("model"), "version": s.get("model_version")}, s.get("threshold"))


def new_cmb_mask(followup: Volume, findings: Findings, new: list) -> Volume:
    """Labels 1..N of the `new` entries on the follow-up grid: their voxels in the follow-up
    mask where there is one, else a ball of the finding's diameter (at least one voxel)."""
    out = np.zeros(followup.array.shape, np.int16)
    src = None if findings.mask is None else np.asarray(findings.mask.array)
    for n, entry in enumerate(new, start=1):
        sel = None
        if src is not None and entry.get("label") is not None:
            sel = src == int(entry["label"])
        if sel is None or not sel.any():
            r = max(0.5 * float(entry.get("diameter_mm") or 0.0), 0.5)
            ijk = followup.ras_to_voxel(entry["centre_ras"])
            half = np.ceil(r / np.asarray(followup.spacing)).astype(int)
            lo = np.maximum(np.floor(ijk).astype(int) - half, 0)
            hi = np.minimum(np.ceil(ijk).astype(int) + half + 1, followup.shape_ijk)
            sel = np.zeros(out.shape, bool)
            if np.all(hi > lo):
                kk, jj, ii = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo[::-1], hi[::-1])], indexing="ij")
                pts = followup.kji_to_ras(np.stack([kk, jj, ii], -1).reshape(-1, 3))
                inside = np.linalg.norm(pts - np.asarray(entry["centre_ras"]), axis=1) <= r
                near = np.clip(np.rint(ijk).astype(int), 0, np.array(followup.shape_ijk) - 1)
                sel[kk.ravel()[inside], jj.ravel()[inside], ii.ravel()[inside]] = True
                sel[near[2], near[1], near[0]] = True
        out[sel & (out == 0)] = n
    return followup.with_array(out)


def compare_studies(baseline: Volume, followup: Volume, baseline_findings: Optional[Findings] = None,
                    followup_findings: Optional[Findings] = None, model="default", device: str = "cpu",
                    sequence: str = "T2S", tolerance_mm: float = TOLERANCE_MM, affine: bool = False,
                    support: float = SUPPORT, threshold: Optional[float] = None, progress=None,
                    cancel=None, difference: Optional[bool] = None,
                    difference_darkening: Optional[float] = None) -> CompareResult:
    """Compare `followup` with `baseline` (module docstring).  Findings not given are
    detected here with `model` (a name / folder or a loaded (network, metadata) pair).
    tolerance_mm: largest distance (mm, baseline RAS) between the centres of one CMB at the
    two time points.  difference: add the difference image's new spots (None: ``DIFFERENCE``);
    difference_darkening: their threshold on the peak darkening (None: `new_spots.DARKENING`).
    Raises CMBError when the comparison cannot be trusted."""
    from ..validation import validate_image
    from . import new_spots, quality, siderosis
    from .register import prepare, register_followup

    if not tolerance_mm > 0:
        raise CMBError(f"--tolerance-mm {tolerance_mm}: must be above 0")
    validate_image(baseline, "baseline")
    validate_image(followup, "follow-up")
    timings = {}
    t0 = time.perf_counter()
    report(progress, 0.0, "registering the follow-up to the baseline")
    images = prepare(baseline, followup)
    reg = register_followup(baseline, followup, affine=affine, images=images, cancel=cancel,
                            progress=lambda f, m: report(progress, 0.1 * f, m))
    figures = quality.assess(reg, images)
    quality.check(figures)
    timings["registration"] = round(time.perf_counter() - t0, 2)
    check_cancel(cancel)
    need = [baseline_findings is None, followup_findings is None]
    if any(need) and isinstance(model, (str, Path)):
        from ..detection.model_io import load_model

        model = load_model(model, device=device)
    found = []
    for n, (volume, given, name) in enumerate(((baseline, baseline_findings, "baseline"),
                                               (followup, followup_findings, "follow-up"))):
        if given is not None:
            found.append(given)
            continue
        t = time.perf_counter()
        lo, hi = 0.12 + 0.4 * n, 0.12 + 0.4 * (n + 1)
        found.append(detect_findings(volume, model, device, sequence, cancel=cancel, threshold=threshold,
                                     progress=lambda f, m, lo=lo, hi=hi, name=name:
                                     report(progress, lo + (hi - lo) * f, f"{name}: {m}")))
        timings[f"detect_{name.replace('-', '')}"] = round(time.perf_counter() - t, 2)
    base, follow = found
    report(progress, 0.93, "matching CMBs across the two scans")
    classes = match_findings(
        base.records, follow.records, reg.to_baseline, reg.to_followup, tolerance_mm,
        baseline_support=probability_support(base.probability) if base.probability is not None else None,
        followup_support=probability_support(follow.probability) if follow.probability is not None else None,
        in_baseline_view=field_of_view(baseline), in_followup_view=field_of_view(followup), support=support)
    difference = DIFFERENCE if difference is None else bool(difference)
    darkening = new_spots.DARKENING if difference_darkening is None else float(difference_darkening)
    spots = []
    if difference:
        t = time.perf_counter()
        report(progress, 0.95, "new spots on the difference image")
        spots = new_spots.find_spots(baseline, followup, images, reg)
        classes["new"].extend(new_spots.unexplained(         # nor where a reader rejected a finding
            spots, base.records + base.rejected, follow.records + follow.rejected, reg, tolerance_mm, darkening,
            probability_support(follow.probability) if follow.probability is not None else None))
        timings["difference"] = round(time.perf_counter() - t, 2)
    regions = siderosis.dark_regions(images, reg)
    new = classes["new"]
    flags = siderosis.flag_near(reg.to_baseline([e["centre_ras"] for e in new]), regions) if new else []
    for entry, hit in zip(new, flags):
        entry["near_dark_region"] = hit is not None
        if hit is not None:
            kind = "superficial-siderosis-like" if regions[hit]["superficial"] else "haemorrhage-like"
            entry["flag"] = f"within {siderosis.NEAR_MM:g} mm of a {kind} region that turned dark (region {hit + 1})"
    for c in classes.values():
        for entry in c:
            entry["centre_ras"] = [round(float(v), 2) for v in entry["centre_ras"]]
            if entry.get("baseline_centre_ras") is not None:
                entry["baseline_centre_ras"] = [round(float(v), 2) for v in entry["baseline_centre_ras"]]
    warnings = []
    if classes["outside_common_view"]:
        warnings.append(f"{len(classes['outside_common_view'])} finding(s) lie where only one of the two scans "
                        "looks; they are not counted as new or gone")
    if min(figures["overlap"], figures["followup_overlap"]) < 0.9:
        warnings.append(f"the scans share {100 * figures['overlap']:.0f}% of the baseline brain "
                        f"({100 * figures['followup_overlap']:.0f}% of the follow-up's)")
    for r in regions:
        kind = "superficial-siderosis-like" if r["superficial"] else "haemorrhage-like"
        x, y, z = r["centre_ras"]
        warnings.append(f"a {kind} region turned dark since the baseline ({r['volume_mm3']:.0f} mm3 at "
                        f"{x:.0f}, {y:.0f}, {z:.0f} RAS mm): check it; it is not graded here")
    timings["total"] = round(time.perf_counter() - t0, 2)
    report(progress, 1.0, "comparison done")
    settings = {"tolerance_mm": float(tolerance_mm), "support": float(support), "affine": bool(affine),
                "sequence": sequence, "device": device, "difference": difference}
    if difference:
        settings["difference_darkening"] = darkening
    return CompareResult(classes, aria_h_category(len(new)), reg, figures,
                         [{k: v for k, v in r.items() if not k.startswith("_")} for r in regions],
                         new_cmb_mask(followup, follow, new), base, follow, settings, timings, warnings, spots)
