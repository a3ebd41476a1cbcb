"""Hand-over of detector candidates (CMBDetector) to the annotation document.

A detection record is a dict as `CMBLib.detection` writes it into ``NAME_cmb.json``:
``label``, ``centre_ras`` [x, y, z] (RAS mm), ``diameter_mm``, ``volume_mm3``,
``voxel_count``, ``size_class``, ``max_probability`` and, when the location helper ran,
``region`` / ``category`` / ``side``.  Each becomes a finding with review status
``"proposed"`` and source ``"detector"``; the rater then confirms or rejects it.
"""
from collections.abc import Iterable
from typing import Optional

from ..errors import CMBError
from . import vocabulary as V
from .document import new_finding, touch
from .masks import apply_location


def findings_from_detections(records: Iterable[dict], existing_labels: Iterable[int] = (),
                             rater: str = "CMBDetector") -> list[dict]:
    """Findings (status 'proposed', source 'detector') for detection records.

    Labels are kept when free; a label already used in `existing_labels` (or twice in
    `records`) is replaced by the next free one (`add_detections` returns that mapping).
    """
    return _convert(records, existing_labels, rater)[0]


def _convert(records, existing_labels, rater):
    used = {int(v) for v in existing_labels}
    findings, mapping = [], {}
    for n, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise CMBError(f"detections[{n}]: expected a record (dict), got {type(rec).__name__}")
        label = int(rec.get("label", n + 1))
        while label < 1 or label in used:
            label = max(used | {0}) + 1
        used.add(label)
        finding = new_finding(label, rater=rater, review_status="proposed", source="detector")
        centre = rec.get("centre_ras")
        if centre is not None:
            if len(centre) != 3:
                raise CMBError(f"detections[{n}].centre_ras: expected 3 RAS coordinates (mm)")
            finding["centre_ras"] = [float(v) for v in centre]
        if rec.get("size_class") in V.MEASURED_SIZE_CLASSES:
            finding["size_class_suggested"] = rec["size_class"]
        prob = rec.get("max_probability", rec.get("probability"))
        if prob is not None:
            finding["max_probability"] = min(1.0, max(0.0, float(prob)))
        if rec.get("diameter_mm") is not None and rec.get("volume_mm3") is not None:
            finding["mask"] = {"voxel_count": int(rec.get("voxel_count") or 0),
                               "volume_mm3": float(rec["volume_mm3"]), "diameter_mm": float(rec["diameter_mm"]),
                               "tolerance": None, "mode": "detector", "cap_hit": False, "warnings": []}
        apply_location(finding, rec)
        mapping[int(rec.get("label", n + 1))] = label
        findings.append(finding)
    return findings, mapping


def add_detections(doc: dict, records: Iterable[dict], rater: str = "CMBDetector") -> dict[int, int]:
    """Append proposed findings for `records` to `doc`; returns {detector label: finding label}.

    Relabel the detector's instance mask with this mapping before merging it.
    """
    findings, mapping = _convert(records, [f["label"] for f in doc["findings"]], rater)
    doc["findings"].extend(findings)
    doc["findings"].sort(key=lambda f: int(f["label"]))
    touch(doc)
    return mapping


def add_findings(doc: dict, findings: Iterable[dict], rater: str = "CMBDetector") -> dict[int, int]:
    """Append findings made elsewhere (e.g. `CMBLib.detection.outputs.records_to_findings`).

    Each is rebuilt from the known fields (others dropped), given a free label, and
    checked; suggestions outside the vocabulary (e.g. region 'outside') become null, an
    unset review status becomes 'proposed'.  Returns {incoming label: finding label}.
    Raises CMBError naming the field of a bad value, e.g. "findings[1].certainty: ...".
    """
    from .document import FINDING_DEFAULTS, check_finding, next_label

    mapping = {}
    incoming = list(findings)
    for n, f in enumerate(incoming):
        if not isinstance(f, dict) or "label" not in f:
            raise CMBError(f"findings[{n}]: expected a finding with a label")
        label = int(f["label"])
        if label < 1 or any(int(g["label"]) == label for g in doc["findings"]):
            label = next_label(doc)
        fields = {k: v for k, v in f.items() if k in FINDING_DEFAULTS and k != "location_group"}
        fields.setdefault("source", "detector")
        if fields.get("review_status", V.UNREVIEWED) == V.UNREVIEWED:
            fields["review_status"] = "proposed"
        for key, allowed in (("location_suggested", V.LOCATION_GROUPS), ("side_suggested", V.SIDES),
                             ("size_class_suggested", V.MEASURED_SIZE_CLASSES)):
            if fields.get(key) not in allowed:
                fields[key] = None
        finding = check_finding(new_finding(label, rater=str(f.get("rater") or rater), **fields), f"findings[{n}]")
        doc["findings"].append(finding)
        mapping[int(f["label"])] = label
    doc["findings"].sort(key=lambda f: int(f["label"]))
    touch(doc)
    return mapping


def accepted_labels(doc: dict, statuses: Optional[Iterable[str]] = None) -> list[int]:
    """Labels of findings whose review status is in `statuses` (default: not rejected)."""
    keep = set(statuses) if statuses is not None else set(V.REVIEW_STATUSES) - {"rejected"}
    return [int(f["label"]) for f in doc["findings"] if f["review_status"] in keep]
