"""Masks for the findings of a document: grow them from scribbles, or measure given masks.

`generate_masks` runs the region-growing engine (`CMBLib.growing.grow_from_scribbles`)
for all or some finding labels and writes the results into the document: mask
measurements, centre (RAS mm), the measured size class (`size_class_suggested`) and,
where the rater has not answered yet, the size class itself.  `measure_masks` does the
same bookkeeping for masks that already exist.  `suggest_locations` adds the location
helper's answer (`CMBLib.location.locate_points`) when that module is installed.
"""
from collections.abc import Iterable
from typing import Optional

import numpy as np

from ..errors import CMBError
from ..geometry import Volume, bombs_size_class, equivalent_diameter_mm, geometry_difference
from ..validation import label_ids, validate_image, validate_labelmap
from . import vocabulary as V
from .document import new_finding, touch


def labels_on_image_grid(labels: Volume, image: Volume, name: str = "scribbles") -> Volume:
    """`labels` on the image grid: as is, or pasted when it is a sub-block of that grid.

    Slicer saves a segmentation (.seg.nrrd) cropped to its painted extent: same spacing
    and direction as the image, origin shifted by whole voxels.  Such a block is placed
    exactly (parts outside the image are dropped); any other grid raises CMBError.
    """
    if not geometry_difference(image, labels):
        return labels
    same_axes = (np.allclose(labels.spacing, image.spacing, atol=1e-4)
                 and np.allclose(labels.direction, image.direction, atol=1e-4))
    offset = image.ras_to_voxel(labels.origin)            # (i, j, k) of the block's first voxel
    if not same_axes:
        grid = "spacing" if not np.allclose(labels.spacing, image.spacing, atol=1e-4) else "direction"
        raise CMBError(f"{name}: {grid} differs from the image's; resample it onto the image")
    if not np.allclose(offset, np.round(offset), atol=1e-3):
        raise CMBError(f"{name}: grid is shifted from the image's by a fraction of a voxel "
                       f"(offset {', '.join(f'{v:.2f}' for v in offset)} voxels); resample it onto the image")
    lo = np.round(offset[::-1]).astype(int)                # (k, j, i)
    src = np.asarray(labels.array)
    out = np.zeros(image.array.shape, dtype=src.dtype)
    a = np.maximum(lo, 0)
    b = np.minimum(lo + np.array(src.shape), np.array(out.shape))
    if np.all(b > a):
        out[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = src[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1],
                                                   a[2] - lo[2]:b[2] - lo[2]]
    lost = int(np.count_nonzero(src)) - int(np.count_nonzero(out))
    if lost:
        raise CMBError(f"{name}: {lost} labelled voxels lie outside the image")
    return image.with_array(out)


def ensure_findings(doc: dict, labels: Iterable[int], rater: str = "") -> dict:
    """Add an unreviewed finding for every label in `labels` that has none; returns `doc`."""
    known = {int(f["label"]) for f in doc["findings"]}
    for label in sorted(int(v) for v in labels):
        if label not in known:
            doc["findings"].append(new_finding(label, rater=rater or doc.get("rater", "")))
            known.add(label)
    doc["findings"].sort(key=lambda f: int(f["label"]))
    return doc


def generate_masks(image: Volume, scribbles: Volume, doc: dict, labels: Optional[Iterable[int]] = None,
                   mask: Optional[Volume] = None, progress=None, cancel=None,
                   **grow_options) -> tuple[Volume, dict]:
    """Grow masks from the scribbles of `labels` (default: every scribble label).

    `mask` (optional) holds masks grown earlier: the voxels of `labels` are replaced and
    other findings keep theirs (a new mask never takes another finding's voxels).
    Returns (instance mask Volume on the image grid, `doc` updated in place).
    Findings whose scribble has no voxels keep no mask (``mask: null``).
    """
    validate_image(image, "image")
    validate_labelmap(scribbles, image, "scribbles")
    present = label_ids(scribbles.array)
    wanted = present if labels is None else sorted({int(v) for v in labels})
    ensure_findings(doc, present if labels is None else [v for v in wanted if v in present])
    out = np.zeros(image.array.shape, np.uint16) if mask is None else np.asarray(mask.array).astype(np.uint16)
    if mask is not None:
        out[np.isin(out, wanted)] = 0
    to_grow = [v for v in wanted if v in present]
    results = {}
    if to_grow:
        grown, results = _grow(image, scribbles, present, progress, cancel, grow_options)
        free = (out == 0) & np.isin(grown, to_grow)
        out[free] = grown[free]
    mask_out = image.with_array(out)
    for label in wanted:
        if label not in {int(f["label"]) for f in doc["findings"]}:
            continue
        _record(doc, label, mask_out, results.get(label), grown=True)
    touch(doc)
    return mask_out, doc


