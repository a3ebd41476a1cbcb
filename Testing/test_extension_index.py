"""The Slicer Extensions Index checks (offline) on CMBSlicer.json and this repository, and that
each check catches what it is for (mutated copies of the JSON and of CMakeLists.txt).

The checks are in extension_index_checks.py (re-implemented from the index's
scripts/check_description_files.py; data in data/extensions_index/)."""
import json
import re
import shutil
from pathlib import Path

import extension_index_checks as X
import pytest

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = REPO / "CMBSlicer.json"
CMAKE = REPO / "CMakeLists.txt"


@pytest.fixture
def metadata():
    return json.loads(DESCRIPTION.read_text(encoding="utf-8"))


@pytest.fixture
def cmake():
    return CMAKE.read_text(encoding="utf-8")


def _cmake_problems(cmake_text, metadata, name="CMBSlicer"):
    return X.check_cmakelists(name, metadata, cmake_text, REPO)


def _set(cmake_text, variable, value):
    """`cmake_text` with `set(EXTENSION_<variable> ...)` replaced by `value` (a whole line)."""
    text, n = re.subn(rf'^set\(EXTENSION_{variable} .*$', value, cmake_text, flags=re.M)
    assert n == 1
    return text


# --- the real files pass --------------------------------------------------------------
def test_description_file_and_repository_pass_every_check():
    results = X.check_description_file(DESCRIPTION, REPO)
    assert set(results) == {"JSON file format", "JSON schema", "extension name", "category", "git repository name",
                            "SCM URL syntax", "build dependencies", "CMakeLists.txt content", "license file",
                            "repository size"}
    assert {check: problems for check, problems in results.items() if problems} == {}


def test_description_names_the_cmake_project_and_what_the_index_requires(metadata, cmake):
    assert X.cmake_project_name(cmake) == DESCRIPTION.stem == "CMBSlicer"
    assert metadata["scm_revision"] == "main" and metadata["build_dependencies"] == ["PyTorch"]
    assert metadata["enabled"] is True and metadata["tier"] == 1
    assert metadata["$schema"] == X.SCHEMA_URL.format(name=X.NEWEST_SCHEMA)


def test_cmake_metadata_is_what_slicer_reads(cmake, metadata):
    variables = X.cmake_variables(cmake)
    assert {"HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS",
            "DEPENDS"} <= set(variables) <= X.SLICER_EXTENSION_VARIABLES
    assert variables["DEPENDS"] == "PyTorch"
    shots = variables["SCREENSHOTURLS"].split()
    assert [X.local_file(u, metadata, REPO).relative_to(REPO).as_posix() for u in shots] == [
        "docs/images/slicer_detector.png", "docs/images/slicer_annotator.png"]
    assert "\n" not in variables["DESCRIPTION"]
    # the metadata is set before find_package(Slicer): UseSlicer.cmake gives EXTENSION_DEPENDS its default
    assert cmake.index("set(EXTENSION_DEPENDS") < cmake.index("find_package(Slicer")


def test_screenshots_are_small_pngs():
    for name in ("slicer_detector.png", "slicer_annotator.png"):
        path = REPO / "docs" / "images" / name
        assert X.png_size(path) == (800, 600), name
        assert path.stat().st_size < 300_000, name


def test_module_icons_are_128_pixel_pngs():
    for module in ("CMBDetector", "CMBScribbleAnnotator"):
        assert X.png_size(REPO / module / "Resources" / "Icons" / f"{module}.png") == (128, 128), module


def test_modules_register_their_self_test_with_ctest():
    for module in ("CMBDetector", "CMBScribbleAnnotator"):
        text = (REPO / module / "CMakeLists.txt").read_text(encoding="utf-8")
        assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text), module


