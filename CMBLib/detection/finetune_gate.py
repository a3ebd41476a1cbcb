"""Scoring and the keep-or-reject decision of a fine-tuning run: the gate.

Scoring (`score`) runs a model on studies through `cmb detect`'s own steps -- the
pipeline's `detect` (preprocessing, brain mask, inference zooms, flip averaging, sliding
window), then, for each threshold, the pipeline's candidates, second stage and location
filter (`pipeline.stages`, `apply_second_stage` and its location step with the model's
zones) -- and counts TP / FP / FN by the VALDO rule, 5 mm.  A test compares the labels
with `detect`'s at the same threshold, so the two cannot drift apart unnoticed.  Findings nobody reviewed are
blanked first (they count neither way).

The gate (`decide`; docs/finetuning.md, "The gate"):

1. every model -- the parent and each fine-tuned state validated during training -- gets
   its threshold by one rule (`choose_threshold`) on the same validation studies;
2. the best fine-tuned state (by `beats`, at its threshold) must beat the parent at the
   parent's threshold chosen that way, not at the one it shipped with;
3. weights identical to the parent's are never kept (nothing was learnt);
4. the decision is confirmed on test studies no model was trained or tuned on: each model
   at its validation-chosen threshold, the fine-tuned one must beat the parent there too.
   Without test studies holding a CMB there is "not enough studies to judge": the parent
   is kept unless the user accepts an unconfirmed result.
"""
from typing import Callable, Optional

import numpy as np

from ..errors import CMBError

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
RULE = {"rule": "valdo", "distance_mm": 5.0}
ROW_FIELDS = ("threshold", "f1", "sensitivity", "precision", "fp_per_scan", "tp", "fp", "fn")

# reason codes of `decide` -> the short phrase a GUI shows
VERDICTS = {
    "confirmed": "better than the parent on validation and on the held-out test studies",
    "unconfirmed": "better than the parent on validation; not confirmed (not enough studies; "
                   "kept because --accept-unconfirmed was given)",
    "no_steps": "no training step ran",
    "identical": "the fine-tuned weights are identical to the parent's",
    "not_better": "not better than the parent on validation",
    "not_enough_studies": "not enough studies to judge",
    "not_confirmed": "better on validation but not on the held-out test studies",
}
GATE_RULE = ("each model's threshold is the one with the highest F1 on the validation studies (ties: fewer "
             "false positives, then the higher threshold); the fine-tuned weights are kept only when they "
             "differ from the parent's, beat the parent (each at its own threshold) on validation -- higher F1, "
             "or equal F1 with fewer false positives -- and beat it again on test studies neither saw")


# --- scoring ---------------------------------------------------------------------------------------
def score(network, meta: dict, cases: list, device: str = "cpu", thresholds=THRESHOLDS,
          warnings: Optional[list] = None) -> list[dict]:
    """Pooled TP / FP / FN (and F1, FP/scan...) per threshold over `cases` (`eval_case`s),
    the model (`network`, `meta`) run as `cmb detect` runs it (see the module text)."""
    from ..metrics import evaluate_case

    counts = [{"tp": 0, "fp": 0, "fn": 0} for _ in thresholds]
    said = []
    for case in cases:
        for c, labels in zip(counts, case_labels(network, meta, case, thresholds, device, said)):
            r = evaluate_case(case["ref"].with_array(labels), case["ref"], rule=RULE["rule"],
                              distance_mm=RULE["distance_mm"])
            c["tp"] += r.tp
            c["fp"] += r.fp
            c["fn"] += r.fn
    if warnings is not None:      # once each (the location step may say the same for every threshold)
        warnings += [w for w in dict.fromkeys(said) if w not in warnings]
    n = max(1, len(cases))
    rows = []
    for c, t in zip(counts, thresholds):
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        rows.append({"threshold": float(t), "tp": tp, "fp": fp, "fn": fn,
                     "sensitivity": tp / (tp + fn) if tp + fn else None,
                     "precision": tp / (tp + fp) if tp + fp else None,
                     "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None,
                     "fp_per_scan": fp / n})
    return rows