def _grow(image, scribbles, present, progress, cancel, options):
    """(label array, {label: engine metadata}) for every scribble label.

    All labels are grown together, so the engine shares contested voxels between
    touching CMBs.  If the engine refuses a scribble (e.g. drawn on background), the
    others are grown together without it and the refused scribble itself becomes its
    mask, with the reason as a warning: every scribble still yields one CMB.
    """
    from ..growing import grow_from_scribbles
    from ..progress import Cancelled

    try:
        result = grow_from_scribbles(image, scribbles, progress=progress, cancel=cancel, **options)
        return np.asarray(result.labels.array), {int(c["label"]): c for c in result.cmbs}
    except Cancelled:
        raise
    except CMBError as exc:
        if "scribble" not in str(exc) or len(present) == 0:
            raise  # a problem with the image or the options, not with one scribble
    refused = {}
    for label in present:                     # find the scribbles the engine refuses
        try:
            grow_from_scribbles(image, scribbles, labels=[label], cancel=cancel, **options)
        except Cancelled:
            raise
        except CMBError as exc:
            refused[label] = str(exc)
    accepted = [v for v in present if v not in refused]
    grown = np.zeros(image.array.shape, np.uint16)
    results = {}
    if accepted:
        result = grow_from_scribbles(image, scribbles, labels=accepted, progress=progress, cancel=cancel,
                                     **options)
        grown = np.asarray(result.labels.array).astype(np.uint16)
        results = {int(c["label"]): c for c in result.cmbs}
    for label, reason in refused.items():
        region = (np.asarray(scribbles.array) == label) & (grown == 0)
        grown[region] = label
        results[label] = {"tolerance": None, "mode": None, "cap_hit": False,
                          "warnings": [f"not grown ({reason}); the scribble is the mask"]}
    return grown, results


def measure_masks(mask: Volume, doc: dict) -> dict:
    """Record measurements of an existing instance mask in every finding; returns `doc`."""
    ensure_findings(doc, label_ids(mask.array))
    for f in doc["findings"]:
        _record(doc, int(f["label"]), mask, None, grown=False)
    return doc


def measure_finding(doc: dict, label: int, mask: Volume) -> dict:
    """Record the measurements of label `label` of `mask` in its finding; returns the finding."""
    _record(doc, int(label), mask, None, grown=False)
    return doc["findings"][[int(f["label"]) for f in doc["findings"]].index(int(label))]


def _record(doc: dict, label: int, mask: Volume, cmb: Optional[dict], grown: bool) -> None:
    """Write mask measurements of `label` into its finding (and pre-fill the size class)."""
    finding = next(f for f in doc["findings"] if int(f["label"]) == label)
    voxels = np.argwhere(np.asarray(mask.array) == label)
    if len(voxels) == 0:
        if grown or finding.get("mask") is not None:
            finding["mask"] = None
            finding["size_class_suggested"] = None
        return
    volume_mm3 = float(len(voxels) * mask.voxel_volume_mm3)
    diameter = equivalent_diameter_mm(volume_mm3)
    info = {"voxel_count": int(len(voxels)), "volume_mm3": round(volume_mm3, 4),
            "diameter_mm": round(diameter, 4), "tolerance": None, "mode": None, "cap_hit": False,
            "warnings": []}
    if cmb is not None:
        tol = cmb.get("tolerance")
        info.update(tolerance=None if tol is None else float(tol), mode=cmb.get("mode"),
                    cap_hit=bool(cmb.get("cap_hit", False)),
                    warnings=[str(w) for w in cmb.get("warnings", [])])
    finding["mask"] = info
    finding["centre_ras"] = [round(float(v), 4) for v in mask.kji_to_ras(voxels.mean(axis=0))]
    size = bombs_size_class(diameter)
    finding["size_class_suggested"] = size
    if finding.get("size_class") == V.UNREVIEWED and size in V.SIZE_CLASSES:
        finding["size_class"] = size


def suggest_locations(image: Volume, doc: dict, locator=None) -> tuple[dict, str]:
    """Fill `location_suggested` / `side_suggested` of findings with a centre.

    Uses the location helper (`CMBLib.location`, atlas registration, a few seconds per
    volume); pass a `CMBLib.location.Locator` made once per volume to reuse its
    registration.  Returns (doc, '' or a one-line note on why nothing was suggested).
    Never fills the rater's own `location` / `side` fields.
    """
    findings = [f for f in doc["findings"] if f.get("centre_ras") is not None]
    if not findings:
        return doc, ""
    if locator is None:
        try:
            from ..location import Locator
        except ImportError:
            return doc, "location helper not installed; no location suggested"
        try:
            locator = Locator(image)
        except CMBError as exc:
            return doc, f"no location suggested: {exc}"
    points = np.array([f["centre_ras"] for f in findings], dtype=float)
    try:
        records = locator.locate(points)
    except CMBError as exc:
        return doc, f"no location suggested: {exc}"
    for f, row in zip(findings, records):
        apply_location(f, row)
    return doc, ""


def apply_location(finding: dict, record: dict) -> dict:
    """Copy a location record into a finding's suggestions.

    `record`: a `locate_points` row (region, category, side) or a detection record
    whose 'location' is a region name.  Regions outside the vocabulary ('outside')
    are not suggested.
    """
    region = str(record.get("region") or record.get("location") or "")
    side = str(record.get("side") or "").lower()
    if region in V.LOCATION_GROUPS:
        finding["location_suggested"] = region
    if side in V.SIDES and side != V.UNREVIEWED:
        finding["side_suggested"] = side
    return finding
