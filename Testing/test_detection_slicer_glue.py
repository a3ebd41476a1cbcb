"""CMBDetector's Slicer-free parts (the warm-worker client, process-tree kill, review state,
model card, CMake listing, Python 3.9, module size, no threads) and its logic on both test
backends (`slicer_backend`: Slicer's real MRML libraries and the fake), through Slicer's public API."""
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "CMBDetector"
sys.path.insert(0, str(MODULE))

from CMBDetectorLib.process import (  # noqa: E402
    LineBuffer,
    WorkerClient,
    detection_job,
    error_message,
    kill_process_tree,
    parse_line,
    python_slicer,
    worker_command,
)
from CMBDetectorLib.review import ReviewSession, model_card_html, segment_name, table_row  # noqa: E402


def _records(n):
    return [{"label": i, "diameter_mm": 2.5 + i, "size_class": "<5mm" if 2.5 + i < 5 else "5-10mm",
             "centre_ras": [float(i), 0.0, 0.0], "max_probability": 0.9 - 0.1 * i} for i in range(1, n + 1)]


def test_cmakelists_list_every_module_file():
    text = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in MODULE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt":
            rel = path.relative_to(MODULE).as_posix().replace("CMBDetector", "${MODULE_NAME}")
            assert rel in text, f"{rel} missing from CMBDetector/CMakeLists.txt"
    lib = (REPO / "CMBLib" / "CMakeLists.txt").read_text(encoding="utf-8")
    for name in ["detection/__init__.py", "detection/candidates.py", "detection/inference.py",
                 "detection/model_io.py", "detection/outputs.py", "detection/pipeline.py",
                 "cli/detect.py", "cli/models.py", "cli/demo.py"]:
        assert name in lib.split(), name


def test_module_files_parse_on_python_3_9():
    files = list(MODULE.rglob("*.py")) + list((REPO / "CMBLib" / "detection").glob("*.py"))
    for path in files:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def test_review_session_accept_reject_next_and_findings():
    s = ReviewSession(_records(4))
    assert s.current["label"] == 1
    s.accept()                       # 1 accepted -> move to 2
    assert s.current["label"] == 2
    s.reject()                       # 2 rejected -> 3
    s.next()                         # -> 4
    s.accept()                       # 4 accepted -> next unreviewed: 3
    assert s.current["label"] == 3
    assert s.counts() == {"unreviewed": 1, "accepted": 2, "rejected": 1}
    s.previous()
    assert s.current["label"] == 2
    findings = s.findings()
    assert [(f["label"], f["review_status"]) for f in findings] == [(1, "confirmed"), (3, "proposed"),
                                                                    (4, "confirmed")]
    assert all(f["source"] == "detector" for f in findings)
    assert findings[0]["centre_ras"] == [1.0, 0.0, 0.0] and findings[0]["size_class_suggested"] == "<5mm"
    empty = ReviewSession([])
    empty.accept()
    assert empty.current is None and empty.findings() == []


def test_segment_name():
    rec = {"label": 3, "diameter_mm": 4.24, "size_class": "<5mm", "location": "lobar"}
    assert segment_name(rec) == "CMB 3: 4.2 mm (<5mm), lobar"
    assert segment_name({"label": 1, "diameter_mm": 6, "size_class": "5-10mm"}) == "CMB 1: 6.0 mm (5-10mm)"


def test_job_lines_command_and_parsing():
    assert worker_command("py") == ["py", "-m", "CMBLib", "worker"]
    assert worker_command("py", threads=3)[-2:] == ["--threads", "3"]
    job = detection_job("7", "a.nrrd", "out", "a", model="m", threshold=0.35, sequence="SWI", location=True)
    assert job["threshold"] == 0.35 and job["location"] and not job["overwrite"]   # never overwrite by default
    assert job["second_stage"] is None                       # the model's default unless asked for
    assert json.loads(json.dumps(job)) == job
    line = json.dumps(job)
    assert '"second_stage": null' in line
    for choice in (True, False):
        on = detection_job("8", "a.nrrd", "out", "a", second_stage=choice)
        assert on["second_stage"] is choice and f'"second_stage": {str(choice).lower()}' in json.dumps(on)
        assert {k: v for k, v in on.items() if k not in ("id", "second_stage")} == {
            "image": "a.nrrd", "out": "out", "name": "a", "model": "default", "device": "auto", "threshold": None,
            "sequence": "T2S", "location": False, "overwrite": False, "location_filter": None, "first_stage": None}
    assert parse_line('{"progress": 0.5, "message": "x"}') == {"progress": 0.5, "message": "x", "event": "progress"}
    assert parse_line("plain text")["event"] == "log"
    assert error_message({"stderr": ["warn", "cmb worker: error: a.nii: truncated"]}) == "a.nii: truncated"
    buf = LineBuffer()
    assert buf.feed(b'{"a": 1}\n{"b"') == ['{"a": 1}'] and buf.feed(b": 2}\r\n") == ['{"b": 2}']
    assert buf.feed(b"tail") == [] and buf.flush() == ["tail"]


