"""The docs a newcomer reads stay true to the repository: the README is short and points only at files that
exist, and docs/files.md has one line for every tracked file (and none for a file that is gone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.split()


def test_files_md_has_a_line_for_every_tracked_file():
    tracked = set(_tracked())
    listed = set(re.findall(r"^(\S+)\s", (ROOT / "docs" / "files.md").read_text(), re.M))
    # shipped result folders and generated notebooks are listed by their folder or pattern
    covered = [f for f in tracked if f.startswith(("data/results/", "tests/data/identity/")) or f.endswith(".ipynb")]
    assert sorted(tracked - listed - set(covered)) == []
    gone = [p for p in listed if ("/" in p or "." in p) and "*" not in p and not p.endswith("/") and p not in tracked]
    assert gone == [], f"docs/files.md lists files that no longer exist: {gone}"


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 20_000
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