# --- each check catches what it is for --------------------------------------------------
def test_json_format_problems_are_reported():
    good = DESCRIPTION.read_bytes()
    assert X.check_file_format(good) == []
    assert "non-LF line endings" in X.check_file_format(good.replace(b"\n", b"\r\n"))[0]
    assert "Invalid JSON format" in X.check_file_format(good.replace(b"}", b"", 1).rstrip(b"}\n"))[0]
    assert "one newline" in X.check_file_format(good.rstrip(b"\n"))[0]
    assert "tabs" in X.check_file_format(good.replace(b'  "category"', b'\t"category"'))[0]
    assert "trailing whitespace" in X.check_file_format(good.replace(b'"main",', b'"main",  '))[0]
    squashed = json.dumps(json.loads(good)).encode() + b"\n"
    assert "prettier" in X.check_file_format(squashed)[0]


def test_schema_problems_are_reported(metadata):
    assert X.check_schema(metadata) == []
    wrong = dict(metadata, tier=7, enabled="yes", extra_field=1)
    problems = X.check_schema(wrong)
    assert any("tier" in p and "maximum" in p for p in problems)
    assert any("'yes' is not of type 'boolean'" in p for p in problems)
    assert any("Additional properties are not allowed ('extra_field'" in p for p in problems)
    assert any("'scm_url' is a required property" in p for p in X.check_schema(
        {k: v for k, v in metadata.items() if k != "scm_url"}))
    assert X.check_schema({k: v for k, v in metadata.items() if k != "$schema"}) == [
        "No $schema field found in extension description"]
    unknown = dict(metadata, **{"$schema": "https://example.org/schema.json#"})
    assert "none of the catalog-entry schemas" in X.check_schema(unknown)[0]
    # valid for the schema named, but the index's hook validates against the newest too
    older = dict(metadata, **{"$schema": X.SCHEMA_URL.format(name="slicer-extension-catalog-entry-schema-v1.0.1.json"),
                              "dicom_support_rule": "Modality == 'MR'"})
    assert [p for p in X.check_schema(older) if "v1.0.1" in p and "dicom_support_rule" in p]
    assert "scm_revision is missing" in X.check_schema({k: v for k, v in metadata.items()
                                                         if k != "scm_revision"})[0]


def test_names_category_url_and_dependencies_are_checked(metadata):
    assert X.check_extension_name("CMBSlicer") == []
    assert "should not* start with 'Slicer'" in X.check_extension_name("SlicerCMB")[0]
    assert X.check_extension_name("SlicerRT") == []          # the index's historical exceptions
    assert "Category `Microbleeds` is unknown" in X.check_category(dict(metadata, category="Microbleeds"))[0]
    assert X.check_category({k: v for k, v in metadata.items() if k != "category"}) == ["category key is missing"]
    assert X.check_scm_url(dict(metadata, scm_url="ssh://github.com/cmb-slicer/SlicerCMB")) == [
        "scm_url scheme is 'ssh' but it should by any of ['git', 'https']"]
    assert X.check_scm_url(dict(metadata, scm_url="github.com/x/y")) == ["scm_url do not match scheme://host/path"]
    assert X.check_repository_name(dict(metadata, scm_url="https://github.com/cmb-slicer/SlicerCMB.git")) == []
    assert "repository name *should* start with 'Slicer'" in X.check_repository_name(
        dict(metadata, scm_url="https://github.com/cmb-slicer/CMBSlicer"))[0]
    assert X.check_build_dependencies(dict(metadata, build_dependencies=["PyTorch", "Torch"])) == [
        "'Torch' extension is not found"]


