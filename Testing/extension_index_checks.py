"""The Slicer Extensions Index checks of an extension description file, offline.

Re-implements the checks that `scripts/check_description_files.py` of
https://github.com/Slicer/ExtensionsIndex runs on a pull request (read at commit
43753a55409d6cf9cbd238018c4a721d420ac749, 2026-05-07; 3D Slicer license, BSD style), minus
what needs the network, plus what Slicer's extension factory reads:

* the description file: JSON, LF line endings, formatted as the index's pre-commit hooks want
  (2-space indent, one array item per line, final newline, no tabs or trailing blanks),
  valid against the catalog-entry schema its ``$schema`` names (vendored in
  data/extensions_index/, no download) and against the newest one (the index's
  check-jsonschema hook); ``scm_revision`` present (the factory's CMake requires it);
* the extension name (file name): not starting with "Slicer"; equal to the top-level
  CMakeLists.txt ``project()`` name;
* ``category``: one of the index's accepted categories; ``scm_url``: git or https scheme, a
  repository whose name starts with "Slicer"; ``build_dependencies``: extensions the index has
  (the names confirmed in data/extensions_index/index_entries.json);
* the repository: top-level CMakeLists.txt with ``project()``, EXTENSION_ICONURL and
  EXTENSION_SCREENSHOTURLS (parsed with the index's own patterns), every EXTENSION_* name one
  Slicer knows, the metadata the catalog shows set, category and dependencies equal to the
  JSON's; icon and screenshot URLs that point into this repository at ``scm_revision`` name
  committed PNG / JPEG / GIF files (the icon 128 x 128, as Slicer asks); a licence file at
  the top; under 100 MB.

Not checked here (needs the network): that the repository and its URLs answer, and that the
GitHub repository carries the topic ``3d-slicer-extension``.

Every check returns a list of problems (empty: passed), so a test can assert the exact
message.  Run ``python Testing/extension_index_checks.py CMBSlicer.json`` for a report.
"""
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

DATA = Path(__file__).resolve().parent / "data" / "extensions_index"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/{name}#"
NEWEST_SCHEMA = "slicer-extension-catalog-entry-schema-v1.0.2.json"
SIZE_LIMIT_MB = 100
LICENSE_NAMES = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt"]
ALLOWED_REPOSITORY_PREFIXES = ["Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_"]
# Extensions/CMake/SlicerExtensionDescriptionSpec.cmake (the metadata Slicer knows), and the
# EXTENSION_* variables UseSlicer.cmake / SlicerExtensionCPack.cmake read besides
SLICER_METADATA = {"DEPENDS", "RECOMMENDS", "BUILD_SUBDIRECTORY", "HOMEPAGE", "CONTRIBUTORS", "CATEGORY", "ICONURL",
                   "DESCRIPTION", "SCREENSHOTURLS", "ENABLED", "STATUS", "TIER", "DICOM_SUPPORT_RULE", "KEYWORDS"}
SLICER_EXTENSION_VARIABLES = SLICER_METADATA | {"NAME", "LICENSE_FILE", "README_FILE", "SOURCE_DIR",
                                                "SUPERBUILD_BINARY_DIR"}
# shown in the extensions catalog / manager: an index submission should set them
CATALOG_METADATA = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS")
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif"}

# check_description_files.py's patterns, as the index applies them
PROJECT_PATTERN = r'project\s*\(\s*([^\s\)\n\r]+)'
ICON_URL_PATTERN = r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)'
SCREENSHOT_URLS_PATTERN = r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)'


def load_json(name):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def accepted_categories():
    return load_json("index_rules.json")["accepted_extension_categories"]


