"""The fine-tuning gate's arithmetic and wording with hand-computed cases (CMBLib/detection/
finetune_gate.py): pooled scoring over studies, the one threshold rule, the comparison, the
decision order and the sentence the run prints.  Written to kill the mutants that
`scripts/mutation_test.py --module gate` found surviving (docs/developer.md)."""
import numpy as np
import pytest

from CMBLib.detection import finetune_gate as gate
from CMBLib.geometry import Volume


def _blobs(*centres, shape=(20, 20, 20)):
    """Instance labels 1..N: a 3x3x3 cube at each (k, j, i) centre, on a 1 mm grid."""
    a = np.zeros(shape, np.int32)
    for n, (k, j, i) in enumerate(centres, 1):
        a[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = n
    return a


def _case(*ref_centres):
    return {"ref": Volume(_blobs(*ref_centres), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))}


def test_score_pools_counts_over_studies_and_derives_the_rates(monkeypatch):
    # study A: references at (5,5,5) and (14,14,14); study B: one reference at (10,10,10)
    cases = [_case((5, 5, 5), (14, 14, 14)), _case((10, 10, 10))]
    said = ["registration failed", "registration failed", "other"]
    labels = {  # (study index, threshold) -> predicted centres
        (0, 0.3): [(5, 5, 5), (2, 17, 2)], (1, 0.3): [(10, 10, 10), (3, 3, 16)],   # tp 2, fp 2, fn 1
        (0, 0.9): [], (1, 0.9): [],                                                  # tp 0, fp 0, fn 3
    }

    def fake_case_labels(network, meta, case, thresholds, device="cpu", warnings=None):
        warnings.extend(said)
        index = next(n for n, c in enumerate(cases) if c is case)
        return [_blobs(*labels[(index, t)]) for t in thresholds]

    monkeypatch.setattr(gate, "case_labels", fake_case_labels)
    warnings = ["other"]
    rows = gate.score(None, {}, cases, thresholds=(0.3, 0.9), warnings=warnings)
    assert warnings == ["other", "registration failed"]          # once each, nothing said twice
    assert rows[0] == {"threshold": 0.3, "tp": 2, "fp": 2, "fn": 1, "sensitivity": 2 / 3, "precision": 0.5,
                       "f1": 4 / 7, "fp_per_scan": 1.0}
    assert rows[1] == {"threshold": 0.9, "tp": 0, "fp": 0, "fn": 3, "sensitivity": 0.0, "precision": None,
                       "f1": 0.0, "fp_per_scan": 0.0}
    assert isinstance(rows[0]["threshold"], float)
    # no reference and no prediction: every rate is undefined; no study at all: FP/scan over max(1, 0)
    labels.update({(0, 0.5): [], (1, 0.5): []})
    empty = [_case(), _case()]
    cases[:] = empty
    row = gate.score(None, {}, cases, thresholds=(0.5,))[0]
    assert row == {"threshold": 0.5, "tp": 0, "fp": 0, "fn": 0, "sensitivity": None, "precision": None,
                   "f1": None, "fp_per_scan": 0.0}
    assert gate.score(None, {}, [], thresholds=(0.5, 0.7)) == [
        {"threshold": t, "tp": 0, "fp": 0, "fn": 0, "sensitivity": None, "precision": None, "f1": None,
         "fp_per_scan": 0.0} for t in (0.5, 0.7)]


def test_score_counts_false_positives_per_study(monkeypatch):
    cases = [_case((5, 5, 5)), _case((5, 5, 5)), _case((5, 5, 5)), _case((5, 5, 5))]
    monkeypatch.setattr(gate, "case_labels", lambda n, m, case, thresholds, device="cpu", warnings=None:
                        [_blobs((5, 5, 5), (15, 15, 15)) for _ in thresholds])
    row = gate.score(None, {}, cases, thresholds=(0.5,))[0]
    assert (row["tp"], row["fp"], row["fn"], row["fp_per_scan"]) == (4, 4, 0, 1.0)
    assert row["precision"] == 0.5 and row["sensitivity"] == 1.0 and row["f1"] == pytest.approx(2 / 3)