def test_python_slicer_never_falls_back_to_the_gui_binary(tmp_path):
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    (tmp_path / name).write_text("", encoding="utf-8")
    assert python_slicer([str(tmp_path / "missing"), str(tmp_path)], which=lambda n: None) == str(tmp_path / name)
    assert python_slicer([], which=lambda n: "/opt/Slicer/bin/PythonSlicer") == "/opt/Slicer/bin/PythonSlicer"
    with pytest.raises(RuntimeError, match="not found"):
        python_slicer([str(tmp_path / "missing")], which=lambda n: None)


def test_model_card_is_readable_text():
    meta = {"name": "m", "version": "1", "intended_input": "SWI", "spacing_mm": [1, 1, 2], "threshold": 0.7,
            "min_diameter_mm": 3, "max_diameter_mm": 10, "training_data": "x" * 400,
            "metrics": "{'rule': 'valdo', 'test': {'all': {'n_cases': 24, 'sensitivity': 0.6461, "
                       "'precision': 0.7433, 'fp_per_scan': 1.2083}}}"}
    card = model_card_html(meta)
    assert "sensitivity 0.65, precision 0.74, 1.21 false positives per scan" in card and "24 scans" in card
    assert "{" not in card and len(card) < 700
    assert "not measured" in model_card_html({"name": "m"})
    assert table_row({"label": 2, "diameter_mm": 3.14, "size_class": "<5mm", "vessel_like": True}, "accepted") == [
        "2", "accepted", "3.1", "<5mm", "0.00", "", "vessel-like"]


class SubprocessStandIn:
    """Stands in for QtProcess in pytest: same interface, lines delivered by pump()."""

    def __init__(self, on_line, on_finished):
        self.on_line, self.on_finished, self.proc = on_line, on_finished, None

    def start(self, command, env=None):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def write(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def kill(self):
        kill_process_tree(self.proc.pid)

    def pump(self):
        """Deliver one line, or the end of the process."""
        line = self.proc.stdout.readline()
        if line:
            self.on_line("out", line.rstrip("\n"))
            return True
        self.on_finished(self.proc.wait(timeout=30))
        return False


FAKE_WORKER = """
import json, sys, subprocess, time
for line in sys.stdin:
    job = json.loads(line)
    if job.get("die"):
        sys.exit(3)
    if job.get("sleep"):
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(json.dumps({"event": "progress", "id": job["id"], "progress": 0.1, "message": str(c.pid)}), flush=True)
        time.sleep(60)
    print(json.dumps({"event": "result", "id": job["id"], "status": "ok"}), flush=True)
"""


def _client(events):
    return WorkerClient([sys.executable, "-c", FAKE_WORKER], process_factory=SubprocessStandIn,
                        on_event=events.append)


def test_worker_client_keeps_one_process_and_restarts_it_when_it_died():
    events = []
    client = _client(events)
    first = client.submit({"image": "a"})
    assert client.busy and client.process.pump() and events[-1] == {"event": "result", "id": first, "status": "ok"}
    assert not client.busy
    pid = client.process.proc.pid
    second = client.submit({"image": "b"})
    client.process.pump()
    assert events[-1]["id"] == second and client.process.proc.pid == pid and client.starts == 1
    died = client.submit({"die": True})
    with pytest.raises(RuntimeError):
        client.submit({"image": "c"})                       # one job at a time
    assert not client.process.pump()
    assert events[-1] == {"event": "exit", "returncode": 3, "cancelled": False, "stderr": [], "job": died}
    client.submit({"image": "c"})                           # restarted on the next job
    client.process.pump()
    assert client.starts == 2 and events[-1]["event"] == "result"
    client.shutdown()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX process check")
def test_cancel_kills_the_whole_process_tree():
    events = []
    client = _client(events)
    client.submit({"sleep": True})
    client.process.pump()
    child = int(events[-1]["message"])
    assert _alive(child)
    client.cancel()
    assert not client.process.pump()
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child), "the grandchild survived Cancel"
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"] and not client.busy


