"""Python packages the Slicer modules install on first use: the ONE place for the strings.

Pure Python (no Slicer or Qt import): the modules call `requirements_for`, and
Testing/test_slicer_requirements.py resolves every string this file can return with
``pip download --python-version X.Y --only-binary=:all:`` for each supported Slicer
Python.

Supported Slicer releases and their Python:

    Slicer 5.8.x  -> Python 3.9     torch >= 2.4.1
    Slicer 5.10.x -> Python 3.12    torch >= 2.8

MONAI is not installed: detection and fine-tuning run on CMBLib's plain-torch U-Net and
sliding window (CMBLib/detection/unet.py, inference.py; equal to MONAI's outputs, tested).

torch is never handed to pip by the modules: it is installed and version-checked only
through the PyTorch extension (PyTorchUtils), with `torch_requirement` as its
``torchVersionRequirement``, so PyTorchUtils keeps its choice of CUDA build.  The pip
call that follows pins the installed torch (``torch==<installed>``) so pip cannot
replace it behind PyTorchUtils' back.
"""
import importlib.util
import sys
from typing import Optional

# Slicer's Python versions we support: (major, minor) of Slicer 5.8 and of the newest release.
SUPPORTED_PYTHONS = ((3, 9), (3, 12))

# Per Python: minimum torch (given to PyTorchUtils), the oldest the project has been used with.
_TORCH = {"py39": ">=2.4.1", "py310+": ">=2.8"}

# Import name -> pip requirement; the same for every supported Python (each range
# has wheels for 3.9 and 3.12; checked by the test).  SimpleITK and numpy come with Slicer.
ANNOTATION = {"jsonschema": "jsonschema>=4.17,<5", "slicerio": "slicerio>=1.0,<2",
              "scipy": "scipy>=1.10,<2", "skimage": "scikit-image>=0.21,<1"}
DETECTION_EXTRA = {"slicerio": "slicerio>=1.0,<2", "scipy": "scipy>=1.10,<2",
                   "skimage": "scikit-image>=0.21,<1"}
# "Save report" (`cmb report`: pictures drawn with matplotlib; an exported study is read
# with the annotation packages) and "Export DICOM SEG" (pydicom + highdicom, as the `dicom`
# extra of pyproject.toml: highdicom 0.22 is the last release for Python 3.9).
REPORT = dict(ANNOTATION, matplotlib="matplotlib>=3.5,<4")
_DICOM = {"py39": {"pydicom": "pydicom==2.4.4", "highdicom": "highdicom==0.22.0"},
          "py310+": {"pydicom": "pydicom>=3.0.1,<4", "highdicom": "highdicom==0.28.2"}}
PARTS = ("annotation", "detection", "report", "dicom")


def _key(python) -> str:
    return "py39" if tuple(python)[:2] < (3, 10) else "py310+"


def torch_requirement(python=None) -> str:
    """Version requirement for PyTorchUtils' installTorch (e.g. '>=2.8')."""
    return _TORCH[_key(python or sys.version_info)]


def requirements_for(part: str, python=None) -> dict:
    """{import name: pip requirement} of `part` (one of PARTS) for `python`."""
    if part == "annotation":
        return dict(ANNOTATION)
    if part == "detection":
        return dict(DETECTION_EXTRA)
    if part == "report":
        return dict(REPORT)
    if part == "dicom":
        return dict(REPORT, **_DICOM[_key(python or sys.version_info)])
    raise ValueError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")


def all_requirement_strings(python) -> list:
    """Every string the modules can hand to pip for `python` (for the resolution test)."""
    return sorted({r for part in PARTS for r in requirements_for(part, python).values()})


def _installed_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def satisfied(requirement: str, installed: Optional[str]) -> bool:
    """True when version `installed` meets `requirement` ('scipy>=1.10,<2' or '>=2.8')."""
    if installed is None:
        return False
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion, Version

    spec = Requirement(requirement).specifier if requirement[:1].isalpha() else None
    if spec is None:
        from packaging.specifiers import SpecifierSet

        spec = SpecifierSet(requirement)
    try:
        return Version(installed.split("+")[0]) in spec
    except InvalidVersion:
        return False


