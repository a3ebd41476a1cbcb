"""Background processes for the CMB modules: a generic qt.QProcess runner, the warm
detection worker client, command lines, output parsing and the process-tree kill.

No Python threads: `QtProcess` is driven by Qt's event loop (readyReadStandardOutput /
readyReadStandardError / finished signals), as Slicer's own DICOM processes and
SlicerNNUnet do.  `WorkerClient` holds the protocol of `cmb worker` (see
CMBLib/cli/worker.py) and takes the process object from a factory, so pytest drives it
with a subprocess stand-in and Slicer with `QtProcess`.  Later buttons ("Improve the
model", "Save report", ...) can run any `cmb` sub-command through `QtProcess` the same way.
"""
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Optional


def cmblib_parent() -> str:
    """The folder that contains the CMBLib package (put on the child's PYTHONPATH)."""
    import CMBLib

    return str(Path(CMBLib.__file__).resolve().parent.parent)


def python_slicer(app_dirs=(), which=shutil.which) -> str:
    """Slicer's PythonSlicer launcher (it sets up Slicer's Python environment).

    `app_dirs`: folders to look in first (the module passes slicer.app.applicationDirPath()
    and slicer.app.slicerHome/bin).  Never sys.executable: inside Slicer that is the GUI binary.
    """
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    for folder in app_dirs:
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    found = which("PythonSlicer")
    if found:
        return found
    raise RuntimeError(f"{name} was not found next to Slicer (looked in {', '.join(map(str, app_dirs)) or 'PATH'})")


def worker_command(python: str, threads: Optional[int] = None) -> list:
    """Argument list of the warm worker: `python -m CMBLib worker`."""
    cmd = [python, "-m", "CMBLib", "worker"]
    if threads:
        cmd += ["--threads", str(int(threads))]
    return cmd


def detection_job(job_id: str, image: str, out_dir: str, name: str, model: str = "default", device: str = "auto",
                  threshold: Optional[float] = None, sequence: str = "T2S", location: bool = False,
                  overwrite: bool = False, second_stage: Optional[bool] = None,
                  location_filter: Optional[bool] = None, first_stage: Optional[str] = None) -> dict:
    """One job line for `cmb worker` (overwrite only when the user agreed).  `second_stage`:
    None = the model's default (JSON null), True / False = run / skip the candidate classifier;
    `location_filter` alike (False: candidates in CSF / venous anatomy stay findings);
    `first_stage`: None = the model's default, "unet" or "unet+native" (the native patch stage)."""
    return {"id": str(job_id), "image": str(image), "out": str(out_dir), "name": str(name), "model": str(model),
            "device": str(device), "threshold": None if threshold is None else float(threshold),
            "sequence": str(sequence), "location": bool(location), "overwrite": bool(overwrite),
            "second_stage": None if second_stage is None else bool(second_stage),
            "location_filter": None if location_filter is None else bool(location_filter),
            "first_stage": None if first_stage is None else str(first_stage)}


def compare_job(job_id: str, baseline: str, followup: str, out_dir: str, model: str = "default",
                device: str = "auto", sequence: str = "T2S", tolerance_mm: float = 5.0,
                overwrite: bool = False) -> dict:
    """One "compare" job line for `cmb worker`: the follow-up against the prior (baseline)."""
    return {"kind": "compare", "id": str(job_id), "baseline": str(baseline), "followup": str(followup),
            "out": str(out_dir), "model": str(model), "device": str(device), "sequence": str(sequence),
            "tolerance_mm": float(tolerance_mm), "overwrite": bool(overwrite)}


def compare_review_job(job_id: str, compare_json: str, decisions: dict, baseline: Optional[str] = None,
                       followup: Optional[str] = None, overwrite: bool = False) -> dict:
    """One "compare_review" job line: the reviewed comparison files from the reader's decisions."""
    return {"kind": "compare_review", "id": str(job_id), "compare": str(compare_json),
            "decisions": {str(k): str(v) for k, v in decisions.items()},
            "baseline": None if baseline is None else str(baseline),
            "followup": None if followup is None else str(followup), "overwrite": bool(overwrite)}


def child_environment(base: Optional[dict] = None) -> dict:
    """Environment of a child process: CMBLib importable, unbuffered output."""
    env = dict(os.environ if base is None else base)
    parent = cmblib_parent()
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _children(pid: int) -> list:
    """Direct children of `pid` (POSIX, without psutil): `pgrep -P`."""
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(v) for v in out.split() if v.strip().isdigit()]


def kill_process_tree(pid: int) -> None:
    """Kill process `pid` and all its descendants (PythonSlicer is a launcher: the real
    Python is its child).  Never kills a whole process group: with QProcess the child
    shares Slicer's group."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
        except psutil.NoSuchProcess:
            pass
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True)
        return
    todo, tree = [pid], []
    while todo:                      # collect first, then kill leaves first
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    for p in reversed(tree):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def parse_line(line: str) -> dict:
    """A JSON progress/result line as a dict; anything else as {'event': 'log', 'message': line}."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                if "progress" in obj and "event" not in obj:
                    obj["event"] = "progress"
                return obj
        except ValueError:
            pass
    return {"event": "log", "message": line}


def error_message(exit_event: dict) -> str:
    """The one-line reason a run failed, from its stderr ('cmb ...: error: ...')."""
    lines = exit_event.get("stderr") or []
    for line in reversed(lines):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    if exit_event.get("cancelled"):
        return "cancelled"
    return lines[-1] if lines else f"the process ended with exit code {exit_event.get('returncode')}"


