"""No function in the runtime or the wire models above cyclomatic complexity 14, by radon's
measure (it counts each boolean operator and comprehension condition, as ruff's mccabe does not):
a function past that is one nobody can hold in their head during an incident."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[2]
MAX_COMPLEXITY = 14


def _complex_functions(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if block.complexity > MAX_COMPLEXITY:
                where = path.relative_to(ROOT)
                found.append(f"{where}:{block.lineno} {block.fullname} ({block.complexity})")
    return found


def test_no_runtime_function_is_too_complex() -> None:
    assert _complex_functions("worker") == []


def test_no_wire_model_function_is_too_complex() -> None:
    assert _complex_functions("schemas") == []


def test_the_check_sees_a_complex_function(tmp_path: Path) -> None:
    branches = "\n".join(f"    if x == {n}:\n        return {n}" for n in range(20))
    source = f"def f(x):\n{branches}\n    return -1\n"
    assert max(block.complexity for block in cc_visit(source)) > MAX_COMPLEXITY