def test_module_folder_rules():
    """No Python threads; a .ui loaded with loadUI; module file glue-sized; Lib reloaded."""
    for path in MODULE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import threading" not in text and "from threading" not in text, path
        assert "sys.executable" not in text or path.name == "process.py" and "Never sys.executable" in text, path
    main = (MODULE / "CMBDetector.py").read_text(encoding="utf-8")
    assert len(main.splitlines()) <= 400
    # loadUI, onReload and the scene-close events: test_the_widget_* below run them


def test_every_widget_the_code_names_is_in_the_ui():
    import re

    ui = (MODULE / "Resources" / "UI" / "CMBDetector.ui").read_text(encoding="utf-8")
    code = (MODULE / "CMBDetector.py").read_text(encoding="utf-8")
    glue = code + "".join((MODULE / "CMBDetectorLib" / name).read_text(encoding="utf-8")
                          for name in ("panels.py", "compare_panel.py"))
    names = set(re.findall(r"\bui\.([A-Za-z_]\w*)", glue))
    assert {"applyButton", "table", "modelCard", "outputPath", "trainButton", "trainCurves", "saveReportButton",
            "exportSegButton", "exportAcceptedButton", "reportStatusLabel", "compareTable",
            "compareSaveButton"} <= names
    for name in sorted(names):
        assert f'name="{name}"' in ui, f"{name} is not in CMBDetector.ui"
    params = set(re.findall(r'<property name="SlicerParameterName" stdset="0">\s*<string>(\w+)</string>', ui))
    fields = set(re.findall(r"^    (\w+): ", code, re.M))          # fields of CMBDetectorParameterNode
    assert params and params <= fields, params - fields


# --- candidates set aside by location: text and points (fake Slicer) ---------------------------------
def test_aside_description_and_points_say_why_with_the_numbers():
    from CMBDetectorLib.review import aside_description, aside_points

    rec = {"label": 0, "centre_ras": [1, -20.5, 8.25], "diameter_mm": 3.14, "max_probability": 0.8249,
           "suppressed_by": "deep_midline_veins"}
    assert aside_description(rec) == "set aside: deep_midline_veins zone, 3.1 mm, p 0.82; not a finding"
    staged = dict(rec, diameter_mm=6.05, max_probability=0.5, stage2_probability=0.4051)
    assert aside_description(staged) == ("set aside: deep_midline_veins zone, 6.0 mm, p 0.50, stage-2 p 0.41; "
                                         "not a finding")
    assert aside_description({"centre_ras": [0, 0, 0]}) == "set aside: location zone; not a finding"
    points = aside_points({"cmbs": [], "suppressed_candidates": [rec, staged]})
    assert points == [((1.0, -20.5, 8.25), "aside 1", aside_description(rec)),
                      ((1.0, -20.5, 8.25), "aside 2", aside_description(staged))]
    assert aside_points({"cmbs": []}) == [] and aside_points({"suppressed_candidates": None}) == []


@pytest.fixture
def fake_slicer(slicer_backend):
    """`slicer` of the backend (real MRML or the fake); CMBDetectorLib is re-imported with it."""
    return slicer_backend.slicer


# Three dark foci on a 0.9 x 0.9 x 3 mm grid with origin (-18, -18, -30), identity directions:
# (k, j, i) blocks -> centre RAS = origin + spacing * (i, j, k) of the block's middle.
BLOBS = [((10, slice(10, 13), slice(10, 13)), 0.9, (-8.1, -8.1, 0.0)),
         ((slice(5, 8), slice(25, 28), slice(25, 29)), 0.7, (5.85, 5.4, -12.0)),
         ((15, slice(30, 33), slice(5, 8)), 0.8, (-12.6, 9.9, 15.0))]