class LineBuffer:
    """Bytes chunks in, complete text lines out (a chunk may end mid-line)."""

    def __init__(self):
        self._rest = b""

    def feed(self, data: bytes) -> list:
        data = self._rest + bytes(data)
        *lines, self._rest = data.split(b"\n")
        return [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines]

    def flush(self) -> list:
        rest, self._rest = self._rest, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class QtProcess:
    """A child process driven by Qt signals; any command, line callbacks, tree kill.

    on_line(kind, text) is called for every stdout ("out") / stderr ("err") line,
    on_finished(returncode) once when the process ended (-1 when it crashed or failed to start).
    """

    def __init__(self, on_line: Callable, on_finished: Callable):
        import qt

        self.on_line, self.on_finished = on_line, on_finished
        self.process = qt.QProcess()
        self._buffers = {"out": LineBuffer(), "err": LineBuffer()}
        self._finished = False
        self.process.connect("readyReadStandardOutput()", lambda: self._read("out"))
        self.process.connect("readyReadStandardError()", lambda: self._read("err"))
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)

    def start(self, command: list, env: Optional[dict] = None) -> None:
        import qt

        environment = qt.QProcessEnvironment()
        for key, value in child_environment(env).items():
            environment.insert(key, value)
        self.process.setProcessEnvironment(environment)
        self._finished = False
        self.process.start(command[0], list(command[1:]))

    @property
    def running(self) -> bool:
        return self.process.state() != 0 and not self._finished   # 0 = QProcess::NotRunning

    def write(self, text: str) -> None:
        self.process.write(text.encode("utf-8"))

    def kill(self) -> None:
        pid = int(self.process.processId()) if self.running else 0
        if pid > 0:
            kill_process_tree(pid)

    def _read(self, kind: str) -> None:
        data = self.process.readAllStandardOutput() if kind == "out" else self.process.readAllStandardError()
        for line in self._buffers[kind].feed(bytes(data.data())):
            self.on_line(kind, line)

    def _onFinished(self, exitCode, exitStatus=0):
        if self._finished:
            return
        self._read("out")
        self._read("err")
        for kind, buffer in self._buffers.items():
            for line in buffer.flush():
                self.on_line(kind, line)
        self._finished = True
        self.on_finished(int(exitCode) if int(exitStatus) == 0 else -1)

    def _onError(self, error):
        if int(error) == 0:           # QProcess::FailedToStart: no finished() will come
            self.on_line("err", f"error: could not start {self.process.program()}")
            self._onFinished(-1, 1)


class WorkerClient:
    """The warm `cmb worker`: started on first use, restarted when it died, killed on Cancel.

    `process_factory(on_line, on_finished)` makes the process object (`QtProcess` in
    Slicer).  `on_event(event)` receives the worker's events (progress, result, error)
    plus {"event": "exit", "returncode", "cancelled", "stderr", "job"} when the worker
    ended while a job was running.
    """

    def __init__(self, command: list, process_factory=QtProcess, on_event: Optional[Callable] = None,
                 env: Optional[dict] = None):
        self.command, self.process_factory, self.env = list(command), process_factory, env
        self.on_event = on_event or (lambda event: None)
        self.process = None
        self.job = None          # id of the job in progress
        self.stderr = []
        self.cancelled = False
        self.starts = 0
        self._counter = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def busy(self) -> bool:
        return self.job is not None

    def submit(self, job: dict) -> str:
        """Send one job (starting the worker when needed); returns its id."""
        if self.busy:
            raise RuntimeError("a detection is already running")
        if not self.alive:
            self.stderr, self.cancelled = [], False
            self.process = self.process_factory(self._onLine, self._onFinished)
            self.process.start(self.command, self.env)
            self.starts += 1
        self._counter += 1
        job = dict(job)
        job.setdefault("id", str(self._counter))
        self.job = job["id"]
        self.process.write(json.dumps(job) + "\n")
        return job["id"]

    def cancel(self) -> None:
        """Kill the worker (and the job in it); the next submit starts a fresh one."""
        if self.alive:
            self.cancelled = True
            self.process.kill()

    def shutdown(self) -> None:
        """Stop the worker (module exit / Slicer exit)."""
        self.job = None
        if self.alive:
            self.process.kill()
        self.process = None

    def _onLine(self, kind: str, line: str) -> None:
        if kind == "err":
            if line.strip():
                self.stderr = (self.stderr + [line])[-50:]
            return
        event = parse_line(line)
        if event.get("event") in ("result", "error") and event.get("id") == self.job:
            self.job = None
        self.on_event(event)

    def _onFinished(self, returncode: int) -> None:
        job, self.job = self.job, None
        if job is not None or self.cancelled:
            self.on_event({"event": "exit", "returncode": returncode, "cancelled": self.cancelled,
                           "stderr": list(self.stderr), "job": job})
        self.cancelled = False


def default_threads() -> Optional[int]:
    """Leave one core to Slicer's GUI."""
    n = os.cpu_count() or 1
    return max(1, n - 1) if n > 2 else None


__all__ = ["LineBuffer", "QtProcess", "WorkerClient", "child_environment", "cmblib_parent", "compare_job",
           "compare_review_job", "detection_job",
           "error_message", "kill_process_tree", "parse_line", "python_slicer", "worker_command"]