def test_score_uses_the_valdo_rule_at_5_mm(monkeypatch):
    """A prediction 4 mm from its reference is a hit; 6 mm away it is a miss and a false positive."""
    monkeypatch.setattr(gate, "case_labels", lambda n, m, case, thresholds, device="cpu", warnings=None:
                        [case["pred"] for _ in thresholds])
    near, far = _case((10, 10, 5)), _case((10, 10, 5))
    near["pred"], far["pred"] = _blobs((10, 10, 9)), _blobs((10, 10, 11))
    assert gate.RULE == {"rule": "valdo", "distance_mm": 5.0}
    assert [gate.score(None, {}, [c], thresholds=(0.5,))[0]["tp"] for c in (near, far)] == [1, 0]
    assert gate.score(None, {}, [far], thresholds=(0.5,))[0]["fp"] == 1


def test_choose_threshold_counts_an_undefined_f1_as_zero_and_breaks_ties():
    rows = [{"threshold": 0.3, "f1": None, "fp": 0}, {"threshold": 0.5, "f1": 0.0, "fp": 1},
            {"threshold": 0.7, "f1": None, "fp": 0}]
    assert gate.choose_threshold(rows)["threshold"] == 0.7          # (0, 0, 0.7) > (0, 0, 0.3) > (0, -1, 0.5)
    rows = [{"threshold": 0.3, "f1": 0.4, "fp": 2}, {"threshold": 0.5, "f1": 0.4, "fp": 1},
            {"threshold": 0.7, "f1": 0.3, "fp": 0}]
    assert gate.choose_threshold(rows)["threshold"] == 0.5
    assert gate.choose_threshold([{"threshold": 0.9, "f1": None, "fp": 0},
                                  {"threshold": 0.3, "f1": 0.5, "fp": 0}])["threshold"] == 0.3
    assert gate.choose_threshold([{"threshold": 0.9, "f1": 0.2, "fp": 0},
                                  {"threshold": 0.4, "f1": 0.6, "fp": 9}])["threshold"] == 0.4


def test_row_at_takes_the_nearest_threshold():
    rows = [{"threshold": t} for t in (0.3, 0.5, 0.8)]
    assert gate.row_at(rows, 0.5)["threshold"] == 0.5
    assert gate.row_at(rows, "0.62")["threshold"] == 0.5           # |0.62-0.5| < |0.62-0.8|
    assert gate.row_at(rows, 0.7)["threshold"] == 0.8
    assert gate.row_at(rows, 0.0)["threshold"] == 0.3


def test_beats_within_the_tolerance_and_with_undefined_f1():
    base = {"f1": 0.5, "fp": 2}
    assert not gate.beats({"f1": 0.5 + 5e-10, "fp": 2}, base)       # inside 1e-9: equal F1, equal FP
    assert gate.beats({"f1": 0.5 + 5e-10, "fp": 1}, base)           # equal F1, fewer FP
    assert gate.beats({"f1": 0.5 + 2e-9, "fp": 5}, base)            # higher F1 wins whatever the FP
    assert not gate.beats({"f1": 0.5 - 2e-9, "fp": 0}, base)        # lower F1 loses whatever the FP
    assert not gate.beats({"f1": 0.5 - 5e-10, "fp": 2}, base)
    assert gate.beats({"f1": 0.5 - 5e-10, "fp": 1}, base)
    assert gate.beats({"f1": 0.1, "fp": 3}, {"f1": None, "fp": 0})  # None counts as 0
    assert not gate.beats({"f1": None, "fp": 0}, {"f1": 0.1, "fp": 3})
    assert gate.beats({"f1": None, "fp": 0}, {"f1": None, "fp": 1})
    assert not gate.beats({"f1": None, "fp": 1}, {"f1": None, "fp": 1})


def test_same_weights_needs_the_same_keys_and_values():
    torch = pytest.importorskip("torch")
    a = {"w": torch.zeros(2), "b": torch.ones(1)}
    assert gate.same_weights(a, {"b": torch.ones(1), "w": torch.zeros(2)})
    assert not gate.same_weights(a, {"w": torch.zeros(2), "b": torch.ones(1), "c": torch.ones(1)})
    assert not gate.same_weights({"w": torch.zeros(2)}, {"v": torch.zeros(2)})
    assert not gate.same_weights(a, {"w": torch.tensor([0.0, 1.0]), "b": torch.ones(1)})


