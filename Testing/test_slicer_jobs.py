"""The modules' background jobs without Slicer: fine-tuning and report command lines, progress
parsing, curves, the model list after training, Cancel, Save report / Export DICOM SEG glue,
the one-step export of accepted candidates (CMBDetectorLib.jobs / tasks / panels / logic)."""
import json
import os
import sys
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CMBDetector"))

from CMBDetectorLib import jobs  # noqa: E402
from test_annotation_slicer_glue import glue  # noqa: E402, F401 - the annotator on the fake Slicer (fixture)
from test_detection_slicer_glue import SubprocessStandIn, _alive  # noqa: E402

PY = sys.executable

# What `python -m CMBLib.detection.finetune --progress-json` prints (docs/finetuning.md, issue 15).
FAKE_FINETUNE = r"""
import json, os, sys
out = sys.argv[sys.argv.index("--out") + 1]
def emit(**e):
    print(json.dumps(e), flush=True)
emit(event="progress", progress=0.0, message="reading the datasets")
emit(event="start", train=["01", "02", "03"], val=["04"], n_cmbs_train=9, n_cmbs_val=2, parent="cmb-detector",
     device="cpu", budget_s=60, resumed=False)
emit(event="warning", message="only 1 validation study: the figures are anecdotal")
emit(event="val", model="parent", step=0, threshold=0.5, f1=0.4, fp_per_scan=3.0)
for step, loss in ((10, 1.0), (20, 0.5), (30, 0.75)):
    emit(event="train", step=step, loss=loss, lr=1e-4, elapsed_s=step)
emit(event="val", model="finetuned", step=30, threshold=0.6, f1=0.5, fp_per_scan=1.0)
emit(event="progress", progress=0.96, message="training step 30")
os.makedirs(out)
json.dump({"name": os.path.basename(out), "version": "1"}, open(os.path.join(out, "model.json"), "w"))
emit(event="done", model_dir=out, accepted=True, threshold=0.6, steps=30, elapsed_s=55)
"""
FAKE_REFUSAL = ("import json, sys; print(json.dumps({'event': 'error', 'message': 'only 1 confirmed CMB'}));"
                "print('finetune: error: only 1 confirmed CMB; annotate more', file=sys.stderr); sys.exit(2)")
FAKE_SLOW = ("import subprocess, sys, time;"
             "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
             "print('{\"event\": \"progress\", \"progress\": 0.1, \"message\": \"%d\"}' % c.pid, flush=True);"
             "time.sleep(60)")


