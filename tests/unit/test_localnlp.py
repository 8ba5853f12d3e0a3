"""The local NLP engine as a package (issue 14, item 7): one stop-word list, rules as data,
small functions, the providers' import names kept, and the outputs unchanged by the move."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops import eval as scribe_eval
from schemas.jobs import Template, Transcript
from tests.unit.test_local_summary import DIALOGUE
from worker.providers import local_note, local_summary
from worker.providers.localnlp import rules

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "worker" / "providers" / "localnlp"
SAMPLES = REPO / "ops" / "samples"

# sha256 of summarize_text (both formats) and fill_template (ops/samples/template.json) on the
# test dialogue and ops/samples/consultation.txt, recorded with the engine before it became a
# package (the same check over all 87 ACI-Bench dialogues was byte-identical too). A deliberate
# change of the engine's output updates it; a refactor never does. Evidence (issue 16) is left
# out of the digest (tests/unit/test_evidence.py checks it): adding it changed no text.
# Updated deliberately for issue 16 item 2-3 (was bee7fde7...): the comma before a removed
# filler goes too, dictation asides and short announcements ("let's do a quick exam") are left
# out, the review of systems also takes longer "any X?" questions and patients' denials, the
# chief complaint is found without an introduction, a plan stated during the exam counts, and a
# template field that names a section the visit did not cover stays empty.
# Updated deliberately for issue 16 (prose; was 0487e6b8...): false starts only when cut short
# or repeated, adverbs in -ly and "hurt" in the third-person rewrite, "see you" an object,
# unpunctuated turns cut into clauses, swapped doctor/patient labels read by what each says.
# Updated again (was c397de17...): the patient's statements attributed ("He reports ...",
# "denies ..."), spoken scaffolding ("go ahead and", "just", "kind of") dropped, a leading
# "no" kept where it negates ("No numbness", was "Numbness").
# Updated again (was 8c58306f...): the review of systems by system with the presenting
# complaint ("Musculoskeletal: Reports wrist pain."), "you have" after a phrase a subject,
# "right knee pain" keeps "right". Again (was 86d6c9cb...): exam findings by system.
GOLDEN_SHA256 = "e05401a1eac6f70e6833526b3e5d69b6caf4bbe652793e732452fd191d001c4d"


_EVIDENCE: dict[str, Any] = {"evidence": True, "fields": {"__all__": {"evidence"}}}


def test_outputs_are_those_of_the_engine_before_the_move() -> None:
    template = Template.model_validate_json((SAMPLES / "template.json").read_text("utf-8"))
    digest = hashlib.sha256()
    for text in (DIALOGUE, (SAMPLES / "consultation.txt").read_text("utf-8")):
        transcript = Transcript(provider="local", text=text)
        for output_format in ("SUMMARY", "SOAP_TEMPLATE"):
            summary = local_summary.summarize_text(text, output_format)
            digest.update(summary.model_dump_json(exclude=_EVIDENCE).encode())
            for field in local_note.fill_template(template, transcript, summary, (text[:2000],)):
                digest.update(field.model_dump_json(exclude={"evidence"}).encode())
    assert digest.hexdigest() == GOLDEN_SHA256


def test_one_stop_word_list() -> None:
    """scribe-eval's list is the engine's; the engine's two uses are drawn from it."""
    assert scribe_eval.STOP_WORDS is rules.STOP_WORDS
    assert len(rules.STOP_WORDS) == 179  # NLTK's English list
    assert "because" in rules.STOP_WORDS
    assert "because" not in rules.SPEECH_STOP_WORDS  # kept as a content word of speech
    assert {"um", "yeah", "okay"} <= rules.SPEECH_STOP_WORDS - rules.STOP_WORDS
    assert {"patient", "field", "enter"} <= rules.FIELD_STOP_WORDS - rules.STOP_WORDS
    assert {"the", "of", "with", "is"} <= rules.FIELD_STOP_WORDS & rules.STOP_WORDS
    assert "what" not in rules.FIELD_STOP_WORDS  # a field name's question word is a key word


def _literal_regex_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.func.attr in {"compile", "sub", "search", "match", "fullmatch", "findall"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_the_steps_hold_no_regex_of_their_own() -> None:
    """Every fixed pattern is a constant of rules.py (patterns built from a template's own key
    words are the only ones compiled elsewhere)."""
    steps = [path for path in PACKAGE.glob("*.py") if path.name != "rules.py"]
    assert len(steps) >= 8
    providers = [PACKAGE.parent / "local_summary.py", PACKAGE.parent / "local_note.py"]
    assert [call for path in steps + providers for call in _literal_regex_calls(path)] == []


def test_the_providers_keep_their_import_names() -> None:
    """Tests, ops/eval.py and the factory import these from the providers' modules."""
    for name in (
        "LocalSummarizer",
        "summarize_text",
        "build_note",
        "split_sentences",
        "clean",
        "parse_turns",
        "to_third_person",
        "digits_for_numbers",
        "MAX_SENTENCES",
    ):
        assert hasattr(local_summary, name), name
    for name in ("LocalNoteWriter", "fill_template", "MAX_ENUM_OPTIONS", "MAX_NOTE_SENTENCES"):
        assert hasattr(local_note, name), name
    assert local_summary.build_note.__module__ == "worker.providers.localnlp.note"
    assert local_note.fill_template.__module__ == "worker.providers.localnlp.template"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_no_function_of_the_engine_is_over_complexity_14() -> None:
    paths = [PACKAGE, PACKAGE.parent / "local_summary.py", PACKAGE.parent / "local_note.py"]
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "C901"]
    result = subprocess.run(
        [*command, "--config", "lint.mccabe.max-complexity=14", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
