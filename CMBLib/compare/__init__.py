"""Follow-up scans against their baseline: new CMBs, the ARIA-H category, a comparison report.

`compare_studies(baseline, followup, ...)` (pipeline.py) registers, detects, matches and
classes; `write_compare_outputs` (outputs.py) writes compare.json, the CSV, the label map of
new CMBs, the HTML report and, for DICOM, SEG + SR.  Files: register.py (rigid / affine
registration), quality.py (the trust gate), matching.py (new / persisting / no longer
seen), aria.py (category), siderosis.py (regions that turned dark), report.py (HTML).
"""
