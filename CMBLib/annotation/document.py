"""The annotation document of one study: plain JSON-ready dicts, builders and validation.

A document holds the study-level fields, one *finding* per CMB label (BOMBS metadata,
review status, mask measurements), *mimics* (RAS mm points with a type) and *other
findings* (RAS mm points with text).  Coded fields not answered yet hold
``"unreviewed"``.  `cmb_annotation.schema.json` (JSON Schema draft 2020-12) is the
formal description; `validate_document` checks a document against it and raises
`CMBError` naming the field path and the allowed values, e.g.
``findings[2].certainty: 'maybe' is not one of certain, uncertain, unreviewed``.
"""
import copy
import datetime
import json
from pathlib import Path
from typing import Optional

from ..errors import CMBError
from . import vocabulary as V

SCHEMA_PATH = Path(__file__).with_name("cmb_annotation.schema.json")

FINDING_DEFAULTS = {
    "review_status": V.UNREVIEWED,
    "source": "rater",
    "certainty": V.UNREVIEWED,
    "size_class": V.UNREVIEWED,
    "size_class_suggested": None,
    "location": V.UNREVIEWED,
    "location_group": V.UNREVIEWED,
    "side": V.UNREVIEWED,
    "location_suggested": None,
    "side_suggested": None,
    "cause": V.UNREVIEWED,
    "cause_other": "",
    "multiple": False,
    "problematic": False,
    "problem_reason": "",
    "comment": "",
    "centre_ras": None,
    "max_probability": None,
    "mask": None,
}
STUDY_DEFAULTS = {
    "subject": "",
    "sequence": "T2starw",
    "image": "",
    "inclusion": V.UNREVIEWED,
    "exclusion_reason": "",
    "exclusion_comment": "",
    "quality": V.UNREVIEWED,
    "artefacts": [],
    "comment": "",
    "image_comment": "",
}
MIMIC_DEFAULTS = {"type_other": "", "side": V.UNREVIEWED, "comment": ""}
OTHER_DEFAULTS = {"finding": "", "comment": ""}


