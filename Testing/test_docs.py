"""The documentation keeps up with the code: README's test command is CI's, links resolve,
every `cmb` sub-command and option is in docs/cli.md."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Pages other engineers write in parallel; linked before they exist.
PAGES_OF_OTHERS = {"mask_engine.md", "slicer.md", "detector.md", "finetuning.md", "dicom_and_reports.md"}


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()[-1]
    command = next(line for line in readme[:10] if "pytest" in line)
    assert command.strip() == ci.strip()
    assert "ruff check ." in command and command.index("ruff") < command.index("pytest")


def test_relative_links_resolve():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            assert path.exists() or path.name in PAGES_OF_OTHERS, f"{page.name}: broken link {target}"


def test_every_subcommand_and_option_is_in_the_cli_reference():
    from CMBLib.cli import build_parser

    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"## `cmb {name}`" in text or f"`cmb {name}`" in text, name
    for name in ("detect", "grow", "demo", "locate"):
        section = text[text.index(f"## `cmb {name}`"):]
        section = section[:section.find("\n## ", 3)]
        for action in sub.choices[name]._actions:
            names = [o for o in action.option_strings if o != "--help" and o != "-h"]
            if not names or name == "locate" and names[0] in ("--quiet", "--overwrite"):
                continue
            assert any(f"{o} " in section or f"{o}`" in section for o in names), \
                f"cmb {name} {'/'.join(names)} missing from docs/cli.md"