def case_labels(network, meta: dict, case: dict, thresholds, device: str = "cpu",
                warnings: Optional[list] = None) -> list[np.ndarray]:
    """The instance labels `cmb detect` would write for `case` at each threshold (native grid,
    the case's unknown findings blanked).  The probability map comes from the pipeline's
    `detect` itself; the steps after the threshold are the pipeline's functions."""
    from .candidates import find_candidates
    from .location_filter import model_zones
    from .pipeline import apply_second_stage, detect, stages

    polarity = case["polarity"]
    stage2, cut = stages(meta, polarity)                  # what `cmb detect` runs by default
    zones = model_zones(meta)
    min_d = float(cut.get("min_diameter_mm", 2.0))
    max_d = float(cut.get("max_diameter_mm", 10.0))
    res = detect(case["volume"], (network, meta), device=device, threshold=min(thresholds), polarity=polarity,
                 sequence="QSM" if polarity == "bright" else "T2S", second_stage=False, location_filter=False,
                 keep_model_grid=True)
    network.eval()
    pre, prob_model = res.model_grid["pre"], res.model_grid["probability"]
    brain = pre.to_native(pre.brain_mask.astype(np.uint8), order=0) > 0      # as `detect` does
    prob = np.array(res.probability.array, dtype=np.float32)
    prob[case["ignore"]] = 0.0
    vol = case["volume"].with_array(prob)
    out = []
    for t in thresholds:
        labels, records, _ = find_candidates(vol, float(t), min_d, max_d, brain_mask=brain)
        if stage2 is not None and records:
            from .second_stage import candidate_features

            feats = candidate_features(pre.array, prob_model, pre.brain_mask, pre.grid, records)
            labels, records, _ = apply_second_stage(stage2, feats, labels, records)
        if zones and records:
            labels, records = _location_filter(case, labels, records, zones, brain, warnings)
        out.append(labels)
    return out


def _location_filter(case: dict, labels, records: list, zones, brain, warnings: Optional[list]):
    """(labels, records) after the location filter, as `cmb detect` applies it: the pipeline's
    own location step when it has one (`pipeline._location_step`: one atlas registration per
    image, cached there, and its registration gate); with a pipeline that has not (`_locate`
    registers on every call), the atlas location of each record, registered once per study
    here, and the pipeline's `suppress_in_zones`."""
    from . import pipeline

    step = getattr(pipeline, "_location_step", None)
    if step is not None:
        labels, records, _ = step(case["volume"], labels, records, zones, False, case["polarity"], brain,
                                  warnings if warnings is not None else [])
        return labels, records
    found = _locate(case, records, warnings)
    if found is None:
        return labels, records
    labels, records, _ = pipeline.suppress_in_zones(labels, records, found, zones)
    return labels, records


def _locate(case: dict, records: list, warnings: Optional[list]):
    """Atlas location of the records' centres; the registration is done once per study (cached
    in `case`).  None, with one warning per study, when it fails: as in `cmb detect`, the
    location filter is then not applied to that study."""
    from ..location import Locator

    if case.get("locate_failed"):
        return None
    try:
        if case.get("locator") is None:
            case["locator"] = Locator(case["volume"])
        return list(case["locator"].locate(np.array([r["centre_ras"] for r in records], dtype=float)))
    except (CMBError, ImportError) as exc:
        case["locate_failed"] = True
        if warnings is not None:
            warnings.append(f"location filter not applied: {exc}")
        return None


# --- the rule ----------------------------------------------------------------------------------------
def choose_threshold(rows: list[dict]) -> dict:
    """The one rule for every model: highest F1 (None counts as 0); ties: fewer FP, then the
    higher threshold."""
    return max(rows, key=lambda r: (r["f1"] or 0.0, -r["fp"], r["threshold"]))