def _detections(folder, aside):
    """NAME_cmb.json / mask written by CMBLib for BLOBS; those whose index is in `aside` are given
    an MNI position inside deep_midline_veins and set aside by the pipeline's own function."""
    import numpy as np

    from CMBLib.detection.candidates import find_candidates
    from CMBLib.detection.outputs import write_outputs
    from CMBLib.detection.pipeline import DetectionResult, suppress_in_zones
    from CMBLib.geometry import Volume

    prob = np.zeros((20, 40, 40), np.float32)
    for box, p, _ in BLOBS:
        prob[box] = p
    geom = Volume(prob, (0.9, 0.9, 3.0), (-18.0, -18.0, -30.0))
    labels, records, dropped = find_candidates(geom, 0.5)
    assert len(records) == 3
    order = [min(range(3), key=lambda b: np.linalg.norm(np.subtract(r["centre_ras"], BLOBS[b][2])))
             for r in records]                       # blob index of each record
    found = [{"mni_x": 0.0, "mni_y": -20.0, "mni_z": 10.0} if b in aside else
             {"mni_x": 30.0, "mni_y": 0.0, "mni_z": 0.0} for b in order]
    labels, kept, suppressed = suppress_in_zones(labels, records, found, ("deep_midline_veins",))
    settings = {"model": "glue-test", "model_version": "0", "threshold": 0.5, "device": "cpu"}
    result = DetectionResult(geom.with_array(labels), geom, kept, settings, {"total": 0.0}, [], dropped,
                             suppressed=suppressed)
    write_outputs(result, folder, "study")
    return str(Path(folder) / "study_cmb.json"), kept, suppressed


def test_load_results_shows_the_set_aside_candidates_as_locked_points(fake_slicer, tmp_path):
    import numpy as np
    from CMBDetectorLib.logic import ASIDE_COLOR, DetectorLogic

    jsonPath, kept, suppressed = _detections(tmp_path, aside={0, 2})
    assert len(kept) == 1 and len(suppressed) == 2
    geometry = np.diag([0.9, 0.9, 3.0, 1.0])
    geometry[:3, 3] = (-18.0, -18.0, -30.0)                    # the grid the detections were made on
    volume = fake_slicer.util.addVolumeFromArray(np.zeros((20, 40, 40), np.float32), geometry, name="T2S")
    logic = DetectorLogic()
    seg, points, table = logic.loadResults(jsonPath, volume)
    assert points.GetNumberOfControlPoints() == 1 and table.GetNumberOfRows() == 1   # findings only
    assert list(seg.GetSegmentation().GetSegmentIDs()) == ["CMB_1"]
    voxels = fake_slicer.util.arrayFromSegmentBinaryLabelmap(seg, "CMB_1", volume)
    assert int(voxels.sum()) == 36 and voxels[5:8, 25:28, 25:29].all()   # the kept blob, BLOBS[1]
    aside = logic.asideNode
    assert aside is not None and aside.GetName() == "T2S set aside (likely veins)"
    assert aside.GetNumberOfControlPoints() == 2
    want = {BLOBS[0][2], BLOBS[2][2]}
    got = []
    for n in range(2):
        position = [0.0, 0.0, 0.0]
        aside.GetNthControlPointPositionWorld(n, position)
        np.testing.assert_allclose(position, suppressed[n]["centre_ras"], atol=1e-6)   # JSON order
        got.append(tuple(position))
        assert aside.GetNthControlPointLocked(n)
        assert aside.GetNthControlPointLabel(n) == f"aside {n + 1}"
        text = aside.GetNthControlPointDescription(n)
        assert text.startswith("set aside: deep_midline_veins zone, ") and text.endswith("; not a finding")
        assert f"p {suppressed[n]['max_probability']:.2f}" in text
    np.testing.assert_allclose(sorted(got), sorted(want), atol=0.01)       # hand-computed centres
    np.testing.assert_allclose(aside.GetDisplayNode().GetSelectedColor(), ASIDE_COLOR)
    np.testing.assert_allclose(aside.GetDisplayNode().GetColor(), ASIDE_COLOR)

    # the next result without set-aside candidates: no new node, and the logic forgets the old one
    again, _, none = _detections(tmp_path / "second", aside=set())
    assert none == []
    before = [n.GetName() for n in fake_slicer.util.getNodesByClass("vtkMRMLMarkupsFiducialNode")]
    logic.loadResults(again, volume)
    after = [n.GetName() for n in fake_slicer.util.getNodesByClass("vtkMRMLMarkupsFiducialNode")]
    assert logic.asideNode is None
    assert after == before + ["T2S CMB centres"]
    assert logic.markupsNode.GetNumberOfControlPoints() == 3


def test_the_detector_self_test_load_step_leaves_these_nodes(fake_slicer, tmp_path, monkeypatch):
    """The Slicer self-test's results -> nodes -> review step (set-aside points included)."""
    from fake_slicer import run_detector_selftest

    run_detector_selftest(monkeypatch, "test_loadResultsAndReview", tmp_path)
    assert [n.GetName() for n in fake_slicer.util.getNodesByClass("vtkMRMLMarkupsFiducialNode")] == [
        "selftest CMB centres", "selftest CMB centres", "selftest set aside (likely veins)"]


