"""Run `cmb detect` in a separate process, read its JSON progress lines, cancel it.

The GUI never waits: `DetectionProcess.start` launches
``PythonSlicer -m CMBLib detect IMAGE --out DIR --progress-json ...`` and returns;
a GUI timer calls `poll()`, which returns the events printed so far (dicts, see
`CMBLib.cli.detect`: ``{"progress": f, "message": m}``, ``{"event": "study", ...}``,
``{"event": "error", ...}``, ``{"event": "done", ...}``), plus
``{"event": "exit", "returncode": rc, "stderr": [lines]}`` once the process has ended.
`cancel()` ends the whole process tree: PythonSlicer is a launcher that starts the real
Python as its child, so killing only the direct child would leave the work running.
No Slicer or Qt import here.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional


def cmblib_parent() -> str:
    """The folder that contains the CMBLib package (put on the child's PYTHONPATH)."""
    import CMBLib

    return str(Path(CMBLib.__file__).resolve().parent.parent)


def build_detect_command(python: str, image: str, out_dir: str, model: str = "default", device: str = "auto",
                         threshold: Optional[float] = None, sequence: str = "T2S", location: bool = False,
                         overwrite: bool = True) -> list[str]:
    """The argument list of one `cmb detect` run with JSON progress."""
    cmd = [python, "-m", "CMBLib", "detect", str(image), "--out", str(out_dir), "--progress-json",
           "--model", str(model), "--device", str(device), "--sequence", str(sequence)]
    if threshold is not None:
        cmd += ["--threshold", f"{float(threshold):g}"]
    if location:
        cmd.append("--location")
    if overwrite:
        cmd.append("--overwrite")
    return cmd


def kill_process_tree(pid: int) -> None:
    """Kill process `pid` and all its descendants (started by `DetectionProcess`)."""
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
    try:  # the child leads its own process group (start_new_session=True)
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class DetectionProcess:
    """One background `cmb detect` run; poll() it from a GUI timer."""

    def __init__(self):
        self.proc = None
        self._queue = queue.Queue()
        self._threads = []
        self.stderr: list[str] = []
        self.cancelled = False
        self._exit_sent = False

    def start(self, command: list[str], env: Optional[dict[str, str]] = None) -> None:
        env = dict(os.environ if env is None else env)
        parent = cmblib_parent()
        env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     universal_newlines=True, encoding="utf-8", errors="replace", **kwargs)
        for stream, kind in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            t = threading.Thread(target=self._reader, args=(stream, kind), daemon=True)
            t.start()
            self._threads.append(t)

    def _reader(self, stream, kind):
        for line in iter(stream.readline, ""):
            self._queue.put((kind, line.rstrip("\n")))
        stream.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> list[dict]:
        """Events printed since the last call; the last one is 'exit' when the run ended."""
        events = []
        finished = self.proc is not None and self.proc.poll() is not None
        if finished:
            for t in self._threads:
                t.join(timeout=2.0)
        while True:
            try:
                kind, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "err":
                if line.strip():
                    self.stderr.append(line)
                continue
            events.append(parse_line(line))
        if finished and not self._exit_sent:
            self._exit_sent = True
            events.append({"event": "exit", "returncode": self.proc.returncode, "cancelled": self.cancelled,
                           "stderr": list(self.stderr)})
        return events

    def cancel(self) -> None:
        """End the run and every process it started."""
        if self.running:
            self.cancelled = True
            kill_process_tree(self.proc.pid)

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout=timeout)


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
    """The one-line reason a run failed, from its stderr ('cmb detect: error: ...')."""
    lines = exit_event.get("stderr") or []
    for line in reversed(lines):
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    if exit_event.get("cancelled"):
        return "cancelled"
    return lines[-1] if lines else f"detection ended with exit code {exit_event.get('returncode')}"


def python_slicer() -> str:
    """PythonSlicer next to Slicer (it sets up Slicer's Python environment), else this Python."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable
