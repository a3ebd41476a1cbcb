"""The reader's review of a comparison: compare.json -> table rows, decisions on the new CMBs,
the reviewed files (CMBDetector's "Compare with prior" section and the worker's
"compare_review" job; no Slicer or Qt import).

Rows list the new CMBs first (they are what is reviewed and what the ARIA-H category counts),
then persisting, no longer seen and outside the common view.  A row's key is "CLASS N" (N
counts from 1 inside its class, as in compare.csv).  Only new CMBs take a decision:
"unreviewed", "accepted" or "rejected"; a rejected new CMB is not a new CMB, so the reviewed
count is accepted + unreviewed and its category follows `aria.aria_h_category`.

`write_reviewed_outputs` writes ``compare_reviewed.json`` (compare.json with a ``review_status``
on every new entry and a ``review`` block), ``compare_reviewed.csv`` and
``compare_reviewed_report.html`` beside the automatic files, which stay as they were.
"""
import datetime
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

from ..errors import CMBError
from .aria import aria_h_category

STATUSES = ("unreviewed", "accepted", "rejected")
ORDER = ("new", "persisting", "no_longer_seen", "outside_common_view")
LABELS = {"new": "new", "persisting": "persisting", "no_longer_seen": "no longer seen",
          "outside_common_view": "outside common view"}
REVIEWED_FILES = {"json": "compare_reviewed.json", "csv": "compare_reviewed.csv",
                  "report": "compare_reviewed_report.html"}


def read_compare(path) -> dict:
    """A compare.json document (format cmb-compare); CMBError with the reason otherwise."""
    from ..io import read_json

    doc = read_json(path, "comparison")
    if not isinstance(doc, dict) or doc.get("format") != "cmb-compare":
        raise CMBError(f"{path}: not a comparison written by cmb compare (format cmb-compare)")
    return doc


def followup_to_baseline(doc: dict) -> np.ndarray:
    """The registration's 4x4 matrix, follow-up RAS mm -> baseline RAS mm."""
    m = np.asarray((doc.get("registration") or {}).get("followup_to_baseline_ras", np.eye(4)), float)
    if m.shape != (4, 4):
        raise CMBError("the comparison has no 4x4 registration matrix")
    return m


def prior_to_followup(doc: dict) -> np.ndarray:
    """4x4 baseline RAS mm -> follow-up RAS mm: the transform that lays the prior scan over the
    follow-up (its transform to parent in Slicer)."""
    return np.linalg.inv(followup_to_baseline(doc))


def compare_rows(doc: dict) -> list:
    """One dict per CMB, new ones first: key, cls, number, centre_ras (follow-up RAS mm),
    baseline_centre_ras (the matched baseline centre, else the follow-up centre carried into the
    baseline by the registration), diameter_mm, max_probability, flag (`_flag_text`), reviewable."""
    m = followup_to_baseline(doc)
    rows = []
    for cls in ORDER:
        for n, e in enumerate(doc.get(cls) or [], start=1):
            centre = [float(v) for v in e["centre_ras"]]
            base = e.get("baseline_centre_ras")
            carried = base is None
            if carried:
                base = (m[:3, :3] @ np.asarray(centre) + m[:3, 3]).round(2).tolist()
            diameter = e.get("diameter_mm", e.get("baseline_diameter_mm"))
            rows.append({"key": f"{cls} {n}", "cls": cls, "number": n, "centre_ras": centre,
                         "baseline_centre_ras": [float(v) for v in base], "baseline_carried": carried,
                         "diameter_mm": None if diameter is None else float(diameter),
                         "max_probability": e.get("max_probability"), "flag": _flag_text(e),
                         "reviewable": cls == "new"})
    return rows


def _flag_text(entry: dict) -> str:
    """What the reader should know about one CMB: found on the difference image only (not by
    the detector), and / or the flag of a nearby region that turned dark."""
    parts = ["difference image only" if entry.get("how") == "difference" else "", entry.get("flag") or ""]
    return "; ".join(p for p in parts if p)


def row_texts(row: dict, status: str = "") -> list:
    """Texts of one table row: #, class, status, diameter, follow-up RAS, flag."""
    x, y, z = row["centre_ras"]
    diameter = "" if row["diameter_mm"] is None else f"{row['diameter_mm']:.1f}"
    return [str(row["number"]), LABELS[row["cls"]], status if row["reviewable"] else "",
            diameter, f"{x:.1f}, {y:.1f}, {z:.1f}", row["flag"]]


