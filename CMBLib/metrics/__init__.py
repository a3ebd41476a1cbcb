"""Evaluation of CMB detection and segmentation against reference masks.

    from CMBLib.metrics import evaluate_case, aggregate, froc
    results = [evaluate_case(pred, ref, spacing=(0.5, 0.5, 3.0), rule="valdo") for pred, ref in cases]
    summary = aggregate(results)          # pooled tp / fp / fn at the top level
    curve = froc(results)                 # None unless every prediction has a score

Rules: 'valdo' (nearest reference within 5 mm, duplicates are FPs), 'touch' (>= 1 voxel
overlap), 'one_to_one' (optimal assignment within the distance).  See `matching`.
"""
from .aggregate import aggregate, describe, subject_level
from .case_metrics import CaseResult, evaluate_case
from .components import Element, label_elements
from .froc import froc, froc_from_maps
from .matching import RULES, Matching, match, match_points

__all__ = ["evaluate_case", "CaseResult", "aggregate", "describe", "subject_level", "froc",
           "froc_from_maps", "Element", "label_elements", "match", "match_points", "Matching", "RULES"]
