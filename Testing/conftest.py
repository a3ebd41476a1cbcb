"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CMB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real reference data (../shared/data); the test skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the calling test with the reason."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real data file {path} not present")
    return path


@pytest.fixture
def dark_model(monkeypatch):
    """`--model dark-spot` loads the fixed dark-spot network (no file needed)."""
    from detection_fixtures import use_dark_spot_model

    return use_dark_spot_model(monkeypatch)


@pytest.fixture(params=("fake", "real"))
def slicer_backend(request, monkeypatch, tmp_path):
    """The modules' `slicer`: the fake (any Python) and Slicer's real MRML libraries (slicer-core,
    Python >= 3.10; skipped with the reason elsewhere).  See Testing/slicer_backends.py."""
    from slicer_backends import install_backend

    backend = install_backend(request.param, monkeypatch, tmp_path)
    yield backend
    if backend.real is not None:
        backend.real.uninstall()