# ---------------------------------------------------------------------------------------
# The description file
# ---------------------------------------------------------------------------------------
def check_file_format(raw: bytes):
    """LF only (the index's check), and the layout its pre-commit hooks leave."""
    problems = []
    if b"\r" in raw:
        problems.append("File contains non-LF line endings (CR or CRLF). Please convert to LF-only line endings.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return problems + [f"Invalid JSON format: {exc}"]
    text = raw.decode("utf-8").replace("\r\n", "\n")
    if b"\t" in raw:
        problems.append("contains tabs (the index's forbid-tabs hook)")
    if any(line != line.rstrip() for line in text.split("\n")):
        problems.append("trailing whitespace (the index's trailing-whitespace hook)")
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append("must end with exactly one newline (the index's end-of-file-fixer hook)")
    if not problems and text != json.dumps(data, indent=2, ensure_ascii=False) + "\n":
        problems.append("not formatted as prettier leaves it: 2-space indent, one array item per line")
    return problems


def check_schema(metadata):
    """Valid against the vendored schema named by ``$schema``, and against the newest one."""
    import jsonschema

    url = metadata.get("$schema")
    if not url:
        return ["No $schema field found in extension description"]
    known = {SCHEMA_URL.format(name=p.name): p.name for p in DATA.glob("slicer-extension-catalog-entry-schema-*.json")}
    if url not in known:
        return [f"$schema {url} is none of the catalog-entry schemas {sorted(known)}"]
    problems = []
    for name in sorted({known[url], NEWEST_SCHEMA}):
        validator = jsonschema.Draft7Validator(load_json(name))
        for error in sorted(validator.iter_errors(metadata), key=lambda e: list(e.absolute_path)):
            path = " -> ".join(str(p) for p in error.absolute_path)
            problems.append(f"JSON schema validation failed ({name}): {error.message} at path: {path}")
    if "scm_revision" not in metadata:
        problems.append("scm_revision is missing (Slicer's extension factory requires it)")
    return problems


def check_extension_name(extension_name):
    rules = load_json("index_rules.json")
    if extension_name in rules["extension_name_check_exceptions"]:
        return []
    if extension_name.lower().startswith("slicer"):
        return [f"extension name *should not* start with 'Slicer'. Please, consider changing it to "
                f"'{extension_name[6:]}'."]
    return []


def check_category(metadata):
    if metadata.get("category") is None:
        return ["category key is missing"]
    if metadata["category"] not in accepted_categories():
        return [f"Category `{metadata['category']}` is unknown"]
    return []


def check_scm_url(metadata):
    url = metadata.get("scm_url")
    if url is None:
        return ["scm_url key is missing"]
    if "://" not in url:
        return ["scm_url do not match scheme://host/path"]
    scheme = urlsplit(url).scheme
    if scheme not in ("git", "https"):
        return [f"scm_url scheme is '{scheme}' but it should by any of ['git', 'https']"]
    return []


def repository_name(url):
    path = urlsplit(url.strip().strip("/")).path
    name = path.split("/")[-1]
    return name[:-4] if name.endswith(".git") else name


def check_repository_name(metadata):
    """The git repository's name starts with 'Slicer' (the extension's must not)."""
    name = repository_name(metadata.get("scm_url", ""))
    if not name:
        return [f"Failed to determine repository name from scm_url '{metadata.get('scm_url')}'"]
    if name in load_json("index_rules.json")["repository_name_check_exceptions"]:
        return []
    if not any(name.startswith(prefix) for prefix in ALLOWED_REPOSITORY_PREFIXES):
        return [f"git repository name *should* start with 'Slicer'. The current repository name is '{name}'."]
    return []


def check_build_dependencies(metadata):
    """Every build dependency is an extension of the index (as its check_dependencies)."""
    known = load_json("index_entries.json")["entries"]
    return [f"'{name}' extension is not found" for name in metadata.get("build_dependencies", [])
            if name and name not in known]


# ---------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------
def cmake_variables(text):
    """EXTENSION_* variables set in a CMakeLists.txt: name -> value (quotes removed)."""
    values = {}
    for match in re.finditer(r'^\s*set\s*\(\s*EXTENSION_(\w+)\s+("(?:[^"\\]|\\.)*"|[^)\s#]*)', text, re.M):
        values[match.group(1)] = match.group(2).strip('"')
    return values


def cmake_project_name(text):
    match = re.search(PROJECT_PATTERN, text, re.IGNORECASE | re.MULTILINE)
    if match:
        return match.group(1).strip().strip('"').strip("'")
    match = re.search(r'set\(EXTENSION_NAME\s+([^\s\)]+)\)', text, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip().strip('"').strip("'") if match else None


def check_cmakelists(extension_name, metadata, cmake_text, repo: Path):
    """Top-level CMakeLists.txt: project(), metadata, consistency with the description file."""
    problems = []
    project = cmake_project_name(cmake_text)
    if project is None:
        problems.append("No project() declaration found in CMakeLists.txt")
    elif project != extension_name:
        problems.append(f"Extension name in CMakeLists.txt project name '{project}' does not match extension "
                        f"description file name '{extension_name}'")
    flags = re.IGNORECASE | re.MULTILINE
    icons = re.findall(ICON_URL_PATTERN, cmake_text, flags)
    screenshots = re.findall(SCREENSHOT_URLS_PATTERN, cmake_text, flags)
    if not icons:
        problems.append("No EXTENSION_ICONURL found in CMakeLists.txt.")
    if not screenshots:
        problems.append("No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt.")
    variables = cmake_variables(cmake_text)
    for name in sorted(set(variables) - SLICER_EXTENSION_VARIABLES):
        problems.append(f"EXTENSION_{name} is no extension metadata Slicer knows")
    for name in CATALOG_METADATA:
        if not variables.get(name, "").strip():
            problems.append(f"EXTENSION_{name} is not set")
    if "CATEGORY" in variables and variables["CATEGORY"] != metadata.get("category"):
        problems.append(f"EXTENSION_CATEGORY '{variables['CATEGORY']}' differs from the description file's "
                        f"category '{metadata.get('category')}'")
    depends = set(variables.get("DEPENDS", "NA").split()) - {"NA"}
    if depends != set(metadata.get("build_dependencies", [])):
        problems.append(f"EXTENSION_DEPENDS {sorted(depends)} differs from build_dependencies "
                        f"{sorted(metadata.get('build_dependencies', []))}")
    for url in icons[:1]:
        problems += check_image_url(url.strip(), "EXTENSION_ICONURL", metadata, repo, icon=True)
    for url in (screenshots[0].split() if screenshots else []):
        problems += check_image_url(url, "EXTENSION_SCREENSHOTURLS", metadata, repo)
    return problems


def check_image_url(url, variable, metadata, repo: Path, icon=False):
    """An http(s) URL of an image; one into this repository names a committed image file."""
    if not url.startswith("http"):
        return [f"{variable} '{url}' should be a valid URL starting with 'http'"]
    local = local_file(url, metadata, repo)
    if local is None:
        if not url.lower().endswith((".png", ".jpg", ".jpeg", ".gif")):
            return [f"{variable} '{url}' does not name an image file"]
        return []
    if not local.is_file():
        return [f"{variable} '{url}': {local.relative_to(repo)} is not in the repository"]
    if not tracked(repo, local):
        return [f"{variable} '{url}': {local.relative_to(repo)} is not committed"]
    head = local.read_bytes()[:32]
    kind = next((k for magic, k in IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None:
        return [f"{variable} '{url}' does not point to a valid image (PNG, JPEG or GIF)"]
    if icon and (kind != "png" or png_size(local) != (128, 128)):
        return [f"{variable} '{url}' should be a 128 x 128 PNG (Slicer's extension icon), not {kind} "
                f"{png_size(local) if kind == 'png' else ''}".rstrip()]
    return []


def local_file(url, metadata, repo: Path):
    """The file a raw.githubusercontent.com / github.com blob URL of this repository at
    ``scm_revision`` names (None for a URL elsewhere)."""
    scm = urlsplit(metadata.get("scm_url", ""))
    owner_repo = "/".join(p for p in scm.path.split("/") if p)
    if owner_repo.endswith(".git"):
        owner_repo = owner_repo[:-4]
    parts = urlsplit(url)
    path = parts.path.lstrip("/")
    revision = metadata.get("scm_revision", "")
    if parts.netloc == "raw.githubusercontent.com":
        prefix = f"{owner_repo}/{revision}/"
    elif parts.netloc == "github.com":
        prefix = f"{owner_repo}/raw/{revision}/"
    else:
        return None
    if not (owner_repo and path.lower().startswith(prefix.lower())):
        return None
    return repo / path[len(prefix):]


def tracked(repo: Path, path: Path):
    """True when git tracks `path` (or when `repo` is no git checkout: nothing to ask)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "--error-unmatch", str(path.relative_to(repo))],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return True
    if out.returncode != 0 and "not a git repository" in out.stderr:
        return True
    return out.returncode == 0


def png_size(path: Path):
    """(width, height) from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    if not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def check_license_file(repo: Path):
    if any((repo / name).is_file() for name in LICENSE_NAMES):
        return []
    return ["No license file found in repository root."]


def check_repository_size(repo: Path):
    """Committed files plus packed history (what a clone holds) under the index's 100 MB."""
    try:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, timeout=120,
                                check=True).stdout.split(b"\0")
        files = [repo / name.decode("utf-8", "surrogateescape") for name in listed if name]
        counts = subprocess.run(["git", "-C", str(repo), "count-objects", "-v"], capture_output=True, text=True,
                                timeout=120, check=True).stdout
        history = int(re.search(r"size-pack: (\d+)", counts).group(1)) * 1024
    except (OSError, subprocess.SubprocessError, AttributeError):
        files, history = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts], 0
    total_mb = (sum(p.stat().st_size for p in files if p.is_file()) + history) / (1024 * 1024)
    if total_mb > SIZE_LIMIT_MB:
        return [f"Repository size {total_mb:.1f} MB exceeds the {SIZE_LIMIT_MB} MB limit."]
    return []


# ---------------------------------------------------------------------------------------
def check_description_file(path, repo):
    """All checks of one description file against the repository it describes:
    {check name: [problems]}."""
    path, repo = Path(path), Path(repo)
    extension_name = path.stem
    raw = path.read_bytes()
    results = {"JSON file format": check_file_format(raw)}
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return results
    cmake = repo / "CMakeLists.txt"
    results.update({
        "JSON schema": check_schema(metadata),
        "extension name": check_extension_name(extension_name),
        "category": check_category(metadata),
        "git repository name": check_repository_name(metadata),
        "SCM URL syntax": check_scm_url(metadata),
        "build dependencies": check_build_dependencies(metadata),
        "CMakeLists.txt content": (check_cmakelists(extension_name, metadata, cmake.read_text(encoding="utf-8"), repo)
                                   if cmake.is_file() else ["CMakeLists.txt file not found in repository root"]),
        "license file": check_license_file(repo),
        "repository size": check_repository_size(repo),
    })
    return results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    repo = Path(__file__).resolve().parents[1]
    failed = False
    for name in argv or [str(p) for p in repo.glob("*.json")]:
        print(f"## {Path(name).stem}")
        for check, problems in check_description_file(name, repo).items():
            print(f"- {'FAIL' if problems else 'ok'}: {check}" + "".join(f"\n    {p}" for p in problems))
            failed |= bool(problems)
    print("not checked offline: the URLs answer; the GitHub topic '3d-slicer-extension'")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
