"""CMBDetector's Slicer-free parts: the process runner, review state, CMake listing, Python 3.9."""
import ast
import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "CMBDetector"
sys.path.insert(0, str(MODULE))

from CMBDetectorLib.process import DetectionProcess, build_detect_command, error_message, parse_line  # noqa: E402
from CMBDetectorLib.review import ReviewSession, segment_name  # noqa: E402


def _records(n):
    return [{"label": i, "diameter_mm": 2.5 + i, "size_class": "<5mm" if 2.5 + i < 5 else "5-10mm",
             "centre_ras": [float(i), 0.0, 0.0], "max_probability": 0.9 - 0.1 * i} for i in range(1, n + 1)]


def test_cmakelists_list_every_module_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    for path in MODULE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt":
            rel = path.relative_to(MODULE).as_posix().replace("CMBDetector", "${MODULE_NAME}")
            assert rel in text, f"{rel} missing from CMBDetector/CMakeLists.txt"
    lib = (REPO / "CMBLib" / "CMakeLists.txt").read_text()
    for name in ["detection/__init__.py", "detection/candidates.py", "detection/inference.py",
                 "detection/model_io.py", "detection/outputs.py", "detection/pipeline.py",
                 "cli/detect.py", "cli/models.py", "cli/demo.py"]:
        assert name in lib.split(), name


def test_module_files_parse_on_python_3_9():
    files = list(MODULE.rglob("*.py")) + list((REPO / "CMBLib" / "detection").glob("*.py"))
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


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


def test_command_and_line_parsing():
    cmd = build_detect_command("py", "a.nrrd", "out", model="m", threshold=0.35, sequence="SWI", location=True)
    assert cmd[:4] == ["py", "-m", "CMBLib", "detect"] and "--progress-json" in cmd
    assert cmd[cmd.index("--threshold") + 1] == "0.35" and "--location" in cmd and "--overwrite" in cmd
    assert parse_line('{"progress": 0.5, "message": "x"}') == {"progress": 0.5, "message": "x", "event": "progress"}
    assert parse_line("plain text")["event"] == "log"
    assert error_message({"stderr": ["warn", "cmb detect: error: a.nii: truncated"]}) == "a.nii: truncated"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_cancel_kills_the_whole_process_tree():
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(c.pid, flush=True); time.sleep(60)")
    p = DetectionProcess()
    p.start([sys.executable, "-c", code])
    child = None
    deadline = time.time() + 30
    while child is None and time.time() < deadline:
        for ev in p.poll():
            if ev["event"] == "log" and ev["message"].strip().isdigit():
                child = int(ev["message"])
        time.sleep(0.05)
    assert child is not None and _alive(child)
    p.cancel()
    p.wait(timeout=10)
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child), "the grandchild survived Cancel"
    events = p.poll()
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"]


def test_process_runs_cmb_detect_with_json_progress(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from detection_fixtures import phantom, tiny_model_folder

    from CMBLib.io import write_volume

    model = tiny_model_folder(tmp_path / "model")
    vol, _ = phantom([((30, 40, 10), 2.0)])
    write_volume(vol, tmp_path / "img.nrrd")
    p = DetectionProcess()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p.start(build_detect_command(sys.executable, str(tmp_path / "img.nrrd"), str(tmp_path / "out"),
                                 model=str(model), device="cpu"), env=env)
    events = []
    deadline = time.time() + 120
    while not (events and events[-1]["event"] == "exit") and time.time() < deadline:
        events += p.poll()
        time.sleep(0.05)
    assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0, events[-1]
    progress = [e["progress"] for e in events if e["event"] == "progress"]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0
    study = next(e for e in events if e["event"] == "study")
    doc = json.loads(Path(study["outputs"]["json"]).read_text())
    assert doc["format"] == "cmb-detections" and (tmp_path / "out" / "img_cmb_mask.nii.gz").exists()