def now_utc() -> str:
    """Current time as ISO 8601 UTC with seconds, e.g. '2026-11-22T03:45:00Z'."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tool_version() -> str:
    try:
        from .. import __version__
        return str(__version__)
    except ImportError:  # pragma: no cover
        return "unknown"


def new_document(subject: str = "", sequence: str = "T2starw", rater: str = "") -> dict:
    """An empty study document with unreviewed study fields and the current time."""
    stamp = now_utc()
    study = copy.deepcopy(STUDY_DEFAULTS)
    study.update(subject=subject, sequence=sequence)
    return {
        "schema_version": V.SCHEMA_VERSION,
        "tool": {"name": V.TOOL_NAME, "version": tool_version()},
        "rater": rater,
        "created": stamp,
        "modified": stamp,
        "study": study,
        "findings": [],
        "mimics": [],
        "other_findings": [],
    }


def new_finding(label: int, rater: str = "", **fields) -> dict:
    """A finding for `label` with unreviewed defaults, updated by `fields`."""
    finding = {"label": int(label)}
    finding.update(copy.deepcopy(FINDING_DEFAULTS))
    finding.update(fields)
    finding["location_group"] = V.location_group(finding["location"])
    finding["rater"] = rater
    finding["modified"] = now_utc()
    return finding


def new_mimic(mimic_id: int, position_ras, mimic_type: str, **fields) -> dict:
    """A mimic landmark at `position_ras` (RAS mm) of `mimic_type` (see MIMIC_TYPES)."""
    mimic = {"id": int(mimic_id), "position_ras": [float(v) for v in position_ras], "type": mimic_type}
    mimic.update(copy.deepcopy(MIMIC_DEFAULTS))
    mimic.update(fields)
    return mimic


def new_other_finding(finding_id: int, position_ras, finding: str = "", comment: str = "") -> dict:
    """Another finding as a point (RAS mm) with free text."""
    return {"id": int(finding_id), "position_ras": [float(v) for v in position_ras],
            "finding": finding, "comment": comment}


def complete_document(doc: Optional[dict], subject: str = "", sequence: str = "", rater: str = "") -> dict:
    """A copy of a possibly partial document with every missing field at its default.

    Used when a rater's JSON lacks fields (e.g. only labels and certainty): missing
    coded fields become 'unreviewed'; `location_group` is derived from `location`.
    """
    base = new_document(subject=subject, sequence=sequence or "T2starw", rater=rater)
    doc = copy.deepcopy(doc) if doc else {}
    if not isinstance(doc, dict):
        raise CMBError(f"annotation: expected a JSON object, got {type(doc).__name__}")
    if not isinstance(doc.get("study", {}), dict):
        raise CMBError("study: expected an object with the study-level fields")
    for name in ("findings", "mimics", "other_findings"):
        if not isinstance(doc.get(name, []), list):
            raise CMBError(f"{name}: expected a list")
    for key, value in base.items():
        if key == "study":
            study = dict(STUDY_DEFAULTS)
            study.update(doc.get("study") or {})
            if subject:
                study["subject"] = subject
            if sequence:
                study["sequence"] = sequence
            doc["study"] = study
        elif key not in doc or (key == "rater" and rater and not doc.get("rater")):
            doc[key] = value
    doc["findings"] = [_complete(f, FINDING_DEFAULTS, "findings", n) for n, f in enumerate(doc["findings"])]
    for f in doc["findings"]:
        f["location_group"] = V.location_group(f.get("location"))
        f.setdefault("rater", doc["rater"])
        f.setdefault("modified", doc["modified"])
    doc["mimics"] = [_complete(m, MIMIC_DEFAULTS, "mimics", n) for n, m in enumerate(doc["mimics"])]
    doc["other_findings"] = [_complete(o, OTHER_DEFAULTS, "other_findings", n)
                             for n, o in enumerate(doc["other_findings"])]
    return doc


def _complete(item, defaults: dict, name: str, n: int) -> dict:
    if not isinstance(item, dict):
        raise CMBError(f"{name}[{n}]: expected an object, got {json.dumps(item)[:40]}")
    out = copy.deepcopy(defaults)
    out.update(item)
    return out


def touch(doc: dict) -> dict:
    """Set the document's `modified` time to now; returns `doc`."""
    doc["modified"] = now_utc()
    return doc


def finding_index(doc: dict, label: int) -> int:
    """Index in doc['findings'] of the finding with `label`; CMBError when absent."""
    for n, f in enumerate(doc["findings"]):
        if int(f["label"]) == int(label):
            return n
    raise CMBError(f"no finding with label {label}")


def set_field(doc: dict, label: int, field: str, value, rater: str = "") -> dict:
    """Set one metadata field of finding `label`, checking the value first.

    Raises CMBError naming the field and the allowed values; updates
    `location_group` with `location` and the finding's `modified` time.
    """
    n = finding_index(doc, label)
    finding = dict(doc["findings"][n])
    finding[field] = value
    if field == "location":
        finding["location_group"] = V.location_group(value)
    finding["modified"] = now_utc()
    if rater:
        finding["rater"] = rater
    check_finding(finding, f"findings[{n}]")
    doc["findings"][n] = finding
    touch(doc)
    return finding


def next_label(doc: dict) -> int:
    """Smallest label value not used by any finding."""
    used = {int(f["label"]) for f in doc["findings"]}
    label = 1
    while label in used:
        label += 1
    return label


# --- validation ------------------------------------------------------------------------
_SCHEMA_CACHE: dict[str, dict] = {}


def load_schema() -> dict:
    """The annotation JSON Schema (a dict)."""
    if "schema" not in _SCHEMA_CACHE:
        _SCHEMA_CACHE["schema"] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return _SCHEMA_CACHE["schema"]


