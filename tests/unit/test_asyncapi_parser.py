"""schemas/asyncapi.yaml is valid to the official AsyncAPI parser (@asyncapi/parser, pinned in
tools/asyncapi/package-lock.json), not only to our own reading of it in test_contract.py.

.ci/run installs the parser (npm ci) and runs it before the tests; here the same check runs where
it is installed, and fails in CI where it is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ops import asyncapi

TOOL = Path(__file__).parents[2] / "tools" / "asyncapi"


def _parser_or_skip() -> str:
    node = shutil.which("node")
    installed = (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir()
    if node is None or not installed:
        reason = "the AsyncAPI parser is not installed (cd tools/asyncapi && npm ci)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node


def _validate(node: str, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, "validate.mjs", str(document)],
        cwd=TOOL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_official_parser_validates_the_document() -> None:
    result = _validate(_parser_or_skip(), asyncapi.ASYNCAPI_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"valid AsyncAPI {asyncapi.ASYNCAPI_VERSION}" in result.stdout


def test_the_parser_refuses_a_broken_reference(tmp_path: Path) -> None:
    """The check can fail: a reference to a schema that does not exist is an error."""
    node = _parser_or_skip()
    broken = tmp_path / "asyncapi.yaml"
    text = asyncapi.ASYNCAPI_FILE.read_text(encoding="utf-8")
    broken.write_text(text.replace("schemas/DeadLetterBody'", "schemas/NoSuchBody'", 1))
    result = _validate(node, broken)
    assert result.returncode == 1
    assert "invalid-ref" in result.stdout
