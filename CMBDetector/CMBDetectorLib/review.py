"""Review of detected candidates: accept / reject / next, names, hand-over to annotation.

Records are the per-CMB dicts of a ``NAME_cmb.json`` (format cmb-detections 1.0).
Statuses: "unreviewed", "accepted", "rejected".  No Slicer or Qt import here.

Hand-over to CMBScribbleAnnotator (see README): `ReviewSession.findings()` returns
annotation findings (`CMBLib.detection.outputs.records_to_findings`): accepted
candidates with review_status "confirmed", unreviewed ones "proposed"; rejected ones
are left out.  Each finding's ``label`` is the candidate's label in the detection mask
(and the segment tagged ``CMBDetector.Label`` in the segmentation).
"""

STATUSES = ("unreviewed", "accepted", "rejected")


def segment_name(record: dict) -> str:
    """'CMB 3: 4.2 mm (<5mm), lobar' -- number, size and location (when known)."""
    text = f"CMB {int(record['label'])}: {float(record['diameter_mm']):.1f} mm ({record['size_class']})"
    if record.get("location"):
        text += f", {record['location']}"
    return text


class ReviewSession:
    """Candidates in review order with a status each and a current position."""

    def __init__(self, records: list[dict]):
        self.records = list(records)
        self.status = {int(r["label"]): "unreviewed" for r in self.records}
        self.index = 0 if self.records else -1

    @property
    def current(self):
        return self.records[self.index] if 0 <= self.index < len(self.records) else None

    def select(self, index: int) -> None:
        if self.records:
            self.index = max(0, min(int(index), len(self.records) - 1))

    def mark(self, status: str, advance: bool = True) -> None:
        """Set the current candidate's status and, by default, move to the next unreviewed one."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.current is None:
            return
        self.status[int(self.current["label"])] = status
        if advance:
            self.next(unreviewed_only=True)

    def accept(self) -> None:
        self.mark("accepted")

    def reject(self) -> None:
        self.mark("rejected")

    def next(self, unreviewed_only: bool = False) -> None:
        n = len(self.records)
        for step in range(1, n + 1):
            i = (self.index + step) % n
            if not unreviewed_only or self.status[int(self.records[i]["label"])] == "unreviewed":
                self.index = i
                return
        # nothing left unreviewed: stay

    def previous(self) -> None:
        if self.records:
            self.index = (self.index - 1) % len(self.records)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for s in self.status.values():
            out[s] += 1
        return out

    def records_with(self, status: str) -> list[dict]:
        return [r for r in self.records if self.status[int(r["label"])] == status]

    def findings(self) -> list[dict]:
        """Annotation findings: accepted -> "confirmed", unreviewed -> "proposed"; rejected left out."""
        from CMBLib.detection.outputs import records_to_findings

        out = records_to_findings(self.records_with("accepted"), status="confirmed")
        out += records_to_findings(self.records_with("unreviewed"), status="proposed")
        return sorted(out, key=lambda f: int(f["label"]))