def replacing(script, seen):
    """A process factory running `script` with the arguments of the command it was given."""
    import subprocess

    class Stand(SubprocessStandIn):
        def start(self, command, env=None):
            seen.append(list(command))
            self.proc = subprocess.Popen([PY, "-c", script] + list(command[1:]), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def pump(self):
            line = self.proc.stdout.readline()
            if line:
                self.on_line("out", line.rstrip("\n"))
                return True
            for err in self.proc.stderr.read().splitlines():     # stderr arrives too, as QtProcess delivers it
                self.on_line("err", err)
            self.on_finished(self.proc.wait(timeout=30))
            return False
    return Stand


def pump(job):
    while job.process.pump():
        pass


# --- command lines ----------------------------------------------------------------------------
def test_finetune_command_line():
    cmd = jobs.finetune_command("PythonSlicer", ["/d/a", " ", "/d/b"], "/m/new", 8, threads=3)
    assert cmd == ["PythonSlicer", "-m", "CMBLib.detection.finetune", "/d/a", "/d/b", "--out", "/m/new",
                   "--minutes", "8", "--init", "bundled", "--progress-json", "--threads", "3"]
    cmd = jobs.finetune_command("py", ["/d"], "/m/x", 2.5, init="/m/prev", models_dir="/m")
    assert cmd[-6:] == ["2.5", "--init", "/m/prev", "--progress-json", "--models-dir", "/m"]
    with pytest.raises(ValueError, match="dataset"):
        jobs.finetune_command("py", ["", "  "], "/m/x", 8)
    with pytest.raises(ValueError, match="0 minutes"):
        jobs.finetune_command("py", ["/d"], "/m/x", 0)


def test_report_command_lines():
    assert jobs.report_command("py", detections="/o/T2S_cmb.json", image="/o/T2S.nrrd", out="/o") == [
        "py", "-m", "CMBLib", "report", "--detections", "/o/T2S_cmb.json", "--image", "/o/T2S.nrrd", "--out", "/o"]
    assert jobs.report_command("py", dataset="/ds", subject="07", image="/dcm", dicom_seg=True, report=False,
                               overwrite=True) == [
        "py", "-m", "CMBLib", "report", "--dataset", "/ds", "--subject", "07", "--image", "/dcm", "--dicom-seg",
        "--no-report", "--overwrite"]
    for bad in ({}, {"detections": "a", "dataset": "b"}, {"dataset": "/ds"}):
        with pytest.raises(ValueError):
            jobs.report_command("py", **bad)


def test_report_outputs_and_folders():
    lines = ["T2S: report -> /o/T2S_cmb_report.html", "T2S: seg -> /o/T2S_cmb_seg.dcm", "T2S: no CMB, so no SEG"]
    assert jobs.report_outputs(lines) == {"report": "/o/T2S_cmb_report.html", "seg": "/o/T2S_cmb_seg.dcm"}
    assert jobs.split_folders(" /a ; /b;;/a ") == ["/a", "/b"]


def test_new_model_folder_never_reuses_one(tmp_path):
    now = time.mktime((2026, 11, 29, 18, 5, 0, 0, 0, -1))
    first = jobs.new_model_folder(tmp_path, now)
    assert first == tmp_path / "cmb-finetuned-20261129-1805"
    first.mkdir()
    assert jobs.new_model_folder(tmp_path, now).name == "cmb-finetuned-20261129-1805-2"


# --- progress -----------------------------------------------------------------------------------
def test_sparkline_scales_to_the_range():
    assert jobs.sparkline([0, 1, 2, 3]) == "▁▃▆█"      # (v - 0) / 3 * 8 -> 0, 2, 5, 7 (capped)
    assert jobs.sparkline([5, 5]) == "▁▁" and jobs.sparkline([]) == ""
    assert len(jobs.sparkline(range(100), width=40)) == 40


def test_training_run_events_curves_and_outcome(tmp_path):
    events, seen = [], []
    out = tmp_path / "models" / "new"
    job = jobs.CommandJob(jobs.finetune_command("PythonSlicer", [str(tmp_path)], str(out), 1), events.append,
                          process_factory=replacing(FAKE_FINETUNE, seen)).start()
    monitor = jobs.TrainingMonitor()
    while job.process.pump():
        monitor.feed(events[-1])
    monitor.feed(events[-1])
    assert seen[0][:3] == ["PythonSlicer", "-m", "CMBLib.detection.finetune"]
    assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0 and not job.running
    assert monitor.loss == [(10, 1.0), (20, 0.5), (30, 0.75)] and monitor.val == [(30, 0.5)]
    assert monitor.parent["f1"] == 0.4 and monitor.progress == 1.0 and monitor.done["model_dir"] == str(out)
    text = monitor.text()
    assert "3 fine-tuning studies (9 CMBs), 1 validation studies (2 CMBs)" in text
    assert "loss  █▁▅  step 30: 0.7500" in text                 # (0.75 - 0.5) / 0.5 * 8 = 4 -> ▅
    assert "current model on validation: F1 0.400, 3.000 FP/scan" in text
    assert "last 0.500, best 0.500" in text and "warning: only 1 validation study" in text
    assert "fine-tuned weights kept, threshold 0.6" in text
    monitor.feed({"event": "done", "model_dir": str(out), "accepted": False, "threshold": 0.7,
                  "reason": "not enough studies to judge"})        # the gate's reason, as finetune_run emits it
    assert "(not enough studies to judge: the parent's weights were kept, threshold 0.7)" in monitor.text()


class InProcessFinetune:
    """Stands in for QtProcess: runs the fine-tuning command's own `main` (CMBLib.detection.finetune)
    in this process and hands its stdout lines to the job one by one, as the process would."""

    def __init__(self, on_line, on_finished):
        self.on_line, self.on_finished, self.lines, self.returncode = on_line, on_finished, [], None

    def start(self, command, env=None):
        import contextlib
        import io

        from CMBLib.detection import finetune

        assert command[1:3] == ["-m", "CMBLib.detection.finetune"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.returncode = finetune.main(command[3:])
        self.lines = out.getvalue().splitlines()

    @property
    def running(self):
        return bool(self.lines)

    def pump(self):
        if self.lines:
            self.on_line("out", self.lines.pop(0))
            return True
        self.on_finished(self.returncode)
        return False


def test_a_real_finetuning_run_feeds_the_curves(tmp_path):
    """The events of a real (tiny: 20 steps of a small network on 3 demo studies) fine-tuning run,
    through the panel's job and monitor: the loss curve has the run's training steps, the parent's
    and the fine-tuned model's validation figures are the run's, and the outcome is the gate's."""
    pytest.importorskip("torch")
    import numpy as np
    from detection_fixtures import tiny_model_folder

    from CMBLib.synthesis.annotated_study import export_annotated_study
    from CMBLib.synthesis.demo_study import make_demo_study

    dataset = tmp_path / "dataset"
    for seed in range(3):
        img, mask, _ = make_demo_study(seed, 4)
        export_annotated_study(dataset, f"{seed:02d}", img, mask, statuses=["confirmed"] * 4)
    parent = tiny_model_folder(tmp_path / "parent", name="tiny")
    out = tmp_path / "models" / "new"
    command = jobs.finetune_command(PY, [dataset], out, 5, init=str(parent), threads=1) + [
        "--max-steps", "20", "--val-rounds", "1", "--device", "cpu", "--val-fraction", "0.34",
        "--test-fraction", "0.34"]
    events = []
    job = jobs.CommandJob(command, events.append, process_factory=InProcessFinetune).start()
    monitor = jobs.TrainingMonitor()
    while job.process.pump():
        monitor.feed(events[-1])
    monitor.feed(events[-1])
    assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0
    kinds = [e["event"] for e in events]
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == [10, 20]                  # one point per 10 steps
    assert monitor.loss == [(e["step"], e["loss"]) for e in train]
    assert all(np.isfinite(loss) and loss > 0 for _, loss in monitor.loss)
    start = next(e for e in events if e["event"] == "start")
    assert monitor.start == start and len(start["train"]) == len(start["val"]) == 1
    parent_val = next(e for e in events if e["event"] == "val" and e["model"] == "parent")
    tuned_val = [e for e in events if e["event"] == "val" and e["model"] == "finetuned"]
    assert monitor.parent == parent_val and 0.0 <= parent_val["f1"] <= 1.0
    assert monitor.val == [(e["step"], e["f1"]) for e in tuned_val] and monitor.val[-1][0] == 20
    done = next(e for e in events if e["event"] == "done")
    assert kinds.index("start") < kinds.index("train") < kinds.index("done")
    assert monitor.done == done and done["model_dir"] == str(out) and monitor.progress == 1.0
    assert (out / "model.json").is_file()
    text = monitor.text()
    assert f"step 20: {monitor.loss[-1][1]:.4f}" in text
    assert f"current model on validation: F1 {parent_val['f1']:.3f}" in text
    assert ("fine-tuned weights kept" if done["accepted"] else "the parent's weights were kept") in text
    assert f"1 fine-tuning studies ({start['n_cmbs_train']} CMBs)" in text


def test_refused_dataset_gives_its_one_line_reason(tmp_path):
    events = []
    job = jobs.CommandJob(["py", "x"], events.append, process_factory=replacing(FAKE_REFUSAL, [])).start()
    pump(job)
    monitor = jobs.TrainingMonitor()
    for e in events:
        monitor.feed(e)
    assert events[-1]["returncode"] == 2 and events[-1]["message"] == "only 1 confirmed CMB; annotate more"
    assert monitor.error == "only 1 confirmed CMB"


@pytest.mark.skipif(os.name == "nt", reason="POSIX process check")
def test_cancel_kills_the_training_process_tree():
    events = []
    job = jobs.CommandJob(["py", "x"], events.append, process_factory=replacing(FAKE_SLOW, [])).start()
    job.process.pump()
    child = int(events[-1]["message"])
    assert _alive(child) and job.running
    job.cancel()
    pump(job)
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child), "the grandchild survived Cancel"
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"] and not job.running


# --- models and DICOM ------------------------------------------------------------------------------
def test_model_list_uses_the_registry_when_present(monkeypatch, tmp_path):
    registry = types.ModuleType("CMBLib.detection.registry")
    registry.list_all_models = lambda models_dir=None: [{"name": "b", "path": "/x/b", "source": "bundled"},
                                                        {"name": "mine", "path": str(tmp_path), "source": "user"}]
    registry.user_models_dir = lambda models_dir=None: tmp_path
    monkeypatch.setitem(sys.modules, "CMBLib.detection.registry", registry)
    assert [m["name"] for m in jobs.list_models()] == ["b", "mine"]
    assert jobs.user_models_dir() == tmp_path
    assert jobs.model_label({"name": "mine", "version": "1", "source": "user"}) == "mine 1 (fine-tuned)"
    models = jobs.list_models()
    (tmp_path / "link").symlink_to(tmp_path)
    assert jobs.model_index(models, tmp_path / "link") == 1 and jobs.model_index(models, "/x/b") == 0
    assert jobs.model_index(models, "/x/c") == -1 and jobs.model_index(models, "") == -1


def test_model_list_without_the_registry(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "CMBLib.detection.registry", None)     # import fails: bundled models only
    monkeypatch.setenv("CMB_MODELS_DIR", str(tmp_path))
    assert all(m["source"] == "bundled" for m in jobs.list_models())
    assert jobs.user_models_dir() == tmp_path


def test_real_registry_lists_a_new_user_model(monkeypatch, tmp_path):
    from CMBLib.detection import registry

    monkeypatch.setenv("CMB_MODELS_DIR", str(tmp_path))
    assert registry.user_models_dir() == tmp_path == jobs.user_models_dir()


def test_dicom_source_files(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"IM{i}")
        files[-1].write_bytes(b"x")
    lookup = {f"1.2.{i}": str(f) for i, f in enumerate(files)}.get
    assert jobs.dicom_files("1.2.0 1.2.1 1.2.2", lookup) == [str(f) for f in files]
    with pytest.raises(ValueError, match="not loaded from Slicer's DICOM database"):
        jobs.dicom_files(None, lookup)
    with pytest.raises(ValueError, match="1 of 2 DICOM files"):
        jobs.dicom_files("1.2.0 1.2.9", lookup)
    with pytest.raises(ValueError, match="no SOP instance UID"):
        jobs.dicom_files("1.2.0 Unknown", lookup)
    staged = jobs.stage_files([str(f) for f in files], tmp_path / "series")
    assert sorted(p.name for p in staged.iterdir()) == ["00000_IM0", "00001_IM1", "00002_IM2"]
    assert (staged / "00001_IM1").read_bytes() == b"x"


# --- Slicer-side glue with the fake Slicer ---------------------------------------------------------
class Widget:
    """A stand-in Qt widget: any attribute, signals recorded by connect()."""

    def __init__(self, **values):
        self.handlers, self.text, self.enabled, self.toolTip = {}, "", True, ""
        self.__dict__.update(values)

    def connect(self, signal, fn):
        self.handlers[signal] = fn

    def click(self):
        self.handlers["clicked(bool)"](False)

    def setValue(self, v):  # noqa: N802 - Qt's names
        self.value = v

    def setPlainText(self, text):  # noqa: N802
        self.text = text

    def appendPlainText(self, text):  # noqa: N802
        self.text += "\n" + text


class UI:
    def __init__(self, **values):
        self.__dict__.update(values)

    def __getattr__(self, name):
        widget = Widget()
        setattr(self, name, widget)
        return widget


@pytest.fixture
def fake(slicer_backend, monkeypatch):
    """`slicer` of the backend (real MRML or the fake) and an empty `qt`; CMBDetectorLib re-imported."""
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    return slicer_backend.slicer


def test_improve_panel_trains_then_selects_the_new_model(fake, tmp_path, monkeypatch):
    from CMBDetectorLib.logic import DetectorLogic
    from CMBDetectorLib.panels import ImprovePanel

    monkeypatch.setenv("CMB_MODELS_DIR", str(tmp_path / "models"))
    seen, filled = [], []
    logic = DetectorLogic(processFactory=replacing(FAKE_FINETUNE, seen), python="PythonSlicer")
    logic.ensureDependencies = lambda ask: True
    widget = types.SimpleNamespace(logic=logic, ui=UI(datasetsEdit=Widget(text=f"{tmp_path}/a; {tmp_path}/b"),
                                                      minutesSpin=Widget(value=3)),
                                   selectedModelInfo=lambda: {"path": "/m/user1", "source": "user"},
                                   fillModels=lambda select=None: filled.append(select))
    panel = ImprovePanel(widget)
    assert widget.ui.trainButton.enabled and not widget.ui.trainCancelButton.enabled
    widget.ui.trainButton.click()
    cmd = seen[0]
    assert cmd[3:5] == [f"{tmp_path}/a", f"{tmp_path}/b"] and cmd[cmd.index("--minutes") + 1] == "3"
    assert cmd[cmd.index("--init") + 1] == "/m/user1"            # continue from the selected user model
    out = cmd[cmd.index("--out") + 1]
    assert Path(out).parent == tmp_path / "models" and Path(out).name.startswith("cmb-finetuned-")
    assert logic.trainingRunning and widget.ui.trainCancelButton.enabled and not widget.ui.trainButton.enabled
    pump(logic.training)
    assert filled == [out] and widget.ui.trainProgress.value == 1000       # model list refreshed, new one chosen
    assert "loss" in widget.ui.trainCurves.text and "selected above" in widget.ui.trainCurves.text
    assert widget.ui.trainButton.enabled and not logic.trainingRunning
    assert (Path(out) / "model.json").is_file()
    panel.addDataset(f"{tmp_path}/c")
    assert jobs.split_folders(widget.ui.datasetsEdit.text)[-1] == f"{tmp_path}/c"


def test_report_panel_opens_the_report_and_explains_a_missing_dicom_source(fake, tmp_path, monkeypatch):
    from CMBDetectorLib import panels

    opened, seen = [], []
    monkeypatch.setattr(panels, "openInBrowser", opened.append)
    fake.util.tempDirectory = lambda key="": str(tmp_path / key)
    script = "import sys; print('T2S: report -> ' + sys.argv[sys.argv.index('--out') + 1] + '/T2S_cmb_report.html')"
    ui, status = UI(), Widget()
    volume = types.SimpleNamespace(GetAttribute=lambda name: None)
    source = {"detections": str(tmp_path / "T2S_cmb.json"), "image": str(tmp_path / "T2S.nrrd"), "out": str(tmp_path)}
    asked = []
    panel = panels.ReportPanel(ui, lambda: dict(source), lambda: volume, status,
                               processFactory=replacing(script, seen), python="PythonSlicer",
                               ensure=lambda seg: asked.append(seg) or len(asked) > 1)
    ui.saveReportButton.click()                                 # packages declined: nothing started
    assert seen == [] and "not installed" in status.text
    ui.saveReportButton.click()
    assert seen[0][1:6] == ["-m", "CMBLib", "report", "--detections", source["detections"]]
    assert not ui.saveReportButton.enabled
    pump(panel.task.job)
    assert opened == [f"{tmp_path}/T2S_cmb_report.html"] and status.text.startswith("Report written")
    assert ui.saveReportButton.enabled
    ui.exportSegButton.click()
    assert len(seen) == 1 and "not loaded from Slicer's DICOM database" in status.text
    assert asked == [False, False]               # no install question for a SEG that cannot be made


def test_report_panel_seg_uses_the_dicom_series(fake, tmp_path):
    from CMBDetectorLib import panels

    seen = []
    files = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    for f in files:
        f.write_bytes(b"d")
    fake.dicomDatabase = types.SimpleNamespace(fileForInstance={"1.1": str(files[0]), "1.2": str(files[1])}.get)
    fake.util.tempDirectory = lambda key="": str(tmp_path / key)
    volume = types.SimpleNamespace(GetAttribute={"DICOM.instanceUIDs": "1.1 1.2"}.get)
    status = Widget()
    panel = panels.ReportPanel(UI(), lambda: {"dataset": "/ds", "subject": "01"}, lambda: volume, status,
                               processFactory=replacing("import sys; sys.exit(0)", seen), python="py",
                               ensure=lambda seg: True)
    assert panel.run(seg=True)
    cmd = seen[0]
    image = Path(cmd[cmd.index("--image") + 1])
    assert sorted(p.name for p in image.iterdir()) == ["00000_a.dcm", "00001_b.dcm"]
    assert cmd[-2:] == ["--dicom-seg", "--no-report"] and cmd[4:8] == ["--dataset", "/ds", "--subject", "01"]
    pump(panel.task.job)                   # the stand-in ended without output: the reason and Slicer's own route
    assert status.text.startswith("No DICOM SEG: ") and "Export to DICOM" in status.text


def test_export_accepted_hands_over_then_exports(fake, tmp_path):
    from CMBDetectorLib.logic import DetectorLogic
    from CMBDetectorLib.review import ReviewSession

    logic = DetectorLogic()
    records = [{"label": i, "diameter_mm": 3.0, "size_class": "<5mm", "centre_ras": [float(i), 0.0, 0.0]}
               for i in (1, 2, 3)]
    with pytest.raises(ValueError, match="accept at least one"):
        logic.exportAccepted(None, str(tmp_path), "01")
    logic.session = ReviewSession(records)
    logic.session.accept()
    logic.session.reject()
    logic.segmentationNode = fake.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "c")
    logic.segmentationNode.SetAttribute = lambda k, v: None
    logic.run = {"volume": "V", "sequence": "SWI"}
    calls = []
    target = types.SimpleNamespace(
        importDetectorFindings=lambda seg, vol, findings: calls.append(("import", vol, findings)),
        exportStudy=lambda dataset, subject, overwrite, sequence: calls.append(("export", dataset, subject,
                                                                                  overwrite, sequence)) or {})
    with pytest.raises(ValueError, match="subject"):
        logic.exportAccepted(target, str(tmp_path), " ")
    logic.exportAccepted(target, str(tmp_path), "01", overwrite=True)
    assert [f["review_status"] for f in calls[0][2]] == ["confirmed", "proposed"]   # rejected one left out
    assert calls[1] == ("export", str(tmp_path), "01", True, "SWI")
    logic.run["sequence"] = "T2S"
    logic.exportAccepted(target, str(tmp_path), "02")
    assert calls[-1][-1] == "T2starw"                       # the detector's T2S is the dataset's T2starw