def missing(part: str, python=None, find_spec=importlib.util.find_spec, version_of=_installed_version) -> list:
    """pip requirements of `part` that are absent or at a version outside their range."""
    from packaging.requirements import Requirement

    out = []
    for name, requirement in requirements_for(part, python).items():
        if find_spec(name) is None or not satisfied(requirement, version_of(Requirement(requirement).name)):
            out.append(requirement)
    return out


def torch_status(python=None, version_of=_installed_version):
    """('ok' | 'missing' | 'too old', installed version or None) for the torch requirement."""
    installed = version_of("torch")
    if installed is None:
        return "missing", None
    return ("ok" if satisfied(torch_requirement(python), installed) else "too old"), installed


def pip_arguments(requirements: list, torch_version: Optional[str]) -> list:
    """The list handed to slicer.util.pip_install: the requirements, and the installed torch
    pinned so that pip keeps PyTorchUtils' build."""
    args = list(requirements)
    if args and torch_version:
        args.append(f"torch=={torch_version}")
    return args


def plan(part: str, python=None, find_spec=importlib.util.find_spec, version_of=_installed_version) -> dict:
    """What `part` still needs: {"torch": (status, version) or None, "pip": [requirements]}."""
    torch = torch_status(python, version_of) if part == "detection" else None
    return {"part": part, "torch": torch, "pip": missing(part, python, find_spec, version_of)}


def needs_install(p: dict) -> bool:
    return bool(p["pip"]) or (p["torch"] is not None and p["torch"][0] != "ok")


def consent_text(p: dict, python=None) -> str:
    """The one question asked before anything is installed."""
    what = []
    if p["torch"] is not None and p["torch"][0] != "ok":
        status, version = p["torch"]
        what.append(f"PyTorch {torch_requirement(python)} through the PyTorch extension"
                    + (f" (installed: {version}, too old)" if status == "too old" else ""))
    what += p["pip"]
    return ("CMB " + p["part"] + " needs these Python packages, which are missing or too old:\n\n  "
            + "\n  ".join(what) + "\n\nInstall them now? This downloads from the internet and can take "
            "several minutes (PyTorch: a few GB).")


def install(p: dict, pip_install, torch_logic=None, python=None, version_of=_installed_version) -> None:
    """Install what `plan` listed, after consent: torch only through PyTorchUtils
    (`torch_logic.installTorch`), the rest with `pip_install(list)` with torch pinned.
    Raises RuntimeError with a readable message when something did not work."""
    torch_version = version_of("torch")
    if p["torch"] is not None and p["torch"][0] != "ok":
        if torch_logic is None:
            raise RuntimeError("PyTorch is installed through the 'PyTorch' extension: install it from the "
                               "Extensions Manager, restart Slicer and try again.")
        torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=torch_requirement(python))
        torch_version = version_of("torch")
        if not satisfied(torch_requirement(python), torch_version):
            raise RuntimeError(f"PyTorch {torch_requirement(python)} is needed, but the PyTorch extension "
                               f"installed {torch_version or 'nothing'}; use its module to install a newer one.")
    if p["pip"]:
        pip_install(pip_arguments(p["pip"], torch_version))


def ensure(part: str, ask, pip_install, torch_logic_factory=None, guard=None, python=None,
           find_spec=None, version_of=None) -> bool:
    """The modules' whole set-up: nothing to do -> True; else one question `ask(text)`;
    then `install` inside `guard()` (Slicer: slicer.util.tryWithErrorDisplay, which shows
    any failure as one error message).  Returns False when declined or failed.
    `find_spec` / `version_of` replace the import-system look-ups in tests."""
    find_spec = find_spec or importlib.util.find_spec
    version_of = version_of or _installed_version
    p = plan(part, python, find_spec=find_spec, version_of=version_of)
    if not needs_install(p):
        return True
    if not ask(consent_text(p, python)):
        return False
    import contextlib

    try:
        with (guard() if guard is not None else contextlib.nullcontext()):
            torch_logic = None
            if p["torch"] is not None and p["torch"][0] != "ok" and torch_logic_factory is not None:
                torch_logic = torch_logic_factory()
            install(p, pip_install, torch_logic=torch_logic, python=python, version_of=version_of)
    except Exception:  # shown by the guard; the caller only needs to know it did not work
        if guard is None:
            raise
        return False
    return True