class CompareReview:
    """Decisions on the new CMBs of one comparison and the current row."""

    def __init__(self, rows: list):
        self.rows = list(rows)
        self.status = {r["key"]: "unreviewed" for r in self.rows if r["reviewable"]}
        self.index = 0 if self.rows else -1

    @property
    def current(self):
        return self.rows[self.index] if 0 <= self.index < len(self.rows) else None

    def select(self, index: int) -> None:
        if self.rows:
            self.index = max(0, min(int(index), len(self.rows) - 1))

    def mark(self, status: str, advance: bool = True) -> bool:
        """Decide on the current row (new CMBs only; False for any other row)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        row = self.current
        if row is None or not row["reviewable"]:
            return False
        self.status[row["key"]] = status
        if advance:
            self.next(unreviewed_only=True)
        return True

    def next(self, unreviewed_only: bool = False) -> None:
        n = len(self.rows)
        for step in range(1, n + 1):
            i = (self.index + step) % n
            if not unreviewed_only or self.status.get(self.rows[i]["key"]) == "unreviewed":
                self.index = i
                return

    def previous(self) -> None:
        if self.rows:
            self.index = (self.index - 1) % len(self.rows)

    def summary(self) -> dict:
        """Counts of the decisions, the reviewed new count (not rejected) and its category."""
        counts = {s: 0 for s in STATUSES}
        for s in self.status.values():
            counts[s] += 1
        new = counts["accepted"] + counts["unreviewed"]
        return dict(counts, new_count=new, aria_h_category=aria_h_category(new))

    def to_json(self) -> str:
        return json.dumps({"status": self.status, "index": self.index}, sort_keys=True)

    def restore(self, text: str) -> None:
        """Decisions saved by `to_json` (unknown keys and statuses are ignored)."""
        try:
            saved = json.loads(text) if text else {}
        except ValueError:
            saved = {}
        if not isinstance(saved, dict):
            return
        for key, status in (saved.get("status") or {}).items():
            if key in self.status and status in STATUSES:
                self.status[key] = status
        if isinstance(saved.get("index"), int):
            self.select(saved["index"])


def reviewed_document(doc: dict, status: dict, reviewer: str = "") -> dict:
    """compare.json with the decisions: ``review_status`` on each new entry and a ``review``
    block (counts, the reviewed new count and ARIA-H category, time, reviewer)."""
    out = json.loads(json.dumps(doc))
    for n, e in enumerate(out.get("new") or [], start=1):
        s = status.get(f"new {n}", "unreviewed")
        if s not in STATUSES:
            raise CMBError(f"new {n}: review status must be one of {', '.join(STATUSES)}, not {s!r}")
        e["review_status"] = s
    review = CompareReview(compare_rows(out))
    review.status.update({k: v for k, v in status.items() if k in review.status})
    out["review"] = dict(review.summary(), reviewer=str(reviewer or ""),
                         reviewed=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         rule="new CMBs the reader did not reject (accepted + unreviewed)")
    return out


def result_from_document(doc: dict):
    """The parts of a `pipeline.CompareResult` the HTML report reads, from a compare.json."""
    from .register import FollowupRegistration

    reg = doc.get("registration") or {}
    registration = FollowupRegistration(followup_to_baseline(doc), -float(reg.get("mattes_mi", 0.0)),
                                        kind=reg.get("kind", "rigid"), start=reg.get("start", "scanner"))
    quality = dict(reg.get("quality") or {})
    for key in ("correlation", "overlap", "rotation_deg", "translation_mm"):
        quality.setdefault(key, float("nan"))
    return SimpleNamespace(
        classes={k: list(doc.get(k) or []) for k in ORDER}, aria_h_category=doc.get("aria_h_category", ""),
        quality=quality, registration=registration, settings=dict(doc.get("settings") or {"tolerance_mm": 0}),
        warnings=list(doc.get("warnings") or []),
        baseline=SimpleNamespace(source=(doc.get("baseline") or {}).get("findings", "")),
        followup=SimpleNamespace(source=(doc.get("followup") or {}).get("findings", "")))


def write_reviewed_outputs(compare_json, status: dict, baseline: Optional[str] = None,
                           followup: Optional[str] = None, reviewer: str = "", overwrite: bool = False) -> dict:
    """Write the reviewed JSON, CSV and HTML report beside `compare_json`; returns {key: path}.
    `baseline` / `followup`: the images (default: the paths compare.json names).  An existing
    reviewed file is replaced only with `overwrite`."""
    from ..io import read_volume, write_json_atomic, write_text_atomic
    from .outputs import compare_csv
    from .report import compare_report_html

    compare_json = Path(compare_json)
    doc = read_compare(compare_json)
    folder = compare_json.parent
    paths = {k: folder / name for k, name in REVIEWED_FILES.items()}
    if not overwrite:
        there = [p for p in paths.values() if p.exists()]
        if there:
            raise CMBError(f"{there[0]}: exists; not overwritten")
    images = []
    for given, key, what in ((baseline, "baseline", "baseline"), (followup, "followup", "follow-up")):
        path = given or (doc.get(key) or {}).get("image")
        if not path or not Path(path).is_file():
            raise CMBError(f"the {what} image {path or '(not named)'}: file not found")
        images.append(read_volume(path))
    reviewed = reviewed_document(doc, status, reviewer)
    result = result_from_document(reviewed)
    html = compare_report_html(result, images[0], images[1], study={"name": Path(str(followup or "")).name
                                                                   or "follow-up"}, review=reviewed["review"])
    csv_text = compare_csv(result)
    rows = csv_text.splitlines()
    statuses = [e.get("review_status", "") for e in reviewed.get("new") or []]
    lines = [rows[0] + ",review_status"] + [
        line + "," + (statuses[i - 1] if i <= len(statuses) else "") for i, line in enumerate(rows[1:], start=1)]
    write_text_atomic(paths["report"], html)
    write_text_atomic(paths["csv"], "\n".join(lines) + "\n")
    write_json_atomic(paths["json"], reviewed)          # last: marks a complete review
    return paths
