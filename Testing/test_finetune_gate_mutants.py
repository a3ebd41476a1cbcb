"""Hand-computed cases for the fine-tuning gate (CMBLib/detection/finetune_gate.py) written against the
mutants that survived a complete run of `scripts/mutation_test.py --module gate` (docs/developer.md,
"Mutation testing"): the comparison at the edge of its 1e-9 tolerance, what `score` hands to the
pipeline, the rule it scores by, and the rates of a single study."""
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


def _case(ref_centres, pred_centres):
    return {"ref": Volume(_blobs(*ref_centres), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "pred": _blobs(*pred_centres)}


def _score(monkeypatch, cases, **kw):
    calls = []

    def fake_case_labels(network, meta, case, thresholds, device="cpu", warnings=None):
        calls.append((network, meta, device))
        return [case["pred"] for _ in thresholds]

    monkeypatch.setattr(gate, "case_labels", fake_case_labels)
    return gate.score(*kw.pop("model", ("net", {"name": "m"})), cases, thresholds=(0.5,), **kw)[0], calls


def test_beats_at_exactly_the_tolerance():
    # an F1 exactly 1e-9 higher counts as equal (not higher): the FP decide
    assert not gate.beats({"f1": 1e-9, "fp": 5}, {"f1": 0.0, "fp": 2})
    assert gate.beats({"f1": 1e-9, "fp": 1}, {"f1": None, "fp": 2})
    assert not gate.beats({"f1": 1e-9, "fp": 2}, {"f1": 0.0, "fp": 2})


def test_score_runs_the_given_model_on_the_given_device(monkeypatch):
    network, meta = object(), {"name": "parent"}
    _, calls = _score(monkeypatch, [_case([(5, 5, 5)], [(5, 5, 5)])], model=(network, meta))
    assert calls == [(network, meta, "cpu")]                       # cpu unless told otherwise
    _, calls = _score(monkeypatch, [_case([(5, 5, 5)], [])], model=(network, meta), device="cuda:1")
    assert calls == [(network, meta, "cuda:1")]


def test_score_scores_by_the_gate_rule(monkeypatch):
    # a prediction 4 mm from its reference (centres (10,10,5) and (10,10,9)): a hit by the VALDO rule at
    # 5 mm; with the rule's distance at 3 mm, or by the touch rule (the cubes do not overlap), a miss
    case = _case([(10, 10, 5)], [(10, 10, 9)])
    assert _score(monkeypatch, [case])[0]["tp"] == 1
    monkeypatch.setattr(gate, "RULE", {"rule": "valdo", "distance_mm": 3.0})
    assert _score(monkeypatch, [case])[0]["tp"] == 0
    monkeypatch.setattr(gate, "RULE", {"rule": "touch", "distance_mm": 5.0})
    assert _score(monkeypatch, [case])[0]["tp"] == 0


def test_score_of_one_study(monkeypatch):
    # one reference, one prediction far from it: tp 0, fp 1, fn 1
    row, _ = _score(monkeypatch, [_case([(5, 5, 5)], [(15, 15, 15)])])
    assert row == {"threshold": 0.5, "tp": 0, "fp": 1, "fn": 1, "sensitivity": 0.0, "precision": 0.0,
                   "f1": 0.0, "fp_per_scan": 1.0}
    # two references, one found, one false positive: tp 1, fp 1, fn 1
    row, _ = _score(monkeypatch, [_case([(5, 5, 5), (15, 5, 5)], [(5, 5, 5), (15, 15, 15)])])
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 1)
    assert row["sensitivity"] == 0.5 and row["precision"] == 0.5 and row["f1"] == pytest.approx(0.5)
