"""CMBDetector's "Compare with prior" on both Slicer backends (real MRML and the fake): the job the
logic and the widget send, the worker's real answer (`worker.serve` on the exported volumes)
loaded into nodes, the review kept in the parameter node, and the reviewed report."""
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from compare_fixtures import write_pair
from test_detection_slicer_glue import MODULE, RecordingProcess, _widget, detector_module  # noqa: F401

from CMBLib.cli.worker import COMPARE_KEYS, serve
from CMBLib.io import read_volume

sys.path.insert(0, str(MODULE))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return d, write_pair(d)


def _volumes(slicer, d):
    nodes = []
    for name, file in (("prior", "base.nii.gz"), ("followup", "follow.nii.gz")):
        v = read_volume(d / file)
        nodes.append(slicer.util.addVolumeFromArray(v.array, v.ijk_to_ras, name=name))
    return nodes


def _answer(job, d):
    """The worker's events for `job` (findings given for a compare job: no detection here)."""
    if job.get("kind") == "compare":
        job = dict(job, baseline_findings=str(d / "base_cmb.json"), followup_findings=str(d / "follow_cmb.json"))
    events = []
    serve(io.StringIO(json.dumps(job) + "\n"), events.append)
    return [e for e in events if e["event"] != "ready"]


def _feed(logic, events):
    for event in events:
        logic.worker.process.on_line("out", json.dumps(event))


def test_compare_logic_job_nodes_review_and_report(slicer_backend, pair, tmp_path, monkeypatch):
    from CMBDetectorLib.comparison import ComparisonLogic
    from CMBDetectorLib.logic import DetectorLogic

    from CMBLib.compare.review import prior_to_followup, read_compare

    slicer = slicer_backend.slicer
    d, motion = pair
    monkeypatch.setattr(RecordingProcess, "lines", [])
    prior, followup = _volumes(slicer, d)
    detector = DetectorLogic(processFactory=RecordingProcess, python="py")
    logic = ComparisonLogic(detector)
    heard = []
    logic.onEvent = heard.append
    with pytest.raises(ValueError, match="prior volume is the current volume"):
        logic.start(followup, followup)
    run = logic.start(prior, followup, outputDir=str(tmp_path), tolerance_mm=4.0)
    job = json.loads(RecordingProcess.lines[-1])
    assert job["kind"] == "compare" and job["id"] == run and job["tolerance_mm"] == 4.0
    assert set(job) <= set(COMPARE_KEYS) and not job["overwrite"]
    assert job["out"] == str(tmp_path / "followup_vs_prior_compare")
    assert read_volume(job["followup"]).same_geometry(read_volume(d / "follow.nii.gz"))
    assert logic.running and detector.running
    with pytest.raises(RuntimeError, match="busy"):
        logic.start(prior, followup, outputDir=str(tmp_path))
    detector.onEvent = lambda event: pytest.fail(f"a comparison event reached the detection: {event}")
    _feed(detector, _answer(job, d))
    assert not logic.running and heard[-1]["event"] == "result" and heard[-1]["aria_h_category"] == "mild"
    assert any(e["event"] == "progress" for e in heard)

    review = logic.load(logic.compareJson, prior, followup)
    assert [r["key"] for r in review.rows][:3] == ["new 1", "new 2", "persisting 1"]
    doc = read_compare(logic.compareJson)
    # the prior lies under the transform baseline RAS -> follow-up RAS, both volumes in the views
    assert prior.GetTransformNodeID() == logic.transformNode.GetID()
    np.testing.assert_allclose(slicer.util.arrayFromTransformMatrix(logic.transformNode), prior_to_followup(doc),
                               atol=1e-6)
    points = logic.markupsNode
    assert points.GetNumberOfControlPoints() == 5 and points.GetNthControlPointLabel(0) == "new 1"
    assert points.GetNthControlPointDescription(0) == "new (unreviewed)"
    assert points.GetNthControlPointLocked(4)
    position = [0.0, 0.0, 0.0]
    points.GetNthControlPointPositionWorld(1, position)
    np.testing.assert_allclose(position, doc["new"][1]["centre_ras"], atol=1e-4)
    logic.jumpTo(review.rows[1])
    np.testing.assert_allclose(slicer_backend.slice_centre(), doc["new"][1]["centre_ras"], atol=1e-3)
    assert logic.setStatus("rejected") and review.current["key"] == "new 2"
    assert points.GetNthControlPointDescription(0) == "new (rejected)"
    assert logic.summary().startswith("ARIA-H mild: 1 new CMB(s) after review (automatic: 2, mild")
    again = logic.load(logic.compareJson, prior, followup, logic.reviewState(), nodes=False)
    assert again.status == {"new 1": "rejected", "new 2": "unreviewed"}

    ended = []
    logic.saveReport(ended.append)
    line = json.loads(RecordingProcess.lines[-1])
    assert line["kind"] == "compare_review" and line["decisions"] == again.status
    _feed(detector, _answer(line, d))
    assert ended[-1]["event"] == "result" and ended[-1]["review"]["new_count"] == 1
    assert Path(ended[-1]["outputs"]["report"]).is_file()


def test_compare_section_of_the_widget_keeps_the_review_in_the_parameter_node(
        detector_module, pair, tmp_path, monkeypatch):  # noqa: F811 (the imported fixture)
    from CMBDetectorLib import compare_panel

    module, backend = detector_module
    d, _ = pair
    opened = []
    monkeypatch.setattr(compare_panel, "openInBrowser", opened.append)
    widget = _widget(module)
    p = widget._parameterNode
    assert (p.priorVolume, p.compareTolerance, p.compareResult, p.compareReview) == (None, 5.0, "", "")
    prior, followup = _volumes(backend.slicer, d)
    p.inputVolume, p.priorVolume, p.outputFolder = followup, prior, str(tmp_path)
    widget.compare.onRun()
    job = json.loads(RecordingProcess.lines[-1])
    assert job["kind"] == "compare" and job["model"] == widget.ui.modelCombo.currentData
    assert widget.ui.compareCancelButton.enabled and not widget.ui.applyButton.enabled    # one worker for both
    _feed(widget.logic, _answer(job, d))
    assert widget.ui.applyButton.enabled and not widget.ui.compareCancelButton.enabled
    assert p.compareResult == str(tmp_path / "followup_vs_prior_compare" / "compare.json")
    assert widget.ui.compareSummaryLabel.text.startswith("ARIA-H mild: 2 new CMB(s)")
    widget.compare.onReview("accepted")
    widget.compare.onReview("rejected")
    assert json.loads(p.compareReview)["status"] == {"new 1": "accepted", "new 2": "rejected"}
    # leaving and coming back (or reopening the scene): the decisions come from the parameter node
    widget.compare.logic.forget()
    widget.compare.restore()
    assert widget.compare.logic.review.status == {"new 1": "accepted", "new 2": "rejected"}
    # running again into the same folder asks first; "no" sends nothing
    monkeypatch.setattr(backend.slicer.util, "confirmYesNoDisplay", lambda *a, **k: False, raising=False)
    sent = len(RecordingProcess.lines)
    widget.compare.onRun()
    assert len(RecordingProcess.lines) == sent
    widget.compare.onSave()
    line = json.loads(RecordingProcess.lines[-1])
    assert line["kind"] == "compare_review"
    _feed(widget.logic, _answer(line, d))
    assert opened and opened[-1].endswith("compare_reviewed_report.html")
    assert "Reviewed report written" in widget.ui.compareStatusLabel.text
    widget.compare.sceneClosed()
    assert widget.compare.logic.review is None and widget.ui.compareSummaryLabel.text == ""
