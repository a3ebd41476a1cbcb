"""The "compare" and "compare_review" jobs of `cmb worker` (CMBDetector's "Compare with prior"),
through `worker.serve` and a real worker process, on the hand-built pairs of compare_fixtures,
and the pure review helpers of `CMBLib.compare.review`."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from compare_fixtures import NEW_CMBS as NEW
from compare_fixtures import write_pair

from CMBLib.cli.worker import serve
from CMBLib.compare.review import CompareReview, compare_rows, prior_to_followup, reviewed_document, row_texts
from CMBLib.synthesis.followup_pair import apply

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return d, write_pair(d)


def _job(d, out, **extra):
    return dict({"kind": "compare", "id": "c1", "baseline": str(d / "base.nii.gz"),
                 "followup": str(d / "follow.nii.gz"), "out": str(out), "tolerance_mm": 5.0,
                 "baseline_findings": str(d / "base_cmb.json"),
                 "followup_findings": str(d / "follow_cmb.json")}, **extra)


def _serve(jobs):
    events = []
    assert serve(io.StringIO("".join(json.dumps(j) + "\n" for j in jobs)), events.append) == 0
    return events


def test_compare_job_result_outputs_counts_then_the_reviewed_report(pair, tmp_path):
    d, m = pair
    out = tmp_path / "cmp"
    events = _serve([_job(d, out)])
    result = events[-1]
    assert result["event"] == "result" and result["kind"] == "compare", result
    assert result["counts"] == {"new": 2, "persisting": 3, "no_longer_seen": 0, "outside_common_view": 0}
    assert result["new_count"] == 2 and result["aria_h_category"] == "mild"
    assert set(result["outputs"]) == {"json", "csv", "mask", "report"}
    assert all(Path(p).is_file() for p in result["outputs"].values())
    progress = [e["progress"] for e in events if e["event"] == "progress" and e["id"] == "c1"]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0
    assert result["model_loads"] == 0              # findings given: no model loaded

    doc = json.loads(Path(result["outputs"]["json"]).read_text())
    rows = compare_rows(doc)
    assert [r["cls"] for r in rows] == ["new", "new"] + ["persisting"] * 3        # new ones first
    np.testing.assert_allclose([r["centre_ras"] for r in rows[:2]], [e["centre_ras"] for e in doc["new"]])
    # a new CMB's place in the baseline is its centre carried by the registration (close to NEW)
    np.testing.assert_allclose(sorted(r["baseline_centre_ras"] for r in rows[:2]), sorted(NEW.tolist()), atol=1.0)
    np.testing.assert_allclose(apply(prior_to_followup(doc), NEW), apply(m, NEW), atol=1.0)
    assert row_texts(rows[0], "unreviewed")[:3] == ["1", "new", "unreviewed"]
    assert row_texts(rows[2], "x")[2] == ""                                    # persisting: no decision

    review_job = {"kind": "compare_review", "id": "r1", "compare": result["outputs"]["json"],
                  "decisions": {"new 1": "rejected", "new 2": "accepted"}}
    events = _serve([review_job, dict(review_job, id="r2")])
    done, again = [e for e in events if e["event"] in ("result", "error")]
    assert done["event"] == "result" and done["review"]["new_count"] == 1, done
    assert done["review"]["aria_h_category"] == "mild" and done["review"]["rejected"] == 1
    reviewed = json.loads(Path(done["outputs"]["json"]).read_text())
    assert [e["review_status"] for e in reviewed["new"]] == ["rejected", "accepted"]
    assert reviewed["aria_h_category"] == "mild" and reviewed["new_count"] == 2     # the automatic figures stay
    html = Path(done["outputs"]["report"]).read_text()
    assert "After the reader's review: 1 new CMB(s)" in html and "reader: rejected" in html
    assert html.count("alt='baseline") == 2
    csv_rows = Path(done["outputs"]["csv"]).read_text().splitlines()
    assert csv_rows[0].endswith(",review_status") and csv_rows[1].endswith(",rejected")
    assert again["event"] == "error" and "not overwritten" in again["message"]
    assert json.loads((out / "compare.json").read_text()) == doc                 # automatic files untouched


def test_compare_jobs_refuse_bad_keys_in_one_line(pair, tmp_path):
    d, _ = pair
    jobs = [_job(d, tmp_path / "a", tolerance=3),                       # misspelt key
            _job(d, tmp_path / "b", tolerance_mm=0),
            _job(d, tmp_path / "c", tolerance_mm="5"),
            _job(d, tmp_path / "d", followup=str(tmp_path / "missing.nii.gz")),
            {k: v for k, v in _job(d, tmp_path / "e").items() if k != "out"},
            _job(d, tmp_path / "f", affine="yes"),
            _job(d, tmp_path / "g", difference="yes"),
            {"kind": "compare_review", "id": "r", "compare": str(tmp_path / "none.json"), "decisions": {"new 1": "ok"}},
            {"kind": "bogus", "id": "k"}]
    events = _serve(jobs)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == len(jobs) and not [e for e in events if e["event"] == "result"]
    messages = [e["message"] for e in errors]
    assert all("\n" not in msg for msg in messages)
    assert "unknown key 'tolerance'" in messages[0]
    assert "must be above 0" in messages[1] and "must be a number" in messages[2]
    assert "follow-up" in messages[3] and "not found" in messages[3]
    assert "'out' is missing" in messages[4] and "affine must be true" in messages[5]
    assert "difference must be true" in messages[6]
    assert "decisions must map" in messages[7] and "unknown kind 'bogus'" in messages[8]
    assert not [p for p in tmp_path.iterdir()]                          # nothing written


def test_review_state_round_trip_and_reviewed_document():
    doc = {"format": "cmb-compare", "registration": {"followup_to_baseline_ras": np.eye(4).tolist()},
           "new": [{"centre_ras": [1, 2, 3], "diameter_mm": 3.0}, {"centre_ras": [4, 5, 6], "diameter_mm": 2.0,
                                                                    "flag": "near"}],
           "persisting": [{"centre_ras": [7, 8, 9], "baseline_centre_ras": [7, 8, 10]}],
           "no_longer_seen": [{"centre_ras": [0, 0, 0], "baseline_centre_ras": [0, 0, 1],
                               "baseline_diameter_mm": 4.0}], "outside_common_view": []}
    rows = compare_rows(doc)
    assert [r["key"] for r in rows] == ["new 1", "new 2", "persisting 1", "no_longer_seen 1"]
    assert rows[3]["diameter_mm"] == 4.0 and not rows[2]["baseline_carried"] and rows[0]["baseline_carried"]
    review = CompareReview(rows)
    assert review.mark("rejected") and review.current["key"] == "new 2"
    review.select(2)
    assert not review.mark("accepted")                 # persisting CMBs take no decision
    saved = review.to_json()
    again = CompareReview(rows)
    again.restore(saved)
    assert again.status == {"new 1": "rejected", "new 2": "unreviewed"} and again.index == 2
    again.restore("not json")
    assert again.summary() == {"unreviewed": 1, "accepted": 0, "rejected": 1, "new_count": 1,
                               "aria_h_category": "mild"}
    out = reviewed_document(doc, again.status, reviewer="dr x")
    assert out["review"]["new_count"] == 1 and out["review"]["reviewer"] == "dr x"
    assert [e["review_status"] for e in out["new"]] == ["rejected", "unreviewed"]
    assert "review_status" not in doc["new"][0]


@pytest.mark.skipif(os.name == "nt", reason="POSIX process check")
def test_a_compare_job_is_cancelled_by_killing_the_worker_and_nothing_is_written(pair, tmp_path):
    """Cancel in CMBDetector kills the worker's process tree (WorkerClient.cancel); a comparison
    killed while it registers leaves no compare.json."""
    sys.path.insert(0, str(REPO / "CMBDetector"))
    from CMBDetectorLib.process import kill_process_tree

    d, _ = pair
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "CMBLib", "worker", "--threads", "1"], cwd=str(tmp_path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        proc.stdin.write(json.dumps(_job(d, tmp_path / "cmp")) + "\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "progress" and first["id"] == "c1"
        kill_process_tree(proc.pid)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    assert not (tmp_path / "cmp" / "compare.json").exists()


def test_compare_job_detects_with_the_workers_model_and_keeps_it_warm(pair, tmp_path, dark_model):
    """A scan without findings is detected with the worker's cached model (loaded once for two
    jobs), as CMBDetector's comparison does (it detects on both; one scan each here, for time)."""
    d, _ = pair
    jobs = [{"kind": "compare", "id": str(n), "baseline": str(d / "base.nii.gz"),
             "followup": str(d / "follow.nii.gz"), "out": str(tmp_path / f"o{n}"), "model": dark_model,
             "device": "cpu", given: str(d / f"{name}_cmb.json")}
            for n, given, name in ((1, "followup_findings", "follow"), (2, "baseline_findings", "base"))]
    results = [e for e in _serve(jobs) if e["event"] in ("result", "error")]
    assert [e["event"] for e in results] == ["result", "result"], results
    first, second = results
    assert first["model_loads"] == 1 and not first["model_cached"] and second["model_cached"]
    assert second["model_loads"] == 1 and second["timings"]["load_model"] < 0.01
    assert json.loads(Path(first["outputs"]["json"]).read_text())["baseline"]["findings"] == "detection"
    assert json.loads(Path(second["outputs"]["json"]).read_text())["followup"]["findings"] == "detection"


def test_rows_say_which_new_cmbs_only_the_difference_image_found():
    doc = {"registration": {"followup_to_baseline_ras": np.eye(4).tolist()},
           "new": [{"centre_ras": [1.0, 2.0, 3.0], "how": "difference", "diameter_mm": 3.0},
                   {"centre_ras": [4.0, 5.0, 6.0], "flag": "near a region that turned dark"},
                   {"centre_ras": [7.0, 8.0, 9.0], "how": "difference", "flag": "near a region that turned dark"}]}
    rows = compare_rows(doc)
    assert [r["flag"] for r in rows] == ["difference image only", "near a region that turned dark",
                                         "difference image only; near a region that turned dark"]
    assert row_texts(rows[0], "unreviewed")[-1] == "difference image only"