# --- the opt-in candidate classifier: checkbox -> job line (fake Slicer) ---------------------------
class RecordingProcess:
    """A process object for WorkerClient that keeps the lines written to it."""
    lines = []

    def __init__(self, on_line, on_finished):
        self.on_line, self.running = on_line, False

    def start(self, command, env=None):
        self.running = True

    def write(self, text):
        RecordingProcess.lines.append(text)

    def kill(self):
        self.running = False


def test_starting_a_detection_sends_the_candidate_classifier_choice(fake_slicer, tmp_path, monkeypatch):
    import numpy as np
    from CMBDetectorLib.logic import DetectorLogic

    from CMBLib.cli.worker import _stage2
    from CMBLib.io import read_volume

    monkeypatch.setattr(RecordingProcess, "lines", [])
    exported, export = [], fake_slicer.util.exportNode

    def export_node(node, path, *args, **kwargs):
        exported.append(path)
        return export(node, path, *args, **kwargs)

    monkeypatch.setattr(fake_slicer.util, "exportNode", export_node)
    volume = fake_slicer.util.addVolumeFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4), name="T2S")
    logic = DetectorLogic(processFactory=RecordingProcess, python="py")
    sent = []
    for kwargs in ({"second_stage": True}, {}, {"second_stage": None}, {"second_stage": False}):
        run = logic.start(volume, outputDir=str(tmp_path / "out"), **kwargs)
        sent.append(json.loads(RecordingProcess.lines[-1]))
        assert logic.running and sent[-1]["id"] == run
        logic.worker.process.on_line("out", json.dumps({"event": "result", "id": run, "status": "ok"}))
        assert not logic.running                        # the job ended: the next one may start
    assert [job["second_stage"] for job in sent] == [True, None, None, False]
    assert '"second_stage": true' in RecordingProcess.lines[0] and '"second_stage": null' in RecordingProcess.lines[1]
    assert [_stage2(job["second_stage"]) for job in sent] == [True, None, None, False]   # the worker accepts them
    assert [job["image"] for job in sent] == exported and len(exported) == 4     # each job sends its own export
    assert all(job["name"] == "T2S" and job["threshold"] is None for job in sent)
    np.testing.assert_array_equal(read_volume(exported[0]).array, np.arange(24).reshape(2, 3, 4))
    assert logic.worker.starts == 1                     # one warm worker for all four jobs


def test_the_candidate_classifier_checkbox_is_off_and_sends_true_or_null():
    """The .ui checkbox is bound to a parameter-node field that defaults to off; the widget sends
    True when it is checked and None (the model's default: off since cmb-default 0.3.2) when not."""
    import re

    ui = (MODULE / "Resources" / "UI" / "CMBDetector.ui").read_text(encoding="utf-8")
    box = re.search(r'<widget class="QCheckBox" name="candidateClassifierCheck">(.*?)</widget>', ui, re.S).group(1)
    assert re.search(r'name="SlicerParameterName" stdset="0">\s*<string>candidateClassifier</string>', box)
    assert "trained on one brain" in box and "0.3" in box and "1 mm" in box and "Off by default" in box
    # the parameter-node default, the job the widget sends and the greyed-out box:
    # test_the_widget_sends_the_two_checkboxes_as_the_worker_reads_them (both backends)


def test_the_classifier_box_follows_the_chosen_model():
    """Greyed out (and never sent) for a model without a second stage; an unknown folder
    ("Other model folder...") keeps it, and the worker says if the folder has none."""
    from CMBDetectorLib.jobs import classifier_available, list_models, second_stage_request

    bundled = next(m for m in list_models() if m["name"] == "cmb-default")
    plain = {k: v for k, v in bundled.items() if k != "second_stage"}
    assert classifier_available(bundled) and not classifier_available(plain) and classifier_available(None)
    assert [second_stage_request(c, m) for c in (True, False) for m in (bundled, plain, None)] == \
        [True, None, True, None, None, None]


