"""Reports for the reader: a self-contained HTML page per study (count, MARS-style table,
distribution pattern, thumbnails) and a cohort summary.  Needs matplotlib."""
from .findings import category_counts, distribution_pattern, region_table, report_items
from .html import (
    COHORT_FILE,
    REPORT_SUFFIX,
    cohort_report_html,
    model_limits,
    study_report_html,
    write_cohort_report,
    write_study_report,
)

__all__ = ["COHORT_FILE", "REPORT_SUFFIX", "category_counts", "cohort_report_html", "distribution_pattern",
           "model_limits", "region_table", "report_items", "study_report_html", "write_cohort_report",
           "write_study_report"]