def test_cmake_problems_are_reported(cmake, metadata):
    assert _cmake_problems(cmake, metadata) == []
    assert _cmake_problems(cmake, metadata, name="CMBSlicerX") == [
        "Extension name in CMakeLists.txt project name 'CMBSlicer' does not match extension description file "
        "name 'CMBSlicerX'"]
    assert "No project() declaration found in CMakeLists.txt" in _cmake_problems(
        cmake.replace("project(CMBSlicer)", ""), metadata)
    no_shots = _set(cmake, "SCREENSHOTURLS", 'set(EXTENSION_SCREENSHOTURLS "")')
    assert set(_cmake_problems(no_shots, metadata)) == {"No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt.",
                                                       "EXTENSION_SCREENSHOTURLS is not set"}
    # the index's pattern wants the closing parenthesis right after the quote
    spaced = _set(cmake, "SCREENSHOTURLS", 'set(EXTENSION_SCREENSHOTURLS "https://x.org/a.png" )')
    assert "No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt." in _cmake_problems(spaced, metadata)
    assert "No EXTENSION_ICONURL found in CMakeLists.txt." in _cmake_problems(
        _set(cmake, "ICONURL", "# no icon"), metadata)
    assert _cmake_problems(_set(cmake, "CATEGORY", 'set(EXTENSION_CATEGORY "Neuroimaging")'), metadata) == [
        "EXTENSION_CATEGORY 'Neuroimaging' differs from the description file's category 'Segmentation'"]
    assert _cmake_problems(_set(cmake, "DEPENDS", 'set(EXTENSION_DEPENDS "NA")'), metadata) == [
        "EXTENSION_DEPENDS [] differs from build_dependencies ['PyTorch']"]
    assert _cmake_problems(cmake.replace("EXTENSION_CONTRIBUTORS", "EXTENSION_CONTRIBUTOR"), metadata) == [
        "EXTENSION_CONTRIBUTOR is no extension metadata Slicer knows", "EXTENSION_CONTRIBUTORS is not set"]


def test_image_urls_into_the_repository_must_name_committed_images(cmake, metadata):
    base = "https://raw.githubusercontent.com/cmb-slicer/SlicerCMB/main/"
    missing = cmake.replace("docs/images/slicer_annotator.png", "docs/images/nothing.png")
    assert _cmake_problems(missing, metadata) == [
        f"EXTENSION_SCREENSHOTURLS '{base}docs/images/nothing.png': docs/images/nothing.png is not in the repository"]
    not_image = cmake.replace("docs/images/slicer_annotator.png", "README.md")
    assert _cmake_problems(not_image, metadata) == [
        f"EXTENSION_SCREENSHOTURLS '{base}README.md' does not point to a valid image (PNG, JPEG or GIF)"]
    big_icon = cmake.replace("CMBDetector/Resources/Icons/CMBDetector.png", "docs/images/slicer_detector.png")
    assert _cmake_problems(big_icon, metadata) == [
        f"EXTENSION_ICONURL '{base}docs/images/slicer_detector.png' should be a 128 x 128 PNG (Slicer's extension "
        "icon), not png (800, 600)"]
    # another branch than scm_revision, or another host: not read from here, only its form checked
    other = dict(metadata, scm_revision="v1.0")
    assert _cmake_problems(cmake, other) == []
    assert X.check_image_url("ftp://x.org/a.png", "EXTENSION_ICONURL", metadata, REPO) == [
        "EXTENSION_ICONURL 'ftp://x.org/a.png' should be a valid URL starting with 'http'"]
    assert X.check_image_url("https://x.org/page", "EXTENSION_SCREENSHOTURLS", metadata, REPO) == [
        "EXTENSION_SCREENSHOTURLS 'https://x.org/page' does not name an image file"]


def test_uncommitted_image_is_reported(tmp_path, metadata):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(REPO / "docs" / "images" / "slicer_detector.png", tmp_path / "shot.png")
    url = "https://raw.githubusercontent.com/cmb-slicer/SlicerCMB/main/shot.png"
    assert X.check_image_url(url, "EXTENSION_SCREENSHOTURLS", metadata, tmp_path) == [
        f"EXTENSION_SCREENSHOTURLS '{url}': shot.png is not committed"]


def test_license_and_size_are_checked(tmp_path, monkeypatch):
    assert X.check_license_file(REPO) == []
    assert (REPO / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    assert X.check_license_file(tmp_path) == ["No license file found in repository root."]
    (tmp_path / "COPYING").write_text("x")
    assert X.check_license_file(tmp_path) == []
    assert X.check_repository_size(REPO) == []
    monkeypatch.setattr(X, "SIZE_LIMIT_MB", 0)
    assert "exceeds the 0 MB limit" in X.check_repository_size(REPO)[0]


def test_report_command(capsys):
    assert X.main([str(DESCRIPTION)]) == 0
    out = capsys.readouterr().out
    assert "## CMBSlicer" in out and "FAIL" not in out