def test_annotator_report_needs_the_exported_study(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "CMBScribbleAnnotator"))
    from CMBScribbleAnnotatorLib.report import exported_source

    from CMBLib.annotation.dataset import subject_files

    with pytest.raises(ValueError, match="export the study first"):
        exported_source(str(tmp_path), "sub-07", "T2starw")
    with pytest.raises(ValueError, match="letters and digits"):
        exported_source(str(tmp_path), "0 7", "T2starw")
    path = subject_files(tmp_path, "07", "T2starw")["annotation"]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({}), encoding="utf-8")
    assert exported_source(str(tmp_path), "sub-07", "T2starw") == {"dataset": str(tmp_path), "subject": "07"}


# --- the command lines agree with the command-line tools ---------------------------------------
def test_finetune_command_parses_with_the_finetune_parser():
    from CMBLib.detection import finetune

    cmd = jobs.finetune_command("py", ["/d/a", "/d/b"], "/m/new", 2.5, init="/m/old", models_dir="/m", threads=2)
    args = finetune.build_parser().parse_args(cmd[3:])
    assert (args.datasets, args.out, args.minutes, args.init, args.progress_json, args.models_dir, args.threads) == (
        ["/d/a", "/d/b"], "/m/new", 2.5, "/m/old", True, "/m", 2)


