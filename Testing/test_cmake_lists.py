"""The installed extension holds exactly what CMake lists: every file CMBLib needs at run
time (Python sources, bundled models, schema, atlas) must be named in CMBLib/CMakeLists.txt."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _listed(cmake: Path, variable: str) -> set:
    text = cmake.read_text(encoding="utf-8")
    block = re.search(rf"set\({variable}\s(.*?)\)", text, re.S).group(1)
    return {line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")}


def test_every_cmblib_python_file_is_listed():
    lib = REPO / "CMBLib"
    present = {p.relative_to(lib).as_posix() for p in lib.rglob("*.py") if "__pycache__" not in p.parts}
    listed = _listed(lib / "CMakeLists.txt", "CMBLib_PYTHON_SCRIPTS")
    assert present - listed == set(), "not in CMBLib/CMakeLists.txt (missing from the installed extension)"
    assert listed - present == set(), "listed in CMBLib/CMakeLists.txt but absent"


def test_every_bundled_resource_is_listed():
    lib = REPO / "CMBLib"
    present = {p.relative_to(lib).as_posix() for pattern in ("models/*/*", "location/data/*", "annotation/*.json")
               for p in lib.glob(pattern) if p.is_file()}
    listed = _listed(lib / "CMakeLists.txt", "CMBLib_PYTHON_RESOURCES")
    assert present - listed == set() and listed - present == set()