def test_the_location_filter_box_is_on_and_sends_null_or_false(fake_slicer, tmp_path, monkeypatch):
    """The .ui checkbox 'Set aside candidates in CSF / deep veins' is bound to the parameter node's
    locationFilter (on by default); the widget sends the job key "location_filter": null (the
    model's filter) when on and false when off, and the worker accepts both."""
    import re

    import numpy as np
    from CMBDetectorLib.logic import DetectorLogic

    from CMBLib.cli.worker import _location_filter

    ui = (MODULE / "Resources" / "UI" / "CMBDetector.ui").read_text(encoding="utf-8")
    box = re.search(r'<widget class="QCheckBox" name="locationFilterCheck">(.*?)</widget>', ui, re.S).group(1)
    assert re.search(r'name="SlicerParameterName" stdset="0">\s*<string>locationFilter</string>', box)
    assert re.search(r'name="checked">\s*<bool>true</bool>', box) and "Never parenchyma" in box
    # the widget's own mapping (on -> null, off -> false): test_the_widget_sends_the_two_checkboxes_...
    monkeypatch.setattr(RecordingProcess, "lines", [])
    volume = fake_slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="T2S")
    logic = DetectorLogic(processFactory=RecordingProcess, python="py")
    sent = []
    for kwargs in ({}, {"location_filter": False}, {"location_filter": None}):
        run = logic.start(volume, outputDir=str(tmp_path / "out"), **kwargs)
        sent.append(json.loads(RecordingProcess.lines[-1]))
        logic.worker.process.on_line("out", json.dumps({"event": "result", "id": run, "status": "ok"}))
    assert [job["location_filter"] for job in sent] == [None, False, None]
    assert '"location_filter": false' in RecordingProcess.lines[1]
    assert [_location_filter(job["location_filter"]) for job in sent] == [None, False, None]


# --- the module widget itself (CMBDetector.py), on both backends -----------------------------------
# Qt and Slicer's parameterNodeWrapper are not in slicer-core: small stand-ins below give the widget
# what it calls (a combo box, check boxes, a table) and a parameter node whose unset fields read the
# class defaults, as Slicer's wrapper does.  Everything else is the module's own code.
class Combo:
    def __init__(self):
        self.items, self.currentIndex = [], -1

    def blockSignals(self, block):
        return False

    def clear(self):
        self.items, self.currentIndex = [], -1

    def addItem(self, text, data):
        self.items.append((text, data))

    def setCurrentIndex(self, i):
        self.currentIndex = i

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if 0 <= self.currentIndex < len(self.items) else None

    def connect(self, signal, fn):
        pass


class AnyWidget:
    """Any Qt widget: attributes can be set; unknown methods accept anything and return a widget."""

    def __init__(self):
        self.enabled, self.checked, self.text = True, False, ""

    def __getattr__(self, name):
        return lambda *a, **k: AnyWidget()


class ModuleUI:
    def __init__(self):
        self.modelCombo = Combo()

    def __getattr__(self, name):
        widget = AnyWidget()
        setattr(self, name, widget)
        return widget


def _parameter_node_wrapper(cls):
    fields = dict(cls.__annotations__)
    defaults = {name: getattr(cls, name, None) for name in fields}

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "values", dict(defaults))

        def __getattr__(self, name):
            values = object.__getattribute__(self, "values")
            if name not in values:
                raise AttributeError(name)
            return values[name]

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            self.values[name] = value

        def connectGui(self, ui):
            return object()

        def disconnectGui(self, tag):
            pass

    return Wrapped


