"""The layer contracts in pyproject.toml ([tool.importlinter]) hold, and they do catch a
forbidden import: each is run by lint-imports against a tiny tree that breaks one of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts_section() -> str:
    """The [tool.importlinter] tables of pyproject.toml, exactly as written there."""
    kept: list[str] = []
    inside = False
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            inside = line.strip("[]").startswith("tool.importlinter")
        if inside:
            kept.append(line)
    assert kept, "no [tool.importlinter] in pyproject.toml"
    return "\n".join(kept) + "\n"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# A minimal tree with the real packages' names: every module the contracts name exists.
CLEAN_TREE = {
    "schemas/__init__.py": "",
    "schemas/base.py": "",
    "worker/__init__.py": "",
    "worker/broker.py": "import aio_pika\nimport aiormq\n",
    "worker/delivery.py": "import worker.broker\nimport worker.outcomes\n",
    "worker/outcomes.py": "import schemas.base\n",
    "worker/stages.py": "import worker.outcomes\n",
    "worker/providers/__init__.py": "",
    "worker/providers/vendor.py": "import schemas.base\n",
    "ops/__init__.py": "",
    "ops/tool.py": "import worker.outcomes\n",
}


def _tree(tmp_path: Path, **changes: str) -> Path:
    """CLEAN_TREE with some modules rewritten (worker__stages is worker/stages.py)."""
    changed = {name.replace("__", "/") + ".py": text for name, text in changes.items()}
    files = {**CLEAN_TREE, **changed}
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(_contracts_section(), encoding="utf-8")
    return tmp_path


def test_the_project_keeps_its_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_clean_tree_keeps_them(tmp_path: Path) -> None:
    result = _lint(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        ("schemas__base", "import worker.outcomes\n", "Layers"),
        ("schemas__base", "from ops import tool\n", "Layers"),
        ("worker__outcomes", "import ops.tool\n", "Layers"),
        ("worker__providers__vendor", "import aio_pika\n", "Providers"),
        ("worker__providers__vendor", "from aiormq import abc\n", "Providers"),
        ("worker__providers__vendor", "from worker import delivery\n", "Providers"),
        ("worker__providers__vendor", "def f() -> None:\n    import worker.broker\n", "Providers"),
        ("worker__stages", "import worker.delivery\n", "Stages"),
        ("worker__stages", "from worker.broker import x\n", "Stages"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, source: str, contract: str
) -> None:
    result = _lint(_tree(tmp_path, **{module: source}))
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1, result.stdout
    assert broken[0].startswith(contract), result.stdout
