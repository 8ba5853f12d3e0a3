"""docs/sandbox.md writes down what was only in code (issue 13, item 14): the emulator's
credentials and their defaults, every endpoint and control route, every knob and every key and
kind of a fault rule; and `make demo-vendors` runs the vendor demo from the venv."""

from __future__ import annotations

import re
from pathlib import Path

from ops.sandbox.app import CONTROL_ROUTES, VENDOR_ROUTES
from ops.sandbox.cli import _parser as sandbox_parser
from ops.sandbox.config import ENDPOINTS, KNOB_PARSERS, SandboxConfig
from ops.sandbox.faults import (
    _KEYS,
    ANSWER_FAULTS,
    CITATION_FAULTS,
    LLM_KINDS,
    MALFORMED_BODIES,
    STATUS_KINDS,
    TRANSPORT_KINDS,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")


def documented(name: str) -> bool:
    return f"`{name}`" in DOC


def test_credentials_and_their_defaults_are_written_down() -> None:
    defaults = SandboxConfig()
    for value in (defaults.intron_api_key, defaults.invox_app_id, defaults.invox_app_key):
        assert documented(value), value
    assert defaults.invox_static_token is None
    assert "no static token" in DOC
    flags = set(re.findall(r"--[a-z][a-z-]*", sandbox_parser().format_help())) - {"--help"}
    assert "--invox-static-token" in flags
    for flag in flags:
        assert documented(flag), flag


def test_every_endpoint_route_and_control_route_is_listed() -> None:
    for endpoint in ENDPOINTS:
        assert documented(endpoint), endpoint
    for _method, path, *_rest in VENDOR_ROUTES:
        assert path in DOC, path
    for method, path, _handler in CONTROL_ROUTES:
        assert f"{method} {path}" in DOC, (method, path)


def test_every_knob_and_fault_rule_key_and_kind_is_explained() -> None:
    for knob in KNOB_PARSERS:
        assert documented(knob), knob
    for key in _KEYS:
        assert documented(key), key
    for kind in TRANSPORT_KINDS | STATUS_KINDS | LLM_KINDS:
        assert documented(kind), kind
    for value in (*MALFORMED_BODIES, *CITATION_FAULTS, *ANSWER_FAULTS):
        assert documented(value), value


def test_make_demo_vendors_runs_the_vendor_demo_from_the_venv() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^demo-vendors: install\n\t(.+)$", makefile, re.MULTILINE)
    assert target is not None
    assert target.group(1) == "$(PY) -m ops.demo --mode vendors"
    assert re.search(r"^\.PHONY:.*\bdemo-vendors\b", makefile, re.MULTILINE)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo-vendors" in readme