def test_report_command_parses_with_cmb_report():
    import argparse

    from CMBLib.cli import report

    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(jobs.report_command("py", dataset="/ds", subject="07", image="/dcm", dicom_seg=True,
                                                 report=False, overwrite=True)[3:])
    assert (args.dataset, args.subject, args.image, args.dicom_seg, args.no_report, args.overwrite) == (
        "/ds", "07", "/dcm", True, True, True)
    args = parser.parse_args(jobs.report_command("py", detections="/o/a_cmb.json", image="/o/a.nrrd", out="/o")[3:])
    assert (args.detections, args.image, args.out, args.no_report) == ("/o/a_cmb.json", "/o/a.nrrd", "/o", False)


def test_a_rerun_after_a_cancelled_run_continues_in_the_same_folder(fake, tmp_path, monkeypatch):
    from CMBDetectorLib.logic import DetectorLogic

    monkeypatch.setenv("CMB_MODELS_DIR", str(tmp_path / "models"))
    seen = []
    logic = DetectorLogic(processFactory=replacing(FAKE_REFUSAL, seen), python="py")

    def out_of(cmd):
        return cmd[cmd.index("--out") + 1]

    logic.startTraining([str(tmp_path / "a")], 1)
    pump(logic.training)
    assert logic.unfinished is not None
    logic.startTraining([str(tmp_path / "a")], 1)                       # same data and parent: same folder
    assert out_of(seen[1]) == out_of(seen[0])    # (the fine-tuning's work folder is named after it: resume)
    pump(logic.training)
    (tmp_path / "models").mkdir()
    Path(out_of(seen[0])).mkdir()
    logic.startTraining([str(tmp_path / "a")], 1)                       # that folder exists now: a new one
    assert out_of(seen[2]) != out_of(seen[0])
    pump(logic.training)
    assert logic.unfinished == (((str(tmp_path / "a"),), "bundled"), out_of(seen[2]))
    Path(out_of(seen[2])).mkdir()
    logic.startTraining([str(tmp_path / "b")], 1)                       # other data: never the old folder
    assert out_of(seen[3]) not in (out_of(seen[0]), out_of(seen[2]))


