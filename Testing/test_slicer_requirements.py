"""Every requirement string the Slicer modules can hand to pip resolves for each supported
Slicer Python (3.9 = Slicer 5.8, 3.12 = Slicer 5.10), and the module code takes its
strings from CMBLib.dependencies only."""
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from CMBLib import dependencies as D

REPO = Path(__file__).resolve().parents[1]


def _registry_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


CASES = [(py, req) for py in D.SUPPORTED_PYTHONS for req in D.all_requirement_strings(py)]


@pytest.mark.parametrize("python,requirement", CASES, ids=[f"py{p[0]}.{p[1]}-{r}" for p, r in CASES])
def test_requirement_resolves_for_slicer_python(python, requirement, tmp_path):
    if not _registry_reachable():
        pytest.skip("no package registry reachable (pypi.org:443)")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", f"{python[0]}.{python[1]}", "--dest", str(tmp_path), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{requirement} has no wheel for Python {python}: {proc.stderr[-500:]}"
    assert any(tmp_path.iterdir())


def test_detection_needs_torch_but_not_monai():
    # the U-Net and the sliding window are plain torch (CMBLib/detection/unet.py, inference.py)
    for py in D.SUPPORTED_PYTHONS:
        assert "monai" not in D.requirements_for("detection", py)
        assert not any(r.startswith("monai") for r in D.all_requirement_strings(py))
    assert D.torch_requirement((3, 9)) == ">=2.4.1" and D.torch_requirement((3, 12)) == ">=2.8"
    # torch itself is never a pip requirement of the modules (PyTorchUtils installs it)
    for py in D.SUPPORTED_PYTHONS:
        assert not any(r.startswith("torch") for r in D.all_requirement_strings(py))


def test_report_and_dicom_parts():
    assert D.requirements_for("report", (3, 9))["matplotlib"] == "matplotlib>=3.5,<4"
    assert set(D.requirements_for("annotation", (3, 12))) < set(D.requirements_for("report", (3, 12)))
    assert D.requirements_for("dicom", (3, 9))["highdicom"] == "highdicom==0.22.0"        # last for Python 3.9
    assert D.requirements_for("dicom", (3, 12))["pydicom"] == "pydicom>=3.0.1,<4"
    assert "highdicom==0.28.2" in D.all_requirement_strings((3, 12))
    with pytest.raises(ValueError, match="report, dicom"):
        D.requirements_for("reports")


def test_version_checks():
    assert D.satisfied(">=2.8", "2.8.0+cu126") and not D.satisfied(">=2.8", "2.7.1")
    assert D.satisfied("scipy>=1.10,<2", "1.10.0") and not D.satisfied("scipy>=1.10,<2", "2.0.0")
    assert not D.satisfied(">=2.8", None)
    versions = {"torch": "2.5.0", "scipy": "1.9.3", "scikit-image": "0.24.0", "slicerio": "1.1.0"}
    found = lambda name: object()  # noqa: E731 - every module importable
    # SciPy 1.9 is out of range -> reinstalled; torch 2.5 is fine on 3.9, too old on 3.12
    assert D.missing("detection", (3, 9), find_spec=found, version_of=versions.get) == ["scipy>=1.10,<2"]
    versions["scipy"] = "1.13.0"
    assert D.missing("detection", (3, 12), find_spec=found, version_of=versions.get) == []
    assert D.torch_status((3, 12), version_of=versions.get) == ("too old", "2.5.0")
    assert D.torch_status((3, 9), version_of=versions.get) == ("ok", "2.5.0")
    assert D.torch_status((3, 9), version_of={}.get) == ("missing", None)
    assert D.pip_arguments(["scipy>=1.10,<2"], "2.9.0+cpu") == ["scipy>=1.10,<2", "torch==2.9.0+cpu"]
    assert D.pip_arguments([], "2.9.0") == []


def test_modules_take_requirements_from_one_place():
    """No pip requirement literal in the module folders: they all come from CMBLib.dependencies."""
    pattern = re.compile(
        r"""["'](monai|torch|scikit-image|slicerio|jsonschema|scipy|matplotlib|pydicom|highdicom)\s*[<>=]""")
    for folder in ("CMBDetector", "CMBScribbleAnnotator"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not pattern.search(text), f"{path}: requirement string outside CMBLib.dependencies"


class _Guard:
    """Stands in for slicer.util.tryWithErrorDisplay: records the error it would show."""

    def __init__(self):
        self.shown = []

    def __call__(self):
        import contextlib

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except Exception as exc:
                self.shown.append(str(exc))
                raise
        return guard()


def test_one_question_then_torch_through_pytorchutils_then_pip():
    versions = {"torch": None, "scipy": None, "scikit-image": "0.24.0", "slicerio": "1.1.0"}
    env = {"python": (3, 12), "version_of": versions.get,
           "find_spec": lambda name: object() if name != "scipy" or versions["scipy"] else None}
    questions, pip_calls, torch_calls = [], [], []

    class TorchLogic:
        def installTorch(self, askConfirmation, torchVersionRequirement):   # noqa: N802, N803 - PyTorchUtils API
            torch_calls.append((askConfirmation, torchVersionRequirement))
            versions["torch"] = "2.9.1+cu126"

    assert not D.ensure("detection", lambda text: questions.append(text) or False, pip_calls.append,
                        torch_logic_factory=TorchLogic, **env)
    assert len(questions) == 1 and "PyTorch >=2.8 through the PyTorch extension" in questions[0]
    assert "scipy>=1.10,<2" in questions[0] and not pip_calls and not torch_calls     # declined: nothing
    guard = _Guard()
    assert D.ensure("detection", lambda text: True, pip_calls.append, torch_logic_factory=TorchLogic,
                    guard=guard, **env)
    assert torch_calls == [(False, ">=2.8")]                  # PyTorchUtils asked once, no second dialog
    assert pip_calls == [["scipy>=1.10,<2", "torch==2.9.1+cu126"]]   # torch pinned: pip keeps its build
    assert guard.shown == []

    def failing_pip(args):
        raise RuntimeError("pip: no matching distribution for scipy")

    assert not D.ensure("detection", lambda text: True, failing_pip, guard=guard, **env)
    assert guard.shown == ["pip: no matching distribution for scipy"]      # one readable error, no traceback
    versions["torch"] = None                     # no PyTorch extension: say so, never pip-install torch
    assert not D.ensure("detection", lambda text: True, pip_calls.append, guard=guard, **env)
    assert "PyTorch' extension" in guard.shown[-1] and len(pip_calls) == 1
    versions.update(torch="2.9.1", scipy="1.13.0")
    assert D.ensure("detection", lambda text: 1 / 0, failing_pip, **env)    # all present: no question