def row_at(rows: list[dict], threshold: float) -> dict:
    return min(rows, key=lambda r: abs(r["threshold"] - float(threshold)))


def beats(new: dict, old: dict) -> bool:
    """True when `new` is better than `old`: higher F1, or equal F1 with fewer FP."""
    a, b = new["f1"] or 0.0, old["f1"] or 0.0
    return a > b + 1e-9 or (abs(a - b) <= 1e-9 and new["fp"] < old["fp"])


def same_weights(state: dict, other: dict) -> bool:
    """True when two state dicts hold the same keys and bit-identical tensors."""
    import torch

    if set(state) != set(other):
        return False
    return all(torch.equal(state[k].detach().cpu(), other[k].detach().cpu()) for k in state)


def decide(parent_val: dict, candidate_val: Optional[dict], identical: bool,
           confirm: Callable[[], Optional[tuple]], accept_unconfirmed: bool = False) -> dict:
    """The gate.  parent_val / candidate_val: the parent's and the best fine-tuned state's
    validation rows, each at its threshold from `choose_threshold` (candidate None: no
    fine-tuned state).  identical: the candidate's weights equal the parent's.  confirm():
    (parent's test row, candidate's test row), each at its validation-chosen threshold, or
    None when there are no test studies with a CMB; called only when validation is passed.

    Returns {"accepted", "reason" (a key of VERDICTS), "test": (parent, candidate) rows or None}.
    """
    if candidate_val is None:
        return {"accepted": False, "reason": "no_steps", "test": None}
    if identical:
        return {"accepted": False, "reason": "identical", "test": None}
    if not beats(candidate_val, parent_val):
        return {"accepted": False, "reason": "not_better", "test": None}
    test = confirm()
    if test is None:
        return {"accepted": bool(accept_unconfirmed),
                "reason": "unconfirmed" if accept_unconfirmed else "not_enough_studies", "test": None}
    parent_test, candidate_test = test
    ok = beats(candidate_test, parent_test)
    return {"accepted": ok, "reason": "confirmed" if ok else "not_confirmed", "test": test}


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def figures(row: dict) -> str:
    return f"F1 {fmt(row['f1'])}, {row['fp_per_scan']:.2f} FP/scan at threshold {row['threshold']:g}"


def outcome_text(verdict: dict, parent_val: dict, best: Optional[dict], n_test: int) -> str:
    """One sentence: what the folder holds and why."""
    reason = verdict["reason"]
    val = "" if best is None else f"validation {figures(best['row'])} vs the parent's {figures(parent_val)}"
    test = "" if verdict["test"] is None else (f"held-out test ({n_test} studies) {figures(verdict['test'][1])} vs "
                                               f"the parent's {figures(verdict['test'][0])}")
    if verdict["accepted"]:
        text = f"fine-tuned weights of step {best['step']} kept: {val}"
        return text + (f"; {test}" if reason == "confirmed" else
                       "; NOT CONFIRMED on held-out studies (not enough studies; --accept-unconfirmed)")
    kept = "this folder holds the parent's weights and threshold unchanged"
    if reason == "no_steps":
        return f"no training step ran: {kept}"
    if reason == "identical":
        return (f"the fine-tuned weights (step {best['step']}) are identical to the parent's (nothing was learnt, "
                f"e.g. --lr 0): {kept}")
    if reason == "not_better":
        return f"no fine-tuned state beat the parent on validation ({val}): {kept}"
    if reason == "not_enough_studies":
        return (f"not enough studies to judge: the fine-tuned weights of step {best['step']} did better on "
                f"validation ({val}), but no test study with a CMB was left to confirm it on; {kept} "
                "(annotate more studies, or add --accept-unconfirmed to keep unconfirmed weights)")
    return f"the fine-tuned weights did better on validation ({val}) but not on held-out studies ({test}): {kept}"
