"""Progress reporting and cancellation shared by long CMBLib jobs.

A long function takes ``progress=None`` (a callable ``progress(fraction, message)``,
fraction in [0, 1]) and ``cancel=None`` (a `CancelToken`).  It calls
``report(progress, f, msg)`` and ``check_cancel(cancel)`` between steps.
"""
import json
import sys
import threading
from typing import Callable, Optional

from .errors import CMBError

ProgressCallback = Callable[[float, str], None]


class Cancelled(CMBError):  # noqa: N818 (a user cancelling is not an error of the program)
    """The user cancelled a long job."""


class CancelToken:
    """Thread-safe flag a GUI or signal handler sets to stop a long job."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self):
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def report(progress: Optional[ProgressCallback], fraction: float, message: str = "") -> None:
    if progress is not None:
        progress(max(0.0, min(1.0, float(fraction))), message)


def check_cancel(cancel: Optional[CancelToken]) -> None:
    if cancel is not None and cancel.cancelled:
        raise Cancelled("cancelled by the user")


def json_progress(stream=None) -> ProgressCallback:
    """Progress as one JSON line per update: {"progress": 0.42, "message": "..."}."""
    stream = stream or sys.stdout

    def _cb(fraction: float, message: str) -> None:
        stream.write(json.dumps({"progress": round(fraction, 4), "message": message}) + "\n")
        stream.flush()

    return _cb


def terminal_progress(stream=None, width: int = 30) -> ProgressCallback:
    """A one-line progress bar on a terminal (plain lines when not a TTY)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    last = {"msg": None}

    def _cb(fraction: float, message: str) -> None:
        if tty:
            filled = int(round(width * fraction))
            stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}% {message[:60]:<60}")
            if fraction >= 1.0:
                stream.write("\n")
            stream.flush()
        elif message != last["msg"]:
            stream.write(f"{100 * fraction:5.1f}% {message}\n")
            stream.flush()
            last["msg"] = message

    return _cb