def test_report_opens_as_a_file_url(fake, tmp_path):
    from CMBDetectorLib.tasks import openInBrowser

    opened = []
    qt = sys.modules["qt"]
    qt.QUrl = lambda url, mode: (url, mode)
    qt.QUrl.TolerantMode = 1
    qt.QDesktopServices = types.SimpleNamespace(openUrl=opened.append)
    openInBrowser(tmp_path / "a b_cmb_report.html")
    assert opened == [("file:///" + str(tmp_path).lstrip("/") + "/a b_cmb_report.html", 1)]


@pytest.mark.skipif(os.name == "nt", reason="POSIX process check")
def test_leaving_the_module_keeps_the_training_running(fake):
    from CMBDetectorLib.logic import DetectorLogic

    events = []
    logic = DetectorLogic(processFactory=replacing(FAKE_SLOW, []), python="py")
    logic.startTraining(["/d"], 1, onEvent=events.append, out="/nonexistent/m")
    logic.training.process.pump()
    logic.shutdown()                         # what exit() / scene close call
    assert logic.trainingRunning
    logic.cancelTraining()                   # what cleanup() calls
    pump(logic.training)
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"] and not logic.trainingRunning


# --- the real commands (issues 15 and 16, once merged) ------------------------------------------
class RealProcess(SubprocessStandIn):
    """Runs the command as given, stdout and stderr delivered like QtProcess does."""

    def start(self, command, env=None):
        import subprocess

        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=str(REPO))

    def pump(self):
        line = self.proc.stdout.readline()
        if line:
            self.on_line("out", line.rstrip("\n"))
            return True
        for err in self.proc.stderr.read().splitlines():
            self.on_line("err", err)
        self.on_finished(self.proc.wait(timeout=120))
        return False


def test_real_finetune_refusal_reaches_the_panel(tmp_path):
    (tmp_path / "notads").mkdir()
    events, monitor = [], jobs.TrainingMonitor()
    job = jobs.CommandJob(jobs.finetune_command(PY, [tmp_path / "notads"], tmp_path / "m", 1), events.append,
                          process_factory=RealProcess).start()
    pump(job)
    for e in events:
        monitor.feed(e)
    assert events[-1]["returncode"] == 2 and "not a CMB dataset" in events[-1]["message"]
    assert "not a CMB dataset" in monitor.error and not (tmp_path / "m").exists()


def test_real_report_is_found_from_its_output(tmp_path):
    import numpy as np

    from CMBLib.detection.candidates import find_candidates
    from CMBLib.detection.outputs import write_outputs
    from CMBLib.detection.pipeline import DetectionResult
    from CMBLib.geometry import Volume
    from CMBLib.io import write_volume

    prob = np.zeros((20, 40, 40), np.float32)
    prob[10, 10:13, 10:13] = 0.9
    geom = Volume(prob, (0.9, 0.9, 3.0), (-18.0, -18.0, -30.0))
    labels, records, dropped = find_candidates(geom, 0.5)
    settings = {"model": "self-test", "model_version": "0", "threshold": 0.5, "device": "cpu"}
    write_outputs(DetectionResult(geom.with_array(labels), geom, records, settings, {"total": 0.0}, [], dropped),
                  tmp_path, "T2S")
    write_volume(geom.with_array((100 - 50 * prob).astype(np.float32)), tmp_path / "T2S.nrrd")
    results = []
    task_cmd = jobs.report_command(PY, detections=tmp_path / "T2S_cmb.json", image=tmp_path / "T2S.nrrd",
                                   out=tmp_path)
    for overwrite in (False, True):
        events = []
        job = jobs.CommandJob(task_cmd + (["--overwrite"] if overwrite else []), events.append,
                              process_factory=RealProcess).start()
        pump(job)
        results.append(events[-1])
    assert results[0]["returncode"] == 0 and results[1]["returncode"] == 0
    report = jobs.report_outputs(results[0]["stdout"])["report"]
    assert report == str(tmp_path / "T2S_cmb_report.html")
    assert "<html" in Path(report).read_text(encoding="utf-8").lower()
    events = []
    pump(jobs.CommandJob(task_cmd, events.append, process_factory=RealProcess).start())
    assert "exists" in events[-1]["message"]                    # the panel then asks before --overwrite


