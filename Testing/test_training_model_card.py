"""training.model_card: tables from evaluate JSON and a metrics dict whose every group names its data."""
import json

import pytest

from training.model_card import main, tables


def _doc(tp, fp, fn, n=4, mean_s=None):
    row = {"threshold": 0.7, "min_diameter_mm": 3.0, "tp": tp, "fp": fp, "fn": fn, "sensitivity": tp / (tp + fn),
           "precision": tp / (tp + fp), "f1": 2 * tp / (2 * tp + fp + fn), "fp_per_scan": fp / n}
    doc = {"all": {"n_cases": n, "rows": [row, dict(row, threshold=0.5)]}}
    if mean_s is not None:
        doc["mean_detect_s"] = mean_s
    return doc


def test_every_group_of_figures_names_its_data():
    text, metrics = tables(_doc(8, 2, 4), _doc(6, 2, 2, mean_s=3.456), {"fp_whole_brain": 1, "fp_left_hemisphere": 0},
                           0.7, 3.0, data="synthetic CMBs in the QSM brain", measured="cmd; today")
    assert "| all test cases | 4 | 6 | 2 | 2 | 0.75 | 0.75 | 0.75 | 0.50 |" in text
    test_all = metrics["test"]["all"]
    assert (test_all["tp"], test_all["fp"], test_all["fn"], test_all["fp_per_scan"]) == (6, 2, 2, 0.5)
    assert metrics["validation"]["f1"] == pytest.approx(16 / 22)
    assert metrics["test"]["mean_detect_s"]["seconds"] == 3.46
    assert metrics["test"]["all"]["settings"] == "threshold 0.7, >= 3 mm"

    def walk(d, where="metrics"):                      # the rule of Testing/test_figures_manifest.py
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values()):
            assert "brain" in d.get("data", ""), where
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{where}.{k}")
    walk(metrics)
    assert metrics["test"]["all"]["data"] == "all test cases: synthetic CMBs in the QSM brain"
    assert metrics["qsm_as_is"]["fp_whole_brain"] == 1 and "QSM brain" in metrics["qsm_as_is"]["data"]


def test_metrics_out_needs_the_data_named(tmp_path, capsys):
    (tmp_path / "t.json").write_text(json.dumps(_doc(6, 2, 2)))
    with pytest.raises(SystemExit):
        main(["--test", str(tmp_path / "t.json"), "--threshold", "0.7", "--metrics-out", str(tmp_path / "m.json")])
    assert "needs --data" in capsys.readouterr().err
    main(["--test", str(tmp_path / "t.json"), "--threshold", "0.7", "--metrics-out", str(tmp_path / "m.json"),
          "--data", "the FreeSurfer brain"])
    assert json.loads((tmp_path / "m.json").read_text())["test"]["all"]["data"] == \
        "all test cases: the FreeSurfer brain"
