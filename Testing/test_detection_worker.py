"""`cmb worker` (the warm detection process of CMBDetector) driven with plain subprocess, no Qt."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from CMBLib.cli.worker import serve

REPO = Path(__file__).resolve().parents[1]


def test_bad_lines_and_jobs_answer_one_error_each_and_the_worker_goes_on(tmp_path):
    lines = ["not json", "[1, 2]", json.dumps({"id": "a", "out": str(tmp_path)}),
             json.dumps({"id": "b", "image": str(tmp_path / "none.nii.gz"), "out": str(tmp_path)}),
             json.dumps({"cmd": "quit"}), json.dumps({"id": "never"})]
    events = []
    assert serve(io.StringIO("\n".join(lines) + "\n"), events.append) == 0
    assert events[0]["event"] == "ready"
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 4 and all(e["event"] != "result" for e in events)
    assert errors[2] == {"event": "error", "id": "a", "message": "job a: 'image' is missing"}
    assert errors[3]["id"] == "b" and errors[3]["message"].endswith("file not found")


def _read_until(proc, job_id, timeout=180):
    events = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        events.append(event)
        if event.get("id") == job_id and event["event"] in ("result", "error"):
            return events
    raise AssertionError(f"no answer to job {job_id}: {events[-3:]} {proc.stderr.read() if proc.poll() else ''}")


def test_second_job_reuses_the_loaded_model(tmp_path):
    pytest.importorskip("torch")
    from detection_fixtures import phantom, tiny_model_folder

    from CMBLib.io import write_volume

    model = tiny_model_folder(tmp_path / "model")
    vol, _ = phantom([((30, 40, 10), 2.0)])
    write_volume(vol, tmp_path / "img.nrrd")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "CMBLib", "worker", "--threads", "1"], cwd=str(tmp_path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        results = []
        for n in (1, 2):
            job = {"id": str(n), "image": str(tmp_path / "img.nrrd"), "out": str(tmp_path / f"out{n}"),
                   "model": str(model), "device": "cpu"}
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            events = _read_until(proc, str(n))
            assert events[-1]["event"] == "result", events[-1]
            progress = [e["progress"] for e in events if e["event"] == "progress"]
            assert progress == sorted(progress) and progress[-1] == 1.0
            results.append(events[-1])
        first, second = results
        assert first["model_loads"] == 1 and not first["model_cached"]
        assert second["model_loads"] == 1 and second["model_cached"] and second["jobs_done"] == 2
        # the cached model costs a dictionary look-up; the first load reads and builds it (about
        # 10 ms for the small test model since the U-Net is plain torch: no fixed bound on it)
        assert second["timings"]["load_model"] < min(0.01, first["timings"]["load_model"])
        assert first["cmb_count"] == second["cmb_count"]
        assert Path(second["outputs"]["json"]).is_file()
        # same folder again: nothing is overwritten silently
        proc.stdin.write(json.dumps(dict(job, id="3")) + "\n")
        proc.stdin.flush()
        again = _read_until(proc, "3")[-1]
        assert again["event"] == "error" and "not overwritten" in again["message"]
        proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