def test_the_detector_self_test_training_step_runs(fake, tmp_path, monkeypatch):
    from fake_slicer import run_detector_selftest

    run_detector_selftest(monkeypatch, "test_trainingAndReportGlue", tmp_path)


def test_export_accepted_writes_a_dataset_through_the_annotator(glue, tmp_path):   # noqa: F811 - the fixture
    """Review in the detector -> one click -> a dataset subject with confirmed / proposed findings."""
    import numpy as np

    backend, annotator_logic, volume_node, _ = glue
    slicer = backend.slicer
    from CMBDetectorLib.logic import DetectorLogic
    from CMBDetectorLib.review import ReviewSession

    from CMBLib.annotation.dataset import import_subject

    annotator = annotator_logic(sessionRoot=tmp_path / "sessions")
    annotator.setVolume(volume_node)
    detector = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CMB candidates")
    blocks = {1: (slice(4, 7), slice(11, 14), slice(14, 17)), 2: (slice(2, 4), slice(20, 22), slice(5, 7)),
              3: (slice(7, 9), slice(3, 5), slice(3, 5))}
    records = []
    for label, block in blocks.items():
        segment_id = detector.GetSegmentation().AddEmptySegment(f"CMB_{label}", f"CMB {label}")
        detector.GetSegmentation().GetSegment(segment_id).SetTag("CMBDetector.Label", str(label))
        mask = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, np.uint8)
        mask[block] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, detector, segment_id, volume_node)
        centre = [(s.start + s.stop - 1) / 2 for s in block]
        records.append({"label": label, "centre_ras": list(annotator.volume.kji_to_ras(centre)), "diameter_mm": 3.0,
                        "size_class": "<5mm", "max_probability": 0.9})
    logic = DetectorLogic()
    logic.session, logic.segmentationNode = ReviewSession(records), detector
    logic.run = {"volume": volume_node, "sequence": "T2S"}
    logic.session.accept()            # 1 accepted
    logic.session.reject()            # 2 rejected, 3 left unreviewed
    files = logic.exportAccepted(annotator, str(tmp_path / "ds"), "07")
    assert files["annotation"].is_file() and "T2starw" in files["image"].name
    study = import_subject(tmp_path / "ds", "07")
    status = sorted((f["review_status"], f["mask"]["voxel_count"]) for f in study.document["findings"])
    assert status == [("confirmed", 27), ("proposed", 8)]      # 3x3x3 accepted, 2x2x2 unreviewed, rejected absent