@pytest.fixture
def detector_module(slicer_backend, monkeypatch, tmp_path):
    """(CMBDetector module, backend, jobs sent): CMBDetector.py imported against the backend with
    the stand-ins above; the logic's worker records job lines instead of starting a process."""
    import importlib.util
    import types

    slicer = slicer_backend.slicer
    qt = types.ModuleType("qt")
    qt.QTableWidgetItem = lambda text: text
    qt.QColor = types.SimpleNamespace(fromRgbF=lambda *c: c)
    monkeypatch.setitem(sys.modules, "qt", qt)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.Choice = lambda values: tuple(values)
    pnw.parameterNodeWrapper = _parameter_node_wrapper
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)
    for name in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"):
        if not hasattr(slicer, name):
            monkeypatch.setattr(slicer, name, type(name, (), {}), raising=False)
    if slicer_backend.real is None:          # the fake scene has no VTK observers: record them
        class Mixin:
            def __init__(self):
                self.observers = []

            def addObserver(self, obj, event, method):
                self.observers.append((obj, event, method))

            def removeObservers(self):
                self.observers = []

        for util in {id(m): m for m in (slicer.util, sys.modules.get("slicer.util")) if m is not None}.values():
            monkeypatch.setattr(util, "VTKObservationMixin", Mixin, raising=False)
    slm = sys.modules["slicer.ScriptedLoadableModule"]
    parameter_nodes = []

    class Logic:
        def __init__(self):
            pass

        def getParameterNode(self):                    # one scripted module node, as Slicer keeps
            if not parameter_nodes:
                real = hasattr(slicer, "vtkMRMLScriptedModuleNode") and slicer_backend.real is not None
                node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode") if real else object()
                parameter_nodes.append(node)
            return parameter_nodes[0]

    class Widget:
        def __init__(self, parent=None):
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.reloaded = False

        def setup(self):
            self.layout = types.SimpleNamespace(widgets=[], addWidget=lambda w: self.layout.widgets.append(w))

        def resourcePath(self, name):
            return str(MODULE / "Resources" / name)

        def onReload(self):
            self.reloaded = True

        def cleanup(self):
            pass

    monkeypatch.setattr(slm, "ScriptedLoadableModule", type("ScriptedLoadableModule", (), {}), raising=False)
    monkeypatch.setattr(slm, "ScriptedLoadableModuleLogic", Logic, raising=False)
    monkeypatch.setattr(slm, "ScriptedLoadableModuleWidget", Widget, raising=False)
    loaded = []

    def load_ui(path):
        loaded.append(path)
        assert Path(path).is_file(), path
        return types.SimpleNamespace(setMRMLScene=lambda scene: None)

    monkeypatch.setattr(slicer.util, "loadUI", load_ui, raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ModuleUI(), raising=False)
    spec = importlib.util.spec_from_file_location("CMBDetector_under_test", MODULE / "CMBDetector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(RecordingProcess, "lines", [])
    real_init = module.CMBDetectorLogic.__init__
    monkeypatch.setattr(module.CMBDetectorLogic, "__init__",
                        lambda self, processFactory=None, python=None: real_init(self, RecordingProcess, "py"))
    monkeypatch.setattr(module.CMBDetectorLogic, "ensureDependencies", staticmethod(lambda ask: True))
    module.loaded_ui, module.widgets = loaded, []
    yield module, slicer_backend
    for widget in module.widgets:
        widget.removeObservers()                        # the scene outlives the test's widgets


def _widget(module):
    widget = module.CMBDetectorWidget()
    widget.setup()
    module.widgets.append(widget)
    return widget


def test_the_widget_loads_its_ui_file_and_starts_from_the_parameter_node_defaults(detector_module):
    module, backend = detector_module
    widget = _widget(module)
    assert module.loaded_ui == [str(MODULE / "Resources" / "UI" / "CMBDetector.ui")]
    p = widget._parameterNode
    assert p is not None and p.candidateClassifier is False and p.locationFilter is True and p.nativeStage is False
    assert (p.sequence, p.device, p.threshold, p.location) == ("T2S", "auto", 0.0, False)
    names = [text for text, _ in widget.ui.modelCombo.items]
    assert names[-1] == "Other model folder..." and any("cmb-default" in n for n in names)


def test_the_widget_sends_the_two_checkboxes_as_the_worker_reads_them(detector_module, tmp_path):
    """Classifier box unchecked -> "second_stage": null (the model's default), checked -> true (false
    is never sent); greyed out and null for a model without a second stage.  Location box on ->
    "location_filter": null (the model's filter), off -> false."""
    import numpy as np

    from CMBLib.cli.worker import _location_filter, _stage2

    module, backend = detector_module
    widget = _widget(module)
    bundled = next(m for m in widget.models if m["name"] == "cmb-default")
    plain = dict({k: v for k, v in bundled.items() if k != "second_stage"}, path=str(tmp_path / "plain"))
    widget.models = [bundled, plain]
    widget.ui.modelCombo.items = [("bundled", bundled["path"]), ("plain", plain["path"])]
    p = widget._parameterNode
    p.inputVolume = backend.slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="T2S")
    p.outputFolder = str(tmp_path / "out")
    widget.logic.onEvent = lambda event: None          # the jobs end unseen (no results to load)
    sent, enabled = [], []
    for index, classifier, location in [(0, False, True), (0, True, True), (0, True, False), (1, True, True),
                                        (1, False, False)]:
        widget.ui.modelCombo.setCurrentIndex(index)
        widget.updateModelCard()
        enabled.append(widget.ui.candidateClassifierCheck.enabled)
        p.candidateClassifier, p.locationFilter = classifier, location
        widget.onApply()
        job = json.loads(RecordingProcess.lines[-1])
        sent.append((job["second_stage"], job["location_filter"]))
        assert job["model"] == widget.models[index]["path"] and job["name"] == "T2S"
        widget.logic.worker.process.on_line("out", json.dumps({"event": "result", "id": job["id"],
                                                                "status": "ok"}))
        assert not widget.logic.running
    assert enabled == [True, True, True, False, False]
    assert sent == [(None, None), (True, None), (True, False), (None, None), (None, False)]
    assert [(_stage2(a), _location_filter(b)) for a, b in sent] == sent     # the worker accepts each


