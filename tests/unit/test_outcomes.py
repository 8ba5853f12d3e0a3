"""Stage outcomes live in worker/outcomes.py: stages state an outcome without importing the
module that decides what to publish, ack or dead-letter (issue 14, item 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from worker import outcomes

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_stages_never_import_the_delivery_module() -> None:
    assert "worker.delivery" not in _imported_modules(ROOT / "worker" / "stages.py")


@pytest.mark.parametrize(
    "name",
    ["Advance", "PollLater", "Complete", "DeliveryContext", "stable_event_id", "Handler"],
)
def test_each_outcome_is_defined_in_outcomes_and_not_re_exported(name: str) -> None:
    """One home: the delivery module uses them but is no second place to import them from."""
    import worker.delivery

    value = getattr(outcomes, name)
    if hasattr(value, "__module__") and name != "Handler":
        assert value.__module__ == "worker.outcomes"
    offenders = []
    for folder in ("worker", "ops", "tests"):
        for path in ROOT.glob(f"{folder}/**/*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module == "worker.delivery"
                    and any(alias.name == name for alias in node.names)
                ):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    assert name not in vars(worker.delivery).get("__all__", ())
