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


def aside_description(record: dict) -> str:
    """Why a candidate was set aside, for its control point: 'set aside: deep_midline_veins
    zone, 3.1 mm, p 0.82; not a finding' (plus the stage-2 probability when it has one)."""
    parts = [f"{record.get('suppressed_by') or 'location'} zone"]
    if record.get("diameter_mm") is not None:
        parts.append(f"{float(record['diameter_mm']):.1f} mm")
    if record.get("max_probability") is not None:
        parts.append(f"p {float(record['max_probability']):.2f}")
    if record.get("stage2_probability") is not None:
        parts.append(f"stage-2 p {float(record['stage2_probability']):.2f}")
    return "set aside: " + ", ".join(parts) + "; not a finding"


def aside_points(document: dict) -> list:
    """[(centre RAS mm (x, y, z), label 'aside N', description)] for the candidates a
    NAME_cmb.json sets aside (``suppressed_candidates``, in the order written); [] when none."""
    out = []
    for n, record in enumerate(document.get("suppressed_candidates") or [], start=1):
        x, y, z = (float(v) for v in record["centre_ras"])
        out.append(((x, y, z), f"aside {n}", aside_description(record)))
    return out


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


def table_row(record: dict, status: str) -> list:
    """The texts of one row of the candidates table (see TABLE_HEADER in the module)."""
    return [str(record["label"]), status, f"{float(record['diameter_mm']):.1f}", str(record["size_class"]),
            f"{float(record.get('max_probability', 0.0)):.2f}", str(record.get("location") or ""),
            "vessel-like" if record.get("vessel_like") else ""]


def _metrics(value):
    """model.json 'metrics': a dict, or (older models) the text of a Python dict."""
    if isinstance(value, str):
        import ast

        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return {}
    return value if isinstance(value, dict) else {}


def model_card_html(meta: dict) -> str:
    """A short, readable model card: version, input, grid, threshold, training data, test figures."""
    from html import escape

    def fmt(v, digits=2):
        return f"{v:.{digits}f}" if isinstance(v, float) else escape(str(v))

    metrics = _metrics(meta.get("metrics"))
    test = (metrics.get("test") or {}).get("all") if isinstance(metrics.get("test"), dict) else None
    if test:
        perf = (f"test set, {test.get('n_cases', '?')} scans ({escape(str(metrics.get('rule', '')))}): "
                f"sensitivity {fmt(test.get('sensitivity'))}, precision {fmt(test.get('precision'))}, "
                f"{fmt(test.get('fp_per_scan'))} false positives per scan")
    else:
        perf = "not measured"
    training = str(meta.get("training_data") or "not stated")
    if len(training) > 160:
        training = training[:157].rsplit(" ", 1)[0] + "..."
    spacing = " x ".join(fmt(float(s), 1) for s in meta.get("spacing_mm", []))
    lines = [f"<b>{escape(str(meta.get('name', 'model')))}</b> version {escape(str(meta.get('version', '?')))}",
             f"Input: {escape(str(meta.get('intended_input', 'not stated')))}",
             f"Grid {spacing} mm; threshold {fmt(meta.get('threshold', '?'))}; CMB sizes "
             f"{fmt(meta.get('min_diameter_mm', '?'), 1)}-{fmt(meta.get('max_diameter_mm', '?'), 1)} mm",
             f"Training data: {escape(training)}",
             f"Performance: {perf}"]
    if meta.get("source") == "user":
        lines[0] += " (fine-tuned, " + escape(str(meta.get("path", ""))) + ")"
        lines += [escape(line) for line in _card_summary(meta)]
        if meta.get("card"):
            lines.append(f"Model card: {escape(str(meta['card']))}")
    return "<br>".join(lines)


def _card_summary(meta: dict) -> list:
    """The registry's summary of a fine-tuned model (issue 15), when that code is installed."""
    try:
        from CMBLib.detection.registry import card_summary
    except ImportError:
        return []
    return card_summary(meta)