def test_the_native_stage_box_sends_unet_native_or_null(detector_module, tmp_path):
    """Native-stage box checked -> "first_stage": "unet+native", unchecked -> null (the model's
    default); greyed out and null for a model without a patch network (model.json "native_stage")."""
    import re

    import numpy as np

    from CMBLib.cli.worker import _first_stage

    ui = (MODULE / "Resources" / "UI" / "CMBDetector.ui").read_text(encoding="utf-8")
    box = re.search(r'<widget class="QCheckBox" name="nativeStageCheck">(.*?)</widget>', ui, re.S).group(1)
    assert re.search(r'name="SlicerParameterName" stdset="0">\s*<string>nativeStage</string>', box)
    module, backend = detector_module
    widget = _widget(module)
    bundled = next(m for m in widget.models if m["name"] == "cmb-default")
    native = dict(bundled, native_stage={"file": "patch_net.npz"}, path=str(tmp_path / "native"))
    plain = dict({k: v for k, v in bundled.items() if k != "native_stage"}, path=str(tmp_path / "plain"))
    widget.models = [native, plain]
    widget.ui.modelCombo.items = [("native", native["path"]), ("plain", plain["path"])]
    p = widget._parameterNode
    p.inputVolume = backend.slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="T2S")
    p.outputFolder = str(tmp_path / "out")
    widget.logic.onEvent = lambda event: None
    sent, enabled = [], []
    for index, checked in [(0, False), (0, True), (1, True)]:
        widget.ui.modelCombo.setCurrentIndex(index)
        widget.updateModelCard()
        enabled.append(widget.ui.nativeStageCheck.enabled)
        p.nativeStage = checked
        widget.onApply()
        job = json.loads(RecordingProcess.lines[-1])
        sent.append(job["first_stage"])
        widget.logic.worker.process.on_line("out", json.dumps({"event": "result", "id": job["id"], "status": "ok"}))
    assert enabled == [True, True, False]
    assert sent == [None, "unet+native", None]
    assert [_first_stage(v) for v in sent] == sent                  # the worker accepts each


def test_the_widget_lets_go_on_scene_close_and_reloads_its_packages(detector_module, monkeypatch):
    module, backend = detector_module
    widget = _widget(module)
    events = {event for obj, event, method in getattr(widget, "observers", [])} if backend.real is None else None
    calls = []
    monkeypatch.setattr(widget.logic, "cancel", lambda: calls.append("cancel"))
    monkeypatch.setattr(widget.logic, "shutdown", lambda: calls.append("shutdown"))
    if backend.real is None:       # the fake scene sends no events: call what the widget registered
        scene = backend.slicer.mrmlScene
        assert events == {scene.StartCloseEvent, scene.EndCloseEvent}
        for _obj, event, method in widget.observers:
            if event == scene.StartCloseEvent:
                method(scene, event)
    else:
        widget.parent.isEntered = False
        backend.slicer.mrmlScene.Clear(0)              # Slicer's File > Close scene: the real events
    assert calls == ["cancel", "shutdown"] and widget._parameterNode is None
    assert widget.logic.session is None and widget.logic.asideNode is None
    if backend.real is not None:
        widget.parent.isEntered = True
        backend.slicer.mrmlScene.Clear(0)
        assert widget._parameterNode is not None    # a new scene: the module takes its parameter node again
    modules = dict(sys.modules)
    modules["CMBDetectorLib.stale"] = modules["CMBLib.stale"] = object()
    monkeypatch.setattr(sys, "modules", modules)        # onReload edits this copy, not the real table
    calls.clear()
    widget.onReload()
    assert calls == ["shutdown"] and widget.reloaded
    assert not [n for n in modules if n.split(".")[0] in ("CMBDetectorLib", "CMBLib")]
    assert "numpy" in modules
