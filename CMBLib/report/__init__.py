"""Reports for the reader: a self-contained HTML page per study (count, MARS-style table,
distribution pattern, thumbnails) and a cohort summary.  Needs matplotlib.

Names are imported on first use, so `cmb --help` (which imports `report.outputs` for the
options) stays free of numpy and matplotlib.
"""
import importlib

_WHERE = {
    "category_counts": "findings", "distribution_pattern": "findings", "region_table": "findings",
    "report_items": "findings", "COHORT_FILE": "html", "REPORT_SUFFIX": "html", "cohort_report_html": "html",
    "model_limits": "html", "study_report_html": "html", "write_cohort_report": "html",
    "write_study_report": "html",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
