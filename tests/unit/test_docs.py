"""The README documents every setting the worker reads and every errorType it can emit."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.errors import ERROR_CATALOGUE

ROOT = Path(__file__).resolve().parents[2]


def settings_read_by_the_worker() -> set[str]:
    names: set[str] = set()
    for module in (ROOT / "worker").rglob("*.py"):
        names |= set(re.findall(r'"(SCRIBE_[A-Z0-9_]+)"', module.read_text()))
    return names


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in settings_read_by_the_worker() if f"`{name}`" not in readme)
    assert not missing, f"README.md does not document {missing}"
    assert "`SCRIBE_PREFETCH_<STAGE>`" in readme


def test_readme_lists_every_error_type() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [str(e) for e in ERROR_CATALOGUE if f"`{e.value}`" not in readme]
    assert not missing, f"README.md does not list {missing}"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
