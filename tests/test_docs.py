"""The documentation: README.md stays a short front door, its test command is the one CI runs, every
relative link in README.md and docs/*.md resolves, and no tracked file points outside the repository
for the project's design (docs/algorithm.md is the design document)."""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 300
TEST_COMMAND = "python -m pytest -q"
CHECKED_SUFFIXES = (".md", ".py", ".toml", ".sh", ".sbatch", ".ipynb")
THIS_FILE = "tests/test_docs.py"
# `](target)`: the target of a Markdown link or image, up to the closing parenthesis.
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def markdown_pages() -> list[pathlib.Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"git ls-files is not available here: {error}")
    return [name for name in listed.stdout.splitlines()
            if name.endswith(CHECKED_SUFFIXES) and name != THIS_FILE]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it <= {MAX_README_LINES}"


def test_readme_has_the_ci_test_command():
    assert TEST_COMMAND in README.read_text(encoding="utf-8")


def test_no_tracked_file_mentions_an_outside_design_file():
    offenders = []
    for name in tracked_files():
        path = ROOT / name
        if path.is_file() and "MLSH_SPEC" in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(name)
    assert not offenders, f"files that mention MLSH_SPEC (point them at docs/algorithm.md): {offenders}"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: pathlib.Path):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if target.startswith(EXTERNAL):
            continue
        relative = target.split("#", 1)[0]
        if not (page.parent / relative).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