def test_decide_checks_in_order_and_asks_for_confirmation_only_when_needed():
    calls = []

    def confirm(result):
        def run():
            calls.append(1)
            return result
        return run

    low, high = {"f1": 0.5, "fp": 1}, {"f1": 0.6, "fp": 1}
    # identical weights are refused even when they look better (and nothing is confirmed)
    assert gate.decide(low, high, True, confirm((low, high))) == {"accepted": False, "reason": "identical",
                                                                 "test": None}
    assert gate.decide(low, None, True, confirm(None)) == {"accepted": False, "reason": "no_steps", "test": None}
    assert gate.decide(high, low, False, confirm((low, high))) == {"accepted": False, "reason": "not_better",
                                                                  "test": None}
    assert calls == []
    assert gate.decide(low, high, False, confirm(None), accept_unconfirmed=True) == {
        "accepted": True, "reason": "unconfirmed", "test": None}
    assert gate.decide(low, high, False, confirm(None), accept_unconfirmed=0) == {
        "accepted": False, "reason": "not_enough_studies", "test": None}
    assert gate.decide(low, high, False, confirm((high, low)), accept_unconfirmed=True) == {
        "accepted": False, "reason": "not_confirmed", "test": (high, low)}
    assert calls == [1, 1, 1]


def test_figures_and_fmt():
    assert gate.fmt(None) == "n/a" and gate.fmt(0.57142) == "0.571"
    row = {"f1": 4 / 7, "fp_per_scan": 1.0 / 3, "threshold": 0.95}
    assert gate.figures(row) == "F1 0.571, 0.33 FP/scan at threshold 0.95"
    assert gate.figures({"f1": None, "fp_per_scan": 2, "threshold": 0.5}) == "F1 n/a, 2.00 FP/scan at threshold 0.5"


PARENT = {"f1": 0.5, "fp_per_scan": 1.0, "threshold": 0.7}
BEST = {"step": 12, "row": {"f1": 0.75, "fp_per_scan": 0.5, "threshold": 0.8}}
TEST = ({"f1": 0.4, "fp_per_scan": 2.0, "threshold": 0.7}, {"f1": 0.6, "fp_per_scan": 1.0, "threshold": 0.8})
VAL = "validation F1 0.750, 0.50 FP/scan at threshold 0.8 vs the parent's F1 0.500, 1.00 FP/scan at threshold 0.7"
HELD = ("held-out test (3 studies) F1 0.600, 1.00 FP/scan at threshold 0.8 vs the parent's "
        "F1 0.400, 2.00 FP/scan at threshold 0.7")
KEPT = "this folder holds the parent's weights and threshold unchanged"


def test_outcome_text_for_every_verdict():
    def text(accepted, reason, test=None, best=BEST):
        return gate.outcome_text({"accepted": accepted, "reason": reason, "test": test}, PARENT, best, 3)

    assert text(True, "confirmed", TEST) == f"fine-tuned weights of step 12 kept: {VAL}; {HELD}"
    assert text(True, "unconfirmed") == (f"fine-tuned weights of step 12 kept: {VAL}; NOT CONFIRMED on held-out "
                                         "studies (not enough studies; --accept-unconfirmed)")
    assert text(False, "no_steps", best=None) == f"no training step ran: {KEPT}"
    assert text(False, "identical") == ("the fine-tuned weights (step 12) are identical to the parent's (nothing "
                                        f"was learnt, e.g. --lr 0): {KEPT}")
    assert text(False, "not_better") == f"no fine-tuned state beat the parent on validation ({VAL}): {KEPT}"
    assert text(False, "not_enough_studies") == (
        "not enough studies to judge: the fine-tuned weights of step 12 did better on validation "
        f"({VAL}), but no test study with a CMB was left to confirm it on; {KEPT} (annotate more studies, "
        "or add --accept-unconfirmed to keep unconfirmed weights)")
    assert text(False, "not_confirmed", TEST) == (f"the fine-tuned weights did better on validation ({VAL}) but "
                                                  f"not on held-out studies ({HELD}): {KEPT}")
    assert text(False, "not_confirmed", None) == (f"the fine-tuned weights did better on validation ({VAL}) but "
                                                  f"not on held-out studies (): {KEPT}")
