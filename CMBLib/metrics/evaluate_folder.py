"""Evaluate folders (or lists) of prediction and reference files and write the report."""
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import CMBError
from ..geometry import geometry_difference
from ..io import read_volume
from .aggregate import aggregate
from .case_metrics import evaluate_case
from .froc import froc
from .matching import normalise_rule
from .pairing import list_images, pair_files, read_sidecar
from .report import REPORT_FILES, write_report


def evaluate_folders(pred_paths, ref_paths, out_dir, rule: str = "valdo", distance_mm: float = 5.0,
                     connectivity: int = 26, elements: str = "components", threshold: float = 0.5,
                     overwrite: bool = False, log: Optional[Callable[[str], None]] = None,
                     distance_units: str = "mm") -> dict:
    """Pair, evaluate every case, write the report into `out_dir`; returns the metrics document."""
    rule = normalise_rule(rule)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CMBError(f"{out}: exists and is not a folder")
    existing = [n for n in REPORT_FILES if (out / n).exists()]
    if existing and not overwrite:
        raise CMBError(f"{out}: already holds a report ({', '.join(existing)}); use --overwrite or another folder")
    refs = list_images(_as_list(ref_paths))
    if not refs:
        raise CMBError(f"no reference images found in {', '.join(str(p) for p in _as_list(ref_paths))}")
    preds = list_images(_as_list(pred_paths))
    explicit = all(Path(p).is_file() for p in _as_list(pred_paths) + _as_list(ref_paths))
    cases, unpaired = pair_files(preds, refs, explicit=explicit)
    if not any(c["pred"] is not None for c in cases):
        raise CMBError(f"no prediction pairs with a reference ({_names(preds)} against {_names(refs)}): files "
                       "pair by name (NAME_cmb_mask with NAME), case name or BIDS subject; name them alike, "
                       "or give one --pred file and one --ref file")
    say = log or (lambda m: None)
    results, files = [], {}
    for n, c in enumerate(cases, 1):
        ref = read_volume(c["ref"])
        pred = read_volume(c["pred"]) if c["pred"] is not None else None
        score_map = None
        if c["scores"] is not None and c["scores"] != c["pred"]:
            sv = read_volume(c["scores"])
            diff = geometry_difference(ref, sv, tol_mm=0.01)
            if diff:
                raise CMBError(f"{c['case']}: probability map {c['scores'].name} grid differs "
                               f"from the reference ({diff})")
            score_map = np.asarray(sv.array, dtype=float)
        scores, pred_loc = read_sidecar(c["pred"])
        _, ref_loc = read_sidecar(c["ref"])
        r = evaluate_case(pred, ref, rule=rule, distance_mm=distance_mm, connectivity=connectivity,
                          pred_scores=score_map if score_map is not None else (scores or None),
                          elements=elements, threshold=threshold, case=c["case"],
                          ref_locations=ref_loc or None, pred_locations=pred_loc or None,
                          distance_units=distance_units)
        results.append(r)
        files[c["case"]] = {"ref_file": str(c["ref"]), "pred_file": str(c["pred"]) if c["pred"] else "",
                            "score_file": str(c["scores"]) if c["scores"] else ""}
        if pred is not None:
            say(f"[{n}/{len(cases)}] {c['case']}: {r.n_ref} reference, {r.n_pred} predicted; "
                f"TP {r.tp} FP {r.fp} FN {r.fn}")
    summary = aggregate(results)
    curve = froc(results)
    settings = {"rule": rule, "distance_mm": distance_mm, "distance_units": distance_units,
                "connectivity": connectivity, "elements": elements,
                "threshold": threshold, "pred": [str(p) for p in _as_list(pred_paths)],
                "ref": [str(p) for p in _as_list(ref_paths)]}
    write_report(out, results, summary, curve, {"unpaired_predictions": unpaired, "files": files}, settings)
    doc = dict(summary)
    doc["froc"] = curve
    doc["unpaired_predictions"] = [str(p) for p in unpaired]
    doc["unpaired_references"] = [str(c["ref"]) for c in cases if c["pred"] is None]
    return doc


def _names(paths, most: int = 3) -> str:
    if not paths:
        return "no prediction files"
    shown = ", ".join(Path(p).name for p in paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _as_list(paths):
    return list(paths) if isinstance(paths, (list, tuple)) else [paths]
