"""docs/architecture.md cannot drift: every file path and every dotted name it quotes exists.

The page names modules, classes and methods so that a reader can go straight to them; a rename
that forgot the page would send the reader nowhere. Two kinds of backticked references are
checked: paths (`worker/delivery.py`, `ops/sandbox/`, `pyproject.toml`) must exist in the
repository, and dotted names under the project's packages (`worker.delivery.Delivery.process`)
must import and resolve attribute by attribute. Paths that leave the repository (`../shared/...`,
the verbatim vendor pages) are not part of a checkout and are not checked.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = frozenset({"worker", "schemas", "ops", "tests"})

_SPAN = re.compile(r"`([^`\n]+)`")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PATH = re.compile(r"[\w.-]+(?:/[\w.-]*)*")
_FILE_SUFFIXES = (".py", ".toml", ".md", ".yaml", ".txt", ".json")


def references(text: str) -> tuple[list[str], list[str]]:
    """The paths and the dotted names the text quotes in backticks."""
    paths: list[str] = []
    dotted: list[str] = []
    for span in _SPAN.findall(text):
        if _DOTTED.fullmatch(span) and span.split(".", 1)[0] in PACKAGES:
            dotted.append(span)
        elif span.startswith("../"):
            continue  # outside the repository: not part of a checkout
        elif _PATH.fullmatch(span) and ("/" in span or span.endswith(_FILE_SUFFIXES)):
            paths.append(span)
    return paths, dotted


def resolves(name: str) -> bool:
    """The longest importable module prefix of name, then each remaining part as an attribute."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # not a module: try a shorter prefix
            raise  # the module exists but imports something missing: a real failure
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def missing_paths(paths: list[str]) -> list[str]:
    return [p for p in paths if not (ROOT / p).exists()]


def test_the_doc_quotes_paths_and_dotted_names() -> None:
    paths, dotted = references(DOC.read_text(encoding="utf-8"))
    assert "worker/delivery.py" in paths
    assert "worker.delivery.Delivery.process" in dotted


def test_every_quoted_path_exists() -> None:
    paths, _ = references(DOC.read_text(encoding="utf-8"))
    missing = missing_paths(paths)
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_quoted_module_and_function_exists() -> None:
    _, dotted = references(DOC.read_text(encoding="utf-8"))
    unresolved = [name for name in dotted if not resolves(name)]
    assert not unresolved, f"docs/architecture.md names what does not exist: {unresolved}"


def test_the_checks_catch_a_reference_that_drifted() -> None:
    text = (
        "`worker/delivery.py` `worker/no_such_module.py` `worker.delivery.Delivery.process` "
        "`worker.delivery.Delivery.no_such_method` `worker.no_such_module.f` `job.completed` "
        "`make lint` `../shared/vendor-docs/`"
    )
    paths, dotted = references(text)
    assert paths == ["worker/delivery.py", "worker/no_such_module.py"]
    assert missing_paths(paths) == ["worker/no_such_module.py"]
    assert [name for name in dotted if not resolves(name)] == [
        "worker.delivery.Delivery.no_such_method",
        "worker.no_such_module.f",
    ]


def test_the_readme_links_the_architecture_doc() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