def _finding_schema() -> dict:
    schema = load_schema()
    return dict(schema["$defs"]["finding"], **{"$defs": schema["$defs"]})


def _iter_errors(instance, schema: Optional[dict] = None):
    """jsonschema errors of `instance` against `schema` (default: the whole document)."""
    try:
        import jsonschema
    except ImportError:
        raise CMBError("annotation validation needs the 'jsonschema' package "
                       "(pip install jsonschema)") from None
    return jsonschema.Draft202012Validator(schema or load_schema()).iter_errors(instance)


def document_errors(doc) -> list[str]:
    """Every problem of `doc` as 'path: message' lines (empty list: valid)."""
    def path_key(e):
        return [(0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path]

    errors = sorted(_iter_errors(doc), key=path_key)
    lines = [_describe(e) for e in errors]
    if isinstance(doc, dict) and isinstance(doc.get("findings"), list):
        lines += _duplicate_ids(doc["findings"], "findings", "label")
    for name in ("mimics", "other_findings"):
        if isinstance(doc, dict) and isinstance(doc.get(name), list):
            lines += _duplicate_ids(doc[name], name, "id")
    return lines


def validate_document(doc) -> dict:
    """Check `doc` against the schema; raise CMBError naming the first bad field.

    The message reads e.g. "findings[2].certainty: 'maybe' is not one of certain,
    uncertain, unreviewed" (and says how many more problems there are).
    """
    lines = document_errors(doc)
    if lines:
        more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
        raise CMBError(f"annotation: {lines[0]}{more}")
    return doc


def check_finding(finding: dict, path: str = "finding") -> dict:
    """Check one finding against the schema; CMBError names `path`.field and the allowed values."""
    errors = list(_iter_errors(finding, _finding_schema()))
    if errors:
        raise CMBError(_describe(errors[0], path))
    return finding


def _duplicate_ids(items, name: str, key: str) -> list[str]:
    seen, lines = set(), []
    for n, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if value is not None and value in seen:
            lines.append(f"{name}[{n}].{key}: {value} is used twice; each must be unique")
        seen.add(value)
    return lines


def _path(parts, prefix: str = "") -> str:
    text = prefix
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "(document)"


def _describe(error, prefix: str = "") -> str:
    """One line for a jsonschema error: 'path: what is wrong (allowed values)'."""
    path = _path(list(error.absolute_path), prefix)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "enum":
        allowed = ", ".join("null" if v is None else str(v) if v != "" else "'' (empty)" for v in expected)
        return f"{path}: {_show(value)} is not one of {allowed}"
    if kind == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        return f"{path}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in value if k not in allowed] if isinstance(value, dict) else []
        return f"{path}: unknown field {', '.join(map(repr, extra))}; allowed fields are {', '.join(allowed)}"
    if kind == "type":
        types = expected if isinstance(expected, list) else [expected]
        return f"{path}: {_show(value)} is not of type {' or '.join(types)}"
    if kind in ("minimum", "maximum", "minItems", "maxItems", "pattern", "uniqueItems"):
        return f"{path}: {_show(value)} fails {kind} {expected}"
    return f"{path}: {error.message}"


def _show(value) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- files -----------------------------------------------------------------------------
def load_document(path, complete: bool = False) -> dict:
    """Read an annotation JSON file; with `complete`, fill missing fields; validate."""
    from ..io import read_json

    path = Path(path)
    doc = read_json(path, "an annotation")
    if complete:
        doc = complete_document(doc)
    try:
        return validate_document(doc)
    except CMBError as exc:
        raise CMBError(f"{path}: {exc}") from None


def save_document(doc: dict, path, overwrite: bool = True) -> Path:
    """Validate `doc` and write it atomically as indented JSON."""
    from ..io import write_json_atomic

    validate_document(doc)
    return write_json_atomic(path, doc, overwrite=overwrite)
